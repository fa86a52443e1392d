/*
 * Public entry points for producers and consumers: role and slot handling,
 * the stream word (open, closed, producer died), and one dispatch on the
 * ring's mode per call into queue.c or broadcast.c. Segment calls live in
 * segment.c, waiting in eventcount.c, process identity in liveness.c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "eventcount.h"
#include "liveness.h"
#include "shmr_internal.h"

#include <errno.h>
#include <stdlib.h>

#define IS_QUEUE(r) ((r)->mode == SHMR_MODE_QUEUE)

uint32_t shmr_close_reason(const shmr_ring *r) { return shmr_stream_reason(r); }

/* Frees the slots of consumers whose process died. Queue mode: the batch a dead
 * consumer had claimed but not released is released here and counted as
 * abandoned (at-most-once for those records). */
static int sweep(shmr_ring *r, uint64_t *reclaimed)
{
    int alive[SHMR_MAX_CONSUMERS], dead[SHMR_MAX_CONSUMERS];
    uint64_t got = 0;
    shmr_sweep_mark(r, alive, dead);
    if (IS_QUEUE(r))
        for (uint32_t i = 0; i < r->max_consumers; i++)
            if (dead[i])
                got += shmr_q_reclaim(r, i, alive, dead);
    int freed = shmr_sweep_free(r, dead);
    if (reclaimed)
        *reclaimed = got;
    return freed;
}

int shmr_sweep(shmr_ring *r, uint64_t *reclaimed) { return sweep(r, reclaimed); }

/* ---- producer ----------------------------------------------------------- */

int shmr_producer_open(shmr_ring *r, shmr_producer **out)
{
    uint64_t me = shmr_self_owner();
    int rc = shmr_claim_owner(&r->ctl->producer_owner, &r->ctl->producer_pidns, me);
    if (rc)
        return rc;
    shmr_populate(r);
    shmr_producer *p = calloc(1, sizeof *p);
    if (!p) {
        shmr_store_release64(&r->ctl->producer_owner, 0);
        return -ENOMEM;
    }
    p->r = r;
    p->owner = me;
    /* we are the only writer of head (and intent) from here on */
    p->head = shmr_load_acquire64(&r->prod->head);
    rc = IS_QUEUE(r) ? shmr_q_producer_open(p) : shmr_b_producer_open(p);
    if (rc) {
        shmr_producer_free(p);
        return rc;
    }
    if (r->kind == SHMR_KIND_MESSAGES)
        shmr_m_producer_open(p);
    /* A new producer re-opens the stream under a new generation, after taking
     * the role: a consumer that judged the old producer dead CASes only the
     * generation it read before looking at the owner, so it cannot close ours. */
    uint64_t w = shmr_load_acquire64(&r->ctl->stream);
    while (!shmr_cas_seqcst64(&r->ctl->stream, &w, ((w >> 32) + 1) << 32 | SHMR_OPEN))
        ;
    /* Consumers awaiting in an event loop watch the producer's process (a
     * pidfd) instead of polling, so they must learn of a new one: they re-read
     * the owner word after this wake. The pair is the eventcount's: our owner
     * CAS, then the notify's barrier and load of waiters / the waiter's count
     * in and barrier (shmr_ec_arm), then its load of the owner word
     * (shmr_ring_peers). Either the waiter reads us, or we see it counted and
     * move the epoch its wait was submitted with, which ends that wait at
     * once. A producer that joins and dies before the waiter re-reads is
     * still in the owner word then, and a pidfd of a dead process leads the
     * waiter to its liveness check at once. Blocking consumers are not woken
     * (their slices look for a dead producer anyway). */
    shmr_ec_notify_loops(r->data_ec);
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
     * acquire of the stream word in closed_and_drained(), after which it
     * re-reads head and drains */
    uint64_t w = shmr_load_acquire64(&p->r->ctl->stream);
    while (!shmr_cas_seqcst64(&p->r->ctl->stream, &w, (w & ~0xffffffffull) | SHMR_CLOSED_BY_PRODUCER))
        ;
    shmr_ec_notify_always(p->r->data_ec);
    return 0;
}

