"""Do producer and consumer run side by side, or take turns? 1024 records per call.

    python benchmarks/turns.py [--runs 8] [--calls 3000] [--capacity 16384]
                               [--spin 20e-6] [--pin none|same|split]

One producer pushes ``--calls`` arrays of 1024 64-byte records, one consumer pops
them with pop_many(1024), each in its own process, unpinned by default. Per run it
prints the rate, each side's CPU time, and counts that do not depend on how busy the
machine is: voluntary context switches (futex sleeps), involuntary ones (a
sched_yield that handed the CPU over, or a preemption), migrations, how often the two
sides were seen on the same CPU (sampled every 32 calls), and each handle's wait
counts (``_wait_stats()``: waits, spun, spin_won, slept_at_once, switches; absent
in builds before the spin policy, so the script also measures older builds).

Signatures: both sides on one CPU with voluntary switches near 0 and involuntary ones
near calls / (capacity / 1024) are two processes passing the CPU back and forth by
sched_yield: wall time is the sum of their CPU times. Sides on different CPUs spin
through the short waits (spin_won close to spun) and rarely sleep.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import numpy as np

import shmring

REC = np.dtype([("seq", "<u8"), ("pad", "V56")])
BATCH = 1024


def _sched() -> dict:
    d = {}
    with open("/proc/self/sched") as f:
        for line in f:
            k, sep, v = line.partition(":")
            if sep:
                d[k.strip()] = v.strip()
    return {"mig": int(d.get("se.nr_migrations", 0)), "vol": int(d.get("nr_voluntary_switches", 0)),
            "invol": int(d.get("nr_involuntary_switches", 0))}


def _cpu_now() -> int:
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[36])


def _side(role, name, calls, spin, cpu, start, out):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    ring = shmring.Ring.attach(name, dtype=REC)
    h = ring.producer(spin=spin) if role == "p" else ring.consumer(start="oldest", spin=spin)
    arr = np.zeros(BATCH, REC)
    arr["seq"] = np.arange(BATCH)
    cpus, got, i = [], 0, 0
    start.wait()
    s0, t0, c0 = _sched(), time.perf_counter(), time.process_time()
    if role == "p":
        for i in range(calls):
            if i & 31 == 0:
                cpus.append(_cpu_now())
            h.push_many(arr, timeout=60)
    else:
        while got < calls * BATCH:
            if i & 31 == 0:
                cpus.append(_cpu_now())
            got += len(h.pop_many(BATCH, timeout=60))
            i += 1
    t1, c1, s1 = time.perf_counter(), time.process_time(), _sched()
    ws = h._wait_stats() if hasattr(h, "_wait_stats") else None
    out.put((role, t1 - t0, c1 - c0, {k: s1[k] - s0[k] for k in s0}, cpus, ws, got))
    h.close()
    ring.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--capacity", type=int, default=16384)
    ap.add_argument("--spin", type=float, default=20e-6)
    ap.add_argument("--pin", choices=("none", "same", "split"), default="none")
    a = ap.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    pc, cc = {"none": (None, None), "same": (cpus[0], cpus[0]), "split": (cpus[0], cpus[-1])}[a.pin]
    ctx = mp.get_context("fork")
    print(f"shmring {shmring.__file__}; load average {os.getloadavg()[0]:.2f}; capacity {a.capacity}, "
          f"{a.calls} calls of {BATCH}, spin {a.spin:g} s, pin {a.pin}")
    rates = []
    for k in range(a.runs):
        ring = shmring.Ring.create(None, REC, a.capacity, mode="queue", unlink_on_close=True)
        out, start = ctx.Queue(), ctx.Barrier(3)
        ps = [ctx.Process(target=_side, args=("c", ring.name, a.calls, a.spin, cc, start, out), daemon=True),
              ctx.Process(target=_side, args=("p", ring.name, a.calls, a.spin, pc, start, out), daemon=True)]
        try:
            for p in ps:
                p.start()
            start.wait(60)
            res = {}
            for _ in ps:
                r = out.get(timeout=120)
                res[r[0]] = r
        finally:
            for p in ps:
                p.join(10)
                if p.is_alive():
                    p.kill()
                    p.join(5)
            ring.close()
        assert res["c"][6] == a.calls * BATCH, res["c"][6]
        wall = max(res["p"][1], res["c"][1])
        rate = a.calls * BATCH / wall / 1e6
        rates.append(rate)
        same = sum(x == y for x, y in zip(res["p"][4], res["c"][4]))
        n = min(len(res["p"][4]), len(res["c"][4]))
        print(f"run {k}: {rate:6.1f} M rec/s  wall {wall * 1e3:6.1f} ms  same CPU {same:3d}/{n}")
        for role, label in (("p", "producer"), ("c", "consumer")):
            _, _, cpu, sch, _, ws, _ = res[role]
            wtxt = "" if ws is None else "  waits {waits} spun {spun} won {spin_won} slept_at_once {slept_at_once}".format(**ws)
            print(f"    {label}: cpu {cpu * 1e3:5.1f} ms  voluntary {sch['vol']:4d}  involuntary {sch['invol']:4d}  "
                  f"migrations {sch['mig']:2d}{wtxt}")
    rates.sort()
    med = rates[len(rates) // 2]
    print(f"min / median / max: {rates[0]:.1f} / {med:.1f} / {rates[-1]:.1f} M rec/s; slowest / median "
          f"{rates[0] / med:.2f}; load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
