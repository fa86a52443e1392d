/*
 * Eventcount: futex waits and wakes on a word in shared memory (see eventcount.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "eventcount.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int shmr_futex_wait(shmr_a32 *addr, uint32_t expected, int64_t timeout_ns)
{
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tsp = &ts;
    }
    /* no FUTEX_PRIVATE_FLAG: the word is shared between processes */
    long rc = syscall(SYS_futex, (void *)addr, FUTEX_WAIT, expected, tsp, NULL, 0);
    return rc == 0 ? 0 : -errno;
}

void shmr_futex_wake_all(shmr_a32 *addr)
{
    syscall(SYS_futex, (void *)addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

int64_t shmr_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void shmr_ec_notify_always(struct shmr_ec *ec)
{
    shmr_fence_seqcst(); /* as in shmr_ec_notify */
    shmr_fetch_add_release32(&ec->epoch, 1);
    shmr_futex_wake_all(&ec->epoch);
}

int shmr_ec_wait(struct shmr_ec *ec, shmr_ready_fn ready, void *arg, int64_t timeout_ns, int64_t spin_ns)
{
    if (ready(arg))
        return 0;
    if (timeout_ns == 0)
        return -ETIMEDOUT;
    if (spin_ns > 0) {
        int64_t until = shmr_mono_ns() + (timeout_ns > 0 && timeout_ns < spin_ns ? timeout_ns : spin_ns);
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
        shmr_fetch_add_seqcst32(&ec->waiters, 1);
        shmr_fence_seqcst(); /* pairs with the fence in shmr_ec_notify */
        int rc = 0;
        int64_t left = -1; /* no limit */
        if (until >= 0 && (left = until - shmr_mono_ns()) <= 0)
            rc = -ETIMEDOUT;
        else if (!ready(arg))
            rc = shmr_futex_wait(&ec->epoch, seen, left);
        shmr_fetch_sub_seqcst32(&ec->waiters, 1);
        if (ready(arg))
            return 0;
        if (rc == -EINTR)
            return -EINTR; /* a signal: let the caller run its handlers */
        if (rc == -ETIMEDOUT || (until >= 0 && shmr_mono_ns() >= until))
            return -ETIMEDOUT;
    }
}

int shmr_ec_arm(struct shmr_ec *ec, shmr_ready_fn ready, void *arg, uint32_t *seen)
{
    if (ready(arg))
        return 1;
    /* as in shmr_ec_wait: a notify after this read of epoch changes the word,
     * so the wait the caller submits with *seen ends at once */
    *seen = shmr_load_acquire32(&ec->epoch);
    shmr_fetch_add_seqcst32(&ec->waiters, 1);
    shmr_fence_seqcst(); /* pairs with the fence in shmr_ec_notify */
    if (ready(arg)) {
        shmr_fetch_sub_seqcst32(&ec->waiters, 1);
        return 1;
    }
    return 0;
}

void shmr_ec_disarm(struct shmr_ec *ec) { shmr_fetch_sub_seqcst32(&ec->waiters, 1); }
