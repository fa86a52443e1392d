"""shmring.Queue, JoinableQueue and SimpleQueue: multiprocessing's queues over
shared memory, with many producer and many consumer processes.

One segment holds one *lane* per producer process: a single-producer message
ring in queue mode, taken with the producer role every ring has (a (pid, start
time) owner word, taken over from a dead owner). A process's first ``put``
takes a lane and keeps it; its threads share it behind a lock. Every put takes
a ticket from a queue-wide counter and ``get`` takes the oldest item across the
lanes, so one producer's items arrive in the order it put them, a put that
began after another returned is got after it, and no producer starves the
others. Items are encoded as
on message rings: bytes as bytes, numpy arrays without pickling, anything else
pickled (protocol 5, arrays inside it out of band).

An anonymous queue lives in a memfd: there is no name to clean up, and its
memory goes when the last process holding it exits or is killed. It moves to
other processes as a file descriptor through multiprocessing's own reduction.
A named queue (``name="jobs"``) lives in ``/dev/shm/shmr-jobs`` like a ring.
"""

from __future__ import annotations

import errno
import os
from multiprocessing import reduction
from typing import Any, Optional

from . import _ring, aio
from . import errors as _ring_errors
from ._ring import QueueMapping, _QueueCore

__all__ = ["Queue", "JoinableQueue", "SimpleQueue", "DEFAULT_NBYTES", "DEFAULT_MAX_PRODUCERS",
           "DEFAULT_MAX_CONSUMERS"]

#: Ring bytes of each producer process's lane: what one process may have in
#: flight (put, not yet taken), frame headers included. An item is at most
#: half of it (less 32 bytes): 4 MiB here. Pages are reserved only for lanes
#: a producer takes.
DEFAULT_NBYTES = 8 << 20
#: Producer processes that may hold a lane at once (a dead one's lane is reused).
DEFAULT_MAX_PRODUCERS = 64
#: Consumer processes that may get from the queue at once.
DEFAULT_MAX_CONSUMERS = 64

_SPIN = 20e-6
_LIVENESS = _ring.DEFAULT_LIVENESS_INTERVAL


def _count(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} must be in {lo}..{hi}, got {value}")
    return value


def _lane_bytes(nbytes: Any) -> int:
    n = _count(nbytes, "nbytes", 1, 1 << 36)
    n = max(n, _ring.MPQ_MIN_LANE_BYTES)
    return 1 << (n - 1).bit_length()


def _rebuild(cls: type, dup: Any, name: str) -> "Queue":
    fd = dup.detach()
    q = cls.__new__(cls)
    q._core_init(QueueMapping.attach_fd(fd, name), _SPIN, _LIVENESS)
    return q


