/*
 * The board: the latest value per key in a POSIX shared-memory segment.
 *
 * Any process that attached may write any key; writes of one key are
 * serialised by a per-key claim word holding the writer's (pid, start time),
 * writes of different keys run in parallel. Readers never wait for a writer
 * and never write to the segment (except the waiter count of an eventcount
 * while they sleep in shmr_board_wait*).
 *
 * Same conventions as shmring.h: 0 (or a count / version) on success, -errno
 * on failure; handles are process-private, the segment is shared.
 */
#ifndef SHMR_BOARD_H
#define SHMR_BOARD_H

#include <stddef.h>
#include <stdint.h>

#define SHMR_BOARD_VERSION 1u
#define SHMR_BOARD_MAX_COPIES 8u
#define SHMR_BOARD_MAX_KEYS (1ull << 24)
#define SHMR_BOARD_MAX_VALUE (1ull << 36) /* 64 GiB */
#define SHMR_BOARD_MAX_NAMES (64ull << 20)
#define SHMR_BOARD_DESCR_MAX 3840u

/* board-specific error (negated like errno values); 10001..10008 are shmring.h's */
#define SHMR_ENOTBOARD (10000 + 20)   /* the segment is a ring, not a board */

enum shmr_board_key_kind { SHMR_BOARD_INT_KEYS = 0, SHMR_BOARD_STR_KEYS = 1 };

typedef struct shmr_board shmr_board;

typedef struct shmr_board_params {
    uint64_t nkeys;
    uint64_t value_size;   /* bytes, = numpy itemsize of one value */
    uint32_t value_align;
    uint32_t ncopies;      /* copies per key, 2..SHMR_BOARD_MAX_COPIES */
    uint32_t key_kind;     /* enum shmr_board_key_kind */
    uint32_t descr_len;
    const char *descr;     /* dtype descriptor text */
    const char *names;     /* key names blob (str keys), stored verbatim */
    uint64_t names_len;
} shmr_board_params;

typedef struct shmr_board_key_info {
    uint64_t version;      /* completed writes of this key */
    uint32_t owner_pid;    /* writer holding the claim now, 0 = none */
    int owner_alive;
    uint32_t last_writer_pid;
    int last_writer_alive;
    uint64_t write_time_ns; /* CLOCK_REALTIME of the last completed write, 0 = never */
    uint64_t takeovers;    /* claims taken over from dead writers */
    uint32_t waiters;
} shmr_board_key_info;

typedef struct shmr_board_info {
    uint64_t nkeys, value_size, segment_size, stride;
    uint32_t ncopies, key_kind, version, creator_pid;
    uint64_t create_time_ns;
} shmr_board_info;

int shmr_board_create(const char *name, const shmr_board_params *p, unsigned mode_bits, shmr_board **out);
int shmr_board_attach(const char *name, shmr_board **out);
/* owner and mode bits of the board's file, as fstat saw them when mapped */
void shmr_board_file_owner(const shmr_board *b, uint32_t *uid, uint32_t *mode);
void shmr_board_detach(shmr_board *b);
int shmr_board_info_get(const shmr_board *b, shmr_board_info *out);
const char *shmr_board_descr(const shmr_board *b, uint32_t *len);
const char *shmr_board_names(const shmr_board *b, uint64_t *len);
uint64_t shmr_board_nkeys(const shmr_board *b);
uint64_t shmr_board_value_size(const shmr_board *b);
int shmr_board_key_info_get(const shmr_board *b, uint64_t key, shmr_board_key_info *out);

/* Claims the key (taking over a dead writer's claim), copies len bytes from
 * src into the copy readers are not using, publishes it and releases the claim.
 * Waits at most wait_ns for a live writer's claim (busy-polling spin_ns first);
 * returns the new version (> 0), -ETIMEDOUT, -EINTR, or -EINVAL / -ERANGE. */
int64_t shmr_board_write(shmr_board *b, uint64_t key, const void *src, uint64_t len, int64_t wait_ns,
                         int64_t spin_ns);

/* Copies the latest complete value of key into dst and sets *version.
 * 0, -ENOENT (never written), -EAGAIN (overtaken max_tries times in a row:
 * the caller runs signal handlers and calls again). *retries += overtakes. */
int shmr_board_read(const shmr_board *b, uint64_t key, void *dst, uint64_t len, uint64_t *version,
                    uint32_t max_tries, uint64_t *retries);
/* The published version of key (acquire), 0 = never written. */
uint64_t shmr_board_version(const shmr_board *b, uint64_t key);

/* In-place read: *ptr gets the published copy of key; *token identifies it
 * for shmr_board_view_valid. 0, -ENOENT, -EAGAIN as shmr_board_read. */
int shmr_board_view(const shmr_board *b, uint64_t key, const void **ptr, uint64_t *version, uint64_t *token);
/* 1 if no writer has started to overwrite that copy since shmr_board_view. */
int shmr_board_view_valid(const shmr_board *b, uint64_t key, uint64_t token);

/* Sleeps (no CPU) until the version of key exceeds newer_than: 0, -ETIMEDOUT, -EINTR. */
int shmr_board_wait(shmr_board *b, uint64_t key, uint64_t newer_than, int64_t timeout_ns, int64_t spin_ns);
/* Same for any of n keys (keys[i] newer than newer_than[i]), on the board-wide eventcount. */
int shmr_board_wait_any(shmr_board *b, const uint64_t *keys, const uint64_t *newer_than, uint64_t n,
                        int64_t timeout_ns);
/* The same wait taken apart for an event loop (see shmr_ec_arm): 1 when key is
 * newer already (nothing counted), 0 armed (*word / *seen to sleep on, one
 * shmr_board_disarm owed), -ERANGE for a key out of range. */
int shmr_board_arm(shmr_board *b, uint64_t key, uint64_t newer_than, void **word, uint32_t *seen);
void shmr_board_disarm(shmr_board *b, uint64_t key);
/* Wakes every sleeper (a closing handle, so a blocked call notices). */
void shmr_board_wake_all(shmr_board *b);

#endif
