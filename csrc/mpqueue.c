/*
 * Queue segments (see mpqueue.h): a header page, one lane block per lane,
 * then the lanes, each a message ring in queue mode formatted by segment.c's
 * shmr_image_format when its first producer takes it. Pages of lanes never
 * taken are never touched, nor reserved.
 *
 * Every lane's ring handle points its data eventcount at the queue header's,
 * so each publish in any lane goes through the unchanged ring code and
 * notifies the one eventcount getters sleep on; it wakes one getter, not all
 * (ring.data_wakes = 1): getters all wait for the same thing, and the one that
 * takes an item passes the wake on while items remain (shmr_mpq_taken), so a
 * put costs one context switch rather than one per sleeping getter. A lane
 * keeps its own space eventcount: only its producer waits for room in it, so
 * a release wakes that producer and no other. Putters waiting for maxsize
 * sleep on the header's space eventcount, which every get notifies when the
 * queue has a maxsize.
 *
 * Counting: items queued = sum over lanes of messages published (prod.msgs)
 * minus sum over their consumer slots of popped + abandoned. Each term is
 * cumulative and written by exactly one side at a crash-exact point (see
 * struct shmr_cslot), so a kill anywhere leaves no count in transit.
 * maxsize counts admitted items instead of published ones: a producer adds to
 * its lane's admitted word before publishing, then checks the sum; a producer
 * killed in between leaves admitted > published, which whoever next holds the
 * lane's role repairs (counted lost).
 *
 * Pairs:
 *   lane state:   release store of SHMR_LANE_READY after the image is written
 *                 (after the image's own magic) / acquire loads in lane_ready
 *   lanes_used:   seq_cst CAS (atomic max) after the lane is ready and before
 *                 its producer publishes / acquire loads by getters, which then
 *                 acquire-load the lane's head
 *   admitted:     relaxed store by the lane's producer, then a seq_cst fence
 *                 that pairs with the same fence of every other admitter (of
 *                 two racing admits at least one sees the other's count); the
 *                 publish's release store of head orders it before the item
 *   done:         seq_cst CAS in task_done / relaxed loads in the join check,
 *                 which runs under the join eventcount's fences
 *   ticket:       release fetch_add per item (messages.c); a put that begins
 *                 after another returned is ordered after it by that
 *                 happens-before, and the counter's modification order gives
 *                 it the larger ticket. Read back from the frame header after
 *                 the acquire load of the lane's head (shmr_mpq_pick), which
 *                 first loads the counter with acquire: reading a count past a
 *                 ticket synchronizes with that put's fetch_add (every later
 *                 fetch_add continues its release sequence).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "mpqueue.h"

#include "eventcount.h"
#include "liveness.h"
#include "shmr_internal.h"

#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LANE_DESCR "messages" /* the descriptor of every message ring */

struct shmr_mpq {
    int fd;
    uint8_t *base;
    uint64_t size;
    uint32_t file_uid, file_mode;
    struct shmr_qheader *hdr;
    struct shmr_lane_block *lb;
    uint32_t lanes, max_consumers;
    uint64_t lane_offset, lane_stride, lane_units;
    int64_t maxsize;
    shmr_ring *views; /* lanes bound for shmr_mpq_pick, lazily (views[i].base: bound) */
    struct lane_seen *seen; /* per lane, what this handle's last pick read there (peek_lane) */
    int picked_more;  /* the last pick saw items beyond the batch it named */
};

/* The oldest item a pick found in a lane: its position (the lane's tail then)
 * and its ticket; ticket UINT64_MAX: none known. */
struct lane_seen {
    uint64_t tail, ticket;
};

static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
static int is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

static shmr_params lane_params(uint64_t units, uint32_t max_consumers)
{
    shmr_params p = {units, SHMR_MSG_UNIT, SHMR_MSG_UNIT, SHMR_MODE_QUEUE, SHMR_OVERFLOW_BLOCK, max_consumers,
                     LANE_DESCR, (uint32_t)(sizeof LANE_DESCR - 1), SHMR_KIND_MESSAGES};
    return p;
}

/* Where every part of a queue segment lies; 0 or -EINVAL. */
static int q_layout(uint32_t lanes, uint64_t units, uint32_t max_consumers, uint64_t *lane_offset,
                    uint64_t *stride, uint64_t *size)
{
    if (lanes == 0 || lanes > SHMR_MPQ_MAX_LANES)
        return -EINVAL;
    shmr_params lp = lane_params(units, max_consumers);
    int rc = shmr_image_size(&lp, stride);
    if (rc)
        return rc;
    *lane_offset = round_up(OFF_QLANES + (uint64_t)lanes * SHMR_BLOCK, SHMR_PAGE);
    if (*stride > (UINT64_MAX / 4 - *lane_offset) / lanes)
        return -EINVAL;
    *size = *lane_offset + (uint64_t)lanes * *stride;
    return 0;
}

static uint8_t *lane_base(const shmr_mpq *q, uint32_t i) { return q->base + q->lane_offset + i * q->lane_stride; }

