# Included at the end of _ring.pyx: the primitives shmring.aio builds event-loop
# waits from. A wait is taken apart into arm (count this handle as a sleeper of
# its eventcount and re-check, as a blocking wait does before it sleeps), a
# sleep somewhere else (an io_uring futex wait, futex_waitv), and disarm. The
# futex word never leaves this file.

from libc.stdint cimport int32_t
from shmring._curing_wait cimport *

DEF REAP_MAX = 256

_aio = None
WAITV_MAX = SHMR_WAITV_MAX

cdef object _aio_mod():
    global _aio
    if _aio is None:
        import shmring.aio as m
        _aio = m
    return _aio


cdef int _arm_one(_Waitable h, void **word, uint32_t *seen) except -1:
    """1: h may make progress now (nothing counted); 0: armed."""
    cdef int rc = h._arm(word, seen)
    if rc < 0:
        _raise(rc, "arm a wait")
    if rc == 0:
        h._arm_count += 1
    return rc


cdef void _disarm_one(_Waitable h) noexcept:
    if h._arm_count == 0:
        return
    h._arm_count -= 1
    if h._usable():
        h._unarm()


cdef void _drop_arms(_Handle h) noexcept:
    """Before the C handle goes: no sleeper stays counted for it."""
    fdw = h._fdw
    h._fdw = None
    if fdw is not None:
        try:
            fdw.close()
        except Exception:
            pass
    while h._arm_count:
        _disarm_one(h)


def _disarm(_Waitable h):
    _disarm_one(h)


def _ready(_Waitable h):
    """True when a non-blocking call on h may make progress (or raise Closed)."""
    return h._ready_now()


def _liveness(_Waitable h):
    """What a blocking call does between two sleeps (notice a dead producer /
    sweep dead consumers)."""
    h._liveness()


def _tick(_Waitable h):
    """Seconds between liveness checks while a peer cannot be watched; 0: none needed."""
    return h._tick_ns() / 1e9


def _owner(_Waitable h):
    """The owner word an awaited pop's wait looks its watch up by (the
    consumer's producer), 0: nothing to watch."""
    return h._watch_owner()


def _peers(_Waitable h):
    """The owner words of the processes whose exit may end a wait on h (a
    tuple, read after the arm), None when one cannot be watched (tick then)."""
    return h._peers()


TAKE_NOTHING = _NOTHING


def _take(_ConsumerSide c):
    """An awaited pop's try after a wake-up: the item, or TAKE_NOTHING. The
    liveness check pop(0) runs when it is due is left out of the common case:
    the awaited wait watches the producer itself (pidfd, or its tick)."""
    return c._try_pop()


def _fd_waiter(_Handle h):
    return h._fdw


def _set_fd_waiter(_Handle h, w):
    h._fdw = w


cdef class WakeWord:
    """A process-private futex word: a thread sleeping in _wait_many(..., ctl)
    also wakes when another thread bumps it."""

    cdef uint32_t *w

    def __cinit__(self):
        self.w = <uint32_t *>malloc(sizeof(uint32_t))
        if self.w == NULL:
            raise MemoryError()
        self.w[0] = 0

    def __dealloc__(self):
        free(self.w)

    @property
    def value(self):
        return shmr_wakeword_load(self.w)

    def bump(self):
        shmr_wakeword_bump(self.w)

    def wait(self, uint32_t seen, double timeout=-1):
        cdef int64_t ns = <int64_t>(timeout * 1e9) if timeout >= 0 else -1
        with nogil:
            shmr_wakeword_wait(self.w, seen, ns)


def _wait_many(list handles, double timeout, WakeWord ctl=None, uint32_t ctl_seen=0):
    """Sleeps (futex_waitv, GIL released) until one of the handles may make
    progress, ctl is bumped past ctl_seen, or timeout seconds pass. True: woken
    or ready, try now; False: the time is over."""
    cdef void *words[SHMR_WAITV_MAX]
    cdef uint32_t seen[SHMR_WAITV_MAX]
    cdef Py_ssize_t n = len(handles), k, armed = 0, limit = SHMR_WAITV_MAX
    cdef int rc = 0
    cdef int64_t ns = <int64_t>(timeout * 1e9) if timeout >= 0 else -1
    if ctl is not None:
        limit -= 1
    if n > limit:
        raise ValueError(f"wait_any() takes at most {SHMR_WAITV_MAX} handles (the futex_waitv limit), "
                         f"got {n}; await_any() takes any number")
    try:
        for k in range(n):
            if _arm_one(<_Waitable?>handles[k], &words[k], &seen[k]):
                return True
            armed += 1
        if ctl is not None:
            words[n] = <void *>ctl.w
            seen[n] = ctl_seen
        with nogil:
            rc = shmr_futex_waitv(words, seen, <unsigned>(n + (ctl is not None)), ns)
    finally:
        for k in range(armed):
            _disarm_one(<_Waitable>handles[k])
    if rc == -EINTR:
        PyErr_CheckSignals()
        return True
    if rc == -ETIMEDOUT:
        return False
    if rc < 0 and rc != -EAGAIN:
        _raise(rc, "wait_any")
    return True


