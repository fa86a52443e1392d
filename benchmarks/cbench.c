/*
 * cbench: the shmring C core alone, next to the raw floor of this machine.
 *
 * Two processes (fork), each pinned to its own CPU when there are two or more:
 *
 *   floor  one-way latency   one cache line bounced between two processes: a
 *                            shared atomic counter in a MAP_SHARED|MAP_ANONYMOUS
 *                            page, each side waits for its parity and bumps it
 *   ring   one-way latency   ping-pong over two rings (64-byte records, queue
 *                            mode): push on "ping", spin-wait and pop on "pong"
 *   floor  bandwidth         memcpy of 64 KiB blocks that stay in cache
 *   ring   throughput        SPSC: one record per call, and 1024-record batches
 *                            (a ring of 4 consumer slots); one record per call on a
 *                            ring of one consumer slot (its claims need no CAS)
 *   floor  two lines         the one-line floor with a separate payload line: the
 *                            shape of today's hand-off (head word, then record)
 *   design                   the hand-off benchmarks/README.md proposes (a word in
 *                            the record's slot), alone: one-way latency and SPSC rate
 *
 * One-way latency = round trip / 2; every round trip is timed on its own with
 * CLOCK_MONOTONIC (the same clock and the same per-sample overhead for the
 * floor and the ring, so the ratio is fair).
 *
 * Build:  make -C benchmarks   (or benchmarks/build_cbench.sh)
 * Run:    benchmarks/out/cbench [--quick] [--json]
 */
#define _GNU_SOURCE
#include "shmring.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REC_SIZE 64u
#define BATCH 1024u
#define RING_CAP 4096u

typedef struct {
    uint64_t seq, ts;
    double px[6];
} tick; /* the same 64-byte record the Python benchmark uses */
_Static_assert(sizeof(tick) == REC_SIZE, "64-byte record");

/* state shared by the two processes (one MAP_SHARED page) */
struct shared {
    _Alignas(128) _Atomic uint64_t counter; /* the bounced cache line */
    _Alignas(128) _Atomic uint32_t ready;   /* start-up handshakes */
    _Alignas(128) _Atomic uint32_t go;
    _Alignas(128) int64_t t_end;            /* consumer's finishing time */
    uint64_t checksum;
    int child_error;
    double backlog; /* SPSC single: the consumer's mean backlog, sampled every 1024 pops */
    uint64_t full;  /* SPSC: pushes that found the ring full */
};

static struct shared *sh;
static int ncpu = 1;
static int json = 0;
static char names[2][32];
static int n_names = 0;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void pin(int cpu)
{
    if (ncpu < 2)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu % ncpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

static void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void cleanup_names(void)
{
    for (int i = 0; i < n_names; i++)
        shmr_unlink(names[i]);
    n_names = 0;
}

static void on_signal(int sig)
{
    cleanup_names();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "cbench: %s failed: %d (%s)\n", what, rc, rc < 0 && -rc < 10000 ? strerror(-rc) : "shmring code");
    cleanup_names();
    exit(1);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

struct pct {
    double p50, p99, p999, mean, min;
};

/* samples are round trips; report one-way (RTT / 2) in ns */
static struct pct percentiles(int64_t *rtt, size_t n)
{
    struct pct p;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)rtt[i];
    qsort(rtt, n, sizeof *rtt, cmp_i64);
    p.min = rtt[0] / 2.0;
    p.p50 = rtt[n / 2] / 2.0;
    p.p99 = rtt[(size_t)(n * 0.99)] / 2.0;
    p.p999 = rtt[(size_t)(n * 0.999)] / 2.0;
    p.mean = sum / n / 2.0;
    return p;
}

static pid_t fork_child(void)
{
    atomic_store(&sh->ready, 0);
    atomic_store(&sh->go, 0);
    sh->child_error = 0;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        die("fork", -errno);
    if (pid == 0)
        pin(1);
    return pid;
}

static void reap(pid_t pid)
{
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || sh->child_error) {
        fprintf(stderr, "cbench: child failed (status %d, error %d)\n", st, sh->child_error);
        cleanup_names();
        exit(1);
    }
}

static void wait_flag(_Atomic uint32_t *f, uint32_t v)
{
    while (atomic_load_explicit(f, memory_order_acquire) != v)
        relax();
}

/* ---- floor: one cache line ------------------------------------------------ */

