/*
 * Waits an event loop can poll: io_uring futex waits whose completions signal
 * an eventfd, and futex_waitv for a synchronous wait on many words. Both wait
 * on the same eventcount words as the blocking calls (see eventcount.h), with
 * the value seen when the caller armed (shmr_consumer_arm / shmr_producer_arm),
 * so a notify between the arm and the wait makes the wait end at once, exactly
 * as FUTEX_WAIT does for a blocking call.
 *
 * Kernels: IORING_OP_FUTEX_WAIT needs Linux 6.7 (and io_uring not disabled by
 * /proc/sys/kernel/io_uring_disabled or a seccomp filter); futex_waitv needs
 * Linux 5.16. Calls return 0 (or a count) or -errno.
 */
#ifndef SHMR_URING_WAIT_H
#define SHMR_URING_WAIT_H

#include <stdint.h>

typedef struct shmr_uring shmr_uring;

/* An io_uring with an eventfd registered: every completion makes the eventfd
 * readable. -ENOSYS / -EPERM when io_uring is missing or disabled,
 * -EOPNOTSUPP when this kernel has no IORING_OP_FUTEX_WAIT (before 6.7). */
int shmr_uring_open(unsigned entries, unsigned flags, shmr_uring **out);
/* flags: the ring is used by the thread that opens it and no other (an event
 * loop's poller). Its completions are then deferred until it reaps them
 * (Linux 6.1 DEFER_TASKRUN), instead of interrupting the thread's epoll_wait
 * with task work when a futex wake completes a wait. */
#define SHMR_URING_ONE_THREAD 1u
void shmr_uring_close(shmr_uring *u);
int shmr_uring_eventfd(const shmr_uring *u);

/* Each submits one operation at once; its completion carries user_data. */
int shmr_uring_futex_wait(shmr_uring *u, void *word, uint32_t seen, uint64_t user_data);
/* The same wait, cancelled by the kernel at deadline_ns (CLOCK_MONOTONIC,
 * absolute; Linux 5.5 linked timeouts): 0, or 1 when the wait was submitted
 * without its timeout (the caller keeps the deadline), or -errno. */
int shmr_uring_futex_wait_until(shmr_uring *u, void *word, uint32_t seen, uint64_t user_data, int64_t deadline_ns);
int shmr_uring_poll(shmr_uring *u, int fd, uint64_t user_data);        /* POLLIN, one shot */
int shmr_uring_timeout(shmr_uring *u, int64_t ns, uint64_t user_data); /* completes after ns */
int shmr_uring_cancel(shmr_uring *u, uint64_t user_data);              /* its own completion has user_data 0 */

/* Empties the eventfd, then copies out up to max completions; returns the count. */
int shmr_uring_reap(shmr_uring *u, uint64_t *user_data, int32_t *res, unsigned max);

/* Sleeps until one of the n (<= 128) shared words is woken or differs from its
 * seen value, or timeout_ns passes (< 0: no limit). Returns the index of a
 * woken word, -EAGAIN (a word had changed already), -ETIMEDOUT, -EINTR, or
 * -ENOSYS before Linux 5.16. */
int shmr_futex_waitv(void *const *words, const uint32_t *seen, unsigned n, int64_t timeout_ns);
#define SHMR_WAITV_MAX 128u

/* A process-private 32-bit word that one thread bumps to end another's
 * futex_waitv (passed as one of its words) or shmr_wakeword_wait early. */
uint32_t shmr_wakeword_load(void *w);
void shmr_wakeword_bump(void *w);
int shmr_wakeword_wait(void *w, uint32_t seen, int64_t timeout_ns);

#endif
