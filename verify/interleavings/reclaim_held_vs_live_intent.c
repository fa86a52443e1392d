/*
 * reclaim_held_vs_live_intent -- queue mode: a dead consumer D holds a
 * CLAIM_HELD batch [0,4) while a LIVE consumer L2 has a transient, stale
 * CLAIM_INTENT record [0,8) at the same position (it read tail = 0 and is
 * parked at hook 3, before its CAS, which will fail).
 *
 * Race pinned: reclaim() used to skip a dead consumer's batch whenever any live
 * consumer's claim record "covered" p0 -- including a stale intent -- and then
 * freed the dead slot anyway, so the batch was never released and the producer
 * blocked for good (old core: reclaimed 0, abandoned 0, every later push -> 0).
 *
 * Correct behaviour: a CLAIM_HELD record is authoritative, so the sweep frees
 * D's slot and releases its batch (recover -> 1, reclaimed 4); L2's CAS then
 * fails, it retries and pops 4..7; the producer can refill all 8 slots.
 */
#include "common.h"

static shmr_ring *R;
static __thread int is_L2;
static sem_t at_intent, go_on;
static shmr_consumer *L2;
static int64_t l2_n;
static uint64_t l2_out[8];

void shmr_test_hook(int site)
{
    static int once;
    if (site == SHMR_HOOK_CLAIM_INTENT && is_L2 && !once) { /* INTENT [tail, tail+k) written, CAS not yet tried */
        once = 1;
        sem_post(&at_intent);
        t_sem_wait(&go_on);
    }
}

static void *l2_main(void *arg)
{
    (void)arg;
    is_L2 = 1;
    l2_n = shmr_pop(L2, l2_out, 8, NULL);
    return NULL;
}

int main(void)
{
    t_init("reclaim_held_vs_live_intent", 10);
    R = t_mk(t_segname("held-vs-intent"), SHMR_MODE_QUEUE, SHMR_OVERFLOW_BLOCK, 8);
    sem_init(&at_intent, 0, 0);
    sem_init(&go_on, 0, 0);
    shmr_producer *p;
    CHECK(shmr_producer_open(R, &p));
    EXPECT_EQ(t_push_seq(p, 0, 8), 8, "initial push 0..7");
    CHECK(shmr_consumer_open(R, 0, &L2));
    pthread_t t;
    if (pthread_create(&t, NULL, l2_main, NULL))
        t_fatal("pthread_create");
    t_sem_wait(&at_intent); /* L2 (live): INTENT pos 0 n 8, not yet CASed */

    pid_t pid = t_fork();
    if (pid == 0) {
        shmr_consumer *d;
        const void *ptr;
        CHECK(shmr_consumer_open(R, 0, &d));
        int64_t k = shmr_claim(d, 4, &ptr, NULL); /* wins [0,4), CLAIM_HELD */
        if (k != 4)
            t_child_fail(3, "D's claim returned %" PRId64 ", want 4", k);
        _exit(0); /* dies holding it */
    }
    int st = t_reap(pid);
    if (st != 0)
        t_fatal("child D exited with %d", st);

    uint64_t rec = 0;
    int freed = shmr_producer_recover(p, &rec);
    EXPECT_EQ(freed, 1, "recover: dead consumer slots freed");
    EXPECT_EQ(rec, 4, "recover: records reclaimed from dead D's HELD batch (L2's live intent is stale)");

    sem_post(&go_on);
    pthread_join(t, NULL);
    EXPECT_EQ(l2_n, 4, "L2's pop after its stale CAS failed");
    for (int64_t i = 0; i < l2_n && i < 8; i++)
        if (l2_out[i] != 4 + (uint64_t)i) {
            t_deviation("L2's record %" PRId64 " is %" PRIu64 ", want %" PRIu64, i, l2_out[i], 4 + (uint64_t)i);
            break;
        }
    shmr_ring_info i = t_info(R);
    EXPECT_EQ(i.abandoned, 4, "abandoned");
    EXPECT_EQ(i.tail, 8, "tail");
    EXPECT_EQ(t_push_seq(p, 100, 8), 8, "push of 8 into the drained ring (0 = D's batch leaked)");
    shmr_consumer_free(L2);
    t_finish("a dead consumer's HELD batch is reclaimed even while a live consumer has a stale intent at its position");
}
