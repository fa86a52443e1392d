/*
 * sweep_fresh_claim -- queue mode: a consumer claims a batch after a sweep has
 * started (hook 4) and dies before the sweep's owner/liveness scan.
 *
 * Race pinned: sweep() used to snapshot tail before deciding who is dead. The
 * fresh claim lies at p0 >= that stale tail, so the sweeper took it for "CAS
 * never happened", freed the dead slot and leaked the batch for good: the
 * producer stayed blocked on those slots forever (old core: reclaimed 0,
 * abandoned 0, every later push -> 0).
 *
 * Correct behaviour: tail is read only once the dead owner is marked BUSY, so
 * the same sweep frees the slot and reclaims the batch (recover -> 1, reclaimed
 * 4, abandoned 4); a live consumer then gets 4..7 and the producer can refill
 * all 8 slots.
 */
#include "common.h"

static shmr_ring *R;
static int armed;

void shmr_test_hook(int site)
{
    if (site != SHMR_HOOK_SWEEP_START || !armed)
        return;
    armed = 0;
    /* window: the sweep has begun, the owner scan has not */
    pid_t pid = t_fork();
    if (pid == 0) {
        shmr_consumer *c;
        const void *ptr;
        CHECK(shmr_consumer_open(R, 0, &c));
        int64_t k = shmr_claim(c, 4, &ptr, NULL); /* zero-copy, CLAIM_HELD */
        if (k != 4)
            t_child_fail(3, "claim returned %" PRId64 ", want 4", k);
        _exit(0); /* dies holding [0,4) */
    }
    int st = t_reap(pid);
    if (st != 0)
        t_fatal("claiming child exited with %d", st);
}

int main(void)
{
    t_init("sweep_fresh_claim", 10);
    R = t_mk(t_segname("sweep-fresh"), SHMR_MODE_QUEUE, SHMR_OVERFLOW_BLOCK, 8);
    shmr_producer *p;
    CHECK(shmr_producer_open(R, &p));
    EXPECT_EQ(t_push_seq(p, 0, 8), 8, "initial push 0..7");

    uint64_t rec = 0;
    armed = 1;
    int freed = shmr_producer_recover(p, &rec);
    if (armed)
        t_fatal("hook 4 never ran: the sweep did not start");
    EXPECT_EQ(freed, 1, "recover: dead consumer slots freed");
    EXPECT_EQ(rec, 4, "recover: records reclaimed from the consumer that claimed mid-sweep");
    shmr_ring_info i = t_info(R);
    EXPECT_EQ(i.abandoned, 4, "abandoned");
    EXPECT_EQ(i.tail, 4, "tail");

    shmr_consumer *c;
    CHECK(shmr_consumer_open(R, 0, &c));
    uint64_t out[8];
    int64_t n = shmr_pop(c, out, 8, NULL);
    EXPECT_EQ(n, 4, "live consumer's pop");
    if (n > 0)
        EXPECT_EQ(out[0], 4, "live consumer's first record");
    /* slots 0..3 reclaimed, 4..7 released by the pop: the ring is empty */
    EXPECT_EQ(t_push_seq(p, 100, 8), 8, "push of 8 into the drained ring (0 = batch [0,4) leaked)");
    rec = 0;
    EXPECT_EQ(shmr_producer_recover(p, &rec), 0, "second recover: nothing left to free");
    EXPECT_EQ(rec, 0, "second recover: reclaimed");
    shmr_consumer_free(c);
    t_finish("a batch claimed after the sweep started, by a consumer dead before the scan, is reclaimed");
}
