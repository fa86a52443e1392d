"""Top-level worker functions for child processes (importable under spawn/forkserver).

Every worker reports through its exit code and, where it has data, a small file
or a multiprocessing queue: exit code 0 means "ran to the end as expected".
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time

import numpy as np

import shmring
from _records import REC, make_records, n_bad  # noqa: F401 - the one record scheme, re-exported


# ---- exactly-once consumer ----------------------------------------------------

def eo_consumer(ring, out_path: str, seed: int, max_batch: int) -> None:
    """Drain the queue until Closed, mixing pop() and pop_many() of random sizes
    (1..max_batch); save the received seqs, the number of records failing their
    checksum and call counts to out_path (.npz). Exit code 0 = clean end of stream."""
    rng = np.random.default_rng(seed)
    cons = ring.consumer()
    chunks = []  # in arrival order; single pops become 1-record arrays
    singles = 0
    # pre-drawn plan keeps the hot loop cheap: 0 -> pop(), n > 0 -> pop_many(n)
    plan = rng.integers(1, max_batch + 1, size=1 << 16)
    plan[rng.random(1 << 16) < 1 / 16] = 0
    k = 0
    try:
        while True:
            n = plan[k & 0xFFFF]
            k += 1
            if n == 0:
                rec = cons.pop(timeout=60)
                assert type(rec) is np.void and rec.dtype == REC
                chunks.append(np.array([rec], dtype=REC))
                singles += 1
            else:
                got = cons.pop_many(n, timeout=60)
                assert 1 <= len(got) <= n and got.dtype == REC
                chunks.append(got)
    except shmring.Closed as exc:
        assert exc.reason == "closed by producer", exc.reason
    recs = np.concatenate(chunks) if chunks else np.empty(0, dtype=REC)
    np.savez(out_path, seqs=recs["seq"], bad=n_bad(recs), singles=singles, calls=k - 1)
    cons.close()
    ring.close()


# ---- generic helpers ------------------------------------------------------------

def drain_to_file(ring, out_path: str, batch: int, timeout: float = 60.0) -> None:
    """Pop everything until Closed with pop_many(batch) and save it to out_path (.npy)."""
    cons = ring.consumer()
    chunks = []
    try:
        while True:
            chunks.append(cons.pop_many(batch, timeout=timeout))
    except shmring.Closed:
        pass
    arr = np.concatenate(chunks) if chunks else np.empty(0, dtype=ring.dtype)
    np.save(out_path, arr)
    cons.close()


def iterate_until_end(ring, ready, results) -> None:
    """Iterate a consumer to its natural end; report (pid, count, sum, ended)."""
    cons = ring.consumer()
    ready.set()
    n = 0
    total = 0
    for rec in cons:
        n += 1
        total += int(rec)
    # reached only when iteration stopped (StopIteration from Closed)
    results.put((os.getpid(), n, total, True))
    cons.close()


def blocked_pop_cpu(ring, ready, results) -> None:
    """Block in pop() until the parent pushes; report (value, wall, cpu seconds)."""
    cons = ring.consumer(spin=20e-6)
    ready.set()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    rec = cons.pop(timeout=30)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    results.put((int(rec), wall, cpu))
    cons.close()


def sigint_in_pop(ring, ready, results) -> None:
    """Block in pop() with no timeout; the parent sends SIGINT. Exit 0 only if a
    KeyboardInterrupt came out of pop()."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cons = ring.consumer()
    try:
        ready.set()
        cons.pop()  # no timeout: only a signal can end this
    except KeyboardInterrupt:
        results.put(("kbi", time.monotonic()))
        # the consumer is still usable afterwards
        try:
            cons.pop(timeout=0)
        except shmring.Empty:
            results.put(("empty-after", None))
        cons.close()
        sys.exit(0)
    results.put(("returned", None))
    sys.exit(2)


def delayed_producer(ring, delay: float, values) -> None:
    """Wait, then push values one by one and close the stream."""
    time.sleep(delay)
    prod = ring.producer()
    for v in values:
        prod.push(v, timeout=30)
    prod.close()


def try_producer(ring, results) -> None:
    """Try to take the producer role; report the exception class name (or 'ok')."""
    try:
        p = ring.producer()
    except shmring.ProducerBusyError:
        results.put("ProducerBusyError")
        return
    except Exception as exc:  # reported, the parent asserts on it
        results.put(f"{type(exc).__name__}: {exc}")
        return
    results.put("ok")
    p.close()


