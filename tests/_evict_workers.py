"""Child bodies of tests/test_evict.py (importable by spawn children)."""

from __future__ import annotations

import os
import signal

import numpy as np

import shmring
from _records import n_bad


def survivor(ring, ready, out):
    """Reads until the stream closes; reports every sequence number and the bad count."""
    c = ring.consumer(start="oldest")
    ready.set()
    got, bad = [], 0
    while True:
        try:
            a = c.pop_many(256, timeout=30)
        except shmring.Closed:
            break
        bad += n_bad(a)
        got.append(a["seq"].copy())
    out.put(("survivor", np.concatenate(got) if got else np.zeros(0, np.uint64), bad))


def _report_evicted(c, out, got, exc):
    """Reports what the consumer had, what Evicted said, and whether the next call says it again."""
    try:
        c.pop(timeout=0)
        again = False
    except shmring.Evicted:
        again = True
    out.put(("evicted", got["seq"].copy(), n_bad(got), exc.count, str(exc), again))


def stopper_broadcast(ring, ready, first, out):
    """Reads `first` records, then stops itself (SIGSTOP) between two pops; once
    continued, its next pop must say it was evicted."""
    c = ring.consumer(start="oldest")
    ready.set()
    a = c.pop_many(first, timeout=30)
    while len(a) < first:
        a = np.concatenate([a, c.pop_many(first - len(a), timeout=30)])
    os.kill(os.getpid(), signal.SIGSTOP)
    try:
        b = c.pop_many(256, timeout=5)
        out.put(("not evicted", a["seq"].copy(), n_bad(a), len(b)))
    except shmring.Evicted as exc:
        _report_evicted(c, out, a, exc)
    c.close()


def stopper_queue(ring, ready, hold, out):
    """Takes a view of `hold` records and stops itself (SIGSTOP) inside it; once
    continued, leaving the view must say it was evicted and nothing it held
    counts as delivered."""
    c = ring.consumer()
    ready.set()
    held = None
    try:
        with c.view(hold, timeout=30) as v:
            held = np.array(v)
            os.kill(os.getpid(), signal.SIGSTOP)
        out.put(("not evicted", held["seq"].copy(), 0, 0, "", False))
    except shmring.Evicted as exc:
        _report_evicted(c, out, held, exc)
    c.close()