/* Positions [head, head + k) the producer may write now (k <= n): the queue's
 * walk of release records, or the broadcast room, announced. */
static inline uint64_t room(shmr_producer *p, uint64_t n)
{
    return IS_QUEUE(p->r) ? shmr_q_writable(p, n) : shmr_b_room(p, n);
}

static inline void publish(shmr_producer *p, uint64_t k)
{
    if (IS_QUEUE(p->r))
        shmr_q_publish(p, k);
    else
        shmr_b_publish(p, k);
}

int64_t shmr_push(shmr_producer *p, const void *src, uint64_t n)
{
    uint64_t k = room(p, n);
    if (k == 0)
        return 0;
    shmr_copy_in(p->r, p->head, src, k);
    publish(p, k);
    return (int64_t)k;
}

int64_t shmr_reserve(shmr_producer *p, uint64_t n, void **ptr)
{
    shmr_ring *r = p->r;
    uint64_t s = p->head & r->mask;
    uint64_t k = room(p, shmr_min_u64(n, r->cap - s)); /* contiguous part only */
    if (k == 0)
        return 0;
    *ptr = r->slots + s * r->stride;
    p->reserved = k;
    return (int64_t)k;
}

void shmr_commit(shmr_producer *p, uint64_t n)
{
    if (n > p->reserved)
        n = p->reserved; /* never publish slots that were not reserved */
    p->reserved = 0;
    if (n != 0)
        publish(p, n);
}

int shmr_producer_wait(shmr_producer *p, int64_t timeout_ns, int64_t spin_ns)
{
    int q = IS_QUEUE(p->r);
    return shmr_spin_wait_more(&p->spin, p->r, 1, p->r->space_ec, NULL, q ? shmr_q_producer_more : shmr_b_producer_more,
                               q ? shmr_q_producer_ready : shmr_b_producer_ready, p, timeout_ns, spin_ns);
}

int shmr_producer_recover(shmr_producer *p, uint64_t *reclaimed)
{
    int freed = sweep(p->r, reclaimed);
    if (freed && !IS_QUEUE(p->r))
        shmr_b_refresh_min(p);
    return freed;
}

uint64_t shmr_producer_room(shmr_producer *p)
{
    return IS_QUEUE(p->r) ? shmr_q_free(p) : shmr_b_free(p);
}

uint32_t shmr_consumer_count(shmr_ring *r)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->max_consumers; i++) {
        uint64_t owner = shmr_load_acquire64(&r->cslots[i].owner);
        /* a joining consumer stores ready, then notifies (shmr_consumer_open):
         * this load runs in the ready() re-check of a sleeper, after its
         * barrier (eventcount.c), so one of the two sees the other */
        if (owner != 0 && !SHMR_IS_BUSY(owner) && (shmr_load_seqcst32(&r->cslots[i].ready) & SHMR_SLOT_STATE) == SHMR_READY)
            n++;
    }
    return n;
}

struct consumers_wanted {
    shmr_ring *r;
    uint32_t n;
};

static int enough_consumers(void *arg)
{
    struct consumers_wanted *w = arg;
    return shmr_consumer_count(w->r) >= w->n;
}

int shmr_wait_consumers(shmr_ring *r, uint32_t n, int64_t timeout_ns, int64_t spin_ns)
{
    struct consumers_wanted w = {r, n};
    return shmr_ec_wait(r->space_ec, enough_consumers, &w, timeout_ns, spin_ns);
}

/* Which consumer holds the producer back, for Full's message and stats(): in
 * queue mode the one whose claim starts the batch the producer waits to see
 * released (none if no one has taken those records yet); in broadcast-block
 * mode the one at the slowest cursor. Records it in the control block with
 * the time the producer first waited on that consumer. 1 if one was found. */
