#!/usr/bin/env python3
"""shmring.Queue against multiprocessing.Queue and faster-fifo, in faster-fifo's own scenarios.

    python benchmarks/bench_queue.py [--quick] [--json out.json] [--start-method spawn]

faster-fifo's README compares it with multiprocessing.Queue on many producers
and consumers putting and getting small messages. The same scenarios run here,
each queue measured in this same run, with two messages:

  small   a tuple of an int, a float and a short string: (seq, seq / 4, "worker-07")
  64 KiB  a dict holding a 64 KiB numpy array: {"worker": ..., "seq": ..., "data": <8192 uint64>}

  1 -> 1     one producer, one consumer
  10 -> 1    ten producers, one consumer
  20 -> 20   twenty producers, twenty consumers (oversubscribed on purpose: 40 processes
             on however many CPUs there are)
  4 -> 4     four producers, four consumers

Every queue is used as its users use it: `put(obj)` and `get()` with their
defaults, processes not pinned, the garbage collector on, `import
faster_fifo_reduction` as faster-fifo's README says. Every queue is created
with its defaults (faster-fifo: a 1 MB buffer; shmring.Queue: 8 MiB per
producer process) except multiprocessing.Queue, which gets a `maxsize` of as
many items as fit in 1 MB pickled: unbounded, its producers would run far
ahead of the consumers and the run would time the drain of a backlog.

Each producer puts one warm-up item before the clock starts (what a queue sets
up on a producer's first put is not timed, as the process start is not), then
puts for a fixed time, then one end marker per consumer; a consumer
stops after as many end markers as there are producers (every producer's
markers follow its items, so once all consumers stopped every item was taken).
The 64 KiB arrays: each producer makes 16 distinct arrays before the clock
starts and puts them in turn, never changing one after it is put
(multiprocessing.Queue pickles in a feeder thread after put() returns). A new
array per item and a full sum of it per get cost more than shmring.Queue's
whole put and get of that dict, the same for every queue, and so measured
the benchmark more than the queues.
Every consumer checks what arrived: each producer's sequence numbers must
increase, the float must match the sequence number, and the array must be the
one its sequence number names (dtype, shape, first and last word, and the sum
of every 64th word, one per 512 bytes); the parent
then checks that every producer's items arrived exactly once (count, sum and
xor of the sequence numbers) before a figure is printed. A queue that loses,
duplicates, reorders or corrupts an item posts "FAILED", not a rate.

Rate: items delivered / (last item received - first producer started), the
median of the runs (1 with --quick, 3 without), with the slowest and fastest.
"""

from __future__ import annotations

import argparse
import json
import mmap
import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the harness package

from harness.machine import OtherLoad, machine_info  # noqa: E402
from harness.processes import CaseFailed, run_procs  # noqa: E402
from harness.report import fmt_gain, fmt_rate  # noqa: E402
from harness.runner import median_run  # noqa: E402

try:  # as faster-fifo's README says, before its queues cross a process boundary
    import faster_fifo_reduction  # noqa: F401
except ImportError:
    pass

SCENARIOS = [(1, 1), (10, 1), (20, 20), (4, 4)]
MESSAGES = {"small": "small tuple (int, float, str)", "64k": "dict holding a 64 KiB array"}
SHORT = {"small": "small tuple", "64k": "64 KiB array dict"}
QUEUES = ["shmring.Queue", "mp.Queue", "faster-fifo"]
TARGETS = {"mp.Queue": 10.0, "faster-fifo": 3.0}
CAPACITY = 1_000_000  # faster-fifo's default buffer: multiprocessing.Queue gets as many items
ARRAY_LEN = 8192  # uint64: 64 KiB
BASE = np.arange(ARRAY_LEN, dtype=np.uint64)
POOL = 16  # distinct arrays a producer puts in turn (see the top)
SAMPLE = slice(None, None, 64)  # one word per 512 bytes
SAMPLE_SUMS = [int((BASE + np.uint64(k))[SAMPLE].sum()) for k in range(POOL)]


def array_pool() -> list:
    return [BASE + np.uint64(k) for k in range(POOL)]
RUNS = {
    "quick": dict(seconds=0.25, repeats=1),
    "full": dict(seconds=1.0, repeats=3),
}
CHUNK = {"small": 64, "64k": 4}  # puts between two clock reads
TIMEOUT = 120.0  # a run that takes longer is killed and reported as failed