static int lane_ready(const shmr_mpq *q, uint32_t i)
{
    /* pairs with the release store in lane_format() */
    return shmr_load_acquire64(&q->lb[i].state) == SHMR_LANE_READY;
}

uint32_t shmr_mpq_lanes_used(const shmr_mpq *q)
{
    /* pairs with the CAS in raise_lanes_used(); bounded: the word is writable by peers */
    uint64_t n = shmr_load_acquire64(&q->hdr->shared.lanes_used);
    return n < q->lanes ? (uint32_t)n : q->lanes;
}

/* A ring handle over lane i, into r (which the caller owns). The lane's
 * eventcounts become the queue's. */
static int lane_bind(shmr_mpq *q, uint32_t i, shmr_ring *r)
{
    if (!lane_ready(q, i))
        return -EAGAIN;
    int rc = shmr_image_bind(lane_base(q, i), q->lane_stride, r);
    if (rc)
        return rc;
    if (r->kind != SHMR_KIND_MESSAGES || r->mode != SHMR_MODE_QUEUE || r->cap != q->lane_units ||
        r->max_consumers != q->max_consumers || r->size > q->lane_stride)
        return -SHMR_ECORRUPT;
    r->borrowed = 1;
    /* A getter opens every lane in use: mapping each whole lane up front cost
     * each getter process 2048 page-table entries per 8 MiB lane (a fifth of
     * all CPU time of a 1 s run of 20 putters and 20 getters, perf). It maps
     * the lane's blocks and its first MiB (the first items of a lane, and all
     * of a lane whose producer rewinds: messages.c, m_rewind_pad, off by
     * default); pages past it fault in on first read, with the kernel's
     * fault-around. The lane's producer maps all of it
     * (shmr_mpq_producer_open): one process, and it writes every page. */
    r->populate_bytes = (size_t)(r->slots - r->base) + ((size_t)1 << 20);
    r->data_ec = &q->hdr->data_ec;
    r->data_wakes = 1;
    r->file_uid = q->file_uid;
    r->file_mode = q->file_mode;
    return 0;
}

