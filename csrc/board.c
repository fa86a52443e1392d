/*
 * The board protocol: per key a latch of copies with a per-copy sequence,
 * and a claim word that serialises writers of the key.
 *
 * Write of version w (by the claim holder only) into copy c = w % ncopies:
 *     seq[c] = 2w+1 (relaxed); release fence; copy the value;
 *     seq[c] = 2w (release); version = w (release); claim = 0 (release).
 * The copy written is never the published one (that is copy (w-1) % ncopies),
 * so a reader always has a complete value to read and never waits. A writer
 * killed anywhere leaves version at w-1, whose copy is untouched; the next
 * writer takes the claim over and rewrites copy c from the start.
 *
 * Waiting goes through the eventcount (eventcount.c): one per key, in its own
 * block, and one board-wide for waits on several keys; liveness of a claim
 * holder through liveness.c.
 *
 * Read: v = version (acquire); s = seq[v % ncopies] (acquire); s must be 2v
 * (else a later writer has started on that copy: retry); copy; acquire fence;
 * re-read seq: unchanged means no writer touched the copy while we read it
 * [Boehm, "Can seqlocks get along with programming language memory models?",
 * MSPC 2012]. The copy itself is a plain memcpy racing a possible writer,
 * formally a data race in C11 as in the ring's overwrite mode: its result is
 * discarded whenever the re-check fails, and on the supported targets a
 * memcpy of shared memory cannot trap or fault.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "board.h"
#include "eventcount.h"
#include "liveness.h"
#include "segment.h"
#include "shmr_atomic.h"
#include "shmr_layout.h"
#include "shmring.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BOARD_MAGIC 0x31445242524d53ull /* "SMRBRD1\0" as little-endian bytes */
#define BOARD_BLOCK SHMR_BLOCK
#define BOARD_PAGE SHMR_PAGE
#define BOARD_BIG_VALUE 65536u      /* values this large start on a page */
#define BOARD_CHUNK (1u << 20)      /* large reads check for an overtake per chunk */

/* ---- segment layout ---------------------------------------------------- */

/* Immutable after creation; magic is stored last (release). */
struct board_header {
    shmr_a64 magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t segment_size;
    uint64_t nkeys;
    uint64_t value_size;
    uint64_t stride;          /* bytes between copies */
    uint32_t value_align;
    uint32_t ncopies;
    uint32_t key_kind;
    uint32_t creator_pid;
    uint64_t keys_offset;
    uint64_t names_offset;
    uint64_t names_len;
    uint64_t slots_offset;
    uint64_t create_time_ns;
    uint32_t descr_len;
    uint32_t reserved0;
    uint64_t reserved[18];
    char descr[SHMR_BOARD_DESCR_MAX];
};

/* One per key, on its own block. Written by the key's writers only; read by
 * readers. Each key's eventcount lives in a separate array of blocks, so a
 * sleeper counting itself never touches the line readers poll. */
struct SHMR_ALIGNED_BLOCK board_key {
    shmr_a64 owner;       /* claim: (start32 << 32) | pid of the writer, 0 = free */
    shmr_a64 version;     /* completed writes; the latest value is in copy version % ncopies */
    shmr_a64 last_writer; /* owner word of the last completed write */
    shmr_a64 write_ns;    /* CLOCK_REALTIME of the last completed write */
    shmr_a64 takeovers;   /* claims taken from dead writers */
    uint64_t reserved[3];
    shmr_a64 seq[SHMR_BOARD_MAX_COPIES]; /* per copy: 2w = holds version w, 2w+1 = being written */
};

/* header page, the board-wide eventcount (waits on several keys), then
 * nkeys key blocks, nkeys eventcount blocks, the key names, the copies */
#define OFF_BOARD_EC BOARD_PAGE
#define OFF_KEYS (OFF_BOARD_EC + BOARD_BLOCK)

