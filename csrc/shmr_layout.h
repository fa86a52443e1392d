/*
 * The bytes of a shmring segment: the one place that knows an offset.
 *
 * Page 0 is the immutable header. Page 1 holds the control blocks, each on its
 * own 128-byte block, then one block per consumer slot, then (queue mode) one
 * release record per slot, then the record slots on a page boundary. Every
 * offset used anywhere (C, the binding, the fuzzer, the tests) comes from the
 * structs and OFF_ constants below; the binding exports them as
 * shmring._ring.LAYOUT (see shmr_layout_fields in segment.c).
 */
#ifndef SHMR_LAYOUT_H
#define SHMR_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "shmr_atomic.h"
#include "shmring.h"

#define SHMR_MAGIC 0x31474e4952524d53ull /* "SMRRING1" read as little-endian bytes */
#define SHMR_BLOCK 128u                  /* two 64-byte lines: x86 adjacent-line prefetch pairs them */
#define SHMR_PAGE 4096u
#define SHMR_MAX_RECORD (1ull << 30)

/* A slot being torn down by a sweeper: BUSY tag in the start-time half, the
 * sweeper's pid in the other, so a sweeper that dies mid-way can be detected. */
#define SHMR_BUSY_TAG 0xffffffffull
#define SHMR_OWNER_BUSY(pid) ((SHMR_BUSY_TAG << 32) | (uint64_t)(pid))
#define SHMR_IS_BUSY(owner) (((owner) >> 32) == SHMR_BUSY_TAG)

#define SHMR_ALIGNED_BLOCK __attribute__((aligned(SHMR_BLOCK)))

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
    uint64_t releases_offset; /* queue: the release records; 0 in broadcast mode */
    uint64_t slots_offset;
    uint64_t create_time_ns;
    uint32_t creator_pid;
    uint32_t descr_len;
    uint32_t kind;            /* enum shmr_kind */
    uint32_t evict_after_ms;  /* block mode: evict a consumer stalling the producer this long (0: never) */
    uint64_t creator_start; /* with creator_pid: who made the segment (written first) */
    uint64_t creator_pidns; /* inode of the creator's pid namespace (0: unknown) */
    char descr[SHMR_DESCR_MAX];
};

/* Written by the producer only; read by every consumer. */
struct SHMR_ALIGNED_BLOCK shmr_prod_block {
    shmr_a64 head;   /* positions < head are published */
    shmr_a64 intent; /* broadcast: positions < intent may be being written */
    shmr_a64 join_claim; /* broadcast-block: Dekker word for joiners, >= intent
                          * while an announcement is checked (see announce) */
    shmr_a64 writable_end; /* queue: the producer's walk of release records got this
                            * far (a batch boundary), for a producer that takes over */
    /* message rings (messages.c) */
    shmr_a64 msgs;         /* messages published */
    shmr_a64 bytes;        /* their body bytes */
    shmr_a64 oldest;       /* broadcast: the oldest message frame not being overwritten */
    shmr_a64 last_frame;   /* the last message frame published (below head) */
};

/* Queue mode: next position to claim; consumers CAS it. */
struct SHMR_ALIGNED_BLOCK shmr_tail_block {
    shmr_a64 tail;
};

/* Eventcount: epoch is the futex word (bumped by the notifier), waiters is
 * raised by sleepers so the notifier can skip the wake syscall. wake_owed
 * serves wake-one eventcounts only (a queue's getters, shmr_ec_wake_one):
 * 1 while a wake is in flight whose sleeper has not yet run, so further
 * notifiers skip a wake syscall that could only find the same sleeper still
 * counted in waiters but no longer queued in the futex. */
struct SHMR_ALIGNED_BLOCK shmr_ec {
    shmr_a32 epoch;
    shmr_a32 waiters;
    shmr_a32 wake_owed;
};

/* Rarely written control words. */
struct SHMR_ALIGNED_BLOCK shmr_ctl {
    shmr_a64 producer_owner; /* (start32 << 32) | pid, 0 = none */
    shmr_a64 stream;         /* (producer generation << 32) | enum shmr_close_reason */
    shmr_a32 join_epoch;     /* broadcast: bumped by every joining consumer */
    shmr_a32 pad0;
    shmr_a64 producer_pidns; /* pid namespace of producer_owner (0: not recorded) */
    shmr_a64 evicted;        /* consumer slots freed because their process died */
    shmr_a64 stall;          /* broadcast-block / queue: (slot + 1) holding the producer
                              * back, 0 = none; written by the producer only */
    shmr_a64 stall_since_ns; /* CLOCK_MONOTONIC when the producer first waited on it */
    shmr_a64 evicted_stalled; /* live consumers evicted for stalling the producer (evict_after) */
};

/* One per consumer, each on its own block: written by its consumer (and by a
 * sweeper once the consumer is dead), read by the producer and by stats.
 *
 * The counters popped, dropped and abandoned are cumulative over every
 * occupant of the slot and are never moved elsewhere: a ring-wide total is the
 * sum over slots, so a process killed at any point can neither lose a count in
 * transit nor leave one to be added twice. An occupant's own share is the
 * counter minus the *_base it read when it took the slot. */
