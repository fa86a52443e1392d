"""Ring.create(..., evict_after=SECONDS): a live consumer that holds a block-mode
producer back that long is evicted, counted, and told so when it returns.

Real processes stopped with real SIGSTOP, real futex waits; what arrived is
checked by sequence number and checksum, and the accounting is exact:
popped + abandoned == pushed, the evicted consumer's queue batch is delivered
by nobody. The C-level races (a stopped consumer resuming against a reclaimed
claim, a producer killed mid-eviction) are pinned by
verify/interleavings/evict_vs_release.c."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time

import numpy as np
import pytest

import shmring
from _evict_workers import stopper_broadcast, stopper_queue, survivor
from _procs import run
from _records import REC, make_records

EVICT = 0.3


def wait_stopped(pid: int, timeout: float = 30.0) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not stop")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_stopped_broadcast_consumer_is_evicted(method, ring_name, rings, procs):
    ctx = mp.get_context(method)
    ring = rings.create(ring_name, REC, 64, mode="broadcast", evict_after=EVICT)
    out = ctx.Queue()
    r1, r2 = ctx.Event(), ctx.Event()
    surv = procs(ctx, survivor, ring, r1, out)
    stopper = procs(ctx, stopper_broadcast, ring, r2, 100, out)
    assert r1.wait(30) and r2.wait(30)
    n = 20_000
    with ring.producer() as prod:
        assert prod.push_many(make_records(0, 100), timeout=30) == 100
        wait_stopped(stopper.pid)
        t0 = time.monotonic()
        assert prod.push_many(make_records(100, n - 100), timeout=30) == n - 100
        took = time.monotonic() - t0
        st = ring.stats()
        assert st["evicted_stalled"] == 1 and st["evict_after_ms"] == EVICT * 1000
        evicted = [c for c in st["consumers"] if c["evicted"]]
        assert [c["pid"] for c in evicted] == [stopper.pid]
        info = run([sys.executable, "-m", "shmring", "info", ring_name], capture_output=True, text=True)
        assert "evicted_stalled 1" in " ".join(info.stdout.split()) and "evicted" in info.stdout
    os.kill(stopper.pid, signal.SIGCONT)
    reports = {r[0]: r for r in (out.get(timeout=60), out.get(timeout=60))}
    surv.join(30)
    stopper.join(30)
    print(f"\nproducer held back {took:.2f} s (evict_after {EVICT} s), then went on without the stopped consumer")
    assert took >= EVICT * 0.9
    _, seqs, bad = reports["survivor"]
    assert bad == 0 and np.array_equal(seqs, np.arange(n, dtype=np.uint64))
    _, got, bad, count, msg, again = reports["evicted"]
    assert bad == 0 and np.array_equal(got, np.arange(100, dtype=np.uint64))
    assert count == 0 and "evicted" in msg and "evict_after=0.3" in msg and again


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_stopped_queue_consumer_loses_its_claim_exactly_once(method, ring_name, rings, procs):
    ctx = mp.get_context(method)
    ring = rings.create(ring_name, REC, 64, evict_after=EVICT)
    out = ctx.Queue()
    r2 = ctx.Event()
    hold = 16
    prod = ring.producer()
    assert prod.push_many(make_records(0, 64), timeout=30) == 64
    stopper = procs(ctx, stopper_queue, ring, r2, hold, out)
    assert r2.wait(30)
    wait_stopped(stopper.pid)  # inside its view of records 0..15
    r1 = ctx.Event()
    surv = procs(ctx, survivor, ring, r1, out)
    assert r1.wait(30)
    n = 5_000
    t0 = time.monotonic()
    assert prod.push_many(make_records(64, n - 64), timeout=30) == n - 64
    took = time.monotonic() - t0
    prod.close()
    os.kill(stopper.pid, signal.SIGCONT)
    reports = {r[0]: r for r in (out.get(timeout=60), out.get(timeout=60))}
    surv.join(30)
    stopper.join(30)
    st = ring.stats()
    print(f"\nproducer held back {took:.2f} s (evict_after {EVICT} s); abandoned {st['abandoned']}, "
          f"popped {st['popped']}, pushed {st['pushed']}")
    _, held, _, count, msg, again = reports["evicted"]
    assert np.array_equal(held, np.arange(hold, dtype=np.uint64))
    assert count == hold and f"the {hold} records it held were taken back" in msg and again
    _, seqs, bad = reports["survivor"]
    assert bad == 0
    # every record exactly once, except the held batch, delivered by nobody
    assert np.array_equal(np.sort(seqs), np.arange(hold, n, dtype=np.uint64))
    assert st["evicted_stalled"] == 1 and st["abandoned"] == hold
    assert st["popped"] + st["abandoned"] == st["pushed"] == n and st["available"] == 0
    assert took >= EVICT * 0.9


def test_never_popping_consumer_is_evicted_by_a_polling_producer(ring_name, rings):
    """A live consumer that simply never reads (not stopped): a producer polling
    with timeout=0 is held back evict_after, sees the stall named in Full, then
    goes on; the consumer's next call raises Evicted."""
    ring = rings.create(ring_name, np.int64, 8, mode="broadcast", evict_after=EVICT)
    idle = ring.consumer()
    idx = ring.stats()["consumers"][0]["index"]
    prod = ring.producer(liveness_interval=0.02)
    for i in range(8):
        prod.push(i)
    t0 = time.monotonic()
    messages = set()
    pushed = 8
    while pushed < 100:
        try:
            prod.push(pushed, timeout=0)
            pushed += 1
        except shmring.Full as exc:
            messages.add(str(exc).split(", stalled")[0])
            time.sleep(0.005)
        assert time.monotonic() - t0 < 10, "the producer was never let go"
    took = time.monotonic() - t0
    assert EVICT * 0.9 <= took < EVICT + 5
    assert any(f"held back by consumer #{idx} (pid {os.getpid()}" in m for m in messages), messages
    with pytest.raises(shmring.Evicted) as ei:
        idle.pop(timeout=0)
    assert ei.value.count == 0 and isinstance(ei.value, shmring.Lagged)
    assert ring.stats()["evicted_stalled"] == 1
    idle.close()
    assert ring.stats()["consumers"] == []
    fresh = ring.consumer(start="oldest")
    assert [int(x) for x in fresh.pop_many(8, timeout=0)] == list(range(92, 100))


