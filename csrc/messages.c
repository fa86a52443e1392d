/*
 * Message rings: messages of any size in a ring of 16-byte units.
 *
 * A message is one contiguous frame: a 32-byte header (struct shmr_frame:
 * its position, kind and body length, its sequence number and the body bytes
 * published before it) and the body, rounded up to whole units. A frame that
 * would run past the end of the ring is preceded by a padding frame (one
 * header unit, kind 0) that fills the rest of the lap and is published
 * together with the message after it; so every body is contiguous and a
 * zero-copy view is one pointer. Placement must succeed from any position,
 * which bounds a frame at half the ring (shmr_msg_max).
 *
 * Positions count units, and the queue and broadcast machinery run unchanged
 * on them: head/tail/cursors/intent/writable_end, the claim records, the tail
 * CAS, the eventcounts, sweeping. What is particular to messages:
 *
 * - Queue mode keeps its release records inside the ring: the first two words
 *   of a frame header have the layout of struct shmr_release_rec, and a
 *   consumer that is done with a batch overwrites the header of the batch's
 *   first frame with the release record (tag = pos + cap). The producer walks
 *   them exactly as for records (r->releases points at the units), and writes
 *   a frame only over units it has walked past. No side array: a ring of
 *   small messages would otherwise spend 16 bytes of release record per unit.
 * - A queue consumer reads the headers from tail onward to size its claim,
 *   but trusts them only once its tail CAS succeeded: while tail still equals
 *   the position it read from, none of those frames was released, so none
 *   can have been overwritten (tail only grows, so there is no ABA).
 * - Broadcast-overwrite: a reader validates every header before it follows
 *   its length (acquire fence, then intent <= pos + cap); a lapped reader
 *   jumps to prod->oldest, the oldest frame the producer has not begun to
 *   overwrite, and its loss is the difference of the sequence numbers and
 *   byte counts in the headers: exact in messages and in bytes.
 *
 * Pairs (beyond those of queue.c and broadcast.c, which carry over):
 *   frame headers: relaxed atomic stores by the producer before its release
 *                  store of head / relaxed loads by consumers after their
 *                  acquire load of head (overwrite: validated by the
 *                  acquire fence + intent re-read, as broadcast.c's b_torn)
 *   oldest:        release store in m_advance_oldest, before the announcement
 *                  (seq_cst join_claim store) / acquire load in m_jump and
 *                  m_join after reading intent or join_claim
 *   last_frame:    relaxed store before the release store of head / relaxed
 *                  load after an acquire load of head in m_join
 *
 * In a queue lane (mpqueue.c) a frame's cum word holds the item's ticket
 * instead of a byte count; queue mode never reads cum otherwise.
 */
#include <errno.h>
#include <string.h>

#include "eventcount.h"
#include "shmr_internal.h"

#define KIND_PAD 0u
#define UNIT SHMR_MSG_UNIT
#define HDR_UNITS (sizeof(struct shmr_frame) / UNIT)

static inline struct shmr_frame *frame_at(const shmr_ring *r, uint64_t pos)
{
    return (struct shmr_frame *)(r->slots + (pos & r->mask) * UNIT);
}

static inline uint64_t body_units(uint64_t len) { return (len + UNIT - 1) / UNIT; }
static inline uint64_t frame_units(uint64_t len) { return HDR_UNITS + body_units(len); }
static inline uint64_t pad_units(const shmr_ring *r, uint64_t pos) { return r->cap - (pos & r->mask); }

uint64_t shmr_msg_max(const shmr_ring *r) { return (r->cap / 2 - HDR_UNITS) * UNIT; }

/* A header as read by a consumer; ok = 0 when it cannot be a frame at pos. */
struct hdr {
    uint64_t tag, kind, len, seq, cum, units;
    int ok;
};

