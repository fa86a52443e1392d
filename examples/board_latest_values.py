"""A board of latest values: one process writes sensor states, another reads and waits on them.

A ring is history; a board keeps only the current value per key. The writer process
updates three keys as fast as it can; the reader waits for changes of one key (asleep
on a futex between them), watches the others, and checks that no value it ever read is
torn (every field of a value comes from the same write) and that versions only grow.
Fast writes coalesce: the reader sees the latest value, not every one.

    python examples/board_latest_values.py [--writes N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys

import numpy as np

import shmring

STATE = np.dtype([("n", "<u8"), ("x", "<f8"), ("y", "<f8"), ("samples", "<f4", (64,))])
KEYS = ["left_arm", "right_arm", "head"]


def value(n: int) -> tuple:
    return (n, n * 0.5, -float(n), np.full(64, n % 1000, np.float32))


def consistent(rec) -> bool:
    n = int(rec["n"])
    return rec["x"] == n * 0.5 and rec["y"] == -float(n) and bool((rec["samples"] == n % 1000).all())


def writer(board: shmring.Board, n: int) -> None:
    for i in range(1, n + 1):
        for key in reversed(KEYS):  # left_arm last: once it changed, all three hold write i
            board[key] = value(i)  # copied once, straight into shared memory


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writes", type=int, default=10_000, help="writes per key (default 10000)")
    args = ap.parse_args()

    board = shmring.Board.create(f"latest-{os.getpid()}", STATE, KEYS)
    try:
        child = mp.get_context("spawn").Process(target=writer, args=(board, args.writes))
        child.start()
        torn = backwards = wakeups = changed = 0
        n = 0
        version = 0
        try:
            # wait() sleeps until left_arm changes past the version we have seen
            while version < args.writes:
                rec, v = board.wait("left_arm", newer_than=version, timeout=30)
                wakeups += 1
                torn += not consistent(rec)
                backwards += v <= version or int(rec["n"]) != v  # one write per version here
                version = v
                for key in ("right_arm", "head"):  # plain reads: the latest value, never torn
                    torn += not consistent(board[key])
                try:
                    with board.view("head") as arr:  # in place, no copy
                        n = int(arr["n"])
                except shmring.BoardChanged:  # the writer reused that copy while we looked: read again
                    changed += 1
        finally:
            child.join(30)
            if child.is_alive():
                child.kill()
        finals = {key: board.read(key, with_version=True) for key in KEYS}
    finally:
        board.unlink()

    bad_final = [k for k, (rec, v) in finals.items() if v != args.writes or int(rec["n"]) != args.writes]
    if torn or backwards or bad_final or child.exitcode != 0:
        print(f"FAILED: {torn} torn values, {backwards} versions out of order, wrong final values {bad_final}, "
              f"writer exit {child.exitcode}")
        return 1
    print(f"ok: {args.writes} writes per key; the reader woke {wakeups} times, saw only whole values "
          f"in increasing versions, and read the final value {args.writes} of every key (last head view n={n}, {changed} views overwritten meanwhile)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