int shmr_producer_stall(shmr_producer *p, uint32_t *index, uint64_t *behind)
{
    shmr_ring *r = p->r;
    int found = 0;
    if (IS_QUEUE(r)) {
        uint64_t want = p->writable_end_cache - r->cap; /* the batch whose release we wait for */
        for (uint32_t i = 0; i < r->max_consumers && !found; i++) {
            struct shmr_cslot *s = &r->cslots[i];
            if (shmr_load_acquire64(&s->owner) != 0 && shmr_load_acquire32(&s->claim_state) != CLAIM_NONE &&
                shmr_load_relaxed64(&s->claim_pos) == want) {
                *index = i;
                *behind = shmr_load_relaxed64(&s->claim_n);
                found = 1;
            }
        }
    } else if (r->overflow == SHMR_OVERFLOW_BLOCK) {
        uint64_t m = shmr_b_refresh_min(p);
        for (uint32_t i = 0; i < r->max_consumers && !found; i++) {
            struct shmr_cslot *s = &r->cslots[i];
            if (shmr_load_acquire64(&s->owner) != 0 && (shmr_load_acquire32(&s->ready) & SHMR_SLOT_STATE) == SHMR_READY &&
                shmr_load_acquire64(&s->cursor) <= m) {
                *index = i;
                *behind = p->head - m;
                found = 1;
            }
        }
    }
    uint64_t word = found ? (uint64_t)*index + 1 : 0;
    /* written by the producer only; stats read them relaxed as a hint */
    if (shmr_load_relaxed64(&r->ctl->stall) != word) {
        shmr_store_relaxed64(&r->ctl->stall_since_ns, (uint64_t)shmr_mono_ns());
        shmr_store_relaxed64(&r->ctl->stall, word);
    }
    return found;
}

void shmr_producer_unstall(shmr_producer *p) { shmr_store_relaxed64(&p->r->ctl->stall, 0); }

/* Called between wait slices (and by polling calls, at most once per liveness
 * interval), after dead consumers were swept: a consumer still holding the
 * producer back is alive (or of unknown liveness, which eviction, unlike
 * reclaiming, may treat alike: it never assumes the consumer stopped reading,
 * it makes sure what it reads afterwards is discarded). The clock is the
 * stall word's: it starts when the producer first waits on that consumer and
 * restarts whenever another one becomes the holder. */
int shmr_producer_evict(shmr_producer *p)
{
    shmr_ring *r = p->r;
    uint32_t i = 0;
    uint64_t behind = 0;
    if (!r->evict_after_ns || shmr_producer_room(p) > 0 || !shmr_producer_stall(p, &i, &behind))
        return 0;
    uint64_t since = shmr_load_relaxed64(&r->ctl->stall_since_ns);
    if ((uint64_t)shmr_mono_ns() - since < r->evict_after_ns)
        return 0;
    int won = IS_QUEUE(r) ? shmr_q_evict(r, i) : shmr_b_evict(p, i);
    /* a claim caught between states is tried again next slice, on the same clock */
    if (!won && shmr_producer_room(p) == 0)
        return 0;
    shmr_producer_unstall(p);
    /* the evicted consumer may sleep on the data eventcount: its next look
     * finds out */
    shmr_ec_notify_always(r->data_ec);
    return 1;
}

/* ---- consumer ----------------------------------------------------------- */