static inline struct hdr read_hdr(const shmr_ring *r, uint64_t pos)
{
    struct shmr_frame *f = frame_at(r, pos);
    struct hdr h;
    h.tag = shmr_load_relaxed64(&f->tag);
    uint64_t info = shmr_load_relaxed64(&f->info);
    h.kind = info & 0xff;
    h.len = info >> 8;
    h.ok = h.tag == pos;
    if (h.kind == KIND_PAD) {
        h.units = pad_units(r, pos);
        h.seq = h.cum = 0;
        return h;
    }
    h.seq = shmr_load_relaxed64(&f->seq);
    h.cum = shmr_load_relaxed64(&f->cum);
    /* bounds: a frame never exceeds half the ring and never wraps */
    h.units = h.len <= shmr_msg_max(r) ? frame_units(h.len) : 0;
    if (h.units == 0 || h.units > pad_units(r, pos))
        h.ok = 0;
    return h;
}

/* Broadcast-overwrite: the header just read at pos was not being overwritten.
 * The acquire fence pairs with the producer's release fence after it
 * announces intent (broadcast.c announce): if the loads above saw any newer
 * write, the intent load sees its announcement. */
static inline int hdr_unchanged(const shmr_ring *r, uint64_t pos)
{
    shmr_fence_acquire();
    return shmr_load_relaxed64(&r->prod->intent) <= pos + r->cap;
}

/* In block mode nothing a consumer holds a cursor on is overwritten. */
static inline int hdr_intact(const shmr_ring *r, uint64_t pos)
{
    return r->overflow != SHMR_OVERFLOW_OVERWRITE || hdr_unchanged(r, pos);
}

/* ---- producer ------------------------------------------------------------ */

void shmr_m_producer_open(shmr_producer *p)
{
    shmr_ring *r = p->r;
    p->pend = p->pend_msgs = p->pend_bytes = 0;
    p->msgs = shmr_load_relaxed64(&r->prod->msgs);
    p->bytes = shmr_load_relaxed64(&r->prod->bytes);
    p->oldest = shmr_load_acquire64(&r->prod->oldest);
    if (p->oldest > p->head)
        p->oldest = p->head;
    /* Off by default: the padding a rewind leaves holds the rest of the lap
     * until a consumer takes the frame after it, so a producer whose
     * consumers do not run meanwhile (one thread that puts some items, then
     * gets them) would find a window of room instead of the ring, and block
     * with the ring nearly empty. Turned on per producer (shmr_msg_set_rewind)
     * where the consumers are known to keep up. */
    shmr_msg_set_rewind(p, 0);
}

/* Broadcast: before positions below limit are overwritten, move oldest past
 * the frames that lie there (our own frames of the previous lap, intact until
 * we write). oldest always names a message frame or head. */
static void m_advance_oldest(shmr_producer *p, uint64_t limit)
{
    shmr_ring *r = p->r;
    uint64_t o = p->oldest;
    if (o >= limit)
        return;
    while (o < limit && o < p->head) {
        struct shmr_frame *f = frame_at(r, o);
        uint64_t info = shmr_load_relaxed64(&f->info);
        uint64_t u = (info & 0xff) == KIND_PAD ? pad_units(r, o) : frame_units(info >> 8);
        o += u;
    }
    /* a padding frame is always followed by the message published with it */
    if (o < p->head && (shmr_load_relaxed64(&frame_at(r, o)->info) & 0xff) == KIND_PAD)
        o += pad_units(r, o);
    if (o > p->head)
        o = p->head; /* a reservation that never got published */
    p->oldest = o;
    /* before the announcement that lets these frames be overwritten: a joiner
     * that reads join_claim (seq_cst) then oldest sees at least this value */
    shmr_store_release64(&r->prod->oldest, o);
}

static void write_hdr(shmr_ring *r, uint64_t pos, uint64_t kind, uint64_t len, uint64_t seq, uint64_t cum)
{
    struct shmr_frame *f = frame_at(r, pos);
    /* relaxed atomics: an overwrite-mode reader may load these concurrently */
    shmr_store_relaxed64(&f->tag, pos);
    shmr_store_relaxed64(&f->info, len << 8 | kind);
    if (kind != KIND_PAD) {
        shmr_store_relaxed64(&f->seq, seq);
        shmr_store_relaxed64(&f->cum, cum);
    }
}

