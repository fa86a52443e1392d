"""shmring.Queue under event loops: aget/aput, wait_any/await_any on a queue.
Real processes (fork and spawn), real shared memory, real futex waits (io_uring,
and the futex_waitv fallback), asyncio and uvloop."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import select
import selectors
import signal
import time

import numpy as np
import pytest

import _mpq_workers as W
from _idle import window
import shmring
from shmring import aio
from test_aio import run
from test_mpqueue import check_exactly_once


def join_ok(p, timeout=60):
    p.join(timeout)
    assert not p.is_alive(), "child did not finish"
    assert p.exitcode == 0, p.exitcode


# ---- semantics in one process ------------------------------------------------

@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_results_and_exceptions_match_get_put(loop_kind):
    q = shmring.Queue(maxsize=2, nbytes=4096)

    async def main():
        await q.aput(b"a")
        await q.aput({"k": 1})
        with pytest.raises(queue.Full, match="maxsize"):
            await q.aput(3, timeout=0.05)
        with pytest.raises(queue.Full):
            await q.aput(3, block=False)
        assert q.qsize() == 2  # a timed-out aput put nothing
        assert await q.aget() == b"a"
        assert await q.aget(timeout=5) == {"k": 1}
        t0 = time.monotonic()
        with pytest.raises(queue.Empty):
            await q.aget(timeout=0.05)
        assert time.monotonic() - t0 >= 0.04
        with pytest.raises(queue.Empty):
            await q.aget(block=False)
        with pytest.raises(ValueError, match="timeout"):
            await q.aget(timeout=-1)
        with pytest.raises(ValueError, match="at most"):
            await q.aput(b"x" * 5000)  # larger than half a lane
        await q.aput(7)
        assert q.get(timeout=5) == 7  # the blocking call sees what aput put

    run(main(), loop_kind)
    q.close()


def test_fast_path_completes_without_a_loop():
    """With an item (or room) there, aget/aput finish on their first step."""
    q = shmring.Queue()
    q.put(41)
    coro = q.aget()
    with pytest.raises(StopIteration) as si:
        coro.send(None)
    assert si.value.value == 41
    coro = q.aput(42)
    with pytest.raises(StopIteration):
        coro.send(None)
    assert q.get(timeout=5) == 42
    q.close()


def test_close_ends_an_awaiting_get():
    q = shmring.Queue()

    async def main():
        t = asyncio.create_task(q.aget())
        await asyncio.sleep(0.05)
        assert not t.done()
        q.close()
        with pytest.raises(ValueError, match="closed"):
            await asyncio.wait_for(t, 5)
        with pytest.raises(ValueError, match="closed"):
            await q.aget()
        with pytest.raises(ValueError, match="closed"):
            await q.aput(1)

    run(main())


def test_cancelled_and_timed_out_gets_lose_nothing(procs):
    """Gets cut short by wait_for timeouts and task cancellation take nothing:
    every item of a paced producer in another process arrives exactly once, in
    order."""
    q = shmring.Queue()
    n = 150
    ctx = multiprocessing.get_context("fork")
    # paced so the queue is empty most of the time: most tries are cut short
    p = procs(ctx, W.produce_paced, q, 0, n, 0.002)
    timeouts = cancels = 0

    async def main():
        nonlocal timeouts, cancels
        got = []
        k = 0
        while len(got) < n:
            k += 1
            if k % 3 == 0:
                t = asyncio.create_task(q.aget())
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                if t.done():
                    got.append(W.check(t.result()))
                else:
                    t.cancel()
                    try:
                        got.append(W.check(await t))  # finished before the cancel landed
                    except asyncio.CancelledError:
                        cancels += 1
                continue
            try:
                got.append(W.check(await asyncio.wait_for(q.aget(), 0.0003)))
            except asyncio.TimeoutError:
                timeouts += 1
        return got

    got = run(main())
    join_ok(p)
    assert [s for _, s in got] == list(range(n))
    assert timeouts > 0 and cancels > 0, (timeouts, cancels)
    with pytest.raises(queue.Empty):
        q.get(timeout=0)
    q.close()


def test_cancelled_put_puts_nothing():
    q = shmring.Queue(maxsize=1)

    async def main():
        await q.aput("first")
        t = asyncio.create_task(q.aput("second"))
        await asyncio.sleep(0.05)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert q.qsize() == 1
        assert await q.aget() == "first"
        with pytest.raises(queue.Empty):
            await q.aget(timeout=0.05)

    run(main())
    q.close()


# ---- across processes ----------------------------------------------------------

@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_three_async_consumers_get_every_item_once(procs, method):
    """Two producer processes, three consumer processes awaiting aget (two on
    asyncio, one on uvloop): every checksummed item exactly once, each producer's
    items in order per consumer."""
    ctx = multiprocessing.get_context(method)
    n_prod, n_each, n_cons = 2, 4000, 3
    q = shmring.Queue(maxsize=256)
    pipes = [ctx.Pipe(duplex=False) for _ in range(n_cons)]
    cons = [procs(ctx, W.aconsume, q, pipes[i][1], i == 2) for i in range(n_cons)]
    prods = [procs(ctx, W.produce, q, pid, n_each) for pid in range(n_prod)]
    for p in prods:
        join_ok(p, 120)
    for _ in range(n_cons):
        q.put(None)
    parts = []
    for r, _w in pipes:
        assert r.poll(120), "a consumer sent nothing back"
        parts.append(r.recv())
    for c in cons:
        join_ok(c)
    # a consumer started late may find every item taken: exactly once is what counts
    check_exactly_once(parts, n_prod, n_each)
    q.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_aput_waits_for_room_under_maxsize(procs, loop_kind):
    """aput blocks on maxsize until a consumer in another process makes room;
    the loop keeps running meanwhile, and the consumer gets everything in order."""
    q = shmring.Queue(maxsize=4)
    n = 40
    ctx = multiprocessing.get_context("fork")
    r, w = ctx.Pipe(duplex=False)
    c = procs(ctx, W.get_all_later, q, n, 0.3, w)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main():
        t = asyncio.create_task(ticker())
        t0 = time.monotonic()
        for i in range(n):
            await q.aput(i, timeout=30)
        waited = time.monotonic() - t0
        t.cancel()
        return waited

    waited = run(main(), loop_kind)
    assert waited >= 0.25  # the fifth put waited for the consumer
    assert ticks >= 10      # ... without blocking the loop
    assert r.poll(60)
    assert r.recv() == list(range(n))
    join_ok(c)
    q.close()


def test_aput_waits_for_room_in_its_lane(procs):
    """Without maxsize, a put that finds its own lane full of bytes in flight
    waits (in the loop) for a consumer to take some."""
    q = shmring.Queue(nbytes=4096)
    item = b"x" * 1000
    ctx = multiprocessing.get_context("fork")
    r, w = ctx.Pipe(duplex=False)
    n = 20  # far more than one lane holds
    c = procs(ctx, W.get_all_later, q, n, 0.3, w)

    async def main():
        for _ in range(n):
            await q.aput(item, timeout=30)

    run(main())
    assert r.poll(60)
    assert r.recv() == [item] * n
    join_ok(c)
    q.close()


def test_killed_producer_does_not_wedge_an_awaiting_getter(procs):
    """A producer SIGKILLed mid-stream: the awaiting getter gets every item it
    published (0..k-1, none twice), then times out, and the loop kept running."""
    q = shmring.Queue()
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    p = procs(ctx, W.put_until_killed, q, ready)

    async def main():
        got = []
        assert await asyncio.get_running_loop().run_in_executor(None, ready.wait, 30)
        os.kill(p.pid, signal.SIGKILL)
        while True:
            try:
                got.append(await q.aget(timeout=0.5))
            except queue.Empty:
                return got

    got = run(main())
    p.join(10)
    assert p.exitcode == -signal.SIGKILL
    assert got == list(range(len(got))) and len(got) > 20
    st = q.stats()
    assert st["got"] == len(got) and st["items"] == 0
    # a put the kill cut between its admit and its publish is repaired (counted
    # lost) by the getter's recovery: every admitted item is accounted for
    assert st["admitted"] == st["put"] + st["lost"] and st["lost"] in (0, 1), st
    q.close()


def _one_sleep_and_little_cpu(idle, base, what):
    """An idle awaited wait sleeps once however long it lasts (no timer: see
    _idle.py) and costs under 1% of a core beyond a bare sleep of the same
    length in the same loop."""
    assert idle.sleeps <= 3, f"{what} woke up {idle.sleeps} times in {idle.wall:.2f} s: {idle}, bare: {base}"
    assert idle.cpu < base.cpu + 0.01 * idle.wall, f"{what}: {idle}, a bare sleep: {base}"


def _idle_peer(procs):
    """A queue with a live, idle peer process holding a lane and a consumer
    slot: the processes an awaiting getter watches."""
    q = shmring.Queue()
    ctx = multiprocessing.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    procs(ctx, W.peer_idle, q, ready, stop)
    assert ready.wait(30)
    assert q.qsize() == 0  # the peer got its own item back
    return q, stop


def test_idle_awaiting_getter_costs_little_cpu(procs):
    q, stop = _idle_peer(procs)

    async def main():
        # the loop's first wait sets up its reactor (io_uring): not the idle cost
        with pytest.raises(queue.Empty):
            await q.aget(timeout=0.05)
        base = await window(lambda: asyncio.sleep(2.0))
        idle = await window(lambda: q.aget(timeout=2.0), expect=queue.Empty)
        return base, idle

    base, idle = run(main())
    stop.set()
    # Its peer (producer and consumer) is watched through a pidfd: no recovery
    # tick, so one sleep for the whole window, as a bare sleep
    _one_sleep_and_little_cpu(idle, base, "an idle aget")
    q.close()


def test_idle_queue_fileno_under_selectors_costs_no_wakeups(procs):
    q, stop = _idle_peer(procs)
    rfd, wfd = os.pipe()

    events = []

    def select_for(fd):
        async def sel():
            with selectors.DefaultSelector() as s:
                s.register(fd, selectors.EVENT_READ)
                events.append(s.select(2.0))
        return sel

    async def main():
        with pytest.raises(queue.Empty):
            q.get_nowait()  # arms the descriptor
        base = await window(select_for(rfd))
        idle = await window(select_for(q.fileno()))
        return base, idle

    try:
        base, idle = run(main())
    finally:
        os.close(rfd)
        os.close(wfd)
    stop.set()
    # not readable for the whole 2 s (no recovery tick turns it readable),
    # beside a select of the same length on a pipe nobody writes
    assert events == [[], []] and idle.wall >= 1.9, (events, idle)
    _one_sleep_and_little_cpu(idle, base, "a select on an idle Queue.fileno()")
    q.close()


def _wait_for(pred, limit):
    """Seconds until pred() held (polled every 5 ms), or None after limit."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.005)
    return None


