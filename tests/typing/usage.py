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


def report(ring: Ring) -> str:
    st: RingStats = ring.stats()
    consumers: list[ConsumerStats] = st["consumers"]
    lags = [c.get("lag", 0) for c in consumers]
    reason: str | None = st["close_reason"]
    waiting = st["waiters"]["consumers"] + st["waiters"]["producer"]
    return (f"{st['name']} {st['mode']} pushed={st['pushed']} popped={st['popped']} "
            f"available={st['available']} waiting={waiting} lags={lags} closed={st['closed']} "
            f"reason={reason} producer={st['producer_pid']}")


def main() -> None:
    ring = Ring.create("typing-usage", np.uint64, 64, mode="queue", exist_ok=True)
    try:
        produce(ring, 8)
        print(consume(ring), report(ring))
        again = Ring.attach("typing-usage", dtype=np.uint64)
        again.close()
    finally:
        ring.close()
        shmring.unlink("typing-usage")
