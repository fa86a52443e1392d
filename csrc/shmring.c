/*
 * shmring core: segment life cycle, the two delivery protocols, waiting.
 *
 * Indices are free-running uint64_t positions; slot = pos & mask. Each side
 * keeps private cached copies of the other side's words (names ending in
 * _cache) and re-reads the shared word only when the cache says full/empty.
 * All shared atomics go through shmr_atomic.h; each ordering site names what
 * it pairs with.
 */
#define _GNU_SOURCE
#include "shmring.h"
#include "shmr_atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SHMR_MAGIC 0x31474e4952524d53ull /* "SMRRING1" read as little-endian bytes */
#define SHMR_BLOCK 128u                  /* two 64-byte lines: x86 adjacent-line prefetch pairs them */
#define SHMR_PAGE 4096u
#define SHMR_MAX_RECORD (1ull << 30)
/* A slot being torn down by a sweeper: BUSY tag in the start-time half, the
 * sweeper's pid in the other, so a sweeper that dies mid-way can be detected. */
#define SHMR_BUSY_TAG 0xffffffffull
#define SHMR_OWNER_BUSY(pid) ((SHMR_BUSY_TAG << 32) | (uint64_t)(pid))
#define SHMR_IS_BUSY(owner) (((owner) >> 32) == SHMR_BUSY_TAG)

#define ALIGNED_BLOCK __attribute__((aligned(SHMR_BLOCK)))

/* Interleaving hooks for protocol tests that force a precise schedule (built
 * only with -DSHMR_TEST_HOOKS; the test supplies shmr_test_hook). */
#ifdef SHMR_TEST_HOOKS
void shmr_test_hook(int site);
#define HOOK(n) shmr_test_hook(n)
#else
#define HOOK(n) ((void)0)
#endif

/* ---- segment layout ---------------------------------------------------- */

/* Immutable after creation; magic is stored last (release) so an attacher that
 * sees it (acquire) sees every other field. Fixed-width, little-endian. */
struct shmr_header {
    shmr_a64 magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t segment_size;
    uint64_t capacity;
    uint64_t record_size;
    uint64_t stride;
    uint32_t record_align;
    uint32_t mode;
    uint32_t overflow;
    uint32_t max_consumers;
    uint64_t consumers_offset;
    uint64_t done_offset;
    uint64_t slots_offset;
    uint64_t create_time_ns;
    uint32_t creator_pid;
    uint32_t descr_len;
    uint64_t reserved[3];
    char descr[SHMR_DESCR_MAX];
};

/* Written by the producer only; read by every consumer. */
struct ALIGNED_BLOCK shmr_prod_block {
    shmr_a64 head;   /* positions < head are published */
    shmr_a64 intent; /* broadcast: positions < intent may be being written */
    shmr_a64 join_claim; /* broadcast-block: Dekker word for joiners, >= intent
                          * while an announcement is checked (see announce) */
    shmr_a64 limit;  /* queue: the producer's walk of release records got this far
                      * (a batch boundary), for a producer that takes over */
};

/* Queue mode: next position to claim; consumers CAS it. */
struct ALIGNED_BLOCK shmr_tail_block {
    shmr_a64 tail;
};

/* Eventcount: epoch is the futex word (bumped by the notifier), waiters is
 * raised by sleepers so the notifier can skip the wake syscall. */
struct ALIGNED_BLOCK shmr_ec {
    shmr_a32 epoch;
    shmr_a32 waiters;
};

/* Rarely written control words. */
struct ALIGNED_BLOCK shmr_ctl {
    shmr_a64 producer_owner; /* (start32 << 32) | pid, 0 = none */
    shmr_a64 stream;         /* (producer generation << 32) | enum shmr_close_reason */
    shmr_a32 join_epoch;     /* broadcast: bumped by every joining consumer */
    shmr_a32 pad0;
    shmr_a64 abandoned;      /* queue: claimed records reclaimed from dead consumers */
    shmr_a64 evicted;        /* consumer slots freed because their process died */
    shmr_a64 popped_retired; /* records received by consumers that have left */
};

/* One per consumer, each on its own block: written by its consumer (and by a
 * sweeper once the consumer is dead), read by the producer and by stats. */
struct ALIGNED_BLOCK shmr_cslot {
    shmr_a64 owner;      /* (start32 << 32) | pid, 0 = free */
    shmr_a32 ready;      /* 1 once cursor is valid */
    shmr_a32 claim_state; /* queue: CLAIM_NONE / CLAIM_INTENT / CLAIM_HELD */
    shmr_a64 cursor;     /* broadcast: next position this consumer reads */
    shmr_a64 claim_pos;  /* queue: claimed range, recorded before the claim CAS */
    shmr_a64 claim_n;
    shmr_a64 popped;
    shmr_a64 dropped;
};

/* Queue mode: one release record per slot, written only at the first slot of a
 * released batch. Consumers claim contiguous batches that tile the positions,
 * so the producer walks batch by batch: tag == pos means the batch that ended
 * the previous lap of slot pos is released and len positions from pos are free.
 * One record per batch instead of one word per position: a 1024-record pop_many
 * moves one cache line to the producer, not 128. */
struct shmr_done {
    shmr_a64 tag; /* start of the released batch + capacity */
    shmr_a64 len; /* its length; written before tag */
};

enum { CLAIM_NONE = 0, CLAIM_INTENT = 1, CLAIM_HELD = 2 };

#define OFF_PROD SHMR_PAGE
#define OFF_TAIL (OFF_PROD + SHMR_BLOCK)
#define OFF_DATA_EC (OFF_TAIL + SHMR_BLOCK)
#define OFF_SPACE_EC (OFF_DATA_EC + SHMR_BLOCK)
#define OFF_CTL (OFF_SPACE_EC + SHMR_BLOCK)
#define OFF_CONSUMERS (OFF_CTL + SHMR_BLOCK)

_Static_assert(sizeof(struct shmr_header) == SHMR_PAGE, "header is one page");
_Static_assert(offsetof(struct shmr_header, descr) == 128, "fixed header fields fill the first block");
_Static_assert(offsetof(struct shmr_header, capacity) == 24, "layout v1");
_Static_assert(offsetof(struct shmr_header, descr_len) == 100, "layout v1");
_Static_assert(sizeof(struct shmr_prod_block) == SHMR_BLOCK, "one block");
_Static_assert(sizeof(struct shmr_tail_block) == SHMR_BLOCK, "one block");
_Static_assert(sizeof(struct shmr_ec) == SHMR_BLOCK, "one block");
_Static_assert(sizeof(struct shmr_ctl) == SHMR_BLOCK, "one block");
_Static_assert(sizeof(struct shmr_cslot) == SHMR_BLOCK, "one block");
_Static_assert(offsetof(struct shmr_ec, epoch) % 4 == 0, "futex word is 4-byte aligned");
_Static_assert(sizeof(shmr_a64) == 8 && sizeof(shmr_a32) == 4, "atomics have plain width");
_Static_assert(sizeof(struct shmr_done) == 16, "release records are two words");