def test_recovery_reaches_an_idle_awaiting_getter(procs, monkeypatch):
    """A consumer process dies (SIGKILL) holding a claimed item while this
    process awaits aget(), and nothing is put any more: the item is counted
    abandoned (exactly the one it held; every other item was got once) within
    a second, though the liveness interval is 5 s: the awaiting getter watched
    the consumer's process and ran the recovery when it exited."""
    monkeypatch.setattr(shmring.queues, "_LIVENESS", 5.0)
    q = shmring.Queue()
    ctx = multiprocessing.get_context("fork")
    n = 6
    join_ok(procs(ctx, W.produce, q, 1, n))
    r, w = ctx.Pipe(duplex=False)
    holder = procs(ctx, W.get_then_hold, q, n - 1, w)
    assert r.poll(30)
    got_there, held = r.recv()
    assert q.empty() and q.qsize() == 1  # nothing to get; the held item is still counted

    async def main():
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(q.aget(timeout=10))
        await asyncio.sleep(0.2)  # awaiting, idle
        assert not task.done()
        os.kill(holder.pid, signal.SIGKILL)
        took = await loop.run_in_executor(None, _wait_for, lambda: q.stats()["abandoned"] == 1, 5.0)
        assert not task.done()  # nothing to get: recovery came to the wait itself
        task.cancel()
        return took

    took = run(main())
    holder.join(10)
    assert took is not None and took < 1.0, f"recovery after {took} s"
    assert sorted(got_there + [held]) == [(1, k) for k in range(n)]
    st = q.stats()
    assert (st["put"], st["got"], st["abandoned"], st["items"]) == (n, n - 1, 1, 0)
    q.close()