/* Queue mode: a padding frame placed early, so that the ring's working set
 * stays small while consumers keep up.
 *
 * A producer that writes every lap in full cycles the whole ring (8 MiB per
 * shmring.Queue lane) through the caches: each frame lands on lines written a
 * lap ago, long evicted, and each consumer reads lines the other core wrote
 * as long ago. So once a frame would end past rewind_units bytes into the
 * lap, and the start of the ring is free again now, the producer pads to the
 * end of the lap and writes at offset 0: the lines it writes are those the
 * consumer read a moment ago. When the start is not free (a consumer fell
 * behind: "free" is up to a window into the lap, see below), the frame goes
 * where it always went and the whole ring is used;
 * the next try is a quarter window later, so a lagging consumer costs the
 * producer one release-record load per quarter window, not one per put.
 *
 * This changes where the producer places frames, not the protocol: a padding
 * frame may already stand at any offset (one is placed wherever a frame does
 * not fit the rest of the lap), it always runs to the end of the lap
 * (pad_units from its own position, which every reader computes the same
 * way: read_hdr for the queue claim, shmr_m_count for the sweep of a dead
 * consumer's claim, shmr_m_peek for a Queue's pick), and it is published by
 * the same head store as the frame after it. The room it needs is what any
 * padded placement needs: the walk of release records up to the end of the
 * new frame (shmr_q_writable), so nothing unreleased is overwritten; release
 * records cover the padding's units as part of their batch. verify/messages.pml
 * checks it (-DREWIND: a padding frame placed at any offset whenever the
 * room is there). Queue mode only: a broadcast ring keeps its full lap as
 * history for late joiners and lapped overwrite readers, and its loss
 * accounting reads the frames of the previous lap (m_advance_oldest). */
static uint64_t m_rewind_pad(shmr_producer *p, uint64_t pos, uint64_t u)
{
    shmr_ring *r = p->r;
    uint64_t off = pos & r->mask;
    /* the window holds at least four frames of this size, so the producer
     * can still run a few messages ahead of the consumer */
    uint64_t win = p->rewind_units > 4 * u ? p->rewind_units : 4 * u;
    if (!p->rewind_units || off == 0 || off + u <= win || win > r->cap / 2 || pos < p->rewind_next)
        return 0;
    uint64_t pad = r->cap - off;
    if (p->pend + pad + u > r->cap)
        return 0;
    /* "free" = released up to a window into the lap (or up to here, if this
     * frame starts short of the window): the consumers are within a frame or
     * two of the producer, and a pause right after the rewind still leaves
     * the producer a window of room */
    uint64_t ahead = off < win ? off : win;
    uint64_t need = shmr_min_u64(p->pend + pad + (ahead > u ? ahead : u), r->cap);
    if (shmr_q_writable(p, need) >= need)
        return pad;
    p->rewind_next = pos + (win >> 2);
    return 0;
}

void shmr_msg_set_rewind(shmr_producer *p, uint64_t nbytes)
{
    shmr_ring *r = p->r;
    /* A padding frame left by a rewind holds the rest of the lap until a
     * consumer takes the message after it: a consumer that pauses right
     * after a rewind leaves the producer about a window of room, not the
     * ring. So the window is at most a quarter of the ring, and off in
     * rings too small for that to leave a useful window. */
    uint64_t u = nbytes / UNIT;
    p->rewind_units = r->mode == SHMR_MODE_QUEUE && u && u <= r->cap / 4 ? u : 0;
    p->rewind_next = 0;
}

uint64_t shmr_msg_lap_offset(const shmr_producer *p) { return ((p->head + p->pend) & p->r->mask) * UNIT; }

