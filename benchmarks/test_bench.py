"""Hot-path micro-benchmarks of shmring within one process, for catching regressions.

    .venv/bin/python -m pytest benchmarks/ --benchmark-only
    .venv/bin/python -m pytest benchmarks/ --benchmark-only --benchmark-autosave      # keep a baseline
    .venv/bin/python -m pytest benchmarks/ --benchmark-only --benchmark-compare      # compare with it

Every case pushes and pops on the same ring in the same process, so what is
measured is the cost of the calls themselves (Python binding + C core + the
copies), without any cross-core traffic; benchmarks/compare.py measures the
two-process figures. Cases named `*_x1000` time 1000 calls per round (the ring
is drained or filled outside the timed part); divide by 1000 for one call.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

import shmring

pytest.importorskip("pytest_benchmark")

REC = np.dtype([("seq", "<u8"), ("ts", "<u8"), ("px", "<f8", (6,))])
FRAME = np.dtype((np.uint8, (1080, 1920, 3)))
BATCH = 1024
CAPACITY = 4096
MODES = ["queue", "broadcast"]

_ids = itertools.count()


def _name() -> str:
    return f"tb{os.getpid() % 100000}-{next(_ids)}"


class Pair:
    """A ring with its producer and one consumer, unlinked at teardown."""

    def __init__(self, dtype, capacity, mode):
        self.name = _name()
        self.ring = shmring.Ring.create(self.name, dtype, capacity, mode=mode)
        self.prod = self.ring.producer()
        self.cons = self.ring.consumer(start="oldest")

    def drain(self):
        try:
            while True:
                self.cons.pop_many(CAPACITY, timeout=0)
        except shmring.Empty:
            pass

    def fill(self, n):
        self.drain()
        self.prod.push_many(np.zeros(n, self.ring.dtype))

    def close(self):
        self.ring.close()
        try:
            shmring.unlink(self.name)
        except FileNotFoundError:
            pass


@pytest.fixture(params=MODES)
def pair(request):
    p = Pair(REC, CAPACITY, request.param)
    yield p
    p.close()


@pytest.fixture
def frame_pair():
    p = Pair(FRAME, 4, "queue")
    yield p
    p.close()


def _rec():
    a = np.zeros(1, REC)
    a["px"] = np.arange(6)
    return a[0]


# ---- one record per call ------------------------------------------------------------


def test_push_pop(benchmark, pair):
    """push() then pop() of one 64-byte record: the round trip through the ring."""
    benchmark.group = "1 record"
    push, pop, rec = pair.prod.push, pair.cons.pop, _rec()

    def run():
        push(rec)
        return pop()

    out = benchmark(run)
    assert out["px"][5] == 5


def test_push_x1000(benchmark, pair):
    benchmark.group = "1 record"
    push, rec = pair.prod.push, _rec()

    def run():
        for _ in range(1000):
            push(rec)

    benchmark.pedantic(run, setup=pair.drain, rounds=300, warmup_rounds=5)


def test_pop_x1000(benchmark, pair):
    benchmark.group = "1 record"
    pop = pair.cons.pop

    def run():
        for _ in range(1000):
            pop()

    benchmark.pedantic(run, setup=lambda: pair.fill(1000), rounds=300, warmup_rounds=5)


def test_push_tuple_pop(benchmark, pair):
    """push() of a plain tuple: the conversion path."""
    benchmark.group = "1 record"
    push, pop = pair.prod.push, pair.cons.pop
    t = (1, 2, np.arange(6.0))

    def run():
        push(t)
        return pop()

    benchmark(run)


def test_pop_empty_timeout0(benchmark, pair):
    """pop(timeout=0) on an empty ring: the cost of a failed poll."""
    benchmark.group = "1 record"
    pop = pair.cons.pop

    def run():
        try:
            pop(timeout=0)
        except shmring.Empty:
            pass

    benchmark(run)


# ---- 1024 records per call ----------------------------------------------------------


def test_push_many_pop_many(benchmark, pair):
    benchmark.group = "1024 records"
    arr = np.zeros(BATCH, REC)
    push_many, pop_many = pair.prod.push_many, pair.cons.pop_many

    def run():
        push_many(arr)
        return pop_many(BATCH)

    out = benchmark(run)
    assert len(out) == BATCH


def test_push_many(benchmark, pair):
    benchmark.group = "1024 records"
    arr = np.zeros(BATCH, REC)
    push_many = pair.prod.push_many
    # drained between rounds (outside the timing) so the ring never fills
    benchmark.pedantic(lambda: push_many(arr), setup=pair.drain, rounds=2000, warmup_rounds=20)


def test_pop_many(benchmark, pair):
    benchmark.group = "1024 records"
    pop_many = pair.cons.pop_many
    out = benchmark.pedantic(lambda: pop_many(BATCH), setup=lambda: pair.fill(BATCH), rounds=2000,
                             warmup_rounds=20)
    assert len(out) == BATCH


def test_reserve_view(benchmark, pair):
    """Zero-copy both ways: reserve(1024) filled with one vector store, view(1024) read by one reduction."""
    benchmark.group = "1024 records"
    reserve, view = pair.prod.reserve, pair.cons.view

    def run():
        with reserve(BATCH) as a:
            a["seq"] = 7
        with view(BATCH) as v:
            return int(v["seq"][-1])

    assert benchmark(run) == 7


def test_reserve(benchmark, pair):
    """reserve(1024) + publish, nothing written: the bookkeeping alone."""
    benchmark.group = "1024 records"
    reserve = pair.prod.reserve

    def run():
        with reserve(BATCH):
            pass

    benchmark.pedantic(run, setup=pair.drain, rounds=2000, warmup_rounds=20)


def test_view(benchmark, pair):
    """view(1024) + release, nothing read: the bookkeeping alone."""
    benchmark.group = "1024 records"
    view = pair.cons.view

    def run():
        with view(BATCH):
            pass

    benchmark.pedantic(run, setup=lambda: pair.fill(BATCH), rounds=2000, warmup_rounds=20)


# ---- 6 MB frames ---------------------------------------------------------------------------


def test_frame_push_pop(benchmark, frame_pair):
    """One 6 MB frame copied in and out (pop() allocates the result)."""
    benchmark.group = "6 MB frame"
    src = np.full(FRAME.shape, 3, np.uint8)
    push, pop = frame_pair.prod.push, frame_pair.cons.pop

    def run():
        push(src)
        return pop()

    out = benchmark(run)
    assert out.shape == FRAME.shape


def test_frame_reserve_view(benchmark, frame_pair):
    """One 6 MB frame handed over in place (a marker byte written and read)."""
    benchmark.group = "6 MB frame"
    reserve, view = frame_pair.prod.reserve, frame_pair.cons.view

    def run():
        with reserve(1) as a:
            a[0, 0, 0, 0] = 9
        with view(1) as v:
            return int(v[0, 0, 0, 0])

    assert benchmark(run) == 9