int shmr_mpq_lane_open(shmr_mpq *q, uint32_t i, shmr_ring **out)
{
    if (i >= q->lanes)
        return -EINVAL;
    shmr_ring *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    int rc = lane_bind(q, i, r);
    if (rc) {
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* ---- create / attach ---------------------------------------------------- */

static shmr_mpq *wrap(int fd, uint8_t *base, uint64_t size, uint32_t uid, uint32_t mode)
{
    shmr_mpq *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    uint32_t lanes = ((struct shmr_qheader *)base)->lanes;
    q->views = calloc(lanes, sizeof(shmr_ring));
    q->seen = malloc(lanes * sizeof *q->seen);
    if (!q->views || !q->seen) {
        free(q->views);
        free(q->seen);
        free(q);
        return NULL;
    }
    for (uint32_t i = 0; i < lanes; i++)
        q->seen[i] = (struct lane_seen){0, UINT64_MAX};
    struct shmr_qheader *h = (struct shmr_qheader *)base;
    q->fd = fd;
    q->base = base;
    q->size = size;
    q->file_uid = uid;
    q->file_mode = mode;
    q->hdr = h;
    q->lb = (struct shmr_lane_block *)(base + OFF_QLANES);
    q->lanes = h->lanes;
    q->max_consumers = h->max_consumers;
    q->lane_offset = h->lane_offset;
    q->lane_stride = h->lane_stride;
    q->lane_units = h->lane_units;
    q->maxsize = h->maxsize;
    return q;
}

int shmr_mpq_create(const char *name, const shmr_mpq_params *p, unsigned mode_bits, shmr_mpq **out)
{
    shmr_ec_setup(); /* before this process can notify anyone (eventcount.c) */
    if (!is_pow2(p->lane_bytes) || p->lane_bytes < SHMR_MPQ_MIN_LANE_BYTES ||
        p->lane_bytes / SHMR_MSG_UNIT > SHMR_MAX_CAPACITY)
        return -EINVAL;
    if (p->max_consumers == 0 || p->max_consumers > SHMR_MAX_CONSUMERS)
        return -EINVAL;
    uint64_t units = p->lane_bytes / SHMR_MSG_UNIT, lane_offset, stride, size;
    int rc = q_layout(p->lanes, units, p->max_consumers, &lane_offset, &stride, &size);
    if (rc)
        return rc;
    if (size > (uint64_t)SIZE_MAX / 2)
        return -ENOMEM;
    uint64_t me = shmr_self_owner();
    struct shmr_build b;
    if ((rc = shmr_build_open(&b, name, mode_bits, me)))
        return rc;
    /* only the header and the lane blocks: a lane's pages are reserved when
     * its first producer takes it */
    if ((rc = shmr_build_map(&b, size, lane_offset)))
        goto fail;
    struct shmr_qheader *h = (struct shmr_qheader *)b.base;
    h->version = SHMR_QLAYOUT_VERSION;
    h->lanes = p->lanes;
    h->segment_size = size;
    h->lane_offset = lane_offset;
    h->lane_stride = stride;
    h->lane_units = units;
    h->max_consumers = p->max_consumers;
    h->creator_pid = (uint32_t)me;
    h->creator_start = me >> 32;
    h->creator_pidns = shmr_self_pidns();
    h->maxsize = p->maxsize > 0 ? p->maxsize : 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    h->create_time_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    /* publishes every field above; pairs with the acquire load in q_validate() */
    shmr_store_release64(&h->magic, SHMR_QMAGIC);
    if ((rc = shmr_build_publish(&b)))
        goto fail;
    shmr_mpq *q = wrap(b.fd, b.base, size, (uint32_t)geteuid(), mode_bits & 0777);
    if (!q) {
        rc = -ENOMEM;
        goto fail;
    }
    *out = q;
    return 0;
fail:
    shmr_build_abort(&b);
    return rc;
}

static int q_validate(const uint8_t *base, uint64_t file_size)
{
    const struct shmr_qheader *h = (const struct shmr_qheader *)base;
    uint64_t magic = shmr_load_acquire64((shmr_a64 *)&h->magic); /* pairs with the creator's release */
    if (magic == SHMR_MAGIC)
        return -SHMR_ENOTQUEUE; /* a ring */
    if (magic != SHMR_QMAGIC)
        return magic == 0 ? -SHMR_EINIT : -SHMR_EBADMAGIC;
    if (h->version != SHMR_QLAYOUT_VERSION)
        return -SHMR_EVERSION;
    if (!is_pow2(h->lane_units) || h->lane_units * SHMR_MSG_UNIT < SHMR_MPQ_MIN_LANE_BYTES ||
        h->lane_units > SHMR_MAX_CAPACITY || h->max_consumers == 0 || h->max_consumers > SHMR_MAX_CONSUMERS ||
        h->maxsize < 0)
        return -SHMR_ECORRUPT;
    uint64_t lane_offset, stride, size;
    if (q_layout(h->lanes, h->lane_units, h->max_consumers, &lane_offset, &stride, &size) ||
        lane_offset != h->lane_offset || stride != h->lane_stride || size != h->segment_size)
        return -SHMR_ECORRUPT;
    if (file_size < size)
        return -SHMR_ETRUNC;
    return 0;
}

int shmr_mpq_attach_fd(int fd, shmr_mpq **out)
{
    shmr_ec_setup(); /* before this process can notify anyone (eventcount.c) */
    struct stat st;
    int rc;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto fail;
    }
    if (st.st_size < (off_t)SHMR_PAGE) {
        rc = st.st_size == 0 ? -SHMR_EINIT : -SHMR_ETRUNC;
        goto fail;
    }
    uint8_t *hp = mmap(NULL, SHMR_PAGE, PROT_READ, MAP_SHARED, fd, 0);
    if (hp == MAP_FAILED) {
        rc = -errno;
        goto fail;
    }
    rc = q_validate(hp, (uint64_t)st.st_size);
    uint64_t size = ((struct shmr_qheader *)hp)->segment_size;
    munmap(hp, SHMR_PAGE);
    if (rc)
        goto fail;
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        rc = -errno;
        goto fail;
    }
    /* the header is immutable once magic is set, but re-check the mapping we keep */
    shmr_mpq *q = NULL;
    if ((rc = q_validate(base, (uint64_t)st.st_size)) ||
        !(q = wrap(fd, base, size, (uint32_t)st.st_uid, (uint32_t)st.st_mode & 07777))) {
        munmap(base, size);
        rc = rc ? rc : -ENOMEM;
        goto fail;
    }
    *out = q;
    return 0;
fail:
    close(fd);
    return rc;
}

int shmr_mpq_attach(const char *name, shmr_mpq **out)
{
    int fd, rc = shmr_open_name(name, &fd);
    return rc ? rc : shmr_mpq_attach_fd(fd, out);
}

void shmr_mpq_detach(shmr_mpq *q)
{
    if (!q)
        return;
    free(q->views);
    free(q->seen);
    munmap(q->base, q->size);
    close(q->fd);
    free(q);
}

int shmr_mpq_fd(const shmr_mpq *q) { return q->fd; }

void shmr_mpq_params_of(const shmr_mpq *q, shmr_mpq_params *out)
{
    out->lanes = q->lanes;
    out->max_consumers = q->max_consumers;
    out->lane_bytes = q->lane_units * SHMR_MSG_UNIT;
    out->maxsize = q->maxsize;
}

void shmr_mpq_file_owner(const shmr_mpq *q, uint32_t *uid, uint32_t *mode)
{
    *uid = q->file_uid;
    *mode = q->file_mode;
}

/* ---- producers ---------------------------------------------------------- */