int shmr_msg_reserve(shmr_producer *p, uint32_t kind, uint64_t len, void **body)
{
    shmr_ring *r = p->r;
    if (kind == KIND_PAD || kind > 0xff)
        return -EINVAL;
    if (len > shmr_msg_max(r))
        return -EMSGSIZE;
    uint64_t pos = p->head + p->pend;
    uint64_t u = frame_units(len);
    uint64_t pad = u > pad_units(r, pos) ? pad_units(r, pos) : m_rewind_pad(p, pos, u);
    uint64_t need = p->pend + pad + u; /* <= cap: pend was placed, pad + u < cap */
    if (need > r->cap)
        return 0; /* publish what is pending first */
    if (r->mode == SHMR_MODE_QUEUE) {
        if (shmr_q_writable(p, need) < need)
            return 0;
    } else {
        if (shmr_b_writable(p, need) < need)
            return 0;
        if (p->head + need > r->cap)
            m_advance_oldest(p, p->head + need - r->cap);
        if (shmr_b_announce(p, need) < need)
            return 0; /* a joiner cut the room; its announcement stays harmless */
    }
    if (pad) {
        write_hdr(r, pos, KIND_PAD, 0, 0, 0);
        pos += pad;
    }
    /* A queue lane's frames carry a ticket from the queue-wide counter where
     * other rings keep the byte count (which only broadcast consumers read):
     * relaxed, as only the counter's own order matters; a put that began
     * after another returned takes a larger ticket (mpqueue.c pick). */
    /* release: pairs with the acquire load of the counter in shmr_mpq_pick, so a
     * getter that reads a count past this ticket sees what this put's thread
     * published before it (its earlier puts, and any put that returned to it) */
    uint64_t cum = p->ticket ? shmr_fetch_add_release64(p->ticket, 1) : p->bytes + p->pend_bytes;
    write_hdr(r, pos, kind, len, p->msgs + p->pend_msgs, cum);
    p->last_pend = pos;
    p->pend = need;
    p->pend_msgs++;
    p->pend_bytes += len;
    *body = frame_at(r, pos) + 1;
    return 1;
}

uint64_t shmr_msg_commit(shmr_producer *p)
{
    shmr_ring *r = p->r;
    uint64_t n = p->pend_msgs;
    if (n == 0)
        return 0;
    p->msgs += n;
    p->bytes += p->pend_bytes;
    shmr_store_relaxed64(&r->prod->msgs, p->msgs);
    shmr_store_relaxed64(&r->prod->bytes, p->bytes);
    shmr_store_relaxed64(&r->prod->last_frame, p->last_pend); /* made visible by the head store */
    uint64_t k = p->pend;
    p->pend = p->pend_msgs = p->pend_bytes = 0;
    if (r->mode == SHMR_MODE_QUEUE)
        shmr_q_publish(p, k);
    else
        shmr_b_publish(p, k);
    return n;
}

void shmr_msg_cancel(shmr_producer *p) { p->pend = p->pend_msgs = p->pend_bytes = 0; }

/* The producer can place a frame of want units (after what is pending). */
static int m_producer_ready(void *arg)
{
    shmr_producer *p = arg;
    uint64_t pos = p->head + p->pend;
    uint64_t pad = p->want > pad_units(p->r, pos) ? pad_units(p->r, pos) : 0;
    uint64_t need = p->pend + pad + p->want;
    if (p->r->mode == SHMR_MODE_QUEUE)
        return shmr_q_writable(p, need) >= need;
    return shmr_b_writable(p, need) >= need;
}

int shmr_msg_producer_wait(shmr_producer *p, uint64_t len, int64_t timeout_ns, int64_t spin_ns)
{
    if (len > shmr_msg_max(p->r))
        return -EMSGSIZE;
    p->want = frame_units(len);
    return shmr_spin_wait(&p->spin, p->r, 1, p->r->space_ec, NULL, m_producer_ready, p, timeout_ns, spin_ns);
}

/* Event-loop waits of a message producer: progress means room for a message
 * of len body bytes. One that can never fit is "ready": the push that follows
 * raises the size error instead of waiting for good. */
int shmr_msg_producer_arm(shmr_producer *p, uint64_t len, void **word, uint32_t *seen)
{
    if (len > shmr_msg_max(p->r))
        return 1;
    p->want = frame_units(len);
    *word = (void *)&p->r->space_ec->epoch;
    return shmr_ec_arm(p->r->space_ec, NULL, m_producer_ready, p, seen);
}

int shmr_msg_producer_ready(shmr_producer *p, uint64_t len)
{
    if (len > shmr_msg_max(p->r))
        return 1;
    p->want = frame_units(len);
    return m_producer_ready(p);
}