struct SHMR_ALIGNED_BLOCK shmr_cslot {
    shmr_a64 owner;      /* (start32 << 32) | pid, 0 = free */
    shmr_a32 ready;      /* state (SHMR_SLOT_STATE bits): 1 (SHMR_READY) once cursor is valid,
                          * SHMR_EVICTED_MARK once evicted; | SHMR_SLOT_SLEEPING while its
                          * occupant is counted in data_ec->waiters (eventcount.c) */
    shmr_a32 claim_state; /* queue: CLAIM_NONE / _INTENT / _HELD / _RELEASING / _EVICTED */
    shmr_a64 cursor;     /* broadcast: next position this consumer reads */
    shmr_a64 claim_pos;  /* queue: claimed range, recorded before the claim CAS */
    shmr_a64 claim_n;
    shmr_a64 popped;     /* records delivered by this slot's occupants */
    shmr_a64 dropped;    /* broadcast-overwrite: records its occupants lost to laps */
    shmr_a64 claim_pbase; /* queue: popped when the claim was recorded */
    shmr_a64 abandoned;  /* queue: claimed records of dead occupants never delivered */
    shmr_a64 abandoned_base; /* abandoned when the current occupant took the slot */
    shmr_a64 popped_base;    /* popped when the current occupant took the slot */
    shmr_a64 dropped_base;   /* dropped likewise */
    shmr_a64 pidns;      /* pid namespace of owner (0: not recorded) */
    shmr_a64 dropped_bytes; /* message rings: body bytes the current occupant lost to laps */
    shmr_a64 abandoned_bytes; /* message rings: body bytes of abandoned messages, cumulative as abandoned */
    shmr_a64 abandoned_bytes_base; /* abandoned_bytes when the current occupant took the slot */
};

/* Queue mode: one release record per slot, written only at the first slot of a
 * released batch. Consumers claim contiguous batches that tile the positions,
 * so the producer walks batch by batch: tag == pos means the batch that ended
 * the previous lap of slot pos is released and len positions from pos are free.
 * One record per batch instead of one word per position: a 1024-record pop_many
 * moves one cache line to the producer, not 128. */
struct shmr_release_rec {
    shmr_a64 tag; /* start of the released batch + capacity */
    shmr_a64 len; /* its length; written before tag */
};

/* Claim states. Without evict_after only NONE, INTENT and HELD occur. With it,
 * who hands a held batch back is decided by one CAS on claim_state: the
 * consumer's HELD -> RELEASING (then it writes the release record) or the
 * producer's HELD -> EVICTED (then it writes the release record and counts the
 * batch abandoned). The loser writes nothing to the release record, so a
 * stopped consumer that resumes after its batch was reclaimed can neither
 * overwrite a later lap's record nor deliver what was counted abandoned. */
enum { CLAIM_NONE = 0, CLAIM_INTENT = 1, CLAIM_HELD = 2, CLAIM_RELEASING = 3, CLAIM_EVICTED = 4 };

/* cslot.ready holds a state in its low bits and a flag above them. The state:
 * a consumer counts for the producer only while it is SHMR_READY. */
enum { SHMR_READY = 1, SHMR_EVICTED_MARK = 2 };
#define SHMR_SLOT_STATE 3u

/* cslot.ready flag: the occupant is counted as a sleeper of data_ec. Every
 * writer of the state keeps it (an RMW, never a plain store while the occupant
 * may sleep), so the sweep and the sleeper agree on who un-counts it. */
#define SHMR_SLOT_SLEEPING 4u

/* Message rings (messages.c): positions count 16-byte units, and a message is
 * one frame of whole units: this header, then the body. A padding frame (kind
 * 0) is the first two words only and runs to the end of the ring. The first
 * two words have the layout of struct shmr_release_rec: in queue mode the
 * release record of a batch overwrites the header of its first frame, so a
 * message ring needs no separate array of release records. */