static struct pct floor_pingpong(size_t n)
{
    int64_t *rtt = malloc(n * sizeof *rtt);
    atomic_store(&sh->counter, 0);
    pid_t pid = fork_child();
    if (pid == 0) {
        /* odd values are ours to answer */
        for (uint64_t i = 0; i < n + 1000; i++) {
            uint64_t want = 2 * i + 1;
            while (atomic_load_explicit(&sh->counter, memory_order_acquire) != want)
                relax();
            atomic_store_explicit(&sh->counter, want + 1, memory_order_release);
        }
        _exit(0);
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n + 1000; i++) {
        int64_t t0 = now_ns();
        atomic_store_explicit(&sh->counter, v + 1, memory_order_release);
        while (atomic_load_explicit(&sh->counter, memory_order_acquire) != v + 2)
            relax();
        v += 2;
        if (i >= 1000) /* warm-up */
            rtt[i - 1000] = now_ns() - t0;
    }
    reap(pid);
    struct pct p = percentiles(rtt, n);
    free(rtt);
    return p;
}

/* ---- floor: memcpy in cache -------------------------------------------------- */

static double memcpy_gbs(double seconds)
{
    size_t blk = 65536;
    uint8_t *a = aligned_alloc(4096, blk), *b = aligned_alloc(4096, blk);
    memset(a, 1, blk);
    memset(b, 2, blk);
    uint64_t iters = 0;
    int64_t t0 = now_ns(), t;
    do {
        for (int k = 0; k < 256; k++) {
            memcpy(b, a, blk);
            __asm__ __volatile__("" ::"r"(b) : "memory");
        }
        iters += 256;
        t = now_ns();
    } while (t - t0 < (int64_t)(seconds * 1e9));
    free(a);
    free(b);
    return (double)iters * blk / ((t - t0) / 1e9) / 1e9;
}

/* ---- ring helpers -------------------------------------------------------------- */

static shmr_ring *make_ring_slots(const char *suffix, uint32_t mode, uint32_t slots)
{
    char *name = names[n_names];
    snprintf(name, sizeof names[0], "cb%d-%s", (int)getpid(), suffix);
    shmr_unlink(name);
    static const char descr[] = "('v1', [('seq', '<u8'), ('ts', '<u8'), ('px', '<f8', (6,))], ())";
    shmr_params p = {RING_CAP, REC_SIZE, 8, mode, SHMR_OVERFLOW_BLOCK, slots, descr, (uint32_t)strlen(descr)};
    shmr_ring *r;
    int rc = shmr_create(name, &p, 0600, &r);
    if (rc)
        die("shmr_create", rc);
    n_names++;
    return r;
}

static shmr_ring *make_ring(const char *suffix, uint32_t mode) { return make_ring_slots(suffix, mode, 4); }

static shmr_ring *attach(const char *name)
{
    shmr_ring *r;
    int rc = shmr_attach(name, &r);
    if (rc)
        die("shmr_attach", rc);
    return r;
}

static const int64_t SPIN = 1000000000; /* 1 s: waits are pure busy polling */

static void push_one(shmr_producer *p, const void *rec)
{
    while (shmr_push(p, rec, 1) != 1)
        shmr_producer_wait(p, -1, SPIN);
}

static void pop_one(shmr_consumer *c, void *rec)
{
    int64_t k;
    while ((k = shmr_pop(c, rec, 1, NULL)) != 1) {
        if (k < 0)
            die("shmr_pop", (int)k);
        shmr_consumer_wait(c, -1, SPIN);
    }
}

/* ---- ring: one-way latency --------------------------------------------------------- */

