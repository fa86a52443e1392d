/*
 * Queue mode: every record goes to exactly one consumer.
 *
 * Consumers claim batches by CAS on tail and hand each batch back with one
 * release record (struct shmr_release_rec) at its first slot; the producer walks
 * the release records batch by batch to learn how far it may write. The pairs
 * that make this safe all live here:
 *   head:            release store in shmr_q_publish  / acquire loads in q_claim,
 *                    shmr_q_consumer_ready
 *   release records: release store (or CAS) of tag in shmr_q_release and
 *                    shmr_q_reclaim / acquire load in q_writable
 *   claim records:   seq_cst tail CAS in q_claim (a release store of tail with
 *                    one consumer slot) / seq_cst tail load in shmr_q_reclaim
 *   eviction:        seq_cst CAS of claim_state (HELD -> RELEASING) in
 *                    shmr_q_release / (HELD -> EVICTED) in shmr_q_evict: the
 *                    winner alone writes the batch's release record
 */
#include "eventcount.h"
#include "shmr_internal.h"

int shmr_q_producer_open(shmr_producer *p)
{
    shmr_ring *r = p->r;
    p->writable_end_cache = shmr_load_acquire64(&r->prod->writable_end);
    /* the walk never passes what consumers released, and they release only
     * what was published: head <= writable_end <= head + cap, or the ring is
     * corrupt and a walk from here would overwrite unread records */
    if (p->writable_end_cache < p->head || p->writable_end_cache - p->head > r->cap)
        return -SHMR_ESTATE;
    if (shmr_load_acquire64(&r->tail_block->tail) > p->head)
        return -SHMR_ESTATE;
    return 0;
}

/* How many of the next n positions may be written now (at most cap). */
uint64_t shmr_q_writable(shmr_producer *p, uint64_t n)
{
    shmr_ring *r = p->r;
    uint64_t h = p->head;
    n = shmr_min_u64(n, r->cap);
    while (p->writable_end_cache < h + n) {
        struct shmr_release_rec *d = &r->releases[p->writable_end_cache & r->mask];
        /* pairs with the consumer's release store of the tag in shmr_q_release()
         * (or a sweeper's CAS in shmr_q_reclaim), made after the batch was read */
        if (shmr_load_acquire64(&d->tag) != p->writable_end_cache)
            break;
        uint64_t len = shmr_load_relaxed64(&d->len);
        if (len == 0 || len > r->cap)
            break; /* corrupt record (never written by shmring): stall, never spin */
        p->writable_end_cache += len;
        shmr_store_relaxed64(&r->prod->writable_end, p->writable_end_cache);
    }
    return shmr_min_u64(p->writable_end_cache - h, n);
}

void shmr_q_publish(shmr_producer *p, uint64_t k)
{
    p->head += k;
    /* pairs with the consumer's acquire load of head before it reads slots */
    shmr_store_release64(&p->r->prod->head, p->head);
    shmr_ec_notify_n(p->r->data_ec, p->r->data_wakes);
}

int shmr_q_producer_ready(void *arg) { return shmr_q_writable((shmr_producer *)arg, 1) > 0; }

/* What a full ring's producer spins for: a chunk free (shmr_wait_chunk). The
 * same walk of release records as ready, only asked for more; reading less
 * often changes nothing in what is written or in its ordering. */
int shmr_q_producer_more(void *arg)
{
    shmr_producer *p = arg;
    uint64_t k = shmr_wait_chunk(p->r);
    return shmr_q_writable(p, k) >= k;
}

/* Slots the producer may write now: the same walk of release records a push
 * makes, so it costs nothing a later push would not pay anyway. */
uint64_t shmr_q_free(shmr_producer *p) { return shmr_q_writable(p, p->r->cap); }

