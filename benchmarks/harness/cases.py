"""The cases: what runs in the child processes, how a case's figures are computed, and the list
of cases the runner walks. Adding a case means adding one entry to `CASES` (and, for a new
kind of measurement, one `bench_*` function)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from glob import glob
from typing import Callable

import numpy as np

import peers

from .machine import HERE, ROOT
from .processes import CASE_TIMEOUT, run_procs, sync
from .records import BATCH, FRAME, REC, frame, prepare, tick_batch

# How the processes of a case run.
#   default: what a user gets: processes where the scheduler puts them, the garbage collector
#            on, and a producer that does a little work per record (an isinstance check and
#            one extra call) before handing it over
#   tuned:   each process pinned to its own CPU, the collector off, bare loops
CONFIGS = {
    "default": dict(pinned=False, gc_off=False, work=True),
    "tuned": dict(pinned=True, gc_off=True, work=False),
}


def _placement(config: str, cpu: int) -> dict:
    c = CONFIGS[config]
    return {"cpu": cpu if c["pinned"] else None, "gc_off": c["gc_off"]}


# ============================================================================
# (a) latency: ping-pong between two processes, round trip / 2
# ============================================================================


def lat_driver(barrier, peer, a2b, b2a, spin, n, max_s):
    p = peers.get(peer)
    tx = p.tx(a2b, spin)
    rx = p.rx(b2a, spin)
    sync(barrier, p, tx, rx)
    send, recv = tx.send1, rx.recv1
    item = p.item()
    pc = time.perf_counter_ns
    for _ in range(2000):  # warm-up
        send(item)
        item = recv()
    samples = [0] * n
    done = n
    # one clock read per round trip: sample i = time between consecutive reads
    t_prev = pc()
    stop_at = t_prev + int(max_s * 1e9)
    for i in range(n):
        send(item)
        item = recv()
        t = pc()
        samples[i] = t - t_prev
        t_prev = t
        if (i & 1023) == 0 and t > stop_at:
            done = i + 1
            break
    # what the same loop costs with no transfer (included in every sample); best of 5
    overhead = float("inf")
    for _ in range(5):
        t_prev = t0 = pc()
        for i in range(2000):
            t = pc()
            samples[0] = t - t_prev
            t_prev = t
        overhead = min(overhead, (pc() - t0) / 2000)
    p.stop_echo(tx)
    barrier.wait(60)
    rtt = np.array(samples[:done], dtype=np.int64)
    return {"rtt": rtt, "overhead_ns": overhead}


def lat_echo(barrier, peer, a2b, b2a, spin):
    p = peers.get(peer)
    rx = p.rx(a2b, spin)
    tx = p.tx(b2a, spin)
    sync(barrier, p, tx, rx)
    p.echo(tx, rx)
    barrier.wait(60)
    return None


def bench_latency(ctx, res, peer, cfg, wait, own_dtype=True) -> dict:
    spin = {"spin": 1.0, "sleep": 0.0}[wait]
    p = peers.get(peer)
    a2b = p.channel(res, ctx, "rec", capacity=1024, wait=wait, own_dtype=own_dtype)
    b2a = p.channel(res, ctx, "rec", capacity=1024, wait=wait, own_dtype=own_dtype)
    out = run_procs(ctx, [
        (lat_driver, dict(peer=peer, a2b=a2b, b2a=b2a, spin=spin, n=cfg["lat_n"], max_s=cfg["lat_s"],
                          **_placement("tuned", 0))),
        (lat_echo, dict(peer=peer, a2b=a2b, b2a=b2a, spin=spin, **_placement("tuned", 1))),
    ])
    rtt = out[0]["rtt"]
    ow = rtt / 2.0 / 1000.0  # one-way, microseconds
    return {
        "n": int(len(rtt)),
        "p50_us": float(np.percentile(ow, 50)),
        "p99_us": float(np.percentile(ow, 99)),
        "p999_us": float(np.percentile(ow, 99.9)),
        "mean_us": float(ow.mean()),
        "min_us": float(ow.min()),
        "loop_overhead_us": out[0]["overhead_ns"] / 2000.0,
    }


# ============================================================================
# (b) and (c) throughput: one producer, one consumer, time-boxed
# ============================================================================
# The producer sends in chunks of K calls and checks the clock between chunks; when time is up
# it announces the final count in `total` and sends one last chunk, so the consumer (which
# checks `total` after each chunk) stops exactly.

TP_K = {"rec": 512, "batch": 8, "frame": 1, "frame_zc": 16, "frame_fill": 2}  # calls per chunk
TP_KIND = {"rec": "rec", "batch": "batch", "frame": "frame", "frame_zc": "frame", "frame_fill": "frame"}


def _chunk(fn, item, k, work):
    """k calls of fn(item): bare, or with the per-record work of the "default" producer."""
    if not work:
        def chunk():
            for _ in range(k):
                fn(item)
    else:
        typ = type(item)

        def chunk():
            for _ in range(k):
                if isinstance(item, typ):
                    fn(prepare(item))
    return chunk


def tp_producer(barrier, peer, chan, what, spin, seconds, total, work=False):
    p = peers.get(peer)
    tx = p.tx(chan, spin)
    fn, item = {
        "rec": (tx.send1, p.item()),
        "batch": (tx.send_batch, tick_batch()),
        "frame": (tx.send_frame, frame()),
        "frame_fill": (tx.send_frame_fill, frame()),  # zero-copy, the producer writes the frame in place
        "frame_zc": (tx.send_frame_zc, 1),  # zero-copy frames, marker only
    }[what]
    k = TP_K[what]
    per_call = BATCH if what == "batch" else 1
    chunk = _chunk(fn, item, k, work)
    sync(barrier, p, tx)
    chunk()  # warm-up: one chunk, consumed before the clock starts
    barrier.wait(60)
    pc = time.perf_counter_ns
    t0 = pc()
    deadline = t0 + int(seconds * 1e9)
    calls = 0
    while True:
        if pc() >= deadline:
            total.value = calls + k  # announced before the last chunk goes out
            chunk()
            calls += k
            break
        chunk()
        calls += k
    t_sent = pc()
    barrier.wait(CASE_TIMEOUT)  # stay alive (and connected) until the consumer has everything
    return {"t0": t0, "t_sent": t_sent, "calls": calls, "records": calls * per_call}


def tp_consumer(barrier, peer, chan, what, spin, total):
    p = peers.get(peer)
    rx = p.rx(chan, spin)
    fn = {"rec": rx.recv1, "batch": rx.recv_batch, "frame": rx.recv_frame, "frame_zc": rx.recv_frame_zc,
          "frame_fill": rx.recv_frame_zc}[what]
    k = TP_K[what]
    sync(barrier, p, rx)
    if what == "batch":  # pop_many may return fewer than 1024: count records
        got = 0
        while got < k * BATCH:
            got += fn()
        barrier.wait(60)
        got = 0
        while True:
            got += fn()
            t = total.value
            if t and got >= t * BATCH:
                break
        t_end = time.perf_counter_ns()
        barrier.wait(CASE_TIMEOUT)
        return {"t_end": t_end, "records": got}
    for _ in range(k):
        fn()
    barrier.wait(60)
    calls = 0
    while True:
        for _ in range(k):
            fn()
        calls += k
        t = total.value
        if t and calls >= t:
            break
    t_end = time.perf_counter_ns()
    barrier.wait(CASE_TIMEOUT)
    return {"t_end": t_end, "records": calls}


def bench_throughput(ctx, res, peer, cfg, what, config="tuned", spin=20e-6, own_dtype=True,
                     alone=False, capacity=None) -> dict:
    """alone: the producer with no consumer attached (a broadcast ring, which never blocks a
    producer nobody reads from): the rate the producer manages by itself, the reference for
    what the cross-process rate loses to the hand-off."""
    kind = TP_KIND[what]
    p = peers.get(peer)
    chan = p.channel(res, ctx, kind, own_dtype=own_dtype, mode="broadcast" if alone else "queue",
                     capacity=capacity)
    total = ctx.RawValue("q", 0)
    seconds = cfg["frame_s"] if kind == "frame" else cfg["tp_s"]
    specs = [(tp_producer, dict(peer=peer, chan=chan, what=what, spin=spin, seconds=seconds, total=total,
                                work=CONFIGS[config]["work"], **_placement(config, 0)))]
    if not alone:
        specs.append((tp_consumer, dict(peer=peer, chan=chan, what=what, spin=spin, total=total,
                                        **_placement(config, 1))))
    out = run_procs(ctx, specs)
    prod = out[0]
    per_call = BATCH if what == "batch" else 1
    t_end = prod["t_sent"] if alone else out[1]["t_end"]
    elapsed = (t_end - prod["t0"]) / 1e9
    # records counted from the start line: the producer's count (the consumer also received
    # the warm-up chunk before the clock started)
    recs = prod["records"]
    rps = recs / elapsed
    nbytes = (FRAME.itemsize if kind == "frame" else REC.itemsize) * rps
    # what the consumer counted from the start line: every record the producer sent, or the
    # case is wrong (the report marks a row whose counts differ)
    received = None if alone else int(out[1]["records"])
    return {"records": int(recs), "received": received, "seconds": elapsed, "records_per_s": rps,
            "calls_per_s": rps / per_call, "GB_per_s": nbytes / 1e9}


# ============================================================================
# (d) scaling: one producer, n consumers (queue: each record to one consumer; broadcast:
# every record to every consumer)
# ============================================================================


def sc_producer(barrier, peer, chan, n_cons, batch, spin, seconds, done):
    p = peers.get(peer)
    tx = p.tx(chan, spin)
    fn = tx.send_batch if batch else tx.send1
    item = tick_batch() if batch else p.item()
    k = 8 if batch else 512
    sync(barrier, p, tx)
    pc = time.perf_counter_ns
    t0 = pc()
    deadline = t0 + int(seconds * 1e9)
    calls = 0
    while pc() < deadline:
        for _ in range(k):
            fn(item)
        calls += k
    t_sent = pc()
    records = calls * (BATCH if batch else 1)
    done.value = records  # for consumers that cannot be sent an end-of-stream marker
    tx.end(n_cons)
    barrier.wait(CASE_TIMEOUT)
    return {"t0": t0, "t_sent": t_sent, "records": records}


def sc_consumer(barrier, peer, chan, batch, spin, done):
    p = peers.get(peer)
    rx = p.rx(chan, spin)
    sync(barrier, p, rx)
    n = p.consume(rx, batch, done)
    t_end = time.perf_counter_ns()
    barrier.wait(CASE_TIMEOUT)
    return {"t_end": t_end, "records": n}


def bench_scaling(ctx, res, peer, cfg, mode, n_cons, batch, spin=20e-6) -> dict:
    p = peers.get(peer)
    chan = p.channel(res, ctx, "batch" if batch else "rec", mode=mode, consumers=n_cons, capacity=16384)
    done = ctx.RawValue("q", 0)
    # not pinned (N consumers may outnumber the CPUs), collector off
    place = {"cpu": None, "gc_off": True}
    specs = [(sc_producer, dict(peer=peer, chan=chan, n_cons=n_cons, batch=batch, spin=spin,
                                seconds=cfg["scale_s"], done=done, **place))]
    for _ in range(n_cons):
        specs.append((sc_consumer, dict(peer=peer, chan=chan, batch=batch, spin=spin, done=done, **place)))
    out = run_procs(ctx, specs)
    prod, cons = out[0], out[1:]
    t_end = max(c["t_end"] for c in cons)
    elapsed = (t_end - prod["t0"]) / 1e9
    delivered = sum(c["records"] for c in cons)
    expect = prod["records"] * (n_cons if mode == "broadcast" else 1)
    return {"consumers": n_cons, "records_pushed": prod["records"], "records_delivered": delivered,
            "lossless": delivered == expect, "seconds": elapsed, "pushed_per_s": prod["records"] / elapsed,
            "delivered_per_s": delivered / elapsed,
            "per_consumer_per_s": [c["records"] / elapsed for c in cons]}


# ============================================================================
# (e) the C core alone, next to this machine's floor (benchmarks/cbench.c)
# ============================================================================


def run_cbench(quick: bool) -> dict:
    gcc = shutil.which(os.environ.get("CC", "gcc"))
    if not gcc:
        return {"skipped": "gcc not found"}
    out_dir = os.path.join(HERE, "out")
    os.makedirs(out_dir, exist_ok=True)
    exe = os.path.join(out_dir, "cbench")
    # every C file of the core: it is split by concern, and the list grows with it
    core = sorted(glob(os.path.join(ROOT, "csrc", "*.c")))
    cmd = [gcc, "-O2", "-flto", "-std=c11", "-D_GNU_SOURCE=", "-I", os.path.join(ROOT, "csrc"), "-o", exe,
           os.path.join(HERE, "cbench.c"), *core, "-lrt", "-pthread"]
    b = subprocess.run(cmd, capture_output=True, text=True)
    if b.returncode != 0:
        return {"skipped": f"build failed: {b.stderr.strip()[-500:]}"}
    args = [exe, "--json"] + (["--quick"] if quick else [])
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"skipped": "cbench timed out"}
    if r.returncode != 0:
        return {"skipped": f"cbench failed: {r.stderr.strip()[-500:]}"}
    return json.loads(r.stdout)


# ============================================================================
# the list of cases
# ============================================================================


@dataclass
class Case:
    """One row of a table, run for every peer it applies to.

    section  the table: latency, throughput, frames, scaling
    variant  the row's label within the table (rows with the same variant are compared)
    run      bench_*(ctx, res, peer_name, cfg, **params) -> dict of figures
    key      the figure the median run is chosen by (and min/max reported of)
    needs    peer features the case needs (Peer.features)
    when     further condition on the peer, e.g. a scaling mode it supports
    configs  run once per configuration (CONFIGS); () = the case's own fixed set-up
    repeats  config key giving how many runs ("repeats" or "tp_repeats")
    note     printed next to the row unless the peer has its own note for it
    only     also skip unless this holds for the run's config (e.g. batch scaling in full runs)
    """

    section: str
    variant: str
    run: Callable
    key: str
    params: dict = field(default_factory=dict)
    needs: frozenset = frozenset()
    when: Callable | None = None
    configs: tuple = ()
    repeats: str = "repeats"
    note: str = ""
    only: Callable | None = None

    def applies(self, peer) -> bool:
        return self.needs <= peer.features and (self.when is None or self.when(peer))


def _scaling_cases() -> list[Case]:
    out = []
    for batch in (False, True):
        for mode in ("queue", "broadcast"):
            for n in (1, 2, 4):
                out.append(Case(
                    "scaling", f"{mode} {n}c {'1024/call' if batch else '1/call'}", bench_scaling,
                    "delivered_per_s", dict(mode=mode, n_cons=n, batch=batch),
                    when=(lambda p, m=mode, b=batch: m in p.scaling_modes and (p.scaling_batch or not b)),
                    repeats="scale_repeats", only=(lambda cfg, b=batch: cfg["scale_batch"] or not b)))
    # what busy-polling consumers do when they outnumber the cores
    for mode in ("queue", "broadcast"):
        out.append(Case("scaling", f"{mode} 4c 1/call spin=1s", bench_scaling, "delivered_per_s",
                        dict(mode=mode, n_cons=4, batch=False, spin=1.0), needs=frozenset({"spin_budget"}),
                        repeats="scale_repeats"))
    return out


CASES: list[Case] = [
    # (a) latency: the spinning peers, then the blocking ones
    Case("latency", "spin", bench_latency, "p50_us", dict(wait="spin"), needs=frozenset({"spin"}), note="busy-poll"),
    Case("latency", "sleep", bench_latency, "p50_us", dict(wait="sleep"), note="blocking"),
    Case("latency", "spin-nodt", bench_latency, "p50_us", dict(wait="spin", own_dtype=False),
         needs=frozenset({"own_dtype"})),
    # (b) throughput, in both configurations
    Case("throughput", "rec", bench_throughput, "records_per_s", dict(what="rec"), configs=("default", "tuned"),
         repeats="tp_repeats"),
    Case("throughput", "rec-alone", bench_throughput, "records_per_s", dict(what="rec", alone=True),
         needs=frozenset({"alone"}), configs=("default", "tuned"), repeats="tp_repeats"),
    Case("throughput", "batch", bench_throughput, "records_per_s", dict(what="batch"), configs=("default", "tuned"),
         repeats="tp_repeats", note="64 KiB numpy array per message"),
    Case("throughput", "rec-nodt", bench_throughput, "records_per_s", dict(what="rec", own_dtype=False),
         needs=frozenset({"own_dtype"}), configs=("tuned",), repeats="tp_repeats"),
    # (c) 6 MB frames
    Case("frames", "copy", bench_throughput, "records_per_s", dict(what="frame")),
    Case("frames", "zc fill", bench_throughput, "records_per_s", dict(what="frame_fill"),
         needs=frozenset({"zero_copy"})),
    Case("frames", "zc marker", bench_throughput, "records_per_s", dict(what="frame_zc"),
         needs=frozenset({"zero_copy"})),
    # the same through 8 slots (48 MB cycled through the caches) instead of shmring's 2
    Case("frames", "copy cap 8", bench_throughput, "records_per_s", dict(what="frame", capacity=8),
         when=lambda p: p.name == "shmring"),
    # iceoryx2's receiver busy-polls (it has no blocking receive without an event service);
    # the same waiting for shmring: a consumer whose spin budget covers the frame period
    Case("frames", "zc fill spin", bench_throughput, "records_per_s", dict(what="frame_fill", spin=2e-3),
         when=lambda p: p.name == "shmring",
         note="as zc fill, both sides spinning up to 2 ms before they sleep (spin=2e-3), as iceoryx2's receiver polls"),
    Case("frames", "zc fill cap 8", bench_throughput, "records_per_s", dict(what="frame_fill", capacity=8),
         when=lambda p: p.name == "shmring"),
    # (d) scaling
    *_scaling_cases(),
]

SECTIONS = ["latency", "throughput", "frames", "scaling", "c"]