static struct pct ring_pingpong(size_t n, uint32_t mode)
{
    int base = n_names;
    shmr_ring *ping = make_ring(mode == SHMR_MODE_QUEUE ? "pingq" : "pingb", mode);
    shmr_ring *pong = make_ring(mode == SHMR_MODE_QUEUE ? "pongq" : "pongb", mode);
    char ping_name[32], pong_name[32];
    strcpy(ping_name, names[base]);
    strcpy(pong_name, names[base + 1]);
    int64_t *rtt = malloc(n * sizeof *rtt);
    pid_t pid = fork_child();
    if (pid == 0) {
        shmr_ring *a = attach(ping_name), *b = attach(pong_name);
        shmr_consumer *c;
        shmr_producer *p;
        int rc;
        if ((rc = shmr_consumer_open(a, SHMR_START_OLDEST, &c)) || (rc = shmr_producer_open(b, &p))) {
            sh->child_error = rc;
            _exit(1);
        }
        atomic_store(&sh->ready, 1);
        tick t;
        for (size_t i = 0; i < n + 1000; i++) {
            pop_one(c, &t);
            push_one(p, &t);
        }
        shmr_consumer_free(c);
        shmr_producer_free(p);
        _exit(0);
    }
    shmr_producer *p;
    shmr_consumer *c;
    int rc;
    if ((rc = shmr_producer_open(ping, &p)) || (rc = shmr_consumer_open(pong, SHMR_START_OLDEST, &c)))
        die("open", rc);
    wait_flag(&sh->ready, 1);
    cleanup_names(); /* both sides mapped: the names are no longer needed */
    tick t = {0};
    for (size_t i = 0; i < n + 1000; i++) {
        int64_t t0 = now_ns();
        t.seq = i;
        push_one(p, &t);
        pop_one(c, &t);
        if (t.seq != i)
            die("ping-pong order", -EIO);
        if (i >= 1000)
            rtt[i - 1000] = now_ns() - t0;
    }
    reap(pid);
    shmr_producer_free(p);
    shmr_consumer_free(c);
    shmr_detach(ping);
    shmr_detach(pong);
    struct pct r = percentiles(rtt, n);
    free(rtt);
    return r;
}

/* ---- ring: SPSC throughput ------------------------------------------------------------ */

/* slots: consumer slots of the ring; with one, a claim is a store of tail, not a CAS */
static double ring_throughput(uint64_t total, uint32_t batch, uint32_t slots)
{
    shmr_ring *r = make_ring_slots(batch == 1 ? "tp1" : "tpb", SHMR_MODE_QUEUE, slots);
    char name[32];
    strcpy(name, names[n_names - 1]);
    tick *buf = aligned_alloc(64, BATCH * sizeof(tick));
    memset(buf, 0, BATCH * sizeof(tick));
    pid_t pid = fork_child();
    if (pid == 0) {
        shmr_ring *a = attach(name);
        shmr_consumer *c;
        int rc = shmr_consumer_open(a, SHMR_START_OLDEST, &c);
        if (rc) {
            sh->child_error = rc;
            _exit(1);
        }
        atomic_store(&sh->ready, 1);
        uint64_t got = 0, sum = 0, backlog = 0, samples = 0;
        while (got < total) {
            int64_t k = shmr_pop(c, buf, batch, NULL);
            if (k > 0) {
                got += (uint64_t)k;
                sum += buf[k - 1].seq;
                if (batch == 1 && (got & 1023) == 0) { /* which side sets the rate */
                    backlog += shmr_consumer_available(c);
                    samples++;
                }
            } else if (k == 0) {
                shmr_consumer_wait(c, -1, SPIN);
            } else {
                sh->child_error = (int)k;
                _exit(1);
            }
        }
        sh->t_end = now_ns();
        sh->checksum = sum;
        sh->backlog = samples ? (double)backlog / samples : 0;
        shmr_consumer_free(c);
        _exit(0);
    }
    shmr_producer *p;
    int rc = shmr_producer_open(r, &p);
    if (rc)
        die("shmr_producer_open", rc);
    wait_flag(&sh->ready, 1);
    cleanup_names();
    int64_t t0 = now_ns();
    uint64_t sent = 0;
    while (sent < total) {
        uint64_t want = total - sent < batch ? total - sent : batch;
        buf[0].seq = sent;
        int64_t k = shmr_push(p, buf, want);
        if (k > 0) {
            sent += (uint64_t)k;
        } else {
            sh->full++;
            shmr_producer_wait(p, -1, SPIN);
        }
    }
    reap(pid);
    shmr_producer_free(p);
    shmr_detach(r);
    free(buf);
    return (double)total / ((sh->t_end - t0) / 1e9);
}

/* ---- line counting: the floor with two lines per hand-off ------------------------------ *
 *
 * Today a queue hand-off moves the producer's head word and then the record, two
 * lines in series (the release record goes back once per lap, not per record). This
 * floor does exactly that with nothing else: a flag line and a payload line per
 * direction. Its ratio to the one-line floor is what the line count alone costs. */

struct lines2 {
    _Alignas(128) _Atomic uint64_t flag;
    _Alignas(128) uint64_t payload[8];
};

