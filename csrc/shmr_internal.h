/*
 * Private to the C core: the process-local handles (shmr_ring, shmr_producer,
 * shmr_consumer) that every file of the core reads, a few inline helpers, and
 * the calls the public layer (shmring.c) makes into the protocols (queue.c,
 * broadcast.c) and into segment.c.
 *
 * Indices are free-running uint64_t positions; slot = pos & mask. Each side
 * keeps private cached copies of the other side's words (names ending in
 * _cache) and re-reads the shared word only when the cache says full/empty.
 */
#ifndef SHMR_INTERNAL_H
#define SHMR_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "shmr_atomic.h"
#include "shmr_hooks.h"
#include "shmr_layout.h"
#include "shmring.h"
#include "spin_policy.h"

struct shmr_ring {
    uint8_t *base;
    uint32_t descr_len;  /* copied and bounded at attach: the header is writable by peers */
    uint32_t file_uid, file_mode; /* fstat of the segment when it was mapped */
    size_t size;
    struct shmr_header *hdr;
    struct shmr_prod_block *prod;
    struct shmr_tail_block *tail_block;
    struct shmr_ec *data_ec;  /* consumers sleep here, producer notifies */
    struct shmr_ec *space_ec; /* producer sleeps here, consumers notify */
    int data_wakes;           /* sleepers of data_ec one publish wakes (see shmr_ec_notify_n) */
    struct shmr_ctl *ctl;
    struct shmr_cslot *cslots;
    struct shmr_release_rec *releases; /* queue: see struct shmr_release_rec */
    uint8_t *slots;
    uint64_t cap, mask, stride;
    uint32_t mode, overflow, max_consumers;
    uint32_t kind;            /* enum shmr_kind */
    uint64_t evict_after_ns;  /* 0: consumers are never evicted for stalling */
    shmr_a32 populated; /* process-local, but handles may be opened from several threads */
    size_t populate_bytes; /* how much of the mapping shmr_populate maps up front (0: all of it) */
    int borrowed;       /* the mapping belongs to someone else (a queue's lane): never unmapped */
};

struct shmr_producer {
    shmr_ring *r;
    uint64_t owner;
    uint64_t head;         /* private copy: the producer is the only writer of head */
    uint64_t intent;       /* broadcast: highest intent announced */
    uint64_t writable_end_cache; /* queue: positions < this are known writable */
    uint64_t min_cache;    /* broadcast-block: lower bound of live cursors */
    uint32_t join_seen;    /* broadcast-block: join_epoch at the last min refresh */
    uint64_t reserved;     /* slots handed out by the last shmr_reserve */
    /* message rings (messages.c) */
    uint64_t pend, pend_msgs, pend_bytes; /* placed, not yet published: units, messages, bytes */
    uint64_t last_pend;    /* the last placed message frame */
    uint64_t msgs, bytes;  /* published so far */
    uint64_t oldest;       /* broadcast: private copy of prod->oldest */
    uint64_t want;         /* units of the frame a waiting producer needs */
    uint64_t rewind_units; /* queue: past this offset, write at 0 again if it is free (0: never) */
    uint64_t rewind_next;  /* queue: the position from which the next rewind is tried */
    shmr_a64 *ticket;      /* a queue lane's (mpqueue.c): each frame's cum takes a ticket from it */
    struct shmr_spin spin; /* whether its waits spin first (spin_policy.h) */
};

struct shmr_consumer {
    shmr_ring *r;
    struct shmr_cslot *slot;
    uint32_t index;
    uint64_t owner;
    uint64_t cursor;       /* broadcast: private copy of slot->cursor */
    uint64_t head_cache;   /* cached producer head */
    uint64_t claim_pos, claim_n; /* outstanding zero-copy claim */
    uint64_t popped, dropped;    /* this handle's own counts */
    uint64_t popped_base, dropped_base; /* the slot's cumulative counters when we took it */
    /* message rings (messages.c) */
    uint64_t claim_msgs;   /* messages in the claim */
    uint64_t next_seq, next_cum; /* broadcast: sequence number and byte count at cursor */
    uint64_t claim_seq, claim_cum; /* ... at the end of the claim */
    uint64_t dropped_bytes;
    struct shmr_spin spin; /* whether its waits spin first (spin_policy.h) */
    uint32_t quick;        /* queue: consecutive waits that ended within SHMR_Q_DENSE_NS (shmring.c) */
};

