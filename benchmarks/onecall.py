"""Where does the one-record-per-call rate go between two processes?

    python benchmarks/onecall.py [--runs 5] [--records 2000000] [--capacity 16384]
                                 [--mode queue|broadcast] [--max-consumers 4]
                                 [--pin none|same|split] [--bare] [--gc-off] [--spin 20e-6]

One producer pushes ``--records`` 64-byte records one per call, as compare.py's default
producer does (an ``isinstance`` check and one extra call per record, the collector on,
not pinned; ``--bare`` drops the extra work, ``--gc-off`` the collector); one consumer pops
them one per call and checks every sequence number. Each run first times the same
producer alone (into a broadcast ring nobody reads, which never blocks), then the pair;
the ratio delivered / alone is measured within the run.

Per run it prints, besides the rates, counts that do not depend on how busy the machine
is: each side's CPU time; voluntary context switches (futex sleeps) and involuntary ones
(yields, preemptions); how often a push found the ring full and a pop found it empty
(the handle's ``_wait_stats()``: waits, spins, spins that ended the wait); and the
consumer's backlog (records published and not yet popped), sampled every 4096 pops.

Signatures: a backlog near the capacity says the consumer is the slower side and the
producer waits on a full ring; near zero, the consumer waits on an empty one. Waits per
record near 1 in either direction mean the two sides hand the ring's edge back and forth
one record at a time.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import queue
import time

import numpy as np

import shmring
from turns import _sched  # context switches and migrations from /proc/self/sched

REC = np.dtype([("seq", "<u8"), ("ts", "<u8"), ("px", "<f8", (6,))])


def prepare(item):
    """The one extra call of compare.py's default producer."""
    return item


def _place(cpu, gc_off):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if gc_off:
        gc.disable()


def _producer(name, n, spin, cpu, gc_off, bare, start, done, out):
    _place(cpu, gc_off)
    ring = shmring.Ring.attach(name, dtype=REC)
    prod = ring.producer(spin=spin)
    push = prod.push
    item = np.zeros(1, REC)[0]  # one np.void pushed n times, as compare.py does
    item["seq"] = 7
    typ = type(item)
    start.wait(60)
    s0, t0, c0 = _sched(), time.perf_counter(), time.process_time()
    if bare:
        for _ in range(n):
            push(item)
    else:
        for _ in range(n):
            if isinstance(item, typ):
                push(prepare(item))
    t1, c1, s1 = time.perf_counter(), time.process_time(), _sched()
    done.set()
    out.put(("p", t0, t1, c1 - c0, {k: s1[k] - s0[k] for k in s0}, prod._wait_stats(), None))
    prod.close()
    ring.close()


def _consumer(name, n, spin, cpu, gc_off, start, done, out):
    _place(cpu, gc_off)
    ring = shmring.Ring.attach(name, dtype=REC)
    cons = ring.consumer(start="oldest", spin=spin)
    pop = cons.pop
    length = cons.__len__
    backlog = []
    start.wait(60)
    s0, t0, c0 = _sched(), time.perf_counter(), time.process_time()
    for i in range(n):
        pop(timeout=60)  # Empty after a minute: fewer records than pushed
        if i & 4095 == 0:
            backlog.append(length())
    t1, c1, s1 = time.perf_counter(), time.process_time(), _sched()
    # exactly n: once the producer is done, nothing may be left over
    left = -1
    if done.wait(60):
        try:
            left = int(cons.try_pop() is not None)
        except shmring.Closed:  # the producer closed its handle: drained
            left = 0
    backlog.append(left)
    out.put(("c", t0, t1, c1 - c0, {k: s1[k] - s0[k] for k in s0}, cons._wait_stats(), backlog))
    cons.close()
    ring.close()


def _run(ctx, targets, timeout=120):
    out = ctx.Queue()
    procs = [ctx.Process(target=f, args=a + (out,), daemon=True) for f, a in targets]
    res = {}
    try:
        for p in procs:
            p.start()
        until = time.monotonic() + timeout
        while len(res) < len(procs):
            try:
                r = out.get(timeout=1)
            except queue.Empty:
                if time.monotonic() > until or any(p.exitcode not in (None, 0) for p in procs):
                    raise RuntimeError("a side failed or timed out") from None
                continue
            res[r[0]] = r
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
    return res