static struct pct floor2_pingpong(size_t n, struct lines2 *ab)
{
    int64_t *rtt = malloc(n * sizeof *rtt);
    memset(ab, 0, 2 * sizeof *ab);
    pid_t pid = fork_child();
    if (pid == 0) {
        for (uint64_t i = 1; i <= n + 1000; i++) {
            while (atomic_load_explicit(&ab[0].flag, memory_order_acquire) != i)
                relax();
            uint64_t v[8];
            memcpy(v, ab[0].payload, sizeof v);
            if (v[0] != i)
                sh->child_error = -EIO;
            memcpy(ab[1].payload, v, sizeof v);
            atomic_store_explicit(&ab[1].flag, i, memory_order_release);
        }
        _exit(0);
    }
    uint64_t v[8] = {0};
    for (uint64_t i = 1; i <= n + 1000; i++) {
        int64_t t0 = now_ns();
        v[0] = i;
        memcpy(ab[0].payload, v, sizeof v);
        atomic_store_explicit(&ab[0].flag, i, memory_order_release);
        while (atomic_load_explicit(&ab[1].flag, memory_order_acquire) != i)
            relax();
        memcpy(v, ab[1].payload, sizeof v);
        if (v[0] != i)
            die("two-line ping-pong order", -EIO);
        if (i > 1000)
            rtt[i - 1001] = now_ns() - t0;
    }
    reap(pid);
    struct pct p = percentiles(rtt, n);
    free(rtt);
    return p;
}

/* ---- design experiment: publication in the record's own line -------------------------- *
 *
 * Not the core: the smallest SPSC ring with the hand-off benchmarks/README.md proposes,
 * to measure what that hand-off moves before the core is changed. Each slot starts with
 * a word the producer stores (release) after the body: pos + 1 once position pos is
 * published. The consumer polls the word of the slot it reads next, so finding a record
 * and reading it is one line. It hands slots back through its cursor (its own line,
 * release store after the copy); the producer keeps the cursor it last read and reads
 * the shared one again only when that says the ring is full. A 56-byte body shares the
 * word's line; a 64-byte body (the core's benchmark record) spills 8 bytes into the next. */

#ifndef PROTO_CAP
#define PROTO_CAP 4096u
#endif

struct proto_ring {
    _Alignas(128) _Atomic uint64_t cursor; /* consumer: positions < cursor are free */
    _Alignas(128) uint8_t slots[];         /* PROTO_CAP slots of `stride` bytes */
};

struct proto_side {
    struct proto_ring *r;
    uint32_t stride, body;
    uint64_t pos, cursor_cache;
};

static size_t proto_size(uint32_t stride) { return sizeof(struct proto_ring) + (size_t)PROTO_CAP * stride; }

static inline _Atomic uint64_t *proto_word(struct proto_side *s, uint64_t pos)
{
    return (_Atomic uint64_t *)(s->r->slots + (pos & (PROTO_CAP - 1)) * s->stride);
}

static inline int proto_push(struct proto_side *s, const void *rec)
{
    if (s->pos - s->cursor_cache >= PROTO_CAP) {
        /* pairs with the consumer's release store of its cursor after its copy */
        s->cursor_cache = atomic_load_explicit(&s->r->cursor, memory_order_acquire);
        if (s->pos - s->cursor_cache >= PROTO_CAP)
            return 0;
    }
    _Atomic uint64_t *w = proto_word(s, s->pos);
    memcpy((uint8_t *)w + 8, rec, s->body);
    /* the body before the word; pairs with the consumer's acquire load of the word */
    atomic_store_explicit(w, s->pos + 1, memory_order_release);
    s->pos++;
    return 1;
}

static inline int proto_pop(struct proto_side *s, void *rec)
{
    _Atomic uint64_t *w = proto_word(s, s->pos);
    /* pairs with the producer's release store of the word after the body */
    if (atomic_load_explicit(w, memory_order_acquire) != s->pos + 1)
        return 0;
    memcpy(rec, (uint8_t *)w + 8, s->body);
    s->pos++;
    /* our copy before the slot is reused; pairs with the producer's acquire load */
    atomic_store_explicit(&s->r->cursor, s->pos, memory_order_release);
    return 1;
}

static struct proto_ring *proto_map(uint32_t stride, int count)
{
    size_t sz = proto_size(stride) * (size_t)count;
    uint8_t *m = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        die("mmap", -errno);
    return (struct proto_ring *)m;
}

static struct proto_side proto_open(struct proto_ring *r, uint32_t body)
{
    struct proto_side s = {r, body <= 56 ? 64 : 128, body, 0, 0};
    return s;
}

