/*
 * stress_mpq.c -- threaded stress of shmring.Queue's C side (csrc/mpqueue.c),
 * built with ThreadSanitizer by verify/run_tsan.sh (mode "mpq").
 *
 * One process, one anonymous queue (a memfd). PRODUCERS threads each take a
 * lane of their own (a lane held by a live process is skipped, and all threads
 * share this process's identity, so each shmr_mpq_producer_open takes the next
 * free lane) and put their items in batches of 1-4 per publish (one publish,
 * one wake: the getter that takes an item passes the wake on). GETTERS threads
 * each attach the queue on their own (shmr_mpq_pick binds lanes per handle) and
 * take items as shmring.Queue.get does: pick, claim from the lane it named,
 * release, shmr_mpq_taken; when nothing is there they wait on the queue's data
 * eventcount, some with a spin and some without, and one getter with short
 * timeouts after which it gives up the wait as a timed-out get() does
 * (shmr_mpq_leave), and after 200 of them stops taking items altogether.
 *
 * Checks: every item taken exactly once; each getter sees each producer's
 * items in increasing order; no item is corrupt; and no wait runs its whole
 * timeout (STALL_NS) while items are queued: with one wake per publish, a wake
 * lost on the way (no pass-on, or a getter giving up without passing it on)
 * would leave items behind sleeping getters, and shows here as a stall.
 *
 * usage: stress_mpq [items]     exit status 0 = all checks passed
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "../csrc/mpqueue.h"
#include "../csrc/shmring.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PRODUCERS 3
#define GETTERS 3
#define LANES 8
#define STALL_NS 1000000000LL /* a wait this long with items queued is a lost wake-up */

struct item {
    uint64_t producer, seq, check;
};

static uint64_t per_producer;
static int queue_fd;
static atomic_uint_fast64_t taken;
static atomic_uchar *seen; /* [producer * per_producer + seq] */
static atomic_int failures, stalls;

#define FAIL(...)                                                                                                      \
    do {                                                                                                               \
        atomic_fetch_add(&failures, 1);                                                                                \
        fprintf(stderr, "FAIL " __VA_ARGS__);                                                                          \
        fputc('\n', stderr);                                                                                           \
    } while (0)

static uint64_t check_of(uint64_t p, uint64_t s) { return (p * 0x9E3779B97F4A7C15ull) ^ (s * 0xC2B2AE3D27D4EB4Full); }

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint32_t rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

static shmr_mpq *attach(void)
{
    shmr_mpq *q;
    int fd = dup(queue_fd);
    if (fd < 0 || shmr_mpq_attach_fd(fd, &q)) {
        FAIL("attach");
        return NULL;
    }
    return q;
}

static void *producer_main(void *arg)
{
    uint64_t me = (uint64_t)(uintptr_t)arg, rs = me + 1;
    shmr_mpq *q = attach();
    shmr_ring *r;
    shmr_producer *p;
    uint32_t lane;
    if (!q || shmr_mpq_producer_open(q, &r, &p, &lane)) {
        FAIL("producer %" PRIu64 ": no lane", me);
        return NULL;
    }
    uint64_t consumed = 0;
    for (uint64_t s = 0; s < per_producer;) {
        uint64_t batch = 1 + rnd(&rs) % 4;
        if (batch > per_producer - s)
            batch = per_producer - s;
        shmr_mpq_admit(q, lane, batch, &consumed); /* no maxsize: always admitted */
        for (uint64_t k = 0; k < batch; k++, s++) {
            void *body;
            int rc;
            while ((rc = shmr_msg_reserve(p, 1, sizeof(struct item), &body)) == 0) {
                shmr_msg_commit(p); /* what is pending first, then wait for room in our lane */
                if (shmr_msg_producer_wait(p, sizeof(struct item), STALL_NS, 0) == -ETIMEDOUT) {
                    atomic_fetch_add(&stalls, 1);
                    FAIL("producer %" PRIu64 ": no room for %.1f s (getters stuck?)", me, STALL_NS / 1e9);
                }
            }
            if (rc < 0) {
                FAIL("producer %" PRIu64 ": reserve %d", me, rc);
                return NULL;
            }
            struct item it = {me, s, check_of(me, s)};
            memcpy(body, &it, sizeof it);
        }
        shmr_msg_commit(p); /* the whole batch in one publish: one wake */
    }
    return NULL;
}