def test_consumer_joining_during_an_awaited_get_is_watched(procs, monkeypatch):
    """A process takes a consumer slot while this process is in one awaited
    get (nothing put, so only the join can wake it), then is SIGKILLed: the
    awaiting getter, which learnt of it from the join, sweeps its slot within
    a second, though the liveness interval is 5 s, and goes on waiting."""
    monkeypatch.setattr(shmring.queues, "_LIVENESS", 5.0)
    q = shmring.Queue()
    ctx = multiprocessing.get_context("fork")
    join_ok(procs(ctx, W.produce, q, 1, 1))
    assert W.check(q.get(timeout=10)) == (1, 0)  # lane 0 exists; its producer has exited
    lane = q._queue_mapping.lane(0)
    box = {}

    async def main():
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(q.aget(timeout=10))
        await asyncio.sleep(0.2)  # awaiting, idle
        r, w = ctx.Pipe(duplex=False)
        box["p"] = p = procs(ctx, W.join_lane_then_wait, q, w)
        assert await loop.run_in_executor(None, r.poll, 30)
        pid = r.recv()
        assert pid in [ci["pid"] for ci in lane.consumer_infos()]
        await asyncio.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        took = await loop.run_in_executor(
            None, _wait_for, lambda: pid not in [ci["pid"] for ci in lane.consumer_infos()], 5.0)
        assert not task.done()
        task.cancel()
        return took

    took = run(main())
    box["p"].join(10)
    assert took is not None and took < 1.0, f"the slot was swept after {took} s"
    q.close()