/* ---- process-local handles --------------------------------------------- */

struct shmr_ring {
    uint8_t *base;
    size_t size;
    struct shmr_header *hdr;
    struct shmr_prod_block *prod;
    struct shmr_tail_block *tailb;
    struct shmr_ec *data_ec;  /* consumers sleep here, producer notifies */
    struct shmr_ec *space_ec; /* producer sleeps here, consumers notify */
    struct shmr_ctl *ctl;
    struct shmr_cslot *cslots;
    struct shmr_done *done;   /* queue: release records, see struct shmr_done */
    uint8_t *slots;
    uint64_t cap, mask, rs;
    uint32_t mode, overflow, mc;
    shmr_a32 populated; /* process-local, but handles may be opened from several threads */
};

struct shmr_producer {
    shmr_ring *r;
    uint64_t owner;
    uint64_t head;         /* private copy: the producer is the only writer of head */
    uint64_t intent;       /* broadcast: highest intent announced */
    uint64_t limit_cache;  /* queue: positions < limit_cache known writable */
    uint64_t min_cache;    /* broadcast-block: lower bound of live cursors */
    uint32_t join_seen;    /* broadcast-block: join_epoch at the last min refresh */
    uint64_t reserved;     /* slots handed out by the last shmr_reserve */
};

struct shmr_consumer {
    shmr_ring *r;
    struct shmr_cslot *slot;
    uint32_t index;
    uint64_t owner;
    uint64_t cursor;       /* broadcast: private copy of slot->cursor */
    uint64_t head_cache;   /* cached producer head */
    uint64_t claim_pos, claim_n; /* outstanding zero-copy claim */
    uint64_t popped, dropped;
};

/* ---- small helpers ------------------------------------------------------ */

static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static int futex_wait(shmr_a32 *addr, uint32_t expected, int64_t timeout_ns)
{
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tsp = &ts;
    }
    /* no FUTEX_PRIVATE_FLAG: the word is shared between processes */
    long rc = syscall(SYS_futex, (void *)addr, FUTEX_WAIT, expected, tsp, NULL, 0);
    return rc == 0 ? 0 : -errno;
}

static void futex_wake_all(shmr_a32 *addr)
{
    syscall(SYS_futex, (void *)addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Notifier side of the eventcount. The caller has just published (a release
 * store of head, a release record or a cursor). The seq_cst fence pairs with the
 * waiter's seq_cst fence in ec_wait: either we see its waiters increment, or
 * it sees our publication on its re-check. Without it both could miss. */
static void ec_notify(struct shmr_ec *ec)
{
    shmr_fence_seqcst();
    if (shmr_load_relaxed32(&ec->waiters) != 0) {
        shmr_fetch_add_release32(&ec->epoch, 1);
        futex_wake_all(&ec->epoch);
    }
}

static void ec_notify_always(struct shmr_ec *ec)
{
    shmr_fence_seqcst();
    shmr_fetch_add_release32(&ec->epoch, 1);
    futex_wake_all(&ec->epoch);
}

typedef int (*ready_fn)(void *);

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spin (spin_ns of pause), yield, then sleep on the eventcount for at most timeout_ns. */
static int ec_wait(struct shmr_ec *ec, ready_fn ready, void *arg, int64_t timeout_ns, int64_t spin_ns)
{
    if (ready(arg))
        return 0;
    if (timeout_ns == 0)
        return -ETIMEDOUT;
    if (spin_ns > 0) {
        int64_t until = mono_ns() + (timeout_ns > 0 && timeout_ns < spin_ns ? timeout_ns : spin_ns);
        for (uint32_t i = 1;; i++) {
            if (ready(arg))
                return 0;
            shmr_cpu_relax();
            if ((i & 63) == 0 && mono_ns() >= until)
                break;
        }
        for (int i = 0; i < 4; i++) {
            sched_yield();
            if (ready(arg))
                return 0;
        }
    }
    /* Sleep until ready or the slice is over. A wake that finds nothing for us
     * (another consumer took the records, a release further along) sleeps again
     * rather than ending the slice early. */
    int64_t until = timeout_ns > 0 ? mono_ns() + timeout_ns : -1;
    for (;;) {
        /* epoch is read before we count ourselves, so a notify that lands after
         * this read changes the word and FUTEX_WAIT returns at once (EAGAIN). */
        uint32_t seen = shmr_load_acquire32(&ec->epoch);
        shmr_fetch_add_seqcst32(&ec->waiters, 1);
        shmr_fence_seqcst(); /* pairs with the fence in ec_notify */
        int rc = 0;
        int64_t left = -1; /* no limit */
        if (until >= 0 && (left = until - mono_ns()) <= 0)
            rc = -ETIMEDOUT;
        else if (!ready(arg))
            rc = futex_wait(&ec->epoch, seen, left);
        shmr_fetch_sub_seqcst32(&ec->waiters, 1);
        if (ready(arg))
            return 0;
        if (rc == -EINTR)
            return -EINTR; /* a signal: let the caller run its handlers */
        if (rc == -ETIMEDOUT || (until >= 0 && mono_ns() >= until))
            return -ETIMEDOUT;
    }
}

/* ---- process identity --------------------------------------------------- */

/* Reads /proc/PID/<file> into buf as a C string; 0 if unreadable (gone). */
static int read_proc(uint32_t pid, const char *file, char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/%s", pid, file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return 1;
}

/* Field 22 of /proc/PID/stat (start time in clock ticks since boot); 0 if the
 * process is gone. *state gets field 3. The command name (field 2) may hold
 * spaces and ')', so parsing starts after the last ')'. */
static uint64_t proc_stat(uint32_t pid, char *state)
{
    char buf[1024];
    if (!read_proc(pid, "stat", buf, sizeof buf))
        return 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    p++;
    int field = 2;
    uint64_t start = 0;
    char *save = NULL;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 3 && state)
            *state = tok[0];
        if (field == 22) {
            start = strtoull(tok, NULL, 10);
            break;
        }
    }
    return start;
}

uint64_t shmr_proc_start_time(uint32_t pid) { return proc_stat(pid, NULL); }

/* "Threads:" of /proc/PID/status, 0 if unreadable. */
static int proc_threads(uint32_t pid)
{
    char buf[4096];
    if (!read_proc(pid, "status", buf, sizeof buf))
        return 0;
    char *t = strstr(buf, "\nThreads:");
    return t ? atoi(t + 9) : 0;
}

int shmr_proc_alive(uint32_t pid, uint64_t start_time)
{
    if (pid == 0)
        return 0;
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
        return 0;
    char state = '?';
    uint64_t st = proc_stat(pid, &state);
    if (st == 0) /* no /proc entry: gone (or /proc hidden: trust kill) */
        return access("/proc/self/stat", R_OK) == 0 ? 0 : 1;
    if (state == 'Z' || state == 'X') {
        /* a zombie can do nothing more, unless only its main thread exited
         * and other threads still run (Linux shows the group leader as Z) */
        if (proc_threads(pid) <= 1)
            return 0;
    }
    if (start_time != 0 && (st & 0xffffffffu) != (start_time & 0xffffffffu))
        return 0; /* pid reused by another process */
    return 1;
}