_Static_assert(sizeof(struct board_header) == BOARD_PAGE, "header is one page");
_Static_assert(offsetof(struct board_header, descr) == 256, "fixed fields fill two blocks");
_Static_assert(offsetof(struct board_header, nkeys) == 24, "layout v1");
_Static_assert(offsetof(struct board_header, descr_len) == 104, "layout v1");
_Static_assert(sizeof(struct board_key) == BOARD_BLOCK, "one block per key");
_Static_assert(offsetof(struct board_key, seq) == 64, "sequences fill the second line");
_Static_assert(BOARD_MAGIC != SHMR_MAGIC, "a ring and a board are never confused");

struct shmr_board {
    uint8_t *base;
    size_t size;
    struct board_header *hdr;
    struct shmr_ec *ec;     /* board-wide */
    struct board_key *keys;
    struct shmr_ec *kec;    /* one per key */
    uint8_t *slots;
    uint64_t nkeys, vs, stride;
    uint32_t ncopies;
    uint32_t file_uid, file_mode; /* fstat of the segment when it was mapped */
};

/* ---- this process as an owner word ------------------------------------- */

/* shmr_self_owner reads /proc; a write must not. Cached once per process
 * (pthread_once orders the store before every reader) and refreshed in a
 * forked child while it is still single-threaded, so a board inherited
 * through fork writes under the child's own identity. Process-local: no
 * shared-memory atomics here. */
static uint64_t self_owner_cache;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

static void self_refresh(void) { self_owner_cache = shmr_self_owner(); }

static void self_init(void)
{
    self_refresh();
    pthread_atfork(NULL, NULL, self_refresh);
}

static uint64_t self_owner(void)
{
    pthread_once(&self_once, self_init);
    return self_owner_cache;
}

/* ---- create / attach ---------------------------------------------------- */

static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

struct board_layout {
    uint64_t names, slots, stride, size;
};

static struct board_layout board_layout(uint64_t nkeys, uint64_t vs, uint32_t ncopies, uint64_t names_len)
{
    struct board_layout l;
    l.names = OFF_KEYS + 2 * nkeys * BOARD_BLOCK;
    l.slots = round_up(l.names + names_len, BOARD_PAGE);
    /* a big value starts on a page, so a view of it maps exactly its pages */
    l.stride = round_up(vs, vs >= BOARD_BIG_VALUE ? BOARD_PAGE : BOARD_BLOCK);
    l.size = round_up(l.slots + nkeys * ncopies * l.stride, BOARD_PAGE);
    return l;
}

static int check_params(const shmr_board_params *p)
{
    if (p->nkeys == 0 || p->nkeys > SHMR_BOARD_MAX_KEYS)
        return -EINVAL;
    if (p->value_size == 0 || p->value_size > SHMR_BOARD_MAX_VALUE)
        return -EINVAL;
    if (p->value_align == 0 || p->value_align > BOARD_BLOCK || (p->value_align & (p->value_align - 1)))
        return -EINVAL;
    if (p->ncopies < 2 || p->ncopies > SHMR_BOARD_MAX_COPIES)
        return -EINVAL;
    if (p->key_kind > SHMR_BOARD_STR_KEYS || p->descr_len == 0 || p->descr_len >= SHMR_BOARD_DESCR_MAX)
        return -EINVAL;
    if (p->names_len > SHMR_BOARD_MAX_NAMES || (p->key_kind == SHMR_BOARD_INT_KEYS && p->names_len))
        return -EINVAL;
    return 0;
}

static shmr_board *bind(uint8_t *base, size_t size)
{
    shmr_board *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->base = base;
    b->size = size;
    b->hdr = (struct board_header *)base;
    b->ec = (struct shmr_ec *)(base + OFF_BOARD_EC);
    b->keys = (struct board_key *)(base + OFF_KEYS);
    b->kec = (struct shmr_ec *)(base + OFF_KEYS + b->hdr->nkeys * BOARD_BLOCK);
    b->slots = base + b->hdr->slots_offset;
    b->nkeys = b->hdr->nkeys;
    b->vs = b->hdr->value_size;
    b->stride = b->hdr->stride;
    b->ncopies = b->hdr->ncopies;
    return b;
}

/* The creator first, before the segment grows: its leftover, should it die
 * building it, is found by gc under the private name (segment.h). */
