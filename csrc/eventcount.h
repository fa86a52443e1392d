/*
 * Eventcount: how every side of every protocol waits for a condition that
 * another process makes true. The waiter spins, yields, then sleeps on a futex
 * word in shared memory; the notifier skips the wake syscall when nobody
 * sleeps. A backend for another OS (macOS __ulock_wait) would replace
 * shmr_futex_wait / shmr_futex_wake_all in eventcount.c and nothing else.
 */
#ifndef SHMR_EVENTCOUNT_H
#define SHMR_EVENTCOUNT_H

#include <stdint.h>

#include "shmr_atomic.h"
#include "shmr_layout.h"

/* true when the waited-for condition holds */
typedef int (*shmr_ready_fn)(void *);

int shmr_futex_wait(shmr_a32 *addr, uint32_t expected, int64_t timeout_ns);
void shmr_futex_wake_all(shmr_a32 *addr);
int64_t shmr_mono_ns(void);

/* Wakes every sleeper of ec unconditionally (the slow path of shmr_ec_notify). */
void shmr_ec_notify_always(struct shmr_ec *ec);

/* Spin (spin_ns of pause), yield, then sleep on the eventcount for at most
 * timeout_ns (< 0: no limit) until ready(arg). 0, -ETIMEDOUT or -EINTR. */
int shmr_ec_wait(struct shmr_ec *ec, shmr_ready_fn ready, void *arg, int64_t timeout_ns, int64_t spin_ns);

/* Event-loop waits take the blocking wait apart: arm counts the caller as a
 * sleeper and re-checks (the same epoch read, increment and seq_cst fence as
 * shmr_ec_wait), the caller then sleeps elsewhere (io_uring, futex_waitv) on
 * &ec->epoch with the value *seen, and disarm un-counts it. 1: ready now,
 * nothing counted; 0: armed, one shmr_ec_disarm owed. */
int shmr_ec_arm(struct shmr_ec *ec, shmr_ready_fn ready, void *arg, uint32_t *seen);
void shmr_ec_disarm(struct shmr_ec *ec);

/* Notifier side, inline because every publish calls it. The caller has just
 * published (a release store of head, a release record or a cursor). The
 * seq_cst fence pairs with the waiter's seq_cst fence in shmr_ec_wait: either we
 * see its waiters increment, or it sees our publication on its re-check.
 * Without it both could miss. */
static inline void shmr_ec_notify(struct shmr_ec *ec)
{
    shmr_fence_seqcst();
    if (shmr_load_relaxed32(&ec->waiters) != 0) {
        shmr_fetch_add_release32(&ec->epoch, 1);
        shmr_futex_wake_all(&ec->epoch);
    }
}

#endif