static inline uint64_t shmr_min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* How much room a producer that found the ring full spins for before it
 * writes again (queue.c, broadcast.c: the *_producer_more predicates). Taking
 * each slot as it frees has the producer read the consumer's newest release
 * record (or cursor) once per record, a line the consumer is about to write
 * again; waiting for a chunk moves that line once per chunk. An eighth of the
 * ring, so that the consumer still has 7/8 of it to read meanwhile, and at
 * most SHMR_WAIT_CHUNK_MAX, so that a consumer popping one record per call
 * (about 0.1 us each) frees it well within the SHMR_EC_MORE_NS (20 us) the
 * spin waits for it. */
#define SHMR_WAIT_CHUNK_MAX 64u
static inline uint64_t shmr_wait_chunk(const shmr_ring *r)
{
    uint64_t k = r->cap / 8;
    return k == 0 ? 1 : k > SHMR_WAIT_CHUNK_MAX ? SHMR_WAIT_CHUNK_MAX : k;
}

/* A queue consumer that has caught up with a dense stream (shmring.c,
 * shmr_consumer_wait). Its waits then end within a record's time, and a spin
 * that reads head at every pause takes head's line and the newest record's
 * away from the producer as it writes them: measured, the producer's rate
 * fell with every pop that found the ring empty (benchmarks/README.md). So
 * after SHMR_Q_DENSE_RUN waits in a row that each ended within
 * SHMR_Q_DENSE_NS, a wait first waits for SHMR_Q_DENSE_CHUNK records
 * (shmr_q_consumer_more), looking once per SHMR_EC_POLL_NS, for at most
 * SHMR_Q_DENSE_MORE_NS, then for one record as before. A wait whose chunk
 * did not come in time ends the dense run, so a record that arrives alone
 * is held back at most once by that bound. */
#define SHMR_Q_DENSE_NS 300
#define SHMR_Q_DENSE_RUN 4u
#define SHMR_Q_DENSE_CHUNK 32u
#define SHMR_Q_DENSE_MORE_NS 4000

/* Whether the producer evicted this consumer (evict_after). Acquire: pairs with
 * the seq_cst CAS of ready in shmr_b_evict / store in shmr_q_evict. */
static inline int shmr_evicted(const shmr_consumer *c)
{
    return c->r->evict_after_ns && (shmr_load_acquire32(&c->slot->ready) & SHMR_SLOT_STATE) == SHMR_EVICTED_MARK;
}

/* Why the stream ended (SHMR_OPEN while it runs). Acquire: pairs with the
 * release CAS of the stream word in shmring.c (close_stream and the dead
 * producer check), after which head is final. */
static inline uint32_t shmr_stream_reason(const shmr_ring *r)
{
    return (uint32_t)shmr_load_acquire64(&r->ctl->stream);
}

/* Copies in and out of the slots: at most two memcpy calls, the ring wraps once at most. */
static inline void shmr_copy_in(shmr_ring *r, uint64_t pos, const void *src, uint64_t n)
{
    uint64_t s = pos & r->mask;
    uint64_t first = shmr_min_u64(n, r->cap - s);
    memcpy(r->slots + s * r->stride, src, first * r->stride);
    if (n > first)
        memcpy(r->slots, (const uint8_t *)src + first * r->stride, (n - first) * r->stride);
}

/* verify/tsan.supp names this function (an inlined frame still carries its
 * name) as the reader of the deliberate overwrite-mode slot race. */
static inline void shmr_copy_out(shmr_ring *r, uint64_t pos, void *dst, uint64_t n)
{
    uint64_t s = pos & r->mask;
    uint64_t first = shmr_min_u64(n, r->cap - s);
    memcpy(dst, r->slots + s * r->stride, first * r->stride);
    if (n > first)
        memcpy((uint8_t *)dst + first * r->stride, r->slots, (n - first) * r->stride);
}

/* segment.c */
void shmr_populate(shmr_ring *r);
/* ring images, for ring segments and queue lanes alike: the size the image of
 * p takes (0 or -EINVAL), formatting one at base (p checked; magic last), and
 * validating + binding one at base with avail bytes mapped */
int shmr_image_size(const shmr_params *p, uint64_t *size);
void shmr_image_format(uint8_t *base, const shmr_params *p, uint64_t me);
int shmr_image_bind(uint8_t *base, uint64_t avail, shmr_ring *r);
/* building a segment file: open (name NULL: an anonymous memfd), size + map,
 * publish under its name once complete (or abort: nothing is left) */
