/*
 * shmring: a single-producer, multi-consumer ring of fixed-size records in a
 * POSIX shared-memory segment.
 *
 * Calls that can fail return 0 (or a count) on success and -errno (or
 * -SHMR_E...) on failure; the Python binding turns codes into exceptions in
 * one place. The others say what they return: getters return the value,
 * shmr_proc_alive a truth value, shmr_consumer_check_producer the close
 * reason, shmr_producer_recover the number of consumers evicted, and the
 * *_free / shmr_detach / shmr_commit / shmr_wake_all calls nothing. Handles
 * (shmr_ring, shmr_producer, shmr_consumer) are private to a process; only
 * the segment they point into is shared.
 */
#ifndef SHMRING_H
#define SHMRING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SHMR_LAYOUT_VERSION 3u /* 2: cumulative per-slot counters, pid namespaces, stall words;
                                * 3: evict_after (releases by CAS, evicted slots) */
/* User part of a name. /dev/shm allows 255-byte file names; 200 leaves room for
 * the "shmr-" prefix and for a private name a segment may be built under
 * (prefix, creator pid and start time before the name). */
#define SHMR_NAME_MAX 200
#define SHMR_DESCR_MAX 3968u    /* dtype descriptor text, header padded to 4 KiB */
#define SHMR_MAX_CAPACITY (1ull << 32)
#define SHMR_MAX_CONSUMERS 1024u

/* extra error codes beyond errno (negated like errno values) */
#define SHMR_E_BASE 10000
#define SHMR_EBADMAGIC (SHMR_E_BASE + 1)   /* not a shmring segment */
#define SHMR_EVERSION (SHMR_E_BASE + 2)    /* other layout version */
#define SHMR_ETRUNC (SHMR_E_BASE + 3)      /* segment shorter than its header says */
#define SHMR_ECORRUPT (SHMR_E_BASE + 4)    /* header field out of bounds */
#define SHMR_ECLOSED (SHMR_E_BASE + 5)     /* stream closed and drained */
#define SHMR_EPRODUCER (SHMR_E_BASE + 6)   /* a live producer already holds the ring */
#define SHMR_ETABLEFULL (SHMR_E_BASE + 7)  /* every consumer slot is taken */
#define SHMR_EINIT (SHMR_E_BASE + 8)       /* creator has not finished initialising */
#define SHMR_ESTATE (SHMR_E_BASE + 9)      /* a shared index is impossible (corrupt ring state) */
#define SHMR_ECREATOR (SHMR_E_BASE + 10)   /* the creator died before finishing the segment */
#define SHMR_EEVICTED (SHMR_E_BASE + 11)   /* this consumer was evicted for stalling the producer */
#define SHMR_ELANES (SHMR_E_BASE + 12)     /* queue: every lane is held by a live producer */
#define SHMR_ENOTQUEUE (SHMR_E_BASE + 13)  /* a shmring segment, but not a queue */

/* liveness of a recorded process */
enum shmr_liveness { SHMR_DEAD = 0, SHMR_ALIVE = 1, SHMR_UNKNOWN = 2 };

enum shmr_mode { SHMR_MODE_QUEUE = 0, SHMR_MODE_BROADCAST = 1 };
enum shmr_overflow { SHMR_OVERFLOW_BLOCK = 0, SHMR_OVERFLOW_OVERWRITE = 1 };
enum shmr_start { SHMR_START_LATEST = 0, SHMR_START_OLDEST = 1 };
/* a ring of fixed-size records of one dtype, or of messages of any size (messages.c) */
enum shmr_kind { SHMR_KIND_RECORDS = 0, SHMR_KIND_MESSAGES = 1 };
#define SHMR_MSG_UNIT 16u       /* message rings: positions count units of this many bytes */

/* why a stream ended (shmr_ring_info.close_reason) */
enum shmr_close_reason {
    SHMR_OPEN = 0,
    SHMR_CLOSED_BY_PRODUCER = 1,
    SHMR_CLOSED_PRODUCER_DIED = 2,
};

typedef struct shmr_ring shmr_ring;
typedef struct shmr_producer shmr_producer;
typedef struct shmr_consumer shmr_consumer;