/* ---- queue consumers ----------------------------------------------------- */

static int64_t m_q_claim(shmr_consumer *c, shmr_msg *out, uint64_t max)
{
    shmr_ring *r = c->r;
    uint64_t t = shmr_load_relaxed64(&r->tail_block->tail);
    for (;;) {
        /* the same bounds as a record claim: tail past head or more than a lap
         * published beyond tail is a corrupt ring, never walked */
        int rc = shmr_q_claimable(c, &t);
        if (rc <= 0)
            return rc;
        /* Size the claim from the headers. They may be stale if tail moved on
         * meanwhile; then the CAS below fails and nothing read here is used. */
        uint64_t q = t, n = 0;
        int stale = 0;
        while (n < max && q < c->head_cache) {
            struct hdr h = read_hdr(r, q);
            if (!h.ok || q + h.units > c->head_cache) {
                stale = 1;
                break;
            }
            if (h.kind != KIND_PAD) {
                out[n].pos = q;
                out[n].kind = (uint32_t)h.kind;
                out[n].len = h.len;
                out[n].body = frame_at(r, q) + 1;
                n++;
            }
            q += h.units;
        }
        if (n == 0 || (stale && q == t)) {
            uint64_t now = shmr_load_relaxed64(&r->tail_block->tail);
            if (now == t && stale) {
                /* tail has not moved and the frame at it is not a frame: the
                 * ring is corrupt (never written by shmring). Stall, never spin. */
                return -EIO;
            }
            t = now;
            continue;
        }
        if (shmr_q_try_claim(c, &t, q - t)) {
            c->claim_pos = t;
            c->claim_n = q - t;
            c->claim_msgs = n;
            return (int64_t)n;
        }
    }
}

/* Sweeper support (queue.c shmr_q_reclaim): messages and body bytes in the
 * frames of [pos, pos + units), a dead consumer's claim, before its release
 * record overwrites the first header. */
void shmr_m_count(const shmr_ring *r, uint64_t pos, uint64_t units, uint64_t *msgs, uint64_t *bytes)
{
    uint64_t end = pos + units, m = 0, b = 0;
    while (pos < end) {
        struct hdr h = read_hdr(r, pos);
        if (!h.ok)
            break;
        if (h.kind != KIND_PAD) {
            m++;
            b += h.len;
        }
        pos += h.units;
    }
    *msgs = m;
    *bytes = b;
}

int shmr_m_peek(const shmr_ring *r, uint64_t pos, uint64_t head, uint64_t *cum, uint64_t *next)
{
    if (pos >= head)
        return 0;
    struct hdr h = read_hdr(r, pos);
    if (h.ok && h.kind == KIND_PAD) {
        pos += h.units; /* a padding frame is published with the message after it */
        if (pos >= head)
            return 0;
        h = read_hdr(r, pos);
    }
    if (!h.ok || h.kind == KIND_PAD || pos + h.units > head)
        return 0;
    *cum = h.cum;
    *next = pos + h.units;
    return 1;
}

/* ---- broadcast consumers ------------------------------------------------- */

/* Moves a lapped consumer to the oldest frame still intact and counts what it
 * lost, from the sequence numbers and byte counts in the headers. 0 when no
 * intact frame is published yet (the producer is mid-way through a batch
 * that overwrites everything). */
