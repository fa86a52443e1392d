/*
 * stress.c -- threaded stress test of the shmring C core (csrc/).
 *
 * One process, one real POSIX shared-memory segment per run, 1 producer thread
 * and 3 consumer threads, each with its own handle (the core keeps identity by
 * pid, so every shmr_consumer_open takes its own consumer slot). Records are
 * 64 bytes: a sequence number, six payload words derived from it and a
 * checksum over all of them, so a torn or misplaced record is detected.
 *
 *   queue      every record consumed exactly once over all consumers; each
 *              consumer's records strictly increasing
 *   block      every consumer sees every record, in order, no drops
 *   overwrite  per consumer: strictly increasing, never torn, and the gap
 *              before each delivered record equals the drops reported
 *              (pop's *dropped, claim's *dropped, release's return value);
 *              delivered + dropped == records produced; the library's own
 *              dropped counter agrees
 *   solo       queue mode with one consumer slot (its claims are plain stores
 *              of tail, not CASes) and one consumer: exactly once, in order
 *   joinrace   (not in "all") broadcast-block, one long-lived consumer plus
 *              consumers that repeatedly join with START_OLDEST while the
 *              producer runs, read a little and leave; no block-mode consumer
 *              may ever lose a record (verify/README.md, findings A and B).
 *              max_consumers is 512 here: a longer refresh_min widens the
 *              producer's announce window and makes the race easy to hit.
 *
 * Both sides mix the copying calls (shmr_push / shmr_pop) with the zero-copy
 * ones (shmr_reserve + shmr_commit, sometimes committing fewer than reserved;
 * shmr_claim + shmr_release), random batch sizes, and wait through the
 * eventcount (shmr_producer_wait / shmr_consumer_wait). A wait that runs its
 * whole timeout (STALL_NS) while the stream is live is reported as a stall
 * (a lost wakeup would look like that).
 *
 * usage: stress [queue|block|overwrite|joinrace|solo|all] [records]
 * exit status 0 = all checks passed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
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

#define NCONS 3
#ifndef MAX_REPORTS
#define MAX_REPORTS 20
#endif
#define CAP 64
#define STALL_NS (5ll * 1000000000ll) /* a wait this long on a live stream is a stall */
#define WAIT_NS (STALL_NS + 1000000000ll)

typedef struct {
    uint64_t seq;
    uint64_t w[6];
    uint64_t sum;
} rec_t;
_Static_assert(sizeof(rec_t) == 64, "64-byte records");

static atomic_int failures;
static atomic_int stalls;

/* Opening a producer or consumer on one shmr_ring handle from several threads
 * at once races on the handle's private `populated` flag (see
 * verify/README.md, TSan finding); the Python binding opens with the GIL
 * held. The opens are serialized here unless STRESS_CONCURRENT_OPEN=1. */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static int concurrent_open;

static int consumer_open(shmr_ring *r, uint32_t start, shmr_consumer **c)
{
    if (!concurrent_open)
        pthread_mutex_lock(&open_lock);
    int rc = shmr_consumer_open(r, start, c);
    if (!concurrent_open)
        pthread_mutex_unlock(&open_lock);
    return rc;
}

