/*
 * Eventcount: futex waits and wakes on a word in shared memory (see eventcount.h).
 *
 * Why a wake-up is never lost. The sleeper and the notifier each write one
 * word and then read the other's (store buffering):
 *
 *   sleeper:  seen = epoch; waiters += 1; BARRIER; if (!ready()) futex_wait(epoch, seen)
 *   notifier: publish (the store that makes ready() true); B; if (waiters) { epoch += 1; wake }
 *
 * Both may miss only if the notifier's load of waiters is performed before its
 * publication is visible to the sleeper (a store waiting in the store buffer
 * while a later load goes ahead: x86 allows exactly this) and, at the same
 * time, the sleeper re-checks before that publication lands. With a seq_cst
 * fence on each side (BARRIER and B) the two fences are ordered, and whichever
 * comes second sees the other side's write.
 *
 * The notifier runs on every publish and the sleeper only on the way to sleep,
 * so the fence is moved to the sleeper: B is a compiler barrier (it keeps the
 * program order publish -> load of waiters in the emitted code) and BARRIER
 * is membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), which runs a full memory
 * barrier on every CPU that is running a thread of a registered process, at
 * some point between the call's entry and its return (a thread that is not
 * running passed through the barrier of its context switch). Take the point P
 * at which a registered notifier's CPU runs it:
 *   - the publication precedes P in program order: the barrier at P drains it,
 *     so it is visible before membarrier() returns, and the re-check after the
 *     call sees it;
 *   - the publication follows P: then so does the load of waiters (program
 *     order, kept by B), and the increment, made by a locked RMW before the
 *     call, is visible to everything after P: the notifier sees waiters > 0.
 * Private-expedited membarrier would not do: it covers only the caller's own
 * process, and notifiers are other processes. MEMBARRIER_CMD_GLOBAL would do
 * without registration but waits for an RCU grace period (12-15 ms measured
 * here against 0.15-0.6 us for the expedited one).
 *
 * A process registers once (shmr_ec_setup, from every create and attach; a
 * forked child registers again, for kernels that do not carry it over). Only
 * a registered process skips its fence, and every sleeper issues the barrier,
 * so a process that could not register just keeps the symmetric protocol. A
 * sleeper that cannot issue the barrier (a seccomp filter) cannot exclude a
 * registered notifier: it re-checks every SHMR_EC_UNSURE_NS instead of
 * sleeping for its whole slice, a late wake-up but never a lost one.
 *
 * The futex closes the last gap: seen is read before waiters is raised, and
 * FUTEX_WAIT compares epoch with seen atomically with queueing us, so a notify
 * that lands after that read makes the wait return at once.
 *
 * verify/ring.pml models this with store buffers (the notifier's publication
 * may stay buffered past its load of waiters, a fence drains its own buffer,
 * a membarrier drains every buffer) and seeds both a missing fence and a
 * barrier taken before the increment as mutants that must fail.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "eventcount.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int shmr_futex_wait(shmr_a32 *addr, uint32_t expected, int64_t timeout_ns)
{
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time */
        int64_t until = shmr_mono_ns() + timeout_ns;
        ts.tv_sec = until / 1000000000;
        ts.tv_nsec = until % 1000000000;
        tsp = &ts;
    }
    /* no FUTEX_PRIVATE_FLAG: the word is shared between processes. The bitset
     * lets shmr_ec_notify_loops pass us by (see eventcount.h). */
    long rc = syscall(SYS_futex, (void *)addr, FUTEX_WAIT_BITSET, expected, tsp, NULL, SHMR_FUTEX_BIT_SLEEPER);
    return rc == 0 ? 0 : -errno;
}

int shmr_futex_wake(shmr_a32 *addr, int n)
{
    long rc = syscall(SYS_futex, (void *)addr, FUTEX_WAKE, n, NULL, NULL, 0);
    return rc > 0 ? (int)rc : 0;
}

void shmr_futex_wake_all(shmr_a32 *addr) { shmr_futex_wake(addr, INT_MAX); }