/* Makes lane i usable: 1 ready, 0 someone alive is formatting it, < 0 error.
 * The state word carries the formatter's owner word meanwhile, so a lane whose
 * formatter died is formatted again by the next taker (nothing else touched
 * its pages before the state said ready). */
static int lane_format(shmr_mpq *q, uint32_t i, uint64_t me)
{
    struct shmr_lane_block *lb = &q->lb[i];
    uint64_t st = shmr_load_acquire64(&lb->state);
    for (;;) {
        if (st == SHMR_LANE_READY)
            return 1;
        if (st != 0 && shmr_owner_liveness(st, 0) != SHMR_DEAD)
            return 0;
        if (shmr_cas_seqcst64(&lb->state, &st, me))
            break;
    }
    uint8_t *base = lane_base(q, i);
    /* its pages now, so a full /dev/shm is an error here and never a SIGBUS later */
    int rc = posix_fallocate(q->fd, (off_t)(base - q->base), (off_t)q->lane_stride);
    if (rc) {
        shmr_store_release64(&lb->state, 0);
        return -rc;
    }
    shmr_params lp = lane_params(q->lane_units, q->max_consumers);
    shmr_image_format(base, &lp, me);
    /* after the whole image; pairs with the acquire load in lane_ready() */
    shmr_store_release64(&lb->state, SHMR_LANE_READY);
    return 1;
}

static void raise_lanes_used(shmr_mpq *q, uint64_t n)
{
    uint64_t cur = shmr_load_acquire64(&q->hdr->shared.lanes_used);
    /* an atomic max; before the lane's first publish, so a getter that sees
     * the item's head has seen the lane counted (pairs with shmr_mpq_lanes_used) */
    while (cur < n && !shmr_cas_seqcst64(&q->hdr->shared.lanes_used, &cur, n))
        ;
}

/* The caller holds lane i's producer role: items its dead predecessor
 * admitted but never published are lost; admitted becomes what was published.
 * Relaxed: the role holder is the only writer of admitted and lost. */
static uint64_t lane_repair(shmr_mpq *q, uint32_t i, shmr_ring *r)
{
    struct shmr_lane_block *lb = &q->lb[i];
    uint64_t a = shmr_load_relaxed64(&lb->admitted), m = shmr_load_relaxed64(&r->prod->msgs);
    if (a <= m)
        return 0;
    shmr_store_relaxed64(&lb->lost, shmr_load_relaxed64(&lb->lost) + (a - m));
    shmr_store_relaxed64(&lb->admitted, m);
    shmr_ec_notify(&q->hdr->space_ec); /* room for putters */
    shmr_ec_notify(&q->hdr->join_ec);  /* fewer unfinished tasks */
    return a - m;
}

int shmr_mpq_producer_open(shmr_mpq *q, shmr_ring **ring, shmr_producer **out, uint32_t *lane)
{
    uint64_t me = shmr_self_owner();
    for (uint32_t i = 0; i < q->lanes; i++) {
        /* a lane held by a live producer is skipped before its pages are looked at */
        if (lane_ready(q, i)) {
            struct shmr_ctl *ctl = (struct shmr_ctl *)(lane_base(q, i) + OFF_CTL);
            uint64_t owner = shmr_load_acquire64(&ctl->producer_owner);
            if (owner != 0 && shmr_owner_liveness(owner, shmr_load_acquire64(&ctl->producer_pidns)) != SHMR_DEAD)
                continue;
        }
        int rc = lane_format(q, i, me);
        if (rc < 0)
            return rc;
        if (rc == 0)
            continue;
        shmr_ring *r;
        if ((rc = shmr_mpq_lane_open(q, i, &r)))
            return rc;
        shmr_producer *p;
        r->populate_bytes = 0;
        rc = shmr_producer_open(r, &p);
        if (rc == -SHMR_EPRODUCER) {
            shmr_detach(r);
            continue;
        }
        if (rc) {
            shmr_detach(r);
            return rc;
        }
        lane_repair(q, i, r);
        p->ticket = &q->hdr->ticket.next;
        raise_lanes_used(q, (uint64_t)i + 1);
        shmr_mpq_joined(q); /* after the owner CAS and lanes_used: see there */
        *ring = r;
        *out = p;
        *lane = i;
        return 0;
    }
    return -SHMR_ELANES;
}

/* ---- counting ----------------------------------------------------------- */

static uint64_t admitted_sum(const shmr_mpq *q, uint32_t used)
{
    uint64_t a = 0;
    for (uint32_t i = 0; i < used; i++)
        a += shmr_load_relaxed64(&q->lb[i].admitted);
    return a;
}

struct q_counts {
    uint64_t published, taken, abandoned, bytes;
};

/* Sums over the lanes in use. taken is read before published, so a count
 * taken during the read cannot make items negative by more than it moved. */