def _ws(ws, n):
    return (f"waits {ws['waits']} ({ws['waits'] / n:.4f}/rec) spun {ws['spun']} won {ws['spin_won']} "
            f"slept_at_once {ws['slept_at_once']} dense {ws.get('dense', 0)} won {ws.get('dense_won', 0)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--capacity", type=int, default=16384)
    ap.add_argument("--mode", choices=("queue", "broadcast"), default="queue")
    ap.add_argument("--max-consumers", type=int, default=4)
    ap.add_argument("--pin", choices=("none", "same", "split"), default="none")
    ap.add_argument("--bare", action="store_true", help="the producer pushes in a bare loop")
    ap.add_argument("--gc-off", action="store_true")
    ap.add_argument("--spin", type=float, default=20e-6)
    ap.add_argument("--no-alone", action="store_true", help="skip the producer-alone run")
    a = ap.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    pc, cc = {"none": (None, None), "same": (cpus[0], cpus[0]), "split": (cpus[0], cpus[-1])}[a.pin]
    ctx = mp.get_context("fork")
    n = a.records
    print(f"shmring {shmring.__version__}; load average {os.getloadavg()[0]:.2f}; {a.mode}, capacity "
          f"{a.capacity}, max_consumers {a.max_consumers}, {n} records one per call, spin {a.spin:g} s, "
          f"pin {a.pin}, producer {'bare' if a.bare else 'isinstance + prepare()'}, "
          f"gc {'off' if a.gc_off else 'on'}")
    ratios, rates = [], []
    for k in range(a.runs):
        alone = None
        if not a.no_alone:
            ring = shmring.Ring.create(None, REC, a.capacity, mode="broadcast", unlink_on_close=True)
            try:
                res = _run(ctx, [(_producer, (ring.name, n, a.spin, pc, a.gc_off, a.bare, ctx.Barrier(1),
                                                 ctx.Event()))])
            finally:
                ring.close()
            alone = n / (res["p"][2] - res["p"][1]) / 1e6
        ring = shmring.Ring.create(None, REC, a.capacity, mode=a.mode, max_consumers=a.max_consumers,
                                   unlink_on_close=True)
        start, done = ctx.Barrier(2), ctx.Event()
        try:
            res = _run(ctx, [(_consumer, (ring.name, n, a.spin, cc, a.gc_off, start, done)),
                             (_producer, (ring.name, n, a.spin, pc, a.gc_off, a.bare, start, done))])
        finally:
            ring.close()
        backlog = res["c"][6]
        if backlog.pop() != 0:
            print(f"run {k}: records left in the ring after {n} pops")
            return 1
        wall = max(res["c"][2], res["p"][2]) - min(res["c"][1], res["p"][1])
        rate = n / wall / 1e6
        rates.append(rate)
        line = f"run {k}: delivered {rate:5.2f} M/s"
        if alone is not None:
            ratios.append(rate / alone)
            line += f"  producer alone {alone:5.2f} M/s  ratio {rate / alone:.2f}"
        bl = np.array(backlog)
        print(f"{line}  backlog median {int(np.median(bl))} (min {bl.min()}, max {bl.max()}) of {a.capacity}")
        for role, label in (("p", "producer"), ("c", "consumer")):
            _, t0, t1, cpu, sch, ws, _ = res[role]
            print(f"    {label}: wall {(t1 - t0) * 1e3:6.1f} ms cpu {cpu * 1e3:6.1f} ms ({cpu / n * 1e9:4.0f} ns/rec)  vol {sch['vol']:5d}  "
                  f"invol {sch['invol']:4d}  mig {sch['mig']:3d}  {_ws(ws, n)}")
    rates.sort()
    summary = f"delivered min / median / max {rates[0]:.2f} / {rates[len(rates) // 2]:.2f} / {rates[-1]:.2f} M/s"
    if ratios:
        ratios.sort()
        summary += f"; delivered / alone min / median / max {ratios[0]:.2f} / {ratios[len(ratios) // 2]:.2f} / {ratios[-1]:.2f}"
    print(f"{summary}; load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