void shmr_ec_notify_loops(struct shmr_ec *ec)
{
    /* the notify's Dekker half, as shmr_ec_notify_n: see eventcount.h */
    if (shmr_load_relaxed32(&shmr_ec_fenceless))
        shmr_compiler_barrier();
    else
        shmr_fence_seqcst();
    if (shmr_load_relaxed32(&ec->waiters) != 0) {
        shmr_fetch_add_release32(&ec->epoch, 1);
        syscall(SYS_futex, (void *)&ec->epoch, FUTEX_WAKE_BITSET, INT_MAX, NULL, NULL, SHMR_FUTEX_BIT_LOOP);
    }
}

int64_t shmr_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* a sleeper that could not issue the barrier re-checks this often */
#define SHMR_EC_UNSURE_NS 1000000

shmr_a32 shmr_ec_fenceless;
static int ec_can_barrier; /* this process can issue MEMBARRIER_CMD_GLOBAL_EXPEDITED */

static long ec_membarrier(int cmd) { return syscall(SYS_membarrier, cmd, 0, 0); }

static void ec_register(void)
{
    long cmds = ec_membarrier(MEMBARRIER_CMD_QUERY);
    ec_can_barrier = cmds > 0 && (cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED);
    shmr_store_relaxed32(&shmr_ec_fenceless, ec_can_barrier && getenv("SHMRING_NOTIFY_FENCE") == NULL &&
                                                 ec_membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0);
}

static void ec_once(void)
{
    ec_register();
    pthread_atfork(NULL, NULL, ec_register);
}

void shmr_ec_setup(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, ec_once);
}

/* The sleeper's side of the Dekker pair, after raising waiters and before
 * re-checking (see the top of this file). The seq_cst fence pairs with the
 * fence of notifiers that keep theirs; the membarrier covers the registered
 * ones. 0 when the membarrier could not be issued. */
static int ec_barrier(void)
{
    shmr_fence_seqcst();
    shmr_ec_setup();
    return ec_can_barrier && ec_membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0;
}

/* Wake-one eventcounts (a queue's getters, which all wait for the same thing:
 * any item) and the wake in flight.
 *
 * A woken sleeper stays counted in waiters until it runs again, and on a
 * loaded machine that is milliseconds later. Every publish meanwhile saw
 * waiters != 0 and paid a FUTEX_WAKE that found nobody queued (measured: 1.2
 * wake syscalls per item with 4 putters and 4 getters on 2 CPUs, against 0.001
 * sleeps per item). So a notifier that wakes first raises ec->wake_owed, and
 * notifiers that find it raised skip their wake: the sleeper it woke owes
 * them a re-check. Whoever lowers the flag does the re-check's barrier:
 *
 *   notifier: publish; B; if (waiters) { if (owed) skip; owed = 1; epoch++; wake(1) }
 *   sleeper:  ... futex_wait returns (any reason); if (owed) { owed = 0; BARRIER }; ready()?
 *
 * B and BARRIER are the pair of the top of this file: a notifier that read
 * owed = 1 did so before the sleeper lowered it, so either its publication is
 * visible to the sleeper's ready() after BARRIER, or its load of owed came
 * after the lowering and it saw 0 (and woke). The sleeper that then takes an
 * item passes a wake on while items remain (shmr_mpq_taken), as it always did.
 * A wake that found nobody queued (the counted sleeper had not reached
 * FUTEX_WAIT, or had left) has no sleeper to run that re-check: the notifier
 * lowers the flag, issues the barrier and, if anyone is still counted,
 * notifies once more without raising it (that sleeper's FUTEX_WAIT sees epoch
 * moved, or is woken). Every return from FUTEX_WAIT lowers a raised flag, so
 * a woken sleeper killed before it ran holds wakes back for at most another
 * sleeper's slice. verify/qwake.pml models this; its mutants lower the flag
 * only once a get has taken its item (no re-check after it), or leave it
 * raised after a wake that found nobody, and both lose a wake-up. */
static void ec_owed_clear(struct shmr_ec *ec)
{
    /* relaxed: the barrier after it orders it (see above); only the process
     * that lowered the flag owes the barrier */
    if (shmr_load_relaxed32(&ec->wake_owed) && shmr_swap_relaxed32(&ec->wake_owed, 0))
        (void)ec_barrier();
}

