#!/usr/bin/env python3
"""Instructions per put and per get of shmring.Queue items, counted by callgrind.

    python benchmarks/queue_costs.py [--items 2000] [--what array dict1000 ...]

One process puts an item and gets it back, ``--items`` times, under callgrind with
collection switched on only inside ``_QueueCore.put`` and ``_QueueCore.get``
(``--toggle-collect``), so the figures are the queue's own calls, nothing of the
loop around them. Each shape runs twice (``--items`` and twice as many) and the
difference is divided by ``--items``: what is left is per item, without the first
put's set-up (the lane's reservation) or the interpreter's start. The put and the
get are told apart by a third and fourth run collecting only one of them.
Instruction counts repeat from run to run and do not depend on other load, so
before/after comparisons of the data paths need no lock on a shared machine.
Needs valgrind on PATH.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# what each shape puts: every one is made before the counted calls
SHAPES = {
    "array": "{'worker': 'worker-00', 'seq': 5, 'data': np.arange(8192, dtype=np.uint64)}",
    "dict1000": "{f'k{i}': (i, None) for i in range(1000)}",  # not marshal's: more than 1024 items
    "list1000": "[(i, float(i), 'x') for i in range(1000)]",
    "obj": "Obj(3, 'name', [1.5, 2.5])",
    "two_arrays": "(lambda a: [a, np.ones((4, 4), np.int32), a[2:10]])(np.arange(16.0))",  # and a view
    "small": "(7, 1.75, 'worker-07')",
}

CHILD = r"""
import sys, numpy as np, shmring
class Obj:
    def __init__(self, a, b, c):
        self.a, self.b, self.c = a, b, c
n = int(sys.argv[1])
item = eval(sys.argv[2])
q = shmring.Queue(nbytes=1 << 20)
q.put(item); q.get()  # the lane and the consumer slot are set up here, outside the count
for _ in range(n):
    q.put(item)
    q.get()
"""

FUNCS = {"put": "__pyx_pw_7shmring_5_ring_10_QueueCore_*put*", "get": "__pyx_pw_7shmring_5_ring_10_QueueCore_*get*"}


def count(items: int, shape: str, which: str, work: str) -> int:
    out = os.path.join(work, f"cg.{shape}.{which}.{items}")
    toggles = [f"--toggle-collect={FUNCS[w]}" for w in (("put", "get") if which == "both" else (which,))]
    cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no", *toggles,
           f"--callgrind-out-file={out}", sys.executable, "-c", CHILD, str(items), SHAPES[shape]]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--what", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    args = ap.parse_args()
    print(f"instructions per item (callgrind, {args.items} and {2 * args.items} items, difference)")
    print(f"{'item':12} {'put':>10} {'get':>10}")
    with tempfile.TemporaryDirectory() as work:
        for shape in args.what:
            row = []
            for which in ("put", "get"):
                a = count(args.items, shape, which, work)
                b = count(2 * args.items, shape, which, work)
                row.append((b - a) / args.items)
            print(f"{shape:12} {row[0]:>10,.0f} {row[1]:>10,.0f}", flush=True)


if __name__ == "__main__":
    main()
