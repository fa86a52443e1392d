"""Zero-copy paths: producer.reserve() and consumer.view(), across real processes.

Covers queue mode and both broadcast modes, the wrap point (reserve/view return
only the contiguous part), large video frames, exceptions inside reserve(),
arrays that outlive their block and the ring, and views that the producer
overwrites (broadcast-overwrite) or must not overwrite (queue) while held.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

import numpy as np
import pytest

import shmring

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import _bcast_workers as W  # noqa: E402

FORK = multiprocessing.get_context("fork")
SPAWN = multiprocessing.get_context("spawn")

MODES = {
    "queue": dict(mode="queue"),
    "bcast-block": dict(mode="broadcast", overflow="block"),
    "bcast-overwrite": dict(mode="broadcast", overflow="overwrite"),
}


@pytest.fixture
def mkring():
    """Ring factory: unique names, rings closed and unlinked at teardown."""
    names, rings = [], []

    def make(dtype=W.REC, capacity=16, **kw):
        name = W.new_name("z")
        names.append(name)
        ring = shmring.Ring.create(name, dtype, capacity, **kw)
        rings.append(ring)
        return ring

    make.names = names
    yield make
    for r in rings:
        r.close()
    for n in names:
        W.unlink_quietly(n)


def join_all(ps):
    for p in ps:
        p.join(30)
        assert p.exitcode == 0, f"child {p.pid} exit code {p.exitcode}"


# ---- reserve -> view across processes ------------------------------------------------


@pytest.mark.parametrize("ctx", [FORK, SPAWN], ids=["fork", "spawn"])
@pytest.mark.parametrize("mode", list(MODES))
def test_reserve_to_view_across_processes(mkring, procs, mode, ctx):
    n, cap, res_n, view_n = 20_000, 64, 10, 16  # 64 is not a multiple of 10: short reserves at the wrap
    ring = mkring(capacity=cap, **MODES[mode])
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    cons = [procs(ctx, W.view_consumer, ring, i, "oldest", view_n, ready, out) for i in range(2)]
    prod = procs(ctx, W.reserve_producer, ring, n, res_n, go, out)
    got = [W.get(ready, "consumer ready"), W.get(ready, "consumer ready")]
    assert sorted(got) == [0, 1]
    assert W.get(out, "producer ready")[0] == "producer-ready"
    go.set()
    res = {}
    for _ in range(3):
        tag, r = W.get(out, "result", timeout=120)
        res["p" if tag == "producer" else r["idx"]] = r
    join_all(cons + [prod])
    for r in res.values():
        assert r["error"] is None, r["error"]

    p = res["p"]
    assert p["total"] == n
    assert p["bad_len"] == 0, "reserve returned more than asked, nothing, or a wrong shape/dtype"
    assert p["not_writable"] == 0
    assert p["short_at_wrap"] > 0, "reserve never stopped short at the wrap point"

    for i in (0, 1):
        r = res[i]
        assert r["bad"] == 0, f"consumer {i} saw {r['bad']} corrupt records in views"
        assert r["writable"] == 0 and r["write_refused"] == 1, "views must be read-only"
        assert 1 <= r["max_len"] <= view_n
        seqs = r["seqs"]
        assert np.all(np.diff(seqs) > 0), "sequence numbers must strictly increase"
        assert r["popped"] == len(seqs)
    if mode == "queue":
        every = np.sort(np.concatenate([res[0]["seqs"], res[1]["seqs"]]))
        assert np.array_equal(every, np.arange(n)), "queue: each record to exactly one consumer"
        assert res[0]["lag_exits"] == res[1]["lag_exits"] == 0
    elif mode == "bcast-block":
        for i in (0, 1):
            assert np.array_equal(res[i]["seqs"], np.arange(n)), f"consumer {i} missed or repeated records"
            assert res[i]["dropped"] == 0 and res[i]["lag_exits"] == 0
    else:
        for i in (0, 1):
            r = res[i]
            assert r["seqs"][-1] == n - 1
            assert r["popped"] + r["dropped"] == n
            assert r["dropped"] >= r["lag_count"]


def test_reserve_returns_only_the_contiguous_part_at_the_wrap(mkring):
    ring = mkring(capacity=8, mode="queue")
    p, c = ring.producer(), ring.consumer()
    p.push_many(W.make_records(0, 6))
    assert c.pop_many(6)["seq"].tolist() == list(range(6))
    with p.reserve(5) as a:  # head at slot 6: only slots 6, 7 before the wrap
        assert len(a) == 2
        W.fill(a, 6)
    with p.reserve(5) as a:
        assert len(a) == 5
        W.fill(a, 8)
    with c.view(8) as v:  # the view stops at the wrap too
        assert v["seq"].tolist() == [6, 7]
    with c.view(8) as v:
        assert v["seq"].tolist() == [8, 9, 10, 11, 12] and W.n_bad(v) == 0
    assert ring.stats()["pushed"] == 13


# ---- large frames ------------------------------------------------------------------

FRAME_PATHS = [("push", "pop"), ("push_many", "pop_many"), ("reserve", "view")]


@pytest.mark.parametrize("mode", ["queue", "bcast-block"])
@pytest.mark.parametrize("path", FRAME_PATHS, ids=[f"{a}-{b}" for a, b in FRAME_PATHS])
def test_large_frames(mkring, procs, path, mode):
    n, cap, batch = 20, 4, 3
    ring = mkring(dtype=W.FRAME, capacity=cap, **MODES[mode])
    assert ring.dtype == W.FRAME and ring.stats()["record_size"] == W.FRAME_BYTES
    how, method = path
    ready, out = FORK.Queue(), FORK.Queue()
    child = procs(FORK, W.frame_consumer, ring, method, batch, ready, out)
    W.get(ready, "consumer ready")
    p = ring.producer()
    reserve_lens = []
    if how == "push":
        for s in range(n):
            p.push(W.make_frames(s, 1)[0], timeout=30)
    elif how == "push_many":
        for s in range(0, n, 7):  # 7 frames per call > capacity 4
            p.push_many(W.make_frames(s, min(7, n - s)), timeout=30)
    else:
        s = 0
        while s < n:
            want = min(batch, n - s)
            with p.reserve(want, timeout=30) as a:
                assert a.shape[1:] == W.FRAME.shape and a.dtype == np.uint8 and a.flags.writeable
                assert 1 <= len(a) <= min(want, cap - s % cap), "reserve crossed the wrap point"
                for j in range(len(a)):
                    W.fill_frame(a[j], s + j)
                reserve_lens.append(len(a))
            s += len(a)
    p.close()
    tag, r = W.get(out, "frame result", timeout=120)
    join_all([child])
    assert r["error"] is None, r["error"]
    assert r["bad_shape"] == 0
    assert r["bad"] == 0, "a frame arrived torn or corrupt"
    assert r["seqs"] == list(range(n))
    assert all(1 <= k <= (1 if method == "pop" else batch) for k in r["lens"])
    if how == "reserve":
        assert sum(reserve_lens) == n


# ---- exceptions inside reserve() -------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_exception_inside_reserve_publishes_nothing(mkring, mode):
    ring = mkring(capacity=8, **MODES[mode])
    c = ring.consumer(start="oldest")
    p = ring.producer()
    p.push_many(W.make_records(0, 3))
    assert c.pop_many(8)["seq"].tolist() == [0, 1, 2]

    with pytest.raises(RuntimeError, match="boom"):
        with p.reserve(4) as a:
            W.fill(a, 3)
            a["seq"] = 999_999  # garbage that must never be seen
            raise RuntimeError("boom")
    assert ring.stats()["pushed"] == 3
    with pytest.raises(shmring.Empty):
        c.pop(timeout=0)
    with pytest.raises(shmring.Empty):
        c.pop_many(8, timeout=0)
    with pytest.raises(shmring.Empty):
        with c.view(8, timeout=0):
            pass

    with p.reserve(4) as a:  # the next reserve works and publishes
        assert len(a) == 4
        W.fill(a, 3)
    assert ring.stats()["pushed"] == 7
    got = W.drain(c)
    assert got["seq"].tolist() == [3, 4, 5, 6] and W.n_bad(got) == 0

    # ring full of unread records
    p.push_many(W.make_records(7, 8), timeout=5)
    before = (c.popped, c.dropped)
    if mode == "bcast-overwrite":
        # an aborted reserve may scribble on the oldest unread slots: those records
        # must then be dropped, never delivered as garbage
        with pytest.raises(RuntimeError):
            with p.reserve(3) as a:
                a.fill(0)
                raise RuntimeError("boom")
        assert ring.stats()["pushed"] == 15
        got = W.drain(c)
        assert W.n_bad(got) == 0, "garbage from an aborted reserve was delivered"
        assert np.all(np.diff(got["seq"].astype(np.int64)) == 1) and int(got["seq"][-1]) == 14
        assert (c.popped - before[0]) + (c.dropped - before[1]) == 8
    else:
        with pytest.raises(shmring.Full):
            p.reserve(1, timeout=0)
        got = W.drain(c)
        assert got["seq"].tolist() == list(range(7, 15)) and W.n_bad(got) == 0
    with p.reserve(2) as a:  # head 15 = slot 7: one slot left before the wrap
        assert len(a) == 1
        W.fill(a, 15)
    with p.reserve(2) as a:
        assert len(a) == 2
        W.fill(a, 16)
    got = W.drain(c)
    assert got["seq"].tolist() == [15, 16, 17] and W.n_bad(got) == 0


# ---- arrays that outlive their block and the ring ------------------------------------


@pytest.mark.parametrize("ctx", [FORK, SPAWN], ids=["fork", "spawn"])
@pytest.mark.parametrize("mode", list(MODES))
def test_arrays_outlive_block_handles_and_ring(mkring, procs, mode, ctx):
    # run in a child: a use-after-unmap would kill the process, not pytest
    name = W.new_name("z")
    mkring.names.append(name)
    out = ctx.Queue()
    child = procs(ctx, W.kept_arrays_child, name, MODES[mode]["mode"], MODES[mode].get("overflow", "block"), out)
    tag, r = W.get(out, "child result", timeout=60)
    child.join(30)
    assert child.exitcode == 0, f"child died with exit code {child.exitcode} (negative = signal)"
    assert r["error"] is None, r["error"]
    assert r["view_seqs"] == [0, 1, 2, 3] and r["view_bad"] == 0
    assert r["steps"] == ["after-block", "after-handle-close", "after-ring-close", "after-gc",
                          "after-unlink", "slice-outlives-array", "all-freed"]


@pytest.mark.parametrize("ctx", [FORK, SPAWN], ids=["fork", "spawn"])
def test_reserve_array_written_after_ring_close_inside_block(mkring, procs, ctx):
    name = W.new_name("z")
    mkring.names.append(name)
    out = ctx.Queue()
    child = procs(ctx, W.close_inside_reserve_child, name, out)
    tag, r = W.get(out, "child result", timeout=60)
    child.join(30)
    assert child.exitcode == 0, f"child died with exit code {child.exitcode}"
    assert r == "ok", r


# ---- broadcast-overwrite: a view overwritten while held ---------------------------------


def test_overwritten_view_raises_lagged_with_exact_count(mkring, procs):
    cap = 16
    ring = mkring(capacity=cap, mode="broadcast", overflow="overwrite")
    c = ring.consumer(start="latest")
    cmd, rep = FORK.Queue(), FORK.Queue()
    procs(FORK, W.producer_server, ring, cmd, rep)
    assert W.get(rep, "producer")[0] == "ready"

    def push(k):
        cmd.put(("push", k))
        tag, head = W.get(rep, "push reply")
        assert tag == "ok"
        return head

    # 1. hold all 16 records, 3 more are pushed over slots 0..2
    push(16)
    with pytest.raises(shmring.Lagged) as ei:
        with c.view(cap) as v:
            assert v["seq"].tolist() == list(range(16)) and W.n_bad(v) == 0
            copy = v.copy()
            push(3)
    assert ei.value.count == 3
    assert W.n_bad(copy[3:]) == 0  # the rest was not overwritten
    assert (c.popped, c.dropped) == (13, 3)
    assert W.drain(c)["seq"].tolist() == [16, 17, 18]

    # 2. hold 13 records (19..31, up to the wrap), the producer pushes 20 > capacity
    push(16)
    with pytest.raises(shmring.Lagged) as ei:
        with c.view(cap) as v:
            assert v["seq"].tolist() == list(range(19, 32))
            push(20)
    assert ei.value.count == 13  # the whole view
    assert (c.popped, c.dropped) == (16, 16)
    got = W.drain(c)  # cursor 32, head 55: 7 more were lapped meanwhile
    assert got["seq"].tolist() == list(range(39, 55)) and W.n_bad(got) == 0
    assert (c.popped, c.dropped) == (32, 23)

    # 3. boundary: pushing until the view's first slot is next in line is fine ...
    push(4)
    with c.view(cap) as v:
        assert v["seq"].tolist() == [55, 56, 57, 58]
        push(12)  # head 71 = 55 + capacity: nothing of the view overwritten
        assert W.n_bad(v) == 0 and v["seq"].tolist() == [55, 56, 57, 58]
    assert (c.popped, c.dropped) == (36, 23)
    # ... and one record more overwrites exactly one
    with pytest.raises(shmring.Lagged) as ei:
        with c.view(4) as v:
            assert v["seq"].tolist() == [59, 60, 61, 62]
            push(5)  # head 76: positions 71..75 reuse slots of 55..59
    assert ei.value.count == 1
    got = W.drain(c)
    assert got["seq"].tolist() == list(range(63, 76)) and W.n_bad(got) == 0
    assert (c.popped, c.dropped) == (52, 24)
    st = {x["index"]: x for x in ring.stats()["consumers"]}[c.index]
    assert (st["popped"], st["dropped"]) == (52, 24)
    cmd.put(("close",))
    assert W.get(rep, "close reply") == ("closed", 76)


def test_view_with_on_lag_raise_keeps_the_surviving_records(mkring, procs):
    """on_lag="raise": view() raises Lagged(count) for the records lost before it; the
    records that did survive must still be delivered (by the next view), and every
    record is either delivered or counted as dropped."""
    ring = mkring(capacity=8, mode="broadcast", overflow="overwrite")
    c = ring.consumer(on_lag="raise")
    cmd, rep = FORK.Queue(), FORK.Queue()
    procs(FORK, W.producer_server, ring, cmd, rep)
    assert W.get(rep, "producer")[0] == "ready"
    cmd.put(("push", 20))
    assert W.get(rep, "push reply") == ("ok", 20)
    with pytest.raises(shmring.Lagged) as ei:
        with c.view(8):
            pass
    assert ei.value.count == 12
    seen = []
    while True:
        try:
            with c.view(8, timeout=0) as v:
                seen += v["seq"].tolist()
        except shmring.Empty:
            break
    assert seen == list(range(12, 20)), "records that survived the lap were lost"
    assert c.dropped == 12 and c.popped == len(seen)
    cmd.put(("close",))
    W.get(rep, "close reply")


# ---- queue mode: a held view pins its slots -------------------------------------------


def test_queue_view_slots_are_not_overwritten_while_held(mkring, procs):
    cap = 8
    ring = mkring(capacity=cap, mode="queue")
    cmd, rep = FORK.Queue(), FORK.Queue()
    holder = procs(FORK, W.view_holder, ring, cmd, rep)
    assert W.get(rep, "holder ready")[0] == "ready"
    p = ring.producer()
    mine = ring.consumer()
    p.push_many(W.make_records(0, cap), timeout=5)

    cmd.put(("view", 3))
    assert W.get(rep, "view") == ("viewing", [0, 1, 2], 0)
    assert W.drain(mine)["seq"].tolist() == [3, 4, 5, 6, 7]
    st = ring.stats()
    assert st["available"] == 0  # nothing left unread ...
    with pytest.raises(shmring.Full):  # ... but the next slot is held by the view
        p.push(W.make_records(8, 1)[0], timeout=0)
    with pytest.raises(shmring.Full) as ei:
        p.push_many(W.make_records(8, 3), timeout=0.2)
    assert ei.value.pushed == 0
    with pytest.raises(shmring.Full):
        p.reserve(1, timeout=0)
    cmd.put(("check",))
    assert W.get(rep, "check") == ("checked", [0, 1, 2], 0), "held records were overwritten"

    cmd.put(("release",))
    assert W.get(rep, "release") == ("released", 3)
    p.push_many(W.make_records(8, cap), timeout=5)  # all 8 slots free again
    got = W.drain(mine)
    assert got["seq"].tolist() == list(range(8, 16)) and W.n_bad(got) == 0
    p.close()
    cmd.put(("quit",))
    assert W.get(rep, "quit")[0] == "bye"
    join_all([holder])
    assert ring.stats()["pushed"] == 16


def test_broadcast_block_view_slots_are_not_overwritten_while_held(mkring, procs):
    cap = 8
    ring = mkring(capacity=cap, mode="broadcast", overflow="block")
    cmd, rep = FORK.Queue(), FORK.Queue()
    holder = procs(FORK, W.view_holder, ring, cmd, rep)
    assert W.get(rep, "holder ready")[0] == "ready"
    other = ring.consumer()
    p = ring.producer()
    p.push_many(W.make_records(0, cap), timeout=5)
    cmd.put(("view", 3))
    assert W.get(rep, "view") == ("viewing", [0, 1, 2], 0)
    assert W.drain(other)["seq"].tolist() == list(range(cap))  # the other consumer is done
    with pytest.raises(shmring.Full):
        p.push(W.make_records(8, 1)[0], timeout=0.2)
    with pytest.raises(shmring.Full):
        p.reserve(1, timeout=0)
    cmd.put(("check",))
    assert W.get(rep, "check") == ("checked", [0, 1, 2], 0), "held records were overwritten"
    cmd.put(("release",))
    assert W.get(rep, "release") == ("released", 3)
    p.push_many(W.make_records(8, 3), timeout=5)  # exactly the 3 released slots
    with pytest.raises(shmring.Full):
        p.push(W.make_records(11, 1)[0], timeout=0)
    assert W.drain(other)["seq"].tolist() == [8, 9, 10]
    p.close()
    cmd.put(("quit",))
    assert W.get(rep, "quit")[0] == "bye"
    join_all([holder])