typedef struct shmr_params {
    uint64_t capacity;      /* records, power of two */
    uint64_t record_size;   /* bytes, = numpy itemsize */
    uint32_t record_align;  /* numpy alignment */
    uint32_t mode;          /* enum shmr_mode */
    uint32_t overflow;      /* enum shmr_overflow (broadcast only) */
    uint32_t max_consumers;
    const char *descr;      /* dtype descriptor text */
    uint32_t descr_len;
    uint32_t kind;          /* enum shmr_kind; messages: capacity counts units,
                             * record_size = record_align = SHMR_MSG_UNIT */
    uint32_t evict_after_ms; /* block mode: evict a consumer holding the producer back this
                              * long (0: never) */
} shmr_params;

/* The stats of a ring. The field names are the keys of Ring.stats() (the
 * binding turns the struct into a dict as it is; README "Stats" documents it). */
typedef struct shmr_consumer_info {
    uint32_t index;         /* consumer slot */
    uint32_t pid;
    uint64_t start_time;    /* process start time (low 32 bits), with pid its identity */
    uint64_t cursor;        /* broadcast: next position to read */
    uint64_t popped;        /* records received */
    uint64_t dropped;       /* broadcast-overwrite: records lost to laps */
    uint64_t dropped_bytes; /* message rings: body bytes of those */
    uint64_t claim_pos;     /* queue: first position of the batch held, if any */
    uint64_t claimed;       /* queue: records claimed, not yet released */
    int alive;              /* enum shmr_liveness (the binding names it "liveness") */
    int evicted;            /* evicted for stalling the producer (evict_after); its handle
                             * raises Evicted, its slot is freed when it closes or dies */
} shmr_consumer_info;

typedef struct shmr_waiters {
    uint32_t consumers;     /* consumers asleep waiting for records */
    uint32_t producer;      /* the producer asleep waiting for room */
} shmr_waiters;

/* How a handle's waits went (process-local; see spin_policy.h). */
typedef struct shmr_wait_stats {
    uint64_t waits;         /* eventcount waits entered */
    uint64_t spun;          /* of which began with a spin */
    uint64_t spin_won;      /* of those, ended by the spin within its budget */
    uint64_t looks;         /* looks where the peer runs, after a spin ran out */
    uint64_t shared_cpu;    /* of those, found the peer on our CPU */
    uint64_t slept_at_once; /* skipped the spin: the last one ran out that way */
    uint64_t switches;      /* changes between spinning and sleeping at once */
    uint64_t dense;         /* queue consumer: waits for a chunk of records (a dense stream) */
    uint64_t dense_won;     /* of those, ended by the chunk */
} shmr_wait_stats;

typedef struct shmr_ring_info {
    uint64_t capacity, record_size, segment_size;
    uint32_t mode, overflow, max_consumers, layout_version;
    uint64_t pushed;        /* records published (the head position) */
    uint64_t tail;          /* queue: records claimed by consumers; broadcast: slowest cursor */
    uint64_t popped;        /* records received by consumers, those that left included */
    uint64_t popped_retired; /* of which by consumers that have left */
    uint64_t available;     /* published, not yet taken (queue) / not yet read by the slowest (broadcast) */
    uint32_t n_consumers;
    shmr_waiters waiters;
    uint32_t producer_pid;  /* 0: no producer */
    uint64_t producer_start;
    int producer_alive;     /* enum shmr_liveness */
    uint32_t close_reason;  /* enum shmr_close_reason */
    uint64_t abandoned;     /* queue: records reclaimed from dead consumers */
    uint64_t evicted;       /* consumers evicted because their process died */
    uint64_t evicted_stalled; /* live consumers evicted for holding the producer back (evict_after) */
    uint32_t evict_after_ms; /* 0: never */
    uint32_t creator_pid;
    uint64_t creator_start; /* with creator_pid its identity */
    int creator_alive;      /* enum shmr_liveness */
    uint64_t create_time_ns; /* CLOCK_REALTIME */
    uint32_t kind;          /* enum shmr_kind; message rings count pushed / popped /
                             * available / abandoned / dropped in messages */
    uint64_t bytes_pushed;  /* message rings: body bytes published */
    uint64_t abandoned_bytes; /* message rings: body bytes of the abandoned messages */
    uint64_t max_message;   /* message rings: the largest body */
} shmr_ring_info;