int shmr_consumer_open(shmr_ring *r, uint32_t start, shmr_consumer **out)
{
    uint64_t me = shmr_self_owner();
    int idx = -1;
    for (int attempt = 0; attempt < 2 && idx < 0; attempt++) {
        for (uint32_t i = 0; i < r->max_consumers; i++) {
            uint64_t expect = 0;
            if (shmr_cas_seqcst64(&r->cslots[i].owner, &expect, me)) {
                idx = (int)i;
                SHMR_HOOK(SHMR_HOOK_SLOT_TAKEN);
                break;
            }
        }
        if (idx < 0 && attempt == 0)
            sweep(r, NULL);
    }
    if (idx < 0)
        return -SHMR_ETABLEFULL;
    shmr_populate(r);
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
    shmr_store_release64(&s->pidns, shmr_self_pidns());
    shmr_store_relaxed64(&s->claim_n, 0);
    shmr_store_relaxed32(&s->claim_state, CLAIM_NONE);
    /* The counters are cumulative over the slot's occupants (see struct
     * shmr_cslot): we only note where ours start. No one else writes them
     * while we own the slot. */
    c->popped_base = shmr_load_relaxed64(&s->popped);
    c->dropped_base = shmr_load_relaxed64(&s->dropped);
    shmr_store_relaxed64(&s->popped_base, c->popped_base);
    shmr_store_relaxed64(&s->dropped_base, c->dropped_base);
    shmr_store_relaxed64(&s->abandoned_base, shmr_load_relaxed64(&s->abandoned));
    shmr_store_relaxed64(&s->abandoned_bytes_base, shmr_load_relaxed64(&s->abandoned_bytes));
    /* a message ring's lost bytes are the current occupant's own count */
    shmr_store_relaxed64(&s->dropped_bytes, 0);
    if (IS_QUEUE(r))
        shmr_store_release32(&s->ready, 1);
    else if (r->kind == SHMR_KIND_MESSAGES)
        shmr_m_join(c, start);
    else
        shmr_b_join(c, start);
    /* a producer may sleep in shmr_wait_consumers(); broadcast-block joins
     * have notified already (shmr_b_join) */
    if (IS_QUEUE(r) || r->overflow != SHMR_OVERFLOW_BLOCK)
        shmr_ec_notify(r->space_ec);
    /* A queue's getters awaiting in event loops watch one another's processes
     * (a getter killed right after a put's single wake reached it holds that
     * wake back, shmr_mpq_peers): they re-read the set after this wake, as
     * for a joining producer (see shmr_producer_open for the ordering); the
     * lane of a queue is the ring whose publish wakes one sleeper. The notify
     * of space_ec above does the same for a producer awaiting room (and is
     * needed by blocking ones too: shmr_wait_consumers). */
    if (r->data_wakes == 1)
        shmr_ec_notify_loops(r->data_ec);
    c->head_cache = shmr_load_acquire64(&r->prod->head);
    *out = c;
    return 0;
}

void shmr_consumer_free(shmr_consumer *c)
{
    if (!c)
        return;
    shmr_ring *r = c->r;
    if (c->claim_n) {
        if (r->kind == SHMR_KIND_MESSAGES)
            shmr_m_release(c, NULL, NULL);
        else
            shmr_release(c);
    }
    shmr_store_release32(&c->slot->ready, 0);
    shmr_store_relaxed64(&c->slot->pidns, 0);
    uint64_t me = c->owner;
    shmr_cas_seqcst64(&c->slot->owner, &me, 0);
    if (!IS_QUEUE(r))
        shmr_b_leave(c);
    free(c);
}

uint64_t shmr_consumer_popped(const shmr_consumer *c) { return c->popped; }
uint64_t shmr_consumer_dropped(const shmr_consumer *c) { return c->dropped; }
uint32_t shmr_consumer_index(const shmr_consumer *c) { return c->index; }

uint64_t shmr_consumer_evicted_claim(const shmr_consumer *c)
{
    return shmr_load_acquire32(&c->slot->claim_state) == CLAIM_EVICTED ? shmr_load_relaxed64(&c->slot->claim_n) : 0;
}

uint64_t shmr_consumer_available(shmr_consumer *c)
{
    return IS_QUEUE(c->r) ? shmr_q_available(c) : shmr_b_available(c);
}

/* Called when a read found nothing: the stream is closed and this consumer
 * has everything published before the close. */
static int closed_and_drained(shmr_consumer *c)
{
    shmr_ring *r = c->r;
    /* pairs with the release CAS of the stream word: head is final after it */
    if (shmr_stream_reason(r) == SHMR_OPEN)
        return 0;
    c->head_cache = shmr_load_acquire64(&r->prod->head);
    if (IS_QUEUE(r))
        return shmr_load_relaxed64(&r->tail_block->tail) >= c->head_cache;
    return c->cursor >= c->head_cache;
}

