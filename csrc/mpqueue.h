/*
 * Queue segments: many producer processes, many consumer processes, one
 * shared-memory segment (shmring.Queue).
 *
 * Each producer process takes a lane, a single-producer message ring in queue
 * mode inside the segment, with the producer role every ring has ((pid, start
 * time) CAS; a dead owner's lane is taken over). Consumers take from every
 * lane in use. So the lock-free single-producer core is kept, and a producer
 * killed mid-put costs at most the items it was writing, counted as lost.
 * Calls return 0 / counts or -errno / -SHMR_E..., as in shmring.h.
 */
#ifndef SHMR_MPQUEUE_H
#define SHMR_MPQUEUE_H

#include <stdint.h>

#include "shmring.h"

#define SHMR_MPQ_MAX_LANES 1024u
#define SHMR_MPQ_MIN_LANE_BYTES 1024u

typedef struct shmr_mpq shmr_mpq;

typedef struct shmr_mpq_params {
    uint32_t lanes;         /* producer processes at once (max_producers) */
    uint32_t max_consumers; /* consumer processes at once */
    uint64_t lane_bytes;    /* ring bytes of every lane, a power of two */
    int64_t maxsize;        /* items; <= 0: bounded by lane_bytes only */
} shmr_mpq_params;

/* Ring of a queue as shmring.Queue stats and `shmring info` show it. */
typedef struct shmr_mpq_info {
    uint32_t lanes, lanes_used, max_consumers, layout_version;
    int64_t maxsize;
    uint64_t lane_bytes, segment_size;
    uint64_t items;      /* published and not yet taken */
    uint64_t bytes;      /* ring bytes those occupy (frame headers included) */
    uint64_t put;        /* items ever published */
    uint64_t got;        /* items ever taken by a consumer */
    uint64_t abandoned;  /* taken by a consumer that died before it had them */
    uint64_t lost;       /* admitted by a producer that died before publishing them */
    uint64_t admitted;   /* items admitted (JoinableQueue: tasks ever put) */
    uint64_t done;       /* JoinableQueue: task_done() calls */
    uint32_t producers;  /* lanes whose producer is not known dead */
    uint32_t consumers;  /* the most consumers registered on one lane */
    uint32_t creator_pid;
    uint64_t create_time_ns;
} shmr_mpq_info;

/* name NULL: an anonymous segment (a memfd) */
int shmr_mpq_create(const char *name, const shmr_mpq_params *p, unsigned mode_bits, shmr_mpq **out);
int shmr_mpq_attach(const char *name, shmr_mpq **out);
int shmr_mpq_attach_fd(int fd, shmr_mpq **out); /* validates; keeps fd (closed by detach) */
void shmr_mpq_detach(shmr_mpq *q);
int shmr_mpq_fd(const shmr_mpq *q);
void shmr_mpq_params_of(const shmr_mpq *q, shmr_mpq_params *out);
void shmr_mpq_file_owner(const shmr_mpq *q, uint32_t *uid, uint32_t *mode);
/* lanes < this may hold items */
uint32_t shmr_mpq_lanes_used(const shmr_mpq *q);
/* A ring handle on lane i (shmr_detach frees the handle, never the mapping);
 * -EAGAIN while the lane is not formatted. */
int shmr_mpq_lane_open(shmr_mpq *q, uint32_t i, shmr_ring **out);
/* Takes the first lane no live process holds, formatting it on first use:
 * its ring handle and producer role. -SHMR_ELANES: every lane is held. */
int shmr_mpq_producer_open(shmr_mpq *q, shmr_ring **ring, shmr_producer **out, uint32_t *lane);
/* Counts n items against maxsize before they are published (the caller
 * holds lane's producer role). 1: admitted; 0: over maxsize, nothing counted
 * (wait with shmr_mpq_wait_room). *consumed caches the taken count between
 * calls (it only grows, so a stale one overestimates what is queued). */