/* segments */
int shmr_name_check(const char *name);
int shmr_create(const char *name, const shmr_params *params, unsigned mode_bits, shmr_ring **out);
int shmr_attach(const char *name, shmr_ring **out);
int shmr_attach_fd(int fd, shmr_ring **out);          /* validates, takes over fd */
void shmr_detach(shmr_ring *r);
int shmr_unlink(const char *name);
const char *shmr_descr(const shmr_ring *r, uint32_t *len);
uint64_t shmr_capacity(const shmr_ring *r);
uint64_t shmr_record_size(const shmr_ring *r);
uint32_t shmr_mode(const shmr_ring *r);
uint32_t shmr_overflow(const shmr_ring *r);
uint32_t shmr_kind(const shmr_ring *r);
int shmr_info(shmr_ring *r, shmr_ring_info *out);
int shmr_consumer_infos(shmr_ring *r, shmr_consumer_info *out, uint32_t max, uint32_t *n);
/* the consumer a waiting producer last found holding it back, and for how long (ns); 1 if any */
int shmr_stall_info(shmr_ring *r, uint32_t *index, uint64_t *ns);

/* The segment layout for tools and tests (csrc/shmr_layout.h is its source):
 * one entry per field, "region.field", and one per region, "region". Field
 * offsets count from the segment start, except for the per-consumer slots
 * ("cslot.") and the queue's release records ("release."), whose offsets count
 * from the start of one slot / record. A region's entry gives where it starts
 * and its size (per slot / per record for cslot and release; the release
 * records start at header.releases_offset, so that entry's offset is 0). */
typedef struct shmr_layout_field {
    const char *name;
    uint64_t offset;
    uint64_t size;
} shmr_layout_field;
const shmr_layout_field *shmr_layout_fields(uint32_t *n);

/* process identity: (pid, start time) so pid reuse cannot fool liveness */
uint64_t shmr_proc_start_time(uint32_t pid);
/* enum shmr_liveness; pidns 0 = the caller's namespace */
int shmr_proc_liveness(uint32_t pid, uint64_t start_time, uint64_t pidns);
int shmr_proc_alive(uint32_t pid, uint64_t start_time); /* not known dead */
uint64_t shmr_self_pidns(void);
/* owner and mode bits of the segment's file, as fstat saw them when mapped */
void shmr_file_owner(const shmr_ring *r, uint32_t *uid, uint32_t *mode);

/* producer */
int shmr_producer_open(shmr_ring *r, shmr_producer **out);
void shmr_producer_free(shmr_producer *p);             /* releases the role, does not close */
int shmr_producer_close_stream(shmr_producer *p);      /* end of stream */
/* copies up to n records, in at most two memcpy calls; returns records pushed (0: full) */
int64_t shmr_push(shmr_producer *p, const void *src, uint64_t n);
/* zero-copy: pointer to up to n contiguous writable slots; returns count (0: full) */
int64_t shmr_reserve(shmr_producer *p, uint64_t n, void **ptr);
void shmr_commit(shmr_producer *p, uint64_t n);
/* waits until a slot may be free; busy-polls spin_ns first; 0, -ETIMEDOUT, -EINTR */
int shmr_producer_wait(shmr_producer *p, int64_t timeout_ns, int64_t spin_ns);
void shmr_producer_wait_stats(const shmr_producer *p, shmr_wait_stats *out);
/* between wait slices: evict dead consumers and release what they had claimed;
 * returns the consumers evicted, *reclaimed = records released */
int shmr_producer_recover(shmr_producer *p, uint64_t *reclaimed);
/* with evict_after: when no slot is free and one live consumer has held the
 * producer back for evict_after, evicts it (queue: its claim is abandoned and
 * counted); 1 if one was evicted (room may have been made), 0 otherwise */
int shmr_producer_evict(shmr_producer *p);
/* the consumer holding a full ring back (recorded for stats with the time the
 * producer first waited on it); 1 if one was found */