/* Whether anything may be claimed from *t (records and message rings alike):
 * 1 if so, up to c->head_cache; 0 if nothing is published there;
 * -SHMR_ESTATE for impossible indices.
 *
 * head and tail are shared words a corrupting peer can set to anything; a
 * batch is never longer than the capacity, and impossible values (tail past
 * head, more than a lap published beyond tail) are reported, never copied
 * from. A tail read before head is <= head: consumers move tail only up to a
 * head they read, and head never decreases. A head read before tail is <=
 * tail + cap: the producer writes only positions released a lap earlier, and
 * releases follow claims. Each bound is checked only with the reads in that
 * order (verify/ring.pml asserts both). */
int shmr_q_claimable(shmr_consumer *c, uint64_t *t)
{
    shmr_ring *r = c->r;
    for (;;) {
        if (*t >= c->head_cache) {
            /* pairs with the producer's release store of head in shmr_q_publish() */
            c->head_cache = shmr_load_acquire64(&r->prod->head);
            if (*t > c->head_cache)
                return -SHMR_ESTATE;
            if (*t == c->head_cache) {
                shmr_store_relaxed32(&c->slot->claim_state, CLAIM_NONE);
                return 0;
            }
        }
        if (c->head_cache - *t > r->cap) {
            /* t may predate head_cache (another consumer moved tail on
             * since): only a tail read after head can be held to the bound */
            uint64_t t2 = shmr_load_relaxed64(&r->tail_block->tail);
            if (t2 > *t) {
                *t = t2;
                continue;
            }
            return -SHMR_ESTATE;
        }
        return 1;
    }
}

/* Records the claim [*t, *t + k) in our slot, then CASes tail from *t to
 * *t + k. The claim is recorded before the CAS, so a sweeper that finds us dead
 * knows what we held; claim_pbase lets it tell a batch counted as delivered
 * from an abandoned one (see shmr_q_release). On failure *t is the tail now
 * and nothing is held. */
int shmr_q_try_claim(shmr_consumer *c, uint64_t *t, uint64_t k)
{
    shmr_ring *r = c->r;
    struct shmr_cslot *s = c->slot;
    shmr_store_relaxed64(&s->claim_pos, *t);
    shmr_store_relaxed64(&s->claim_n, k);
    shmr_store_relaxed64(&s->claim_pbase, c->popped_base + c->popped);
    shmr_store_relaxed32(&s->claim_state, CLAIM_INTENT);
    SHMR_HOOK(SHMR_HOOK_CLAIM_INTENT);
    if (r->max_consumers == 1) {
        /* One consumer slot: only its occupant moves tail, so the claim cannot
         * lose and needs no CAS (the CAS is most of a one-record pop). A later
         * occupant takes the slot by the owner CAS after this one freed it, or
         * after a sweep that proved it dead (liveness.c: never on a guess), so
         * it reads every tail this one stored. Release: the claim record before
         * the claim; pairs with the seq_cst loads of tail in shmr_q_reclaim and
         * shmr_q_evict. */
        shmr_store_release64(&r->tail_block->tail, *t + k);
        SHMR_HOOK(SHMR_HOOK_CLAIM_WON);
        shmr_store_relaxed32(&s->claim_state, CLAIM_HELD);
        return 1;
    }
    /* seq_cst: publishes the claim record before the claim (see shmr_q_reclaim) */
    if (shmr_cas_seqcst64(&r->tail_block->tail, t, *t + k)) {
        SHMR_HOOK(SHMR_HOOK_CLAIM_WON);
        shmr_store_relaxed32(&s->claim_state, CLAIM_HELD);
        return 1;
    }
    return 0;
}

/* Claim up to max positions from tail. */
static inline int64_t q_claim(shmr_consumer *c, uint64_t max, int contiguous, uint64_t *pos)
{
    shmr_ring *r = c->r;
    uint64_t t = shmr_load_relaxed64(&r->tail_block->tail);
    for (;;) {
        int rc = shmr_q_claimable(c, &t);
        if (rc <= 0)
            return rc;
        uint64_t k = shmr_min_u64(max, c->head_cache - t);
        if (contiguous)
            k = shmr_min_u64(k, r->cap - (t & r->mask));
        if (shmr_q_try_claim(c, &t, k)) {
            *pos = t;
            return (int64_t)k;
        }
    }
}

