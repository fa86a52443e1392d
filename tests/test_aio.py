"""Event loops: apop/apush coroutines, async for, fileno() with selectors and
poll, wait_any/await_any, cancellation, a killed producer, uvloop, and the
futex_waitv fallback. Real processes (fork and spawn), real futex waits."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import select
import selectors
import signal
import threading
import time

import numpy as np
import pytest

import _aio_workers as W
import shmring
from _idle import window
from _records import REC, make_records, n_bad
from shmring import aio

try:
    import uvloop
except ImportError:  # pragma: no cover - a test dependency (scripts/bootstrap.sh)
    uvloop = None

LOOPS = ["asyncio", "uvloop"]
# start method x loop: each start method and each loop once, to keep the suite short
CTX_LOOPS = [("fork", "uvloop"), ("spawn", "asyncio")]
KINDS = ["records", "messages"]  # record rings and message rings share the machinery


def run(coro, loop_kind: str = "asyncio"):
    if loop_kind == "uvloop":
        if uvloop is None:
            pytest.fail("uvloop is a test dependency (scripts/bootstrap.sh, or pip install -e .[test])")
        loop = uvloop.new_event_loop()  # asyncio.Runner(loop_factory=...) is 3.11+
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.close()
    return asyncio.run(coro)


def join_ok(p, timeout=60):
    p.join(timeout)
    assert not p.is_alive(), "child did not finish"
    assert p.exitcode == 0, p.exitcode


def consumer_waiters(ring) -> int:
    return ring.stats()["waiters"]["consumers"]


# ---- the mechanism and its fast path ------------------------------------------

def test_backend_is_io_uring_here():
    """This project's CI kernels have io_uring futex waits (6.7+); elsewhere the
    fallback is futex_waitv, tested below."""
    with open("/proc/sys/kernel/io_uring_disabled") as f:
        disabled = f.read().strip() != "0"
    if os.uname().release.split(".")[:2] >= ["6", "7"] and not disabled:
        assert aio.backend() == "io_uring"


def test_fast_path_completes_without_a_loop(rings, ring_name):
    """With a record there, the coroutine finishes on its first step: no event
    loop exists at all, so it cannot have touched one."""
    r = rings.create(ring_name, capacity=8, dtype=np.int64)
    p, c = r.producer(), r.consumer()
    p.push(7)
    coro = c.apop()
    with pytest.raises(StopIteration) as si:
        coro.send(None)
    assert si.value.value == 7
    coro = p.apush(8)
    with pytest.raises(StopIteration):
        coro.send(None)
    p.push_many(np.arange(3))
    coro = c.apop_many(10)
    with pytest.raises(StopIteration) as si:
        coro.send(None)
    assert list(si.value.value) == [8, 0, 1, 2]


def test_same_results_and_errors_as_blocking(rings, ring_name):
    r = rings.create(ring_name, capacity=4, dtype=np.int64)
    p, c = r.producer(), r.consumer()

    async def main():
        with pytest.raises(shmring.Empty):
            await c.apop(timeout=0.02)
        with pytest.raises(shmring.Empty):
            await c.apop_many(3, timeout=0)
        with pytest.raises(ValueError, match="timeout"):
            await c.apop(timeout=-1)
        with pytest.raises(ValueError, match="max_records"):
            await c.apop_many(0)
        assert await p.apush_many(np.arange(4)) == 4
        with pytest.raises(shmring.Full):
            await p.apush(9, timeout=0.02)
        with pytest.raises(shmring.Full) as fe:
            await p.apush_many(np.arange(3), timeout=0.02)
        assert fe.value.pushed == 0
        with pytest.raises(TypeError):
            await p.apush("x")
        assert list(await c.apop_many(10)) == [0, 1, 2, 3]
        p.close()
        with pytest.raises(shmring.Closed):
            await c.apop()
        assert [x async for x in c] == []
        c.close()
        with pytest.raises(shmring.Closed):
            await c.apop()
        with pytest.raises(ValueError, match="at least one"):
            shmring.wait_any([])
        with pytest.raises(TypeError, match="Consumer or Producer"):
            await shmring.await_any([object()])

    run(main())


def test_partial_apush_many_completes_when_room_appears(rings, ring_name, procs):
    ctx = multiprocessing.get_context("fork")
    r = rings.create(ring_name, capacity=8, dtype=np.int64)
    p = r.producer()
    q = ctx.Queue()
    procs(ctx, W.slow_popper, r, 20, 0.1, q)
    time.sleep(0.05)  # the child's consumer joins before we fill

    async def main():
        return await p.apush_many(np.arange(20), timeout=30)

    assert run(main()) == 20
    assert q.get(timeout=30) == list(range(20))


# ---- between processes -----------------------------------------------------------

@pytest.mark.parametrize("start,loop_kind", CTX_LOOPS)
def test_ping_pong(start, rings, ring_names, procs, loop_kind):
    mp_ctx = multiprocessing.get_context(start)
    a = rings.create(ring_names(), capacity=4, dtype=np.int64)
    b = rings.create(ring_names(), capacity=4, dtype=np.int64)
    rounds = 500
    child = procs(mp_ctx, W.pong, a, b, rounds, loop_kind == "uvloop")

    async def main():
        p, c = a.producer(), b.consumer()
        v = 0
        for _ in range(rounds):
            await p.apush(v, timeout=30)
            got = await asyncio.wait_for(c.apop(), 30)
            assert int(got) == v + 1
            v = int(got) + 1
        return v

    assert run(main(), loop_kind) == 2 * rounds
    join_ok(child)


def test_streaming_apush_to_apop(mp_ctx, rings, ring_name, procs):
    n = 20000
    r = rings.create(ring_name, capacity=64, dtype=REC)
    c = r.consumer()  # joined before the producer starts
    child = procs(mp_ctx, W.apush_stream, r, n, 100, 5)
    buf = np.empty(50, REC)

    async def main():
        chunks = []
        k = 0
        while True:
            try:
                if k % 3 == 0:
                    chunks.append(np.array([await c.apop(timeout=30)], dtype=REC))
                elif k % 3 == 1:
                    chunks.append(await c.apop_many(97, timeout=30))
                else:
                    # into a reused array: a count back, out[:count] filled
                    m = await c.apop_many(timeout=30, out=buf)
                    assert 1 <= m <= len(buf)
                    chunks.append(buf[:m].copy())
            except shmring.Closed:
                return np.concatenate(chunks)
            k += 1

    got = run(main())
    join_ok(child)
    assert n_bad(got) == 0
    assert np.array_equal(got["seq"], np.arange(n, dtype=np.uint64))


def test_async_for_exactly_once_three_consumers(mp_ctx, rings, ring_name, procs, tmp_path):
    n = 100_000
    r = rings.create(ring_name, capacity=1024, dtype=REC)
    outs, readies, kids = [], [], []
    for k in range(3):
        out = str(tmp_path / f"c{k}.npz")
        ev = mp_ctx.Event()
        kids.append(procs(mp_ctx, W.async_for_consumer, r, out, ev))
        outs.append(out)
        readies.append(ev)
    for ev in readies:
        assert ev.wait(60)
    p = r.producer()
    rng = np.random.default_rng(11)
    k = 0
    while k < n:
        m = min(int(rng.integers(1, 300)), n - k)
        p.push_many(make_records(k, m), timeout=30)
        k += m
    p.close()
    seqs = []
    for kid, out in zip(kids, outs):
        join_ok(kid, 120)
        d = np.load(out)
        assert int(d["bad"]) == 0
        assert np.all(np.diff(d["seqs"].astype(np.int64)) > 0)  # each consumer sees its share in order
        seqs.append(d["seqs"])
    allseq = np.sort(np.concatenate(seqs))
    assert np.array_equal(allseq, np.arange(n, dtype=np.uint64)), "not exactly once"


def _threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line")


def test_200_rings_one_loop_no_threads_idle_cpu(rings, ring_names, procs):
    n_rings, per_ring = 200, 5
    ctx = multiprocessing.get_context("spawn")
    rs = [rings.create(ring_names(), capacity=16, dtype=REC) for _ in range(n_rings)]
    cs = [r.consumer() for r in rs]
    go = ctx.Event()
    threads_before = _threads()
    feeder = procs(ctx, W.many_ring_feeder, [r.name for r in rs], per_ring, go, 3)

    async def main():
        got: list[list[int]] = [[] for _ in cs]
        first = asyncio.Event()

        async def drain(k):
            async for rec in cs[k]:
                assert n_bad(rec) == 0
                got[k].append(int(rec["seq"]))
                if sum(map(len, got)) == n_rings * per_ring:
                    first.set()

        # the same loop idle with nothing armed: what a sleep of 2 s costs its
        # thread here (see _idle.py), the baseline of the idle windows below
        base = await window(lambda: asyncio.sleep(2.0))
        tasks = [asyncio.ensure_future(drain(k)) for k in range(n_rings)]
        await asyncio.wait_for(first.wait(), 60)
        # every task is now parked in an armed wait; the loop is idle
        await asyncio.sleep(0.2)
        threads = _threads()
        armed = sum(consumer_waiters(r) for r in rs)
        windows = [await window(lambda: asyncio.sleep(2.0)) for _ in range(2)]
        go.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        return got, threads, armed, base, windows

    got, threads, armed, base, windows = run(main())
    join_ok(feeder)
    for k in range(n_rings):
        assert got[k] == list(range(2 * per_ring)), k
    assert armed == n_rings, "every awaiting consumer is counted as a waiter"
    assert threads <= threads_before + 1, (threads_before, threads)
    # No polling: with 200 waits armed the loop's thread sleeps once in a window
    # of 2 s, as it does with nothing armed (a timer per ring, or any polling of
    # the rings, would wake it hundreds of times); and it costs under 1% of a core
    # beyond the same sleep with nothing armed (0-0.3% measured).
    for w in windows:
        assert w.sleeps <= 3, f"the idle loop woke up {w.sleeps} times in {w.wall:.2f} s: {windows}"
    idle = min(windows, key=lambda w: w.cpu)
    assert idle.cpu < base.cpu + 0.01 * idle.wall, f"idle: {windows}, nothing armed: {base}"
    assert sum(consumer_waiters(r) for r in rs) == 0


def _one_sleep_and_little_cpu(idle, base, what):
    """An idle awaited wait sleeps once however long it lasts (no timer: see
    _idle.py) and costs under 1% of a core beyond a bare sleep of the same
    length in the same loop."""
    assert idle.sleeps <= 3, f"{what} woke up {idle.sleeps} times in {idle.wall:.2f} s: {idle}, bare: {base}"
    assert idle.cpu < base.cpu + 0.01 * idle.wall, f"{what}: {idle}, a bare sleep: {base}"


def test_idle_consumer_of_a_ring_without_producer_costs_no_wakeups(rings, ring_name):
    """No producer yet: nothing to watch, and no timer either (a producer that
    attaches notifies the awaiting consumer, see the next test)."""
    r = rings.create(ring_name, capacity=8, dtype=np.int64)
    c = r.consumer()

    async def main():
        with pytest.raises(shmring.Empty):
            await c.apop(timeout=0.05)  # sets the loop's reactor up: not the idle cost
        base = await window(lambda: asyncio.sleep(2.0))
        idle = await window(lambda: c.apop(timeout=2.0), expect=shmring.Empty)
        return base, idle

    base, idle = run(main())
    _one_sleep_and_little_cpu(idle, base, "an idle apop with no producer")


def test_idle_producer_awaiting_room_costs_no_wakeups(rings, ring_name, procs):
    """apush on a full ring whose consumer lives in another process: its
    process is watched through a pidfd, not polled."""
    ctx = multiprocessing.get_context("fork")
    r = rings.create(ring_name, capacity=8, dtype=np.int64, mode="queue")
    p = r.producer()
    ready, stop = ctx.Event(), ctx.Event()
    procs(ctx, W.consume_idle, r, ready, stop)
    assert ready.wait(30)
    p.push_many(np.arange(8, dtype=np.int64))

    async def main():
        with pytest.raises(shmring.Full):
            await p.apush(8, timeout=0.05)
        base = await window(lambda: asyncio.sleep(2.0))
        idle = await window(lambda: p.apush(8, timeout=2.0), expect=shmring.Full)
        return base, idle

    base, idle = run(main())
    stop.set()
    _one_sleep_and_little_cpu(idle, base, "an idle apush on a full ring")


@pytest.mark.parametrize("n", [0, 40])
def test_producer_attaching_while_a_consumer_awaits(rings, ring_name, procs, n):
    """The consumer starts awaiting before any producer exists; a producer
    attaches (and pushes n records), then is killed: the consumer gets every
    record, then Closed within a second of the kill, though its liveness
    interval is 5 s: it learnt of the producer when it attached (the attach
    wakes awaiting consumers, which then watch its process) and no timer
    stands in for that."""
    ctx = multiprocessing.get_context("fork")
    r = rings.create(ring_name, capacity=64, dtype=np.int64)
    c = r.consumer(liveness_interval=5.0)
    ready = ctx.Event()
    got: list[int] = []
    box: dict = {}

    async def main():
        async def drain():
            try:
                while True:
                    got.append(int(await c.apop(timeout=30)))
            except shmring.Closed:
                return time.monotonic()

        task = asyncio.ensure_future(drain())
        await asyncio.sleep(0.2)  # awaiting, with no producer
        assert not task.done()
        box["child"] = procs(ctx, W.push_then_hang, r, n, ready)
        assert await asyncio.get_running_loop().run_in_executor(None, ready.wait, 30)
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert not task.done()
        os.kill(box["child"].pid, signal.SIGKILL)
        killed = time.monotonic()
        ended = await asyncio.wait_for(task, 30)
        return ended - killed

    took = run(main())
    assert got == list(range(n))
    assert took < 1.0, f"Closed came {took:.2f} s after the kill"


# ---- fileno() --------------------------------------------------------------------

def _drain_ready(c, got, ended):
    while True:
        try:
            got.append(int(c.pop(timeout=0)))
        except shmring.Empty:
            return  # the Empty re-armed the descriptor
        except shmring.Closed:
            ended.add(c)
            return


@pytest.mark.parametrize("kind", ["selectors", "poll"])
def test_fileno_with_selectors_and_poll(rings, ring_names, procs, kind):
    ctx = multiprocessing.get_context("fork")
    rs = [rings.create(ring_names(), capacity=8, dtype=np.int64) for _ in range(4)]
    cs = [r.consumer() for r in rs]
    feeder = procs(ctx, W.random_feeder, [r.name for r in rs], 300, 7, 0.003)
    got = {c: [] for c in cs}
    ended: set = set()
    if kind == "selectors":
        sel = selectors.DefaultSelector()
        for c in cs:
            sel.register(c, selectors.EVENT_READ)  # the consumer itself is the file object
        while len(ended) < len(cs):
            events = sel.select(timeout=10)
            assert events, "no readiness within 10 s"
            for key, _ in events:
                _drain_ready(key.fileobj, got[key.fileobj], ended)
                if key.fileobj in ended:
                    sel.unregister(key.fileobj)
        sel.close()
    else:
        poller = select.poll()
        by_fd = {c.fileno(): c for c in cs}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while len(ended) < len(cs):
            events = poller.poll(10_000)
            assert events, "no readiness within 10 s"
            for fd, _ in events:
                c = by_fd[fd]
                _drain_ready(c, got[c], ended)
                if c in ended:
                    poller.unregister(fd)
    join_ok(feeder)
    for c in cs:
        assert got[c] == list(range(300))
        assert _not_readable_after_close(c)


def _not_readable_after_close(c) -> bool:
    c.close()
    with pytest.raises(shmring.Closed):
        c.fileno()
    return True


def test_fileno_protocol_readable_means_try_now(rings, ring_name, procs):
    r = rings.create(ring_name, capacity=4, dtype=np.int64)
    # a producer's descriptor also turns readable once per liveness interval
    # (it looks for dead consumers then): keep that out of the 50 ms probes
    p, c = r.producer(liveness_interval=5), r.consumer()
    fd = c.fileno()
    assert select.select([fd], [], [], 0.05)[0] == []
    assert consumer_waiters(r) == 1  # armed: the producer will wake it
    p.push(1)
    assert select.select([fd], [], [], 5)[0] == [fd]
    assert select.select([fd], [], [], 0)[0] == [fd]  # stays readable until a call finds nothing
    assert int(c.pop(timeout=0)) == 1
    with pytest.raises(shmring.Empty):
        c.pop(timeout=0)  # re-arms
    assert select.select([fd], [], [], 0.05)[0] == []
    # producer side: readable when there is room
    pfd = p.fileno()
    assert select.select([pfd], [], [], 0)[0] == [pfd]
    p.push_many(np.arange(4))
    with pytest.raises(shmring.Full):
        p.push(9, timeout=0)  # re-arms the producer's descriptor
    assert select.select([pfd], [], [], 0.05)[0] == []
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    c.close()  # a child consumer takes the records
    procs(ctx, W.slow_popper, r, 2, 0.05, q)
    assert select.select([pfd], [], [], 10)[0] == [pfd]
    assert q.get(timeout=30) == [0, 1]
    p.push(9, timeout=0)


def _hanging_producer(rings, ring_name, procs, n, **consumer_kw):
    """An int64 ring of 8 slots, a consumer of it, and a forked child that
    pushes 0..n-1 and then hangs until killed; returns once it has pushed."""
    ctx = multiprocessing.get_context("fork")
    r = rings.create(ring_name, capacity=8, dtype=np.int64)
    c = r.consumer(**consumer_kw)
    ready = ctx.Event()
    child = procs(ctx, W.push_then_hang, r, n, ready)
    assert ready.wait(30)
    return r, c, child


def test_fileno_readable_when_producer_is_killed(rings, ring_name, procs):
    r, c, child = _hanging_producer(rings, ring_name, procs, 3, liveness_interval=0.05)
    got, ended = [], set()
    fd = c.fileno()
    deadline = time.monotonic() + 60  # a descriptor left readable must fail the test, not spin
    while not ended:
        assert time.monotonic() < deadline, f"no end of stream after {got}"
        assert select.select([fd], [], [], 10)[0] == [fd]
        if not got:
            child.kill()
        _drain_ready(c, got, ended)
    assert got == [0, 1, 2]


# ---- many rings ------------------------------------------------------------------

def test_wait_any_50_rings_random_feeders(mp_ctx, rings, ring_names, procs):
    rs = [rings.create(ring_names(), capacity=8, dtype=np.int64) for _ in range(50)]
    cs = [r.consumer() for r in rs]
    names = [r.name for r in rs]
    kids = [procs(mp_ctx, W.random_feeder, names[k::2], 40, 20 + k, 0.002) for k in range(2)]
    got = {c: [] for c in cs}
    ended: set = set()
    while len(ended) < len(cs):
        # generous: the first wait includes starting the feeders (spawn imports numpy)
        ready = shmring.wait_any([c for c in cs if c not in ended], timeout=60)
        assert ready, "no ring became ready within 60 s"
        for c in ready:
            _drain_ready(c, got[c], ended)
    for k in kids:
        join_ok(k)
    for c in cs:
        assert got[c] == list(range(40))
    assert sum(consumer_waiters(r) for r in rs) == 0
    assert shmring.wait_any(cs[:1], timeout=0.01) == cs[:1]  # closed counts as progress


def test_wait_any_timeout_and_await_any(rings, ring_names):
    rs = [rings.create(ring_names(), capacity=8, dtype=np.int64) for _ in range(3)]
    cs = [r.consumer() for r in rs]
    ps = [r.producer() for r in rs]
    t0 = time.monotonic()
    assert shmring.wait_any(cs, timeout=0.1) == []
    assert time.monotonic() - t0 >= 0.09
    threading.Timer(0.05, ps[1].push, (5,)).start()
    assert shmring.wait_any(cs, timeout=10) == [cs[1]]

    async def main():
        assert await shmring.await_any(cs, timeout=0.05) == [cs[1]]
        assert int(cs[1].pop(0)) == 5
        assert await shmring.await_any(cs, timeout=0.05) == []
        asyncio.get_running_loop().call_later(0.05, ps[2].push, 6)
        ready = await shmring.await_any(cs + ps, timeout=10)
        assert ps[0] in ready  # producers with room are ready too
        assert await shmring.await_any(cs, timeout=10) == [cs[2]]

    run(main())
    assert sum(consumer_waiters(r) for r in rs) == 0


# ---- cancellation and crashes ----------------------------------------------------

def _ring_of(kind: str, rings, name: str, mode: str = "queue"):
    """A small ring of int64 records, or of messages holding 8-byte little-endian ints."""
    if kind == "records":
        return rings.create(name, capacity=16, dtype=np.int64, mode=mode)
    return rings.create(name, nbytes=1024, mode=mode)


def _int(kind: str):
    return int if kind == "records" else W.u64


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("start,loop_kind", CTX_LOOPS)
def test_cancellation_and_wait_for_lose_nothing(start, rings, ring_name, procs, loop_kind, kind):
    mp_ctx = multiprocessing.get_context(start)
    n = 3000
    r = _ring_of(kind, rings, ring_name)
    value = _int(kind)
    c = r.consumer()
    child = procs(mp_ctx, W.paced_producer, r, n, 4)
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)

    async def main():
        got, timeouts, cancels = [], 0, 0
        while True:
            try:
                how = rnd.random()
                if how < 0.4:
                    got.append(value(await asyncio.wait_for(c.apop(), rnd.random() * 0.002)))
                elif how < 0.7:
                    many = how < 0.55
                    t = asyncio.ensure_future(c.apop_many(3) if many else c.apop())
                    await asyncio.sleep(rnd.random() * 0.001)
                    if t.cancel():
                        cancels += 1
                    try:
                        got.extend(map(value, await t) if many else [value(await t)])
                    except asyncio.CancelledError:
                        pass
                else:
                    got.append(value(await c.apop(timeout=30)))
            except asyncio.TimeoutError:
                timeouts += 1
            except shmring.Closed:
                return got, timeouts, cancels

    got, timeouts, cancels = run(main(), loop_kind)
    join_ok(child)
    assert got == list(range(n)), f"seed {seed}"
    assert timeouts > 0 and cancels > 0, (timeouts, cancels, f"seed {seed}")
    assert consumer_waiters(r) == 0, "a cancelled wait stayed counted"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("start,loop_kind", CTX_LOOPS)
@pytest.mark.parametrize("mode", ["queue", "broadcast"])
def test_killed_producer_ends_awaiting_consumers(start, rings, ring_name, procs, loop_kind, mode, kind):
    mp_ctx = multiprocessing.get_context(start)
    r = _ring_of(kind, rings, ring_name, mode)
    value = _int(kind)
    cs = [r.consumer(start="oldest", liveness_interval=0.05) for _ in range(3)]
    ready = mp_ctx.Event()
    child = procs(mp_ctx, W.push_then_hang, r, 10, ready)
    assert ready.wait(60)

    async def main():
        async def drain(c):
            out = []
            async for v in c:
                out.append(value(v))
            return out

        tasks = [asyncio.ensure_future(drain(c)) for c in cs]
        await asyncio.sleep(0.1)  # every consumer drained and is awaiting
        assert not any(t.done() for t in tasks)
        child.kill()
        t0 = time.monotonic()
        outs = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        return outs, time.monotonic() - t0

    outs, took = run(main(), loop_kind)
    if mode == "queue":
        assert sorted(sum(outs, [])) == list(range(10))
    else:
        assert all(o == list(range(10)) for o in outs)
    assert r.stats()["close_reason"] == "producer died"
    assert took < 5, took


def test_killed_producer_ends_awaiting_producerless_wait(rings, ring_name, procs):
    """A consumer that started waiting before any producer existed watches no
    pidfd: it checks liveness every interval instead, and still ends."""
    ctx = multiprocessing.get_context("fork")
    r = rings.create(ring_name, capacity=8, dtype=np.int64)
    c = r.consumer(liveness_interval=0.05)
    ready = ctx.Event()

    async def main():
        t = asyncio.ensure_future(c.apop_many(100))
        await asyncio.sleep(0.05)
        child = procs(ctx, W.push_then_hang, r, 2, ready)
        assert list(await asyncio.wait_for(t, 10)) in ([0], [0, 1])
        await asyncio.get_running_loop().run_in_executor(None, ready.wait, 30)
        child.kill()
        rest = []
        with pytest.raises(shmring.Closed):
            while True:
                rest.extend(int(x) for x in await asyncio.wait_for(c.apop_many(100), 10))
        return rest

    rest = run(main())
    assert len(rest) <= 2


def test_producer_killed_between_waits_ends_the_next_wait(rings, ring_name, procs):
    """The loop keeps a producer's pidfd watched between waits. When the
    producer dies while no wait on its ring is pending, the loop reaps that
    exit with nobody to check; the next wait must still run the check and end
    with Closed (a liveness interval too long to end it otherwise)."""
    r, c, child = _hanging_producer(rings, ring_name, procs, 2, liveness_interval=30.0)

    async def main():
        got = [int(x) for x in await asyncio.wait_for(c.apop_many(100), 10)]
        with pytest.raises(shmring.Empty):
            await c.apop(timeout=0.1)  # a wait: the producer's pidfd is watched, then idle
        child.kill()
        await asyncio.sleep(0.5)  # the loop reaps the exit: no wait is pending
        with pytest.raises(shmring.Closed):
            await asyncio.wait_for(c.apop(), 5)
        return got

    assert run(main()) == [0, 1]


# ---- the fallback without io_uring -------------------------------------------------

def test_futex_waitv_fallback(rings, ring_names, procs, monkeypatch):
    monkeypatch.setattr(aio, "_backend", "futex_waitv")
    monkeypatch.setattr(aio, "_reactors", aio.weakref.WeakKeyDictionary())
    ctx = multiprocessing.get_context("fork")
    a = rings.create(ring_names(), capacity=4, dtype=np.int64)
    b = rings.create(ring_names(), capacity=4, dtype=np.int64)
    child = procs(ctx, W.pong, a, b, 200, False)  # the child runs io_uring

    async def main():
        p, c = a.producer(), b.consumer()
        v = 0
        for _ in range(200):
            await p.apush(v, timeout=30)
            v = int(await asyncio.wait_for(c.apop(), 30)) + 1
        with pytest.raises(shmring.Closed):
            await c.apop(timeout=10)  # the child closed its stream
        d = rings.create(ring_names(), capacity=4, dtype=np.int64)
        cd, pd = d.consumer(), d.producer()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(cd.apop(), 0.01)
        await asyncio.sleep(0.2)  # the helper thread ends its slice
        assert consumer_waiters(d) == 0
        pd.push(3)
        assert int(await cd.apop(timeout=5)) == 3  # the timed-out wait took nothing
        with pytest.raises(OSError, match="io_uring"):
            c.fileno()
        return v

    assert run(main()) == 400
    join_ok(child)


def test_futex_waitv_fallback_shares_threads(rings, ring_names, procs, monkeypatch):
    """Without io_uring, 150 awaited rings need two helper threads (127 handles
    each), not 150; every record arrives; the threads end once nothing waits."""
    monkeypatch.setattr(aio, "_backend", "futex_waitv")
    monkeypatch.setattr(aio, "_reactors", aio.weakref.WeakKeyDictionary())
    ctx = multiprocessing.get_context("fork")
    rs = [rings.create(ring_names(), capacity=8, dtype=np.int64) for _ in range(150)]
    cs = [r.consumer() for r in rs]
    threads_before = _threads()

    async def main():
        got = [[] for _ in cs]

        async def drain(k):
            async for v in cs[k]:
                got[k].append(int(v))

        tasks = [asyncio.ensure_future(drain(k)) for k in range(len(cs))]
        await asyncio.sleep(0.3)
        threads = _threads()
        feeder = procs(ctx, W.random_feeder, [r.name for r in rs], 4, 9, 0.0005)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        join_ok(feeder)
        return got, threads

    got, threads = run(main())
    assert threads - threads_before == 2, (threads_before, threads)
    assert all(g == list(range(4)) for g in got)
    # With no wait registered, the helper threads end (the loop is closed: nothing
    # would ever wait on them again, and a fork() would copy them)
    def helpers():
        return [t for t in threading.enumerate() if t.name == "shmring-waitv"]

    deadline = time.monotonic() + 30
    while helpers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert helpers() == []


def test_dropped_handle_with_fileno_leaves_nothing_counted(rings, ring_name):
    r = rings.create(ring_name, capacity=8, dtype=np.int64)
    c = r.consumer()
    c.fileno()
    assert consumer_waiters(r) == 1 and r.stats()["n_consumers"] == 1
    del c  # no cycle keeps it: the slot and the counted waiter go at once
    assert consumer_waiters(r) == 0 and r.stats()["n_consumers"] == 0


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_apop_timeout_while_the_producer_is_watched(rings, ring_name, procs, loop_kind):
    """A timed apop on a consumer whose producer (another process) is watched:
    Empty once the deadline passes, nothing taken, the next record still
    arrives; on asyncio's own loop the deadline is the kernel's (no timer left
    in the loop), on uvloop the loop's."""
    r, c, child = _hanging_producer(rings, ring_name, procs, 3)

    async def main():
        assert int(await c.apop(timeout=10)) == 0
        assert int(await c.apop(timeout=10)) == 1
        assert int(await c.apop(timeout=10)) == 2
        loop = asyncio.get_running_loop()
        timers_mid_wait = []
        for t in (0.2, 0.1, 0.05):  # the first wait sets the producer's watch up
            # what timers the loop holds halfway through the wait
            loop.call_later(t / 2, lambda: timers_mid_wait.append(
                sum(1 for h in getattr(loop, "_scheduled", []) if not h.cancelled())))
            t0 = time.monotonic()
            with pytest.raises(shmring.Empty):
                await c.apop(timeout=t)
            waited = time.monotonic() - t0
            assert t <= waited < t + 5, waited
        if loop_kind == "asyncio":
            assert timers_mid_wait[1:] == [0, 0]
        child.kill()
        with pytest.raises(shmring.Closed):
            await c.apop(timeout=30)

    run(main(), loop_kind)
    child.join(10)
