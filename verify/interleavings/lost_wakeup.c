/*
 * lost_wakeup -- two processes ping-pong one record at a time through two
 * queue rings for SHMR_WAKE_TRIPS round trips (default 1000000). The echo side
 * sleeps in the futex (no spinning, waits of up to 2 s) as soon as it finds
 * ping empty; the main side polls pong and publishes the next ping at once.
 * Before each wait the echo side delays by an amount that sweeps 0-0.6 us, so
 * the publication lands again and again inside its window between raising
 * the waiter count and re-checking head (two processes that both sleep never
 * line up like that: the sleeper is long asleep when the record comes).
 *
 * What it pins: the store-buffering pair of the eventcount. Without the fence
 * (or, where the notifier skips it, the sleeper's membarrier) the
 * notifier's load of the waiter count may be satisfied before its store of
 * head is visible (x86 store buffer) while the sleeper raises the count and
 * re-checks head in the other order: both miss, and the sleeper sleeps
 * through a published record. A wait that ends by timeout with the record
 * already there is such a lost wake-up; the worst round trip is reported.
 */
#include "common.h"

#include <time.h>

static volatile uint64_t sink;

void shmr_test_hook(int site) { (void)site; }

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Waits for one record; returns 1 if it arrived only after a wait timed out. */
static int recv1(shmr_consumer *c, uint64_t *v)
{
    int lost = 0;
    for (;;) {
        if (shmr_pop(c, v, 1, NULL) == 1)
            return lost;
        if (shmr_consumer_wait(c, 2000000000, 0) == -ETIMEDOUT)
            lost = 1;
    }
}

int main(void)
{
    t_init("lost_wakeup", 600);
    const char *env = getenv("SHMR_WAKE_TRIPS");
    uint64_t trips = env ? strtoull(env, NULL, 10) : 1000000;
    shmr_ring *ping = t_mk(t_segname("lw-ping"), SHMR_MODE_QUEUE, SHMR_OVERFLOW_BLOCK, 2);
    shmr_ring *pong = t_mk(t_segname("lw-pong"), SHMR_MODE_QUEUE, SHMR_OVERFLOW_BLOCK, 2);
    pid_t pid = t_fork();
    if (pid == 0) {
        shmr_consumer *c;
        shmr_producer *p;
        CHECK(shmr_consumer_open(ping, 0, &c));
        CHECK(shmr_producer_open(pong, &p));
        uint64_t lost = 0;
        for (uint64_t i = 0; i < trips; i++) {
            uint64_t v;
            for (uint64_t d = (i * 7) % 400; d > 0; d--)
                sink += d; /* the sweep: a few ns per step */
            lost += (uint64_t)recv1(c, &v);
            while (shmr_push(p, &v, 1) != 1)
                shmr_producer_wait(p, 2000000000, 0);
        }
        if (lost)
            t_child_fail(4, "echo side: %" PRIu64 " wake-ups lost", lost);
        _exit(0);
    }
    shmr_producer *p;
    shmr_consumer *c;
    CHECK(shmr_producer_open(ping, &p));
    CHECK(shmr_consumer_open(pong, 0, &c));
    int64_t worst = 0;
    for (uint64_t i = 0; i < trips; i++) {
        int64_t t0 = now_ns();
        while (shmr_push(p, &i, 1) != 1)
            shmr_producer_wait(p, 2000000000, 0);
        uint64_t v;
        /* poll: the next ping goes out within ns of the echo arriving */
        int64_t give_up = t0 + 2000000000;
        while (shmr_pop(c, &v, 1, NULL) != 1) {
            sink++;
            if (now_ns() > give_up)
                t_fatal("round trip %" PRIu64 " took over 2 s: the echo side slept through a ping", i);
        }
        if (v != i)
            t_fatal("trip %" PRIu64 ": got %" PRIu64, i, v);
        int64_t dt = now_ns() - t0;
        if (dt > worst)
            worst = dt;
    }
    int st = t_reap(pid);
    EXPECT_EQ(st, 0, "echo side's exit status (4: it lost a wake-up)");
    char msg[160];
    snprintf(msg, sizeof msg, "%" PRIu64 " round trips, worst %.3f ms, no wake-up lost", trips, worst / 1e6);
    t_finish(msg);
}