# ---- many sources --------------------------------------------------------------

def test_wait_any_and_await_any_take_queues(rings, ring_name, procs):
    """A Queue beside ring consumers in wait_any / await_any: it is returned
    when an item from another process is there, and it stays there (nothing is
    taken by the wait)."""
    r = rings.create(ring_name, capacity=64, dtype=np.uint64)
    cons = r.consumer()
    q = shmring.Queue()
    assert shmring.wait_any([cons, q], timeout=0.05) == []
    ctx = multiprocessing.get_context("fork")
    p = procs(ctx, W.produce_paced, q, 3, 1, 0.2)
    assert shmring.wait_any([cons, q], timeout=30) == [q]
    join_ok(p)
    assert run(shmring.await_any([q, cons], timeout=5)) == [q]
    assert W.check(q.get(timeout=0)) == (3, 0)
    with pytest.raises(TypeError, match="Queue"):
        shmring.wait_any([object()])
    q.close()


def test_await_any_wakes_on_a_queue(rings, ring_name, procs):
    r = rings.create(ring_name, capacity=64, dtype=np.uint64)
    cons = r.consumer()
    q = shmring.Queue()
    ctx = multiprocessing.get_context("spawn")
    p = procs(ctx, W.produce_paced, q, 1, 1, 0.3)

    async def main():
        t0 = time.monotonic()
        ready = await shmring.await_any([cons, q], timeout=30)
        return ready, time.monotonic() - t0

    ready, waited = run(main())
    assert ready == [q] and waited < 20
    assert W.check(q.get(timeout=0)) == (1, 0)
    join_ok(p)
    q.close()


def test_futex_waitv_fallback(procs, monkeypatch):
    """Without io_uring futex waits, aget and aput sleep in futex_waitv threads."""
    monkeypatch.setattr(aio, "_backend", "futex_waitv")
    q = shmring.Queue(maxsize=2)
    n = 200
    ctx = multiprocessing.get_context("fork")
    p = procs(ctx, W.produce_paced, q, 0, n, 0.0005)

    async def main():
        got = [W.check(await q.aget(timeout=30)) for _ in range(n)]
        # and a put that waits for room: the consumer is a thread of this process
        await q.aput(1)
        await q.aput(2)
        loop = asyncio.get_running_loop()
        later = loop.run_in_executor(None, lambda: (time.sleep(0.2), q.get(timeout=10))[1])
        await q.aput(3, timeout=30)
        first = await later
        return got, first, [q.get(timeout=5), q.get(timeout=5)]

    got, first, rest = run(main())
    join_ok(p)
    assert [s for _, s in got] == list(range(n))
    assert (first, rest) == (1, [2, 3])
    q.close()


# ---- fileno() ------------------------------------------------------------------

