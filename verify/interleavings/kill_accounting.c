/*
 * kill_accounting -- queue mode: a consumer dies at each step of taking a slot
 * and of releasing a batch; popped + abandoned must equal what left the ring.
 *
 * Races pinned:
 *  1. Killed right after winning a slot (hook 7), before anything else: the
 *     old core reset the slot's counters only after that point, and the sweep
 *     added the previous occupant's popped to the ring total a second time
 *     (old core: popped 10 after 5 pops).
 *  2. Killed after counting a batch as popped, before its release record
 *     (hook 8): the sweep must release it without also counting it abandoned.
 *  3. Killed after winning the claim CAS, before anything else (hook 6): the
 *     batch is abandoned, counted once.
 * In every case the producer can refill the whole ring afterwards.
 *
 * The same steps on a ring with one consumer slot, whose claim is a plain store
 * of tail instead of a CAS (queue.c), plus a kill between the claim record and
 * that store (hook 3): nothing was claimed, so nothing is abandoned, and the
 * next occupant of the slot starts where the dead one stopped.
 */
#include "common.h"

static int die_at; /* set in a child: it exits at this hook site, as a SIGKILL there would */

void shmr_test_hook(int site)
{
    if (die_at && site == die_at)
        _exit(0);
}

/* A child that opens a consumer and pops up to n records, dying at the site. */
static void child_pops(shmr_ring *r, int site, uint64_t n)
{
    pid_t pid = t_fork();
    if (pid == 0) {
        die_at = site;
        shmr_consumer *c;
        CHECK(shmr_consumer_open(r, 0, &c));
        uint64_t out[8];
        shmr_pop(c, out, n, NULL);
        t_child_fail(3, "the child ran past hook %d", site);
    }
    int st = t_reap(pid);
    if (st != 0)
        t_fatal("child exited with %d", st);
}

static void scenario(const char *tag, int site, uint64_t popped_by_child, uint64_t abandoned, uint32_t slots)
{
    shmr_ring *r = t_mk_slots(t_segname(tag), SHMR_MODE_QUEUE, SHMR_OVERFLOW_BLOCK, 8, slots);
    shmr_producer *p;
    CHECK(shmr_producer_open(r, &p));
    /* a previous occupant pops 5 and leaves: its slot keeps its counters */
    shmr_consumer *c;
    CHECK(shmr_consumer_open(r, 0, &c));
    EXPECT_EQ(t_push_seq(p, 0, 5), 5, "%s: first push", tag);
    uint64_t out[8];
    EXPECT_EQ(shmr_pop(c, out, 8, NULL), 5, "%s: first pop", tag);
    shmr_consumer_free(c);

    EXPECT_EQ(t_push_seq(p, 5, 8), 8, "%s: refill", tag);
    child_pops(r, site, 3);
    uint64_t rec = 0;
    EXPECT_EQ(shmr_producer_recover(p, &rec), 1, "%s: dead slots freed", tag);
    shmr_ring_info i = t_info(r);
    EXPECT_EQ(i.popped, 5 + popped_by_child, "%s: popped", tag);
    EXPECT_EQ(i.abandoned, abandoned, "%s: abandoned", tag);
    EXPECT_EQ(rec, abandoned, "%s: reclaimed", tag);
    /* a second sweep (as after a sweeper that died) changes nothing */
    EXPECT_EQ(shmr_producer_recover(p, &rec), 0, "%s: second sweep", tag);
    i = t_info(r);
    EXPECT_EQ(i.popped + i.abandoned, i.tail, "%s: popped + abandoned = claimed", tag);

    CHECK(shmr_consumer_open(r, 0, &c));
    uint64_t left = 13 - i.tail, got = 0;
    int64_t k;
    while ((k = shmr_pop(c, out, 8, NULL)) > 0)
        got += (uint64_t)k;
    EXPECT_EQ(got, left, "%s: records left for a live consumer", tag);
    EXPECT_EQ(t_push_seq(p, 13, 8), 8, "%s: the producer refills the whole ring", tag);
    i = t_info(r);
    EXPECT_EQ(i.popped + i.abandoned, 13, "%s: popped + abandoned = pushed before the refill", tag);
    shmr_consumer_free(c);
    shmr_producer_free(p);
    shmr_detach(r);
}

int main(void)
{
    t_init("kill_accounting", 20);
    scenario("ka-slot", SHMR_HOOK_SLOT_TAKEN, 0, 0, 8);
    scenario("ka-counted", SHMR_HOOK_RELEASE_COUNTED, 3, 0, 8);
    scenario("ka-won", SHMR_HOOK_CLAIM_WON, 0, 3, 8);
    scenario("ka1-slot", SHMR_HOOK_SLOT_TAKEN, 0, 0, 1);
    scenario("ka1-intent", SHMR_HOOK_CLAIM_INTENT, 0, 0, 1);
    scenario("ka1-counted", SHMR_HOOK_RELEASE_COUNTED, 3, 0, 1);
    scenario("ka1-won", SHMR_HOOK_CLAIM_WON, 0, 3, 1);
    t_finish("a consumer killed at any step of taking a slot or releasing a batch is counted exactly once");
}
