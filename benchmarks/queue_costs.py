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

    python benchmarks/queue_costs.py --cpu [--seconds 1.5] [--check] [--nbytes N]

instead runs the 1 -> 1 scenario of bench_queue.py with the 64 KiB item (two forked
processes) and prints, per item and per process, wall time, CPU time, voluntary and
involuntary context switches, minor faults, how often a put found the lane full or a get
found the queue empty (each call is tried without blocking first, then blocks), and the
consumer's time inside get. ``--check`` adds bench_queue.py's per-item check to the
consumer. A timing measurement: run it under the bench lock like the benchmarks.
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


def _ru() -> list:
    import resource
    import time

    r = resource.getrusage(resource.RUSAGE_SELF)
    return [r.ru_utime + r.ru_stime, r.ru_nvcsw, r.ru_nivcsw, r.ru_minflt, time.monotonic()]


def _cpu_producer(q, out, go, seconds):
    import queue
    import time

    import numpy as np

    pool = [np.arange(8192, dtype=np.uint64) + np.uint64(k) for k in range(16)]
    q.put({"worker": "worker-00", "seq": -1, "data": pool[0]})
    go.wait(60)
    a, n, waits = _ru(), 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(4):
            item = {"worker": "worker-00", "seq": n, "data": pool[n % 16]}
            try:
                q.put_nowait(item)
            except queue.Full:
                waits += 1
                q.put(item)
            n += 1
    b = _ru()
    q.put(None)
    out.put(("producer", n, waits, [y - x for x, y in zip(a, b)], 0.0))


def _cpu_consumer(q, out, go, check):
    import queue
    import time

    import numpy as np

    sums = [int((np.arange(8192, dtype=np.uint64) + np.uint64(k))[::64].sum()) for k in range(16)]
    q.get()
    go.wait(60)
    a, n, waits, inside = _ru(), 0, 0, 0.0
    pc = time.perf_counter
    while True:
        t0 = pc()
        try:
            m = q.get_nowait()
        except queue.Empty:
            waits += 1
            m = q.get()
        inside += pc() - t0
        if m is None:
            break
        if check:  # as bench_queue.py's consumer checks each item
            arr, k = m["data"], m["seq"] % 16
            if (arr.dtype != np.uint64 or arr.shape != (8192,) or int(arr[0]) != k or int(arr[-1]) != 8191 + k
                    or int(arr[::64].sum()) != sums[k]):
                raise SystemExit(f"item {m['seq']} differs")
        n += 1
    b = _ru()
    out.put(("consumer", n, waits, [y - x for x, y in zip(a, b)], inside))


def cpu(seconds: float, check: bool, nbytes: int) -> None:
    import multiprocessing as mp

    import shmring

    ctx = mp.get_context("fork")
    q, out, go = shmring.Queue(nbytes=nbytes), ctx.Queue(), ctx.Barrier(3)
    ps = [ctx.Process(target=_cpu_producer, args=(q, out, go, seconds), daemon=True),
          ctx.Process(target=_cpu_consumer, args=(q, out, go, check), daemon=True)]
    for p in ps:
        p.start()
    try:
        go.wait(60)
        res = sorted(out.get(timeout=120) for _ in ps)
    finally:
        for p in ps:
            p.join(30)
            if p.is_alive():
                p.kill()
    print(f"1 -> 1, 64 KiB item, nbytes={nbytes}, check={check}, load average {os.getloadavg()[0]:.1f}; per item:")
    for who, n, waits, (cputime, vcs, ivcs, flt, wall), inside in res:
        print(f"  {who:9} {n} items, wall {wall / n * 1e6:.2f} us, cpu {cputime / n * 1e6:.2f} us, "
              f"found {'full' if who == 'producer' else 'empty'} {waits / n:.3f}, voluntary switches "
              f"{vcs / n:.3f}, involuntary {ivcs / n:.3f}, minor faults {flt / n:.2f}"
              + (f", inside get {inside / n * 1e6:.2f} us" if who == "consumer" else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--what", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--cpu", action="store_true", help="per-process CPU and waits of a 1 -> 1 run instead")
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--check", action="store_true", help="--cpu: the consumer checks each item as bench_queue.py")
    ap.add_argument("--nbytes", type=int, default=8 << 20, help="--cpu: the queue's nbytes")
    args = ap.parse_args()
    if args.cpu:
        cpu(args.seconds, args.check, args.nbytes)
        return
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