static void record_creator(uint8_t *page) { ((struct board_header *)page)->creator_pid = (uint32_t)getpid(); }

int shmr_board_create(const char *name, const shmr_board_params *p, unsigned mode_bits, shmr_board **out)
{
    shmr_ec_setup(); /* before this process can notify anyone (eventcount.c) */
    int rc = check_params(p);
    if (rc)
        return rc;
    struct board_layout l = board_layout(p->nkeys, p->value_size, p->ncopies, p->names_len);
    struct shmr_seg seg;
    if ((rc = shmr_seg_create(name, l.size, mode_bits, record_creator, &seg)))
        return rc;
    uint8_t *base = seg.base;
    struct board_header *h = (struct board_header *)base;
    h->version = SHMR_BOARD_VERSION;
    h->header_size = sizeof *h;
    h->segment_size = l.size;
    h->nkeys = p->nkeys;
    h->value_size = p->value_size;
    h->stride = l.stride;
    h->value_align = p->value_align;
    h->ncopies = p->ncopies;
    h->key_kind = p->key_kind;
    h->keys_offset = OFF_KEYS;
    h->names_offset = l.names;
    h->names_len = p->names_len;
    h->slots_offset = l.slots;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    h->create_time_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    h->descr_len = p->descr_len;
    memcpy(h->descr, p->descr, p->descr_len);
    if (p->names_len)
        memcpy(base + l.names, p->names, p->names_len);
    shmr_board *b = bind(base, l.size);
    if (!b) {
        shmr_seg_abandon(&seg);
        return -ENOMEM;
    }
    b->file_uid = seg.uid;
    b->file_mode = seg.mode;
    /* publishes every field above; pairs with the acquire load in validate() */
    shmr_store_release64(&h->magic, BOARD_MAGIC);
    if ((rc = shmr_seg_publish(&seg))) {
        free(b);
        return rc;
    }
    *out = b;
    return 0;
}

static int validate(const uint8_t *base, uint64_t file_size)
{
    const struct board_header *h = (const struct board_header *)base;
    uint64_t magic = shmr_load_acquire64((shmr_a64 *)&h->magic); /* pairs with the creator's release */
    if (magic == 0)
        return -SHMR_EINIT;
    if (magic == SHMR_MAGIC)
        return -SHMR_ENOTBOARD;
    if (magic != BOARD_MAGIC)
        return -SHMR_EBADMAGIC;
    if (h->version != SHMR_BOARD_VERSION)
        return -SHMR_EVERSION;
    if (h->header_size != sizeof *h)
        return -SHMR_ECORRUPT;
    shmr_board_params p = {h->nkeys, h->value_size, h->value_align, h->ncopies, h->key_kind,
                           h->descr_len, h->descr, NULL, h->names_len};
    if (check_params(&p))
        return -SHMR_ECORRUPT;
    for (uint32_t i = 0; i < h->descr_len; i++)
        if (h->descr[i] < 0x20 || h->descr[i] > 0x7e)
            return -SHMR_ECORRUPT;
    struct board_layout l = board_layout(h->nkeys, h->value_size, h->ncopies, h->names_len);
    if (h->keys_offset != OFF_KEYS || h->names_offset != l.names || h->slots_offset != l.slots ||
        h->stride != l.stride || h->segment_size != l.size)
        return -SHMR_ECORRUPT;
    if (file_size < h->segment_size)
        return -SHMR_ETRUNC;
    return 0;
}

int shmr_board_attach(const char *name, shmr_board **out)
{
    shmr_ec_setup(); /* before this process can notify anyone (eventcount.c) */
    int fd;
    struct shmr_seg seg;
    int rc = shmr_seg_open(name, &fd);
    if (rc || (rc = shmr_seg_map(fd, validate, offsetof(struct board_header, segment_size), &seg)))
        return rc;
    shmr_board *b = bind(seg.base, seg.size);
    if (!b) {
        munmap(seg.base, seg.size);
        return -ENOMEM;
    }
    b->file_uid = seg.uid;
    b->file_mode = seg.mode;
    *out = b;
    return 0;
}