static struct q_counts q_counts(shmr_mpq *q)
{
    struct q_counts c = {0, 0, 0, 0};
    uint32_t used = shmr_mpq_lanes_used(q);
    for (uint32_t i = 0; i < used; i++) {
        shmr_ring r;
        memset(&r, 0, sizeof r);
        if (lane_bind(q, i, &r))
            continue;
        for (uint32_t k = 0; k < r.max_consumers; k++) {
            uint64_t ab = shmr_load_relaxed64(&r.cslots[k].abandoned);
            c.taken += shmr_load_relaxed64(&r.cslots[k].popped) + ab;
            c.abandoned += ab;
        }
        uint64_t t = shmr_load_relaxed64(&r.tail_block->tail);
        uint64_t h = shmr_load_acquire64(&r.prod->head); /* pairs with shmr_q_publish() */
        c.published += shmr_load_relaxed64(&r.prod->msgs);
        c.bytes += h > t ? (h - t) * SHMR_MSG_UNIT : 0;
    }
    return c;
}

uint64_t shmr_mpq_items(shmr_mpq *q)
{
    struct q_counts c = q_counts(q);
    return c.published > c.taken ? c.published - c.taken : 0;
}

int shmr_mpq_admit(shmr_mpq *q, uint32_t lane, uint64_t n, uint64_t *consumed)
{
    struct shmr_lane_block *mine = &q->lb[lane];
    shmr_store_relaxed64(&mine->admitted, shmr_load_relaxed64(&mine->admitted) + n);
    if (q->maxsize <= 0)
        return 1;
    /* pairs with the same fence of every other admitter (see the top) */
    shmr_fence_seqcst();
    uint64_t a = admitted_sum(q, shmr_mpq_lanes_used(q));
    if (a <= *consumed + (uint64_t)q->maxsize)
        return 1;
    *consumed = q_counts(q).taken;
    if (a <= *consumed + (uint64_t)q->maxsize)
        return 1;
    shmr_mpq_unadmit(q, lane, n);
    return 0;
}

void shmr_mpq_unadmit(shmr_mpq *q, uint32_t lane, uint64_t n)
{
    struct shmr_lane_block *mine = &q->lb[lane];
    shmr_store_relaxed64(&mine->admitted, shmr_load_relaxed64(&mine->admitted) - n);
    /* a racing admitter may have counted ours and gone to sleep: it re-checks */
    shmr_ec_notify(&q->hdr->space_ec);
    shmr_ec_notify(&q->hdr->join_ec);
}

struct room_wanted {
    shmr_mpq *q;
    uint64_t n;
};

static int room_ready(void *arg)
{
    struct room_wanted *w = arg;
    uint64_t a = admitted_sum(w->q, shmr_mpq_lanes_used(w->q));
    return a + w->n <= q_counts(w->q).taken + (uint64_t)w->q->maxsize;
}

int shmr_mpq_wait_room(shmr_mpq *q, uint64_t n, int64_t timeout_ns, int64_t spin_ns)
{
    struct room_wanted w = {q, n};
    return shmr_ec_wait(&q->hdr->space_ec, room_ready, &w, timeout_ns, spin_ns);
}

int shmr_mpq_has_data(shmr_mpq *q)
{
    uint32_t used = shmr_mpq_lanes_used(q);
    for (uint32_t i = 0; i < used; i++) {
        if (!lane_ready(q, i))
            continue;
        uint8_t *b = lane_base(q, i);
        struct shmr_prod_block *prod = (struct shmr_prod_block *)(b + OFF_PROD);
        struct shmr_tail_block *tail = (struct shmr_tail_block *)(b + OFF_TAIL);
        /* as shmr_q_consumer_ready; a closed lane is merely empty here */
        uint64_t h = shmr_load_acquire64(&prod->head); /* pairs with shmr_q_publish() */
        if (shmr_load_relaxed64(&tail->tail) < h)
            return 1;
    }
    return 0;
}

static int data_ready(void *arg) { return shmr_mpq_has_data(arg); }

/* The ticket of lane i's oldest item not yet taken, and where that lane's
 * items start (its tail); 0 when it has none.
 *
 * A lane whose tail has not moved since this handle last found an item there
 * still starts with that item: only a claim moves the tail past a frame, a
 * frame is overwritten only after it was claimed and released, the tail is
 * free-running (never the same value twice) and a lane is formatted once. So
 * the ticket read then is the ticket a read now would find, and the lane costs
 * one load of its tail, not a load of its head (a line its producer writes on
 * every publish) and of the frame. With 20 lanes in use the peeks were more
 * than half of a get's instructions (benchmarks/README.md). A tail read late
 * can only make the lane look older than it is (its tickets grow with the
 * position): never empty, never newer, so no older item is passed over; a
 * claim that then finds the item gone has read the newer tail, and the next
 * pick reads the lane afresh. */
