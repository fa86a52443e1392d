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
/* Wakes at most n sleepers of addr (n = INT_MAX: all); how many it woke. */
int shmr_futex_wake(shmr_a32 *addr, int n);
int64_t shmr_mono_ns(void);

/* Futex bitsets of the sleepers of an eventcount: a blocking call sleeps
 * with SHMR_FUTEX_BIT_SLEEPER, an event-loop wait (io_uring) with
 * SHMR_FUTEX_BIT_LOOP, futex_waitv with every bit. Every notify wakes all of
 * them (FUTEX_WAKE matches any bit) but shmr_ec_notify_loops. */
#define SHMR_FUTEX_BIT_SLEEPER 1u
#define SHMR_FUTEX_BIT_LOOP 2u

/* A peer joined (took a role or a slot): event-loop waits watch their peers'
 * processes instead of polling, so they must re-read them; blocking sleepers
 * look for dead peers between their slices anyway and are not woken. Moves
 * the epoch (a loop wait being armed sees it move) and wakes the sleepers
 * with SHMR_FUTEX_BIT_LOOP (and futex_waitv's). Ordered as shmr_ec_notify:
 * the caller's join store, then this, against the waiter's arm, then its
 * read of its peers (see shmr_producer_open). */
void shmr_ec_notify_loops(struct shmr_ec *ec);

/* Wakes every sleeper of ec unconditionally (the slow path of shmr_ec_notify). */
void shmr_ec_notify_always(struct shmr_ec *ec);

/* Spin (spin_ns of pause), yield, then sleep on the eventcount for at most
 * timeout_ns (< 0: no limit) until ready(arg). 0, -ETIMEDOUT or -EINTR. */
int shmr_ec_wait(struct shmr_ec *ec, shmr_ready_fn ready, void *arg, int64_t timeout_ns, int64_t spin_ns);

/* The same for a sleeper with a word of its own in the segment (a consumer's
 * cslot.ready): while it is counted in waiters, the word's SHMR_SLOT_SLEEPING
 * bit is set, so that a sweep of its dead process can take the count back
 * (shmr_ec_uncount_dead, on a slot the sweeper holds). */
int shmr_ec_wait_marked(struct shmr_ec *ec, shmr_a32 *mark, shmr_ready_fn ready, void *arg, int64_t timeout_ns,
                        int64_t spin_ns);
void shmr_ec_uncount_dead(struct shmr_ec *ec, shmr_a32 *mark);

/* As shmr_ec_wait_marked, for a waiter that would rather take a chunk than
 * each unit as it frees (a producer on a full ring): the spin first waits
 * for more(arg), looking only every SHMR_EC_POLL_NS, for at most
 * SHMR_EC_MORE_NS, then spins for ready(arg) as shmr_ec_wait_marked does; the
 * sleep and the timeout use ready() alone, so a wait never ends in
 * -ETIMEDOUT while ready() holds. Returns what shmr_ec_wait_marked returns,
 * or SHMR_EC_SPUN_OUT: ready(), found when the budget or the timeout ran out
 * during the first part (the peer moved, just not a chunk's worth). */
#define SHMR_EC_SPUN_OUT 1
#define SHMR_EC_POLL_NS 1000
#define SHMR_EC_MORE_NS 20000
int shmr_ec_wait_more(struct shmr_ec *ec, shmr_a32 *mark, shmr_ready_fn more, shmr_ready_fn ready, void *arg,
                      int64_t timeout_ns, int64_t spin_ns);
/* The same, waiting for more(arg) at most more_ns instead of SHMR_EC_MORE_NS. */
int shmr_ec_wait_more_for(struct shmr_ec *ec, shmr_a32 *mark, shmr_ready_fn more, shmr_ready_fn ready, void *arg,
                          int64_t timeout_ns, int64_t spin_ns, int64_t more_ns);

/* Event-loop waits take the blocking wait apart: arm counts the caller as a
 * sleeper and re-checks (the same epoch read, increment and seq_cst fence as
 * shmr_ec_wait), the caller then sleeps elsewhere (io_uring, futex_waitv) on
 * &ec->epoch with the value *seen, and disarm un-counts it. 1: ready now,
 * nothing counted; 0: armed, one shmr_ec_disarm owed. In a process that cannot
 * issue membarrier() (a seccomp filter), a notify from a registered process
 * may go unseen until the caller's own timeout (its liveness slice). */
int shmr_ec_arm(struct shmr_ec *ec, shmr_a32 *mark, shmr_ready_fn ready, void *arg, uint32_t *seen);
void shmr_ec_disarm(struct shmr_ec *ec, shmr_a32 *mark);

/* Once per process, before its first notify (every create and attach calls
 * it): registers the process for MEMBARRIER_CMD_GLOBAL_EXPEDITED and, if that
 * worked, lets its notifiers skip their fence (see eventcount.c). Setting
 * SHMRING_NOTIFY_FENCE in the environment keeps the fence (for comparisons). */
void shmr_ec_setup(void);

/* 1 when this process is registered, so that a sleeper's membarrier() runs a
 * full fence on every thread of ours that is running; written once by
 * shmr_ec_setup (under pthread_once, and in a forked child before it runs on).
 * Relaxed: a notifier that reads 0 keeps its fence, which is always safe; one
 * that reads 1 runs in a process whose registration has already completed. */
extern shmr_a32 shmr_ec_fenceless;

/* Notifier side, inline because every publish calls it. The caller has just
 * published (a release store of head, a release record or a cursor). Either
 * the sleeper sees that publication on its re-check or we see its waiters
 * increment; eventcount.c explains why. Registered processes put only a
 * compiler barrier between the publication and the load of waiters: the
 * sleeper's membarrier() supplies the hardware fence, and only on the path
 * that goes to sleep. Unregistered ones keep the seq_cst fence, which pairs
 * with the sleeper's seq_cst fence. */
/* nwake: how many sleepers one notify wakes. Every waiter of a ring's
 * eventcount waits for its own condition (its own records, its own room), so
 * rings wake all (SHMR_WAKE_ALL). A queue's getters all wait for the same
 * thing, any item: one publish wakes one of them, and the getter that takes an
 * item passes the wake on while items remain (shmr_mpq_taken), so a put
 * costs one context switch where it would cost one per sleeping getter. */
#define SHMR_WAKE_ALL 0x7fffffff

/* The wake of a wake-one eventcount (nwake 1), past the check of waiters:
 * skipped while another wake is owed (ec->wake_owed, see eventcount.c). */
void shmr_ec_wake_one(struct shmr_ec *ec);

static inline void shmr_ec_notify_n(struct shmr_ec *ec, int nwake)
{
    if (shmr_load_relaxed32(&shmr_ec_fenceless))
        shmr_compiler_barrier();
    else
        shmr_fence_seqcst();
    if (shmr_load_relaxed32(&ec->waiters) != 0) {
        if (nwake == 1) {
            shmr_ec_wake_one(ec);
            return;
        }
        shmr_fetch_add_release32(&ec->epoch, 1);
        shmr_futex_wake(&ec->epoch, nwake);
    }
}

static inline void shmr_ec_notify(struct shmr_ec *ec) { shmr_ec_notify_n(ec, SHMR_WAKE_ALL); }
#endif
