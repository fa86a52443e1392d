"""Tick feed to a pool of workers (queue mode): every tick is handled by exactly one worker.

One producer publishes market ticks in batches; four worker processes take them as they
come (work sharing, no pickling, no lock). Each worker sums what it saw; at the end the
sums must add up to exactly the ticks sent, once each.

    python examples/tick_feed.py [--ticks N] [--workers N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys

import numpy as np

import shmring

TICK = np.dtype([("seq", "<u8"), ("symbol", "S8"), ("bid", "<f8"), ("ask", "<f8")])


def worker(ring: shmring.Ring, ready, results) -> None:
    count = seq_sum = 0
    spread = 0.0
    with ring.consumer() as cons:
        ready.set()
        while True:
            try:
                batch = cons.pop_many(256)  # blocks (asleep, no CPU) until ticks or the end
            except shmring.Closed:  # the producer closed and everything was handed out
                break
            count += len(batch)
            seq_sum += int(batch["seq"].sum())
            spread += float((batch["ask"] - batch["bid"]).sum())
    results.put((os.getpid(), count, seq_sum, spread))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=200_000, help="ticks to send (default 200000)")
    ap.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    args = ap.parse_args()

    name = f"ticks-{os.getpid()}"
    ring = shmring.Ring.create(name, TICK, capacity=4096)  # queue mode is the default
    try:
        ctx = mp.get_context("spawn")  # a Ring pickles by name: fine under spawn too
        results = ctx.Queue()
        ready = [ctx.Event() for _ in range(args.workers)]
        workers = [ctx.Process(target=worker, args=(ring, r, results)) for r in ready]
        for w in workers:
            w.start()
        for r in ready:  # (a late worker would only get a smaller share)
            r.wait(60)
        with ring.producer() as prod:
            for start in range(0, args.ticks, 1000):
                n = min(1000, args.ticks - start)
                batch = np.zeros(n, TICK)
                batch["seq"] = np.arange(start, start + n)
                batch["symbol"] = b"ACME"
                batch["bid"] = 100.0
                batch["ask"] = 100.01
                prod.push_many(batch)
        # leaving the block closed the stream: workers drain what is left, then stop
        got = [results.get(timeout=120) for _ in workers]
        for w in workers:
            w.join(30)
    finally:
        ring.close()
        ring.unlink()

    count = sum(g[1] for g in got)
    seq_sum = sum(g[2] for g in got)
    for pid, n, _, spread in got:
        print(f"worker {pid}: {n} ticks, mean spread {spread / max(n, 1):.4f}")
    want = args.ticks * (args.ticks - 1) // 2
    if count != args.ticks or seq_sum != want:
        print(f"MISMATCH: {count} ticks (want {args.ticks}), sum of sequence numbers {seq_sum} (want {want})")
        return 1
    print(f"ok: {count} ticks, each handled by exactly one of {len(got)} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
