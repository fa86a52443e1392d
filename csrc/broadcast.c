/*
 * Broadcast mode: every consumer sees every record (or counts what it lost).
 *
 * Each consumer keeps its own cursor. In block mode the producer never passes
 * the slowest cursor; in overwrite mode it never waits and a reader that may
 * have been lapped mid-copy discards what may be torn (a seqlock on intent).
 * The pairs that make this safe all live here:
 *   head:    release store in shmr_b_publish / acquire loads in b_ready,
 *            shmr_b_consumer_ready
 *   cursors: release store in b_advance / acquire load in shmr_b_refresh_min
 *   intent:  relaxed store + release fence in announce / acquire fence +
 *            relaxed load in b_torn
 *   joining: seq_cst Dekker between announce (join_claim, then join_epoch) and
 *            shmr_b_join (join_epoch, then join_claim)
 *   eviction: seq_cst CAS of ready in shmr_b_evict, then announce's release
 *            fence before the slot writes / acquire fence in b_torn + load of
 *            ready in b_evicted_meanwhile
 */
#include <string.h>

#include "eventcount.h"
#include "shmr_internal.h"

int shmr_b_producer_open(shmr_producer *p)
{
    shmr_ring *r = p->r;
    p->intent = shmr_load_acquire64(&r->prod->intent);
    if (p->intent < p->head)
        p->intent = p->head;
    /* an announcement never reaches more than a lap past head; a larger one
     * would make every reader discard everything as torn */
    if (p->intent - p->head > r->cap)
        return -SHMR_ESTATE;
    p->min_cache = p->head > r->cap ? p->head - r->cap : 0;
    p->join_seen = shmr_load_acquire32(&r->ctl->join_epoch) - 1; /* force a refresh */
    return 0;
}

/* Broadcast-block: lowest cursor of ready consumers (head if none). A joining
 * consumer's provisional cursor may lie below head - cap (it is about to move
 * up, see shmr_b_join); positions below head - cap are gone anyway, so the
 * minimum is clamped there and never makes the room computation wrap. */
uint64_t shmr_b_refresh_min(shmr_producer *p)
{
    shmr_ring *r = p->r;
    uint64_t m = p->head;
    uint64_t floor = p->head > r->cap ? p->head - r->cap : 0;
    for (uint32_t i = 0; i < r->max_consumers; i++) {
        struct shmr_cslot *s = &r->cslots[i];
        if (shmr_load_seqcst64(&s->owner) == 0 || (shmr_load_seqcst32(&s->ready) & SHMR_SLOT_STATE) != SHMR_READY)
            continue;
        /* pairs with the consumer's release store of its cursor in b_advance(),
         * made after it finished reading the records below it */
        uint64_t c = shmr_load_acquire64(&s->cursor);
        if (c < m)
            m = c < floor ? floor : c;
    }
    p->min_cache = m;
    return m;
}

/* How many of the next n positions may be written now (at most cap). */
uint64_t shmr_b_writable(shmr_producer *p, uint64_t n)
{
    shmr_ring *r = p->r;
    uint64_t h = p->head;
    n = shmr_min_u64(n, r->cap);
    if (r->overflow == SHMR_OVERFLOW_OVERWRITE)
        return n;
    if (h + n - p->min_cache > r->cap)
        shmr_b_refresh_min(p);
    uint64_t room = r->cap - shmr_min_u64(r->cap, h - p->min_cache);
    return shmr_min_u64(n, room);
}

/* Announce positions [head, head + k) before writing them. */
uint64_t shmr_b_announce(shmr_producer *p, uint64_t k)
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
            shmr_b_refresh_min(p);
            uint64_t room = r->cap - shmr_min_u64(r->cap, p->head - p->min_cache);
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
     * the reader's acquire fence between its copy and its re-read of intent
     * in b_torn() */
    shmr_fence_release();
    p->intent = want;
    return k;
}

void shmr_b_publish(shmr_producer *p, uint64_t k)
{
    p->head += k;
    /* pairs with the consumer's acquire load of head before it reads slots */
    shmr_store_release64(&p->r->prod->head, p->head);
    shmr_ec_notify(p->r->data_ec);
}

/* How many of the next n positions the producer may write now, announced
 * (push and reserve alike). */
uint64_t shmr_b_room(shmr_producer *p, uint64_t n)
{
    uint64_t k = shmr_b_writable(p, n);
    return k ? shmr_b_announce(p, k) : 0;
}