/* Counting first, then the release: a process killed between the two leaves a
 * held claim whose popped already says "delivered" (popped == claim_pbase + delivered),
 * and the sweeper releases it without counting it abandoned. Killed before the
 * count, the batch is abandoned; after the release, there is nothing to undo.
 * delivered is what the batch counts: k records, or the messages in k
 * units (messages.c). Each record is counted once, as popped or as abandoned, whenever the kill.
 *
 * With evict_after the producer may have taken the batch back while we were
 * stopped (shmr_q_evict): the CAS below decides, before anything is counted or
 * written. Lost, we return -SHMR_EEVICTED and the caller discards what it read
 * (the producer may have overwritten it meanwhile; the copy is never handed
 * out). Won, the batch is ours to release and the producer no longer evicts
 * it. The CAS is skipped without evict_after: then nobody else touches a live
 * consumer's claim. */
int shmr_q_release(shmr_consumer *c, uint64_t pos, uint64_t k, uint64_t delivered)
{
    shmr_ring *r = c->r;
    struct shmr_release_rec *d = &r->releases[pos & r->mask];
    if (r->evict_after_ns) {
        uint32_t st = CLAIM_HELD;
        /* pairs with the CAS in shmr_q_evict: exactly one of the two wins */
        if (!shmr_cas_seqcst32(&c->slot->claim_state, &st, CLAIM_RELEASING))
            return -SHMR_EEVICTED;
        SHMR_HOOK(SHMR_HOOK_RELEASE_WON);
    }
    c->popped += delivered;
    shmr_store_relaxed64(&c->slot->popped, c->popped_base + c->popped);
    SHMR_HOOK(SHMR_HOOK_RELEASE_COUNTED);
    shmr_store_relaxed64(&d->len, k);
    /* pairs with the producer's acquire load in q_writable(): our reads of the
     * batch (and the len above) happen before it writes these slots again */
    shmr_store_release64(&d->tag, pos + r->cap);
    shmr_store_release32(&c->slot->claim_state, CLAIM_NONE);
    shmr_ec_notify(r->space_ec);
    return 0;
}

int64_t shmr_q_pop(shmr_consumer *c, void *dst, uint64_t max)
{
    uint64_t pos;
    int64_t k = q_claim(c, max, 0, &pos);
    if (k <= 0)
        return k;
    shmr_copy_out(c->r, pos, dst, (uint64_t)k);
    SHMR_HOOK(SHMR_HOOK_CLAIM_COPIED);
    int rc = shmr_q_release(c, pos, (uint64_t)k, (uint64_t)k);
    return rc ? rc : k;
}

int64_t shmr_q_claim(shmr_consumer *c, uint64_t max, const void **ptr)
{
    uint64_t pos;
    int64_t k = q_claim(c, max, 1, &pos);
    if (k <= 0)
        return k;
    c->claim_pos = pos;
    c->claim_n = k;
    *ptr = c->r->slots + (pos & c->r->mask) * c->r->stride;
    return (int64_t)k;
}

/* Records published and not yet claimed by any consumer. tail may pass the
 * head we read (another consumer claimed meanwhile): then nothing is left. */
uint64_t shmr_q_available(shmr_consumer *c)
{
    shmr_ring *r = c->r;
    uint64_t h = shmr_load_acquire64(&r->prod->head); /* pairs with shmr_q_publish() */
    uint64_t t = shmr_load_relaxed64(&r->tail_block->tail);
    return h > t ? shmr_min_u64(h - t, r->cap) : 0;
}

int shmr_q_consumer_ready(void *arg)
{
    shmr_consumer *c = arg;
    shmr_ring *r = c->r;
    uint64_t h = shmr_load_acquire64(&r->prod->head); /* pairs with shmr_q_publish() */
    if (shmr_load_relaxed64(&r->tail_block->tail) < h)
        return 1;
    return shmr_stream_reason(r) != SHMR_OPEN;
}