void shmr_board_file_owner(const shmr_board *b, uint32_t *uid, uint32_t *mode)
{
    *uid = b->file_uid;
    *mode = b->file_mode;
}

void shmr_board_detach(shmr_board *b)
{
    if (!b)
        return;
    munmap(b->base, b->size);
    free(b);
}

int shmr_board_info_get(const shmr_board *b, shmr_board_info *o)
{
    const struct board_header *h = b->hdr;
    o->nkeys = h->nkeys;
    o->value_size = h->value_size;
    o->segment_size = h->segment_size;
    o->stride = h->stride;
    o->ncopies = h->ncopies;
    o->key_kind = h->key_kind;
    o->version = h->version;
    o->creator_pid = h->creator_pid;
    o->create_time_ns = h->create_time_ns;
    return 0;
}

const char *shmr_board_descr(const shmr_board *b, uint32_t *len)
{
    *len = b->hdr->descr_len;
    return b->hdr->descr;
}

const char *shmr_board_names(const shmr_board *b, uint64_t *len)
{
    *len = b->hdr->names_len;
    return (const char *)b->base + b->hdr->names_offset;
}

uint64_t shmr_board_nkeys(const shmr_board *b) { return b->nkeys; }
uint64_t shmr_board_value_size(const shmr_board *b) { return b->vs; }

int shmr_board_key_info_get(const shmr_board *b, uint64_t key, shmr_board_key_info *o)
{
    if (key >= b->nkeys)
        return -ERANGE;
    struct board_key *k = &b->keys[key];
    uint64_t owner = shmr_load_relaxed64(&k->owner);
    uint64_t last = shmr_load_relaxed64(&k->last_writer);
    o->version = shmr_load_acquire64(&k->version);
    o->owner_pid = (uint32_t)owner;
    o->owner_alive = (shmr_owner_liveness(owner, 0) != SHMR_DEAD);
    o->last_writer_pid = (uint32_t)last;
    o->last_writer_alive = (shmr_owner_liveness(last, 0) != SHMR_DEAD);
    o->write_time_ns = shmr_load_relaxed64(&k->write_ns);
    o->takeovers = shmr_load_relaxed64(&k->takeovers);
    o->waiters = shmr_load_relaxed32(&b->kec[key].waiters);
    return 0;
}

/* ---- writing ------------------------------------------------------------ */

static uint8_t *copy_ptr(const shmr_board *b, uint64_t key, uint64_t c)
{
    return b->slots + (key * b->ncopies + c) * b->stride;
}

static int claim_free(void *arg) { return shmr_load_relaxed64(&((struct board_key *)arg)->owner) == 0; }

/* 0: claimed; 1: claimed by taking over from a dead writer; -ETIMEDOUT, -EINTR.
 * Spins first (writes of small values are short), then looks once whether the
 * holder is alive (a /proc read: once per call, and the caller calls again
 * every liveness interval), then sleeps on the key's eventcount. */
static int claim(struct board_key *k, struct shmr_ec *ec, uint64_t me, int64_t wait_ns, int64_t spin_ns)
{
    uint64_t cur = 0;
    /* acquire on success pairs with the previous writer's release of the claim */
    if (shmr_cas_seqcst64(&k->owner, &cur, me))
        return 0;
    int64_t start = shmr_mono_ns();
    int64_t spin_until = start + (wait_ns >= 0 && wait_ns < spin_ns ? wait_ns : spin_ns);
    for (uint32_t i = 1; spin_ns > 0; i++) {
        cur = 0;
        if (shmr_load_relaxed64(&k->owner) == 0 && shmr_cas_seqcst64(&k->owner, &cur, me))
            return 0;
        shmr_cpu_relax();
        if ((i & 63) == 0 && shmr_mono_ns() >= spin_until)
            break;
    }
    for (;;) {
        cur = 0;
        if (shmr_cas_seqcst64(&k->owner, &cur, me))
            return 0;
        if (cur != me && !(shmr_owner_liveness(cur, 0) != SHMR_DEAD)) {
            if (shmr_cas_seqcst64(&k->owner, &cur, me)) {
                shmr_fetch_add_relaxed64(&k->takeovers, 1);
                return 1;
            }
            continue; /* taken or released meanwhile: look again */
        }
        break;
    }
    int64_t left = -1;
    for (;;) {
        if (wait_ns >= 0 && (left = start + wait_ns - shmr_mono_ns()) <= 0)
            return -ETIMEDOUT;
        int rc = shmr_ec_wait(ec, claim_free, k, left, 0);
        if (rc == -EINTR)
            return rc;
        cur = 0;
        if (shmr_cas_seqcst64(&k->owner, &cur, me))
            return 0;
        if (rc == -ETIMEDOUT)
            return rc;
    }
}

