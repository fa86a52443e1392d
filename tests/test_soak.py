"""Opt-in soak: >= 10^8 checksummed records through 1 producer + 4 consumers per mode.

    SHMRING_SOAK=1 ./test.sh tests/test_soak.py -s         (SHMRING_SOAK_RECORDS to change the count)

Each run prints lost / duplicated / torn counts; all must be 0, and in overwrite
mode the records a consumer missed must equal its dropped counter exactly. The
default suite runs the same checks on 2*10^6 records.
"""

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

import shmring
from _records import REC, fill, n_bad

pytestmark = pytest.mark.timeout(7200)  # soak runs are long by design

SOAK = bool(os.environ.get("SHMRING_SOAK"))
N = int(os.environ.get("SHMRING_SOAK_RECORDS", 100_000_000 if SOAK else 2_000_000))
BATCH = 1024
CTX = mp.get_context("fork")


def consumer_main(ring, mode, ready, out):
    c = ring.consumer(start="oldest")
    ready.set()
    bad = 0
    ranges = []  # queue mode: the contiguous position ranges this consumer got
    count = 0
    expect = 0  # broadcast: the next sequence number
    gaps = 0
    disorder = 0
    while True:
        try:
            a = c.pop_many(BATCH)
        except shmring.Closed:
            break
        bad += n_bad(a)
        seq = a["seq"]
        count += len(a)
        if mode == "queue":
            # a claim is a contiguous run of positions, and seq == position here
            if seq[-1] - seq[0] != len(seq) - 1:
                disorder += 1
            ranges.append((int(seq[0]), len(seq)))
        else:
            if seq[0] < expect or np.any(np.diff(seq.astype(np.int64)) <= 0):
                disorder += 1
            gaps += int(seq[-1]) + 1 - expect - len(seq)
            expect = int(seq[-1]) + 1
    out.put((mode, bad, count, disorder, gaps, c.dropped, expect, np.array(ranges, dtype=np.int64)))


@pytest.mark.parametrize("mode,overflow", [("queue", "block"), ("broadcast", "block"), ("broadcast", "overwrite")])
def test_soak(mode, overflow, ring_name, procs):
    ring = shmring.Ring.create(ring_name, REC, 1 << 14, mode=mode, overflow=overflow)
    try:
        out = CTX.Queue()
        ready = [CTX.Event() for _ in range(4)]
        kids = [procs(CTX, consumer_main, ring, mode, ev, out) for ev in ready]
        for ev in ready:
            assert ev.wait(30)
        block = np.zeros(BATCH, REC)
        t0 = time.perf_counter()
        with ring.producer() as prod:
            for start in range(0, N, BATCH):
                fill(block, start)
                prod.push_many(block[: min(BATCH, N - start)])
        results = [out.get(timeout=600) for _ in kids]
        elapsed = time.perf_counter() - t0
        for p in kids:
            p.join(30)
            assert p.exitcode == 0
        torn_total = sum(r[1] for r in results)
        print(f"\n{mode}/{overflow}: {N} records, 4 consumers, {N / elapsed / 1e6:.1f} M records/s pushed")
        if mode == "queue":
            ranges = np.concatenate([r[7] for r in results if len(r[7])])
            ranges = ranges[np.argsort(ranges[:, 0])]
            ends = ranges[:, 0] + ranges[:, 1]
            dup = int(np.count_nonzero(ranges[1:, 0] < ends[:-1]))
            lost = int(np.sum(np.maximum(ranges[1:, 0] - ends[:-1], 0))) + int(ranges[0, 0]) + (N - int(ends[-1]))
            count = sum(r[2] for r in results)
            print(f"  delivered {count} ({', '.join(str(r[2]) for r in results)}), lost {lost}, "
                  f"duplicated {dup}, torn {torn_total}, non-contiguous claims {sum(r[3] for r in results)}")
            assert (count, lost, dup, torn_total) == (N, 0, 0, 0)
            assert all(r[3] == 0 for r in results)
        else:
            for _, bad, count, disorder, gaps, dropped, last, _ in results:
                print(f"  consumer: received {count}, missing {gaps + (N - last)}, dropped counter {dropped}, "
                      f"out of order {disorder}, torn {bad}")
                assert bad == 0 and disorder == 0
                assert last == N  # the end of the stream is never lost
                if overflow == "block":
                    assert count == N and gaps == 0 and dropped == 0
                else:
                    # every missing sequence number is accounted for by the counter
                    assert gaps == dropped and count + dropped == N
    finally:
        ring.close()
