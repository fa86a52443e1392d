"""Child-process workers of tests/test_aio.py (importable under spawn).

Each reports through its exit code (0 = ran to the end as expected) and, where
it has data, a file or a multiprocessing queue.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

import shmring
from _records import REC, make_records, n_bad


def run(coro, use_uvloop: bool = False):
    if use_uvloop:
        import uvloop
        loop = uvloop.new_event_loop()  # asyncio.Runner(loop_factory=...) is 3.11+
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.close()
    return asyncio.run(coro)


def pong(ring_in, ring_out, rounds: int, use_uvloop: bool) -> None:
    """await a value, send it back plus one, `rounds` times."""
    async def main():
        c = ring_in.consumer()
        p = ring_out.producer()
        for _ in range(rounds):
            v = await asyncio.wait_for(c.apop(), 30)
            await p.apush(int(v) + 1, timeout=30)
        p.close()
        c.close()
    run(main(), use_uvloop)


def apush_stream(ring, n: int, batch_max: int, seed: int) -> None:
    """Push records 0..n-1 with apush() and apush_many() of random sizes, then close."""
    rng = np.random.default_rng(seed)

    async def main():
        p = ring.producer()
        k = 0
        while k < n:
            m = int(rng.integers(0, batch_max + 1))
            if m == 0:
                await p.apush(make_records(k, 1)[0], timeout=30)
                k += 1
            else:
                m = min(m, n - k)
                assert await p.apush_many(make_records(k, m), timeout=30) == m
                k += m
        p.close()
    run(main())


def async_for_consumer(ring, out_path: str, ready) -> None:
    """Receive with `async for` until the stream ends; save seqs and the bad count."""
    async def main():
        c = ring.consumer()
        ready.set()
        seqs = []
        bad = 0
        async for rec in c:
            seqs.append(int(rec["seq"]))
            bad += n_bad(rec)
        np.savez(out_path, seqs=np.array(seqs, dtype=np.uint64), bad=bad)
        c.close()
    run(main())


def many_ring_feeder(names: list[str], per_ring: int, go, seed: int) -> None:
    """Producer of every ring: per_ring records to each at random, then waits for
    `go`, then per_ring more to each and closes every stream."""
    rng = np.random.default_rng(seed)
    rings = [shmring.Ring.attach(n) for n in names]
    prods = [r.producer() for r in rings]
    seq = [0] * len(prods)

    def burst():
        order = np.repeat(np.arange(len(prods)), per_ring)
        rng.shuffle(order)
        for k in order:
            prods[k].push(make_records(seq[k], 1)[0], timeout=30)
            seq[k] += 1
            if rng.random() < 0.01:
                time.sleep(0.001)

    burst()
    if not go.wait(60):
        raise SystemExit(3)
    burst()
    for p in prods:
        p.close()


def random_feeder(names: list[str], per_ring: int, seed: int, max_sleep: float) -> None:
    """Feeds each ring 0..per_ring-1 (int64) in a random interleaving with random
    pauses, then closes every stream."""
    rng = np.random.default_rng(seed)
    prods = [shmring.Ring.attach(n).producer() for n in names]
    order = np.repeat(np.arange(len(prods)), per_ring)
    rng.shuffle(order)
    seq = [0] * len(prods)
    for k in order:
        prods[k].push(seq[k], timeout=30)
        seq[k] += 1
        if rng.random() < 0.2:
            time.sleep(float(rng.random()) * max_sleep)
    for p in prods:
        p.close()


def item(ring, k: int):
    """k as a record of an int64 ring, or as an 8-byte little-endian message."""
    return k if ring.kind == "records" else k.to_bytes(8, "little")


def u64(msg) -> int:
    return int.from_bytes(msg, "little")


def paced_producer(ring, n: int, seed: int) -> None:
    """Push 0..n-1 one by one with random small pauses (so consumers wait often), then close."""
    rng = np.random.default_rng(seed)
    p = ring.producer()
    for k in range(n):
        p.push(item(ring, k), timeout=30)
        r = rng.random()
        if r < 0.3:
            time.sleep(float(rng.random()) * 0.002)
    p.close()


def push_then_hang(ring, n: int, ready) -> None:
    """Push 0..n-1, then sleep until killed (never closes the stream)."""
    p = ring.producer()
    for k in range(n):
        p.push(item(ring, k), timeout=30)
    ready.set()
    time.sleep(600)


def slow_popper(ring, n: int, delay: float, results) -> None:
    """Pop n records after a delay, report them."""
    c = ring.consumer()
    time.sleep(delay)
    got = [int(c.pop(timeout=30)) for _ in range(n)]
    results.put(got)
    c.close()


# ---- message rings and boards (tests/test_aio_messages.py) -----------------------

def msg_pong(ring_in, ring_out, rounds: int, use_uvloop: bool) -> None:
    """await a message {"seq": k, "a": array}, send back seq + 1 and the array doubled."""
    async def main():
        c = ring_in.consumer()
        p = ring_out.producer()
        for _ in range(rounds):
            m = await asyncio.wait_for(c.apop(), 30)
            await p.apush({"seq": m["seq"] + 1, "a": m["a"] * 2}, timeout=30)
        p.close()
        c.close()
    run(main(), use_uvloop)


def msg_apush_stream(ring, n: int, max_payload: int, seed: int) -> None:
    """Checksummed messages 0..n-1 (see _msg_workers) with apush() and
    apush_many() of random sizes, then close."""
    import _msg_workers as M

    sizes = M.sizes(seed, n, max_payload)
    rng = np.random.default_rng(seed)

    async def main():
        p = ring.producer()
        k = 0
        while k < n:
            m = min(int(rng.integers(0, 20)), n - k)
            if m == 0:
                await p.apush(M.message(k, int(sizes[k]), max_payload), timeout=30)
                k += 1
            else:
                batch = (M.message(j, int(sizes[j]), max_payload) for j in range(k, k + m))
                assert await p.apush_many(batch, timeout=30) == m
                k += m
        p.close()
    run(main())


def msg_async_for_consumer(ring, out_path: str, max_payload: int, ready, use_uvloop: bool) -> None:
    """Receive checksummed messages with `async for` until the stream ends; save the seqs."""
    import _msg_workers as M

    async def main():
        c = ring.consumer()
        ready.set()
        seqs = [M.check(m, max_payload) async for m in c]
        np.save(out_path, np.array(seqs, dtype=np.int64))
        c.close()
    run(main(), use_uvloop)


def msg_slow_popper(ring, n: int, delay: float, results) -> None:
    """Pop n messages after a delay, one every 2 ms, report their lengths."""
    c = ring.consumer()
    time.sleep(delay)
    got = []
    for _ in range(n):
        got.append(len(c.pop(timeout=30)))
        time.sleep(0.002)
    results.put(got)
    c.close()


def board_writer(name: str, key: str, n: int, pause: float, ready) -> None:
    """Write versions 1..n of `key` (the value is the version as float), pausing between."""
    b = shmring.Board.attach(name)
    ready.set()
    for k in range(1, n + 1):
        time.sleep(pause)
        b.write(key, float(k))
    b.close()


def consume_idle(ring, ready, stop) -> None:
    """A consumer that joins, then stays alive and idle (popping nothing) until
    stop is set."""
    c = ring.consumer()
    ready.set()
    stop.wait(60)
    c.close()
