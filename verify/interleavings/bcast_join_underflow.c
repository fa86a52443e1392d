/*
 * bcast_join_underflow -- broadcast-BLOCK: a consumer joining with START_OLDEST
 * publishes a provisional cursor (head_it_read - cap, ready = 1) before it bumps
 * join_epoch and moves the cursor up to intent - cap. If the producer advanced
 * meanwhile, that provisional cursor lies below head - cap.
 *
 * Race pinned: the producer's room = cap - (head - min_cursor) used to take the
 * joiner's provisional cursor unclamped, wrapped to ~2^64 and let the producer
 * overwrite records an existing slow consumer C had not read yet. Block mode
 * has no torn-read detection, so C silently got wrong records (old core: push
 * of 16..23 -> 8, C read 16..23 instead of 8..15, or 116..123 when the joiner
 * died there and the producer never blocked again).
 *
 * Correct behaviour (min cursor clamped at head - cap):
 *   A) joiner parked at hooks 1/2: with C 8 records behind, the producer's push
 *      returns 0; C reads exactly 8..15 with dropped = 0; the joiner finishes
 *      opening and reads an intact, consecutive run ending at 15.
 *   B) joiner process killed at hook 2: the producer still blocks (every push
 *      returns 0), C reads exactly 8..15; recover evicts the dead joiner and the
 *      producer proceeds (push 8 -> 8, C reads 16..23).
 */
#include "common.h"

#define CAP 8

static int j_mode;           /* 0: not the joiner; 1: park at hooks 1 and 2; 2: die at hook 2 */
static __thread int is_joiner;
static sem_t s_headread, s_go1, s_ready, s_go2;

void shmr_test_hook(int site)
{
    if (!is_joiner)
        return;
    if (j_mode == 1 && site == SHMR_HOOK_JOIN_READ_HEAD) { /* preempted right after reading head */
        sem_post(&s_headread);
        t_sem_wait(&s_go1);
    }
    if (site == SHMR_HOOK_JOIN_PROVISIONAL) { /* provisional cursor + ready stored, join_epoch not bumped */
        if (j_mode == 2)
            _exit(0);
        if (j_mode == 1) {
            sem_post(&s_ready);
            t_sem_wait(&s_go2);
        }
    }
}

static shmr_ring *R;
static shmr_consumer *J;
static void *joiner(void *a)
{
    (void)a;
    is_joiner = 1;
    CHECK(shmr_consumer_open(R, SHMR_START_OLDEST, &J));
    return NULL;
}

/* C must read exactly from..from+n-1, nothing dropped. */
static void expect_pop(shmr_consumer *c, uint64_t from, int64_t n, const char *who)
{
    uint64_t out[64], dropped = 0;
    int64_t got = shmr_pop(c, out, 64, &dropped);
    EXPECT_EQ(got, n, "%s: records popped", who);
    EXPECT_EQ(dropped, 0, "%s: dropped (block mode must never drop)", who);
    for (int64_t i = 0; i < got && i < n; i++)
        if (out[i] != from + (uint64_t)i) {
            t_deviation("%s: record %" PRId64 " is %" PRIu64 ", want %" PRIu64
                        " (overwritten before it was read)", who, i, out[i], from + (uint64_t)i);
            break;
        }
}

/* head 13, C has read 0..7: C's cursor 8 is the slowest */
static void setup(shmr_producer *p, shmr_consumer *C)
{
    EXPECT_EQ(t_push_seq(p, 0, 8), 8, "initial push 0..7");
    expect_pop(C, 0, 8, "setup: C");
    EXPECT_EQ(t_push_seq(p, 8, 5), 5, "push 8..12");
}

