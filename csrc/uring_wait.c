/*
 * io_uring futex waits and futex_waitv, called directly through syscall(2)
 * (see uring_wait.h). The submission and completion rings are shared with the
 * kernel: their head/tail words go through the accessors of shmr_atomic.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "uring_wait.h"

#include <errno.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "eventcount.h"
#include "shmr_atomic.h"

/* Kernel ABI numbers newer than some installed headers. */
#define SHMR_IORING_OP_FUTEX_WAIT 51 /* Linux 6.7 */
#define SHMR_FUTEX2_SIZE_U32 0x02    /* no FUTEX2_PRIVATE: the words are shared between processes */
#define SHMR_IOSQE_CQE_SKIP_SUCCESS (1u << 6) /* Linux 5.17 */
#define SHMR_IORING_SQ_CQ_OVERFLOW (1u << 1)
#define SHMR_IORING_SETUP_CQSIZE (1u << 3)
#define SHMR_IORING_SETUP_SINGLE_ISSUER (1u << 12) /* Linux 6.0 */
#define SHMR_IORING_SETUP_DEFER_TASKRUN (1u << 13) /* Linux 6.1 */
#define SHMR_IORING_SETUP_TASKRUN_FLAG (1u << 9)   /* Linux 5.19 */
#define SHMR_IORING_SQ_TASKRUN (1u << 2)
#ifndef __NR_futex_waitv
#define __NR_futex_waitv 449
#endif
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#define __NR_io_uring_enter 426
#define __NR_io_uring_register 427
#endif

struct shmr_uring {
    int ring_fd, event_fd;
    void *sq_map, *cq_map;
    size_t sq_map_len, cq_map_len;
    struct io_uring_sqe *sqes;
    size_t sqes_len;
    shmr_a32 *sq_head, *sq_tail, *sq_flags, *cq_head, *cq_tail;
    uint32_t *sq_array, sq_mask, cq_mask, sq_entries;
    struct io_uring_cqe *cqes;
    int deferred; /* DEFER_TASKRUN: completions are posted when we ask (reap) */
};

static int uring_probe_futex(int ring_fd)
{
    size_t len = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *p = calloc(1, len);
    if (!p)
        return -ENOMEM;
    int rc = (int)syscall(__NR_io_uring_register, ring_fd, IORING_REGISTER_PROBE, p, 256);
    int ok = rc == 0 && p->last_op >= SHMR_IORING_OP_FUTEX_WAIT &&
             (p->ops[SHMR_IORING_OP_FUTEX_WAIT].flags & IO_URING_OP_SUPPORTED);
    rc = rc < 0 ? -errno : 0;
    free(p);
    return rc ? rc : ok ? 0 : -EOPNOTSUPP;
}

void shmr_uring_close(shmr_uring *u)
{
    if (!u)
        return;
    if (u->sqes)
        munmap(u->sqes, u->sqes_len);
    if (u->cq_map && u->cq_map != u->sq_map)
        munmap(u->cq_map, u->cq_map_len);
    if (u->sq_map)
        munmap(u->sq_map, u->sq_map_len);
    if (u->ring_fd >= 0)
        close(u->ring_fd); /* cancels whatever is still pending */
    if (u->event_fd >= 0)
        close(u->event_fd);
    free(u);
}

