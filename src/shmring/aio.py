"""Event loops: coroutines on ring handles, pollable descriptors, waits on many rings.

A futex cannot be polled, so a wait is taken apart (see ``_async.pxi``): *arm*
counts the handle as a sleeper of its eventcount and re-checks, exactly as a
blocking call does before it sleeps; the sleep itself is an io_uring
``IORING_OP_FUTEX_WAIT`` on the same word with the value seen at the arm, whose
completion makes an eventfd readable; *disarm* un-counts the handle. The
producer's side is unchanged: it pays a wake syscall only while someone is
counted, and a notify between the arm and the sleep changes the word, so the
kernel ends the wait at once. One io_uring (one eventfd, one ``add_reader``)
serves every handle awaited in an event loop, so awaiting consumers need no
threads and cost nothing while idle.

A dead process writes nothing, so beside its futex wait an awaiting handle
watches, through pidfds (readable when the process exits; one per process per
loop), the processes whose exit could matter to it: a consumer its producer, a
producer its consumers, a Queue's getters and putters every lane's producer and
consumers (other than their own process). When one exits, the liveness check a
blocking call runs between its sleeps runs, and the wait is armed again with
the peers read afresh. A process that joins (takes a producer role, a consumer
slot, a lane) notifies the eventcount such waits are armed on, so they re-read
their peers: an idle awaited wait sleeps once however long it lasts. Where no
pidfd can be had (a peer in another pid namespace, no pidfd_open) and for a
producer of a ring with evict_after (evictions come with time), the check runs
on a timer instead, with the futex wait left in place.
Without io_uring futex waits (kernels before 6.7, io_uring disabled) awaits
sleep in futex_waitv (Linux 5.16) in helper threads, one per 127 handles
awaited at once, in slices of the liveness interval (that fallback keeps its
timer: a thread cannot wait on pidfds and futexes at once).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import math
import os
import sys
import threading
import time
import weakref
from typing import Any, Iterable

from . import _ring
from .errors import Closed, Empty, Full

__all__ = ["wait_any", "await_any", "wait_ready", "backend"]

_FUTEX = 1       # token of the futex wait of a fileno() poller
_LIVENESS = 2    # token of its liveness watch
_ONE = (1).to_bytes(8, sys.byteorder)  # one eventfd increment, in native byte order


def _deadline(timeout: Any) -> float | None:
    if timeout is None:
        return None
    t = float(timeout)
    if t != t or t < 0:
        raise ValueError(f"timeout must be None or a number >= 0, not {timeout!r}")
    return time.monotonic() + t


_NO_WATCH: list[Any] = [None, set()]  # apop_wait: a consumer with no producer to watch (none yet, or ours)
_DEAD = -1     # _owner_pidfd: the process has exited already
_CANNOT = -2   # _owner_pidfd: no pidfd to be had (no pidfd_open, out of descriptors)


def _owner_pidfd(owner: int) -> int:
    """A pidfd of the process recorded in owner, _DEAD if it has exited, or
    _CANNOT. Opened first, then the start time compared, so a reused pid is
    never watched in place of the dead process (and counts as its death)."""
    pid = owner & 0xFFFFFFFF
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return _DEAD
    except (OSError, AttributeError):
        return _CANNOT
    start = _ring.start_time_of(pid)
    if (start & 0xFFFFFFFF) != (owner >> 32):
        os.close(fd)
        # 0: its /proc entry cannot be read (gone meanwhile, or hidden from us)
        return _DEAD if start or not _ring.process_alive(pid) else _CANNOT
    return fd


# ---- the per-loop poller ----------------------------------------------------

class _UringReactor:
    """One io_uring per event loop, polled through its own descriptor;
    completions are dispatched to futures by token (in the binding)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # a proxy: the reactor is the value of a dict weakly keyed by its loop,
        # and goes (closing its io_uring) when the loop does
        self.loop: Any = weakref.proxy(loop)
        # used by the loop's thread only: completions wait for our reap
        # instead of interrupting the loop's epoll_wait
        self.uw = _ring.UringWaiter(256, one_thread=True)
        self.futs: dict[int, asyncio.Future[None]] = {}
        self.tokens = itertools.count(3)
        self.watches: dict[int, list[Any]] = {}  # owner -> [pidfd, set of (handle, future)]
        # owner words found dead: never watched again (a wait on a handle
        # with such a peer runs its check once, instead). An
        # owner word carries the start time, so it never comes back to life;
        # a dead lane producer stays recorded until its lane is taken again
        self.dead: set[int] = set()
        # apop's deadline: asyncio's own loops keep timers in Python (a timer
        # handle, a heap push, a cancel: ~25k instructions a wait), so the kernel
        # keeps it, beside the futex wait (which costs one more reap pass when
        # the wait completes); loops with timers in C (uvloop) keep their own
        self.kernel_deadline = isinstance(loop, asyncio.BaseEventLoop)
        loop.add_reader(self.uw.fileno(), self.uw.dispatch, self.futs)

    def __del__(self) -> None:
        for fd, _ in self.watches.values():
            os.close(fd)

    def _arm_again(self, h: Any, token: int, exc: OSError) -> bool:
        if exc.errno != errno.EBUSY:
            raise exc
        self.uw.dispatch(self.futs)  # make room, then once more
        return bool(self.uw.arm(h, token))

    def _watch(self, owner: int, waiter: tuple[Any, Any]) -> int:
        """1: watched; _DEAD: the process has exited (its check is due now);
        _CANNOT: no pidfd (the caller keeps a timer)."""
        w = self.watches.get(owner)
        if w is None:
            fd = _owner_pidfd(owner)
            if fd < 0:
                if fd == _DEAD:
                    self._mark_dead(owner)
                return fd
            w = self.watches[owner] = [fd, set()]
            self.loop.add_reader(fd, self._on_exit, owner)
        w[1].add(waiter)
        return 1

    def _mark_dead(self, owner: int) -> None:
        if len(self.dead) >= 4096:
            self.dead.clear()  # at worst one more check each
        self.dead.add(owner)

    def _unwatch(self, owner: int, waiter: tuple[Any, Any]) -> None:
        # An idle watch stays open (one descriptor per producer process) until
        # that process exits: the next wait on its rings costs no pidfd_open,
        # /proc read or epoll_ctl. Past 64 idle watches the idle ones go.
        w = self.watches.get(owner)
        if w is None:
            return
        w[1].discard(waiter)
        if len(self.watches) > 64:
            for o, (fd, waiters) in list(self.watches.items()):
                if not waiters:
                    self._drop_watch(o)

    def _drop_watch(self, owner: int) -> None:
        fd, _ = self.watches.pop(owner)
        self.loop.remove_reader(fd)
        os.close(fd)

    def _on_exit(self, owner: int) -> None:
        # Every wait on it ends, after its check: the caller tries, then arms
        # again with its peers read afresh. A death is rare, and this way
        # nothing it changed is left to a notify (a getter killed holding a
        # put's single wake: the disarm lowers the flag it left raised).
        w = self.watches.get(owner)
        self._mark_dead(owner)
        if w is not None:
            for h, fut in list(w[1]):
                _check(h, fut)
                _wake(fut, None)
            self._drop_watch(owner)

    async def wait(self, handles: list[Any], deadline: float | None) -> None:
        """Sleeps until one of handles may make progress or the deadline.

        The futex waits stay submitted for the whole call. Liveness runs
        beside them: the processes whose exit could matter to a handle (its
        peers, read after its arm) are watched through pidfds, and when one
        exits the handle's check runs and the wait ends (the caller tries and
        waits again, reading the peers afresh); a peer already dead gets its
        check at once. Only a handle with a peer no pidfd can watch runs the
        check once per liveness interval instead. A check that ends the stream
        makes the consumer ready, which ends the wait."""
        loop = self.loop
        futs = self.futs
        fut = loop.create_future()
        armed: list[tuple[Any, int]] = []
        watched: list[tuple[int, tuple[Any, Any]]] = []
        timers: list[Any] = []
        try:
            for h in handles:
                token = next(self.tokens)
                try:
                    if not self.uw.arm(h, token):
                        return
                except OSError as exc:
                    if not self._arm_again(h, token, exc):
                        return
                armed.append((h, token))
                futs[token] = fut
            unwatched = []
            due = []
            dead = self.dead
            for h in handles:
                # after the arms: a process that joins from here on notifies
                # the eventcount they count us on (shmr_producer_open,
                # shmr_mpq_joined), which ends the futex wait
                peers = _ring._peers(h)
                if peers is None:
                    unwatched.append(h)
                    continue
                waiter = (h, fut)
                for owner in peers:
                    if owner in dead:
                        # not watched again, but checked: its exit may have been
                        # reaped while no wait on this handle was pending (an idle
                        # watch), and _on_exit checks only the waits it finds
                        due.append(h)
                        continue
                    st = self._watch(owner, waiter)
                    if st == 1:
                        watched.append((owner, waiter))
                    elif st == _DEAD:
                        due.append(h)
                    else:
                        unwatched.append(h)
                        break
            for h in due:
                _check(h, fut)
            unwatched = [h for h in unwatched if _ring._tick(h) > 0]
            if unwatched:
                interval = _interval(unwatched)

                def tick() -> None:
                    for h in unwatched:
                        _check(h, fut)
                    if not fut.done():
                        timers[0] = loop.call_later(interval, tick)

                timers.append(loop.call_later(interval, tick))
            if deadline is not None:
                timers.append(loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()),
                                           _wake, fut, None))
            await fut
        finally:
            for h, token in armed:
                _ring._disarm(h)
                if futs.pop(token, None) is not None:
                    try:
                        self.uw.cancel(token)  # the kernel forgets the futex wait
                    except (OSError, ValueError):
                        pass
            for owner, waiter in watched:
                self._unwatch(owner, waiter)
            for t in timers:
                t.cancel()


