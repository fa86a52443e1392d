"""Event loops on message rings and boards: apop/apop_many/apush/apush_many,
async for, fileno(), wait_any/await_any mixing record rings, message rings and
board changes, Board.await_change, uvloop and the futex_waitv fallback. Real
processes (fork and spawn), real futex waits, checksummed messages (see
_msg_workers). Cancellation with sequence numbers and killed producers run for
both ring kinds in tests/test_aio.py."""

from __future__ import annotations

import asyncio
import multiprocessing
import selectors
import time

import numpy as np
import pytest

import _aio_workers as W
import _msg_workers as M
import shmring
from shmring import aio
from test_aio import CTX_LOOPS, LOOPS, consumer_waiters, join_ok, run


def producer_waiters(ring) -> int:
    return ring.stats()["waiters"]["producer"]


# ---- same results as the blocking calls, fast path -----------------------------------

def test_fast_path_completes_without_a_loop(rings, ring_name):
    """With a message (room) there the coroutine ends on its first step: no loop
    exists, so none was touched. None is a message like any other."""
    r = rings.create(ring_name, nbytes=4096)
    p, c = r.producer(), r.consumer()
    for coro in (p.apush(None), p.apush_many([b"a", {"k": 1}, np.arange(3)])):
        with pytest.raises(StopIteration):
            coro.send(None)
    coro = c.apop()
    with pytest.raises(StopIteration) as si:
        coro.send(None)
    assert si.value.value is None
    coro = c.apop_many(10)
    with pytest.raises(StopIteration) as si:
        coro.send(None)
    got = si.value.value
    assert got[:2] == [b"a", {"k": 1}] and np.array_equal(got[2], np.arange(3))
    # async for's step: an awaitable that is done already, not a coroutine
    p.push((1, "two"))
    aw = c.__anext__()
    with pytest.raises(StopIteration) as si:
        aw.__await__().send(None)
    assert si.value.value == (1, "two")


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_same_results_and_errors_as_blocking(rings, ring_name, loop_kind):
    r = rings.create(ring_name, nbytes=1024)
    p, c = r.producer(), r.consumer()

    async def main():
        with pytest.raises(shmring.Empty):
            await c.apop(timeout=0)
        with pytest.raises(shmring.Empty):
            await c.apop_many(5, timeout=0.01)
        with pytest.raises(ValueError, match="can never fit"):
            await p.apush(b"x" * (r.max_message + 1))
        with pytest.raises(TypeError, match="iterable of messages"):
            await p.apush_many(b"abc")
        with pytest.raises(TypeError, match="not an array"):
            await p.apush_many(np.arange(4))
        k = 0
        with pytest.raises(shmring.Full):
            while True:
                await p.apush(k.to_bytes(8, "little") * 8, timeout=0.01)
                k += 1
        assert k > 0
        assert [W.u64(m[:8]) for m in await c.apop_many(k)] == list(range(k))
        with pytest.raises(shmring.Full) as fi:
            await p.apush_many([bytes(200)] * 20, timeout=0.01)
        assert 0 < fi.value.pushed < 20
        assert len(await c.apop_many(100)) == fi.value.pushed
        await p.apush({"last": True})
        p.close()
        assert await c.apop() == {"last": True}
        with pytest.raises(shmring.Closed):
            await c.apop()
        assert [m async for m in c] == []

    run(main(), loop_kind)
    assert consumer_waiters(r) == 0 and producer_waiters(r) == 0