def test_without_evict_after_nobody_is_evicted(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8, mode="broadcast")
    idle = ring.consumer()
    prod = ring.producer(liveness_interval=0.02)
    prod.push_many(np.arange(8))
    with pytest.raises(shmring.Full, match="held back by consumer #0"):
        prod.push(8, timeout=0.3)
    st = ring.stats()
    assert st["evicted_stalled"] == 0 and st["evict_after_ms"] == 0
    assert int(idle.pop(timeout=0)) == 0


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(evict_after=0), ValueError, "positive"),
    (dict(evict_after=-1.0), ValueError, "positive"),
    (dict(evict_after=float("nan")), ValueError, "positive"),
    (dict(evict_after=float("inf")), ValueError, "positive"),
    (dict(evict_after=True), TypeError, "evict_after"),
    (dict(evict_after="1"), TypeError, "evict_after"),
    (dict(evict_after=1.0, mode="broadcast", overflow="overwrite"), ValueError, "block mode"),
    (dict(evict_after=1e9), ValueError, "30 days"),
])
def test_evict_after_arguments(ring_name, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        shmring.Ring.create(ring_name, np.int64, 8, **kwargs)


def test_evict_after_refused_on_message_rings(ring_name):
    with pytest.raises(ValueError, match="message rings"):
        shmring.Ring.create(ring_name, nbytes=4096, evict_after=1.0)


def test_exist_ok_compares_evict_after(ring_name):
    ring = shmring.Ring.create(ring_name, dtype=np.int64, capacity=8, evict_after=2.0)
    try:
        same = shmring.Ring.create(ring_name, dtype=np.int64, capacity=8, evict_after=2.0, exist_ok=True)
        same.close()
        for other in (None, 3.0):
            with pytest.raises(FileExistsError, match=r"evict_after=2\.0, not as .*evict_after=" + str(other)):
                shmring.Ring.create(ring_name, dtype=np.int64, capacity=8, evict_after=other, exist_ok=True)
    finally:
        ring.close()
