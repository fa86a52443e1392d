"""Child bodies of tests/test_torn.py (importable by spawn children)."""

from __future__ import annotations

import numpy as np

WORDS = 8192  # 64 KiB of payload a record: a copy takes long enough to be lapped in


def big_dtype(words: int = WORDS) -> np.dtype:
    return np.dtype([("seq", "<u8"), ("data", "<u8", (words,))])


def pattern(seq: np.ndarray, words: int) -> np.ndarray:
    """Every word of record seq is distinct from every word of any other
    record: a copy mixing two writes shows as words of the wrong record."""
    seq = np.asarray(seq, dtype=np.uint64).reshape(-1)
    return (seq[:, None] << np.uint64(20)) + np.arange(words, dtype=np.uint64)[None, :]


def n_torn(a: np.ndarray) -> int:
    a = np.atleast_1d(a)
    if not len(a):
        return 0
    words = a.dtype["data"].shape[0]
    return int(np.count_nonzero((a["data"] != pattern(a["seq"], words)).any(axis=1)))


def lapping_producer(ring, stop, batch):
    """Writes as fast as it can, in place (reserve) and by copy (push_many), so
    a consumer of a small ring is lapped all the time."""
    words = ring.dtype["data"].shape[0]
    src = np.zeros(batch, ring.dtype)
    seq = 0
    with ring.producer() as p:
        while not stop.value:
            src["seq"] = np.arange(seq, seq + batch, dtype=np.uint64)
            src["data"] = pattern(src["seq"], words)
            seq += p.push_many(src)
            with p.reserve(1) as a:
                a["seq"] = seq
                a["data"] = pattern([seq], words)
            seq += 1
