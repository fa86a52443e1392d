/*
 * reclaim_tied_intents -- queue mode: two dead consumers whose CLAIM_INTENT
 * records start at the same position p0 = 0. D1 won the tail CAS for [0,1) and
 * died before marking the claim HELD (hook 6); D2 wrote a stale intent [0,8)
 * and died before its CAS (hook 3), which would have failed anyway.
 *
 * Race pinned: the sweeper used to skip D1 (covered by D2's record), free it,
 * then "reclaim" D2's stale intent with ITS length 8. That release freed slots
 * [1,4) which a LIVE consumer L was still reading zero-copy; the producer
 * overwrote them (old core: reclaimed 8, push -> 8, L's view read 1001..1003).
 *
 * Correct behaviour: both dead slots are freed (recover -> 2) but only the
 * shortest tied length is released (reclaimed 1, abandoned 1); the producer can
 * reuse only slot 0 (push of 8 -> 1) and L's held records stay 1, 2, 3.
 */
#include "common.h"

static int role; /* 1 = D1, 2 = D2 (in the forked children) */
static int to_parent[2];

void shmr_test_hook(int site)
{
    if (role == 2 && site == SHMR_HOOK_CLAIM_INTENT) { /* intent [0,8) written, CAS not yet tried: park until killed */
        t_send(to_parent[1], 'i');
        for (;;)
            pause();
    }
    if (role == 1 && site == SHMR_HOOK_CLAIM_WON) /* won [0,1), dies before CLAIM_HELD */
        _exit(0);
}

int main(void)
{
    t_init("reclaim_tied_intents", 10);
    shmr_ring *R = t_mk(t_segname("tied-intents"), SHMR_MODE_QUEUE, SHMR_OVERFLOW_BLOCK, 8);
    shmr_producer *p;
    CHECK(shmr_producer_open(R, &p));
    EXPECT_EQ(t_push_seq(p, 0, 8), 8, "initial push 0..7");
    int go1[2];
    if (pipe(to_parent) || pipe(go1))
        t_fatal("pipe");

    pid_t d1 = t_fork();
    if (d1 == 0) {
        shmr_consumer *c;
        CHECK(shmr_consumer_open(R, 0, &c));
        t_send(to_parent[1], 'o');
        t_recv(go1[0]);
        role = 1;
        const void *ptr;
        shmr_claim(c, 1, &ptr, NULL);
        t_child_fail(3, "D1 was not stopped at hook 6");
    }
    t_recv(to_parent[0]); /* D1 has its consumer slot */

    pid_t d2 = t_fork();
    if (d2 == 0) {
        shmr_consumer *c;
        CHECK(shmr_consumer_open(R, 0, &c));
        role = 2;
        const void *ptr;
        shmr_claim(c, 8, &ptr, NULL);
        t_child_fail(3, "D2 was not stopped at hook 3");
    }
    t_recv(to_parent[0]); /* D2 wrote INTENT [0,8) */
    t_send(go1[1], 'g');
    int st1 = t_reap(d1);
    if (st1 != 0)
        t_fatal("D1 exited with %d, want 0 (died at hook 6 holding [0,1))", st1);
    kill(d2, SIGKILL);
    t_reap(d2);

    EXPECT_EQ(t_info(R).tail, 1, "tail after D1's claim of [0,1)");
    shmr_consumer *L;
    CHECK(shmr_consumer_open(R, 0, &L));
    const uint64_t *view;
    int64_t n = shmr_claim(L, 3, (const void **)&view, NULL);
    if (n != 3 || view[0] != 1 || view[1] != 2 || view[2] != 3)
        t_fatal("live L's zero-copy claim: got %" PRId64 " records, want 1 2 3", n);

    uint64_t rec = 0;
    int freed = shmr_producer_recover(p, &rec);
    EXPECT_EQ(freed, 2, "recover: dead consumer slots freed");
    EXPECT_EQ(rec, 1, "recover: records reclaimed (D1 held [0,1); D2's [0,8) was a stale intent)");
    EXPECT_EQ(t_push_seq(p, 1000, 8), 1, "push of 8 while L still holds [1,4) (only slot 0 is free)");
    EXPECT(view[0] == 1 && view[1] == 2 && view[2] == 3,
           "L's held records were overwritten: now %" PRIu64 " %" PRIu64 " %" PRIu64 ", want 1 2 3", view[0], view[1],
           view[2]);
    shmr_ring_info i = t_info(R);
    EXPECT_EQ(i.abandoned, 1, "abandoned");
    EXPECT_EQ(i.evicted, 2, "evicted");
    EXPECT_EQ(shmr_release(L), 0, "L's release");
    t_finish("tied dead intents at one position release only the shortest length; a live zero-copy claim stays intact");
}