static void *getter_main(void *arg)
{
    int me = (int)(intptr_t)arg;
    uint64_t rs = 77 + (uint64_t)me;
    shmr_mpq *q = attach();
    shmr_consumer *cons[LANES] = {0};
    uint64_t last[PRODUCERS];
    uint64_t total = per_producer * PRODUCERS;
    shmr_msg msgs[8];
    int gave_up = 0;
    for (int i = 0; i < PRODUCERS; i++)
        last[i] = UINT64_MAX;
    if (!q)
        return NULL;
    while (atomic_load(&taken) < total && atomic_load(&failures) == 0) {
        uint32_t lane;
        uint64_t count;
        /* getters 1 and 2 take one item at a time, as get() does: a batch published
         * with one wake is theirs only if each passes the wake on */
        if (!shmr_mpq_pick(q, me == 0 ? 8 : 1, &lane, &count)) {
            /* getter 0 gives up short waits as a timed-out get() does; the others
             * wait long, half of them spinning first */
            int64_t tmo = me == 0 ? 20000 + (int64_t)(rnd(&rs) % 500000) : STALL_NS;
            int64_t spin = me == 1 ? 20000 : 0;
            int64_t t0 = now_ns();
            int rc = shmr_mpq_wait_data(q, tmo, spin);
            if (rc == -ETIMEDOUT) {
                if (me == 0) {
                    /* gives the wake it may have had to another getter, and after a
                     * while stops for good (a consumer that is done), so that a wake
                     * it swallowed would show as the others' stall */
                    shmr_mpq_leave(q);
                    if (++gave_up == 200)
                        break;
                }
                else if (shmr_mpq_has_data(q) && now_ns() - t0 >= STALL_NS) {
                    atomic_fetch_add(&stalls, 1);
                    FAIL("getter %d slept %.1f s with items queued (a lost wake-up)", me, STALL_NS / 1e9);
                }
            }
            continue;
        }
        if (lane >= LANES) {
            FAIL("pick named lane %u", lane);
            break;
        }
        if (!cons[lane]) {
            shmr_ring *r;
            if (shmr_mpq_lane_open(q, lane, &r) || shmr_consumer_open(r, SHMR_START_LATEST, &cons[lane])) {
                FAIL("getter %d: lane %u", me, lane);
                break;
            }
        }
        int64_t n = shmr_msg_claim(cons[lane], msgs, count > 8 ? 8 : count, NULL);
        if (n <= 0)
            continue; /* taken meanwhile */
        for (int64_t i = 0; i < n; i++) {
            struct item it;
            if (msgs[i].len != sizeof it) {
                FAIL("getter %d: item of %" PRIu64 " bytes", me, msgs[i].len);
                continue;
            }
            memcpy(&it, msgs[i].body, sizeof it);
            if (it.producer >= PRODUCERS || it.seq >= per_producer || it.check != check_of(it.producer, it.seq)) {
                FAIL("getter %d: corrupt item", me);
                continue;
            }
            if (atomic_exchange(&seen[it.producer * per_producer + it.seq], 1))
                FAIL("item %" PRIu64 "/%" PRIu64 " taken twice", it.producer, it.seq);
            if (last[it.producer] != UINT64_MAX && it.seq <= last[it.producer])
                FAIL("getter %d: producer %" PRIu64 " item %" PRIu64 " after %" PRIu64, me, it.producer, it.seq,
                     last[it.producer]);
            last[it.producer] = it.seq;
        }
        shmr_msg_release(cons[lane], msgs, NULL);
        shmr_mpq_taken(q);
        if (atomic_fetch_add(&taken, (uint64_t)n) + (uint64_t)n >= total)
            shmr_mpq_wake_all(q); /* the rest need not wait for a stall to notice */
    }
    return NULL;
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 60000;
    per_producer = n / PRODUCERS;
    seen = calloc(per_producer * PRODUCERS, 1);
    shmr_mpq_params prm = {LANES, 8, 4096, 0}; /* small lanes: producers wait for room too */
    shmr_mpq *q;
    int rc = shmr_mpq_create(NULL, &prm, 0600, &q);
    if (rc || !seen) {
        fprintf(stderr, "FAIL create %d\n", rc);
        return 1;
    }
    queue_fd = shmr_mpq_fd(q);
    pthread_t pt[PRODUCERS], gt[GETTERS];
    int64_t t0 = now_ns();
    for (int i = 0; i < GETTERS; i++)
        pthread_create(&gt[i], NULL, getter_main, (void *)(intptr_t)i);
    for (int i = 0; i < PRODUCERS; i++)
        pthread_create(&pt[i], NULL, producer_main, (void *)(uintptr_t)i);
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(pt[i], NULL);
    for (int i = 0; i < GETTERS; i++)
        pthread_join(gt[i], NULL);
    uint64_t missing = 0;
    for (uint64_t i = 0; i < per_producer * PRODUCERS; i++)
        missing += !atomic_load(&seen[i]);
    if (missing)
        FAIL("%" PRIu64 " items never taken", missing);
    printf("mpq: %d producers x %" PRIu64 " items, %d getters: taken %" PRIu64 ", missing %" PRIu64
           ", stalls %d, failures %d, %.1f s\n",
           PRODUCERS, per_producer, GETTERS, (uint64_t)atomic_load(&taken), missing, atomic_load(&stalls),
           atomic_load(&failures), (now_ns() - t0) / 1e9);
    shmr_mpq_detach(q);
    return atomic_load(&failures) ? 1 : 0;
}