static uint64_t self_owner(void)
{
    uint32_t pid = (uint32_t)getpid();
    uint64_t st = proc_stat(pid, NULL);
    return ((st & 0xffffffffu) << 32) | pid;
}

static int owner_alive(uint64_t owner)
{
    if (owner == 0)
        return 0;
    if (SHMR_IS_BUSY(owner)) /* alive while its sweeper is */
        return shmr_proc_alive((uint32_t)owner, 0);
    return shmr_proc_alive((uint32_t)owner, owner >> 32);
}

/* ---- names -------------------------------------------------------------- */

#define SHMR_PREFIX "/shmr-"

int shmr_name_check(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > SHMR_NAME_MAX)
        return -ENAMETOOLONG;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!(ch >= 'a' && ch <= 'z') && !(ch >= 'A' && ch <= 'Z') && !(ch >= '0' && ch <= '9') &&
            ch != '_' && ch != '-' && ch != '.')
            return -EINVAL;
    }
    return 0;
}

static int full_name(const char *name, char *out, size_t outlen)
{
    int rc = shmr_name_check(name);
    if (rc)
        return rc;
    snprintf(out, outlen, "%s%s", SHMR_PREFIX, name);
    return 0;
}

/* ---- layout ------------------------------------------------------------- */

struct layout {
    uint64_t consumers, done, slots, size;
};

static struct layout compute_layout(uint64_t cap, uint64_t stride, uint32_t mode, uint32_t mc)
{
    struct layout l;
    l.consumers = OFF_CONSUMERS;
    uint64_t end = l.consumers + (uint64_t)mc * SHMR_BLOCK;
    if (mode == SHMR_MODE_QUEUE) {
        l.done = round_up(end, SHMR_BLOCK);
        end = l.done + cap * sizeof(struct shmr_done);
    } else {
        l.done = 0;
    }
    l.slots = round_up(end, SHMR_PAGE);
    l.size = round_up(l.slots + cap * stride, SHMR_PAGE);
    return l;
}

static void bind(shmr_ring *r)
{
    struct shmr_header *h = (struct shmr_header *)r->base;
    r->hdr = h;
    r->prod = (struct shmr_prod_block *)(r->base + OFF_PROD);
    r->tailb = (struct shmr_tail_block *)(r->base + OFF_TAIL);
    r->data_ec = (struct shmr_ec *)(r->base + OFF_DATA_EC);
    r->space_ec = (struct shmr_ec *)(r->base + OFF_SPACE_EC);
    r->ctl = (struct shmr_ctl *)(r->base + OFF_CTL);
    r->cslots = (struct shmr_cslot *)(r->base + h->consumers_offset);
    r->done = h->done_offset ? (struct shmr_done *)(r->base + h->done_offset) : NULL;
    r->slots = r->base + h->slots_offset;
    r->cap = h->capacity;
    r->mask = h->capacity - 1;
    r->rs = h->stride;
    r->mode = h->mode;
    r->overflow = h->overflow;
    r->mc = h->max_consumers;
}

static int is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

static int check_params(const shmr_params *p)
{
    if (!is_pow2(p->capacity) || p->capacity > SHMR_MAX_CAPACITY)
        return -EINVAL;
    if (p->record_size == 0 || p->record_size > SHMR_MAX_RECORD)
        return -EINVAL;
    if (!is_pow2(p->record_align) || p->record_align > SHMR_PAGE)
        return -EINVAL;
    if (p->mode > SHMR_MODE_BROADCAST || p->overflow > SHMR_OVERFLOW_OVERWRITE)
        return -EINVAL;
    if (p->max_consumers == 0 || p->max_consumers > SHMR_MAX_CONSUMERS)
        return -EINVAL;
    if (p->descr_len == 0 || p->descr_len >= SHMR_DESCR_MAX)
        return -E2BIG;
    if (p->capacity > (UINT64_MAX / 4) / p->record_size)
        return -EINVAL;
    return 0;
}

/* ---- create / attach ---------------------------------------------------- */

int shmr_create(const char *name, const shmr_params *p, unsigned mode_bits, int exist_ok, shmr_ring **out)
{
    (void)exist_ok; /* handled by the caller, which attaches and compares */
    char path[64];
    int rc = full_name(name, path, sizeof path);
    if (rc)
        return rc;
    if ((rc = check_params(p)))
        return rc;
    struct layout l = compute_layout(p->capacity, p->record_size, p->mode, p->max_consumers);
    if (l.size > (uint64_t)SIZE_MAX / 2)
        return -ENOMEM;

    int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode_bits & 0777);
    if (fd < 0)
        return -errno;
    if (fchmod(fd, mode_bits & 0777) != 0 || ftruncate(fd, (off_t)l.size) != 0) {
        rc = -errno;
        goto fail;
    }
    /* Reserve every page now: on a full /dev/shm a bare ftruncate succeeds and
     * the first write to a missing page later dies with SIGBUS. */
    rc = posix_fallocate(fd, 0, (off_t)l.size);
    if (rc != 0) {
        rc = -rc;
        goto fail;
    }
    uint8_t *base = mmap(NULL, l.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        rc = -errno;
        goto fail;
    }
    close(fd);

    struct shmr_header *h = (struct shmr_header *)base;
    h->version = SHMR_LAYOUT_VERSION;
    h->header_size = sizeof(struct shmr_header);
    h->segment_size = l.size;
    h->capacity = p->capacity;
    h->record_size = p->record_size;
    h->stride = p->record_size;
    h->record_align = p->record_align;
    h->mode = p->mode;
    h->overflow = p->mode == SHMR_MODE_BROADCAST ? p->overflow : SHMR_OVERFLOW_BLOCK;
    h->max_consumers = p->max_consumers;
    h->consumers_offset = l.consumers;
    h->done_offset = l.done;
    h->slots_offset = l.slots;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    h->create_time_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    h->creator_pid = (uint32_t)getpid();
    h->descr_len = p->descr_len;
    memcpy(h->descr, p->descr, p->descr_len);

    shmr_ring *r = calloc(1, sizeof *r);
    if (!r) {
        munmap(base, l.size);
        shm_unlink(path);
        return -ENOMEM;
    }
    r->base = base;
    r->size = l.size;
    bind(r);
    if (r->done) { /* the first lap is one free batch; other records are never read before written */
        shmr_store_relaxed64(&r->done[0].len, r->cap);
        shmr_store_relaxed64(&r->done[0].tag, 0);
    }
    /* publishes every field above; pairs with the acquire load in validate() */
    shmr_store_release64(&h->magic, SHMR_MAGIC);
    *out = r;
    return 0;
fail:
    close(fd);
    shm_unlink(path);
    return rc;
}