/* after a release store of version or of a free claim (shmr_ec_notify and
 * the sleepers' barrier in shmr_ec_wait: see eventcount.c) */
static void notify(shmr_board *b, uint64_t key)
{
    shmr_ec_notify(&b->kec[key]);
    shmr_ec_notify(b->ec);
}

int64_t shmr_board_write(shmr_board *b, uint64_t key, const void *src, uint64_t len, int64_t wait_ns,
                         int64_t spin_ns)
{
    if (key >= b->nkeys)
        return -ERANGE;
    if (len != b->vs)
        return -EINVAL;
    struct board_key *k = &b->keys[key];
    uint64_t me = self_owner();
    int rc = claim(k, &b->kec[key], me, wait_ns, spin_ns);
    if (rc < 0)
        return rc;
    /* we hold the claim: version changes only under it (acquire: after a
     * takeover, see what the dead writer published) */
    uint64_t w = shmr_load_acquire64(&k->version) + 1;
    uint64_t c = w % b->ncopies;
    shmr_store_relaxed64(&k->seq[c], 2 * w + 1);
    /* orders the odd mark before the data stores: a reader whose copy saw any
     * of them sees the mark on its re-check (pairs with its acquire fence) */
    shmr_fence_release();
    memcpy(copy_ptr(b, key, c), src, len);
    /* pairs with the reader's acquire load of seq[c]: 2w means the copy is whole */
    shmr_store_release64(&k->seq[c], 2 * w);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    shmr_store_relaxed64(&k->last_writer, me);
    shmr_store_relaxed64(&k->write_ns, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
    /* pairs with the reader's acquire load of version: seq[c] = 2w is visible first */
    shmr_store_release64(&k->version, w);
    /* pairs with the next writer's claim CAS */
    shmr_store_release64(&k->owner, 0);
    notify(b, key);
    return (int64_t)w;
}

/* ---- reading ------------------------------------------------------------ */

uint64_t shmr_board_version(const shmr_board *b, uint64_t key)
{
    return key < b->nkeys ? shmr_load_acquire64(&b->keys[key].version) : 0;
}

/* The published copy of key: its index and seq value, or -ENOENT / -EAGAIN. */
static int published(const shmr_board *b, const struct board_key *k, uint64_t *copy, uint64_t *seq, uint64_t *ver)
{
    for (int tries = 0; tries < 64; tries++) {
        uint64_t v = shmr_load_acquire64((shmr_a64 *)&k->version); /* pairs with the writer's release */
        if (v == 0)
            return -ENOENT;
        uint64_t c = v % b->ncopies;
        uint64_t s = shmr_load_acquire64((shmr_a64 *)&k->seq[c]); /* pairs with the writer's release of 2w */
        if (s == 2 * v) {
            *copy = c;
            *seq = s;
            *ver = v;
            return 0;
        }
        /* a writer of version v + ncopies has started on this copy: version moved on */
    }
    return -EAGAIN;
}

static int still_whole(const struct board_key *k, uint64_t c, uint64_t s)
{
    shmr_fence_acquire(); /* the copy's loads come before the re-check; pairs with the writer's release fence */
    return shmr_load_relaxed64((shmr_a64 *)&k->seq[c]) == s;
}

int shmr_board_read(const shmr_board *b, uint64_t key, void *dst, uint64_t len, uint64_t *version,
                    uint32_t max_tries, uint64_t *retries)
{
    if (key >= b->nkeys)
        return -ERANGE;
    if (len != b->vs)
        return -EINVAL;
    const struct board_key *k = &b->keys[key];
    for (uint32_t t = 0; t < max_tries; t++) {
        uint64_t c, s, v;
        int rc = published(b, k, &c, &s, &v);
        if (rc == -ENOENT)
            return rc;
        if (rc == 0) {
            const uint8_t *src = copy_ptr(b, key, c);
            if (len <= BOARD_CHUNK) {
                memcpy(dst, src, len);
            } else {
                /* give up early on a copy a writer has started to overwrite */
                for (uint64_t off = 0; off < len; off += BOARD_CHUNK) {
                    uint64_t n = len - off < BOARD_CHUNK ? len - off : BOARD_CHUNK;
                    memcpy((uint8_t *)dst + off, src + off, n);
                    if (shmr_load_relaxed64((shmr_a64 *)&k->seq[c]) != s)
                        break;
                }
            }
            if (still_whole(k, c, s)) {
                *version = v;
                return 0;
            }
        }
        (*retries)++;
        if (t > 8)
            sched_yield();
    }
    return -EAGAIN;
}

int shmr_board_view(const shmr_board *b, uint64_t key, const void **ptr, uint64_t *version, uint64_t *token)
{
    if (key >= b->nkeys)
        return -ERANGE;
    uint64_t c, s, v;
    int rc = published(b, &b->keys[key], &c, &s, &v);
    if (rc)
        return rc;
    *ptr = copy_ptr(b, key, c);
    *version = v;
    *token = s;
    return 0;
}

int shmr_board_view_valid(const shmr_board *b, uint64_t key, uint64_t token)
{
    if (key >= b->nkeys || token < 2)
        return 0;
    uint64_t c = (token / 2) % b->ncopies;
    return still_whole(&b->keys[key], c, token);
}

/* ---- waiting ------------------------------------------------------------ */

struct newer_arg {
    const shmr_board *b;
    const uint64_t *keys, *newer;
    uint64_t n;
};

static int any_newer(void *arg)
{
    const struct newer_arg *a = arg;
    for (uint64_t i = 0; i < a->n; i++)
        if (shmr_load_acquire64(&a->b->keys[a->keys[i]].version) > a->newer[i])
            return 1;
    return 0;
}

int shmr_board_wait(shmr_board *b, uint64_t key, uint64_t newer_than, int64_t timeout_ns, int64_t spin_ns)
{
    if (key >= b->nkeys)
        return -ERANGE;
    struct newer_arg a = {b, &key, &newer_than, 1};
    return shmr_ec_wait(&b->kec[key], any_newer, &a, timeout_ns, spin_ns);
}

int shmr_board_wait_any(shmr_board *b, const uint64_t *keys, const uint64_t *newer_than, uint64_t n,
                        int64_t timeout_ns)
{
    for (uint64_t i = 0; i < n; i++)
        if (keys[i] >= b->nkeys)
            return -ERANGE;
    struct newer_arg a = {b, keys, newer_than, n};
    return shmr_ec_wait(b->ec, any_newer, &a, timeout_ns, 0);
}

/* The event-loop form of shmr_board_wait, taken apart as shmr_ec_arm describes. */
int shmr_board_arm(shmr_board *b, uint64_t key, uint64_t newer_than, void **word, uint32_t *seen)
{
    if (key >= b->nkeys)
        return -ERANGE;
    struct newer_arg a = {b, &key, &newer_than, 1};
    *word = (void *)&b->kec[key].epoch;
    return shmr_ec_arm(&b->kec[key], NULL, any_newer, &a, seen);
}

void shmr_board_disarm(shmr_board *b, uint64_t key)
{
    if (key < b->nkeys)
        shmr_ec_disarm(&b->kec[key], NULL);
}

void shmr_board_wake_all(shmr_board *b)
{
    shmr_ec_notify_always(b->ec);
    for (uint64_t i = 0; i < b->nkeys; i++)
        if (shmr_load_relaxed32(&b->kec[i].waiters))
            shmr_ec_notify_always(&b->kec[i]);
}