def test_apush_waits_for_room_for_its_message(rings, ring_name, procs):
    """A large message waits for room for itself, not for any room: the awaiting
    producer is woken by each small pop, finds too little room and re-arms,
    and its message goes out once enough was popped, in order."""
    ctx = multiprocessing.get_context("fork")
    r = rings.create(ring_name, nbytes=4096)
    results = ctx.Queue()
    p = r.producer()
    small = 0
    while True:
        try:
            p.push(bytes(56), timeout=0)
            small += 1
        except shmring.Full:
            break
    big = bytes(r.max_message)
    child = procs(ctx, W.msg_slow_popper, r, small + 1, 0.05, results)

    async def main():
        t0 = time.monotonic()
        await p.apush(big, timeout=30)
        return time.monotonic() - t0

    took = run(main())
    assert took > 0.05  # it did wait for the slow popper
    got = results.get(timeout=60)
    join_ok(child)
    assert got == [56] * small + [len(big)]
    assert producer_waiters(r) == 0


# ---- between processes -----------------------------------------------------------

@pytest.mark.parametrize("start,loop_kind", CTX_LOOPS)
def test_ping_pong_objects(start, rings, ring_names, procs, loop_kind):
    mp_ctx = multiprocessing.get_context(start)
    a = rings.create(ring_names(), nbytes=4096)
    b = rings.create(ring_names(), nbytes=4096)
    rounds = 300
    child = procs(mp_ctx, W.msg_pong, a, b, rounds, loop_kind == "uvloop")

    async def main():
        p, c = a.producer(), b.consumer()
        for k in range(rounds):
            arr = np.arange(k % 17, dtype=np.int32)
            await p.apush({"seq": 2 * k, "a": arr}, timeout=30)
            m = await asyncio.wait_for(c.apop(), 30)
            assert m["seq"] == 2 * k + 1 and np.array_equal(m["a"], arr * 2)
        return k

    assert run(main(), loop_kind) == rounds - 1
    join_ok(child)


@pytest.mark.parametrize("start,loop_kind", CTX_LOOPS)
def test_async_for_exactly_once_three_consumers(start, rings, ring_name, procs, tmp_path, loop_kind):
    """Checksummed messages of random sizes, pushed with apush/apush_many by one
    process, taken by `async for` in three: each exactly once, every byte checked."""
    mp_ctx = multiprocessing.get_context(start)
    n = 30_000
    r = rings.create(ring_name, nbytes=1 << 16)
    max_payload = min(r.max_message, 3000) - M.ENV.size
    outs, readies, kids = [], [], []
    for k in range(3):
        out = str(tmp_path / f"c{k}.npy")
        ev = mp_ctx.Event()
        kids.append(procs(mp_ctx, W.msg_async_for_consumer, r, out, max_payload, ev, loop_kind == "uvloop"))
        outs.append(out)
        readies.append(ev)
    for ev in readies:
        assert ev.wait(60)
    prod = procs(mp_ctx, W.msg_apush_stream, r, n, max_payload, 23)
    join_ok(prod, 120)
    seqs = []
    for kid, out in zip(kids, outs):
        join_ok(kid, 120)
        s = np.load(out)
        assert np.all(np.diff(s) > 0)  # each consumer sees its share in order
        seqs.append(s)
    assert all(len(s) for s in seqs), [len(s) for s in seqs]
    assert np.array_equal(np.sort(np.concatenate(seqs)), np.arange(n)), "not exactly once"


# ---- cancellation (crashes: tests/test_aio.py runs both kinds) -------------------

def test_cancelled_apush_publishes_nothing(rings, ring_name):
    r = rings.create(ring_name, nbytes=512)
    p, c = r.producer(), r.consumer()
    k = 0
    while True:
        try:
            p.push(k.to_bytes(8, "little"), timeout=0)
            k += 1
        except shmring.Full:
            break

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(p.apush(b"late"), 0.05)
        assert producer_waiters(r) == 0
        got = [W.u64(m) for m in c.pop_many(1000, timeout=0)]
        assert got == list(range(k))  # the timed-out push left no message
        with pytest.raises(shmring.Empty):
            c.pop(timeout=0)

    run(main())


# ---- fileno() and waits on many ----------------------------------------------------