int shmr_producer_stall(shmr_producer *p, uint32_t *index, uint64_t *behind);
void shmr_producer_unstall(shmr_producer *p);
/* slots a push could fill now without waiting (capacity in overwrite mode) */
uint64_t shmr_producer_room(shmr_producer *p);
/* registered consumers (slots taken and ready, alive or not yet swept) */
uint32_t shmr_consumer_count(shmr_ring *r);
/* waits until at least n consumers are registered; 0, -ETIMEDOUT or -EINTR.
 * Every join notifies the producer's eventcount, so this sleeps on the futex. */
int shmr_wait_consumers(shmr_ring *r, uint32_t n, int64_t timeout_ns, int64_t spin_ns);

/* frees the slots of dead consumers (queue: their claims are released and
 * counted abandoned); returns how many, *reclaimed (may be NULL) = released */
int shmr_sweep(shmr_ring *r, uint64_t *reclaimed);

/* consumer */
int shmr_consumer_open(shmr_ring *r, uint32_t start, shmr_consumer **out);
void shmr_consumer_free(shmr_consumer *c);
/* copies up to max records into dst; returns records copied, 0 when empty,
 * -SHMR_ECLOSED when closed and drained. *dropped += records lost to laps. */
int64_t shmr_pop(shmr_consumer *c, void *dst, uint64_t max, uint64_t *dropped);
/* zero-copy: claim up to max contiguous records in place; release with shmr_release */
int64_t shmr_claim(shmr_consumer *c, uint64_t max, const void **ptr, uint64_t *dropped);
/* releases the last claim; returns 0, or >0 = records of the claim that were
 * overwritten while held (broadcast-overwrite only) */
int64_t shmr_release(shmr_consumer *c);
int shmr_consumer_wait(shmr_consumer *c, int64_t timeout_ns, int64_t spin_ns);
void shmr_consumer_wait_stats(const shmr_consumer *c, shmr_wait_stats *out);
/* between wait slices: close the stream if the producer died; returns the
 * close reason (SHMR_OPEN while it runs) */
int shmr_consumer_check_producer(shmr_consumer *c);
uint64_t shmr_consumer_popped(const shmr_consumer *c);
uint64_t shmr_consumer_dropped(const shmr_consumer *c);
uint32_t shmr_consumer_index(const shmr_consumer *c);
/* records of this consumer's claim that the producer took back when it evicted it */
uint64_t shmr_consumer_evicted_claim(const shmr_consumer *c);
/* records this consumer could read now (queue: not yet claimed by anyone) */
uint64_t shmr_consumer_available(shmr_consumer *c);
uint32_t shmr_close_reason(const shmr_ring *r);
void shmr_wake_all(shmr_ring *r);

/* ---- message rings (messages.c) ----------------------------------------- */

/* one message as a consumer claimed it, in place */
typedef struct shmr_msg {
    const void *body;       /* 16-byte aligned, len bytes, contiguous */
    uint64_t pos;           /* position of its frame (units) */
    uint64_t len;
    uint32_t kind;          /* what the body holds, 1..255 (the codec's business) */
} shmr_msg;

/* what a broadcast-overwrite consumer lost to laps */
typedef struct shmr_loss {
    uint64_t msgs, bytes;
} shmr_loss;

/* the largest body a message ring carries: half the ring less a frame header,
 * because a frame never wraps and may have to follow a padding frame */
uint64_t shmr_msg_max(const shmr_ring *r);
/* Producer: places a message of len bytes after those already placed and not
 * yet published; *body = where to write it. 1: placed, 0: no room now (publish
 * what is pending, wait, try again), -EMSGSIZE: larger than shmr_msg_max,
 * -EINVAL: kind out of 1..255. Nothing is visible before shmr_msg_commit. */
int shmr_msg_reserve(shmr_producer *p, uint32_t kind, uint64_t len, void **body);
/* Queue mode: once a frame would end more than nbytes (or four such frames)
 * into the lap and the start of the ring is free, the producer pads to the
 * end of the lap and writes at offset 0 (messages.c m_rewind_pad), so a
 * consumer that keeps up leaves a working set of about nbytes instead of the
 * whole ring. 0 turns it off; so do other modes and an nbytes over a quarter
 * of the ring. A producer starts with it off (see shmr_m_producer_open);
 * SHMR_MSG_REWIND_BYTES is the window to use for a lane of 4 MiB and more. */