@pytest.mark.parametrize("kind,method", [("selectors", "fork"), ("poll", "spawn")])
def test_fileno_with_selectors_and_poll(procs, kind, method):
    """Three producer processes put paced and bursty items; this process and a
    child wait on q.fileno() (selectors in one case, select.poll in the other)
    and drain with get_nowait(): every checksummed item exactly once, each
    producer's items in order per consumer."""
    ctx = multiprocessing.get_context(method)
    q = shmring.Queue(maxsize=64)
    fd = q.fileno()  # before the fork: the child must make its own poller
    r, w = ctx.Pipe(duplex=False)
    child = procs(ctx, W.fd_consume, q, w, kind)
    n_each = 400
    prods = [procs(ctx, W.produce_paced, q, 0, n_each, 0.001),
             procs(ctx, W.produce, q, 1, n_each),
             procs(ctx, W.produce_paced, q, 2, n_each, 0.0003)]
    if kind == "selectors":
        sel = selectors.DefaultSelector()
        sel.register(q, selectors.EVENT_READ)

        def wait():
            return sel.select(timeout=0.5)
    else:
        poller = select.poll()
        poller.register(fd, select.POLLIN)

        def wait():
            return poller.poll(500)
    # The producers' exits are not events of the queue (the child may take the
    # last items), so the loop also looks every 0.5 s whether they are done, to
    # put the sentinels; the deadline catches a lost readiness.
    mine, sentinels, wakes = [], 0, 0
    deadline = time.monotonic() + 120
    while sentinels < 1:
        assert time.monotonic() < deadline, f"stuck after {len(mine)} items"
        if wait():
            wakes += 1
            while True:
                try:
                    it = q.get_nowait()
                except queue.Empty:
                    break  # re-armed
                if it is None:
                    sentinels += 1
                    break  # the other sentinel is the child's
                mine.append(W.check(it))
        if sentinels == 0 and all(p.exitcode is not None for p in prods):
            for p in prods:
                join_ok(p)
            for _ in range(2):  # one for the child, one for us
                q.put(None)
            prods = []
    # a put wakes one getter: if it was ours, close() passes it on to the child
    q.close()
    with pytest.raises(ValueError, match="closed"):
        q.fileno()
    assert r.poll(60), "the child consumer sent nothing back"
    theirs = r.recv()
    join_ok(child)
    check_exactly_once([np.array(mine, dtype=np.int64).reshape(-1, 2), theirs], 3, n_each)
    assert wakes > 1


def test_fileno_protocol_readable_means_try_now(procs):
    """Not readable while empty; readable once another process puts; stays
    readable until a get finds nothing (which re-arms); get(False),
    get(timeout=0) and get_many(n, False) re-arm as get_nowait() does."""
    q = shmring.Queue()
    fd = q.fileno()
    assert q.fileno() == fd  # one poller per queue and process
    assert select.select([fd], [], [], 0.05)[0] == []
    ctx = multiprocessing.get_context("fork")
    join_ok(procs(ctx, W.produce, q, 5, 2))
    assert select.select([fd], [], [], 5)[0] == [fd]
    assert select.select([fd], [], [], 0)[0] == [fd]  # level: until a get finds nothing
    assert W.check(q.get_nowait()) == (5, 0)
    assert select.select([fd], [], [], 0)[0] == [fd]
    assert W.check(q.get(False)) == (5, 1)
    for nothing in (q.get_nowait, lambda: q.get(False), lambda: q.get(timeout=0),
                    lambda: q.get_many(4, False)):
        with pytest.raises(queue.Empty):
            nothing()  # re-arms
        assert select.select([fd], [], [], 0.05)[0] == []
    p = procs(ctx, W.produce_paced, q, 6, 1, 0.2)
    t0 = time.monotonic()
    assert select.select([fd], [], [], 10)[0] == [fd]
    assert time.monotonic() - t0 >= 0.1  # woken by the put, not at once
    # also readable when the producer took its lane (a peer joining: the
    # descriptor's watch of peers is re-read), so it may take another try
    deadline = time.monotonic() + 10
    while True:
        try:
            assert W.check(q.get_nowait()) == (6, 0)
            break
        except queue.Empty:
            assert time.monotonic() < deadline, "readable, and the item never came"
            assert select.select([fd], [], [], 10)[0] == [fd]
    join_ok(p)
    q.close()