def hold_producer(ring, ready, release, results) -> None:
    """Take the producer role, push one record, hold the role until release is set."""
    prod = ring.producer()
    prod.push(7)
    ready.set()
    release.wait(30)
    results.put("released")
    prod.close()


def pickled_ring_worker(ring, results) -> None:
    """Report what the received Ring looks like, pop what the parent pushed,
    push the doubled values back through a second ring-independent path."""
    info = (ring.name, str(ring.dtype), ring.capacity, ring.mode, ring.overflow)
    cons = ring.consumer()
    got = []
    try:
        for rec in cons:
            got.append(int(rec["v"]))
    finally:
        cons.close()
    results.put((info, got))
    ring.close()


def join_all(procs, timeout: float = 60.0) -> None:
    """(parent side) Join child processes; kill them and fail if any is still
    running after timeout."""
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
        p.join(5)
    assert not alive, f"child processes still running after {timeout}s: {[p.pid for p in alive]}"


# ---- spin policy (csrc/spin_policy.h) -------------------------------------------

def pinned_batch_producer(ring, cpu: int, n_batches: int, batch: int, results) -> None:
    """Pinned to cpu, push n_batches arrays of batch records (seq 0, 1, ...), then close
    the stream; put ("p", the producer's wait counts)."""
    os.sched_setaffinity(0, {cpu})
    prod = ring.producer(spin=20e-6)
    for i in range(n_batches):
        prod.push_many(make_records(i * batch, batch), timeout=30)
    results.put(("p", prod._wait_stats()))
    prod.close()
    ring.close()


def pinned_batch_consumer(ring, cpu: int, batch: int, ready, results) -> None:
    """Pinned to cpu, pop_many(batch) until Closed; put ("c", wait counts, records
    received, records out of order, records failing their checksum)."""
    os.sched_setaffinity(0, {cpu})
    cons = ring.consumer(start="oldest", spin=20e-6)
    ready.set()
    got = out_of_order = bad = 0
    try:
        while True:
            a = cons.pop_many(batch, timeout=30)
            out_of_order += int(np.count_nonzero(a["seq"] != np.arange(got, got + len(a), dtype=np.uint64)))
            bad += n_bad(a)
            got += len(a)
    except shmring.Closed:
        pass
    results.put(("c", cons._wait_stats(), got, out_of_order, bad))
    cons.close()
    ring.close()


def pinned_idle_producer(ring, cpu: int, ready, done) -> None:
    """Pinned to cpu, hold the ring's producer role without pushing until done is set."""
    os.sched_setaffinity(0, {cpu})
    prod = ring.producer()
    ready.set()
    done.wait(120)
    prod.close()
    ring.close()


# ---- a producer on a full ring (csrc/shmr_internal.h, shmr_wait_chunk) ------------

def pinned_pop_consumer(ring, cpu: int, n: int, work: float, ready, go, results) -> None:
    """Pinned to cpu, join, then once go is set pop n records one per call, busy for
    `work` seconds after each (checked afterwards); put (records received, records out
    of order, records failing their checksum)."""
    os.sched_setaffinity(0, {cpu})
    cons = ring.consumer(start="oldest")
    ready.set()
    go.wait(60)
    pop, clock = cons.pop, time.perf_counter
    recs = []
    for _ in range(n):
        recs.append(pop(timeout=30))
        t = clock() + work
        while clock() < t:
            pass
    a = np.array(recs, dtype=REC)
    results.put((len(a), int(np.count_nonzero(a["seq"] != np.arange(n, dtype=np.uint64))), n_bad(a)))
    cons.close()
    ring.close()


def one_then_drain_consumer(ring, ready, go, popped, drain, results) -> None:
    """Join; once go is set pop one record and set popped; once drain is set pop
    until Closed. Put (records received, out of order, failing their checksum)."""
    cons = ring.consumer(start="oldest")
    ready.set()
    go.wait(60)
    first = np.array([cons.pop(timeout=30)], dtype=REC)
    seqs = [int(first["seq"][0])]
    bad = n_bad(first)
    popped.set()
    drain.wait(60)
    try:
        while True:
            a = cons.pop_many(64, timeout=30)
            seqs.extend(int(s) for s in a["seq"])
            bad += n_bad(a)
    except shmring.Closed:
        pass
    results.put((len(seqs), sum(s != i for i, s in enumerate(seqs)), bad))
    cons.close()
    ring.close()