void shmr_ec_wake_one(struct shmr_ec *ec)
{
    /* relaxed: pairs with the lowering in ec_owed_clear through its barrier */
    if (shmr_load_relaxed32(&ec->wake_owed) || shmr_swap_relaxed32(&ec->wake_owed, 1))
        return;
    shmr_fetch_add_release32(&ec->epoch, 1);
    if (shmr_futex_wake(&ec->epoch, 1) > 0)
        return;
    ec_owed_clear(ec);
    if (shmr_load_relaxed32(&ec->waiters) != 0) {
        shmr_fetch_add_release32(&ec->epoch, 1);
        shmr_futex_wake(&ec->epoch, 1);
    }
}

void shmr_ec_notify_always(struct shmr_ec *ec)
{
    shmr_fence_seqcst(); /* as in shmr_ec_notify */
    shmr_fetch_add_release32(&ec->epoch, 1);
    shmr_futex_wake_all(&ec->epoch);
}

/* Counting a sleeper in and out. With a mark (a consumer's slot), the mark's
 * SHMR_SLOT_SLEEPING bit says "counted in waiters" to whoever sweeps the slot
 * once its process is dead (shmr_ec_uncount_dead). Raised after the increment
 * and cleared before the decrement, so a set bit always stands for a count:
 * a sweeper can take it back without ever taking a live sleeper's. A process
 * killed between the two steps (a few instructions) leaves one count behind,
 * which costs wake syscalls, never a wake-up. */
static void ec_count_in(struct shmr_ec *ec, shmr_a32 *mark)
{
    shmr_fetch_add_seqcst32(&ec->waiters, 1);
    if (mark)
        shmr_fetch_or_relaxed32(mark, SHMR_SLOT_SLEEPING);
}

static void ec_count_out(struct shmr_ec *ec, shmr_a32 *mark)
{
    if (mark)
        shmr_fetch_and_relaxed32(mark, ~(uint32_t)SHMR_SLOT_SLEEPING);
    shmr_fetch_sub_seqcst32(&ec->waiters, 1);
}

void shmr_ec_uncount_dead(struct shmr_ec *ec, shmr_a32 *mark)
{
    /* the bit goes first: a sweeper killed after it leaves a count behind
     * (harmless), never a bit that a second sweeper would count again */
    if (shmr_fetch_and_relaxed32(mark, ~(uint32_t)SHMR_SLOT_SLEEPING) & SHMR_SLOT_SLEEPING)
        shmr_fetch_sub_seqcst32(&ec->waiters, 1);
}

int shmr_ec_wait(struct shmr_ec *ec, shmr_ready_fn ready, void *arg, int64_t timeout_ns, int64_t spin_ns)
{
    return shmr_ec_wait_marked(ec, NULL, ready, arg, timeout_ns, spin_ns);
}

/* The first part of shmr_ec_wait_more's spin. Every look at more() reads
 * the lines the peer is writing at that moment (a consumer's newest release
 * record, its cursor), and each look takes such a line away from the peer,
 * whose next store must fetch it back: a poll at every pause (11 ns on the
 * machine of benchmarks/README.md) does that for nearly every unit freed. So it looks once per
 * SHMR_EC_POLL_NS and pauses in between, reading only the clock. It waits for
 * more() at most SHMR_EC_MORE_NS (or until `until`, the end of the budget or
 * of the timeout): a peer that frees one unit and then stops (it waits for
 * us, on something else) must not hold us up for a whole long spin budget.
 * 0: more(); SHMR_EC_SPUN_OUT: ready() when `until` passed; -1: go on as an
 * ordinary spin for ready(). */
static int ec_spin_more(shmr_ready_fn more, shmr_ready_fn ready, void *arg, int64_t until, int64_t more_ns)
{
    int64_t now = shmr_mono_ns();
    int64_t give_up = now + more_ns < until ? now + more_ns : until;
    int64_t next = now + SHMR_EC_POLL_NS;
    for (;;) {
        for (int i = 0; i < 8; i++)
            shmr_cpu_relax();
        now = shmr_mono_ns();
        if (now >= give_up)
            return give_up == until && ready(arg) ? SHMR_EC_SPUN_OUT : -1;
        if (now >= next) {
            if (more(arg))
                return 0;
            next = now + SHMR_EC_POLL_NS;
        }
    }
}