static int peek_lane(shmr_mpq *q, uint32_t i, uint64_t *ticket, uint64_t *tail)
{
    shmr_ring *r = &q->views[i];
    if (!r->base && lane_bind(q, i, r)) {
        r->base = NULL;
        return 0;
    }
    struct lane_seen *s = &q->seen[i];
    uint64_t t = shmr_load_relaxed64(&r->tail_block->tail);
    *tail = t;
    if (t == s->tail && s->ticket != UINT64_MAX) {
        *ticket = s->ticket;
        return 1;
    }
    uint64_t h = shmr_load_acquire64(&r->prod->head); /* pairs with shmr_q_publish() */
    uint64_t next;
    if (!shmr_m_peek(r, t, h, ticket, &next))
        return 0;
    s->tail = t;
    s->ticket = *ticket;
    return 1;
}

/* Gets take the oldest item first, by ticket: a put that began after another
 * put returned (in any process) took a larger ticket, so its item comes out
 * later, as through one pipe: the usual "join the producers, then put one
 * sentinel per consumer" ends every consumer after everything was got.
 *
 * Lanes are read one after another, so a pass may see a newer item in one lane
 * and miss an older one in a lane it read before that one was published. A
 * second pass sees every item published before anything the first pass saw,
 * so a minimum found twice in a row is the oldest (bounded: under a stream of
 * gets it may move on every pass). The second pass is needed only for an item
 * whose put began after the pass did: the pass first reads the ticket counter
 * (acquire), and for an item with a smaller ticket, whose fetch_add that read
 * synchronizes with, every put that returned before its put began was
 * published before the pass read any lane, so the pass saw it. Under a steady
 * stream the oldest item is older than the pass, and one pass is enough. The
 * batch is the lane's items older than every other lane's oldest. */
int shmr_mpq_pick(shmr_mpq *q, uint64_t max, uint32_t *lane, uint64_t *count)
{
    uint64_t prev = UINT64_MAX, best = UINT64_MAX, second = UINT64_MAX, tail = 0;
    uint32_t bl = 0;
    for (int pass = 0; pass < 4; pass++) {
        SHMR_HOOK(SHMR_HOOK_PICK_PASS);
        /* pairs with the release fetch_add of every put (messages.c) */
        uint64_t began = shmr_load_acquire64(&q->hdr->ticket.next);
        /* After the counter, every pass: a lane a producer counted before a put
         * we must not pass over (one that returned before a ticket below began
         * was taken) is counted here. Read once before the passes, a lane
         * counted meanwhile was missed with its older item (verify/qpick.pml). */
        uint32_t used = shmr_mpq_lanes_used(q);
        best = second = UINT64_MAX;
        for (uint32_t i = 0; i < used; i++) {
            uint64_t t, ta;
            if (!peek_lane(q, i, &t, &ta))
                continue;
            if (t < best) {
                second = best;
                best = t;
                bl = i;
                tail = ta;
            } else if (t < second) {
                second = t;
            }
        }
        if (best == UINT64_MAX)
            return 0;
        /* not "one lane in use": used may be short of a lane counted after
         * the counter read, whose item is older than best */
        if (best == prev || best < began)
            break;
        prev = best;
    }
    uint64_t n = 0, pos = tail, cum;
    shmr_ring *r = &q->views[bl];
    /* the lane's item at tail was published, so head > tail; pairs with shmr_q_publish() */
    uint64_t head = shmr_load_acquire64(&r->prod->head);
    while (n < max && shmr_m_peek(r, pos, head, &cum, &pos) && (n == 0 || cum < second))
        n++;
    q->picked_more = second != UINT64_MAX || pos < head;
    *lane = bl;
    *count = n ? n : 1;
    return 1;
}

void shmr_mpq_taken(shmr_mpq *q)
{
    /* one publish woke one getter (lane_bind): items it left are another's */
    if (q->picked_more)
        shmr_ec_notify_n(&q->hdr->data_ec, 1);
    if (q->maxsize > 0)
        shmr_ec_notify(&q->hdr->space_ec); /* room under maxsize */
}

void shmr_mpq_leave(shmr_mpq *q)
{
    /* a getter woken for an item that gives up (timeout, cancel) passes the wake on */
    if (shmr_load_relaxed32(&q->hdr->data_ec.waiters) && shmr_mpq_has_data(q))
        shmr_ec_notify_n(&q->hdr->data_ec, 1);
}

/* A getter's spin watches the ticket word, one line that moves only when some
 * put begins, and scans the lanes when it moves (and every 64 rounds, for a put
 * that took its ticket before the last scan and published after it): spinning
 * on every lane's head would pull each producer's head line away from it on
 * every round. Only the spin takes this shortcut; the sleep path (shmr_ec_wait)
 * checks every lane after counting itself in, as its proof needs. */
static int spin_for_data(shmr_mpq *q, int64_t timeout_ns, int64_t spin_ns)
{
    int64_t until = shmr_mono_ns() + (timeout_ns > 0 && timeout_ns < spin_ns ? timeout_ns : spin_ns);
    /* relaxed: a hint; whatever it shows, shmr_mpq_has_data decides */
    uint64_t seen = shmr_load_relaxed64(&q->hdr->ticket.next);
    for (uint32_t i = 1;; i++) {
        uint64_t t = shmr_load_relaxed64(&q->hdr->ticket.next);
        if ((t != seen || (i & 63) == 0) && shmr_mpq_has_data(q))
            return 1;
        seen = t;
        shmr_cpu_relax();
        if ((i & 63) == 0 && shmr_mono_ns() >= until)
            return 0;
    }
}

