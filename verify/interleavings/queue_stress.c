/*
 * queue_stress -- queue mode under contention: one producer and several
 * consumer threads on a small ring (capacity 64) with random batch sizes,
 * mixing shmr_pop with zero-copy shmr_claim/shmr_release on the consumer side
 * and shmr_push with shmr_reserve/shmr_commit on the producer side, waiting
 * through the eventcount when empty/full.
 *
 * What it pins: the claim protocol's tail CAS / release records (the code the
 * forced-interleaving tests above patch around) under real, unforced races.
 * Correct behaviour: every record 0..N-1 is delivered exactly once over all
 * consumers (no duplicate, none missing), each consumer sees its records in
 * strictly increasing order, the stream ends with ECLOSED for everyone, and
 * nothing is counted abandoned or evicted.
 *
 * Environment: SHMR_STRESS_RECORDS (default 2000000) and SHMR_STRESS_CONSUMERS
 * (default 4, max 64) for longer or wider runs.
 */
#include "common.h"

#include <stdatomic.h>

void shmr_test_hook(int site) { (void)site; }

#define MAXC 64
#define CAP 64

static shmr_ring *R;
static uint64_t N = 2000000;
static _Atomic uint64_t total;
static _Atomic int bad;
static uint8_t *seen;

static void bad_record(const char *what, uint64_t v, uint64_t prev, long who)
{
    if (atomic_fetch_add(&bad, 1) < 10)
        fprintf(stderr, "FAIL queue_stress: consumer %ld: %s: record %" PRIu64 " (previous %" PRIu64 ")\n", who, what,
                v, prev);
}

static void *cons(void *a)
{
    long who = (long)(intptr_t)a;
    shmr_consumer *c;
    CHECK(shmr_consumer_open(R, 0, &c));
    uint64_t buf[37], last = 0;
    int any = 0;
    unsigned seed = (unsigned)who * 2654435761u;
    for (;;) {
        uint64_t max = 1 + (uint64_t)rand_r(&seed) % 37;
        int64_t n;
        if (rand_r(&seed) & 1) {
            n = shmr_pop(c, buf, max, NULL);
        } else {
            const uint64_t *v;
            n = shmr_claim(c, max, (const void **)&v, NULL);
            if (n > 0) {
                memcpy(buf, v, (size_t)n * 8);
                shmr_release(c);
            }
        }
        if (n == -SHMR_ECLOSED)
            break;
        if (n < 0)
            t_fatal("consumer %ld: pop/claim returned %" PRId64, who, n);
        if (n == 0) {
            shmr_consumer_wait(c, 1000000, 1000);
            continue;
        }
        for (int64_t i = 0; i < n; i++) {
            uint64_t v = buf[i];
            if (v >= N) {
                bad_record("out of range (torn or stale slot)", v, last, who);
                continue;
            }
            if (any && v <= last)
                bad_record("not increasing", v, last, who);
            if (__atomic_fetch_add(&seen[v], 1, __ATOMIC_RELAXED) != 0)
                bad_record("delivered twice", v, last, who);
            last = v;
            any = 1;
        }
        atomic_fetch_add(&total, (uint64_t)n);
    }
    shmr_consumer_free(c);
    return NULL;
}

static uint64_t env_u64(const char *name, uint64_t dflt, uint64_t lo, uint64_t hi)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return dflt;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || v < lo || v > hi)
        t_fatal("%s=%s: want an integer in [%" PRIu64 ", %" PRIu64 "]", name, s, lo, hi);
    return v;
}

int main(void)
{
    N = env_u64("SHMR_STRESS_RECORDS", N, 1, 1ull << 36);
    int nc = (int)env_u64("SHMR_STRESS_CONSUMERS", 4, 1, MAXC);
    /* generous: ~1 s per 10^6 records is typical; stalls trip the watchdog */
    t_init("queue_stress", (unsigned)(30 + N / 50000));
    R = t_mk(t_segname("queue-stress"), SHMR_MODE_QUEUE, SHMR_OVERFLOW_BLOCK, CAP);
    seen = calloc(N, 1);
    if (!seen)
        t_fatal("calloc(%" PRIu64 ")", N);
    shmr_producer *p;
    CHECK(shmr_producer_open(R, &p));
    pthread_t t[MAXC];
    for (long i = 0; i < nc; i++)
        if (pthread_create(&t[i], NULL, cons, (void *)(intptr_t)(i + 1)))
            t_fatal("pthread_create");

    uint64_t next = 0, buf[50];
    unsigned seed = 7;
    while (next < N) {
        uint64_t n = 1 + (uint64_t)rand_r(&seed) % 50;
        if (next + n > N)
            n = N - next;
        int64_t k;
        if (rand_r(&seed) & 1) {
            for (uint64_t i = 0; i < n; i++)
                buf[i] = next + i;
            k = shmr_push(p, buf, n);
        } else {
            void *ptr;
            k = shmr_reserve(p, n, &ptr);
            if (k > 0) {
                uint64_t *w = ptr;
                for (int64_t i = 0; i < k; i++)
                    w[i] = next + (uint64_t)i;
                shmr_commit(p, (uint64_t)k);
            }
        }
        if (k < 0)
            t_fatal("producer: push/reserve returned %" PRId64, k);
        if (k == 0) {
            shmr_producer_wait(p, 1000000, 1000);
            continue;
        }
        next += (uint64_t)k;
    }
    CHECK(shmr_producer_close_stream(p));
    for (int i = 0; i < nc; i++)
        pthread_join(t[i], NULL);

    uint64_t missing = 0, first_missing = N;
    for (uint64_t i = 0; i < N; i++)
        if (!seen[i] && missing++ == 0)
            first_missing = i;
    EXPECT_EQ(atomic_load(&bad), 0, "bad deliveries (duplicate, out of order or out of range)");
    EXPECT_EQ(missing, 0, "records never delivered (first: %" PRIu64 ")", first_missing);
    EXPECT_EQ(atomic_load(&total), N, "records delivered in total");
    shmr_ring_info i = t_info(R);
    EXPECT_EQ(i.pushed, N, "pushed");
    EXPECT_EQ(i.tail, N, "tail");
    EXPECT_EQ(i.abandoned, 0, "abandoned");
    EXPECT_EQ(i.evicted, 0, "evicted");
    shmr_producer_free(p);
    free(seen);
    char summary[128];
    snprintf(summary, sizeof summary, "%" PRIu64 " records, %d consumers, each delivered exactly once and in order",
             N, nc);
    t_finish(summary);
}
