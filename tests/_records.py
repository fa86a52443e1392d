"""The one checksummed, sequence-numbered record every multi-process test sends.

A record is 64 bytes: its sequence number, six payload words derived from it and
an order-sensitive hash of all seven. A receiver checks what arrived, not just
that something did: n_bad() counts records that are torn, garbage or carry
another record's payload, and the sequence numbers give order, gaps and
duplicates. Everything is vectorised over arrays of records.
"""

from __future__ import annotations

import numpy as np

REC = np.dtype([("seq", "<u8"), ("payload", "<u8", (6,)), ("check", "<u8")])
assert REC.itemsize == 64

_K = np.array(
    [0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB,
     0xD6E8FEB86659FD93, 0xA0761D6478BD642F, 0xE7037ED1A0B428DB],
    dtype=np.uint64,
)
_M = np.uint64(0xFF51AFD7ED558CCD)
_SALT = np.uint64(0x2545F4914F6CDD1D)
_S31 = np.uint64(31)


def payload_of(seq) -> np.ndarray:
    """The six payload words of each sequence number (wrapping uint64)."""
    seq = np.asarray(seq, dtype=np.uint64).reshape(-1)
    return (seq[:, None] + np.uint64(1)) * _K[None, :]


def checksum(seq, payload) -> np.ndarray:
    """Order-sensitive hash of seq and every payload word (wrapping uint64)."""
    h = np.asarray(seq, dtype=np.uint64).reshape(-1) * _M + _SALT
    payload = np.asarray(payload, dtype=np.uint64).reshape(-1, 6)
    for j in range(6):
        h = (h ^ payload[:, j]) * _M
        h = h ^ (h >> _S31)
    return h


def fill(arr: np.ndarray, start: int) -> None:
    """Writes records start .. start+len(arr)-1 into arr in place (a ring
    reservation, a reused buffer)."""
    n = len(arr)
    seq = np.arange(start, start + n, dtype=np.uint64)
    pl = payload_of(seq)
    arr["seq"] = seq
    arr["payload"] = pl
    arr["check"] = checksum(seq, pl)


def make_records(start: int, n: int) -> np.ndarray:
    """A new array of records start .. start+n-1."""
    a = np.empty(n, REC)
    fill(a, start)
    return a


def as_records(x) -> np.ndarray:
    """A popped np.void, or an array of REC, as a 1-d REC array."""
    return np.atleast_1d(np.asarray(x)).reshape(-1)


def bad_mask(a) -> np.ndarray:
    """True for each record that is not intact (torn, garbage, or another record's payload)."""
    a = as_records(a)
    seq = a["seq"]
    ok = (a["check"] == checksum(seq, a["payload"])) & (a["payload"] == payload_of(seq)).all(axis=1)
    return ~ok


def n_bad(a) -> int:
    """How many records of a are not intact."""
    a = as_records(a)
    return int(np.count_nonzero(bad_mask(a))) if len(a) else 0