static int m_jump(shmr_consumer *c, shmr_loss *loss)
{
    shmr_ring *r = c->r;
    for (int tries = 0; tries < 64; tries++) {
        /* pairs with the release store in m_advance_oldest() */
        uint64_t o = shmr_load_acquire64(&r->prod->oldest);
        uint64_t h = shmr_load_acquire64(&r->prod->head); /* pairs with shmr_b_publish() */
        c->head_cache = h;
        if (o >= h && shmr_stream_reason(r) != SHMR_OPEN) {
            /* the producer overwrote everything and will publish no more (it
             * may have died inside a reservation): what is left is lost, and
             * the counters are final once the stream word says closed */
            uint64_t lost = shmr_load_relaxed64(&r->prod->msgs) - c->next_seq;
            uint64_t lost_bytes = shmr_load_relaxed64(&r->prod->bytes) - c->next_cum;
            c->next_seq += lost;
            c->next_cum += lost_bytes;
            c->dropped_bytes += lost_bytes;
            shmr_store_relaxed64(&c->slot->dropped_bytes, c->dropped_bytes);
            shmr_b_advance(c, h, 0, lost);
            if (loss) {
                loss->msgs += lost;
                loss->bytes += lost_bytes;
            }
            return 0;
        }
        if (o >= h || o <= c->cursor)
            return 0;
        struct hdr f = read_hdr(r, o);
        if (!f.ok || f.kind == KIND_PAD || !hdr_intact(r, o))
            continue; /* oldest moved on meanwhile */
        uint64_t lost = f.seq - c->next_seq, lost_bytes = f.cum - c->next_cum;
        c->next_seq = f.seq;
        c->next_cum = f.cum;
        c->dropped_bytes += lost_bytes;
        shmr_store_relaxed64(&c->slot->dropped_bytes, c->dropped_bytes);
        shmr_b_advance(c, o, 0, lost);
        if (loss) {
            loss->msgs += lost;
            loss->bytes += lost_bytes;
        }
        return 1;
    }
    return 0;
}

static int64_t m_b_claim(shmr_consumer *c, shmr_msg *out, uint64_t max, shmr_loss *loss)
{
    shmr_ring *r = c->r;
    for (;;) {
        if (c->cursor >= c->head_cache) {
            /* pairs with the producer's release store of head in shmr_b_publish() */
            c->head_cache = shmr_load_acquire64(&r->prod->head);
            if (c->cursor >= c->head_cache)
                return 0;
        }
        uint64_t q = c->cursor, n = 0, seq = c->next_seq, cum = c->next_cum;
        int lapped = 0;
        while (n < max && q < c->head_cache) {
            struct hdr h = read_hdr(r, q);
            if (!hdr_intact(r, q)) {
                lapped = 1;
                break;
            }
            if (!h.ok || q + h.units > c->head_cache)
                return -EIO; /* intact yet not a frame: corrupt, never written by shmring */
            if (h.kind != KIND_PAD) {
                out[n].pos = q;
                out[n].kind = (uint32_t)h.kind;
                out[n].len = h.len;
                out[n].body = frame_at(r, q) + 1;
                seq = h.seq + 1;
                cum = h.cum + h.len;
                n++;
            }
            q += h.units;
        }
        if (n) {
            c->claim_pos = c->cursor;
            c->claim_n = q - c->cursor;
            c->claim_msgs = n;
            c->claim_seq = seq;
            c->claim_cum = cum;
            return (int64_t)n;
        }
        if (lapped) {
            if (!m_jump(c, loss))
                return 0;
            continue;
        }
        /* only a padding frame before head: step over it */
        shmr_b_advance(c, q, 0, 0);
    }
}

/* Join: as shmr_b_join (the same Dekker with announce), but a cursor must sit
 * on a frame, and the consumer must know the sequence number and byte count
 * of the frame it starts at, so that a later jump counts its loss exactly. */