static struct pct proto_pingpong(size_t n, uint32_t body)
{
    uint32_t stride = body <= 56 ? 64 : 128;
    struct proto_ring *ping = proto_map(stride, 2);
    struct proto_ring *pong = (struct proto_ring *)((uint8_t *)ping + proto_size(stride));
    int64_t *rtt = malloc(n * sizeof *rtt);
    pid_t pid = fork_child();
    if (pid == 0) {
        struct proto_side c = proto_open(ping, body), p = proto_open(pong, body);
        tick t;
        for (size_t i = 0; i < n + 1000; i++) {
            while (!proto_pop(&c, &t))
                relax();
            while (!proto_push(&p, &t))
                relax();
        }
        _exit(0);
    }
    struct proto_side p = proto_open(ping, body), c = proto_open(pong, body);
    tick t = {0};
    for (size_t i = 0; i < n + 1000; i++) {
        int64_t t0 = now_ns();
        t.seq = i;
        while (!proto_push(&p, &t))
            relax();
        while (!proto_pop(&c, &t))
            relax();
        if (t.seq != i)
            die("design ping-pong order", -EIO);
        if (i >= 1000)
            rtt[i - 1000] = now_ns() - t0;
    }
    reap(pid);
    munmap(ping, 2 * proto_size(stride));
    struct pct r = percentiles(rtt, n);
    free(rtt);
    return r;
}

static double proto_throughput(uint64_t total, uint32_t body)
{
    uint32_t stride = body <= 56 ? 64 : 128;
    struct proto_ring *r = proto_map(stride, 1);
    pid_t pid = fork_child();
    if (pid == 0) {
        struct proto_side c = proto_open(r, body);
        tick t;
        uint64_t sum = 0;
        atomic_store(&sh->ready, 1);
        for (uint64_t got = 0; got < total; got++) {
            while (!proto_pop(&c, &t))
                relax();
            if (t.seq != got)
                sh->child_error = -EIO;
            sum += t.seq;
        }
        sh->t_end = now_ns();
        sh->checksum = sum;
        _exit(0);
    }
    struct proto_side p = proto_open(r, body);
    wait_flag(&sh->ready, 1);
    tick t = {0};
    int64_t t0 = now_ns();
    for (uint64_t i = 0; i < total; i++) {
        t.seq = i;
        while (!proto_push(&p, &t))
            relax();
    }
    reap(pid);
    if (sh->checksum != total * (total - 1) / 2)
        die("design throughput checksum", -EIO);
    munmap(r, proto_size(stride));
    return (double)total / ((sh->t_end - t0) / 1e9);
}

/* ---- main ------------------------------------------------------------------------------- */

static void print_lat(const char *key, const char *label, struct pct p)
{
    if (json)
        printf("  \"%s\": {\"p50_ns\": %.1f, \"p99_ns\": %.1f, \"p999_ns\": %.1f, \"mean_ns\": %.1f, \"min_ns\": %.1f},\n",
               key, p.p50, p.p99, p.p999, p.mean, p.min);
    else
        printf("%-44s p50 %8.1f ns   p99 %8.1f ns   p99.9 %9.1f ns   mean %8.1f ns\n", label, p.p50, p.p99,
               p.p999, p.mean);
}