static int validate(const uint8_t *base, uint64_t file_size)
{
    const struct shmr_header *h = (const struct shmr_header *)base;
    uint64_t magic = shmr_load_acquire64((shmr_a64 *)&h->magic); /* pairs with the creator's release */
    if (magic == 0)
        return -SHMR_EINIT;
    if (magic != SHMR_MAGIC)
        return -SHMR_EBADMAGIC;
    if (h->version != SHMR_LAYOUT_VERSION)
        return -SHMR_EVERSION;
    if (h->header_size != sizeof(struct shmr_header))
        return -SHMR_ECORRUPT;
    shmr_params p = {h->capacity, h->record_size, h->record_align, h->mode, h->overflow,
                     h->max_consumers, h->descr, h->descr_len};
    if (check_params(&p) || h->stride != h->record_size)
        return -SHMR_ECORRUPT;
    if (h->mode == SHMR_MODE_QUEUE && h->overflow != SHMR_OVERFLOW_BLOCK)
        return -SHMR_ECORRUPT;
    for (uint32_t i = 0; i < h->descr_len; i++)
        if (h->descr[i] < 0x20 || h->descr[i] > 0x7e)
            return -SHMR_ECORRUPT;
    struct layout l = compute_layout(h->capacity, h->stride, h->mode, h->max_consumers);
    if (h->consumers_offset != l.consumers || h->done_offset != l.done || h->slots_offset != l.slots ||
        h->segment_size != l.size)
        return -SHMR_ECORRUPT;
    if (file_size < h->segment_size)
        return -SHMR_ETRUNC;
    return 0;
}

int shmr_attach_fd(int fd, shmr_ring **out)
{
    struct stat st;
    int rc;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    if (fsize == 0) {
        close(fd);
        return -SHMR_EINIT;
    }
    if (fsize < SHMR_PAGE) {
        close(fd);
        return -SHMR_ETRUNC;
    }
    uint8_t *hp = mmap(NULL, SHMR_PAGE, PROT_READ, MAP_SHARED, fd, 0);
    if (hp == MAP_FAILED) {
        rc = -errno;
        close(fd);
        return rc;
    }
    rc = validate(hp, fsize);
    uint64_t size = ((struct shmr_header *)hp)->segment_size;
    munmap(hp, SHMR_PAGE);
    if (rc) {
        close(fd);
        return rc;
    }
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    rc = base == MAP_FAILED ? -errno : 0;
    close(fd);
    if (rc)
        return rc;
    /* the header is immutable once magic is set, but re-check the mapping we keep */
    if ((rc = validate(base, fsize))) {
        munmap(base, size);
        return rc;
    }
    shmr_ring *r = calloc(1, sizeof *r);
    if (!r) {
        munmap(base, size);
        return -ENOMEM;
    }
    r->base = base;
    r->size = size;
    bind(r);
    *out = r;
    return 0;
}

int shmr_attach(const char *name, shmr_ring **out)
{
    char path[64];
    int rc = full_name(name, path, sizeof path);
    if (rc)
        return rc;
    int fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    return shmr_attach_fd(fd, out);
}

void shmr_detach(shmr_ring *r)
{
    if (!r)
        return;
    munmap(r->base, r->size);
    free(r);
}

int shmr_unlink(const char *name)
{
    char path[64];
    int rc = full_name(name, path, sizeof path);
    if (rc)
        return rc;
    return shm_unlink(path) == 0 ? 0 : -errno;
}

const char *shmr_descr(const shmr_ring *r, uint32_t *len)
{
    *len = r->hdr->descr_len;
    return r->hdr->descr;
}
uint64_t shmr_capacity(const shmr_ring *r) { return r->cap; }
uint64_t shmr_record_size(const shmr_ring *r) { return r->rs; }
uint32_t shmr_mode(const shmr_ring *r) { return r->mode; }
uint32_t shmr_overflow(const shmr_ring *r) { return r->overflow; }
/* pairs with the release stores / CAS of the stream word */
static uint32_t stream_reason(const shmr_ring *r) { return (uint32_t)shmr_load_acquire64(&r->ctl->stream); }
uint32_t shmr_close_reason(const shmr_ring *r) { return stream_reason(r); }

/* ---- copies (at most two memcpy calls: the ring wraps once at most) ------ */

static void copy_in(shmr_ring *r, uint64_t pos, const void *src, uint64_t n)
{
    uint64_t s = pos & r->mask;
    uint64_t first = min_u64(n, r->cap - s);
    memcpy(r->slots + s * r->rs, src, first * r->rs);
    if (n > first)
        memcpy(r->slots, (const uint8_t *)src + first * r->rs, (n - first) * r->rs);
}

static void copy_out(shmr_ring *r, uint64_t pos, void *dst, uint64_t n)
{
    uint64_t s = pos & r->mask;
    uint64_t first = min_u64(n, r->cap - s);
    memcpy(dst, r->slots + s * r->rs, first * r->rs);
    if (n > first)
        memcpy((uint8_t *)dst + first * r->rs, r->slots, (n - first) * r->rs);
}

/* ---- sweeping dead consumers ------------------------------------------- */

/* Queue mode: release the batch a dead consumer (slot i, already marked BUSY)
 * held; returns the records released, counted as abandoned.
 *
 * A CLAIM_HELD record is authoritative: its claim CAS succeeded. A CLAIM_INTENT
 * record is either a claim whose owner died between the CAS and marking it held,
 * or a stale intent left by a failed CAS. Only a record at the same position can
 * be the real holder of that batch, so: if a live consumer has a record at p0 it
 * is (or will find out it is not) the holder, and we leave the batch alone; if
 * other dead records sit at p0, the batch is released with the shortest length
 * among them, which never frees a position the real holder did not hold. A
 * shorter-than-real release only stalls the producer at the remainder; the
 * rings's data stays intact. (Needs two consumers to die within nanoseconds of
 * each other at the same position.) */
static uint64_t reclaim(shmr_ring *r, uint32_t i, const int *alive, const int *dead)
{
    struct shmr_cslot *s = &r->cslots[i];
    uint32_t state = shmr_load_acquire32(&s->claim_state);
    uint64_t n = shmr_load_acquire64(&s->claim_n);
    uint64_t p0 = shmr_load_acquire64(&s->claim_pos);
    /* Read tail only now: the owner is dead and marked BUSY, so it can no
     * longer move tail for this record. p0 >= tail: its CAS never happened. */
    uint64_t tail = shmr_load_seqcst64(&r->tailb->tail);
    if (state == CLAIM_NONE || n == 0 || p0 >= tail)
        return 0;
    if (state == CLAIM_INTENT) {
        for (uint32_t j = 0; j < r->mc; j++) {
            if (j == i || !(alive[j] || dead[j]))
                continue;
            struct shmr_cslot *o = &r->cslots[j];
            if (shmr_load_acquire32(&o->claim_state) == CLAIM_NONE || shmr_load_acquire64(&o->claim_pos) != p0)
                continue;
            if (alive[j])
                return 0; /* the live one decides; a later sweep looks again */
            if (shmr_load_acquire32(&o->claim_state) == CLAIM_HELD)
                return 0; /* that one holds it; ours is stale */
            uint64_t on = shmr_load_acquire64(&o->claim_n);
            if (on && on < n)
                n = on;
        }
    }
    struct shmr_done *d = &r->done[p0 & r->mask];
    uint64_t cur = shmr_load_acquire64(&d->tag);
    if (cur >= p0 + r->cap)
        return 0; /* already released (by its owner, or by another sweeper) */
    shmr_store_relaxed64(&d->len, n);
    /* pairs with the producer's acquire load of the tag in writable() */
    if (!shmr_cas_seqcst64(&d->tag, &cur, p0 + r->cap))
        return 0;
    shmr_fetch_add_relaxed64(&r->ctl->abandoned, n);
    return n;
}