int shmr_mpq_wait_data(shmr_mpq *q, int64_t timeout_ns, int64_t spin_ns)
{
    if (shmr_mpq_has_data(q))
        return 0;
    if (timeout_ns == 0)
        return -ETIMEDOUT;
    if (spin_ns > 0) {
        int64_t start = shmr_mono_ns();
        if (spin_for_data(q, timeout_ns, spin_ns))
            return 0;
        for (int i = 0; i < 4; i++) { /* as shmr_ec_wait after its spin */
            sched_yield();
            if (shmr_mpq_has_data(q))
                return 0;
        }
        if (timeout_ns > 0 && (timeout_ns -= shmr_mono_ns() - start) <= 0)
            return -ETIMEDOUT;
    }
    return shmr_ec_wait(&q->hdr->data_ec, data_ready, q, timeout_ns, 0);
}

/* ---- JoinableQueue ------------------------------------------------------ */

int shmr_mpq_task_done(shmr_mpq *q)
{
    uint64_t d = shmr_load_relaxed64(&q->hdr->shared.done);
    for (;;) {
        /* items are admitted before they are published, so every item a
         * consumer got is in this sum */
        if (d + 1 > admitted_sum(q, shmr_mpq_lanes_used(q)))
            return -ERANGE;
        if (shmr_cas_seqcst64(&q->hdr->shared.done, &d, d + 1))
            break;
    }
    shmr_ec_notify(&q->hdr->join_ec);
    return 0;
}

/* Items whose consumer died before it had them are never task_done()'d:
 * they count as finished, or join() would wait for them forever. */
uint64_t shmr_mpq_unfinished(shmr_mpq *q)
{
    uint64_t ab = q_counts(q).abandoned;
    uint64_t done = shmr_load_relaxed64(&q->hdr->shared.done);
    uint64_t a = admitted_sum(q, shmr_mpq_lanes_used(q));
    return a > done + ab ? a - done - ab : 0;
}

static int joined(void *arg) { return shmr_mpq_unfinished(arg) == 0; }

int shmr_mpq_wait_join(shmr_mpq *q, int64_t timeout_ns, int64_t spin_ns)
{
    return shmr_ec_wait(&q->hdr->join_ec, joined, q, timeout_ns, spin_ns);
}

/* ---- liveness ----------------------------------------------------------- */

uint64_t shmr_mpq_recover(shmr_mpq *q)
{
    uint64_t fixed = 0, me = shmr_self_owner();
    uint32_t used = shmr_mpq_lanes_used(q);
    for (uint32_t i = 0; i < used; i++) {
        shmr_ring r;
        memset(&r, 0, sizeof r);
        if (lane_bind(q, i, &r))
            continue;
        uint64_t reclaimed = 0;
        fixed += (uint64_t)shmr_sweep(&r, &reclaimed);
        /* a producer that died between admitting and publishing: its role is
         * taken just long enough to repair the counts, as a new producer would */
        if (shmr_load_relaxed64(&q->lb[i].admitted) <= shmr_load_relaxed64(&r.prod->msgs))
            continue;
        if (shmr_claim_owner(&r.ctl->producer_owner, &r.ctl->producer_pidns, me) != 0)
            continue;
        fixed += lane_repair(q, i, &r);
        uint64_t mine = me;
        shmr_cas_seqcst64(&r.ctl->producer_owner, &mine, 0);
    }
    if (fixed) {
        shmr_ec_notify(&q->hdr->join_ec);
        shmr_ec_notify(&q->hdr->space_ec); /* abandoned or lost items leave room under maxsize */
        /* a consumer swept may have been the getter a put's single wake
         * reached, killed before it lowered wake_owed: every getter re-checks
         * (one that then gives up lowers it, shmr_ec_disarm) */
        shmr_ec_notify(&q->hdr->data_ec);
    }
    return fixed;
}

int64_t shmr_mpq_peers(shmr_mpq *q, uint64_t *out, uint32_t cap)
{
    uint32_t n = 0;
    uint64_t ns = shmr_self_pidns();
    /* lanes_used and the owner words: acquire loads that pair with the
     * seq_cst CASes a joiner makes before its notify (shmr_mpq_joined) */
    uint32_t used = shmr_mpq_lanes_used(q);
    for (uint32_t i = 0; i < used; i++) {
        shmr_ring r;
        memset(&r, 0, sizeof r);
        if (lane_bind(q, i, &r))
            continue; /* being formatted: its producer joins (and notifies) once it is ready */
        int rc = shmr_peer_add(shmr_load_acquire64(&r.ctl->producer_owner),
                               shmr_load_acquire64(&r.ctl->producer_pidns), ns, out, cap, &n);
        for (uint32_t k = 0; !rc && k < r.max_consumers; k++)
            rc = shmr_peer_add(shmr_load_acquire64(&r.cslots[k].owner), shmr_load_acquire64(&r.cslots[k].pidns), ns,
                               out, cap, &n);
        if (rc)
            return rc;
    }
    return (int64_t)n;
}