int main(int argc, char **argv)
{
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else {
            fprintf(stderr, "usage: %s [--quick] [--json]\n", argv[0]);
            return 2;
        }
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        ncpu = CPU_COUNT(&set);
    sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        die("mmap", -errno);
    pin(0);

    size_t nlat = quick ? 100000 : 1000000;
    uint64_t n1 = quick ? 5000000 : 20000000;
    uint64_t nb = quick ? 50000000 : 200000000;

    struct pct fl = floor_pingpong(nlat);
    struct pct rq = ring_pingpong(nlat, SHMR_MODE_QUEUE);
    struct pct rb = ring_pingpong(nlat, SHMR_MODE_BROADCAST);
    double mc = memcpy_gbs(quick ? 0.3 : 1.0);
    sh->full = 0;
    double t1 = ring_throughput(n1, 1, 4);
    double backlog1 = sh->backlog, full1 = (double)sh->full / n1;
    double tb = ring_throughput(nb, BATCH, 4);
    double t1solo = ring_throughput(n1, 1, 1);
    struct lines2 *ab = mmap(NULL, 2 * sizeof(struct lines2), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (ab == MAP_FAILED)
        die("mmap", -errno);
    struct pct f2 = floor2_pingpong(nlat, ab);
    struct pct d56 = proto_pingpong(nlat, 56);
    struct pct d64 = proto_pingpong(nlat, 64);
    double dt56 = proto_throughput(n1, 56);
    double dt64 = proto_throughput(n1, 64);

    if (json) {
        printf("{\n  \"cpus_used\": %d,\n", ncpu < 2 ? 1 : 2);
        print_lat("floor_cacheline_oneway", "", fl);
        print_lat("ring_queue_oneway", "", rq);
        print_lat("ring_broadcast_oneway", "", rb);
        printf("  \"memcpy_64k_gbs\": %.2f,\n", mc);
        printf("  \"ring_spsc_single_rps\": %.0f,\n", t1);
        printf("  \"ring_spsc_single_backlog\": %.1f,\n", backlog1);
        printf("  \"ring_spsc_single_full_per_push\": %.4f,\n", full1);
        printf("  \"ring_spsc_single_one_slot_rps\": %.0f,\n", t1solo);
        printf("  \"ring_spsc_batch1024_rps\": %.0f,\n", tb);
        printf("  \"ring_spsc_batch1024_gbs\": %.3f,\n", tb * REC_SIZE / 1e9);
        print_lat("floor_two_lines_oneway", "", f2);
        print_lat("design_slot_word_56B_oneway", "", d56);
        print_lat("design_slot_word_64B_oneway", "", d64);
        printf("  \"design_slot_word_56B_spsc_single_rps\": %.0f,\n", dt56);
        printf("  \"design_slot_word_64B_spsc_single_rps\": %.0f,\n", dt64);
        printf("  \"ratio_latency_p50\": %.3f,\n", rq.p50 / fl.p50);
        printf("  \"ratio_bandwidth\": %.3f\n}\n", tb * REC_SIZE / 1e9 / mc);
        return 0;
    }
    printf("shmring C core vs. the raw floor (%s, %zu round trips, 64-byte records)\n",
           ncpu < 2 ? "1 CPU" : "processes pinned to CPU 0 and 1", nlat);
    print_lat("floor: cache-line ping-pong, one-way", "floor: cache-line ping-pong, one-way", fl);
    print_lat("ring (queue): push/pop ping-pong, one-way", "ring (queue): push/pop ping-pong, one-way", rq);
    print_lat("ring (broadcast): ping-pong, one-way", "ring (broadcast): ping-pong, one-way", rb);
    printf("  ratio ring/floor, one-way p50: queue %.2fx, broadcast %.2fx\n", rq.p50 / fl.p50, rb.p50 / fl.p50);
    printf("%-44s %8.2f GB/s\n", "floor: memcpy 64 KiB blocks, in cache", mc);
    printf("%-44s %8.2f M records/s  (%.2f GB/s)\n", "ring SPSC, 1 record per push/pop", t1 / 1e6, t1 * REC_SIZE / 1e9);
    printf("  consumer's mean backlog %.0f of %u slots; 1 push in %.0f found the ring full\n", backlog1, RING_CAP,
           full1 > 0 ? 1 / full1 : 0.0);
    printf("%-44s %8.2f M records/s  (%.2fx the 4-slot ring)\n", "ring SPSC, 1 record, one consumer slot", t1solo / 1e6,
           t1solo / t1);
    printf("%-44s %8.2f M records/s  (%.2f GB/s)\n", "ring SPSC, 1024-record batches", tb / 1e6, tb * REC_SIZE / 1e9);
    printf("  ratio ring batch bandwidth / memcpy: %.2f\n", tb * REC_SIZE / 1e9 / mc);
    printf("line count and the design experiment (not the core; see benchmarks/README.md):\n");
    print_lat("floor: two lines per hand-off, one-way", "floor: two lines per hand-off, one-way", f2);
    print_lat("design: word in the slot, 56 B, one-way", "design: word in the slot, 56 B, one-way", d56);
    print_lat("design: word in the slot, 64 B, one-way", "design: word in the slot, 64 B, one-way", d64);
    printf("  ratio to the one-line floor, p50: two lines %.2fx, design 56 B %.2fx, 64 B %.2fx, ring %.2fx\n",
           f2.p50 / fl.p50, d56.p50 / fl.p50, d64.p50 / fl.p50, rq.p50 / fl.p50);
    printf("%-44s %8.2f M records/s  (%.2fx the ring)\n", "design SPSC, 56 B, 1 record per push/pop", dt56 / 1e6,
           dt56 / t1);
    printf("%-44s %8.2f M records/s  (%.2fx the ring)\n", "design SPSC, 64 B, 1 record per push/pop", dt64 / 1e6,
           dt64 / t1);
    return 0;
}