static void scenario_parked(void)
{
    R = t_mk(t_segname("bcast-join-a"), SHMR_MODE_BROADCAST, SHMR_OVERFLOW_BLOCK, CAP);
    shmr_producer *p;
    shmr_consumer *C;
    CHECK(shmr_producer_open(R, &p));
    CHECK(shmr_consumer_open(R, SHMR_START_LATEST, &C));
    setup(p, C);

    j_mode = 1;
    pthread_t t;
    if (pthread_create(&t, NULL, joiner, NULL))
        t_fatal("pthread_create");
    t_sem_wait(&s_headread);                     /* J read head = 13 */
    EXPECT_EQ(t_push_seq(p, 13, 3), 3, "A: push 13..15 (fills the ring w.r.t. C)");
    sem_post(&s_go1);
    t_sem_wait(&s_ready);                        /* J: cursor 13 - 8 = 5 < head - cap, ready */
    EXPECT_EQ(t_push_seq(p, 16, 8), 0, "A: push of 16..23 while C (cursor 8) has read nothing of 8..15");
    expect_pop(C, 8, 8, "A: C (expects 8..15)");

    sem_post(&s_go2);
    pthread_join(t, NULL);
    /* J joined START_OLDEST: whatever it gets must be intact records, in order, up to head */
    uint64_t out[64], dropped = 0;
    int64_t n = shmr_pop(J, out, 64, &dropped);
    EXPECT(n > 0, "A: joiner popped %" PRId64 " records, want > 0", n);
    EXPECT_EQ(dropped, 0, "A: joiner dropped");
    if (n > 0) {
        EXPECT(out[0] >= 8, "A: joiner's first record %" PRIu64 " is older than head - cap = 8", out[0]);
        EXPECT_EQ(out[n - 1], 15, "A: joiner's last record");
        for (int64_t i = 1; i < n; i++)
            if (out[i] != out[i - 1] + 1) {
                t_deviation("A: joiner's records not consecutive at %" PRId64 ": %" PRIu64 " after %" PRIu64, i,
                            out[i], out[i - 1]);
                break;
            }
    }
    shmr_consumer_free(J);
    shmr_consumer_free(C);
    shmr_producer_free(p);
    shmr_detach(R);
}

static void scenario_killed(void)
{
    R = t_mk(t_segname("bcast-join-b"), SHMR_MODE_BROADCAST, SHMR_OVERFLOW_BLOCK, CAP);
    shmr_producer *p;
    shmr_consumer *C;
    CHECK(shmr_producer_open(R, &p));
    CHECK(shmr_consumer_open(R, SHMR_START_LATEST, &C));
    setup(p, C);

    pid_t pid = t_fork();
    if (pid == 0) {
        is_joiner = 1;
        j_mode = 2; /* read head = 13, cursor 5 + ready, then die at hook 2 */
        shmr_consumer *j;
        shmr_consumer_open(R, SHMR_START_OLDEST, &j);
        t_child_fail(3, "joiner was not killed at hook 2");
    }
    int st = t_reap(pid);
    if (st != 0)
        t_fatal("B: joiner child exited with %d, want 0 (died at hook 2)", st);
    EXPECT_EQ(t_push_seq(p, 13, 3), 3, "B: push 13..15 (fills the ring w.r.t. C)");
    EXPECT_EQ(t_push_seq(p, 16, 8), 0, "B: push of 16..23 with a dead joiner's provisional cursor 5");
    for (int i = 0; i < 3; i++)
        EXPECT_EQ(t_push_seq(p, 100 + 8 * (uint64_t)i, 8), 0, "B: extra push %d (producer must keep blocking)", i);
    expect_pop(C, 8, 8, "B: C (expects 8..15)");

    uint64_t rec = 0;
    EXPECT_EQ(shmr_producer_recover(p, &rec), 1, "B: recover: dead joiners evicted");
    EXPECT_EQ(t_push_seq(p, 16, 8), 8, "B: push of 16..23 after the dead joiner was evicted");
    expect_pop(C, 16, 8, "B: C (expects 16..23)");
    shmr_consumer_free(C);
    shmr_producer_free(p);
    shmr_detach(R);
}

int main(void)
{
    t_init("bcast_join_underflow", 10);
    sem_init(&s_headread, 0, 0);
    sem_init(&s_go1, 0, 0);
    sem_init(&s_ready, 0, 0);
    sem_init(&s_go2, 0, 0);
    scenario_parked();
    scenario_killed();
    t_finish("stalled and killed START_OLDEST joiners never let the producer overrun a slow block-mode consumer");
}
