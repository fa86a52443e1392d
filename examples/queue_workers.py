"""A Pool of worker processes putting results into a shmring.Queue.

shmring.Queue is used exactly as multiprocessing.Queue would be: the queue is
handed to the workers through the Pool's initializer, each task puts a result
(a dict holding a numpy array, which travels without pickling the array), and
the parent gets them all. Every result is checked against a recomputation,
and every task id must arrive exactly once. The queue is anonymous: when the
program ends nothing is left in /dev/shm.

    python examples/queue_workers.py [--tasks N] [--workers W]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys

import numpy as np

import shmring

_results = None


def init(results: shmring.Queue) -> None:
    global _results
    _results = results


def signal_of(task: int) -> np.ndarray:
    rng = np.random.default_rng(task)
    return rng.standard_normal(4096).astype(np.float32)


def work(task: int) -> int:
    x = signal_of(task)
    spectrum = np.abs(np.fft.rfft(x)).astype(np.float32)
    _results.put({"task": task, "pid": os.getpid(), "spectrum": spectrum})
    return task


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--workers", type=int, default=3)
    args = ap.parse_args()

    results = shmring.Queue()
    ctx = mp.get_context("spawn")  # the queue moves as a descriptor, as under fork and forkserver
    with ctx.Pool(args.workers, initializer=init, initargs=(results,)) as pool:
        pool.map_async(work, range(args.tasks), chunksize=8)
        got = {}
        pids = set()
        for _ in range(args.tasks):
            r = results.get(timeout=60)
            if r["task"] in got:
                print(f"task {r['task']} arrived twice", file=sys.stderr)
                return 1
            got[r["task"]] = r["spectrum"]
            pids.add(r["pid"])
    for task, spectrum in got.items():
        if not np.allclose(spectrum, np.abs(np.fft.rfft(signal_of(task))), rtol=1e-5, atol=1e-4):
            print(f"task {task}: wrong result", file=sys.stderr)
            return 1
    if sorted(got) != list(range(args.tasks)) or not results.empty():
        print("missing or extra results", file=sys.stderr)
        return 1
    print(f"{results!r}")
    print(f"ok: {len(got)} results from {len(pids)} worker processes, each checked, each exactly once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
