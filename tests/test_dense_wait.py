"""A queue consumer that has caught up with a dense stream (its last waits each ended
within 300 ns) waits for a chunk of 32 records, looking once a microsecond, for at most
4 us, before it takes records one by one again (csrc/shmring.c, shmr_consumer_wait):
a spin that reads head at every pause takes head's line and the newest record's away
from the producer as it writes them. Checked with real processes on what arrived
(every record, in order, intact) and on the consumer's counted waits; a record that
arrives alone after a dense stream must still come at once (a blocking pop with a
timeout, never a timed assertion on speed)."""

from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np

from _cpus import pinned, two_cpus
from _records import REC, make_records, n_bad

ROUNDS = 3
N = 100_000
GAP = 0.2e-6  # per record, besides the push


def _dense_then_alone_producer(ring, cpu, go, done, results):
    """Pinned to cpu: per round, N records one per call, each followed by GAP of busy
    work, then, after 2 ms of nothing, one record alone."""
    os.sched_setaffinity(0, {cpu})
    prod = ring.producer()
    go.wait(60)
    push, clock, seq = prod.push, time.perf_counter, 0
    for _ in range(ROUNDS):
        for r in make_records(seq, N):
            push(r, timeout=30)
            t = clock() + GAP  # a little slower than the consumer: it catches up, then waits briefly
            while clock() < t:
                pass
        seq += N
        time.sleep(0.002)
        push(make_records(seq, 1)[0], timeout=30)
        seq += 1
    results.put(seq)
    done.wait(60)  # kept open until the consumer has everything: closing ends the stream


def test_dense_stream_then_a_record_alone(rings, ring_name, procs):
    cpus = two_cpus("the consumer catches up with a producer running beside it")
    ring = rings.create(ring_name, REC, 16384)
    ctx = multiprocessing.get_context("fork")
    go, done, results = ctx.Event(), ctx.Event(), ctx.Queue()
    cons = ring.consumer(start="oldest")  # the default spin budget: the waits spin first
    p = procs(ctx, _dense_then_alone_producer, ring, cpus[0], go, done, results)
    with pinned(cpus[1]):
        pop, got, alone = cons.pop, [], []
        go.set()
        for _ in range(ROUNDS):
            for _ in range(N):
                got.append(pop(timeout=30))
            # the producer pauses 2 ms, then pushes one record: it must come within the
            # 0.5 s (a wait left waiting for a chunk would hold it), whatever state the dense
            # stream left the wait in (generous: a wake-up on a loaded machine is slow)
            got.append(pop(timeout=0.5))
            alone.append(int(got[-1]["seq"]))
    assert results.get(timeout=30) == ROUNDS * (N + 1)
    a = np.array(got, dtype=REC)
    assert len(a) == ROUNDS * (N + 1)
    assert np.array_equal(a["seq"], np.arange(len(a), dtype=np.uint64))
    assert n_bad(a) == 0
    assert alone == [(k + 1) * (N + 1) - 1 for k in range(ROUNDS)]
    assert cons.try_pop() is None  # nothing more than was pushed
    done.set()
    st = cons._wait_stats()
    # the path under test was taken: short waits in a row, then waits for a chunk (which
    # a producer this slow never fills within 4 us: each ends the dense run)
    assert 0 < st["dense"] < st["waits"], st
    assert st["dense_won"] <= st["dense"], st
    cons.close()
    p.join(30)