class Queue(_QueueCore):
    """A process-shared FIFO queue with the API of ``multiprocessing.Queue``.

    ``maxsize`` bounds the items in the queue (``<= 0``: no bound but ``nbytes``).
    ``nbytes`` is the ring size of each producer process's lane, so it bounds
    the bytes one process has in flight (put, not yet taken; frame headers of
    32 bytes per item included); it is rounded up to a power of two, and an
    item may be at most half of it (less 32 bytes). ``max_producers`` and
    ``max_consumers`` bound the processes that put and get at once (the lanes
    and the consumer slots of each lane). ``name`` makes a named queue in
    ``/dev/shm`` that unrelated processes attach with ``Queue.attach(name)``;
    without it the queue is anonymous and leaves nothing behind.
    """

    def __init__(self, maxsize: int = 0, *, nbytes: int = DEFAULT_NBYTES, name: Optional[str] = None,
                 max_producers: int = DEFAULT_MAX_PRODUCERS, max_consumers: int = DEFAULT_MAX_CONSUMERS) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__} {maxsize!r}")
        lanes = _count(max_producers, "max_producers", 1, _ring.MPQ_MAX_LANES)
        mcs = _count(max_consumers, "max_consumers", 1, _ring.MAX_CONSUMERS)
        if name is not None:
            if not isinstance(name, str) or _ring.check_name(name):
                raise ValueError(f"invalid queue name {name!r}: 1..{_ring.NAME_MAX} characters of "
                                 f"letters, digits, '_', '-' and '.', not starting with '-'")
        mapping = QueueMapping.create(name or "", lanes, mcs, _lane_bytes(nbytes), max(maxsize, 0), 0o600)
        self._core_init(mapping, _SPIN, _LIVENESS)

    @classmethod
    def attach(cls, name: str, *, owner_only: bool = False) -> "Queue":
        """Attach to a named queue created by another process. ``owner_only=True``
        refuses (PermissionError) a queue not owned by this process's user."""
        if not isinstance(name, str) or _ring.check_name(name):
            raise ValueError(f"invalid queue name {name!r}")
        mapping = QueueMapping.attach(name)
        uid, _mode = mapping.file_owner
        if owner_only and uid != os.geteuid():
            raise PermissionError(errno.EPERM, f"queue {name!r} is owned by uid {uid}, not by this user "
                                               f"(uid {os.geteuid()}); refusing to join it")
        q = cls.__new__(cls)
        q._core_init(mapping, _SPIN, _LIVENESS)
        return q

    # put, put_many, get, get_many, qsize, empty, full come from the compiled core

    def put_nowait(self, obj: Any) -> None:
        """put(obj, False): raises queue.Full at once if there is no room."""
        self.put(obj, False)

    def get_nowait(self) -> Any:
        """get(False): raises queue.Empty at once if there is no item."""
        return self.get(False)

    async def aget(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Coroutine form of get(): the same result and exceptions (queue.Empty,
        ValueError once closed). With an item there it completes without
        reaching the event loop; a cancelled aget has taken nothing."""
        try:
            return _QueueCore.get(self, False)
        except _ring_errors.Empty:
            if not block:
                raise
        return await aio.aget_wait(self, timeout)

    async def aput(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Coroutine form of put(): waits (in the event loop) for room under
        maxsize, or in this process's lane; queue.Full on timeout, ValueError
        once closed. A cancelled aput has put nothing."""
        try:
            return _QueueCore.put(self, obj, False)
        except _ring_errors.Full as exc:
            if not block:
                raise
            full = exc
        return await aio.aput_wait(self, obj, full, timeout)

    def fileno(self) -> int:
        """A descriptor that polls readable when an item may be there to get, for
        ``selectors``, ``select.poll``, ``loop.add_reader`` (the queue itself can
        be registered as the file object). Readable means "try now": call
        ``get_nowait()`` (``get(False)``, ``get_many(n, False)``) until it raises
        ``queue.Empty``; that call re-arms the descriptor, which stays readable
        until then. It also turns readable once per recovery tick (0.4 s) while
        armed, for the check of dead peers the next try runs. Needs io_uring
        futex waits (Linux 6.7); ``OSError`` without them. Closed with the queue."""
        return aio.queue_fileno(self)

    def close(self) -> None:
        """This process will put and get no more: its lane and consumer slots are
        given back at once. Items it put stay in the queue for the others
        (``put`` is synchronous: nothing waits in a feeder thread)."""
        aio.queue_close_fileno(self)
        self._close_handles()

    def join_thread(self) -> None:
        """Nothing to wait for (there is no feeder thread: every put completed
        before it returned); allowed only after close(), as in multiprocessing."""
        if not self._closed:
            raise ValueError(f"Queue {self!r} not closed")

    def cancel_join_thread(self) -> None:
        """Nothing to cancel: a process never waits at exit for items it put."""

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def nbytes(self) -> int:
        """Ring bytes of each producer process's lane (see the class docstring)."""
        return self._nbytes

    @property
    def name(self) -> Optional[str]:
        return self._queue_mapping.name or None

    def stats(self) -> dict:
        """Counts over every process: ``items`` queued, ``bytes`` they occupy,
        ``put`` / ``got`` ever, ``abandoned`` (taken by a consumer that died before
        it had them), ``lost`` (admitted by a producer that died before publishing
        them), live ``producers``, ``consumers``, ``lanes_used`` and the layout."""
        return dict(self._queue_mapping.stats())

    def __repr__(self) -> str:
        try:
            s = self._queue_mapping.stats()
        except Exception:  # repr never fails
            return f"<shmring.{type(self).__name__}>"
        where = f"name={self.name!r}" if self.name else "anonymous"
        closed = " closed" if self._closed else ""
        return (f"<shmring.{type(self).__name__} {where} items={s['items']} bytes={s['bytes']} "
                f"producers={s['producers']} consumers={s['consumers']} maxsize={s['maxsize']}{closed}>")

    def __reduce__(self) -> Any:
        # The descriptor travels as multiprocessing passes descriptors: duplicated
        # into a child being started, else through its resource sharer (which
        # needs this process alive until the receiver unpickles).
        return (_rebuild, (type(self), reduction.DupFd(self._queue_mapping.fd), self._queue_mapping.name))


class JoinableQueue(Queue):
    """``Queue`` with ``task_done()`` and ``join()`` across processes, as
    ``multiprocessing.JoinableQueue``."""

    def task_done(self) -> None:
        """Mark one item got from the queue as processed; ValueError when called
        more often than items were put."""
        self._task_done()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Block until every item put was marked task_done() (items whose consumer
        died while taking them count as done). ``timeout`` is an extension: False
        when it passed first."""
        return self._join(timeout)


class SimpleQueue(Queue):
    """An unbounded queue with the API of ``multiprocessing.SimpleQueue``."""

    def __init__(self, *, nbytes: int = DEFAULT_NBYTES, name: Optional[str] = None,
                 max_producers: int = DEFAULT_MAX_PRODUCERS, max_consumers: int = DEFAULT_MAX_CONSUMERS) -> None:
        super().__init__(0, nbytes=nbytes, name=name, max_producers=max_producers, max_consumers=max_consumers)

    def put(self, obj: Any) -> None:  # type: ignore[override]
        _QueueCore.put(self, obj)

    def get(self) -> Any:  # type: ignore[override]
        return _QueueCore.get(self)