def worker_name(p: int) -> str:
    return f"worker-{p:02d}"


def make_item(kind: str, p: int, seq: int, pool: list | None = None):
    if kind == "small":
        return (seq, seq / 4, worker_name(p))
    # arrays are never changed once put: multiprocessing.Queue pickles in a feeder
    # thread after put() returns, so a changed array could be sent changed
    return {"worker": worker_name(p), "seq": seq,
            "data": pool[seq % POOL] if pool is not None else BASE + np.uint64(seq % POOL)}


# ---- the queues ------------------------------------------------------------------------

def unavailable(queue: str) -> str | None:
    """None if the queue can run here, else why not."""
    try:
        if queue == "faster-fifo":
            import faster_fifo  # noqa: F401
        elif queue == "shmring.Queue":
            import shmring

            if not hasattr(shmring, "Queue"):
                return "this shmring has no Queue"
    except Exception as exc:
        return f"not importable ({type(exc).__name__}: {exc})"
    return None


def version_of(queue: str) -> str | None:
    from importlib.metadata import version

    dist = {"faster-fifo": "faster-fifo", "shmring.Queue": "shmring"}.get(queue)
    try:
        return version(dist) if dist else None
    except Exception:
        return None


def make_queue(queue: str, ctx, kind: str):
    if queue == "mp.Queue":
        size = len(pickle.dumps(make_item(kind, 0, 10 ** 6)))
        return ctx.Queue(maxsize=max(1, CAPACITY // size))
    if queue == "faster-fifo":
        import faster_fifo

        return faster_fifo.Queue()  # its default buffer is CAPACITY bytes
    import shmring

    return shmring.Queue()  # its default: each producer process's lane holds 8 MiB


def close_queue(queue: str, q) -> None:
    q.close()
    if queue == "mp.Queue":
        q.join_thread()


# ---- the processes -------------------------------------------------------------------------

def warm_up_item(kind: str, p: int):
    """The first item of every producer, put before the clock starts (sequence number -1)."""
    if kind == "small":
        return (-1, -1 / 4, worker_name(p))
    return {"worker": worker_name(p), "seq": -1, "data": BASE.copy()}


def producer(barrier, producers_ready, q, kind, p, consumers, seconds):
    put = q.put
    k = CHUNK[kind]
    seq = 0
    pool = array_pool() if kind != "small" else None
    barrier.wait(60)
    # Set-up a queue does on a producer's first put (shmring.Queue reserves the process's
    # lane: ~15-45 ms for its default 8 MiB here) is paid before the clock starts, as the
    # process start is: the figure is the stream's rate, not the set-up's.
    put(warm_up_item(kind, p))
    producers_ready.wait(60)
    t0 = time.monotonic()
    end = t0 + seconds
    while True:
        for _ in range(k):
            put(make_item(kind, p, seq, pool))
            seq += 1
        if time.monotonic() >= end:
            break
    for _ in range(consumers):
        put(None)
    return {"producer": p, "sent": seq, "t_start": t0}


def consumer(barrier, q, kind, producers):
    """Takes items until it has seen one end marker per producer; checks each item."""
    get = q.get
    ids = {worker_name(p): p for p in range(producers)}
    last = [-1] * producers  # the warm-up item (-1) takes the slow branch below
    warm = [0] * producers
    count = [0] * producers
    ssum = [0] * producers
    sxor = [0] * producers
    bad = []
    ends = 0
    # A blocking get() with its default arguments must not raise Empty; faster-fifo's does
    # when another consumer takes the item while this one grows its receive buffer for an
    # item larger than that buffer. A user would retry; so does this loop, counting them
    # (the harness's case timeout still ends a queue that never delivers).
    spurious = 0
    t_last = None
    barrier.wait(60)
    if kind == "small":
        while True:
            try:
                m = get()
            except queue.Empty:
                spurious += 1
                continue
            if m is None:
                ends += 1
                if ends == producers:
                    break
                continue
            seq, x, name = m
            p = ids[name]
            if seq <= last[p] or x != seq / 4:
                if seq == -1 and x == -1 / 4 and not warm[p]:
                    warm[p] = 1
                    continue
                bad.append((p, seq, last[p], x))
            last[p] = seq
            count[p] += 1
            ssum[p] += seq
            sxor[p] ^= seq
            t_last = time.monotonic()
    else:
        n = ARRAY_LEN
        while True:
            try:
                m = get()
            except queue.Empty:
                spurious += 1
                continue
            if m is None:
                ends += 1
                if ends == producers:
                    break
                continue
            p = ids[m["worker"]]
            seq = m["seq"]
            a = m["data"]
            k = seq % POOL
            if (seq <= last[p] or a.dtype != np.uint64 or a.shape != (n,) or int(a[0]) != k
                    or int(a[-1]) != n - 1 + k or int(a[SAMPLE].sum()) != SAMPLE_SUMS[k]):
                if seq == -1 and not warm[p] and a.shape == (n,) and int(a[SAMPLE].sum()) == SAMPLE_SUMS[0]:
                    warm[p] = 1
                    continue
                bad.append((p, seq, last[p], "array differs"))
            last[p] = seq
            count[p] += 1
            ssum[p] += seq
            sxor[p] ^= seq
            t_last = time.monotonic()
    return {"count": count, "sum": ssum, "xor": sxor, "bad": bad[:5], "nbad": len(bad), "t_last": t_last, "warm": warm,
            "spurious_empty": spurious}


def _xor_upto(n: int) -> int:
    """0 ^ 1 ^ ... ^ (n - 1)."""
    m = n - 1
    return [m, 1, m + 1, 0][m % 4] if n > 0 else 0


def check(prods: list, cons: list) -> tuple[int, str | None]:
    """(items delivered, None) if every producer's items arrived exactly once and intact,
    else (delivered, what is wrong)."""
    total = 0
    for pr in prods:
        p, n = pr["producer"], pr["sent"]
        warm = sum(c["warm"][p] for c in cons)
        if warm != 1:
            return total, f"{worker_name(p)}'s warm-up item arrived {warm} times"
        got = sum(c["count"][p] for c in cons)
        s = sum(c["sum"][p] for c in cons)
        x = 0
        for c in cons:
            x ^= c["xor"][p]
        if got != n or s != n * (n - 1) // 2 or x != _xor_upto(n):
            return total, (f"{worker_name(p)} sent {n} items, {got} arrived"
                           + ("" if got != n else " but not each exactly once (sequence sums differ)"))
        total += n
    nbad = sum(c["nbad"] for c in cons)
    if nbad:
        first = next(c["bad"][0] for c in cons if c["bad"])
        return total, f"{nbad} items out of order or corrupt (first: {first})"
    return total, None


def measure(ctx, queue: str, kind: str, producers: int, consumers: int, seconds: float) -> dict:
    q = make_queue(queue, ctx, kind)
    meter = OtherLoad()
    try:
        ready = ctx.Barrier(producers)
        specs = [(producer, dict(producers_ready=ready, q=q, kind=kind, p=p, consumers=consumers,
                                 seconds=seconds, cpu=None, gc_off=False)) for p in range(producers)]
        specs += [(consumer, dict(q=q, kind=kind, producers=producers, cpu=None, gc_off=False))
                  for _ in range(consumers)]
        out = run_procs(ctx, specs, timeout=TIMEOUT)
    finally:
        close_queue(queue, q)
    prods, cons = out[:producers], out[producers:]
    delivered, wrong = check(prods, cons)
    if wrong:
        raise CaseFailed(wrong)
    t0 = min(pr["t_start"] for pr in prods)
    t1 = max(c["t_last"] for c in cons if c["t_last"] is not None)
    r = {"items": delivered, "seconds": t1 - t0, "items_per_s": delivered / (t1 - t0),
         "per_consumer": [sum(c["count"]) for c in cons],
         "spurious_empty": sum(c["spurious_empty"] for c in cons)}
    r.update(meter.stop())
    return r


# ---- the run and the report --------------------------------------------------------------

FLOOR_SLOTS = 16
FLOOR_BYTES = 64 * 1024


def _floor_writer(buf, seconds: float) -> None:
    arr = np.frombuffer(buf, np.uint8)
    ctr = np.frombuffer(buf, np.int64, count=3, offset=FLOOR_SLOTS * FLOOR_BYTES)  # written, read, stop
    src = np.arange(FLOOR_BYTES, dtype=np.uint8)
    i = 0
    while not ctr[2]:
        while ctr[0] - ctr[1] >= FLOOR_SLOTS and not ctr[2]:
            os.sched_yield()
        k = i % FLOOR_SLOTS
        np.copyto(arr[k * FLOOR_BYTES:(k + 1) * FLOOR_BYTES], src)
        i += 1
        ctr[0] = i


def copy_floor(ctx, seconds: float) -> float:
    """Items/s of the bare hand-off under the 64 KiB message: one process copies
    64 KiB into shared memory, another copies it out (numpy copies, 16 slots, a
    counter each way, waits that yield): no queue, no pickle, no Python object per
    item. What moving the bytes between two processes costs on this machine."""
    buf = mmap.mmap(-1, FLOOR_SLOTS * FLOOR_BYTES + 4096)
    arr = np.frombuffer(buf, np.uint8)
    ctr = np.frombuffer(buf, np.int64, count=3, offset=FLOOR_SLOTS * FLOOR_BYTES)
    dst = np.empty(FLOOR_BYTES, np.uint8)
    w = ctx.Process(target=_floor_writer, args=(buf, seconds), daemon=True)
    w.start()
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        while ctr[0] <= n:
            os.sched_yield()
        k = n % FLOOR_SLOTS
        np.copyto(dst, arr[k * FLOOR_BYTES:(k + 1) * FLOOR_BYTES])
        n += 1
        ctr[1] = n
        if (n & 63) == 0 and time.perf_counter() >= end:
            break
    rate = n / (time.perf_counter() - t0)
    ctr[2] = 1
    w.join(10)
    if w.is_alive():
        w.kill()
    del arr, ctr
    return rate


def label(producers: int, consumers: int) -> str:
    return f"{producers} -> {consumers}"


def run_all(args, cfg, log) -> dict:
    ctx = mp.get_context(args.start_method)
    queues = [q for q in QUEUES if not args.queues or q in args.queues]
    missing = {q: why for q in queues if (why := unavailable(q))}
    results: dict = {"missing": missing, "rows": []}
    for kind in args.messages:
        for producers, consumers in SCENARIOS:
            if args.scenarios and f"{producers}x{consumers}" not in args.scenarios:
                continue
            for qname in queues:
                row = {"queue": qname, "message": kind, "scenario": label(producers, consumers)}
                if qname in missing:
                    row["status"] = f"skipped: {missing[qname]}"
                    results["rows"].append(row)
                    continue
                runs = []
                for _ in range(cfg["repeats"]):
                    t = time.monotonic()
                    try:
                        r = measure(ctx, qname, kind, producers, consumers, cfg["seconds"])
                        r["status"] = "ok"
                    except CaseFailed as exc:
                        r = {"status": f"FAILED: {str(exc).splitlines()[0]}"}
                        log(str(exc))
                    except Exception as exc:
                        r = {"status": f"FAILED: {type(exc).__name__}: {exc}"}
                        log(traceback.format_exc())
                    log(f"  {kind:5s} {label(producers, consumers):8s} {qname:14s} {r['status'][:60]:8s} "
                        + (f"{fmt_rate(r['items_per_s']).strip()} items/s " if r["status"] == "ok" else "")
                        + f"({time.monotonic() - t:.1f} s)")
                    runs.append(r)
                    if r["status"] != "ok":
                        break
                ok = [r for r in runs if r["status"] == "ok"]
                if kind == "64k" and (producers, consumers) == (1, 1) and qname == queues[0]:
                    floors = [copy_floor(ctx, cfg["seconds"]) for _ in range(cfg["repeats"])]
                    results["floor_64k"] = max(floors)
                    log(f"  64k   floor    bare copy in/out  {fmt_rate(max(floors)).strip()} items/s (best of {len(floors)})")
                if ok and len(ok) == len(runs):
                    row.update(median_run(ok, "items_per_s"))
                    row["spurious_empty"] = sum(r["spurious_empty"] for r in ok)
                else:
                    row.update(runs[-1])
                results["rows"].append(row)
    return results


def _row(rows, queue, kind, scen):
    for r in rows:
        if r["queue"] == queue and r["message"] == kind and r["scenario"] == scen:
            return r
    return None


def _ok(r) -> bool:
    return r is not None and r.get("status") == "ok"


def report(results: dict, machine: dict, cfg: dict, start_method: str) -> tuple[str, list]:
    rows = results["rows"]
    m = machine
    L = [f"Machine: {m['cpu']}, {m['cores']} cores ({m['cpus_available']} usable)"
         f"{', virtualized' if m.get('virtualized') else ''}; Linux {m['kernel']}; Python {m['python']}; "
         f"numpy {m['versions']['numpy']}",
         "Queues: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if k != "numpy" and v)
         + f"; shmring commit {m.get('commit')}",
         f"Processes started with {start_method!r}, not pinned, GC on; each producer puts for "
         f"{cfg['seconds']:.2f} s; {cfg['repeats']} run(s) per row (median, [slowest-fastest])"]
    if m.get("loadavg"):
        L.append("Load average at the start: " + " ".join(f"{x:.2f}" for x in m["loadavg"])
                 + (" / at the end: " + " ".join(f"{x:.2f}" for x in m["loadavg_end"]) if m.get("loadavg_end") else ""))
    L.append("* = other processes used more than 10% of the CPUs during that row")
    for q, why in results["missing"].items():
        L.append(f"{q}: skipped: {why}")
    L.append("")
    queues = []
    for r in rows:
        if r["queue"] not in queues:
            queues.append(r["queue"])
    targets = []
    for kind in MESSAGES:
        krows = [r for r in rows if r["message"] == kind]
        if not krows:
            continue
        L.append(f"{MESSAGES[kind]}: items/s delivered (all consumers together)")
        L.append(f"  {'scenario':10s}" + "".join(f" {q:>30s}" for q in queues)
                 + f" {'shmring/mp.Queue':>17s} {'shmring/faster-fifo':>20s} {'faster-fifo/mp.Queue':>21s}")
        for prod, cons in SCENARIOS:
            scen = label(prod, cons)
            if not any(r["scenario"] == scen for r in krows):
                continue
            cells = []
            for q in queues:
                r = _row(rows, q, kind, scen)
                if r is None:
                    cells.append("-")
                elif not _ok(r):
                    cells.append(r["status"].split(":")[0])
                else:
                    mark = "*" if r.get("other_load", 0) > 0.10 else ""
                    sp = r.get("spread", {})
                    rng = (f" [{fmt_rate(sp['min']).strip()}-{fmt_rate(sp['max']).strip()}]"
                           if sp.get("runs", 1) > 1 else "")
                    cells.append(f"{fmt_rate(r['items_per_s']).strip()}{rng}{mark}")
            shm = _row(rows, "shmring.Queue", kind, scen)
            ratios = []
            for peer in ("mp.Queue", "faster-fifo"):
                other = _row(rows, peer, kind, scen)
                if _ok(shm) and _ok(other):
                    g = shm["items_per_s"] / other["items_per_s"]
                    ratios.append(fmt_gain(g))
                    targets.append({"message": kind, "scenario": scen, "peer": peer, "ratio": g,
                                    "target": TARGETS[peer], "met": g >= TARGETS[peer]})
                else:
                    ratios.append("n/a")
            ff, mq = _row(rows, "faster-fifo", kind, scen), _row(rows, "mp.Queue", kind, scen)
            ratios.append(fmt_gain(ff["items_per_s"] / mq["items_per_s"]) if _ok(ff) and _ok(mq) else "n/a")
            L.append(f"  {scen:10s}" + "".join(f" {c:>30s}" for c in cells)
                     + f" {ratios[0]:>17s} {ratios[1]:>20s} {ratios[2]:>21s}")
        floor = results.get("floor_64k")
        shm11 = _row(rows, "shmring.Queue", kind, label(1, 1))
        if kind == "64k" and floor:
            L.append(f"  floor, 1 -> 1: 64 KiB copied into shared memory by one process and out by another "
                     f"(numpy, no queue, no pickle, best of {cfg['repeats']}): {fmt_rate(floor).strip()} items/s"
                     + (f"; shmring.Queue 1 -> 1 is {shm11['items_per_s'] / floor:.2f} of it" if _ok(shm11) else ""))
        for r in krows:
            if r.get("status", "").startswith("FAILED"):
                L.append(f"  {r['queue']} {r['scenario']}: {r['status']}")
            elif r.get("spurious_empty"):
                L.append(f"  {r['queue']} {r['scenario']}: a blocking get() raised queue.Empty "
                         f"{r['spurious_empty']} time(s) while items were still coming (retried)")
        L.append("")
    L.append("Targets (shmring.Queue, every scenario, default settings, no pinning)")
    for peer, want in TARGETS.items():
        mine = [t for t in targets if t["peer"] == peer]
        if not mine:
            why = results["missing"].get("shmring.Queue") or results["missing"].get(peer) or "no figures"
            L.append(f"  [n/a ] >= {want:g}x {peer:12s} not measured: {why}")
            continue
        for t in mine:
            L.append(f"  [{'MET ' if t['met'] else 'MISS'}] >= {want:g}x {peer:12s} {SHORT[t['message']]:17s} "
                     f"{t['scenario']:8s} measured {fmt_gain(t['ratio'])}")
    return "\n".join(L), targets


def markdown(results: dict) -> str:
    """The README's table: one row per message and scenario, rates and ratios of one run."""
    rows = results["rows"]
    L = ["| items/s, all consumers together | shmring.Queue | mp.Queue | faster-fifo "
         "| shmring / mp.Queue (target >= 10x) | shmring / faster-fifo (target >= 3x) |",
         "| --- | --- | --- | --- | --- | --- |"]
    for kind in MESSAGES:
        for prod, cons in SCENARIOS:
            scen = label(prod, cons)
            if not any(r["message"] == kind and r["scenario"] == scen for r in rows):
                continue
            got = {q: _row(rows, q, kind, scen) for q in QUEUES}
            cells = [fmt_rate(got[q]["items_per_s"]).strip() if _ok(got[q]) else "-" for q in QUEUES]
            shm = got["shmring.Queue"]
            ratios = [fmt_gain(shm["items_per_s"] / got[p]["items_per_s"]) if _ok(shm) and _ok(got[p]) else "-"
                      for p in ("mp.Queue", "faster-fifo")]
            L.append(f"| {SHORT[kind]}, {scen} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(L)


class _QueuePeer:
    """What harness.machine.machine_info asks of a peer: its name and version."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dist = None if name == "mp.Queue" else name

    def version(self) -> str | None:
        return version_of(self.name)


def main(argv=None) -> int:
    sys.stdout.reconfigure(line_buffering=True)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"{RUNS['quick']['seconds']} s per run, one run per row (under a minute)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds each producer puts for")
    ap.add_argument("--repeats", type=int, default=None, metavar="N", help="runs per row (the median is shown)")
    ap.add_argument("--queues", nargs="+", choices=QUEUES, help="run only these queues")
    ap.add_argument("--messages", nargs="+", choices=list(MESSAGES), default=list(MESSAGES),
                    help="run only these messages")
    ap.add_argument("--scenarios", nargs="+", choices=[f"{p}x{c}" for p, c in SCENARIOS],
                    help="run only these scenarios (PRODUCERSxCONSUMERS)")
    ap.add_argument("--start-method", choices=mp.get_all_start_methods(), default="fork",
                    help="how the producer and consumer processes start (default fork: 40 spawned "
                         "interpreters would take longer to start than the runs last)")
    ap.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    ap.add_argument("--from-json", metavar="PATH", help="measure nothing: print the report of a saved --json")
    ap.add_argument("--markdown", action="store_true", help="also print the README's table (markdown)")
    ap.add_argument("--silent", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    if args.seconds is not None and not 0.05 <= args.seconds <= 600:
        ap.error(f"--seconds must be between 0.05 and 600, got {args.seconds}")
    if args.repeats is not None and args.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        text, _ = report(saved["results"], saved["machine"], saved["config"], saved["start_method"])
        print(text)
        if args.markdown:
            print("\n" + markdown(saved["results"]))
        return 0
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # as compare.py: no idle BLAS threads per process
    cfg = dict(RUNS["quick" if args.quick else "full"])
    if args.seconds:
        cfg["seconds"] = args.seconds
    if args.repeats:
        cfg["repeats"] = args.repeats

    def log(msg):
        if not args.silent:
            print(msg, file=sys.stderr, flush=True)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    machine = machine_info([_QueuePeer(q) for q in QUEUES])
    t0 = time.monotonic()
    try:
        results = run_all(args, cfg, log)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    machine["loadavg_end"] = list(os.getloadavg())
    for q in results["missing"]:  # installed or not, it could not run here
        machine["versions"][q] = None
    text, targets = report(results, machine, cfg, args.start_method)
    print(text)
    if args.markdown:
        print("\n" + markdown(results))
    print(f"\n({time.monotonic() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "config": cfg, "start_method": args.start_method,
                       "results": results, "targets": targets}, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + 13)