struct shmr_frame {
    shmr_a64 tag;  /* the frame's position; a release record: its position + capacity */
    shmr_a64 info; /* (body length << 8) | kind; a release record: its length in units */
    shmr_a64 seq;  /* messages published before this one */
    shmr_a64 cum;  /* body bytes published before this one; a queue lane: the item's ticket */
};

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
_Static_assert(sizeof(struct shmr_cslot) == SHMR_BLOCK, "a consumer slot is one block");
_Static_assert(sizeof(struct shmr_prod_block) == SHMR_BLOCK, "one block");
_Static_assert(sizeof(struct shmr_tail_block) == SHMR_BLOCK, "one block");
_Static_assert(sizeof(struct shmr_ec) == SHMR_BLOCK, "one block");
_Static_assert(sizeof(struct shmr_ctl) == SHMR_BLOCK, "one block");
_Static_assert(sizeof(struct shmr_cslot) == SHMR_BLOCK, "one block");
_Static_assert(offsetof(struct shmr_ec, epoch) % 4 == 0, "futex word is 4-byte aligned");
_Static_assert(sizeof(shmr_a64) == 8 && sizeof(shmr_a32) == 4, "atomics have plain width");
_Static_assert(sizeof(struct shmr_release_rec) == 16, "release records are two words");
_Static_assert(OFF_CONSUMERS == SHMR_PAGE + 5 * SHMR_BLOCK, "five control blocks after the header");
_Static_assert(offsetof(struct shmr_header, kind) == 104, "kind took the first reserved word");
_Static_assert(sizeof(struct shmr_frame) == 2 * SHMR_MSG_UNIT, "a frame header is two units");
_Static_assert(sizeof(struct shmr_release_rec) == SHMR_MSG_UNIT, "a release record is one unit");
_Static_assert(offsetof(struct shmr_frame, tag) == offsetof(struct shmr_release_rec, tag) &&
                   offsetof(struct shmr_frame, info) == offsetof(struct shmr_release_rec, len),
               "a release record overlays the first two words of a frame");

/* ---- queue segments (mpqueue.c) ----------------------------------------
 *
 * A queue segment ("kind" queue) is this header page, one lane block per lane,
 * then the lanes: each lane a complete message ring in queue mode, formatted
 * exactly as a ring segment of its own would be, at a page-aligned offset.
 * Every lane's producer is a separate process; consumers take from every lane.
 * A lane's rings notify and wait on the eventcounts here, not on their own. */
#define SHMR_QMAGIC 0x31515249524d4853ull /* "SHMRIRQ1" read as little-endian bytes */
#define SHMR_QLAYOUT_VERSION 2u
#define SHMR_LANE_READY UINT64_MAX /* lane_block.state once the lane's image is complete */

struct shmr_qheader {
    shmr_a64 magic;           /* stored last (release), as shmr_header.magic */
    uint32_t version;
    uint32_t lanes;           /* lane count (max producers) */
    uint64_t segment_size;
    uint64_t lane_offset;     /* first lane image */
    uint64_t lane_stride;     /* bytes between lane images, a multiple of the page */
    uint64_t lane_units;      /* capacity of every lane, in message units */
    uint32_t max_consumers;   /* consumer slots of every lane */
    uint32_t creator_pid;
    uint64_t creator_start;
    uint64_t creator_pidns;
    int64_t maxsize;          /* items, <= 0: unbounded */
    uint64_t create_time_ns;
    uint8_t pad0[SHMR_BLOCK - 88];
    struct shmr_ec data_ec;   /* every lane's publish notifies; getters sleep here */
    struct shmr_ec space_ec;  /* every lane's release notifies; putters sleep here */
    struct shmr_ec join_ec;   /* JoinableQueue: task_done notifies, join() sleeps */
    struct SHMR_ALIGNED_BLOCK {
        shmr_a64 lanes_used;  /* lanes < this may hold items; raised with an atomic max */
        shmr_a64 done;        /* JoinableQueue: task_done() calls */
    } shared;
    struct SHMR_ALIGNED_BLOCK {
        shmr_a64 next;        /* the next item's ticket (every put takes one): gets take the
                               * oldest item first; a block of its own, as every put writes it */
    } ticket;
    uint8_t pad1[SHMR_PAGE - 6 * SHMR_BLOCK];
};

/* One per lane, each on its own block, in the page(s) after the header. */
struct SHMR_ALIGNED_BLOCK shmr_lane_block {
    shmr_a64 state;    /* 0: never used; an owner word: being formatted; SHMR_LANE_READY */
    shmr_a64 admitted; /* items its producers admitted (counted before publishing); written
                        * only by the lane's producer, or by a repairer holding its role */
    shmr_a64 lost;     /* admitted by a producer that died before publishing them */
};

#define OFF_QLANES SHMR_PAGE

_Static_assert(sizeof(struct shmr_qheader) == SHMR_PAGE, "queue header is one page");
_Static_assert(offsetof(struct shmr_qheader, pad0) == 88, "fixed queue header fields");
_Static_assert(offsetof(struct shmr_qheader, data_ec) == SHMR_BLOCK, "eventcounts on their own blocks");
_Static_assert(offsetof(struct shmr_qheader, space_ec) == 2 * SHMR_BLOCK, "eventcounts on their own blocks");
_Static_assert(offsetof(struct shmr_qheader, join_ec) == 3 * SHMR_BLOCK, "eventcounts on their own blocks");
_Static_assert(offsetof(struct shmr_qheader, shared) == 4 * SHMR_BLOCK, "shared counters on their own block");
_Static_assert(offsetof(struct shmr_qheader, ticket) == 5 * SHMR_BLOCK, "the ticket on its own block");
_Static_assert(sizeof(struct shmr_lane_block) == SHMR_BLOCK, "a lane block is one block");

#endif