/* Frees the slots of consumers whose process died. Queue mode: the batch a dead
 * consumer had claimed but not released is released here and counted as
 * abandoned (at-most-once for those records). Safe to run concurrently in
 * several processes: every decisive step is a CAS, and a sweeper that dies
 * mid-way leaves BUSY slots that the next sweep takes over. */
static int sweep(shmr_ring *r, uint64_t *reclaimed)
{
    int alive[SHMR_MAX_CONSUMERS], dead[SHMR_MAX_CONSUMERS];
    uint64_t me = SHMR_OWNER_BUSY((uint32_t)getpid());
    uint64_t got = 0;
    int freed = 0;
    HOOK(4);
    /* phase 1: mark every dead slot BUSY(me) before touching any claim, so all
     * dead records are still there when each one is judged */
    for (uint32_t i = 0; i < r->mc; i++) {
        uint64_t owner = shmr_load_acquire64(&r->cslots[i].owner);
        alive[i] = owner != 0 && owner_alive(owner);
        dead[i] = owner != 0 && !alive[i] && shmr_cas_seqcst64(&r->cslots[i].owner, &owner, me);
    }
    /* phase 2: release what they held */
    if (r->mode == SHMR_MODE_QUEUE)
        for (uint32_t i = 0; i < r->mc; i++)
            if (dead[i])
                got += reclaim(r, i, alive, dead);
    /* phase 3: free the slots */
    for (uint32_t i = 0; i < r->mc; i++) {
        if (!dead[i])
            continue;
        struct shmr_cslot *s = &r->cslots[i];
        shmr_store_release32(&s->claim_state, CLAIM_NONE);
        shmr_store_release64(&s->claim_n, 0);
        shmr_store_release32(&s->ready, 0);
        shmr_fetch_add_relaxed64(&r->ctl->popped_retired, shmr_load_relaxed64(&s->popped));
        shmr_fetch_add_relaxed64(&r->ctl->evicted, 1);
        shmr_store_release64(&s->owner, 0); /* pairs with the acquire of a joiner's CAS */
        freed++;
    }
    if (freed)
        ec_notify_always(r->space_ec);
    if (reclaimed)
        *reclaimed = got;
    return freed;
}

/* Map every page of the segment into this process up front, once a producer or
 * consumer is opened here: the pages exist already (posix_fallocate), but the
 * first touch of each would otherwise take a page fault on the hot path. A
 * mapping made only to read stats skips this. Best effort: old kernels lack it. */
static void populate(shmr_ring *r)
{
    if (shmr_swap_relaxed32(&r->populated, 1)) /* only once; nothing is published through it */
        return;
#ifdef MADV_POPULATE_WRITE
    madvise(r->base, r->size, MADV_POPULATE_WRITE);
#endif
}

/* ---- producer ----------------------------------------------------------- */

static int claim_role(shmr_ring *r, uint64_t me)
{
    uint64_t cur = shmr_load_acquire64(&r->ctl->producer_owner);
    for (;;) {
        if (cur != 0 && owner_alive(cur))
            return -SHMR_EPRODUCER;
        if (shmr_cas_seqcst64(&r->ctl->producer_owner, &cur, me))
            return 0;
    }
}

int shmr_producer_open(shmr_ring *r, shmr_producer **out)
{
    uint64_t me = self_owner();
    int rc = claim_role(r, me);
    if (rc)
        return rc;
    populate(r);
    shmr_producer *p = calloc(1, sizeof *p);
    if (!p) {
        shmr_store_release64(&r->ctl->producer_owner, 0);
        return -ENOMEM;
    }
    p->r = r;
    p->owner = me;
    /* we are the only writer of head and intent from here on */
    p->head = shmr_load_acquire64(&r->prod->head);
    p->intent = shmr_load_acquire64(&r->prod->intent);
    if (p->intent < p->head)
        p->intent = p->head;
    p->limit_cache = shmr_load_acquire64(&r->prod->limit);
    p->min_cache = p->head > r->cap ? p->head - r->cap : 0;
    p->join_seen = shmr_load_acquire32(&r->ctl->join_epoch) - 1; /* force a refresh */
    /* A new producer re-opens the stream under a new generation, after taking
     * the role: a consumer that judged the old producer dead CASes only the
     * generation it read before looking at the owner, so it cannot close ours. */
    uint64_t w = shmr_load_acquire64(&r->ctl->stream);
    while (!shmr_cas_seqcst64(&r->ctl->stream, &w, ((w >> 32) + 1) << 32 | SHMR_OPEN))
        ;
    *out = p;
    return 0;
}

void shmr_producer_free(shmr_producer *p)
{
    if (!p)
        return;
    uint64_t me = p->owner;
    shmr_cas_seqcst64(&p->r->ctl->producer_owner, &me, 0);
    free(p);
}

int shmr_producer_close_stream(shmr_producer *p)
{
    /* head was published before; this CAS (release) pairs with the consumer's
     * acquire of the stream word, after which it re-reads head and drains */
    uint64_t w = shmr_load_acquire64(&p->r->ctl->stream);
    while (!shmr_cas_seqcst64(&p->r->ctl->stream, &w, (w & ~0xffffffffull) | SHMR_CLOSED_BY_PRODUCER))
        ;
    ec_notify_always(p->r->data_ec);
    return 0;
}

/* Broadcast-block: lowest cursor of ready consumers (head if none). A joining
 * consumer's provisional cursor may lie below head - cap (it is about to move
 * up, see shmr_consumer_open); positions below head - cap are gone anyway, so
 * the minimum is clamped there and never makes the room computation wrap. */
static uint64_t refresh_min(shmr_producer *p)
{
    shmr_ring *r = p->r;
    uint64_t m = p->head;
    uint64_t floor = p->head > r->cap ? p->head - r->cap : 0;
    for (uint32_t i = 0; i < r->mc; i++) {
        struct shmr_cslot *s = &r->cslots[i];
        if (shmr_load_seqcst64(&s->owner) == 0 || !shmr_load_seqcst32(&s->ready))
            continue;
        /* pairs with the consumer's release store of its cursor, made after it
         * finished reading the records below it */
        uint64_t c = shmr_load_acquire64(&s->cursor);
        if (c < m)
            m = c < floor ? floor : c;
    }
    p->min_cache = m;
    return m;
}