def test_fileno_with_selectors(rings, ring_names, procs):
    ctx = multiprocessing.get_context("fork")
    rs = [rings.create(ring_names(), nbytes=512) for _ in range(3)]
    cs = [r.consumer() for r in rs]
    feeders = [procs(ctx, W.paced_producer, r, 200, 30 + k) for k, r in enumerate(rs)]
    got = {c: [] for c in cs}
    sel = selectors.DefaultSelector()
    for c in cs:
        sel.register(c, selectors.EVENT_READ)
    live = set(cs)
    while live:
        events = sel.select(timeout=10)
        assert events, "no readiness within 10 s"
        for key, _ in events:
            c = key.fileobj
            try:
                while True:
                    got[c].append(W.u64(c.pop(timeout=0)))
            except shmring.Empty:
                pass  # re-armed
            except shmring.Closed:
                sel.unregister(c)
                live.discard(c)
    sel.close()
    for f in feeders:
        join_ok(f)
    assert all(got[c] == list(range(200)) for c in cs)


def test_message_producer_fileno_readable_when_room(rings, ring_name, procs):
    ctx = multiprocessing.get_context("fork")
    r = rings.create(ring_name, nbytes=512)
    p = r.producer()
    with pytest.raises(shmring.Full):
        while True:
            p.push(bytes(100), timeout=0)
    sel = selectors.DefaultSelector()
    sel.register(p, selectors.EVENT_READ)
    assert sel.select(timeout=0.01) == []  # a liveness tick (every 50 ms) would also wake it
    results = ctx.Queue()
    child = procs(ctx, W.msg_slow_popper, r, 1, 0.0, results)
    # readable means "try now" (a liveness check also makes it readable): a push
    # that still finds no room re-arms it, and the pop makes room soon
    deadline = time.monotonic() + 30
    while True:
        assert sel.select(timeout=10), "room did not make the producer readable"
        try:
            p.push(bytes(100), timeout=0)
            break
        except shmring.Full:
            assert time.monotonic() < deadline
    assert results.get(timeout=30) == [100]
    join_ok(child)
    sel.close()


def test_wait_any_mixes_records_messages_and_boards(rings, ring_names, procs):
    ctx = multiprocessing.get_context("fork")
    rec = rings.create(ring_names(), capacity=8, dtype=np.int64)
    msg = rings.create(ring_names(), nbytes=512)
    bname = ring_names()
    board = shmring.Board.create(bname, "f8", ["x", "y"])
    try:
        rc, mc = rec.consumer(), msg.consumer()
        change = board.change("y")
        assert shmring.wait_any([rc, mc, change], timeout=0.01) == []
        mp = msg.producer()
        mp.push(b"m")
        assert shmring.wait_any([rc, mc, change], timeout=5) == [mc]
        assert mc.pop() == b"m"
        ready = ctx.Event()
        child = procs(ctx, W.board_writer, bname, "y", 1, 0.05, ready)
        assert shmring.wait_any([rc, mc, change], timeout=10) == [change]
        join_ok(child)
        assert board.read("y", with_version=True) == (1.0, 1)

        async def main():
            ch = board.change("x")
            assert await shmring.await_any([rc, mc, ch], timeout=0.01) == []
            w = asyncio.ensure_future(shmring.await_any([rc, mc, ch], timeout=10))
            await asyncio.sleep(0.01)
            board.write("x", 2.0)
            return await w, ch

        woke, ch = run(main())
        assert len(woke) == 1 and woke[0] is ch
        assert board.read("x", with_version=True) == (2.0, 1)
        assert consumer_waiters(rec) == 0 and consumer_waiters(msg) == 0
        assert all(k["waiters"] == 0 for k in board.stats()["keys"])
    finally:
        board.close()
        shmring.unlink(bname)


# ---- boards -------------------------------------------------------------------------