int shmr_b_producer_ready(void *arg) { return shmr_b_writable((shmr_producer *)arg, 1) > 0; }

/* What a full ring's producer spins for: a chunk of room (shmr_wait_chunk),
 * from the same refresh of the cursors as ready. */
int shmr_b_producer_more(void *arg)
{
    shmr_producer *p = arg;
    uint64_t k = shmr_wait_chunk(p->r);
    return shmr_b_writable(p, k) >= k;
}

/* A consumer joins: provisional cursor, then the other half of the Dekker in
 * announce(). */
void shmr_b_join(shmr_consumer *c, uint32_t start)
{
    shmr_ring *r = c->r;
    struct shmr_cslot *s = c->slot;
    uint64_t h = shmr_load_acquire64(&r->prod->head);
    SHMR_HOOK(SHMR_HOOK_JOIN_READ_HEAD);
    uint64_t cur = start == SHMR_START_OLDEST ? (h > r->cap ? h - r->cap : 0) : h;
    shmr_store_seqcst64(&s->cursor, cur);
    shmr_store_seqcst32(&s->ready, 1);
    SHMR_HOOK(SHMR_HOOK_JOIN_PROVISIONAL);
    /* bump join_epoch, then read the claim word; start no earlier than what an
     * unaware batch overwrites (overwrite mode has no Dekker: intent, then torn
     * checks) */
    shmr_fetch_add_seqcst32(&r->ctl->join_epoch, 1);
    uint64_t in = shmr_load_seqcst64(r->overflow == SHMR_OVERFLOW_BLOCK ? &r->prod->join_claim : &r->prod->intent);
    if (in > cur + r->cap) {
        cur = in - r->cap;
        shmr_store_seqcst64(&s->cursor, cur);
    }
    c->cursor = cur;
    /* a producer may have seen our provisional cursor and be waiting */
    if (r->overflow == SHMR_OVERFLOW_BLOCK)
        shmr_ec_notify(r->space_ec);
}

/* A consumer has left: a broadcast-block producer may be waiting for it. */
void shmr_b_leave(shmr_consumer *c) { shmr_ec_notify(c->r->space_ec); }

/* The producer stops waiting for consumer i, which has held it back past
 * evict_after: from the CAS on, the minimum ignores it and the producer
 * overwrites what it has not read. The consumer finds out at its next call, or
 * right after a copy it was making (b_evicted_meanwhile), and discards that
 * copy. 1 if this call evicted it. */
int shmr_b_evict(shmr_producer *p, uint32_t i)
{
    shmr_a32 *ready = &p->r->cslots[i].ready;
    uint32_t want = shmr_load_relaxed32(ready);
    /* seq_cst RMW, then announce()'s release fence orders it before every slot
     * write that follows; pairs with the acquire fence in b_torn(). The
     * sleeping flag is kept: the consumer may be asleep (a stopped one often is). */
    do {
        if ((want & SHMR_SLOT_STATE) != SHMR_READY)
            return 0;
    } while (!shmr_cas_seqcst32(ready, &want, (want & SHMR_SLOT_SLEEPING) | SHMR_EVICTED_MARK));
    shmr_fetch_add_relaxed64(&p->r->ctl->evicted_stalled, 1);
    shmr_b_refresh_min(p);
    return 1;
}

/* After a copy (and b_torn's acquire fence): if our copy saw any byte the
 * producer wrote after evicting us, this load sees the eviction. */
static inline int b_evicted_meanwhile(shmr_consumer *c)
{
    return c->r->evict_after_ns && (shmr_load_relaxed32(&c->slot->ready) & SHMR_SLOT_STATE) == SHMR_EVICTED_MARK;
}

/* How many records are ready at our cursor; skips (and counts) what the
 * producer has already lapped. */
static inline uint64_t b_ready(shmr_consumer *c, uint64_t max, int contiguous, uint64_t *skipped)
{
    shmr_ring *r = c->r;
    if (c->cursor >= c->head_cache) {
        c->head_cache = shmr_load_acquire64(&r->prod->head); /* pairs with shmr_b_publish() */
        if (c->cursor >= c->head_cache)
            return 0;
    }
    uint64_t h = c->head_cache;
    if (h - c->cursor > r->cap) {
        *skipped += h - r->cap - c->cursor;
        c->cursor = h - r->cap;
    }
    uint64_t k = shmr_min_u64(max, h - c->cursor);
    if (contiguous)
        k = shmr_min_u64(k, r->cap - (c->cursor & r->mask));
    return k;
}

