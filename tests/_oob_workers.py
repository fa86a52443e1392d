"""Worker functions for test_queue_oob.py (importable under spawn).

An item is a dict whose arrays are derived from (producer, sequence number):
each array's content, dtype, shape and memory order follow from the pair, and
the dict carries a CRC-32 of every array's bytes, so a consumer checks each
item it gets in full and reports (producer, sequence) pairs for the exactly-once
and per-producer order checks.
"""

from __future__ import annotations

import zlib

import numpy as np

DTYPES = ["<u8", "<f4", ">i2", "u1", "<c16", "<M8[ms]"]


def arrays(pid: int, seq: int) -> list:
    """0..10 arrays: up to 8 take the compiled writer, more the codec's; sizes
    from empty to 96 KiB; C order, Fortran order (numpy's own reduction) and
    datetimes (exported as their bytes)."""
    k = (pid * 5 + seq * 3) % 11
    out = []
    for j in range(k):
        dt = np.dtype(DTYPES[(seq + j) % len(DTYPES)])
        n = [0, 1, 7, 1000, 65536 // 8, 98304 // 8][(pid + seq + j) % 6]
        base = (np.arange(n, dtype=np.int64) * 2654435761 + pid * 1_000_003 + seq * 97 + j) & 0x7F
        a = base.astype(dt)
        if j % 3 == 2 and n >= 7:
            a = np.asfortranarray(a[: n - n % 7].reshape(7, -1))
        out.append(a)
    return out


def crc(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1))


def item(pid: int, seq: int) -> dict:
    arrs = arrays(pid, seq)
    return {"pid": pid, "seq": seq, "arrays": arrs, "crcs": [crc(a) for a in arrs]}


def check(it) -> tuple:
    pid, seq = it["pid"], it["seq"]
    want = arrays(pid, seq)
    got = it["arrays"]
    if len(got) != len(want):
        raise AssertionError(f"item {pid}/{seq}: {len(got)} arrays, {len(want)} sent")
    for a, w, c in zip(got, want, it["crcs"]):
        if (type(a) is not np.ndarray or a.dtype != w.dtype or a.shape != w.shape
                or a.flags.f_contiguous != w.flags.f_contiguous or crc(a) != c
                or not np.array_equal(a, w)):
            raise AssertionError(f"item {pid}/{seq}: an array differs from what was sent")
        if not a.flags.writeable:  # a copy the receiver owns, never a read-only view of the lane
            raise AssertionError(f"item {pid}/{seq}: an array arrived read-only")
    return pid, seq


def produce(q, pid: int, n: int) -> None:
    for seq in range(n):
        q.put(item(pid, seq), timeout=60)


def consume(q, conn) -> None:
    """Gets items until a None sentinel; sends back the (producer, seq) pairs in
    the order got, or the first error."""
    got = []
    try:
        while True:
            it = q.get(timeout=60)
            if it is None:
                break
            got.append(check(it))
    except Exception as exc:  # reported to the test, which fails with it
        conn.send(repr(exc))
        conn.close()
        return
    conn.send(np.array(got, dtype=np.int64).reshape(-1, 2))
    conn.close()