int shmr_uring_open(unsigned entries, unsigned flags, shmr_uring **out)
{
    struct io_uring_params prm;
    memset(&prm, 0, sizeof prm);
    /* every armed wait is one pending operation, and its completion may wait
     * a loop iteration to be reaped: a roomy completion queue keeps the
     * kernel's overflow list (and -EBUSY on submit) out of the common case */
    prm.flags = IORING_SETUP_CLAMP | SHMR_IORING_SETUP_CQSIZE;
    if (flags & SHMR_URING_ONE_THREAD)
        prm.flags |= SHMR_IORING_SETUP_SINGLE_ISSUER | SHMR_IORING_SETUP_DEFER_TASKRUN | SHMR_IORING_SETUP_TASKRUN_FLAG;
    prm.cq_entries = entries * 8;
    shmr_uring *u = calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    u->event_fd = -1;
    u->ring_fd = (int)syscall(__NR_io_uring_setup, entries, &prm);
    if (u->ring_fd < 0 && errno == EINVAL && (flags & SHMR_URING_ONE_THREAD)) {
        /* before Linux 6.1: completions run as task work that interrupts the
         * loop's epoll_wait (EINTR, then a retry) but still arrive */
        prm.flags &= ~(SHMR_IORING_SETUP_SINGLE_ISSUER | SHMR_IORING_SETUP_DEFER_TASKRUN |
                       SHMR_IORING_SETUP_TASKRUN_FLAG);
        u->ring_fd = (int)syscall(__NR_io_uring_setup, entries, &prm);
    }
    int rc;
    if (u->ring_fd < 0) {
        rc = -errno;
        goto fail;
    }
    u->deferred = (prm.flags & SHMR_IORING_SETUP_DEFER_TASKRUN) != 0;
    if ((rc = uring_probe_futex(u->ring_fd)) != 0)
        goto fail;
    u->sq_map_len = prm.sq_off.array + prm.sq_entries * sizeof(uint32_t);
    u->cq_map_len = prm.cq_off.cqes + prm.cq_entries * sizeof(struct io_uring_cqe);
    if (prm.features & IORING_FEAT_SINGLE_MMAP) {
        if (u->cq_map_len > u->sq_map_len)
            u->sq_map_len = u->cq_map_len;
    }
    u->sq_map = mmap(NULL, u->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->ring_fd,
                     IORING_OFF_SQ_RING);
    if (u->sq_map == MAP_FAILED) {
        u->sq_map = NULL;
        rc = -errno;
        goto fail;
    }
    if (prm.features & IORING_FEAT_SINGLE_MMAP) {
        u->cq_map = u->sq_map;
    } else {
        u->cq_map = mmap(NULL, u->cq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->ring_fd,
                         IORING_OFF_CQ_RING);
        if (u->cq_map == MAP_FAILED) {
            u->cq_map = NULL;
            rc = -errno;
            goto fail;
        }
    }
    u->sqes_len = prm.sq_entries * sizeof(struct io_uring_sqe);
    u->sqes = mmap(NULL, u->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->ring_fd,
                   IORING_OFF_SQES);
    if (u->sqes == MAP_FAILED) {
        u->sqes = NULL;
        rc = -errno;
        goto fail;
    }
    uint8_t *sq = u->sq_map, *cq = u->cq_map;
    u->sq_head = (shmr_a32 *)(sq + prm.sq_off.head);
    u->sq_tail = (shmr_a32 *)(sq + prm.sq_off.tail);
    u->sq_flags = (shmr_a32 *)(sq + prm.sq_off.flags);
    u->sq_mask = *(uint32_t *)(sq + prm.sq_off.ring_mask);
    u->sq_entries = prm.sq_entries;
    u->sq_array = (uint32_t *)(sq + prm.sq_off.array);
    u->cq_head = (shmr_a32 *)(cq + prm.cq_off.head);
    u->cq_tail = (shmr_a32 *)(cq + prm.cq_off.tail);
    u->cq_mask = *(uint32_t *)(cq + prm.cq_off.ring_mask);
    u->cqes = (struct io_uring_cqe *)(cq + prm.cq_off.cqes);
    u->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (u->event_fd < 0) {
        rc = -errno;
        goto fail;
    }
    if (syscall(__NR_io_uring_register, u->ring_fd, IORING_REGISTER_EVENTFD, &u->event_fd, 1) < 0) {
        rc = -errno;
        goto fail;
    }
    *out = u;
    return 0;
fail:
    shmr_uring_close(u);
    return rc;
}

int shmr_uring_eventfd(const shmr_uring *u) { return u->event_fd; }

/* One process-local user at a time (the binding holds the GIL), so the SQ tail
 * has a single writer; the release store pairs with the kernel's acquire of the
 * tail, publishing the sqes written before it. Returns how many of the n the
 * kernel took (n, or fewer when it stopped at one that failed: that one
 * completes with its error; the rest are withdrawn), or -errno when none. */
static int uring_push_n(shmr_uring *u, const struct io_uring_sqe *sqe, unsigned n)
{
    uint32_t tail = shmr_load_relaxed32(u->sq_tail);
    if (tail - shmr_load_acquire32(u->sq_head) + n > u->sq_entries)
        return -EBUSY; /* never: every push is submitted at once */
    for (unsigned k = 0; k < n; k++) {
        uint32_t i = (tail + k) & u->sq_mask;
        u->sqes[i] = sqe[k];
        u->sq_array[i] = i;
    }
    shmr_store_release32(u->sq_tail, tail + n);
    for (;;) {
        long rc = syscall(__NR_io_uring_enter, u->ring_fd, n, 0, 0, NULL, 0);
        if (rc == (long)n)
            return (int)n;
        if (rc < 0 && errno == EINTR)
            continue;
        /* not all taken (-EBUSY while completions overflow): no SQPOLL thread,
         * so the kernel reads the tail only inside io_uring_enter and we may
         * withdraw what it did not take; the caller reaps and tries again */
        int took = rc > 0 ? (int)rc : 0;
        shmr_store_release32(u->sq_tail, tail + (uint32_t)took);
        return took ? took : rc < 0 ? -errno : -EBUSY;
    }
}