def _check(h: Any, fut: asyncio.Future[None]) -> None:
    """The liveness check a blocking call runs between sleeps, for a wait on h
    in the loop: ends the wait if it made h ready (a stream ended)."""
    if fut.done():
        return
    try:
        _ring._liveness(h)
        ready = _ring._ready(h)
    except Exception:
        ready = True  # closed meanwhile: the coroutine's next try raises it
    if ready:
        fut.set_result(None)


def _interval(hs: list[Any]) -> float | None:
    """How often a wait on hs runs the liveness checks; None: never needed."""
    ticks = [t for t in map(_ring._tick, hs) if t > 0]
    return min(ticks) if ticks else None


def _wake(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


_WAITV_IDLE_S = 1.0  # how long a waitv thread with no wait registered stays for the next one


class _WaitvGroup:
    """A helper thread sleeping in futex_waitv on the handles of up to 127
    awaited handles, plus a private wake word that makes it re-read its set.
    A wait whose handle may make progress is fired once (woken in the loop
    through call_soon_threadsafe) and not watched again until it re-registers."""

    def __init__(self, reactor: "_ThreadReactor") -> None:
        self.reactor = reactor
        self.lock = threading.Lock()
        self.entries: list[list[Any]] = []  # [handles, future, fired]
        self.size = 0
        self.ctl = _ring.WakeWord()
        self.closed = False
        self.thread: threading.Thread | None = None  # runs only while waits are registered

    def add(self, entry: list[Any]) -> None:
        with self.lock:
            self.entries.append(entry)
            self.size += len(entry[0])
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, daemon=True, name="shmring-waitv")
                self.thread.start()
        self.ctl.bump()

    def remove(self, entry: list[Any]) -> None:
        with self.lock:
            self.entries.remove(entry)
            self.size -= len(entry[0])
        self.ctl.bump()

    def close(self) -> None:
        self.closed = True
        self.ctl.bump()

    def _fire(self, entry: list[Any], woke: bool) -> None:
        entry[2] = True
        try:
            self.reactor.loop.call_soon_threadsafe(_wake, entry[1], woke)
        except (RuntimeError, ReferenceError):
            self.closed = True  # the loop is gone

    def _run(self) -> None:
        idle = False
        while not self.closed:
            with self.lock:
                if idle and not self.entries:
                    # No wait registered for a whole grace period: the thread
                    # ends (add() starts another), so a loop that stopped
                    # awaiting, or was closed, leaves no thread behind (one
                    # would outlive its loop, and a later fork() would copy a
                    # process with a thread in it).
                    self.thread = None
                    return
                seen = self.ctl.value
                snap = [e for e in self.entries if not e[2]]
            if not snap:
                idle = not self.entries
                self.ctl.wait(seen, _WAITV_IDLE_S if idle else -1)
                continue
            idle = False
            hs = [h for e in snap for h in e[0]]
            slice_s = _interval(hs)
            try:
                woke = _ring._wait_many(hs, -1.0 if slice_s is None else slice_s, self.ctl, seen)
            except Exception:
                woke = None  # a handle was closed: let its coroutine find out
            with self.lock:
                for e in snap:
                    if e[2] or e not in self.entries:
                        continue
                    if woke is None or woke is False:
                        self._fire(e, bool(woke))
                    else:
                        try:
                            ready = any(_ring._ready(h) for h in e[0])
                        except Exception:
                            ready = True
                        if ready:
                            self._fire(e, True)