int64_t shmr_pop(shmr_consumer *c, void *dst, uint64_t max, uint64_t *dropped)
{
    if (shmr_evicted(c))
        return -SHMR_EEVICTED;
    if (max == 0)
        return 0;
    int64_t k = IS_QUEUE(c->r) ? shmr_q_pop(c, dst, max) : shmr_b_pop(c, dst, max, dropped);
    if (k == 0 && closed_and_drained(c))
        return -SHMR_ECLOSED;
    return k;
}

int64_t shmr_claim(shmr_consumer *c, uint64_t max, const void **ptr, uint64_t *dropped)
{
    if (c->claim_n)
        return -EBUSY;
    if (shmr_evicted(c))
        return -SHMR_EEVICTED;
    if (max == 0)
        return 0;
    int64_t k = IS_QUEUE(c->r) ? shmr_q_claim(c, max, ptr) : shmr_b_claim(c, max, ptr, dropped);
    if (k == 0 && closed_and_drained(c))
        return -SHMR_ECLOSED;
    return k;
}

int64_t shmr_release(shmr_consumer *c)
{
    uint64_t pos = c->claim_pos, k = c->claim_n;
    if (k == 0)
        return 0;
    c->claim_n = 0;
    if (IS_QUEUE(c->r))
        return shmr_q_release(c, pos, k, k);
    return shmr_b_release(c, pos, k);
}

int64_t shmr_msg_claim(shmr_consumer *c, shmr_msg *out, uint64_t max, shmr_loss *loss)
{
    if (c->claim_n)
        return -EBUSY;
    if (max == 0)
        return 0;
    int64_t k = shmr_m_claim(c, out, max, loss);
    if (k == 0 && closed_and_drained(c))
        return -SHMR_ECLOSED;
    return k;
}

int64_t shmr_msg_release(shmr_consumer *c, const shmr_msg *msgs, shmr_loss *loss)
{
    return shmr_m_release(c, msgs, loss);
}

void shmr_producer_wait_stats(const shmr_producer *p, shmr_wait_stats *out) { *out = p->spin.st; }

int shmr_consumer_wait(shmr_consumer *c, int64_t timeout_ns, int64_t spin_ns)
{
    if (IS_QUEUE(c->r) && spin_ns > 0) {
        /* a chunk first while the waits are short (see SHMR_Q_DENSE_NS); the
         * sleep and the timeout keep the one-record condition, as ec_wait's
         * lost-wakeup argument has it */
        int dense = c->quick >= SHMR_Q_DENSE_RUN;
        int rc = shmr_spin_wait_more_for(&c->spin, c->r, 0, c->r->data_ec, &c->slot->ready,
                                         dense ? shmr_q_consumer_more : NULL, shmr_q_consumer_ready, c,
                                         timeout_ns, spin_ns, SHMR_Q_DENSE_MORE_NS);
        if (dense) {
            c->spin.st.dense++;
            if (rc == 0 && c->spin.last_ns <= SHMR_Q_DENSE_MORE_NS)
                c->spin.st.dense_won++;
            else
                c->quick = 0; /* the chunk did not come: take records one by one again */
        } else {
            c->quick = rc == 0 && c->spin.last_ns <= SHMR_Q_DENSE_NS ? c->quick + 1 : 0;
        }
        return rc;
    }
    /* marked: a sweep after our death takes our count back */
    return shmr_spin_wait(&c->spin, c->r, 0, c->r->data_ec, &c->slot->ready, IS_QUEUE(c->r) ? shmr_q_consumer_ready : shmr_b_consumer_ready, c,
                        timeout_ns, spin_ns);
}

void shmr_consumer_wait_stats(const shmr_consumer *c, shmr_wait_stats *out) { *out = c->spin.st; }