static int ec_wait(struct shmr_ec *ec, shmr_a32 *mark, shmr_ready_fn more, shmr_ready_fn ready, void *arg,
                   int64_t timeout_ns, int64_t spin_ns, int64_t more_ns)
{
    if ((more ? more : ready)(arg))
        return 0;
    if (timeout_ns == 0)
        return more && ready(arg) ? 0 : -ETIMEDOUT;
    if (spin_ns > 0) {
        int64_t until = shmr_mono_ns() + (timeout_ns > 0 && timeout_ns < spin_ns ? timeout_ns : spin_ns);
        int rc = more ? ec_spin_more(more, ready, arg, until, more_ns) : -1;
        if (rc >= 0)
            return rc;
        for (uint32_t i = 1;; i++) {
            if (ready(arg))
                return 0;
            shmr_cpu_relax();
            if ((i & 63) == 0 && shmr_mono_ns() >= until)
                break;
        }
        for (int i = 0; i < 4; i++) {
            sched_yield();
            if (ready(arg))
                return 0;
        }
    }
    /* Sleep until ready or the slice is over. A wake that finds nothing for us
     * (another consumer took the records, a release further along) sleeps again
     * rather than ending the slice early. */
    int64_t until = timeout_ns > 0 ? shmr_mono_ns() + timeout_ns : -1;
    for (;;) {
        /* epoch is read before we count ourselves, so a notify that lands after
         * this read changes the word and FUTEX_WAIT returns at once (EAGAIN). */
        uint32_t seen = shmr_load_acquire32(&ec->epoch);
        ec_count_in(ec, mark);
        int sure = ec_barrier();
        int rc = 0;
        int64_t left = -1; /* no limit */
        if (until >= 0 && (left = until - shmr_mono_ns()) <= 0)
            rc = -ETIMEDOUT;
        else if (!ready(arg)) {
            int64_t nap = left;
            if (!sure && (nap < 0 || nap > SHMR_EC_UNSURE_NS))
                nap = SHMR_EC_UNSURE_NS;
            rc = shmr_futex_wait(&ec->epoch, seen, nap);
            if (rc == -ETIMEDOUT && nap != left)
                rc = 0; /* our own short nap, not the caller's timeout */
            ec_owed_clear(ec); /* before the re-check below: it is the one owed */
        }
        ec_count_out(ec, mark);
        if (ready(arg))
            return 0;
        if (rc == -EINTR)
            return -EINTR; /* a signal: let the caller run its handlers */
        if (rc == -ETIMEDOUT || (until >= 0 && shmr_mono_ns() >= until))
            return -ETIMEDOUT;
    }
}

int shmr_ec_wait_marked(struct shmr_ec *ec, shmr_a32 *mark, shmr_ready_fn ready, void *arg, int64_t timeout_ns,
                        int64_t spin_ns)
{
    return ec_wait(ec, mark, NULL, ready, arg, timeout_ns, spin_ns, 0);
}

int shmr_ec_wait_more(struct shmr_ec *ec, shmr_a32 *mark, shmr_ready_fn more, shmr_ready_fn ready, void *arg,
                      int64_t timeout_ns, int64_t spin_ns)
{
    return ec_wait(ec, mark, more, ready, arg, timeout_ns, spin_ns, SHMR_EC_MORE_NS);
}

int shmr_ec_wait_more_for(struct shmr_ec *ec, shmr_a32 *mark, shmr_ready_fn more, shmr_ready_fn ready, void *arg,
                          int64_t timeout_ns, int64_t spin_ns, int64_t more_ns)
{
    return ec_wait(ec, mark, more, ready, arg, timeout_ns, spin_ns, more_ns);
}

int shmr_ec_arm(struct shmr_ec *ec, shmr_a32 *mark, shmr_ready_fn ready, void *arg, uint32_t *seen)
{
    if (ready(arg))
        return 1;
    /* as in shmr_ec_wait: a notify after this read of epoch changes the word,
     * so the wait the caller submits with *seen ends at once */
    *seen = shmr_load_acquire32(&ec->epoch);
    ec_count_in(ec, mark);
    (void)ec_barrier();
    if (ready(arg)) {
        ec_count_out(ec, mark);
        return 1;
    }
    return 0;
}

void shmr_ec_disarm(struct shmr_ec *ec, shmr_a32 *mark)
{
    /* the caller re-checks after this (its retry), as a sleeper after FUTEX_WAIT */
    ec_owed_clear(ec);
    ec_count_out(ec, mark);
}