cdef class UringWaiter:
    """An io_uring whose completions make one eventfd readable: the poller of
    shmring.aio (one per event loop) and of fileno() (one per handle)."""

    cdef shmr_uring *u

    def __cinit__(self, unsigned entries=64, bint one_thread=False):
        cdef int rc = shmr_uring_open(entries, SHMR_URING_ONE_THREAD if one_thread else 0, &self.u)
        if rc:
            self.u = NULL
            _raise(rc, "io_uring futex waits")

    def __dealloc__(self):
        if self.u != NULL:
            shmr_uring_close(self.u)
            self.u = NULL

    cdef int _ok(self) except -1:
        if self.u == NULL:
            raise ValueError("the waiter is closed")
        return 0

    def close(self):
        if self.u != NULL:
            shmr_uring_close(self.u)
            self.u = NULL

    def fileno(self):
        self._ok()
        return shmr_uring_eventfd(self.u)

    def arm(self, _Waitable h, uint64_t token):
        """Arms h and submits a futex wait completing with token. False: h may
        make progress now (nothing armed). True: armed; one _disarm(h) is owed."""
        cdef void *word = NULL
        cdef uint32_t seen = 0
        self._ok()
        if _arm_one(h, &word, &seen):
            return False
        cdef int rc = shmr_uring_futex_wait(self.u, word, seen, token)
        if rc:
            _disarm_one(h)
            _raise(rc, "io_uring futex wait")
        return True

    def arm_until(self, _Waitable h, uint64_t token, double deadline):
        """arm() with a deadline (time.monotonic() seconds) the kernel keeps: the
        wait completes at that time if nothing woke it first. 0: h may make
        progress now (nothing armed); 1: armed; 2: armed without the deadline
        (the caller keeps it). One _disarm(h) is owed when armed."""
        cdef void *word = NULL
        cdef uint32_t seen = 0
        self._ok()
        if _arm_one(h, &word, &seen):
            return 0
        cdef int rc = shmr_uring_futex_wait_until(self.u, word, seen, token, <int64_t>(deadline * 1e9))
        if rc < 0:
            _disarm_one(h)
            _raise(rc, "io_uring futex wait")
        return 2 if rc == 1 else 1

    def poll(self, int fd, uint64_t token):
        self._ok()
        cdef int rc = shmr_uring_poll(self.u, fd, token)
        if rc:
            _raise(rc, "io_uring poll")

    def timeout(self, double seconds, uint64_t token):
        self._ok()
        cdef int rc = shmr_uring_timeout(self.u, <int64_t>(seconds * 1e9), token)
        if rc:
            _raise(rc, "io_uring timeout")

    def cancel(self, uint64_t token):
        self._ok()
        cdef int rc = shmr_uring_cancel(self.u, token)
        if rc:
            _raise(rc, "io_uring cancel")

    def dispatch(self, dict futs):
        """Reaps what completed and sets the result of the future each token
        names (taken out of futs): the event loop's reader callback, without a
        list of completions in between."""
        cdef uint64_t ud[REAP_MAX]
        cdef int32_t res[REAP_MAX]
        cdef int n, k
        self._ok()
        while True:
            n = shmr_uring_reap(self.u, ud, res, REAP_MAX)
            for k in range(n):
                if ud[k]:  # 0: the completion of a cancel request
                    fut = futs.pop(ud[k], None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
            if n < REAP_MAX:
                return

    def reap(self):
        """[(token, result), ...] of the operations completed since the last call."""
        cdef uint64_t ud[REAP_MAX]
        cdef int32_t res[REAP_MAX]
        cdef int n, k
        self._ok()
        out = []
        while True:
            n = shmr_uring_reap(self.u, ud, res, REAP_MAX)
            for k in range(n):
                if ud[k]:  # 0: the completion of a cancel request
                    out.append((ud[k], res[k]))
            if n < REAP_MAX:
                return out