int shmr_consumer_check_producer(shmr_consumer *c)
{
    shmr_ring *r = c->r;
    uint64_t w = shmr_load_acquire64(&r->ctl->stream); /* generation first, then the owner */
    if ((uint32_t)w != SHMR_OPEN)
        return (int)(uint32_t)w;
    uint64_t owner = shmr_load_acquire64(&r->ctl->producer_owner);
    /* only a producer known dead ends the stream; one in another pid namespace
     * or not ours to inspect is waited for like a live one */
    if (owner == 0 || shmr_owner_liveness(owner, shmr_load_acquire64(&r->ctl->producer_pidns)) != SHMR_DEAD)
        return SHMR_OPEN;
    SHMR_HOOK(SHMR_HOOK_PRODUCER_DEAD);
    /* the producer died without closing: everything it published stays
     * readable, then consumers see end-of-stream */
    if (shmr_cas_seqcst64(&r->ctl->stream, &w, (w & ~0xffffffffull) | SHMR_CLOSED_PRODUCER_DIED))
        shmr_ec_notify_always(r->data_ec);
    return (int)shmr_stream_reason(r);
}

/* Wakes every sleeper of both directions, so each re-checks its handle and
 * its condition (used when a handle is closed under a blocked call). */
void shmr_wake_all(shmr_ring *r)
{
    shmr_ec_notify_always(r->data_ec);
    shmr_ec_notify_always(r->space_ec);
}

/* Event-loop waits (see shmr_ec_arm and uring_wait.h). */
int shmr_consumer_arm(shmr_consumer *c, void **word, uint32_t *seen)
{
    *word = (void *)&c->r->data_ec->epoch;
    return shmr_ec_arm(c->r->data_ec, &c->slot->ready, IS_QUEUE(c->r) ? shmr_q_consumer_ready : shmr_b_consumer_ready,
                       c, seen);
}

void shmr_consumer_disarm(shmr_consumer *c) { shmr_ec_disarm(c->r->data_ec, &c->slot->ready); }

int shmr_consumer_ready(shmr_consumer *c)
{
    return IS_QUEUE(c->r) ? shmr_q_consumer_ready(c) : shmr_b_consumer_ready(c);
}

int shmr_producer_arm(shmr_producer *p, void **word, uint32_t *seen)
{
    *word = (void *)&p->r->space_ec->epoch;
    return shmr_ec_arm(p->r->space_ec, NULL, IS_QUEUE(p->r) ? shmr_q_producer_ready : shmr_b_producer_ready, p, seen);
}

void shmr_producer_disarm(shmr_producer *p) { shmr_ec_disarm(p->r->space_ec, NULL); }

int shmr_producer_ready(shmr_producer *p)
{
    return IS_QUEUE(p->r) ? shmr_q_producer_ready(p) : shmr_b_producer_ready(p);
}

uint64_t shmr_producer_owner(const shmr_ring *r) { return shmr_load_acquire64(&r->ctl->producer_owner); }

int64_t shmr_ring_peers(const shmr_ring *r, int producer_side, uint64_t *out, uint32_t cap)
{
    uint32_t n = 0;
    uint64_t ns = shmr_self_pidns();
    if (!producer_side) {
        /* pairs with the owner CAS of shmr_producer_open (see the notify there) */
        uint64_t owner = shmr_load_acquire64(&r->ctl->producer_owner);
        int rc = shmr_peer_add(owner, shmr_load_acquire64(&r->ctl->producer_pidns), ns, out, cap, &n);
        return rc ? rc : (int64_t)n;
    }
    if (r->evict_after_ns)
        return -EXDEV;
    for (uint32_t i = 0; i < r->max_consumers; i++) {
        /* pairs with the owner CAS of shmr_consumer_open, whose notify of
         * space_ec follows it */
        uint64_t owner = shmr_load_acquire64(&r->cslots[i].owner);
        int rc = shmr_peer_add(owner, shmr_load_acquire64(&r->cslots[i].pidns), ns, out, cap, &n);
        if (rc)
            return rc;
    }
    return (int64_t)n;
}
