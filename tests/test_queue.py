"""Queue-mode behaviour of shmring with real shared memory and real processes."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import stat
import time

import numpy as np
import pytest

import shmring
from shmring import _ring
import _workers as W
from _procs import run


# ---- helpers ------------------------------------------------------------------

def assert_ring_works(ring, prod=None, cons=None):
    """Push one distinctive record and pop it back byte for byte (the ring must be
    empty when called). Uses the given handles, or makes (and closes) its own."""
    own_p = prod is None
    own_c = cons is None
    prod = prod if prod is not None else ring.producer()
    cons = cons if cons is not None else ring.consumer()
    try:
        size = ring.dtype.itemsize
        raw = bytes((i * 37 + 11) % 251 + 1 for i in range(size))
        rec = np.frombuffer(raw, dtype=np.uint8).view(ring.dtype.base)
        rec = rec.reshape((1,) + ring.dtype.shape)  # one record, any dtype kind
        prod.push(rec, timeout=5)
        got = cons.pop(timeout=5)
        assert np.asarray(got).tobytes() == raw
        with pytest.raises(shmring.Empty):
            cons.pop(timeout=0)
    finally:
        if own_c:
            cons.close()
        if own_p:
            prod.close()


def wait_until(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


# ---- exactly-once across 4 consumer processes --------------------------------------

N_EXACTLY_ONCE = 1_000_000


def test_exactly_once_four_consumers(mp_ctx, ring_name, tmp_path, rings, procs):
    seed = 20240611
    print(f"seed={seed} start_method={mp_ctx.get_start_method()}")
    rng = np.random.default_rng(seed)
    ring = rings.create(ring_name, W.REC, 100)  # rounded up to 128
    assert ring.capacity == 128
    outs = [str(tmp_path / f"c{i}.npz") for i in range(4)]
    kids = [procs(mp_ctx, W.eo_consumer, ring, outs[i], seed + 1 + i, 700) for i in range(4)]
    try:
        prod = ring.producer()
        pos = 0
        singles = 0
        chunk_n = 1 << 16
        while pos < N_EXACTLY_ONCE:
            recs = W.make_records(pos, min(chunk_n, N_EXACTLY_ONCE - pos))
            i = 0
            while i < len(recs):
                if rng.integers(0, 8) == 0:  # a few records one at a time
                    for _ in range(int(rng.integers(1, 4))):
                        if i < len(recs):
                            prod.push(recs[i], timeout=60)
                            i += 1
                            singles += 1
                else:  # batches from 1 to 4x capacity
                    part = recs[i:i + int(rng.integers(1, 2048))]
                    assert prod.push_many(part, timeout=60) == len(part)
                    i += len(part)
            pos += len(recs)
        prod.close()
        W.join_all(kids, timeout=120)
    finally:
        for p in kids:
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in kids] == [0, 0, 0, 0]
    assert singles > 0

    all_seqs = []
    for i, out in enumerate(outs):
        with np.load(out) as d:
            seqs = d["seqs"]
            assert int(d["bad"]) == 0, f"consumer {i}: {int(d['bad'])} torn/corrupt records"
            print(f"consumer {i}: {len(seqs)} records, {int(d['calls'])} calls, {int(d['singles'])} single pops")
        # one consumer claims queue positions in increasing order
        assert np.all(np.diff(seqs.astype(np.int64)) > 0), f"consumer {i} saw records out of order"
        all_seqs.append(seqs)
    merged = np.concatenate(all_seqs)
    assert len(merged) == N_EXACTLY_ONCE  # nothing duplicated, nothing lost ...
    merged.sort()
    assert np.array_equal(merged, np.arange(N_EXACTLY_ONCE, dtype=np.uint64))  # ... each exactly once
    st = ring.stats()
    assert st["pushed"] == N_EXACTLY_ONCE
    assert st["available"] == 0
    assert st["closed"] and st["close_reason"] == "closed by producer"


# ---- dtypes: single-record and batch paths ------------------------------------------

def test_structured_dtype_single_and_batch(ring_name, rings):
    dt = np.dtype([("a", "<i4"), ("b", "<f8"), ("c", "S3")])
    ring = rings.create(ring_name, dt, 16)
    prod, cons = ring.producer(), ring.consumer()
    recs = np.array([(i, i * 0.5, f"r{i}".encode()) for i in range(10)], dtype=dt)
    prod.push((0, 0.0, b"r0"))            # tuple
    prod.push(recs[1])                    # np.void
    prod.push(recs[2:3])                  # 1-record array
    assert prod.push_many(recs[3:]) == 7  # batch
    first = cons.pop()
    assert type(first) is np.void and first.dtype == dt
    assert first.tobytes() == recs[0].tobytes()
    got = [first]
    while len(got) < 10:
        batch = cons.pop_many(4)
        assert isinstance(batch, np.ndarray) and batch.dtype == dt and 1 <= len(batch) <= 4
        got.extend(batch)
    assert np.array_equal(np.array(got, dtype=dt), recs)
    assert (int(got[9]["a"]), float(got[9]["b"]), bytes(got[9]["c"])) == (9, 4.5, b"r9")
    assert_ring_works(ring, prod, cons)


def test_struct_with_subarray_field(ring_name, rings):
    dt = np.dtype([("id", "<u4"), ("m", "<f4", (2, 3)), ("flag", "u1")])
    ring = rings.create(ring_name, dt, 8)
    prod, cons = ring.producer(), ring.consumer()
    recs = np.zeros(20, dtype=dt)
    recs["id"] = np.arange(20)
    recs["m"] = np.arange(20 * 6, dtype=np.float32).reshape(20, 2, 3)
    recs["flag"] = np.arange(20) % 3
    prod.push(recs[0])
    prod.push((1, recs["m"][1], 1))
    r0, r1 = cons.pop(), cons.pop()
    assert type(r0) is np.void and r0["m"].shape == (2, 3)
    assert r0.tobytes() == recs[0].tobytes() and r1.tobytes() == recs[1].tobytes()
    out = []
    for i in range(2, 20, 6):  # batches of 6 (the last one 6 too) through a ring of 8
        part = recs[i:i + 6]
        assert prod.push_many(part, timeout=0) == len(part)
        want = len(out) + len(part)
        while len(out) < want:
            out.extend(cons.pop_many(4))
    assert np.array_equal(np.array(out, dtype=dt), recs[2:])
    # attaching decodes the same dtype, subarray field included
    other = rings.attach(ring_name)
    assert other.dtype == dt
    assert_ring_works(ring, prod, cons)


def test_subarray_dtype(ring_name, rings):
    dt = np.dtype((np.uint8, (4, 5)))
    ring = rings.create(ring_name, dt, 8)
    assert ring.dtype == dt
    prod, cons = ring.producer(), ring.consumer()
    data = (np.arange(12 * 20) % 256).astype(np.uint8).reshape(12, 4, 5)
    prod.push(data[0])        # record-shaped array
    prod.push(data[1:2])      # 1-record array
    assert prod.push_many(data[2:8]) == 6
    a = cons.pop()
    assert isinstance(a, np.ndarray) and a.shape == (4, 5) and a.dtype == np.uint8
    assert np.array_equal(a, data[0])
    assert np.array_equal(cons.pop(), data[1])
    got = []
    while len(got) < 6:
        b = cons.pop_many(6)
        assert b.shape[1:] == (4, 5) and b.dtype == np.uint8
        got.extend(b)
    assert np.array_equal(np.array(got), data[2:8])
    prod.push_many(data[8:])
    # the dtype survives attach (top-level subarray kept apart from the descr)
    att = rings.attach(ring_name)
    assert att.dtype == dt
    c2 = att.consumer()
    assert np.array_equal(c2.pop_many(4), data[8:])
    c2.close()
    assert_ring_works(ring, prod, cons)


@pytest.mark.parametrize("dtype", ["float64", "int32"])
def test_plain_dtypes(ring_name, dtype, rings):
    dt = np.dtype(dtype)
    ring = rings.create(ring_name, dt, 16)
    prod, cons = ring.producer(), ring.consumer()
    prod.push(3)                          # Python int
    prod.push(dt.type(-7))                # numpy scalar
    prod.push(np.array([11], dtype=dt))   # 1-record array
    prod.push(np.array(12, dtype=dt))     # 0-d array
    vals = np.arange(100, 110).astype(dt)
    assert prod.push_many(vals) == 10
    if dt.kind == "f":
        prod.push(2.5)
    x = cons.pop()
    assert type(x) is dt.type and x == 3
    assert cons.pop() == -7 and cons.pop() == 11 and cons.pop() == 12
    got = []
    while len(got) < 10:
        b = cons.pop_many(10)
        assert b.dtype == dt and b.ndim == 1
        got.extend(b.tolist())
    assert got == list(range(100, 110))
    if dt.kind == "f":
        y = cons.pop()
        assert type(y) is np.float64 and y == 2.5
    assert_ring_works(ring, prod, cons)


def test_wrap_around_varying_batches(ring_name, rings):
    seed = 12345
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    ring = rings.create(ring_name, np.dtype("<i8"), 8)
    assert ring.capacity == 8
    prod, cons = ring.producer(), ring.consumer()
    next_push = next_pop = 0
    fulls = empties = 0
    for _ in range(6000):
        op = rng.integers(0, 4)
        in_ring = next_push - next_pop
        if op == 0:  # single push
            if in_ring < 8:
                prod.push(next_push, timeout=0)
                next_push += 1
            else:
                with pytest.raises(shmring.Full):
                    prod.push(next_push, timeout=0)
                fulls += 1
        elif op == 1:  # batch push, may overflow the ring
            n = int(rng.integers(1, 13))
            batch = np.arange(next_push, next_push + n, dtype=np.int64)
            if n <= 8 - in_ring:
                assert prod.push_many(batch, timeout=0) == n
                next_push += n
            else:
                with pytest.raises(shmring.Full) as ei:
                    prod.push_many(batch, timeout=0)
                assert ei.value.pushed == 8 - in_ring
                next_push += ei.value.pushed
                fulls += 1
        elif op == 2:  # single pop
            if in_ring:
                assert int(cons.pop(timeout=0)) == next_pop
                next_pop += 1
            else:
                with pytest.raises(shmring.Empty):
                    cons.pop(timeout=0)
                empties += 1
        else:  # batch pop
            n = int(rng.integers(1, 13))
            if in_ring:
                got = cons.pop_many(n, timeout=0)
                assert 1 <= len(got) <= min(n, in_ring)
                assert got.tolist() == list(range(next_pop, next_pop + len(got)))
                next_pop += len(got)
            else:
                with pytest.raises(shmring.Empty):
                    cons.pop_many(n, timeout=0)
                empties += 1
    rest = []
    while next_pop + len(rest) < next_push:
        rest.extend(cons.pop_many(8, timeout=0).tolist())
    assert rest == list(range(next_pop, next_push))
    assert next_push > 100 * 8  # wrapped around many times
    assert fulls and empties
    st = ring.stats()
    assert st["pushed"] == next_push and st["popped"] == next_push and st["available"] == 0
    assert_ring_works(ring, prod, cons)


# ---- full / empty with and without timeouts --------------------------------------

def test_full_ring_timeouts(ring_name, rings):
    ring = rings.create(ring_name, np.dtype("<i8"), 5)
    assert ring.capacity == 8
    prod, cons = ring.producer(), ring.consumer()
    assert prod.push_many(np.arange(8, dtype=np.int64), timeout=0) == 8
    with pytest.raises(shmring.Full) as ei:
        prod.push(100, timeout=0)
    assert isinstance(ei.value, queue.Full)
    t0 = time.monotonic()
    with pytest.raises(shmring.Full):
        prod.push(100, timeout=0.2)
    assert time.monotonic() - t0 >= 0.15  # it did wait for the timeout
    with pytest.raises(shmring.Full) as ei:
        prod.push_many(np.arange(100, 110, dtype=np.int64), timeout=0)
    assert ei.value.pushed == 0
    assert cons.pop_many(3, timeout=0).tolist() == [0, 1, 2]
    t0 = time.monotonic()
    with pytest.raises(shmring.Full) as ei:
        prod.push_many(np.arange(100, 110, dtype=np.int64), timeout=0.2)
    assert time.monotonic() - t0 >= 0.15
    assert ei.value.pushed == 3
    out = []
    while len(out) < 8:
        out.extend(cons.pop_many(8, timeout=0).tolist())
    assert out == [3, 4, 5, 6, 7, 100, 101, 102]
    assert ring.stats()["pushed"] == 11
    assert_ring_works(ring, prod, cons)


def test_empty_ring_timeouts(ring_name, rings):
    ring = rings.create(ring_name, np.dtype("<i8"), 8)
    prod, cons = ring.producer(), ring.consumer()
    with pytest.raises(shmring.Empty) as ei:
        cons.pop(timeout=0)
    assert isinstance(ei.value, queue.Empty)
    with pytest.raises(shmring.Empty):
        cons.pop_many(4, timeout=0)
    for call in (lambda: cons.pop(timeout=0.2), lambda: cons.pop_many(4, timeout=0.2)):
        t0 = time.monotonic()
        with pytest.raises(shmring.Empty):
            call()
        assert time.monotonic() - t0 >= 0.15
    assert ring.stats()["popped"] == 0
    assert_ring_works(ring, prod, cons)


# ---- cross-process behaviour ----------------------------------------------------------

def test_push_many_larger_than_capacity_with_remote_consumer(mp_ctx, ring_name, tmp_path, rings, procs):
    ring = rings.create(ring_name, W.REC, 16)
    out = str(tmp_path / "drained.npy")
    child = procs(mp_ctx, W.drain_to_file, ring, out, 7)
    try:
        prod = ring.producer()
        recs = W.make_records(0, 20000)
        assert prod.push_many(recs, timeout=60) == 20000  # one call, 1250x capacity
        prod.close()
        W.join_all([child], 60)
    finally:
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    got = np.load(out)
    assert len(got) == 20000
    assert np.array_equal(got["seq"], np.arange(20000, dtype=np.uint64))
    assert W.n_bad(got) == 0


def test_pop_blocks_until_data_from_other_process(mp_ctx, ring_name, rings, procs):
    ring = rings.create(ring_name, np.dtype("<i8"), 4)
    cons = ring.consumer()
    values = [11, 22, 33, 44, 55, 66]
    child = procs(mp_ctx, W.delayed_producer, ring, 0.3, values)
    try:
        assert int(cons.pop(timeout=30)) == 11  # waits for the child's first push
        rest = [int(v) for v in cons]            # then drains until the child closes
    finally:
        W.join_all([child], 30)
    assert child.exitcode == 0
    assert rest == values[1:]
    with pytest.raises(shmring.Closed) as ei:
        cons.pop(timeout=0)
    assert ei.value.reason == "closed by producer"


def test_blocked_pop_uses_no_cpu(mp_ctx, ring_name, rings, procs):
    ring = rings.create(ring_name, np.dtype("<i8"), 8)
    ready, results = mp_ctx.Event(), mp_ctx.Queue()
    child = procs(mp_ctx, W.blocked_pop_cpu, ring, ready, results)
    try:
        assert ready.wait(30)
        # the child is asleep in the ring's futex, not spinning
        wait_until(lambda: ring.stats()["waiters"]["consumers"] == 1, what="consumer to sleep")
        time.sleep(1.0)
        prod = ring.producer()
        prod.push(42)
        value, wall, cpu = results.get(timeout=30)
    finally:
        W.join_all([child], 30)
    print(f"blocked pop: wall={wall:.3f}s cpu={cpu:.4f}s")
    assert child.exitcode == 0
    assert value == 42
    assert wall >= 0.9  # it really was blocked for about a second
    assert cpu < 0.5


def test_end_of_stream_seen_by_every_consumer(mp_ctx, ring_name, rings, procs):
    ring = rings.create(ring_name, np.dtype("<i8"), 64)
    results = mp_ctx.Queue()
    readies = [mp_ctx.Event() for _ in range(4)]
    kids = [procs(mp_ctx, W.iterate_until_end, ring, readies[i], results) for i in range(4)]
    try:
        for ev in readies:
            assert ev.wait(30)
        prod = ring.producer()
        m = 5000
        vals = np.arange(m, dtype=np.int64)
        i = 0
        while i < m:
            if i % 7 == 0:
                prod.push(vals[i], timeout=30)
                i += 1
            else:
                i += prod.push_many(vals[i:i + 97], timeout=30)
        prod.close()
        reports = [results.get(timeout=60) for _ in range(4)]
        W.join_all(kids, 30)
    finally:
        for p in kids:
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in kids] == [0, 0, 0, 0]
    assert sorted(r[0] for r in reports) == sorted(p.pid for p in kids)
    assert all(r[3] for r in reports)  # every consumer's loop ended
    assert sum(r[1] for r in reports) == m
    assert sum(r[2] for r in reports) == m * (m - 1) // 2
    st = ring.stats()
    assert st["closed"] and st["pushed"] == m and st["available"] == 0


def test_keyboard_interrupt_during_blocked_pop(mp_ctx, ring_name, rings, procs):
    import signal

    ring = rings.create(ring_name, np.dtype("<i8"), 8)
    ready, results = mp_ctx.Event(), mp_ctx.Queue()
    child = procs(mp_ctx, W.sigint_in_pop, ring, ready, results)
    try:
        assert ready.wait(30)
        wait_until(lambda: ring.stats()["waiters"]["consumers"] == 1, what="consumer to block in pop")
        time.sleep(0.2)
        sent = time.monotonic()
        os.kill(child.pid, signal.SIGINT)
        kind, when = results.get(timeout=5)
        got_at = time.monotonic()
        after = results.get(timeout=5)
    finally:
        W.join_all([child], 10)
    assert kind == "kbi", kind
    assert got_at - sent < 5
    assert after[0] == "empty-after"
    assert child.exitcode == 0
    assert ring.stats()["waiters"]["consumers"] == 0
    assert_ring_works(ring)


# ---- end of stream ----------------------------------------------------------------------

def test_closed_push_and_drained_pop(ring_name, rings):
    ring = rings.create(ring_name, np.dtype("<i8"), 8)
    prod, cons = ring.producer(), ring.consumer()
    prod.push_many(np.array([5, 6, 7], dtype=np.int64))
    prod.close()
    with pytest.raises(shmring.Closed):
        prod.push(8)
    with pytest.raises(shmring.Closed):
        prod.push_many(np.array([8, 9], dtype=np.int64))
    st = ring.stats()
    assert st["closed"] and st["close_reason"] == "closed by producer" and st["available"] == 3
    # what was published before close is still delivered
    assert int(cons.pop(timeout=0)) == 5
    assert cons.pop_many(5, timeout=0).tolist() == [6, 7]
    for call in (cons.pop, lambda: cons.pop(timeout=0), lambda: cons.pop(timeout=1),
                 lambda: cons.pop_many(3), lambda: cons.pop_many(3, timeout=0)):
        with pytest.raises(shmring.Closed) as ei:
            call()
        assert isinstance(ei.value, EOFError)
        assert ei.value.reason == "closed by producer"
    assert list(cons) == []
    # a new producer re-opens the stream
    assert_ring_works(ring, None, cons)
    assert ring.stats()["pushed"] == 4


def test_consumer_iteration_in_process(ring_name, rings):
    ring = rings.create(ring_name, np.dtype("<i8"), 32)
    prod, cons = ring.producer(), ring.consumer()
    prod.push_many(np.arange(20, dtype=np.int64))
    prod.close()
    assert [int(x) for x in cons] == list(range(20))


# ---- the producer role -------------------------------------------------------------------

def test_second_producer_same_process_is_busy(ring_name, rings):
    ring = rings.create(ring_name, np.dtype("<i8"), 8)
    prod = ring.producer()
    with pytest.raises(shmring.ProducerBusyError):
        ring.producer()
    other = rings.attach(ring_name)
    with pytest.raises(shmring.ProducerBusyError):
        other.producer()
    assert_ring_works(ring, prod)
    prod.close()
    assert_ring_works(other)  # role is free again once closed


def test_second_producer_from_other_process_is_busy(mp_ctx, ring_name, rings, procs):
    ring = rings.create(ring_name, np.dtype("<i8"), 8)
    results = mp_ctx.Queue()
    prod = ring.producer()
    child = procs(mp_ctx, W.try_producer, ring, results)
    try:
        answer = results.get(timeout=30)
    finally:
        W.join_all([child], 30)
    assert answer == "ProducerBusyError"
    assert_ring_works(ring, prod)
    prod.close()
    child = procs(mp_ctx, W.try_producer, ring, results)
    try:
        answer = results.get(timeout=30)
    finally:
        W.join_all([child], 30)
    assert answer == "ok"


def test_producer_held_by_other_process_is_busy(mp_ctx, ring_name, rings, procs):
    ring = rings.create(ring_name, np.dtype("<i8"), 8)
    ready, release, results = mp_ctx.Event(), mp_ctx.Event(), mp_ctx.Queue()
    cons = ring.consumer()
    child = procs(mp_ctx, W.hold_producer, ring, ready, release, results)
    try:
        assert ready.wait(30)
        assert ring.stats()["producer_pid"] == child.pid
        with pytest.raises(shmring.ProducerBusyError):
            ring.producer()
        assert int(cons.pop(timeout=10)) == 7
        release.set()
        assert results.get(timeout=30) == "released"
    finally:
        release.set()
        W.join_all([child], 30)
    assert child.exitcode == 0
    with pytest.raises(shmring.Closed):
        cons.pop(timeout=5)
    assert_ring_works(ring, None, cons)


# ---- pickling -----------------------------------------------------------------------------

def test_ring_pickles_in_process(ring_name, rings):
    dt = np.dtype([("v", "<i8"), ("w", "<f4", (3,))])
    ring = rings.create(ring_name, dt, 16)
    copy = rings.add(pickle.loads(pickle.dumps(ring)))
    assert copy is not ring
    assert (copy.name, copy.dtype, copy.capacity, copy.mode, copy.overflow) == (
        ring.name, dt, 16, "queue", "block")
    prod, cons = ring.producer(), copy.consumer()
    prod.push((5, [1, 2, 3]))
    r = cons.pop(timeout=5)
    assert int(r["v"]) == 5 and r["w"].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_ring_pickles_into_children(method, ring_name, rings, procs):
    ctx = multiprocessing.get_context(method)
    dt = np.dtype([("v", "<i8")])
    ring = rings.create(ring_name, dt, 16)
    results = ctx.Queue()
    child = procs(ctx, W.pickled_ring_worker, ring, results)
    try:
        prod = ring.producer()
        recs = np.zeros(100, dtype=dt)
        recs["v"] = np.arange(100) * 3
        assert prod.push_many(recs, timeout=30) == 100
        prod.close()
        info, got = results.get(timeout=60)
    finally:
        W.join_all([child], 30)
    assert child.exitcode == 0
    assert info == (ring_name, str(dt), 16, "queue", "block")
    assert got == list(range(0, 300, 3))


# ---- stats ----------------------------------------------------------------------------------

def test_stats_counts(ring_name, rings):
    ring = rings.create(ring_name, np.dtype("<i8"), 16)
    st = ring.stats()
    assert (st["pushed"], st["popped"], st["available"]) == (0, 0, 0)
    assert st["consumers"] == [] and st["producer_pid"] is None and not st["closed"]
    assert st["capacity"] == 16 and st["record_size"] == 8 and st["mode"] == "queue"
    assert st["creator_pid"] == os.getpid() and st["layout_version"] == _ring.LAYOUT_VERSION
    prod = ring.producer()
    c1, c2 = ring.consumer(), ring.consumer()
    assert ring.stats()["producer_pid"] == os.getpid()
    prod.push_many(np.arange(10, dtype=np.int64))
    prod.push(10)
    assert int(c1.pop()) == 0
    got = 1
    while got < 3:
        got += len(c1.pop_many(3 - got))
    assert c2.pop_many(2).tolist() == [3, 4]
    st = ring.stats()
    assert (st["pushed"], st["popped"], st["available"]) == (11, 5, 6)
    by_index = {c["index"]: c for c in st["consumers"]}
    assert by_index[c1.index]["popped"] == 3 and by_index[c2.index]["popped"] == 2
    assert all(c["pid"] == os.getpid() and c["alive"] for c in st["consumers"])
    assert c1.popped == 3 and c2.popped == 2
    # another attachment sees the same counters
    st2 = rings.attach(ring_name).stats()
    assert (st2["pushed"], st2["popped"], st2["available"]) == (11, 5, 6)
    more = []
    while len(more) < 3:
        more.extend(c2.pop_many(3 - len(more)).tolist())
    assert more == [5, 6, 7]
    assert int(c1.pop()) == 8
    st = ring.stats()
    assert (st["pushed"], st["popped"], st["available"]) == (11, 9, 2)
    prod.close()
    st = ring.stats()
    assert st["closed"] and st["close_reason"] == "closed by producer"


def test_stats_popped_keeps_records_of_departed_consumers(ring_name, rings):
    """pushed == popped + available must hold after a consumer leaves the ring."""
    ring = rings.create(ring_name, np.dtype("<i8"), 8)
    prod = ring.producer()
    prod.push_many(np.arange(5, dtype=np.int64))
    c1 = ring.consumer()
    assert int(c1.pop()) == 0 and int(c1.pop()) == 1
    c1.close()
    st = ring.stats()
    assert st["pushed"] == 5 and st["available"] == 3
    assert st["popped"] == 2, f"stats() forgot the records of a closed consumer: {st['popped']}"
    c2 = ring.consumer()
    assert int(c2.pop()) == 2
    st = ring.stats()
    assert (st["pushed"], st["popped"], st["available"]) == (5, 3, 2)


# ---- create / attach -------------------------------------------------------------------------

def test_exist_ok_attaches_to_compatible_ring(ring_name, rings):
    dt = np.dtype([("a", "<i4"), ("b", "<f8")])
    ring = rings.create(ring_name, dt, 100)
    same = rings.create(ring_name, dt, 128, exist_ok=True)
    again = rings.create(ring_name, dt, 100, exist_ok=True)
    assert same.capacity == again.capacity == 128 and same.dtype == dt
    prod, cons = ring.producer(), same.consumer()
    prod.push((1, 2.5))
    r = cons.pop(timeout=5)
    assert (int(r["a"]), float(r["b"])) == (1, 2.5)
    assert again.stats()["pushed"] == 1


def test_default_permissions_are_0600(ring_name, rings):
    old = os.umask(0)
    try:
        rings.create(ring_name, np.dtype("<i8"), 8)
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(f"/dev/shm/shmr-{ring_name}").st_mode)
    assert mode == 0o600, oct(mode)


def test_explicit_permissions_ignore_umask(ring_name, rings):
    old = os.umask(0o077)
    try:
        ring = rings.create(ring_name, np.dtype("<i8"), 8, permissions=0o640)
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(f"/dev/shm/shmr-{ring_name}").st_mode)
    assert mode == 0o640, oct(mode)
    assert_ring_works(ring)


def test_unlink_keeps_mapped_ring_working(ring_name, rings):
    ring = rings.create(ring_name, np.dtype("<i8"), 8)
    prod, cons = ring.producer(), ring.consumer()
    ring.unlink()
    assert not os.path.exists(f"/dev/shm/shmr-{ring_name}")
    with pytest.raises(FileNotFoundError):
        rings.attach(ring_name)
    assert_ring_works(ring, prod, cons)


@pytest.mark.parametrize("dtype", ["uint8", "uint64"])
def test_push_python_int_into_unsigned_ring(ring_name, rings, dtype):
    """push() takes a scalar for plain dtypes; a non-negative Python int must fit an
    unsigned ring just as it fits a signed one."""
    dt = np.dtype(dtype)
    ring = rings.create(ring_name, dt, 8)
    prod, cons = ring.producer(), ring.consumer()
    prod.push(dt.type(1))  # the numpy scalar path works
    assert int(cons.pop(timeout=0)) == 1
    prod.push(5)
    x = cons.pop(timeout=0)
    assert type(x) is dt.type and x == 5
    assert_ring_works(ring, prod, cons)


_GC_CYCLE_SCRIPT = r"""
import gc, sys
import numpy as np
import shmring
name = sys.argv[1]
r = shmring.Ring.create(name, np.int64, 8)
shmring.unlink(name)
h = r.producer() if sys.argv[2] == "producer" else r.consumer()
holder = [h]
holder.append(holder)  # a garbage cycle holding the live handle (like a traceback would)
del h, r, holder
gc.collect()
print("survived")
"""


@pytest.mark.parametrize("kind", ["producer", "consumer"])
def test_live_handle_in_garbage_cycle_is_collected_safely(ring_name, kind):
    """A producer/consumer that is collected as part of a reference cycle, after its
    Ring, must not crash the interpreter. Run in a subprocess: the failure mode is
    a segfault."""
    import subprocess
    import sys

    proc = run([sys.executable, "-c", _GC_CYCLE_SCRIPT, ring_name, kind],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"exit code {proc.returncode}; stderr: {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "survived"
