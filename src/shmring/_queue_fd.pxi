# Included after _queue.pxi: the wait behind Queue.fileno() (shmring.aio's
# _FdWaiter polls it), and the re-arm a non-blocking get that finds nothing
# owes that poller.

@cython.final
cdef class _QueueItemWait(_Waitable):
    """An item to get from a queue, as _Waitable, for the life of its fileno()
    poller. It holds the mapping, not the queue: the queue holds its poller, so
    a strong reference back would keep a dropped queue (and its lanes'
    consumer slots) alive until the next cycle collection; and with the mapping
    held, an arm can always be undone, even after the queue went."""

    cdef QueueMapping _qm
    cdef object _core_ref   # weakref to the _QueueCore
    cdef int64_t _tick
    cdef int _gen

    cdef _QueueCore _core(self):
        core = self._core_ref()
        if core is None:
            raise Closed("the queue is gone", "handle closed")
        (<_QueueCore>core)._enter()
        return <_QueueCore>core

    cdef int _arm(self, void **word, uint32_t *seen) except -1:
        self._core()
        return shmr_mpq_arm_data(self._qm.q, word, seen)

    cdef void _unarm(self) noexcept:
        shmr_mpq_disarm_data(self._qm.q)

    cdef bint _usable(self) noexcept:
        return self._gen == _fork_gen

    cdef bint _ready_now(self) except -1:
        self._core()
        return shmr_mpq_has_data(self._qm.q) != 0

    cdef object _peers(self):
        return _peers_of(_mpq_peers_fn, self._qm.q, 0) if self._usable() else ()

    cdef int64_t _tick_ns(self) noexcept:
        # as _QueueWait: only while a peer cannot be watched
        return self._tick

    cdef void _liveness(self) noexcept:
        core = self._core_ref()
        if core is not None and not (<_QueueCore>core)._qclosed and self._gen == _fork_gen:
            shmr_mpq_recover(self._qm.q)


from weakref import ref as weakref_ref


def _queue_item_wait(_QueueCore q):
    cdef _QueueItemWait w = _QueueItemWait.__new__(_QueueItemWait)
    q._enter()
    w._qm = q._qm
    w._core_ref = weakref_ref(q)
    w._tick = 8 * q._slice_ns
    w._gen = _fork_gen
    return w


def _queue_pass_on(_QueueItemWait w):
    """A put wakes one sleeping getter: a poller that stops (its queue closes)
    after its wait completed passes that wake on, as a cancelled aget does."""
    if w._gen == _fork_gen:
        shmr_mpq_leave(w._qm.q)


cdef int _queue_fd_rearm(_QueueCore q) except -1:
    """fileno() protocol: a non-blocking get that found nothing re-arms."""
    fdw = getattr(q, "_fdw", None)
    if fdw is not None:
        fdw.rearm()
    return 0
