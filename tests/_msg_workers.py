"""Worker functions for the message-ring tests (importable under spawn).

A test message is a 16-byte envelope (u64 sequence number, u32 CRC-32 of the
payload, u32 payload length) followed by a payload cut from a pool of random
bytes that both sides rebuild from the same seed, so a consumer checks every
byte it receives, not only the checksum. Payload sizes are drawn log-uniformly
from 0 to the ring's largest message less the envelope.
"""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np

import shmring

ENV = struct.Struct("<QII")
POOL_SEED = 0x5EED
_pool_cache: dict[int, bytes] = {}


def pool(max_payload: int) -> bytes:
    p = _pool_cache.get(max_payload)
    if p is None:
        p = np.random.default_rng(POOL_SEED).integers(0, 256, 2 * max_payload + 4096, dtype=np.uint8).tobytes()
        _pool_cache[max_payload] = p
    return p


def sizes(seed: int, n: int, max_payload: int) -> np.ndarray:
    """n payload sizes, log-uniform over 0..max_payload (both ends included)."""
    rng = np.random.default_rng(seed)
    s = np.floor(np.exp(rng.uniform(0, np.log(max_payload + 2), n))).astype(np.int64) - 1
    s = np.clip(s, 0, max_payload)
    s[rng.random(n) < 0.01] = max_payload  # the largest message, often enough to matter
    s[rng.random(n) < 0.01] = 0
    return s


def message(seq: int, size: int, max_payload: int) -> bytes:
    p = pool(max_payload)
    off = (seq * 7919) % 4096
    payload = p[off : off + size]
    return ENV.pack(seq, zlib.crc32(payload), size) + payload


def check(msg, max_payload: int) -> int:
    """The message's sequence number; raises AssertionError on any damage."""
    mv = memoryview(msg).cast("B")
    seq, crc, size = ENV.unpack_from(mv, 0)
    assert len(mv) == ENV.size + size, (seq, len(mv), size)
    payload = mv[ENV.size :]
    assert zlib.crc32(payload) == crc, f"checksum of message {seq}"
    off = (seq * 7919) % 4096
    assert payload == memoryview(pool(max_payload))[off : off + size], f"payload of message {seq}"
    return seq


# ---- producer -------------------------------------------------------------------

def producer(ring, n: int, seed: int, close: bool = True) -> None:
    """Push messages 0..n-1 mixing push, push_many and reserve (exit code 0 = done)."""
    maxp = ring.max_message - ENV.size
    sz = sizes(seed, n, maxp)
    rng = np.random.default_rng(seed + 1)
    prod = ring.producer()
    i = 0
    while i < n:
        how = rng.integers(0, 8)
        if how < 5:
            prod.push(message(i, int(sz[i]), maxp), timeout=60)
            i += 1
        elif how < 7:
            k = min(n - i, int(rng.integers(1, 12)))
            prod.push_many([message(j, int(sz[j]), maxp) for j in range(i, i + k)], timeout=60)
            i += k
        else:
            m = message(i, int(sz[i]), maxp)
            with prod.reserve(len(m), timeout=60) as buf:
                buf[:] = np.frombuffer(m, np.uint8)
            i += 1
    if close:
        prod.close()


# ---- consumers ------------------------------------------------------------------

def consumer(ring, out_path: str, seed: int, ready=None, **kw) -> None:
    """Receive until Closed, mixing pop, pop_many and view; check every message and
    save the sequence numbers in arrival order (exit code 0 = clean end of stream)."""
    maxp = ring.max_message - ENV.size
    rng = np.random.default_rng(seed)
    cons = ring.consumer(**kw)
    overwrite = ring.overflow == "overwrite"
    if ready is not None:
        ready.set()
    got = []
    try:
        while True:
            how = rng.integers(0, 6)
            if how < 3:
                got.append(check(cons.pop(timeout=60), maxp))
            elif how < 5:
                for m in cons.pop_many(int(rng.integers(1, 16)), timeout=60):
                    got.append(check(m, maxp))
            elif not overwrite:
                with cons.view(timeout=60) as mv:
                    assert isinstance(mv, memoryview) and mv.readonly
                    got.append(check(mv, maxp))  # checked in place
            else:
                # the producer never waits: a view may be overwritten while held,
                # which leaving the block reports (and counts in dropped)
                try:
                    with cons.view(timeout=60) as mv:
                        assert isinstance(mv, memoryview) and mv.readonly
                        data = bytes(mv)
                except shmring.Lagged:
                    continue
                got.append(check(data, maxp))
    except shmring.Closed:
        pass
    np.save(out_path, np.array(got, dtype=np.int64))
    with open(out_path + ".stats", "w") as f:
        f.write(f"{cons.popped} {cons.dropped} {cons.dropped_bytes}")
    cons.close()


def slow_consumer(ring, out_path: str, ready, pause: float) -> None:
    """Broadcast-overwrite: pop with pauses so the producer laps it; record each
    message's (seq, size) and the loss counters."""
    maxp = ring.max_message - ENV.size
    cons = ring.consumer()
    ready.set()
    got = []
    try:
        while True:
            m = cons.pop(timeout=60)
            got.append((check(m, maxp), len(m)))
            if len(got) % 50 == 0:
                time.sleep(pause)
    except shmring.Closed:
        pass
    np.save(out_path, np.array(got, dtype=np.int64).reshape(-1, 2))
    with open(out_path + ".stats", "w") as f:
        f.write(f"{cons.popped} {cons.dropped} {cons.dropped_bytes}")
    cons.close()


# ---- crash victims -------------------------------------------------------------------

def hold_view_then_hang(ring, ready) -> None:
    """Take one message as a view and hold it until killed."""
    cons = ring.consumer()
    with cons.view(timeout=30) as mv:
        ready.send(bytes(mv))
        time.sleep(600)


def reserve_then_hang(ring, n_before: int, ready) -> None:
    """Publish n_before messages, then die inside a reserve block, half written."""
    prod = ring.producer()
    for i in range(n_before):
        prod.push(ENV.pack(i, 0, 0), timeout=30)
    with prod.reserve(1000, timeout=30) as buf:
        buf[:500] = 7
        ready.send(n_before)
        time.sleep(600)