static int uring_push(shmr_uring *u, const struct io_uring_sqe *sqe)
{
    int rc = uring_push_n(u, sqe, 1);
    return rc == 1 ? 0 : rc;
}

int shmr_uring_futex_wait(shmr_uring *u, void *word, uint32_t seen, uint64_t user_data)
{
    struct io_uring_sqe s;
    memset(&s, 0, sizeof s);
    s.opcode = SHMR_IORING_OP_FUTEX_WAIT;
    s.fd = SHMR_FUTEX2_SIZE_U32;
    s.addr = (uint64_t)(uintptr_t)word;
    s.off = seen; /* addr2: the value the wait expects */
    s.addr3 = SHMR_FUTEX_BIT_LOOP; /* woken by every notify, and by shmr_ec_notify_loops */
    s.user_data = user_data;
    return uring_push(u, &s);
}

int shmr_uring_futex_wait_until(shmr_uring *u, void *word, uint32_t seen, uint64_t user_data, int64_t deadline_ns)
{
    /* The deadline as a linked timeout: the kernel cancels the wait at that
     * CLOCK_MONOTONIC time (its completion then carries -ECANCELED), so an
     * event loop keeps no timer of its own per wait. The timeout's own
     * completion carries user_data 0, which reapers skip. The kernel reads
     * the timespec while submitting, so a stack copy is enough. */
    struct __kernel_timespec ts = {.tv_sec = deadline_ns / 1000000000, .tv_nsec = deadline_ns % 1000000000};
    struct io_uring_sqe s[2];
    memset(s, 0, sizeof s);
    s[0].opcode = SHMR_IORING_OP_FUTEX_WAIT;
    s[0].flags = IOSQE_IO_LINK;
    s[0].fd = SHMR_FUTEX2_SIZE_U32;
    s[0].addr = (uint64_t)(uintptr_t)word;
    s[0].off = seen;
    s[0].addr3 = SHMR_FUTEX_BIT_LOOP;
    s[0].user_data = user_data;
    s[1].opcode = IORING_OP_LINK_TIMEOUT;
    s[1].addr = (uint64_t)(uintptr_t)&ts;
    s[1].len = 1;
    s[1].timeout_flags = IORING_TIMEOUT_ABS;
    s[1].user_data = 0;
    int rc = uring_push_n(u, s, 2);
    /* 1: the wait went in (or failed, completing with its error) without its
     * timeout: the caller keeps the deadline itself */
    return rc == 2 ? 0 : rc;
}

int shmr_uring_poll(shmr_uring *u, int fd, uint64_t user_data)
{
    struct io_uring_sqe s;
    memset(&s, 0, sizeof s);
    s.opcode = IORING_OP_POLL_ADD;
    s.fd = fd;
    s.poll32_events = POLLIN;
    s.user_data = user_data;
    return uring_push(u, &s);
}

int shmr_uring_timeout(shmr_uring *u, int64_t ns, uint64_t user_data)
{
    /* the kernel reads the timespec while submitting, which completes before
     * io_uring_enter returns, so a stack copy is enough */
    struct __kernel_timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    struct io_uring_sqe s;
    memset(&s, 0, sizeof s);
    s.opcode = IORING_OP_TIMEOUT;
    s.addr = (uint64_t)(uintptr_t)&ts;
    s.len = 1;
    s.user_data = user_data;
    return uring_push(u, &s);
}

int shmr_uring_cancel(shmr_uring *u, uint64_t user_data)
{
    struct io_uring_sqe s;
    memset(&s, 0, sizeof s);
    s.opcode = IORING_OP_ASYNC_CANCEL;
    s.flags = SHMR_IOSQE_CQE_SKIP_SUCCESS; /* only the cancelled operation completes */
    s.addr = user_data;
    s.user_data = 0;
    return uring_push(u, &s);
}