#define SHMR_MSG_REWIND_BYTES (512u << 10)
void shmr_msg_set_rewind(shmr_producer *p, uint64_t nbytes);
/* where the next frame would start (bytes into the lap), for tests */
uint64_t shmr_msg_lap_offset(const shmr_producer *p);
/* publishes every placed message at once; returns how many */
uint64_t shmr_msg_commit(shmr_producer *p);
/* forgets the placed, unpublished messages */
void shmr_msg_cancel(shmr_producer *p);
/* waits until a message of len bytes can be placed; 0, -ETIMEDOUT, -EINTR */
int shmr_msg_producer_wait(shmr_producer *p, uint64_t len, int64_t timeout_ns, int64_t spin_ns);
/* Consumer: claims up to max messages in place (queue: a batch that is this
 * consumer's alone; broadcast: the next ones). Count, 0 when empty,
 * -SHMR_ECLOSED when closed and drained, -EBUSY with a claim outstanding,
 * -EIO on a corrupt frame. loss (may be NULL) += messages lapped before them. */
int64_t shmr_msg_claim(shmr_consumer *c, shmr_msg *out, uint64_t max, shmr_loss *loss);
/* Releases the claim; msgs is what shmr_msg_claim filled. Returns how many
 * leading messages of it may have been overwritten while held (broadcast-
 * overwrite; their contents are invalid), also added to loss. */
int64_t shmr_msg_release(shmr_consumer *c, const shmr_msg *msgs, shmr_loss *loss);
/* 1 if the first claimed message is still intact (broadcast-overwrite check
 * of a copy made before release); always 1 in the other modes */
int shmr_msg_intact(shmr_consumer *c, const shmr_msg *msgs);
uint64_t shmr_consumer_dropped_bytes(const shmr_consumer *c);
/* broadcast: the sequence number of the next message this consumer will claim
 * (messages published before it, whoever read them); with no claim held it
 * equals its start's sequence number plus what it popped and lost */
uint64_t shmr_msg_next_seq(const shmr_consumer *c);

/* Event-loop waits (uring_wait.h sleeps on the word): arm counts the caller as
 * a sleeper of its side and re-checks, as a blocking wait does before it
 * sleeps. 1: ready now (nothing counted); 0: armed, *word is the futex word to
 * wait on with the value *seen, and one *_disarm is owed. ready: the side may
 * make progress now (records or end of stream / room). */
int shmr_consumer_arm(shmr_consumer *c, void **word, uint32_t *seen);
void shmr_consumer_disarm(shmr_consumer *c);
int shmr_consumer_ready(shmr_consumer *c);
int shmr_producer_arm(shmr_producer *p, void **word, uint32_t *seen);
void shmr_producer_disarm(shmr_producer *p);
int shmr_producer_ready(shmr_producer *p);
/* A message producer's: progress is room for a message of len body bytes (one
 * that can never fit counts as ready: pushing it raises at once). Disarm with
 * shmr_producer_disarm. */
int shmr_msg_producer_arm(shmr_producer *p, uint64_t len, void **word, uint32_t *seen);
int shmr_msg_producer_ready(shmr_producer *p, uint64_t len);
/* the producer's owner word, (start time low 32 bits << 32) | pid, 0: none */
uint64_t shmr_producer_owner(const shmr_ring *r);
/* The processes whose exit may end an event-loop wait on one side of r, as
 * distinct owner words (see shmr_peer_add): a consumer's producer; a
 * producer's consumers. Fills out[0..min(n, cap)), returns n; -EXDEV when
 * one of them cannot be watched through a pidfd, and for a producer of a ring
 * with evict_after (its evictions come with time, not with an exit): the wait
 * then runs its liveness check on a timer. Read after the wait is armed: a
 * process that takes the role or a slot later notifies the eventcount the
 * waiter is counted on (shmr_producer_open, shmr_consumer_open). */
int64_t shmr_ring_peers(const shmr_ring *r, int producer_side, uint64_t *out, uint32_t cap);

#endif