/* Getters and putters awaiting in event loops watch their peers' processes
 * (shmr_mpq_peers) instead of polling, so a process that takes a lane or a
 * consumer slot wakes them all to re-read the set (a join is rare). The pair
 * is the eventcount's: the joiner's owner CAS (and lanes_used CAS), then this
 * notify's barrier and load of waiters / the waiter's count in and barrier
 * (shmr_ec_arm), then its reads in shmr_mpq_peers. Either the waiter reads
 * the joiner, or the joiner sees it counted and moves the epoch its wait was
 * submitted with, which ends that wait at once. A joiner that dies before the
 * waiter re-reads is still recorded then (only a recovery removes it, and
 * that recovery did the dead one's repairs), and the waiter's pidfd of a
 * dead process sends it to its recovery at once. Blocking getters and
 * putters are not woken (shmr_ec_notify_loops): their slices recover. */
void shmr_mpq_joined(shmr_mpq *q)
{
    shmr_ec_notify_loops(&q->hdr->data_ec);
    shmr_ec_notify_loops(&q->hdr->space_ec);
}

int shmr_mpq_stats(shmr_mpq *q, shmr_mpq_info *o)
{
    memset(o, 0, sizeof *o);
    struct shmr_qheader *h = q->hdr;
    o->lanes = q->lanes;
    o->lanes_used = shmr_mpq_lanes_used(q);
    o->max_consumers = q->max_consumers;
    o->layout_version = h->version;
    o->maxsize = q->maxsize;
    o->lane_bytes = q->lane_units * SHMR_MSG_UNIT;
    o->segment_size = q->size;
    struct q_counts c = q_counts(q);
    o->items = c.published > c.taken ? c.published - c.taken : 0;
    o->bytes = c.bytes;
    o->put = c.published;
    o->got = c.taken - c.abandoned;
    o->abandoned = c.abandoned;
    o->admitted = admitted_sum(q, o->lanes_used);
    o->done = shmr_load_relaxed64(&h->shared.done);
    for (uint32_t i = 0; i < o->lanes_used; i++) {
        o->lost += shmr_load_relaxed64(&q->lb[i].lost);
        shmr_ring r;
        memset(&r, 0, sizeof r);
        if (lane_bind(q, i, &r))
            continue;
        uint64_t owner = shmr_load_acquire64(&r.ctl->producer_owner);
        if (owner && shmr_owner_liveness(owner, shmr_load_acquire64(&r.ctl->producer_pidns)) != SHMR_DEAD)
            o->producers++;
        uint32_t n = shmr_consumer_count(&r);
        if (n > o->consumers)
            o->consumers = n;
    }
    o->creator_pid = h->creator_pid;
    o->create_time_ns = h->create_time_ns;
    return 0;
}

void shmr_mpq_wake_all(shmr_mpq *q)
{
    shmr_ec_notify_always(&q->hdr->data_ec);
    shmr_ec_notify_always(&q->hdr->space_ec);
    shmr_ec_notify_always(&q->hdr->join_ec);
    uint32_t used = shmr_mpq_lanes_used(q);
    for (uint32_t i = 0; i < used; i++) /* a putter waiting for room in its lane */
        if (lane_ready(q, i))
            shmr_ec_notify_always((struct shmr_ec *)(lane_base(q, i) + OFF_SPACE_EC));
}

/* ---- event-loop waits (shmring.aio): shmr_mpq_wait_data / _room taken apart
 * as shmr_ec_arm describes; the same eventcounts and conditions, unmarked as
 * those waits are ---------------------------------------------------------- */

int shmr_mpq_arm_data(shmr_mpq *q, void **word, uint32_t *seen)
{
    *word = (void *)&q->hdr->data_ec.epoch;
    return shmr_ec_arm(&q->hdr->data_ec, NULL, data_ready, q, seen);
}

void shmr_mpq_disarm_data(shmr_mpq *q) { shmr_ec_disarm(&q->hdr->data_ec, NULL); }

int shmr_mpq_room_ready(shmr_mpq *q, uint64_t n)
{
    struct room_wanted w = {q, n};
    return q->maxsize <= 0 || room_ready(&w);
}

int shmr_mpq_arm_room(shmr_mpq *q, uint64_t n, void **word, uint32_t *seen)
{
    struct room_wanted w = {q, n}; /* read by room_ready inside the call only */
    if (q->maxsize <= 0)
        return 1;
    *word = (void *)&q->hdr->space_ec.epoch;
    return shmr_ec_arm(&q->hdr->space_ec, NULL, room_ready, &w, seen);
}

void shmr_mpq_disarm_room(shmr_mpq *q) { shmr_ec_disarm(&q->hdr->space_ec, NULL); }