/* How many of the next n positions may be written now (at most cap). */
static uint64_t writable(shmr_producer *p, uint64_t n)
{
    shmr_ring *r = p->r;
    uint64_t h = p->head;
    n = min_u64(n, r->cap);
    if (r->mode == SHMR_MODE_QUEUE) {
        while (p->limit_cache < h + n) {
            struct shmr_done *d = &r->done[p->limit_cache & r->mask];
            /* pairs with the consumer's release store of the tag in q_release(),
             * made after it finished reading the batch */
            if (shmr_load_acquire64(&d->tag) != p->limit_cache)
                break;
            uint64_t len = shmr_load_relaxed64(&d->len);
            if (len == 0 || len > r->cap)
                break; /* corrupt record (never written by shmring): stall, never spin */
            p->limit_cache += len;
            shmr_store_relaxed64(&r->prod->limit, p->limit_cache);
        }
        return min_u64(p->limit_cache - h, n);
    }
    if (r->overflow == SHMR_OVERFLOW_OVERWRITE)
        return n;
    if (h + n - p->min_cache > r->cap)
        refresh_min(p);
    uint64_t room = r->cap - min_u64(r->cap, h - p->min_cache);
    return min_u64(n, room);
}

/* Broadcast: announce positions [head, head + k) before writing them. */
static uint64_t announce(shmr_producer *p, uint64_t k)
{
    shmr_ring *r = p->r;
    uint64_t want = p->head + k;
    if (want <= p->intent)
        return k; /* an earlier announcement (a reservation never committed) covers it */
    if (r->overflow == SHMR_OVERFLOW_BLOCK) {
        /* Dekker with a joining consumer: we store the claim word then load
         * join_epoch; it bumps join_epoch then loads the claim word (all
         * seq_cst). Either we see the join and refresh the minimum, or it sees
         * our claim and starts beyond what this batch overwrites. The claim may
         * be cut back below; it lives in its own word (join_claim) so that only
         * joiners ever read a value that is later retracted, never a reader's
         * torn check. */
        shmr_store_seqcst64(&r->prod->join_claim, want);
        uint32_t je = shmr_load_seqcst32(&r->ctl->join_epoch);
        if (je != p->join_seen) {
            p->join_seen = je;
            refresh_min(p);
            uint64_t room = r->cap - min_u64(r->cap, p->head - p->min_cache);
            if (room < k) {
                k = room;
                want = p->head + k;
                shmr_store_seqcst64(&r->prod->join_claim, want > p->intent ? want : p->intent);
                if (k == 0)
                    return 0;
            }
        }
    }
    shmr_store_relaxed64(&r->prod->intent, want);
    /* orders the intent store before the slot writes that follow; pairs with
     * the reader's acquire fence between its copy and its re-read of intent */
    shmr_fence_release();
    p->intent = want;
    return k;
}

static void publish(shmr_producer *p, uint64_t k)
{
    p->head += k;
    /* pairs with the consumer's acquire load of head before it reads slots */
    shmr_store_release64(&p->r->prod->head, p->head);
    ec_notify(p->r->data_ec);
}

int64_t shmr_push(shmr_producer *p, const void *src, uint64_t n)
{
    uint64_t k = writable(p, n);
    if (k == 0)
        return 0;
    if (p->r->mode == SHMR_MODE_BROADCAST && (k = announce(p, k)) == 0)
        return 0;
    copy_in(p->r, p->head, src, k);
    publish(p, k);
    return (int64_t)k;
}

int64_t shmr_reserve(shmr_producer *p, uint64_t n, void **ptr)
{
    shmr_ring *r = p->r;
    uint64_t s = p->head & r->mask;
    n = min_u64(n, r->cap - s); /* contiguous part only */
    uint64_t k = writable(p, n);
    if (k == 0)
        return 0;
    if (r->mode == SHMR_MODE_BROADCAST && (k = announce(p, k)) == 0)
        return 0;
    *ptr = r->slots + s * r->rs;
    p->reserved = k;
    return (int64_t)k;
}

void shmr_commit(shmr_producer *p, uint64_t n)
{
    if (n > p->reserved)
        n = p->reserved; /* never publish slots that were not reserved */
    p->reserved = 0;
    if (n)
        publish(p, n);
}

static int producer_ready(void *arg) { return writable((shmr_producer *)arg, 1) > 0; }

int shmr_producer_wait(shmr_producer *p, int64_t timeout_ns, int64_t spin_ns)
{
    return ec_wait(p->r->space_ec, producer_ready, p, timeout_ns, spin_ns);
}

int shmr_producer_recover(shmr_producer *p, uint64_t *reclaimed)
{
    int freed = sweep(p->r, reclaimed);
    if (freed && p->r->mode == SHMR_MODE_BROADCAST)
        refresh_min(p);
    return freed;
}

/* ---- consumer ----------------------------------------------------------- */

int shmr_consumer_open(shmr_ring *r, uint32_t start, shmr_consumer **out)
{
    uint64_t me = self_owner();
    int idx = -1;
    for (int attempt = 0; attempt < 2 && idx < 0; attempt++) {
        for (uint32_t i = 0; i < r->mc; i++) {
            uint64_t expect = 0;
            if (shmr_cas_seqcst64(&r->cslots[i].owner, &expect, me)) {
                idx = (int)i;
                break;
            }
        }
        if (idx < 0 && attempt == 0)
            sweep(r, NULL);
    }
    if (idx < 0)
        return -SHMR_ETABLEFULL;
    populate(r);
    shmr_consumer *c = calloc(1, sizeof *c);
    if (!c) {
        shmr_store_release64(&r->cslots[idx].owner, 0);
        return -ENOMEM;
    }
    struct shmr_cslot *s = &r->cslots[idx];
    c->r = r;
    c->slot = s;
    c->index = (uint32_t)idx;
    c->owner = me;
    shmr_store_relaxed64(&s->claim_n, 0);
    shmr_store_relaxed32(&s->claim_state, CLAIM_NONE);
    shmr_store_relaxed64(&s->popped, 0);
    shmr_store_relaxed64(&s->dropped, 0);
    if (r->mode == SHMR_MODE_BROADCAST) {
        uint64_t h = shmr_load_acquire64(&r->prod->head);
        HOOK(1);
        uint64_t cur = start == SHMR_START_OLDEST ? (h > r->cap ? h - r->cap : 0) : h;
        shmr_store_seqcst64(&s->cursor, cur);
        shmr_store_seqcst32(&s->ready, 1);
        HOOK(2);
        /* the other half of the Dekker in announce(): bump join_epoch, then
         * read the claim word; start no earlier than what an unaware batch
         * overwrites (overwrite mode has no Dekker: intent, then torn checks) */
        shmr_fetch_add_seqcst32(&r->ctl->join_epoch, 1);
        uint64_t in = shmr_load_seqcst64(r->overflow == SHMR_OVERFLOW_BLOCK ? &r->prod->join_claim : &r->prod->intent);
        if (in > cur + r->cap) {
            cur = in - r->cap;
            shmr_store_seqcst64(&s->cursor, cur);
        }
        c->cursor = cur;
        /* a producer may have seen our provisional cursor and be waiting */
        if (r->overflow == SHMR_OVERFLOW_BLOCK)
            ec_notify(r->space_ec);
    } else {
        shmr_store_release32(&s->ready, 1);
    }
    c->head_cache = shmr_load_acquire64(&r->prod->head);
    *out = c;
    return 0;
}

