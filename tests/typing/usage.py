"""Typed use of the public API, checked with mypy --strict (tests/test_typing.py).

Never run: it only has to type-check, so the stubs and annotations are held to
what a user's strictly typed code needs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

import shmring
from shmring import ConsumerStats, Ring, RingStats


def produce(ring: Ring, n: int) -> int:
    with ring.producer() as prod:
        prod.push(np.uint64(1), timeout=0.5)
        pushed: int = prod.push_many(np.arange(n, dtype=np.uint64), timeout=None)
        with prod.reserve(4, timeout=0) as slots:
            slots[:] = 7
        return pushed


def consume(ring: Ring) -> list[int]:
    got: list[int] = []
    with ring.consumer(start="oldest", on_lag="raise") as cons:
        try:
            rec = cons.pop(timeout=0)
            got.append(int(rec))
            batch: npt.NDArray[np.generic] = cons.pop_many(16, timeout=0)
            got.extend(int(x) for x in batch)
            with cons.view(8, timeout=0) as view:
                got.extend(int(x) for x in view)
        except shmring.Empty:
            pass
        except shmring.Lagged as lag:
            got.append(-lag.count)
        popped: int = cons.popped
        dropped: int = cons.dropped
        index: int = cons.index
        got += [popped, dropped, index]
    return got


def poll(ring: Ring) -> int:
    """The cheap calls: waiting for consumers, free room, queue length, try_pop, pop_many(out=)."""
    out = np.zeros(32, dtype=np.uint64)
    with ring.producer() as prod:
        joined: int = prod.wait_for_consumers(1, timeout=1.0)
        room: int = prod.free()
    with ring.consumer() as cons:
        rec = cons.try_pop()
        n: int = cons.pop_many(out=out, timeout=0)
        waiting: int = len(cons)
    return joined + room + n + waiting + (0 if rec is None else 1)


def fresh() -> str:
    with Ring.create(None, np.uint64, 8, mode="broadcast", overflow="overwrite", unlink_on_close=True) as ring:
        return ring.name


def report(ring: Ring) -> str:
    st: RingStats = ring.stats()
    consumers: list[ConsumerStats] = st["consumers"]
    lags = [c.get("lag", 0) for c in consumers]
    reason: str | None = st["close_reason"]
    waiting = st["waiters"]["consumers"] + st["waiters"]["producer"]
    return (f"{st['name']} {st['mode']} pushed={st['pushed']} popped={st['popped']} "
            f"available={st['available']} waiting={waiting} lags={lags} closed={st['closed']} "
            f"reason={reason} producer={st['producer_pid']}")


async def consume_async(ring: Ring) -> int:
    """The event-loop API, typed."""
    total = 0
    cons = ring.consumer()
    ready: list[shmring.Consumer | shmring.Producer] = await shmring.await_any([cons], timeout=0)
    if ready and shmring.wait_any([cons], timeout=0):
        total += int(await cons.apop(timeout=1.0))
        batch: npt.NDArray[np.uint64] = await cons.apop_many(16, timeout=1.0)
        total += int(batch.sum())
    async for rec in cons:
        total += int(rec)
    fd: int = cons.fileno()
    return total + (fd >= 0)


def queues() -> int:
    """shmring.Queue and friends as a drop-in for multiprocessing's, typed."""
    q: shmring.Queue = shmring.Queue(maxsize=10, nbytes=1 << 16, max_producers=4, max_consumers=4)
    q.put(b"x")
    q.put_nowait({"a": np.zeros(3)})
    n: int = q.put_many([1, 2, 3], timeout=1.0)
    first: object = q.get(timeout=1.0)
    batch: list[object] = q.get_many(8, block=False)
    size: int = q.qsize()
    flags = (q.empty(), q.full(), q.maxsize, q.nbytes, q.name)
    stats = q.stats()
    jq = shmring.JoinableQueue()
    jq.put(1)
    jq.get()
    jq.task_done()
    done: bool = jq.join(timeout=1.0)
    sq = shmring.SimpleQueue()
    sq.put("s")
    s_item: object = sq.get()
    for each in (q, jq, sq):
        each.close()
        each.join_thread()
        each.cancel_join_thread()
    return n + size + len(batch) + len(flags) + len(stats) + int(done) + (first is not None) + (s_item is None)


def main() -> None:
    ring = Ring.create("typing-usage", np.uint64, 64, mode="queue", exist_ok=True)
    try:
        produce(ring, 8)
        print(consume(ring), poll(ring), fresh(), report(ring), queues())
        Ring.create("typing-usage", np.uint64, 64, replace=True).close()
        again = Ring.attach("typing-usage", dtype=np.uint64)
        again.close()
    finally:
        ring.close()
        shmring.unlink("typing-usage")