void shmr_m_join(shmr_consumer *c, uint32_t start)
{
    shmr_ring *r = c->r;
    struct shmr_cslot *s = c->slot;
    for (;;) {
        uint64_t h = shmr_load_acquire64(&r->prod->head); /* pairs with shmr_b_publish() */
        uint64_t cur = h, seq = 0, cum = 0;
        if (h) {
            /* the last message before h: a store made before h's release */
            uint64_t lf = shmr_load_relaxed64(&r->prod->last_frame);
            if (lf >= h)
                continue; /* the producer is publishing past h: read head again */
            struct hdr f = read_hdr(r, lf);
            if (!f.ok || f.kind == KIND_PAD || !hdr_unchanged(r, lf))
                continue; /* overwritten meanwhile (we hold no cursor yet): again */
            seq = f.seq + 1;
            cum = f.cum + f.len;
        }
        if (start == SHMR_START_OLDEST && h) {
            uint64_t o = shmr_load_acquire64(&r->prod->oldest);
            if (o < h) {
                struct hdr f = read_hdr(r, o);
                if (f.ok && f.kind != KIND_PAD && hdr_unchanged(r, o)) {
                    cur = o;
                    seq = f.seq;
                    cum = f.cum;
                }
            }
        }
        shmr_store_seqcst64(&s->cursor, cur);
        shmr_store_seqcst32(&s->ready, 1);
        /* the other half of announce()'s Dekker (block mode); in overwrite
         * mode a stale start is found by the intact checks and jumps */
        shmr_fetch_add_seqcst32(&r->ctl->join_epoch, 1);
        if (r->overflow == SHMR_OVERFLOW_BLOCK) {
            uint64_t in = shmr_load_seqcst64(&r->prod->join_claim);
            if (in > cur + r->cap) {
                /* an unaware batch overwrites our start: begin at the oldest
                 * frame it leaves, stored before that claim */
                uint64_t o = shmr_load_acquire64(&r->prod->oldest);
                struct hdr f = read_hdr(r, o);
                if (o < cur || !f.ok || f.kind == KIND_PAD || !hdr_unchanged(r, o)) {
                    shmr_store_seqcst32(&s->ready, 0);
                    continue;
                }
                cur = o;
                seq = f.seq;
                cum = f.cum;
                shmr_store_seqcst64(&s->cursor, cur);
            }
        }
        c->cursor = cur;
        c->next_seq = seq;
        c->next_cum = cum;
        c->dropped_bytes = 0;
        shmr_store_relaxed64(&s->dropped_bytes, 0);
        if (r->overflow == SHMR_OVERFLOW_BLOCK)
            shmr_ec_notify(r->space_ec); /* a producer may have seen our provisional cursor */
        return;
    }
}

/* ---- consumers, both modes ---------------------------------------------- */

int64_t shmr_m_claim(shmr_consumer *c, shmr_msg *out, uint64_t max, shmr_loss *loss)
{
    return c->r->mode == SHMR_MODE_QUEUE ? m_q_claim(c, out, max) : m_b_claim(c, out, max, loss);
}

int shmr_msg_intact(shmr_consumer *c, const shmr_msg *msgs)
{
    return c->claim_n == 0 || hdr_intact(c->r, msgs[0].pos);
}

/* msgs may be NULL (a consumer leaving with a claim): nothing is counted torn */
int64_t shmr_m_release(shmr_consumer *c, const shmr_msg *msgs, shmr_loss *loss)
{
    shmr_ring *r = c->r;
    uint64_t pos = c->claim_pos, k = c->claim_n, n = c->claim_msgs;
    if (k == 0)
        return 0;
    c->claim_n = 0;
    if (r->mode == SHMR_MODE_QUEUE)
        return shmr_q_release(c, pos, k, n); /* message rings have no evict_after: 0 */
    /* overwrite: which leading messages may have been overwritten while we
     * read them (a message is intact iff its first unit is: the producer
     * overwrites in position order); pairs as in hdr_intact */
    uint64_t torn = 0, torn_bytes = 0;
    if (r->overflow == SHMR_OVERFLOW_OVERWRITE && msgs) {
        shmr_fence_acquire();
        uint64_t in = shmr_load_relaxed64(&r->prod->intent);
        while (torn < n && in > msgs[torn].pos + r->cap)
            torn_bytes += msgs[torn++].len;
    }
    c->next_seq = c->claim_seq;
    c->next_cum = c->claim_cum;
    if (torn) {
        c->dropped_bytes += torn_bytes;
        shmr_store_relaxed64(&c->slot->dropped_bytes, c->dropped_bytes);
        if (loss) {
            loss->msgs += torn;
            loss->bytes += torn_bytes;
        }
    }
    shmr_b_advance(c, pos + k, n - torn, torn);
    return (int64_t)torn;
}

uint64_t shmr_consumer_dropped_bytes(const shmr_consumer *c) { return c->dropped_bytes; }
uint64_t shmr_msg_next_seq(const shmr_consumer *c) { return c->next_seq; }