int shmr_uring_reap(shmr_uring *u, uint64_t *user_data, int32_t *res, unsigned max)
{
    uint64_t junk;
    if (u->deferred) {
        /* Deferred completions wait in the kernel (flagged SQ_TASKRUN) until
         * asked for, and posting them signals the eventfd once more: so post
         * first and empty the eventfd after, or every wake-up would poll
         * readable twice. A completion deferred after the post has its flag
         * seen below (its signal may be the one just read: post again); one
         * deferred after that check signals the eventfd anew. The acquire
         * load follows the eventfd read, a syscall, and pairs with the
         * kernel's setting of the flag before its signal. */
        uint32_t fl = shmr_load_acquire32(u->sq_flags);
        for (int pass = 0; pass < 8; pass++) {
            if (fl & (SHMR_IORING_SQ_TASKRUN | SHMR_IORING_SQ_CQ_OVERFLOW))
                syscall(__NR_io_uring_enter, u->ring_fd, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0);
            while (read(u->event_fd, &junk, sizeof junk) < 0 && errno == EINTR)
                ;
            fl = shmr_load_acquire32(u->sq_flags);
            if (!(fl & (SHMR_IORING_SQ_TASKRUN | SHMR_IORING_SQ_CQ_OVERFLOW)))
                break;
        }
        if (fl & (SHMR_IORING_SQ_TASKRUN | SHMR_IORING_SQ_CQ_OVERFLOW)) {
            uint64_t one = 1; /* still more (a storm): come back through the loop */
            (void)!write(u->event_fd, &one, sizeof one);
        }
    } else {
        /* empty the eventfd before reading the ring: a completion posted after
         * our read of the tail signals it again, so none is left unnoticed */
        while (read(u->event_fd, &junk, sizeof junk) < 0 && errno == EINTR)
            ;
        /* those the full queue could not take wait in the kernel until asked for */
        if (shmr_load_acquire32(u->sq_flags) & SHMR_IORING_SQ_CQ_OVERFLOW)
            syscall(__NR_io_uring_enter, u->ring_fd, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0);
    }
    uint32_t head = shmr_load_relaxed32(u->cq_head);
    uint32_t tail = shmr_load_acquire32(u->cq_tail); /* pairs with the kernel's release of cqe + tail */
    unsigned n = 0;
    while (head != tail && n < max) {
        const struct io_uring_cqe *c = &u->cqes[head & u->cq_mask];
        user_data[n] = c->user_data;
        res[n] = c->res;
        n++;
        head++;
    }
    shmr_store_release32(u->cq_head, head); /* the kernel may reuse the slots read */
    if (head != tail) {
        uint64_t one = 1; /* more than max: leave the eventfd readable */
        (void)!write(u->event_fd, &one, sizeof one);
    }
    return (int)n;
}

struct shmr_waitv_entry {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
};

int shmr_futex_waitv(void *const *words, const uint32_t *seen, unsigned n, int64_t timeout_ns)
{
    struct shmr_waitv_entry w[SHMR_WAITV_MAX];
    if (n == 0 || n > SHMR_WAITV_MAX)
        return -EINVAL;
    for (unsigned i = 0; i < n; i++) {
        w[i].val = seen[i];
        w[i].uaddr = (uint64_t)(uintptr_t)words[i];
        w[i].flags = SHMR_FUTEX2_SIZE_U32;
        w[i].reserved = 0;
    }
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) { /* futex_waitv takes an absolute time */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + timeout_ns;
        ts.tv_sec = t / 1000000000;
        ts.tv_nsec = t % 1000000000;
        tsp = &ts;
    }
    long rc = syscall(__NR_futex_waitv, w, n, 0, tsp, CLOCK_MONOTONIC);
    return rc >= 0 ? (int)rc : -errno;
}

/* acquire / seq_cst: the bump publishes whatever the bumping thread changed
 * before it (the set of handles to wait on) to the thread that sees it */
uint32_t shmr_wakeword_load(void *w) { return shmr_load_acquire32((shmr_a32 *)w); }

void shmr_wakeword_bump(void *w)
{
    shmr_fetch_add_seqcst32((shmr_a32 *)w, 1);
    shmr_futex_wake_all((shmr_a32 *)w);
}

int shmr_wakeword_wait(void *w, uint32_t seen, int64_t timeout_ns)
{
    return shmr_futex_wait((shmr_a32 *)w, seen, timeout_ns);
}
