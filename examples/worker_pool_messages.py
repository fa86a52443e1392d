"""A pool of 3 worker processes fed by a message ring in queue mode: every job exactly once.

Queue mode hands each message to exactly one consumer, so the workers share the jobs
with no lock and no broker. Jobs are dicts (a job id, a numpy payload); each worker
sums what it handled and reports the ids. At the end every id must have been handled
exactly once, and every result must match the payload that was sent.

    python examples/worker_pool_messages.py [--jobs N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys

import numpy as np

import shmring

WORKERS = 3


def payload(job: int) -> np.ndarray:
    return np.arange(job % 97 + 1, dtype=np.int64) * job


def worker(ring: shmring.Ring, ready, results) -> None:
    done: list[tuple[int, int]] = []
    with ring.consumer() as cons:
        ready.set()
        while True:
            try:
                jobs = cons.pop_many(16, timeout=60)  # 1..16 jobs, asleep while there are none
            except shmring.Closed:  # the producer closed and every job was handed out
                break
            for job in jobs:
                done.append((job["id"], int(job["data"].sum())))
    results.put((os.getpid(), done))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20_000, help="jobs to hand out (default 20000)")
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    with shmring.Ring.create(None, nbytes=1 << 20, mode="queue", unlink_on_close=True) as ring:
        results = ctx.Queue()
        ready = [ctx.Event() for _ in range(WORKERS)]
        workers = [ctx.Process(target=worker, args=(ring, r, results)) for r in ready]
        for w in workers:
            w.start()
        try:
            for r in ready:
                if not r.wait(60):
                    print("FAILED: a worker did not start")
                    return 1
            with ring.producer() as prod:  # leaving the block ends the stream
                for start in range(0, args.jobs, 100):
                    prod.push_many([{"id": j, "data": payload(j)}
                                    for j in range(start, min(start + 100, args.jobs))], timeout=60)
            got = [results.get(timeout=60) for _ in workers]
        finally:
            for w in workers:
                w.join(30)
                if w.is_alive():
                    w.kill()

    seen: dict[int, int] = {}
    wrong = 0
    for pid, done in got:
        print(f"worker {pid}: {len(done)} jobs")
        for job, total in done:
            seen[job] = seen.get(job, 0) + 1
            wrong += total != int(payload(job).sum())
    missing = args.jobs - len(set(seen) & set(range(args.jobs)))
    twice = sum(1 for c in seen.values() if c > 1)
    if missing or twice or wrong or len(seen) != args.jobs:
        print(f"FAILED: {missing} jobs missing, {twice} handled twice, {wrong} wrong results")
        return 1
    print(f"ok: {args.jobs} jobs, each handled by exactly one of {WORKERS} workers, all results right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