/* What a consumer in a dense stream spins for: a chunk of records published
 * and not yet claimed (SHMR_Q_DENSE_CHUNK), or the end of the stream. The same
 * reads as shmr_q_consumer_ready, asked for more; reading less often changes
 * nothing in what is written or in its ordering. */
int shmr_q_consumer_more(void *arg)
{
    shmr_consumer *c = arg;
    shmr_ring *r = c->r;
    uint64_t h = shmr_load_acquire64(&r->prod->head); /* pairs with shmr_q_publish() */
    if (shmr_load_relaxed64(&r->tail_block->tail) + SHMR_Q_DENSE_CHUNK <= h)
        return 1;
    return shmr_stream_reason(r) != SHMR_OPEN;
}

/* Releases the batch a dead consumer (slot i, already marked BUSY by
 * shmr_sweep_mark) held; returns the records released, counted as abandoned.
 *
 * A CLAIM_HELD record is authoritative: its claim CAS succeeded. A CLAIM_INTENT
 * record is either a claim whose owner died between the CAS and marking it held,
 * or a stale intent left by a failed CAS. Only a record at the same position can
 * be the real holder of that batch, so: if a live consumer has a record at p0 it
 * is (or will find out it is not) the holder, and we leave the batch alone; if
 * other dead records sit at p0, the batch is released with the shortest length
 * among them, which never frees a position the real holder did not hold. A
 * shorter-than-real release only stalls the producer at the remainder; the
 * ring's data stays intact. (Needs two consumers to die within nanoseconds of
 * each other at the same position.) */