static int producer_open(shmr_ring *r, shmr_producer **p)
{
    if (!concurrent_open)
        pthread_mutex_lock(&open_lock);
    int rc = shmr_producer_open(r, p);
    if (!concurrent_open)
        pthread_mutex_unlock(&open_lock);
    return rc;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        if (atomic_fetch_add(&failures, 1) < MAX_REPORTS) {                                                 \
            fprintf(stderr, "FAIL: " __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t rec_sum(const rec_t *r)
{
    uint64_t s = mix(r->seq);
    for (int i = 0; i < 6; i++)
        s = mix(s ^ r->w[i]);
    return s;
}

static void rec_fill(rec_t *r, uint64_t seq)
{
    r->seq = seq;
    for (int i = 0; i < 6; i++)
        r->w[i] = mix(seq * 8 + (uint64_t)i);
    r->sum = rec_sum(r);
}

static int rec_ok(const rec_t *r)
{
    for (int i = 0; i < 6; i++)
        if (r->w[i] != mix(r->seq * 8 + (uint64_t)i))
            return 0;
    return r->sum == rec_sum(r);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* xorshift per thread */
static uint32_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 11);
}

/* ---- one run ------------------------------------------------------------ */

enum kind { K_QUEUE, K_BLOCK, K_OVERWRITE, K_JOINRACE, K_SOLO };

struct run {
    enum kind kind;
    const char *name;
    shmr_ring *ring;
    uint64_t n;                   /* records produced */
    atomic_uchar *seen;           /* queue: times each seq was delivered */
    atomic_int ready;             /* consumers opened */
    atomic_int producer_done;
};

struct cons {
    struct run *run;
    int id;
    uint64_t delivered, dropped, next, claims, pops, waits;
    uint64_t start;               /* joinrace: first position this consumer may see */
    int started;                  /* joinrace: first record seen */
};

static int is_overwrite(const struct run *R) { return R->kind == K_OVERWRITE; }
static int is_queue(const struct run *R) { return R->kind == K_QUEUE || R->kind == K_SOLO; }

/* one delivered record (valid per the library) */
static void deliver(struct cons *C, const rec_t *r)
{
    struct run *R = C->run;
    if (!rec_ok(r)) {
        FAIL("%s consumer %d: torn/corrupt record (seq field %" PRIu64 ", expected %" PRIu64 ")", R->name, C->id,
             r->seq, C->next);
        C->next++;
        return;
    }
    if (r->seq >= R->n) {
        FAIL("%s consumer %d: seq %" PRIu64 " beyond %" PRIu64, R->name, C->id, r->seq, R->n);
        return;
    }
    switch (R->kind) {
    case K_QUEUE:
    case K_SOLO:
        if (atomic_fetch_add(&R->seen[r->seq], 1) != 0)
            FAIL("queue: seq %" PRIu64 " delivered twice", r->seq);
        if (C->delivered && r->seq < C->next)
            FAIL("queue consumer %d: seq %" PRIu64 " after %" PRIu64, C->id, r->seq, C->next - 1);
        C->next = r->seq + 1;
        break;
    case K_JOINRACE:
        if (!C->started) {
            C->started = 1;
            if (r->seq < C->start)
                FAIL("joinrace consumer %d: first seq %" PRIu64 " below its start %" PRIu64, C->id, r->seq, C->start);
            C->next = r->seq;
        }
        /* fallthrough */
    case K_BLOCK:
    case K_OVERWRITE:
        /* C->next already includes every drop reported before this record */
        if (r->seq != C->next)
            FAIL("%s consumer %d: got seq %" PRIu64 ", expected %" PRIu64 " (drops so far %" PRIu64 ")", R->name,
                 C->id, r->seq, C->next, C->dropped);
        C->next = r->seq + 1;
        break;
    }
    C->delivered++;
}

static void add_drops(struct cons *C, uint64_t d)
{
    if (!d)
        return;
    if (!is_overwrite(C->run)) {
        FAIL("%s consumer %d: %" PRIu64 " records dropped in a mode that must not drop (next %" PRIu64 ")",
             C->run->name, C->id, d, C->next);
    }
    C->dropped += d;
    C->next += d;
}

/* Reads claimed slots in place. In overwrite mode the producer may rewrite
 * them meanwhile (the race shmr_release reports); tsan.supp names this
 * function for that reason, so keep it out of line. */
__attribute__((noinline)) void stress_copy_claimed(rec_t *dst, const void *src, uint64_t k)
{
    memcpy(dst, src, k * sizeof(rec_t));
}

static void *consumer_main(void *arg)
{
    struct cons *C = arg;
    struct run *R = C->run;
    uint64_t rs = 0x1234567ull * (uint64_t)(C->id + 1);
    rec_t buf[32];
    shmr_consumer *c;
    int rc = consumer_open(R->ring, SHMR_START_OLDEST, &c);
    if (rc) {
        FAIL("%s: shmr_consumer_open: %d", R->name, rc);
        atomic_fetch_add(&R->ready, 1);
        return NULL;
    }
    atomic_fetch_add(&R->ready, 1);
    for (;;) {
        uint64_t max = 1 + rnd(&rs) % 32;
        int64_t got;
        if (rnd(&rs) & 1) {
            uint64_t d = 0;
            got = shmr_pop(c, buf, max, &d);
            C->pops++;
            add_drops(C, d);
            for (int64_t i = 0; i < got; i++)
                deliver(C, &buf[i]);
        } else {
            const void *ptr;
            uint64_t d = 0;
            got = shmr_claim(c, max, &ptr, &d);
            C->claims++;
            add_drops(C, d);
            if (got > 0) {
                stress_copy_claimed(buf, ptr, (uint64_t)got);
                int64_t bad = shmr_release(c);
                if (bad < 0 || bad > got) {
                    FAIL("%s: shmr_release returned %" PRId64 " for a claim of %" PRId64, R->name, bad, got);
                    bad = 0;
                }
                add_drops(C, (uint64_t)bad);
                for (int64_t i = bad; i < got; i++)
                    deliver(C, &buf[i]);
            }
        }
        if (got == -SHMR_ECLOSED)
            break;
        if (got < 0) {
            FAIL("%s: pop/claim returned %" PRId64, R->name, got);
            break;
        }
        if (got == 0) {
            C->waits++;
            int64_t t0 = now_ns();
            int w = shmr_consumer_wait(c, WAIT_NS, (rnd(&rs) & 1) ? 2000 : 0);
            if (w == -ETIMEDOUT && now_ns() - t0 >= STALL_NS) {
                atomic_fetch_add(&stalls, 1);
                FAIL("%s consumer %d: waited %.1f s for data (producer_done=%d): lost wakeup?", R->name, C->id,
                     (now_ns() - t0) / 1e9, atomic_load(&R->producer_done));
            }
        } else if ((rnd(&rs) & 255) == 0) {
            usleep(rnd(&rs) % 200); /* fall behind now and then */
        }
    }
    if (!is_queue(R) && shmr_consumer_dropped(c) != C->dropped)
        FAIL("%s consumer %d: library dropped counter %" PRIu64 " != reported drops %" PRIu64, R->name, C->id,
             shmr_consumer_dropped(c), C->dropped);
    shmr_consumer_free(c);
    return NULL;
}

static void *producer_main(void *arg)
{
    struct run *R = arg;
    uint64_t rs = 0xfeedfaceull;
    rec_t buf[48];
    shmr_producer *p;
    int rc = producer_open(R->ring, &p);
    if (rc) {
        FAIL("%s: shmr_producer_open: %d", R->name, rc);
        atomic_store(&R->producer_done, 1);
        return NULL;
    }
    uint64_t seq = 0;
    while (seq < R->n) {
        uint64_t want = 1 + rnd(&rs) % 48;
        if (want > R->n - seq)
            want = R->n - seq;
        int64_t k;
        if (rnd(&rs) & 1) {
            for (uint64_t i = 0; i < want; i++)
                rec_fill(&buf[i], seq + i);
            k = shmr_push(p, buf, want);
        } else {
            void *ptr;
            k = shmr_reserve(p, want, &ptr);
            if (k > 0) {
                rec_t *slots = ptr;
                for (int64_t i = 0; i < k; i++)
                    rec_fill(&slots[i], seq + (uint64_t)i);
                if (k > 1 && (rnd(&rs) & 3) == 0)
                    k = 1 + (int64_t)(rnd(&rs) % (uint64_t)(k - 1)); /* commit fewer than reserved */
                shmr_commit(p, (uint64_t)k);
            }
        }
        if (k < 0) {
            FAIL("%s: push/reserve returned %" PRId64, R->name, k);
            break;
        }
        seq += (uint64_t)k;
        if (k == 0) {
            int64_t t0 = now_ns();
            int w = shmr_producer_wait(p, WAIT_NS, (rnd(&rs) & 1) ? 2000 : 0);
            if (w == -ETIMEDOUT && now_ns() - t0 >= STALL_NS) {
                atomic_fetch_add(&stalls, 1);
                FAIL("%s producer: waited %.1f s for space at seq %" PRIu64 ": lost wakeup?", R->name,
                     (now_ns() - t0) / 1e9, seq);
            }
        } else if (R->kind == K_OVERWRITE && (rnd(&rs) & 63) == 0) {
            sched_yield();
        }
    }
    shmr_producer_close_stream(p);
    atomic_store(&R->producer_done, 1);
    shmr_producer_free(p);
    return NULL;
}

static int run_mode(enum kind kind, uint64_t n)
{
    static const char *names[] = {"queue", "block", "overwrite", "joinrace", "solo"};
    struct run R = {.kind = kind, .name = names[kind], .n = n};
    char ring_name[32];
    snprintf(ring_name, sizeof ring_name, "vs%d-%.4s", (int)getpid(), names[kind]); /* <= 25 bytes */
    shmr_params prm = {
        .capacity = CAP,
        .record_size = sizeof(rec_t),
        .record_align = 8,
        .mode = kind == K_QUEUE || kind == K_SOLO ? SHMR_MODE_QUEUE : SHMR_MODE_BROADCAST,
        .overflow = kind == K_OVERWRITE ? SHMR_OVERFLOW_OVERWRITE : SHMR_OVERFLOW_BLOCK,
        /* joinrace: a longer refresh_min widens the window; solo: one slot, claims by plain store */
        .max_consumers = kind == K_JOINRACE ? 512 : kind == K_SOLO ? 1 : 8,
        .descr = "|V64",
        .descr_len = 4,
    };
    shmr_unlink(ring_name);
    int rc = shmr_create(ring_name, &prm, 0600, &R.ring);
    if (rc) {
        fprintf(stderr, "shmr_create(%s): %d\n", ring_name, rc);
        return 1;
    }
    int before = atomic_load(&failures);
    int64_t t0 = now_ns();
    if (kind == K_QUEUE || kind == K_SOLO)
        R.seen = calloc(n, 1);

    struct cons cs[NCONS];
    pthread_t ct[NCONS], pt;
    memset(cs, 0, sizeof cs);
    uint64_t joins = 0;

    int nc = kind == K_JOINRACE || kind == K_SOLO ? 1 : NCONS;
    if (kind != K_JOINRACE) {
        /* every consumer joins (START_OLDEST) before the first record */
        for (int i = 0; i < nc; i++) {
            cs[i].run = &R;
            cs[i].id = i;
            pthread_create(&ct[i], NULL, consumer_main, &cs[i]);
        }
        while (atomic_load(&R.ready) < nc)
            usleep(100);
        pthread_create(&pt, NULL, producer_main, &R);
        pthread_join(pt, NULL);
        for (int i = 0; i < nc; i++)
            pthread_join(ct[i], NULL);
    } else {
        /* broadcast-block; one long-lived consumer keeps the ring flowing,
         * others repeatedly join with START_OLDEST, read a little, leave */
        cs[0].run = &R;
        cs[0].id = 0;
        pthread_create(&ct[0], NULL, consumer_main, &cs[0]);
        while (atomic_load(&R.ready) < 1)
            usleep(100);
        pthread_create(&pt, NULL, producer_main, &R);
        uint64_t rs = 42;
        while (!atomic_load(&R.producer_done)) {
            shmr_consumer *c;
            if (consumer_open(R.ring, SHMR_START_OLDEST, &c) != 0)
                continue;
            joins++;
            struct cons J = {.run = &R, .id = 100};
            rec_t buf[CAP];
            for (int rounds = 0; rounds < 4; rounds++) {
                uint64_t d = 0;
                int64_t got = shmr_pop(c, buf, 1 + rnd(&rs) % CAP, &d);
                if (d) {
                    FAIL("joinrace: a START_OLDEST joiner lost %" PRIu64 " record(s) in block mode "
                         "(after %" PRIu64 " delivered; join #%" PRIu64 ")",
                         d, J.delivered, joins);
                    J.next += d;
                }
                if (got <= 0)
                    break;
                if (!J.started) {
                    J.started = 1;
                    J.next = buf[0].seq;
                }
                for (int64_t i = 0; i < got; i++)
                    deliver(&J, &buf[i]);
            }
            shmr_consumer_free(c);
        }
        pthread_join(pt, NULL);
        pthread_join(ct[0], NULL);
    }
    double secs = (now_ns() - t0) / 1e9;

    /* end-of-run checks */
    uint64_t total = 0;
    for (int i = 0; i < nc; i++) {
        struct cons *C = &cs[i];
        total += C->delivered;
        if (kind == K_BLOCK || kind == K_JOINRACE) {
            if (C->delivered != n)
                FAIL("%s consumer %d: delivered %" PRIu64 " of %" PRIu64, R.name, i, C->delivered, n);
        } else if (kind == K_OVERWRITE) {
            if (C->delivered + C->dropped != n)
                FAIL("overwrite consumer %d: delivered %" PRIu64 " + dropped %" PRIu64 " != %" PRIu64, i,
                     C->delivered, C->dropped, n);
        }
    }
    if (kind == K_QUEUE || kind == K_SOLO) {
        uint64_t missing = 0;
        for (uint64_t s = 0; s < n; s++)
            missing += R.seen[s] == 0;
        if (missing || total != n)
            FAIL("queue: %" PRIu64 " records never delivered, %" PRIu64 " deliveries for %" PRIu64 " records",
                 missing, total, n);
    }
    shmr_ring_info info;
    shmr_info(R.ring, &info);
    if (info.pushed != n)
        FAIL("%s: head %" PRIu64 " != %" PRIu64, R.name, info.pushed, n);

    printf("%-9s records=%" PRIu64 " time=%.2fs", R.name, n, secs);
    for (int i = 0; i < nc; i++)
        printf(" | c%d delivered=%" PRIu64 " dropped=%" PRIu64 " pops=%" PRIu64 " claims=%" PRIu64 " waits=%" PRIu64,
               i, cs[i].delivered, cs[i].dropped, cs[i].pops, cs[i].claims, cs[i].waits);
    if (kind == K_JOINRACE)
        printf(" | joins=%" PRIu64, joins);
    printf(" -> %s\n", atomic_load(&failures) == before ? "ok" : "FAILED");
    fflush(stdout);

    free(R.seen);
    shmr_detach(R.ring);
    shmr_unlink(ring_name);
    return atomic_load(&failures) != before;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "all";
    const char *co = getenv("STRESS_CONCURRENT_OPEN");
    concurrent_open = co && *co && strcmp(co, "0");
    uint64_t n = argc > 2 ? strtoull(argv[2], NULL, 10) : 200000;
    int bad = 0;
    if (!strcmp(what, "all") || !strcmp(what, "queue"))
        bad |= run_mode(K_QUEUE, n);
    if (!strcmp(what, "all") || !strcmp(what, "block"))
        bad |= run_mode(K_BLOCK, n);
    if (!strcmp(what, "all") || !strcmp(what, "overwrite"))
        bad |= run_mode(K_OVERWRITE, n);
    if (!strcmp(what, "all") || !strcmp(what, "solo"))
        bad |= run_mode(K_SOLO, n);
    if (!strcmp(what, "joinrace"))
        bad |= run_mode(K_JOINRACE, n);
    if (strcmp(what, "all") && strcmp(what, "queue") && strcmp(what, "block") && strcmp(what, "overwrite") &&
        strcmp(what, "joinrace") && strcmp(what, "solo")) {
        fprintf(stderr, "usage: %s [queue|block|overwrite|joinrace|solo|all] [records]\n", argv[0]);
        return 2;
    }
    if (atomic_load(&stalls))
        fprintf(stderr, "%d stall(s)\n", atomic_load(&stalls));
    printf("stress: %s\n", bad ? "FAILED" : "ok");
    return bad ? 1 : 0;
}