/* After reading [from, from + k), how many leading records may have been
 * overwritten meanwhile. The acquire fence pairs with the producer's release
 * fence in announce(): if our copy saw any byte of a newer write, the intent
 * load below sees that write's announcement. A racing memcpy is a data race in
 * ISO C; on the supported targets (x86-64 TSO, AArch64 with these fences) the
 * copy is discarded whenever it could be torn. */
static inline uint64_t b_torn(shmr_consumer *c, uint64_t from, uint64_t k)
{
    shmr_fence_acquire();
    uint64_t in = shmr_load_relaxed64(&c->r->prod->intent);
    if (in <= from + c->r->cap)
        return 0;
    return shmr_min_u64(k, in - c->r->cap - from);
}

void shmr_b_advance(shmr_consumer *c, uint64_t to, uint64_t delivered, uint64_t lost)
{
    shmr_ring *r = c->r;
    c->cursor = to;
    /* pairs with the producer's acquire load in shmr_b_refresh_min() */
    shmr_store_release64(&c->slot->cursor, to);
    c->popped += delivered;
    shmr_store_relaxed64(&c->slot->popped, c->popped_base + c->popped);
    if (lost) {
        c->dropped += lost;
        shmr_store_relaxed64(&c->slot->dropped, c->dropped_base + c->dropped);
    }
    if (r->overflow == SHMR_OVERFLOW_BLOCK)
        shmr_ec_notify(r->space_ec);
}

int64_t shmr_b_pop(shmr_consumer *c, void *dst, uint64_t max, uint64_t *dropped)
{
    shmr_ring *r = c->r;
    for (;;) {
        uint64_t skipped = 0;
        uint64_t k = b_ready(c, max, 0, &skipped);
        if (k == 0) {
            if (skipped)
                shmr_b_advance(c, c->cursor, 0, skipped);
            return 0;
        }
        uint64_t from = c->cursor;
        shmr_copy_out(r, from, dst, k);
        uint64_t bad = b_torn(c, from, k);
        if (b_evicted_meanwhile(c))
            return -SHMR_EEVICTED;
        if (bad && bad < k)
            memmove(dst, (uint8_t *)dst + bad * r->stride, (k - bad) * r->stride);
        shmr_b_advance(c, from + k, k - bad, skipped + bad);
        if (dropped)
            *dropped += skipped + bad;
        if (k > bad)
            return (int64_t)(k - bad);
    }
}

int64_t shmr_b_claim(shmr_consumer *c, uint64_t max, const void **ptr, uint64_t *dropped)
{
    shmr_ring *r = c->r;
    uint64_t skipped = 0;
    uint64_t k = b_ready(c, max, 1, &skipped);
    if (skipped) {
        shmr_b_advance(c, c->cursor, 0, skipped);
        if (dropped)
            *dropped += skipped;
    }
    if (k == 0)
        return 0;
    c->claim_pos = c->cursor;
    c->claim_n = k;
    *ptr = r->slots + (c->cursor & r->mask) * r->stride;
    return (int64_t)k;
}

int64_t shmr_b_release(shmr_consumer *c, uint64_t pos, uint64_t k)
{
    uint64_t bad = b_torn(c, pos, k);
    if (b_evicted_meanwhile(c))
        return -SHMR_EEVICTED;
    shmr_b_advance(c, pos + k, k - bad, bad);
    return (int64_t)bad;
}

/* Records this consumer has not read yet (a lapped consumer can still read cap). */
uint64_t shmr_b_available(shmr_consumer *c)
{
    uint64_t h = shmr_load_acquire64(&c->r->prod->head); /* pairs with shmr_b_publish() */
    return h > c->cursor ? shmr_min_u64(h - c->cursor, c->r->cap) : 0;
}

/* Overwrite mode never waits: every slot counts as free. */
uint64_t shmr_b_free(shmr_producer *p) { return shmr_b_writable(p, p->r->cap); }

int shmr_b_consumer_ready(void *arg)
{
    shmr_consumer *c = arg;
    shmr_ring *r = c->r;
    uint64_t h = shmr_load_acquire64(&r->prod->head); /* pairs with shmr_b_publish() */
    if (c->cursor < h)
        return 1;
    return shmr_stream_reason(r) != SHMR_OPEN;
}
