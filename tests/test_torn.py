"""Torn-record detection in broadcast-overwrite mode, made hard to miss.

Records of 64 KiB in a ring of 4 slots, a producer in another process writing
all the time and a consumer copying and holding views: the consumer is lapped
mid-copy again and again, and every word of every record it accepts is checked
against its sequence number. The default suite runs a few seconds; SHMRING_SOAK=1
runs a minute (SHMRING_TORN_SECONDS to change it).

A validation that fails to discard a lapped copy (b_torn returning 0) makes this
test fail within its first second: the figures printed show how often the
consumer was lapped (dropped) and how many views were overwritten while held.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

import shmring
from _torn_workers import big_dtype, lapping_producer, n_torn

SOAK = bool(os.environ.get("SHMRING_SOAK"))
SECONDS = float(os.environ.get("SHMRING_TORN_SECONDS", "60" if SOAK else "2.5"))
CTX = mp.get_context("fork")

pytestmark = pytest.mark.timeout(int(SECONDS) * 4 + 120)


def check_order(a, last: int, disorder: list) -> int:
    seqs = a["seq"].astype(np.int64)
    if not (np.all(np.diff(seqs) > 0) and (not len(seqs) or seqs[0] > last)):
        disorder.append((last, seqs[:4].tolist()))
    return int(seqs[-1]) if len(seqs) else last


@pytest.mark.parametrize("words,cap", [(8192, 4), (64, 2)], ids=["64KiB", "520B"])
def test_lapped_consumer_never_accepts_a_torn_record(ring_name, rings, procs, words, cap):
    ring = rings.create(ring_name, big_dtype(words), cap, mode="broadcast", overflow="overwrite")
    cons = ring.consumer(start="oldest")
    stop = CTX.RawValue("b", 0)
    child = procs(CTX, lapping_producer, ring, stop, cap - 1)
    got = torn = lagged_views = lost_in_views = 0
    last = -1
    disorder = []
    out = np.zeros(cap, ring.dtype)
    t_end = time.monotonic() + SECONDS
    ops = 0
    try:
        while time.monotonic() < t_end:
            ops += 1
            try:
                if ops % 3 == 0:
                    try:
                        with cons.view(cap, timeout=5) as v:
                            a = np.array(v)
                    except shmring.Lagged as exc:
                        lagged_views += 1
                        lost_in_views += exc.count
                        a = a[exc.count:]
                elif ops % 3 == 1:
                    a = cons.pop_many(cap, timeout=5)
                else:
                    k = cons.pop_many(out=out, timeout=5)
                    a = out[:k].copy()
            except shmring.Empty:
                continue
            torn += n_torn(a)
            last = check_order(a, last, disorder)
            got += len(a)
    finally:
        stop.value = 1
        child.join(30)
    assert child.exitcode == 0
    while True:  # the producer closed the stream: drain what is left
        try:
            a = cons.pop_many(cap, timeout=5)
        except shmring.Closed:
            break
        torn += n_torn(a)
        last = check_order(a, last, disorder)
        got += len(a)
    pushed = ring.stats()["pushed"]
    print(f"\n{words * 8 + 8} B records, capacity {cap}, {SECONDS:.0f} s: pushed {pushed}, accepted {got}, "
          f"dropped {cons.dropped} ({cons.dropped / max(pushed, 1):.0%}), views overwritten while held "
          f"{lagged_views} ({lost_in_views} records), torn accepted {torn}, out of order {len(disorder)}")
    assert torn == 0 and not disorder, disorder[:3]
    # the run really raced: the consumer was lapped, and records still got through
    assert cons.dropped > 0 and got > 0
    # every record the consumer did not get is counted, none twice
    assert got + cons.dropped == pushed and last == pushed - 1