class _ThreadReactor:
    """Fallback without io_uring futex waits: helper threads sleep in
    futex_waitv, each on up to 127 awaited handles (one thread per 127 handles
    awaited at once, not one per wait), and wake the loop with
    call_soon_threadsafe. They sleep in slices of the liveness interval; a
    slice that ends with nothing to do runs the liveness check in the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop: Any = weakref.proxy(loop)
        self.groups: list[_WaitvGroup] = []

    def __del__(self) -> None:
        for g in self.groups:
            g.close()

    async def wait(self, handles: list[Any], deadline: float | None) -> None:
        for h in handles:
            if _ring._ready(h):
                return
        if len(handles) > int(_ring.WAITV_MAX) - 1:
            raise ValueError(f"without io_uring, await_any() takes at most {int(_ring.WAITV_MAX) - 1} handles")
        fut = self.loop.create_future()
        entry = [handles, fut, False]
        group = next((g for g in self.groups if g.size + len(handles) <= int(_ring.WAITV_MAX) - 1), None)
        if group is None:
            group = _WaitvGroup(self)
            self.groups.append(group)
        group.add(entry)
        timer = None
        if deadline is not None:
            timer = self.loop.call_at(self.loop.time() + max(0.0, deadline - time.monotonic()), _wake, fut, True)
        try:
            if not await fut:
                for h in handles:
                    _ring._liveness(h)
        finally:
            group.remove(entry)
            if timer is not None:
                timer.cancel()


_reactors: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]" = weakref.WeakKeyDictionary()
_backend: str | None = None


def backend() -> str:
    """"io_uring" when awaits sleep in io_uring futex waits, else "futex_waitv"."""
    global _backend
    if _backend is None:
        forced = os.environ.get("SHMRING_AIO_BACKEND")
        if forced in ("io_uring", "futex_waitv"):
            _backend = forced
        else:
            try:
                _ring.UringWaiter(2).close()
                _backend = "io_uring"
            except OSError:
                _backend = "futex_waitv"
    return _backend


_last: list[Any] = [lambda: None, None]  # [weak reference to a loop, its reactor]


def _reactor() -> Any:
    loop = asyncio.get_running_loop()
    if _last[0]() is loop:  # the common case: the loop of the last await
        return _last[1]
    r = _reactors.get(loop)
    if r is None:
        r = _reactors[loop] = _UringReactor(loop) if backend() == "io_uring" else _ThreadReactor(loop)
    _last[:] = [weakref.ref(loop), r]
    return r


# ---- coroutines on handles ---------------------------------------------------
# Consumer.apop() and the others (in _ring.pyx) try the non-blocking call first,
# so the fast path never touches the loop; these are their slow halves: wait,
# then try again. The record is taken only by that non-blocking
# call, after the last await: a cancelled or timed-out coroutine has consumed
# nothing.

async def _progress(h: Any, deadline: float | None) -> bool:
    """One wait; False once the deadline has passed."""
    if deadline is not None and time.monotonic() >= deadline:
        return False
    await _reactor().wait([h], deadline)
    return True


async def wait_ready(w: Any, timeout: Any = None) -> bool:
    """Waits until w (a consumer, a producer, a board change: anything with a
    ready function and an eventcount, see _Waitable) may make progress; True
    then, False once timeout seconds passed. When w is ready already it returns
    without touching the loop."""
    deadline = _deadline(timeout)
    if _ring._ready(w):
        return True
    while await _progress(w, deadline):
        if _ring._ready(w):
            return True
    return False


async def apop_wait(c: Any, timeout: Any = None) -> Any:
    # The hot slow path (every record that arrives while the loop sleeps): one
    # coroutine frame, with _UringReactor.wait for one consumer inlined once its
    # producer is watched (the common case: the first wait set the watch up);
    # a deadline rides with the futex wait as a kernel timeout, not as a timer
    # of the loop; the try after a wake-up skips pop(0)'s liveness check (the
    # wait watches the producer itself).
    deadline = _deadline(timeout)
    r = _reactor()
    if type(r) is not _UringReactor:
        while await _progress(c, deadline):
            try:
                return c.pop(0)
            except Empty:
                pass
        return c.pop(0)  # the time is over: Empty, unless a record came just now
    uw = r.uw
    futs = r.futs
    loop = r.loop
    take = _ring._take
    nothing = _ring.TAKE_NOTHING
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            # the time is over: a last non-blocking pop raises Empty (after the
            # liveness check such a call runs) unless a record came just now
            return c.pop(0)
        owner = _ring._owner(c)
        watch = r.watches.get(owner) if owner else _NO_WATCH
        if watch is None:
            await r.wait([c], deadline)  # sets the watch up, or ticks without one
        else:
            token = next(r.tokens)
            try:
                if deadline is None:
                    armed = uw.arm(c, token)
                elif r.kernel_deadline:
                    armed = uw.arm_until(c, token, deadline)
                else:
                    armed = 2 if uw.arm(c, token) else 0
            except OSError as exc:
                armed = r._arm_again(c, token, exc)
                if armed and deadline is not None:
                    armed = 2
            if armed and _ring._owner(c) != owner:
                # read again now that we are counted: a producer that took the
                # role before that may have notified before it (from here on
                # its notify ends our wait); arm again, watching it
                _ring._disarm(c)
                try:
                    uw.cancel(token)
                except (OSError, ValueError):
                    pass
                continue
            if armed:
                fut = loop.create_future()
                futs[token] = fut
                waiter = (c, fut)
                if watch is not _NO_WATCH:
                    watch[1].add(waiter)
                timer = None
                if armed == 2:
                    timer = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()), _wake, fut, None)
                try:
                    await fut
                finally:
                    _ring._disarm(c)
                    if futs.pop(token, None) is not None:
                        try:
                            uw.cancel(token)  # the kernel forgets the futex wait
                        except (OSError, ValueError):
                            pass
                    if watch is not _NO_WATCH:
                        watch[1].discard(waiter)  # a set _on_exit dropped meanwhile: harmless
                    if timer is not None:
                        timer.cancel()
        item = take(c)
        if item is not nothing:
            return item


async def apop_many_wait(c: Any, max_records: Any, timeout: Any = None, out: Any = None) -> Any:
    deadline = _deadline(timeout)
    while await _progress(c, deadline):
        try:
            if out is None:
                return c.pop_many(max_records, 0)
            return c.pop_many(max_records, 0, out=out)
        except Empty:
            pass
    raise Empty()


async def apush_wait(p: Any, record: Any, timeout: Any = None) -> None:
    deadline = _deadline(timeout)
    while await _progress(p, deadline):
        try:
            return p.push(record, 0)
        except Full:
            pass
    raise Full("ring is full: nothing pushed before the timeout")


async def apush_many_wait(p: Any, records: Any, done: int, timeout: Any = None) -> int:
    """The rest of an apush_many() whose first try published `done` records."""
    total = len(records)
    deadline = _deadline(timeout)
    while await _progress(p, deadline):
        try:
            p.push_many(records[done:], 0)
            return total
        except Full as exc:
            done += exc.pushed
    raise Full(f"ring is full: {done} of {total} records pushed before the timeout", pushed=done)


async def aget_wait(q: Any, timeout: Any = None) -> Any:
    """The rest of a Queue.aget() whose first try found nothing."""
    w = _ring._queue_wait(q, False, timeout)
    deadline = _deadline(timeout)
    try:
        while await _progress(w, deadline):
            try:
                return _ring._QueueCore.get(q, False)
            except Empty:
                pass
    except BaseException:
        q._leave()  # cancelled: a put wakes one getter, and that may have been us
        raise
    q._leave()
    raise Empty("the queue stayed empty until the timeout")


async def aput_wait(q: Any, obj: Any, full: Full, timeout: Any = None) -> None:
    """The rest of a Queue.aput() whose first try raised full; the last Full
    seen is what the timeout raises (maxsize reached, or the lane's bytes)."""
    w = _ring._queue_wait(q, True, timeout)
    deadline = _deadline(timeout)
    while await _progress(w, deadline):
        try:
            return _ring._QueueCore.put(q, obj, False)
        except Full as exc:
            full = exc
    raise full


# ---- many rings --------------------------------------------------------------

def _check_handles(handles: Iterable[Any]) -> tuple[list[Any], list[Any]]:
    """The handles, and what a wait arms for each: the handle itself, or for a
    Queue a wait for an item to get."""
    hs = list(handles)
    if not hs:
        raise ValueError("wait on at least one handle")
    ws = []
    for h in hs:
        if isinstance(h, _ring._Waitable):
            ws.append(h)
        elif isinstance(h, _ring._QueueCore):
            ws.append(_ring._queue_wait(h, False))
        else:
            raise TypeError(f"expected shmring Consumer or Producer handles (of record or message rings), "
                            f"board changes or Queues, got {type(h).__name__}")
    return hs, ws


def _ready_of(hs: list[Any], ws: list[Any]) -> list[Any]:
    return [h for h, w in zip(hs, ws) if _ring._ready(w)]


def wait_any(handles: Iterable[Any], timeout: Any = None) -> list[Any]:
    """The handles that can make progress now (a consumer with records or at the
    end of its stream, a producer with room, a Queue with an item to get), waiting up to ``timeout`` seconds
    (None: forever) for one; [] when the time is over. At most 128 handles."""
    hs, ws = _check_handles(handles)
    deadline = _deadline(timeout)
    slice_s = _interval(ws)
    while True:
        ready = _ready_of(hs, ws)
        if ready:
            return ready
        left = math.inf if slice_s is None else slice_s
        if deadline is not None:
            left = min(left, deadline - time.monotonic())
        if left <= 0:
            return []
        if not _ring._wait_many(ws, -1.0 if left == math.inf else left):
            for w in ws:
                _ring._liveness(w)


async def await_any(handles: Iterable[Any], timeout: Any = None) -> list[Any]:
    """Coroutine form of wait_any(), for any number of handles."""
    hs, ws = _check_handles(handles)
    deadline = _deadline(timeout)
    while True:
        ready = _ready_of(hs, ws)
        if ready:
            return ready
        if deadline is not None and time.monotonic() >= deadline:
            return []
        await _reactor().wait(ws, deadline)


# ---- fileno() ----------------------------------------------------------------

class _FdWaiter:
    """The poller behind a handle's fileno(): its own small io_uring, whose
    eventfd is the descriptor handed out. Readable means "try now"; a
    non-blocking call that then finds nothing (Empty / Full) re-arms it.

    Beside the futex wait it polls a pidfd of each peer (as _UringReactor.wait
    does): a peer's exit makes it readable, and the re-arm after it runs the
    liveness check and reads the peers afresh (as does every re-arm after the
    futex wait completed: a joining peer notifies the eventcount). Only with a
    peer no pidfd can watch does a timeout of the liveness tick stand in.

    h is what owns the poller (a ring handle, a Queue), w what is armed: the
    handle itself, or for a Queue a wait for an item to get."""

    def __init__(self, h: Any, w: Any = None) -> None:
        # weak: the handle owns this poller (it closes it when it closes), and a
        # dropped handle must give its consumer slot back at once, not at the
        # next cycle collection
        self._h = weakref.ref(h)
        self._w = w
        self.pid = os.getpid()
        self.uw = _ring.UringWaiter(16)  # a pidfd poll per peer beside the futex wait
        self.futex_pending = False
        self.armed = False
        self.tick_pending = False
        self.cannot = False  # a peer no pidfd can watch: the liveness tick stands in
        self.pidfds: dict[int, tuple[int, int]] = {}  # owner -> (pidfd, token)
        self.by_token: dict[int, int] = {}            # token -> owner
        self.dead: set[int] = set()
        self.tokens = itertools.count(_LIVENESS + 1)
        self.rearm()

    @property
    def h(self) -> Any:
        if self._w is not None:
            return self._w
        h = self._h()
        if h is None:
            raise Closed("the handle is gone", "handle closed")
        return h

    def fileno(self) -> int:
        return self.uw.fileno()

    def _forget(self, owner: int, cancel: bool) -> None:
        fd, token = self.pidfds.pop(owner)
        del self.by_token[token]
        if cancel:
            try:
                self.uw.cancel(token)
            except (OSError, ValueError):
                pass
        os.close(fd)

    def rearm(self) -> None:
        if self.pid != os.getpid():
            return  # inherited through fork: the parent's poller (fileno() makes a new one)
        live_due = False
        for token, _res in self.uw.reap():
            if token == _FUTEX:
                self.futex_pending = False
                if self.armed:
                    self.armed = False
                    _ring._disarm(self.h)
            elif token == _LIVENESS:
                self.tick_pending = False
                live_due = True
            else:
                owner = self.by_token.get(token)
                if owner is not None:  # not one cancelled meanwhile
                    self._forget(owner, False)
                    self.dead.add(owner)
                    live_due = True
        if live_due:
            _ring._liveness(self.h)
        if not self.futex_pending:
            if not self.uw.arm(self.h, _FUTEX):
                os.write(self.uw.fileno(), _ONE)  # progress possible now (os.eventfd_write: 3.10+)
                return
            self.armed = self.futex_pending = True
            self._watch_peers()
        # else the peers are as they were read: a join would have ended the futex wait
        tick = _ring._tick(self.h)
        if self.cannot and tick > 0 and not self.tick_pending:
            self.uw.timeout(tick, _LIVENESS)
            self.tick_pending = True

    def _watch_peers(self) -> None:
        # after the arm: a peer joining from here on ends the futex wait
        peers = _ring._peers(self.h)
        cannot = peers is None
        now = set(peers or ())
        for owner in [o for o in self.pidfds if o not in now]:
            self._forget(owner, True)  # no longer a peer (left, or swept)
        for owner in now:
            if owner in self.pidfds or owner in self.dead:
                continue
            fd = _owner_pidfd(owner)
            if fd == _DEAD:
                self.dead.add(owner)
                _ring._liveness(self.h)
                if _ring._ready(self.h):
                    os.write(self.uw.fileno(), _ONE)
            elif fd == _CANNOT:
                cannot = True
            else:
                token = next(self.tokens)
                self.uw.poll(fd, token)
                self.pidfds[owner] = (fd, token)
                self.by_token[token] = owner
        if len(self.dead) > 4096:
            self.dead.clear()
        self.cannot = cannot

    def close(self) -> None:
        if self.pid != os.getpid():
            return  # the parent's: its arm is the parent's to undo
        self.uw.close()  # cancels what is pending
        w = self._w if self._w is not None else self._h()
        if self.armed and w is not None:
            self.armed = False
            _ring._disarm(w)
        if self._w is not None:
            # a put wakes one getter: ours may have been spent on this poller
            _ring._queue_pass_on(self._w)
        for fd, _token in self.pidfds.values():
            os.close(fd)
        self.pidfds.clear()
        self.by_token.clear()


def fileno(h: Any) -> int:
    w = _ring._fd_waiter(h)
    if w is None:
        if backend() != "io_uring":
            raise OSError(95, "fileno() needs io_uring futex waits (Linux 6.7, io_uring enabled); "
                              "use wait_any() or the coroutines instead")
        w = _FdWaiter(h)
        _ring._set_fd_waiter(h, w)
    return w.fileno()


def queue_fileno(q: Any) -> int:
    """Queue.fileno(): readable when an item may be there to get."""
    w = q.__dict__.get("_fdw")
    if w is None or w.pid != os.getpid():
        if backend() != "io_uring":
            raise OSError(95, "fileno() needs io_uring futex waits (Linux 6.7, io_uring enabled); "
                              "use wait_any() or aget() instead")
        w = _FdWaiter(q, _ring._queue_item_wait(q))
        q.__dict__["_fdw"] = w
    return w.fileno()


def queue_close_fileno(q: Any) -> None:
    w = q.__dict__.pop("_fdw", None)
    if w is not None:
        w.close()