@pytest.mark.parametrize("loop_kind", LOOPS)
def test_board_await_change(ring_name, procs, loop_kind):
    ctx = multiprocessing.get_context("fork")
    board = shmring.Board.create(ring_name, "f8", ["px"])
    try:
        n = 20
        ready = ctx.Event()

        async def main():
            with pytest.raises(TimeoutError):
                await board.await_change("px", timeout=0.02)
            child = procs(ctx, W.board_writer, ring_name, "px", n, 0.003, ready)
            seen = 0
            versions = []
            while seen < n:
                value, seen = await board.await_change("px", newer_than=seen, timeout=30)
                assert value == float(seen)  # latest-value: versions may skip
                versions.append(seen)
            # already newer: at once, without a wait
            assert await board.await_change("px", newer_than=0) == (float(n), n)
            t = asyncio.ensure_future(board.await_change("px"))
            await asyncio.sleep(0.01)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            return child, versions

        child, versions = run(main(), loop_kind)
        join_ok(child)
        assert versions[-1] == n and versions == sorted(set(versions))
        assert board.stats()["keys"][0]["waiters"] == 0
        with pytest.raises(KeyError):
            board.change("nope")
        with pytest.raises(ValueError, match="newer_than"):
            board.change("px", -1)
    finally:
        board.close()
        shmring.unlink(ring_name)


# ---- the fallback without io_uring -------------------------------------------------

def test_futex_waitv_fallback(rings, ring_names, procs, monkeypatch):
    monkeypatch.setattr(aio, "_backend", "futex_waitv")
    monkeypatch.setattr(aio, "_reactors", aio.weakref.WeakKeyDictionary())
    ctx = multiprocessing.get_context("fork")
    a = rings.create(ring_names(), nbytes=1024)
    b = rings.create(ring_names(), nbytes=1024)
    child = procs(ctx, W.msg_pong, a, b, 100, False)  # the child runs io_uring
    bname = ring_names()
    board = shmring.Board.create(bname, "f8", 1)

    async def main():
        p, c = a.producer(), b.consumer()
        for k in range(100):
            await p.apush({"seq": k, "a": np.ones(3)}, timeout=30)
            m = await asyncio.wait_for(c.apop(), 30)
            assert m["seq"] == k + 1 and np.array_equal(m["a"], np.full(3, 2.0))
        with pytest.raises(shmring.Closed):
            await c.apop(timeout=10)
        t = asyncio.ensure_future(board.await_change(0, timeout=10))
        await asyncio.sleep(0.05)
        board.write(0, 5.0)
        assert await t == (5.0, 1)

    try:
        run(main())
        join_ok(child)
    finally:
        board.close()
        shmring.unlink(bname)


def test_apop_many_takes_max_messages_by_name(rings, ring_name):
    """apop_many on a message consumer names its argument as pop_many does."""
    r = rings.create(ring_name, nbytes=4096)
    p, c = r.producer(), r.consumer()
    for i in range(5):
        p.push(i)

    async def main():
        first = await c.apop_many(max_messages=3)
        rest = await c.apop_many(max_messages=10, timeout=1)
        with pytest.raises(ValueError, match="max_messages"):
            await c.apop_many(max_messages=0)
        with pytest.raises(TypeError):
            await c.apop_many(max_records=3)
        return first, rest

    assert run(main()) == ([0, 1, 2], [3, 4])


@pytest.mark.parametrize("kind", ["records", "messages"])
def test_async_for_awaitables_held_at_once_keep_their_items(rings, ring_name, kind):
    """async for reuses its completed awaitable only once nobody else holds
    it: awaitables taken at once (the protocol by hand) keep their own items."""
    if kind == "records":
        r = rings.create(ring_name, capacity=16, dtype=np.uint64)
    else:
        r = rings.create(ring_name, nbytes=4096)
    p, c = r.producer(), r.consumer()
    for i in range(5):
        p.push(i)

    async def main():
        a1, a2 = c.__anext__(), c.__anext__()
        second, first = await a2, await a1
        rest = []
        async for x in c:
            rest.append(int(x))
            if len(rest) == 3:
                break
        return int(first), int(second), rest

    assert run(main()) == (0, 1, [2, 3, 4])