struct shmr_build {
    int fd;
    uint8_t *base;
    uint64_t size;
    char tmp[320], final[320];
};
int shmr_build_open(struct shmr_build *b, const char *name, unsigned mode_bits, uint64_t me);
int shmr_build_map(struct shmr_build *b, uint64_t size, uint64_t reserve);
int shmr_build_publish(struct shmr_build *b);
void shmr_build_abort(struct shmr_build *b);
/* opens the segment file of a name (read-write) */
int shmr_open_name(const char *name, int *fd);

/* queue.c, for messages.c as well: q_writable, the claim CAS and the release */
uint64_t shmr_q_writable(shmr_producer *p, uint64_t n);
int shmr_q_try_claim(shmr_consumer *c, uint64_t *t, uint64_t k);
int shmr_q_claimable(shmr_consumer *c, uint64_t *t);

/* queue.c: each returns what the public call of the same name returns, except
 * that "nothing there" is 0 and the public layer decides about end of stream. */
int shmr_q_producer_open(shmr_producer *p);
void shmr_q_publish(shmr_producer *p, uint64_t k);
int shmr_q_producer_ready(void *p);
int shmr_q_producer_more(void *p);
int64_t shmr_q_pop(shmr_consumer *c, void *dst, uint64_t max);
int64_t shmr_q_claim(shmr_consumer *c, uint64_t max, const void **ptr);
/* delivered: what the consumer counts as received (k records; a message batch's message count) */
int shmr_q_release(shmr_consumer *c, uint64_t pos, uint64_t k, uint64_t delivered);
int shmr_q_evict(shmr_ring *r, uint32_t i);
int shmr_q_consumer_ready(void *c);
int shmr_q_consumer_more(void *c);
uint64_t shmr_q_free(shmr_producer *p);
uint64_t shmr_q_available(shmr_consumer *c);
uint64_t shmr_q_reclaim(shmr_ring *r, uint32_t i, const int *alive, const int *dead);

/* broadcast.c */
int shmr_b_producer_open(shmr_producer *p);
uint64_t shmr_b_room(shmr_producer *p, uint64_t n);
void shmr_b_publish(shmr_producer *p, uint64_t k);
int shmr_b_producer_ready(void *p);
int shmr_b_producer_more(void *p);
uint64_t shmr_b_refresh_min(shmr_producer *p);
void shmr_b_join(shmr_consumer *c, uint32_t start);
void shmr_b_leave(shmr_consumer *c);
int shmr_b_evict(shmr_producer *p, uint32_t i);
int64_t shmr_b_pop(shmr_consumer *c, void *dst, uint64_t max, uint64_t *dropped);
int64_t shmr_b_claim(shmr_consumer *c, uint64_t max, const void **ptr, uint64_t *dropped);
int64_t shmr_b_release(shmr_consumer *c, uint64_t pos, uint64_t k);
int shmr_b_consumer_ready(void *c);
uint64_t shmr_b_free(shmr_producer *p);
uint64_t shmr_b_available(shmr_consumer *c);
/* for messages.c as well */
uint64_t shmr_b_writable(shmr_producer *p, uint64_t n);
uint64_t shmr_b_announce(shmr_producer *p, uint64_t k);
void shmr_b_advance(shmr_consumer *c, uint64_t to, uint64_t delivered, uint64_t lost);

/* messages.c */
void shmr_m_producer_open(shmr_producer *p);
void shmr_m_join(shmr_consumer *c, uint32_t start);
int64_t shmr_m_claim(shmr_consumer *c, shmr_msg *out, uint64_t max, shmr_loss *loss);
int64_t shmr_m_release(shmr_consumer *c, const shmr_msg *msgs, shmr_loss *loss);
void shmr_m_count(const shmr_ring *r, uint64_t pos, uint64_t units, uint64_t *msgs, uint64_t *bytes);
/* Queue mode, without claiming: the message frame at pos (after a padding
 * frame there) if it lies below head: 1 with its cum word and the position
 * after it, else 0. What it reads may be stale once another consumer took it. */
int shmr_m_peek(const shmr_ring *r, uint64_t pos, uint64_t head, uint64_t *cum, uint64_t *next);

#endif
