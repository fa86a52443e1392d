"""Per-call costs of the binding, in one process (no peer, no waiting).

    python benchmarks/percall.py [--repeat 7] [--number 200000]

Each figure is the best of ``--repeat`` timeit runs of ``--number`` calls, in
microseconds per call; the ratio column compares each call with a ``np.void``
push measured in the same run. Single-record calls run against a ring large
enough for all of them (refilled or drained before each repeat), so none waits. Calls the installed shmring lacks are shown as
"n/a", so the script also measures older builds (before/after comparisons).
"""

from __future__ import annotations

import argparse
import os
import platform
import timeit

import numpy as np

import shmring

TICK = np.dtype([("seq", "<u8"), ("ts", "<u8"), ("px", "<f8", (6,))])          # 64 bytes
FLAT = np.dtype([("seq", "<u8"), ("ts", "<u8"), ("bid", "<f8"), ("ask", "<f8"),
                 ("qty", "<i4"), ("side", "i1"), ("sym", "S8")])                  # plain fields


def measure(stmt, setup_globals, number, repeat, setup="pass"):
    try:
        t = min(timeit.repeat(stmt, setup=setup, globals=setup_globals, number=number, repeat=repeat))
    except (AttributeError, TypeError) as exc:  # call missing in this build
        return None, str(exc)
    return t / number * 1e6, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--number", type=int, default=200_000)
    args = ap.parse_args()
    name = f"percall-{os.getpid()}"
    rows = []
    cap = 1 << (args.number - 1).bit_length()
    for dt, label in ((FLAT, "flat struct"), (TICK, "tick (subarray field)")):
        ring = shmring.Ring.create(name, dt, cap)
        try:
            prod, cons = ring.producer(), ring.consumer()
            rec = np.zeros(1, dt)[0]
            tup = rec.item()
            out = np.zeros(64, dt)
            fill = np.zeros(args.number, dt)
            g = {"prod": prod, "cons": cons, "rec": rec, "tup": tup, "out": out, "np": np, "fill": fill,
                 "ring": ring, "tups": [tup] * 64}
            drain = "while True:\n" \
                    "    try:\n        cons.pop_many(len(fill), timeout=0)\n    except Exception:\n        break"
            cases = [
                # (what, statement, setup run before each timed repeat)
                ("push(np.void)", "prod.push(rec)", drain),
                ("push(tuple)", "prod.push(tup)", drain),
                ("pop()", "cons.pop()", drain + "\nprod.push_many(fill)"),
                ("try_pop()", "cons.try_pop()", drain + "\nprod.push_many(fill)"),
                ("try_pop() on empty", "cons.try_pop()", drain),
                ("pop(timeout=0) on empty", "try:\n    cons.pop(timeout=0)\nexcept Exception:\n    pass", drain),
                ("len(consumer)", "len(cons)", "pass"),
                ("producer.free()", "prod.free()", "pass"),
                ("stats()['available']", "ring.stats()['available']", "pass"),
                ("push_many(64) + pop_many(64)", "prod.push_many(out); cons.pop_many(64)", drain),
                ("push_many(64) + pop_many(out=)", "prod.push_many(out); cons.pop_many(out=out)", drain),
                ("push_many(list of 64 tuples)", "prod.push_many(tups)", drain),
            ]
            base = None
            for what, stmt, setup in cases:
                n = args.number if "stats" not in what else max(1, args.number // 100)
                if "list of 64" in what:
                    n = max(1, args.number // 64)  # all of them fit the ring: none waits
                us, err = measure(stmt, g, n, args.repeat, setup)
                if what == "push(np.void)":
                    base = us
                rows.append((label, what, us, err, base))
        finally:
            ring.close()
            shmring.unlink(name)
    print(f"# shmring {shmring.__version__} from {os.path.dirname(shmring.__file__)}")
    print(f"# {platform.machine()} {platform.python_implementation()} {platform.python_version()}, "
          f"numpy {np.__version__}, {os.cpu_count()} CPUs, best of {args.repeat} x {args.number} calls")
    print(f"{'records':<22} {'call':<32} {'us/call':>9} {'vs np.void push':>16}")
    for label, what, us, err, base in rows:
        if us is None:
            print(f"{label:<22} {what:<32} {'n/a':>9}")
        else:
            print(f"{label:<22} {what:<32} {us:>9.3f} {us / base:>15.2f}x")


if __name__ == "__main__":
    main()