uint64_t shmr_q_reclaim(shmr_ring *r, uint32_t i, const int *alive, const int *dead)
{
    struct shmr_cslot *s = &r->cslots[i];
    uint32_t state = shmr_load_acquire32(&s->claim_state);
    uint64_t n = shmr_load_acquire64(&s->claim_n);
    uint64_t p0 = shmr_load_acquire64(&s->claim_pos);
    /* Read tail only now: the owner is dead and marked BUSY, so it can no
     * longer move tail for this record. p0 >= tail: its CAS never happened. */
    uint64_t tail = shmr_load_seqcst64(&r->tail_block->tail);
    /* EVICTED: the producer took that batch back and counted it (shmr_q_evict) */
    if (state == CLAIM_NONE || state == CLAIM_EVICTED || n == 0 || p0 >= tail)
        return 0;
    if (n > r->cap || n > tail - p0)
        return 0; /* no claim is longer than a lap or reaches past tail: corrupt, leave it */
    if (state == CLAIM_INTENT) {
        for (uint32_t j = 0; j < r->max_consumers; j++) {
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
    struct shmr_release_rec *d = &r->releases[p0 & r->mask];
    uint64_t cur = shmr_load_acquire64(&d->tag);
    if (cur >= p0 + r->cap)
        return 0; /* released by its owner, or by a sweeper that counted it before */
    /* a message ring counts messages and bytes, read from the frames before the
     * release record below overwrites the first header */
    uint64_t lost = n, lost_bytes = 0;
    if (r->kind == SHMR_KIND_MESSAGES)
        shmr_m_count(r, p0, n, &lost, &lost_bytes);
    /* The owner counts a batch as delivered before releasing it (see
     * shmr_q_release): then only the release itself may be missing. */
    int delivered = shmr_load_relaxed64(&s->popped) == shmr_load_relaxed64(&s->claim_pbase) + lost;
    /* The slot's abandoned totals are stored, not added: their values when the
     * dead occupant arrived plus this batch (only an occupant's last claim can
     * be outstanding). A HELD claim is this slot's alone, so it is counted
     * before the release and a sweeper that dies in between and the one that
     * takes over store the same numbers. An INTENT may tie with another dead
     * slot's at the same position; only the one whose release wins counts it. */
    uint64_t count = delivered ? 0 : shmr_load_relaxed64(&s->abandoned_base) + lost;
    uint64_t count_bytes = delivered ? 0 : shmr_load_relaxed64(&s->abandoned_bytes_base) + lost_bytes;
    if (count && state != CLAIM_INTENT) { /* HELD or RELEASING: a won claim */
        shmr_store_relaxed64(&s->abandoned, count);
        shmr_store_relaxed64(&s->abandoned_bytes, count_bytes);
    }
    shmr_store_relaxed64(&d->len, n);
    /* pairs with the producer's acquire load of the tag in shmr_q_writable() */
    if (!shmr_cas_seqcst64(&d->tag, &cur, p0 + r->cap))
        return 0;
    if (count && state == CLAIM_INTENT) {
        shmr_store_relaxed64(&s->abandoned, count);
        shmr_store_relaxed64(&s->abandoned_bytes, count_bytes);
    }
    return delivered ? 0 : lost;
}

/* The producer takes back the batch a live consumer (slot i) has held past
 * evict_after: the consumer is marked evicted, the batch released and counted
 * abandoned. 1 if this call released the batch (and counted the eviction).
 *
 * Only a HELD claim is taken: the CAS against the consumer's own HELD ->
 * RELEASING (shmr_q_release) makes exactly one of them the writer of the
 * release record. A consumer caught inside the few stores between its tail CAS
 * and HELD, or between RELEASING and its release store, is not evicted: it is
 * running, or stopped within a handful of instructions of letting go.
 *
 * EVICTED found already: a producer died between its CAS and its release;
 * this one finishes the job. The abandoned totals are stored, not added (an
 * evicted occupant has exactly this one abandoned batch), so doing it twice
 * counts it once; the eviction is counted by whoever wins the release CAS
 * (a producer killed between that CAS and the next instruction misses one). */
int shmr_q_evict(shmr_ring *r, uint32_t i)
{
    struct shmr_cslot *s = &r->cslots[i];
    uint32_t st = CLAIM_HELD;
    if (!shmr_cas_seqcst32(&s->claim_state, &st, CLAIM_EVICTED) && st != CLAIM_EVICTED)
        return 0;
    SHMR_HOOK(SHMR_HOOK_EVICT_WON);
    /* tells the consumer on its next call; pairs with shmr_evicted(). An RMW
     * that keeps the sleeping flag (see SHMR_SLOT_SLEEPING). */
    uint32_t w = shmr_load_relaxed32(&s->ready);
    while (!shmr_cas_seqcst32(&s->ready, &w, (w & SHMR_SLOT_SLEEPING) | SHMR_EVICTED_MARK))
        ;
    uint64_t n = shmr_load_relaxed64(&s->claim_n);
    uint64_t p0 = shmr_load_relaxed64(&s->claim_pos);
    uint64_t tail = shmr_load_seqcst64(&r->tail_block->tail);
    if (n == 0 || n > r->cap || p0 >= tail || n > tail - p0)
        return 0; /* impossible for a won claim: a corrupt slot, leave the ring alone */
    struct shmr_release_rec *d = &r->releases[p0 & r->mask];
    uint64_t cur = shmr_load_acquire64(&d->tag);
    if (cur >= p0 + r->cap)
        return 0; /* released before (by a predecessor that died after it) */
    uint64_t lost = n, lost_bytes = 0;
    if (r->kind == SHMR_KIND_MESSAGES)
        shmr_m_count(r, p0, n, &lost, &lost_bytes);
    /* nothing of this batch was counted popped: the consumer counts only after
     * winning its CAS */
    shmr_store_relaxed64(&s->abandoned, shmr_load_relaxed64(&s->abandoned_base) + lost);
    shmr_store_relaxed64(&s->abandoned_bytes, shmr_load_relaxed64(&s->abandoned_bytes_base) + lost_bytes);
    shmr_store_relaxed64(&d->len, n);
    /* pairs with our own acquire load of the tag in shmr_q_writable(); a CAS so a
     * second finisher cannot move a later lap's tag back */
    if (!shmr_cas_seqcst64(&d->tag, &cur, p0 + r->cap))
        return 0;
    shmr_fetch_add_relaxed64(&r->ctl->evicted_stalled, 1);
    return 1;
}