void shmr_consumer_free(shmr_consumer *c)
{
    if (!c)
        return;
    shmr_ring *r = c->r;
    if (c->claim_n)
        shmr_release(c);
    shmr_store_release32(&c->slot->ready, 0);
    shmr_fetch_add_relaxed64(&r->ctl->popped_retired, c->popped);
    uint64_t me = c->owner;
    shmr_cas_seqcst64(&c->slot->owner, &me, 0);
    /* a broadcast-block producer may be waiting for this consumer */
    if (r->mode == SHMR_MODE_BROADCAST)
        ec_notify(r->space_ec);
    free(c);
}

uint64_t shmr_consumer_popped(const shmr_consumer *c) { return c->popped; }
uint64_t shmr_consumer_dropped(const shmr_consumer *c) { return c->dropped; }
uint32_t shmr_consumer_index(const shmr_consumer *c) { return c->index; }

/* Queue: claim up to max positions from tail. The claim is recorded in our
 * slot before the CAS, so a sweeper that finds us dead knows what we held. */
static uint64_t q_claim(shmr_consumer *c, uint64_t max, int contiguous, uint64_t *pos)
{
    shmr_ring *r = c->r;
    struct shmr_cslot *s = c->slot;
    uint64_t t = shmr_load_relaxed64(&r->tailb->tail);
    for (;;) {
        if (t >= c->head_cache) {
            /* pairs with the producer's release store of head in publish() */
            c->head_cache = shmr_load_acquire64(&r->prod->head);
            if (t >= c->head_cache) {
                shmr_store_relaxed32(&s->claim_state, CLAIM_NONE);
                return 0;
            }
        }
        uint64_t k = min_u64(max, c->head_cache - t);
        if (contiguous)
            k = min_u64(k, r->cap - (t & r->mask));
        shmr_store_relaxed64(&s->claim_pos, t);
        shmr_store_relaxed64(&s->claim_n, k);
        shmr_store_relaxed32(&s->claim_state, CLAIM_INTENT);
        HOOK(3);
        /* seq_cst: publishes the claim record before the claim (see sweep) */
        if (shmr_cas_seqcst64(&r->tailb->tail, &t, t + k)) {
            HOOK(6);
            shmr_store_relaxed32(&s->claim_state, CLAIM_HELD);
            *pos = t;
            return k;
        }
    }
}

static void q_release(shmr_consumer *c, uint64_t pos, uint64_t k)
{
    shmr_ring *r = c->r;
    struct shmr_done *d = &r->done[pos & r->mask];
    shmr_store_relaxed64(&d->len, k);
    /* pairs with the producer's acquire load in writable(): our reads of the
     * batch (and the len above) happen before it writes these slots again */
    shmr_store_release64(&d->tag, pos + r->cap);
    shmr_store_release32(&c->slot->claim_state, CLAIM_NONE);
    c->popped += k;
    shmr_store_relaxed64(&c->slot->popped, c->popped);
    ec_notify(r->space_ec);
}

/* Broadcast: how many records are ready at our cursor; skips (and counts) what
 * the producer has already lapped. */
static uint64_t b_ready(shmr_consumer *c, uint64_t max, int contiguous, uint64_t *skipped)
{
    shmr_ring *r = c->r;
    if (c->cursor >= c->head_cache) {
        c->head_cache = shmr_load_acquire64(&r->prod->head); /* pairs with publish() */
        if (c->cursor >= c->head_cache)
            return 0;
    }
    uint64_t h = c->head_cache;
    if (h - c->cursor > r->cap) {
        *skipped += h - r->cap - c->cursor;
        c->cursor = h - r->cap;
    }
    uint64_t k = min_u64(max, h - c->cursor);
    if (contiguous)
        k = min_u64(k, r->cap - (c->cursor & r->mask));
    return k;
}

/* Broadcast: after reading [from, from + k), how many leading records may have
 * been overwritten meanwhile. The acquire fence pairs with the producer's
 * release fence in announce(): if our copy saw any byte of a newer write, the
 * intent load below sees that write's announcement. A racing memcpy is a data
 * race in ISO C; on the supported targets (x86-64 TSO, AArch64 with these
 * fences) the copy is discarded whenever it could be torn. */
static uint64_t b_torn(shmr_consumer *c, uint64_t from, uint64_t k)
{
    shmr_fence_acquire();
    uint64_t in = shmr_load_relaxed64(&c->r->prod->intent);
    if (in <= from + c->r->cap)
        return 0;
    return min_u64(k, in - c->r->cap - from);
}

static void b_advance(shmr_consumer *c, uint64_t to, uint64_t delivered, uint64_t lost)
{
    shmr_ring *r = c->r;
    c->cursor = to;
    /* pairs with the producer's acquire load in refresh_min() */
    shmr_store_release64(&c->slot->cursor, to);
    c->popped += delivered;
    shmr_store_relaxed64(&c->slot->popped, c->popped);
    if (lost) {
        c->dropped += lost;
        shmr_store_relaxed64(&c->slot->dropped, c->dropped);
    }
    if (r->overflow == SHMR_OVERFLOW_BLOCK)
        ec_notify(r->space_ec);
}

static int closed_and_drained(shmr_consumer *c)
{
    shmr_ring *r = c->r;
    /* pairs with the release of the stream word: head is final after it */
    if (stream_reason(r) == SHMR_OPEN)
        return 0;
    c->head_cache = shmr_load_acquire64(&r->prod->head);
    if (r->mode == SHMR_MODE_QUEUE)
        return shmr_load_relaxed64(&r->tailb->tail) >= c->head_cache;
    return c->cursor >= c->head_cache;
}