int shmr_mpq_admit(shmr_mpq *q, uint32_t lane, uint64_t n, uint64_t *consumed);
/* Takes back n admitted items that were not published. */
void shmr_mpq_unadmit(shmr_mpq *q, uint32_t lane, uint64_t n);
/* 0, -ETIMEDOUT, -EINTR: waits until n more items would fit maxsize */
int shmr_mpq_wait_room(shmr_mpq *q, uint64_t n, int64_t timeout_ns, int64_t spin_ns);
/* 0, -ETIMEDOUT, -EINTR: waits until a lane holds an item not yet taken */
int shmr_mpq_wait_data(shmr_mpq *q, int64_t timeout_ns, int64_t spin_ns);
int shmr_mpq_has_data(shmr_mpq *q);
/* Where a get should take from: the lane holding the oldest item (by ticket)
 * and how many of its items, at most max, are older than any other lane's.
 * 1 found, 0 nothing queued. Not thread-safe per handle (binds lanes lazily). */
int shmr_mpq_pick(shmr_mpq *q, uint64_t max, uint32_t *lane, uint64_t *count);
/* After a get released what the last pick named: passes the publisher's
 * single wake on to another getter when items remain, and tells putters
 * waiting under maxsize. */
void shmr_mpq_taken(shmr_mpq *q);
/* A getter that stops waiting without an item (timeout, cancellation): if
 * items are there and getters sleep, wakes one (it may have had the wake). */
void shmr_mpq_leave(shmr_mpq *q);
/* items published and not yet taken (exact when nothing moves) */
uint64_t shmr_mpq_items(shmr_mpq *q);
/* JoinableQueue: one task done; -ERANGE if more than were ever put */
int shmr_mpq_task_done(shmr_mpq *q);
/* admitted - done - abandoned, never below 0 */
uint64_t shmr_mpq_unfinished(shmr_mpq *q);
int shmr_mpq_wait_join(shmr_mpq *q, int64_t timeout_ns, int64_t spin_ns);
/* Between wait slices: frees the consumer slots of dead consumers on every
 * lane (their claims counted abandoned) and repairs lanes whose producer died
 * between admitting and publishing (counted lost). Returns what it fixed. */
uint64_t shmr_mpq_recover(shmr_mpq *q);
/* The processes whose exit may end an event-loop wait on the queue: every
 * lane's producer (one that died between admitting and publishing holds room
 * under maxsize until recovery repairs its lane) and every lane's consumers
 * (one that died holding claimed items holds room until recovery counts them
 * abandoned; one killed right after a put's single wake reached it holds that
 * wake back). As shmr_ring_peers: distinct owner words, not this process;
 * returns how many, or -EXDEV when one cannot be watched through a pidfd. */
int64_t shmr_mpq_peers(shmr_mpq *q, uint64_t *out, uint32_t cap);
/* A process took a lane or a consumer slot: awaiting getters and putters
 * re-read the peers they watch (see shmr_mpq_peers). A lane's consumer open
 * notifies the getters itself (shmr_consumer_open); putters under maxsize
 * sleep on the queue's space eventcount, which only this call reaches. */
void shmr_mpq_joined(shmr_mpq *q);
int shmr_mpq_stats(shmr_mpq *q, shmr_mpq_info *out);
void shmr_mpq_wake_all(shmr_mpq *q);

/* Event-loop waits (see shmr_ec_arm in eventcount.h): 1 ready now (nothing
 * counted), 0 armed on *word with *seen (one disarm owed). Data is what
 * shmr_mpq_wait_data waits for; room is shmr_mpq_wait_room's room for n items
 * under maxsize (always ready without a maxsize). */
int shmr_mpq_arm_data(shmr_mpq *q, void **word, uint32_t *seen);
void shmr_mpq_disarm_data(shmr_mpq *q);
int shmr_mpq_room_ready(shmr_mpq *q, uint64_t n);
int shmr_mpq_arm_room(shmr_mpq *q, uint64_t n, void **word, uint32_t *seen);
void shmr_mpq_disarm_room(shmr_mpq *q);

#endif