int64_t shmr_pop(shmr_consumer *c, void *dst, uint64_t max, uint64_t *dropped)
{
    shmr_ring *r = c->r;
    if (max == 0)
        return 0;
    if (r->mode == SHMR_MODE_QUEUE) {
        uint64_t pos, k = q_claim(c, max, 0, &pos);
        if (k == 0)
            return closed_and_drained(c) ? -SHMR_ECLOSED : 0;
        copy_out(r, pos, dst, k);
        q_release(c, pos, k);
        return (int64_t)k;
    }
    for (;;) {
        uint64_t skipped = 0;
        uint64_t k = b_ready(c, max, 0, &skipped);
        if (k == 0) {
            if (skipped)
                b_advance(c, c->cursor, 0, skipped);
            return closed_and_drained(c) ? -SHMR_ECLOSED : 0;
        }
        uint64_t from = c->cursor;
        copy_out(r, from, dst, k);
        uint64_t bad = b_torn(c, from, k);
        if (bad && bad < k)
            memmove(dst, (uint8_t *)dst + bad * r->rs, (k - bad) * r->rs);
        b_advance(c, from + k, k - bad, skipped + bad);
        if (dropped)
            *dropped += skipped + bad;
        if (k > bad)
            return (int64_t)(k - bad);
    }
}

int64_t shmr_claim(shmr_consumer *c, uint64_t max, const void **ptr, uint64_t *dropped)
{
    shmr_ring *r = c->r;
    if (c->claim_n)
        return -EBUSY;
    if (max == 0)
        return 0;
    uint64_t pos, k;
    if (r->mode == SHMR_MODE_QUEUE) {
        k = q_claim(c, max, 1, &pos);
    } else {
        uint64_t skipped = 0;
        k = b_ready(c, max, 1, &skipped);
        if (skipped) {
            b_advance(c, c->cursor, 0, skipped);
            if (dropped)
                *dropped += skipped;
        }
        pos = c->cursor;
    }
    if (k == 0)
        return closed_and_drained(c) ? -SHMR_ECLOSED : 0;
    c->claim_pos = pos;
    c->claim_n = k;
    *ptr = r->slots + (pos & r->mask) * r->rs;
    return (int64_t)k;
}

int64_t shmr_release(shmr_consumer *c)
{
    uint64_t pos = c->claim_pos, k = c->claim_n;
    if (k == 0)
        return 0;
    c->claim_n = 0;
    if (c->r->mode == SHMR_MODE_QUEUE) {
        q_release(c, pos, k);
        return 0;
    }
    uint64_t bad = b_torn(c, pos, k);
    b_advance(c, pos + k, k - bad, bad);
    return (int64_t)bad;
}

static int consumer_ready(void *arg)
{
    shmr_consumer *c = arg;
    shmr_ring *r = c->r;
    uint64_t h = shmr_load_acquire64(&r->prod->head);
    if (r->mode == SHMR_MODE_QUEUE) {
        if (shmr_load_relaxed64(&r->tailb->tail) < h)
            return 1;
    } else if (c->cursor < h) {
        return 1;
    }
    return stream_reason(r) != SHMR_OPEN;
}

int shmr_consumer_wait(shmr_consumer *c, int64_t timeout_ns, int64_t spin_ns)
{
    return ec_wait(c->r->data_ec, consumer_ready, c, timeout_ns, spin_ns);
}

int shmr_consumer_check_producer(shmr_consumer *c)
{
    shmr_ring *r = c->r;
    uint64_t w = shmr_load_acquire64(&r->ctl->stream); /* generation first, then the owner */
    if ((uint32_t)w != SHMR_OPEN)
        return (int)(uint32_t)w;
    uint64_t owner = shmr_load_acquire64(&r->ctl->producer_owner);
    if (owner == 0 || owner_alive(owner))
        return SHMR_OPEN;
    HOOK(5);
    /* the producer died without closing: everything it published stays
     * readable, then consumers see end-of-stream */
    if (shmr_cas_seqcst64(&r->ctl->stream, &w, (w & ~0xffffffffull) | SHMR_CLOSED_PRODUCER_DIED))
        ec_notify_always(r->data_ec);
    return (int)stream_reason(r);
}

/* Wakes every sleeper of both directions, so each re-checks its handle and
 * its condition (used when a handle is closed under a blocked call). */
void shmr_wake_all(shmr_ring *r)
{
    ec_notify_always(r->data_ec);
    ec_notify_always(r->space_ec);
}

/* ---- stats -------------------------------------------------------------- */

int shmr_info(shmr_ring *r, shmr_ring_info *o)
{
    memset(o, 0, sizeof *o);
    struct shmr_header *h = r->hdr;
    o->capacity = r->cap;
    o->record_size = r->rs;
    o->segment_size = r->size;
    o->mode = r->mode;
    o->overflow = r->overflow;
    o->max_consumers = r->mc;
    o->version = h->version;
    o->head = shmr_load_acquire64(&r->prod->head);
    uint64_t owner = shmr_load_acquire64(&r->ctl->producer_owner);
    o->producer_pid = (uint32_t)owner;
    o->producer_start = owner >> 32;
    o->producer_alive = owner_alive(owner);
    o->close_reason = stream_reason(r);
    o->data_waiters = shmr_load_relaxed32(&r->data_ec->waiters);
    o->space_waiters = shmr_load_relaxed32(&r->space_ec->waiters);
    o->abandoned = shmr_load_relaxed64(&r->ctl->abandoned);
    o->evicted = shmr_load_relaxed64(&r->ctl->evicted);
    o->popped_retired = shmr_load_relaxed64(&r->ctl->popped_retired);
    o->creator_pid = h->creator_pid;
    o->create_time_ns = h->create_time_ns;
    uint64_t minc = o->head;
    for (uint32_t i = 0; i < r->mc; i++) {
        struct shmr_cslot *s = &r->cslots[i];
        if (shmr_load_acquire64(&s->owner) == 0 || !shmr_load_acquire32(&s->ready))
            continue;
        o->n_consumers++;
        uint64_t cur = shmr_load_acquire64(&s->cursor);
        if (cur < minc)
            minc = cur;
    }
    if (r->mode == SHMR_MODE_QUEUE) {
        o->tail = shmr_load_acquire64(&r->tailb->tail);
        uint64_t released = 0;
        for (uint32_t i = 0; i < r->mc; i++)
            released += shmr_load_relaxed64(&r->cslots[i].popped);
        o->consumed = released;
    } else {
        o->tail = minc;
        o->consumed = minc;
    }
    return 0;
}

int shmr_consumer_infos(shmr_ring *r, shmr_consumer_info *out, uint32_t max, uint32_t *n)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < r->mc && k < max; i++) {
        struct shmr_cslot *s = &r->cslots[i];
        uint64_t owner = shmr_load_acquire64(&s->owner);
        if (owner == 0 || SHMR_IS_BUSY(owner))
            continue;
        shmr_consumer_info *o = &out[k++];
        o->index = i;
        o->pid = (uint32_t)owner;
        o->start_time = owner >> 32;
        o->cursor = shmr_load_acquire64(&s->cursor);
        o->popped = shmr_load_relaxed64(&s->popped);
        o->dropped = shmr_load_relaxed64(&s->dropped);
        o->claim_pos = shmr_load_relaxed64(&s->claim_pos);
        o->claim_n = shmr_load_relaxed32(&s->claim_state) == CLAIM_HELD ? shmr_load_relaxed64(&s->claim_n) : 0;
        o->alive = owner_alive(owner);
    }
    *n = k;
    return 0;
}
