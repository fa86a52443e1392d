#!/usr/bin/env python3
"""The ZeroMQ bridge against raw pyzmq moving the same bytes, over loopback and
across a veth pair between two network namespaces.

    python benchmarks/bench_bridge.py [--quick] [--json out.json]

Cases, each measured for both paths in one run:

  (a) 64-byte records, ring -> bridge -> ring, records/s; raw pyzmq: PUSH/PULL
      messages of 1024 records (the bridge's batch size), records/s
  (b) 1 MiB records, MB/s; raw pyzmq: 1 MiB messages
  (b') 1 MiB messages (bytes) through a message ring, MB/s; raw pyzmq: 1 MiB messages
  (q) shmring.Queue of 64-byte bytes items, fed by two producer processes:
      queue -> bridge -> queue, items/s, against the same raw pyzmq figure as (a)
  (c) one-way latency p50/p99 of a 64-byte record sent every 0.5 ms: producer ->
      ring -> bridge -> ring -> consumer, against raw PUSH/PULL and against one
      local ring hand-off (the two together are the floor the bridge is held to)

Throughput is counted at the receiving end from the first record to the last.
CPU-seconds are summed over every process of a case while it streams (producer,
both bridges with zmq's I/O threads, consumer; raw: pusher and puller): on a
shared machine they are steadier than rates, which depend on the load.
The bridge case runs four processes (producer, sending bridge, receiving bridge,
consumer), raw pyzmq two: on a 2-core machine that is part of the price. The veth
path needs root (ip netns); without it only loopback runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

import shmring
from shmring.bridge import read_sidecar, remove_sidecar

REC = np.dtype([("seq", "<u8"), ("ts", "<u8"), ("pad", "u1", (48,))])
MB = np.dtype((np.uint8, (1 << 20,)))
BATCH = 1024
# Large records and messages get rings of 8 MiB, as the README advises for records of
# megabytes (a ring writes every slot in turn; slots that outgrow the cache slow every
# copy): 8 records of 1 MiB, or a message ring of 8 MiB. Both ends' rings are that size
# (the receiving bridge makes its ring like the sender's).
BIG_RING = 8 << 20
PORT = 5601
HERE = os.path.abspath(__file__)


# -- hosts ---------------------------------------------------------------------

class Path:
    """Where the two ends run: loopback in this namespace, or two namespaces on a veth pair."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.ns: list[str] = []
        if kind == "loopback":
            self.a = self.b = None
            self.bind, self.connect = f"tcp://127.0.0.1:{PORT}", f"tcp://127.0.0.1:{PORT}"
            return
        tag = f"bb{os.getpid() % 100000}"
        self.a, self.b = tag + "a", tag + "b"
        for ns in (self.a, self.b):
            self._ip("netns", "add", ns)
            self.ns.append(ns)
            self._ip("-n", ns, "link", "set", "lo", "up")
        self._ip("link", "add", tag + "x", "netns", self.a, "type", "veth", "peer", "name", tag + "y",
                 "netns", self.b)
        self._ip("-n", self.a, "addr", "add", "10.78.0.1/24", "dev", tag + "x")
        self._ip("-n", self.b, "addr", "add", "10.78.0.2/24", "dev", tag + "y")
        self._ip("-n", self.a, "link", "set", tag + "x", "up")
        self._ip("-n", self.b, "link", "set", tag + "y", "up")
        self.bind, self.connect = f"tcp://10.78.0.1:{PORT}", f"tcp://10.78.0.1:{PORT}"

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    def run(self, side: str, args: list[str], **kw) -> subprocess.Popen:
        ns = self.a if side == "a" else self.b
        cmd = (["ip", "netns", "exec", ns] if ns else []) + [sys.executable, *args]
        return subprocess.Popen(cmd, **kw)

    def close(self) -> None:
        for ns in self.ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def veth_possible() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    try:
        Path._ip("netns", "add", f"bbprobe{os.getpid()}")
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"ip netns add failed ({exc})"
    subprocess.run(["ip", "netns", "del", f"bbprobe{os.getpid()}"], capture_output=True)
    return None


def wait_for(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.01)
    raise RuntimeError("timed out")


# -- raw pyzmq peers (run as `bench_bridge.py _push ...` / `_pull ...`) ---------------

def raw_push(endpoint: str, n_msgs: int, size: int, interval: float) -> None:
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.sndhwm = 1000
    s.bind(endpoint)
    # Below 64 KiB pyzmq copies anyway. From 64 KiB a message is sent without a copy
    # (as the sending bridge lends its ring from 256 KiB) out of a pool of 8 MiB of
    # buffers, each written in full before it is sent (as a producer writes each record
    # into the ring) and reused only once ZeroMQ has let go of it (its tracker). Fresh
    # np.zeros buffers instead made the reference swing 2x between runs, as the
    # allocator served them from the heap or from fresh pages.
    zero_copy = size >= 65536
    pool = [np.zeros(size, np.uint8) for _ in range(max(1, (8 << 20) // size) if zero_copy else 1)]
    trackers: list = [None] * len(pool)
    src = np.ones(size, np.uint8)
    time.sleep(0.5)  # let the puller connect
    cpu0 = time.process_time()
    for i in range(n_msgs):
        if interval:
            time.sleep(interval)
        k = i % len(pool)
        if trackers[k] is not None:
            trackers[k].wait()
        buf = pool[k]
        if zero_copy:
            buf[:] = src
        ts = buf[:16].view("<u8")
        ts[0] = i
        ts[1] = time.monotonic_ns()
        if zero_copy:
            trackers[k] = s.send(buf, copy=False, track=True)
        else:
            s.send(buf)
    s.close(linger=5000)
    ctx.term()
    print(json.dumps({"cpu": time.process_time() - cpu0}))


def raw_pull(endpoint: str, n_msgs: int) -> None:
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.rcvhwm = 1000
    s.connect(endpoint)
    lat = np.empty(n_msgs, np.int64)
    nbytes = 0
    t_first = None
    for i in range(n_msgs):
        f = s.recv(copy=False)
        now = time.monotonic_ns()
        if t_first is None:
            t_first = now
            cpu0 = time.process_time()
            first_bytes = len(f.buffer)
        hdr = np.frombuffer(f.buffer, "<u8", count=2)
        lat[i] = now - int(hdr[1])
        nbytes += len(f.buffer)
    t_last = time.monotonic_ns()
    print(json.dumps({"secs": (t_last - t_first) / 1e9, "bytes": nbytes - first_bytes,
                      "cpu": time.process_time() - cpu0,
                      "msgs": n_msgs - 1, "p50": float(np.percentile(lat, 50)) / 1e3,
                      "p99": float(np.percentile(lat, 99)) / 1e3}))
    s.close(linger=0)
    ctx.term()


def run_raw(path: Path, n_msgs: int, size: int, interval: float = 0.0) -> dict:
    pull = path.run("b", [HERE, "_pull", path.connect, str(n_msgs)], stdout=subprocess.PIPE, text=True)
    push = path.run("a", [HERE, "_push", path.bind, str(n_msgs), str(size), str(interval)],
                    stdout=subprocess.PIPE, text=True)
    out, _ = pull.communicate(timeout=300)
    pout, _ = push.communicate(timeout=60)
    res = json.loads(out)
    res["cpu_pull"] = res["cpu"]
    res["cpu_push"] = json.loads(pout)["cpu"]
    res["cpu"] += res["cpu_push"]  # CPU-seconds of both ends while streaming
    return res


def proc_cpu(pid: int) -> float:
    """CPU-seconds used so far by a process (all its threads, zmq's I/O threads included),
    from the scheduler's nanosecond run times: /proc/PID/stat counts in clock ticks of
    10 ms, too coarse for a run of a fraction of a second."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total / 1e9


# -- the bridge ------------------------------------------------------------------------

def produce(name: str, n: int, batch: int, interval: float, q=None) -> None:
    cpu0 = time.process_time()
    ring = shmring.Ring.attach(name)
    with ring.producer() as p:
        if ring.kind == "messages":
            msgs = [bytes(MB.itemsize)] * batch
            for i in range(0, n, batch):
                p.push_many(msgs[:min(batch, n - i)])
        elif ring.dtype == MB:
            block = np.zeros((batch,) + MB.shape, np.uint8)
            for i in range(0, n, batch):
                p.push_many(block[:min(batch, n - i)])
        elif interval:
            rec = np.zeros(1, REC)
            for i in range(n):
                time.sleep(interval)
                rec["seq"] = i
                rec["ts"] = time.monotonic_ns()
                p.push_many(rec)
        else:
            block = np.zeros(batch, REC)
            block["seq"] = np.arange(batch)
            for i in range(0, n, batch):
                p.push_many(block[:min(batch, n - i)])
    ring.close()
    if q is not None:
        q.put(time.process_time() - cpu0)


def consume(name: str, n: int, latency: bool) -> dict:
    ring = shmring.Ring.attach(name)
    got = 0
    lat = []
    t_first = None
    first_n = 0
    msgs = ring.kind == "messages"
    size = MB.itemsize if msgs else ring.dtype.itemsize
    # 64 B records are copied out in blocks; 1 MiB records and messages are read in
    # place (a view), as raw pyzmq's puller reads its frames without copying them
    big = msgs or ring.dtype != REC
    with ring.consumer(start="oldest") as c:
        while got < n:
            try:
                if msgs:
                    with c.view(timeout=60) as m:
                        a = [bytes(m[:16])]  # its first bytes, as raw's puller reads its header
                elif big:
                    with c.view(16, timeout=60) as v:
                        a = [bytes(r[:16]) for r in v]
                else:
                    a = c.pop_many(4096, timeout=60)
            except shmring.Closed:
                break  # broadcast: the rest was dropped on the way (counted by the receiver)
            now = time.monotonic_ns()
            if t_first is None:
                t_first, first_n = now, len(a)
                cpu0 = time.process_time()
            if latency:
                lat.extend((now - a["ts"].astype(np.int64)).tolist())
            got += len(a)
            t_last = now
    ring.close()
    out = {"secs": (t_last - t_first) / 1e9, "records": got - first_n,
           "bytes": (got - first_n) * size, "cpu": time.process_time() - cpu0}
    if latency:
        out["p50"] = float(np.percentile(lat, 50)) / 1e3
        out["p99"] = float(np.percentile(lat, 99)) / 1e3
    return out


SEND_OPTS: list[str] = []  # --send-opt: extra `bridge send` options for every case


def run_bridge(path: Path, dtype: np.dtype | None, n: int, mode: str, *, interval: float = 0.0,
               capacity: int = 1 << 16) -> dict:
    """dtype None: a message ring of BIG_RING bytes carrying 1 MiB bytes messages."""
    tag = f"bb{os.getpid()}{int(time.monotonic() * 1000) % 100000}"
    src, dst = tag + "s", tag + "d"
    if dtype is None:
        ring = shmring.Ring.create(src, nbytes=BIG_RING, mode=mode)
    else:
        ring = shmring.Ring.create(src, dtype, capacity, mode=mode)
    procs = []
    try:
        max_bytes = max(BATCH * REC.itemsize, MB.itemsize if dtype is None else dtype.itemsize)
        procs.append(path.run("a", ["-m", "shmring", "bridge", "send", src, path.bind, "--max-records",
                                    str(BATCH), "--max-bytes", str(max_bytes), *SEND_OPTS],
                              stdout=subprocess.DEVNULL))
        wait_for(lambda: any(c["alive"] for c in ring.stats()["consumers"]))
        procs.append(path.run("b", ["-m", "shmring", "bridge", "recv", path.connect, dst],
                              stdout=subprocess.DEVNULL))
        wait_for(lambda: read_sidecar(dst) is not None)
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        prod = ctx.Process(target=produce, args=(src, n, BATCH if dtype == REC else 8, interval, q))
        cpu0 = [proc_cpu(p.pid) for p in procs]
        prod.start()
        res = consume(dst, n, latency=bool(interval))
        cpu1 = [proc_cpu(p.pid) for p in procs]
        res["cpu_send"], res["cpu_recv"] = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        res["cpu_bridges"] = sum(cpu1) - sum(cpu0)
        res["cpu_cons"] = res["cpu"]
        res["cpu_prod"] = q.get(timeout=60)
        res["cpu"] += res["cpu_bridges"] + res["cpu_prod"]
        prod.join(60)
        res["lost"] = (read_sidecar(dst) or {}).get("lost", 0)
        return res
    finally:
        teardown(procs, ring, src, dst)


def teardown(procs, local, src: str, dst: str) -> None:
    """Ends a case: its bridge processes, the local ring or queue, both names, the sidecar."""
    for p in procs:
        p.terminate()
        p.wait(20)
    release(local, src, dst)


def release(local, src: str, dst: str) -> None:
    """Closes the local ring or queue, unlinks both names and removes the sidecar."""
    local.close()
    for name in (src, dst):
        try:
            shmring.unlink(name)
        except FileNotFoundError:
            pass
    remove_sidecar(dst)


def put_queue(name: str, n: int, q) -> None:
    cpu0 = time.process_time()
    queue = shmring.Queue.attach(name)
    items = [bytes(REC.itemsize)] * BATCH
    for i in range(0, n, BATCH):
        queue.put_many(items[:min(BATCH, n - i)])
    queue.close()
    q.put(time.process_time() - cpu0)


def run_bridge_queue(path: Path, n: int, producers: int = 2) -> dict:
    """shmring.Queue -> bridge -> shmring.Queue, 64-byte bytes items."""
    tag = f"bq{os.getpid()}{int(time.monotonic() * 1000) % 100000}"
    src, dst = tag + "s", tag + "d"
    queue = shmring.Queue(name=src, nbytes=8 << 20, max_producers=4, max_consumers=4)
    procs = []
    try:
        procs.append(path.run("a", ["-m", "shmring", "bridge", "send", src, path.bind, "--max-records",
                                    str(BATCH)], stdout=subprocess.DEVNULL))
        procs.append(path.run("b", ["-m", "shmring", "bridge", "recv", path.connect, dst],
                              stdout=subprocess.DEVNULL))
        wait_for(lambda: read_sidecar(dst) is not None)
        out = shmring.Queue.attach(dst)
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        prods = [ctx.Process(target=put_queue, args=(src, n // producers, q)) for _ in range(producers)]
        cpu0 = [proc_cpu(p.pid) for p in procs]
        for p in prods:
            p.start()
        got, t_first = 0, None
        total = n // producers * producers
        while got < total:
            items = out.get_many(4096, timeout=60)
            now = time.monotonic_ns()
            if t_first is None:
                t_first, first_n, c0 = now, len(items), time.process_time()
            got += len(items)
        t_last = now
        cpu = time.process_time() - c0
        cpu_bridges = sum(proc_cpu(p.pid) for p in procs) - sum(cpu0)
        cpu += cpu_bridges + sum(q.get(timeout=60) for _ in prods)
        for p in prods:
            p.join(60)
        out.close()
        return {"secs": (t_last - t_first) / 1e9, "records": got - first_n, "cpu": cpu,
                "cpu_bridges": cpu_bridges}
    finally:
        teardown(procs, queue, src, dst)


def run_local(n: int, interval: float) -> dict:
    """One ring hand-off between two processes, same record and pacing."""
    name = f"bb{os.getpid()}l"
    ring = shmring.Ring.create(name, REC, 4096)
    try:
        prod = mp.get_context("fork").Process(target=produce, args=(name, n, 1, interval))
        cons_ring = shmring.Ring.attach(name)
        c = cons_ring.consumer()
        prod.start()
        lat = []
        got = 0
        while got < n:
            a = c.pop_many(64, timeout=30)
            now = time.monotonic_ns()
            lat.extend((now - a["ts"].astype(np.int64)).tolist())
            got += len(a)
        prod.join(30)
        c.close()
        cons_ring.close()
        return {"p50": float(np.percentile(lat, 50)) / 1e3, "p99": float(np.percentile(lat, 99)) / 1e3}
    finally:
        ring.close()
        shmring.unlink(name)


# -- main ---------------------------------------------------------------------------------

def measure(path: Path, n64: int, nmb: int, nlat: int) -> dict:
    """One round of every case over one path, raw pyzmq and the bridge back to back."""
    r: dict = {"lost": {}}
    raw = run_raw(path, n64 // BATCH, BATCH * REC.itemsize)
    r["raw64"] = raw["bytes"] / REC.itemsize / raw["secs"]
    r["raw64_cpu"] = raw["cpu"] / (n64 / 1e6)  # CPU-s per million records
    r["raw64_split"] = {k: raw[f"cpu_{k}"] / (n64 / 1e6) for k in ("push", "pull")}
    for mode in ("broadcast", "queue"):
        b = run_bridge(path, REC, n64, mode)
        r["lost"][f"64_{mode}"] = b["lost"]
        r[f"bridge64_{mode}"] = b["records"] / b["secs"]
        r[f"bridge64_{mode}_cpu"] = (b["cpu"] / (n64 / 1e6), b["cpu_bridges"] / (n64 / 1e6))
        r[f"split64_{mode}"] = {k: b[f"cpu_{k}"] / (n64 / 1e6) for k in ("prod", "send", "recv", "cons")}
    b = run_bridge_queue(path, n64)
    r["bridgeQ"] = b["records"] / b["secs"]
    r["bridgeQ_cpu"] = (b["cpu"] / (n64 / 1e6), b["cpu_bridges"] / (n64 / 1e6))
    raw = run_raw(path, nmb, MB.itemsize)
    r["rawMB"] = raw["bytes"] / 1e6 / raw["secs"]
    r["rawMB_cpu"] = raw["cpu"] / (nmb * MB.itemsize / 1e9)  # CPU-s per GB
    r["rawMB_split"] = {k: raw[f"cpu_{k}"] / (nmb * MB.itemsize / 1e9) for k in ("push", "pull")}
    for mode in ("broadcast", "queue"):
        b = run_bridge(path, MB, nmb, mode, capacity=BIG_RING // MB.itemsize)
        r[f"bridgeMB_{mode}"] = b["bytes"] / 1e6 / b["secs"]
        gb = nmb * MB.itemsize / 1e9
        r[f"bridgeMB_{mode}_cpu"] = (b["cpu"] / gb, b["cpu_bridges"] / gb)
        r[f"splitMB_{mode}"] = {k: b[f"cpu_{k}"] / gb for k in ("prod", "send", "recv", "cons")}
        r["lost"][f"MB_{mode}"] = b["lost"]
        b = run_bridge(path, None, nmb, mode)
        r[f"bridgeMsg_{mode}"] = b["bytes"] / 1e6 / b["secs"]
        r[f"bridgeMsg_{mode}_cpu"] = (b["cpu"] / gb, b["cpu_bridges"] / gb)
        r["lost"][f"Msg_{mode}"] = b["lost"]
    raw = run_raw(path, nlat, REC.itemsize, 0.0005)
    r["raw_lat"] = (raw["p50"], raw["p99"])
    b = run_bridge(path, REC, nlat, "broadcast", interval=0.0005)
    r["bridge_lat"] = (b["p50"], b["p99"])
    return r


def print_round(title: str, r: dict, local: dict) -> None:
    print(f"\n## {title}")
    print(f"{'case':<34} {'bridge':>14} {'raw pyzmq':>14} {'ratio':>7}")
    for mode in ("broadcast", "queue"):
        print(f"{'64 B records, ' + mode:<34} {r[f'bridge64_{mode}'] / 1e6:>9.2f} Mr/s "
              f"{r['raw64'] / 1e6:>9.2f} Mr/s {r[f'bridge64_{mode}'] / r['raw64']:>7.2f}")
    print(f"{'shmring.Queue 64 B items':<34} {r['bridgeQ'] / 1e6:>9.2f} Mi/s "
          f"{r['raw64'] / 1e6:>9.2f} Mr/s {r['bridgeQ'] / r['raw64']:>7.2f}")
    for mode in ("broadcast", "queue"):
        print(f"{'1 MiB records, ' + mode:<34} {r[f'bridgeMB_{mode}']:>9.0f} MB/s  "
              f"{r['rawMB']:>9.0f} MB/s  {r[f'bridgeMB_{mode}'] / r['rawMB']:>7.2f}")
    for mode in ("broadcast", "queue"):
        print(f"{'1 MiB messages, ' + mode:<34} {r[f'bridgeMsg_{mode}']:>9.0f} MB/s  "
              f"{r['rawMB']:>9.0f} MB/s  {r[f'bridgeMsg_{mode}'] / r['rawMB']:>7.2f}")
    print(f"{'CPU-seconds (all processes)':<34} {'bridge':>14} {'of it bridges':>14} {'raw pyzmq':>10} {'ratio':>6}")
    for mode in ("broadcast", "queue"):
        c, cb = r[f"bridge64_{mode}_cpu"]
        print(f"{'  per 1e6 64 B records, ' + mode:<34} {c:>14.2f} {cb:>14.2f} {r['raw64_cpu']:>10.2f} "
              f"{c / r['raw64_cpu']:>6.2f}")
    c, cb = r["bridgeQ_cpu"]
    print(f"{'  per 1e6 Queue 64 B items':<34} {c:>14.2f} {cb:>14.2f} {r['raw64_cpu']:>10.2f} "
          f"{c / r['raw64_cpu']:>6.2f}")
    for what in ("MB", "Msg"):
        for mode in ("broadcast", "queue"):
            c, cb = r[f"bridge{what}_{mode}_cpu"]
            label = f"  per GB of 1 MiB {'records' if what == 'MB' else 'messages'}, {mode}"
            print(f"{label:<34} {c:>14.2f} {cb:>14.2f} {r['rawMB_cpu']:>10.2f} {c / r['rawMB_cpu']:>6.2f}")
    print("CPU-seconds by process: producer, sending bridge, receiving bridge, consumer "
          "(raw: pusher, puller)")
    for what, unit in (("64", "per 1e6 64 B records"), ("MB", "per GB of 1 MiB records")):
        rs = r[f"raw{what}_split"]
        for mode in ("broadcast", "queue"):
            sp = r[f"split{what}_{mode}"]
            print(f"  {unit}, {mode:<9} {sp['prod']:6.3f} {sp['send']:6.3f} {sp['recv']:6.3f} "
                  f"{sp['cons']:6.3f}   raw {rs['push']:6.3f} {rs['pull']:6.3f}   bridges/raw "
                  f"{(sp['send'] + sp['recv']) / (rs['push'] + rs['pull']):5.2f}")
    bl, rl = r["bridge_lat"], r["raw_lat"]
    floor = rl[0] + local["p50"]
    print(f"{'one-way latency p50 / p99 (us)':<34} {bl[0]:>6.0f} / {bl[1]:<5.0f} {rl[0]:>6.0f} / {rl[1]:<5.0f}"
          f" {bl[0] / rl[0]:>7.2f}")
    print(f"{'  p50 vs raw p50 + local hand-off':<34} {bl[0]:>6.0f}         {floor:>6.0f}        "
          f" {bl[0] / floor:>7.2f}")
    lost = {k: v for k, v in r["lost"].items() if v}
    print(f"records dropped on the way (broadcast, counted by the receiver): {lost or 'none'}")


def print_summary(paths: list, rounds: dict, local: dict) -> None:
    """Medians over the rounds, each ratio taken within its own round (raw pyzmq's rate
    swings between runs on a shared machine, so a ratio across rounds would mislead)."""
    med = statistics.median
    n = len(next(iter(rounds.values())))
    print(f"\n## medians of {n} rounds (range), each ratio against raw pyzmq in the same round")
    print(f"{'path, case':<34} {'bridge':>16} {'raw pyzmq':>16}   ratio, broadcast / queue")
    rows = (("64 B records", "bridge64_{}", "raw64", 1e6, "Mr/s"),
            ("1 MiB records", "bridgeMB_{}", "rawMB", 1, "MB/s"),
            ("1 MiB messages", "bridgeMsg_{}", "rawMB", 1, "MB/s"))
    for kind in paths:
        rs = rounds[kind]
        for label, key, raw_key, div, unit in rows:
            raw = [r[raw_key] / div for r in rs]
            rates, ratios = [], []
            for mode in ("broadcast", "queue"):
                rates.append(med([r[key.format(mode)] / div for r in rs]))
                q = [r[key.format(mode)] / r[raw_key] for r in rs]
                ratios.append(f"{med(q):.2f} ({min(q):.2f}-{max(q):.2f})")
            print(f"{kind + ', ' + label:<34} {rates[0]:>7.1f} / {rates[1]:<6.1f} {med(raw):>8.1f} {unit} "
                  f"({min(raw):.1f}-{max(raw):.1f})   {' / '.join(ratios)}")
        q = [r["bridge_lat"][0] / (r["raw_lat"][0] + local["p50"]) for r in rs]
        print(f"{kind + ', p50 vs raw + hand-off':<34} {med([r['bridge_lat'][0] for r in rs]):>10.0f} us "
              f"{med([r['raw_lat'][0] for r in rs]):>10.0f} us + {local['p50']:.1f}   "
              f"{med(q):.2f}x ({min(q):.2f}-{max(q):.2f}x)")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_push":
        raw_push(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_pull":
        raw_pull(sys.argv[2], int(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds of every case per path, raw and bridge back to back; medians at the end")
    ap.add_argument("--send-opt", action="append", default=[], metavar="--OPT=V",
                    help="an option for every sending bridge, e.g. --send-opt=--spin=0.001; may repeat")
    args = ap.parse_args()
    SEND_OPTS[:] = args.send_opt
    n64 = 500_000 if args.quick else 2_000_000
    nmb = 300 if args.quick else 1000
    nlat = 1000 if args.quick else 3000
    import zmq
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
          f"Python {platform.python_version()}, numpy {np.__version__}, pyzmq {zmq.__version__} "
          f"(libzmq {zmq.zmq_version()}), load average {os.getloadavg()[0]:.1f}"
          + (f", sending bridges with {' '.join(SEND_OPTS)}" if SEND_OPTS else ""))
    paths = ["loopback"]
    why = veth_possible()
    if why is None:
        paths.append("veth")
    else:
        print(f"# veth path skipped: {why}")
    results = {}
    local = run_local(nlat, 0.0005)
    results["local"] = local
    print(f"\nlocal ring hand-off, one-way p50 {local['p50']:.1f} us, p99 {local['p99']:.1f} us")
    rounds: dict = {}
    for kind in paths:
        path = Path(kind)
        try:
            rounds[kind] = []
            for _ in range(args.repeats):
                rounds[kind].append(measure(path, n64, nmb, nlat))
        finally:
            path.close()
    for kind in paths:
        for i, r in enumerate(rounds[kind]):
            print_round(kind if args.repeats == 1 else f"{kind}, round {i + 1} of {args.repeats}", r, local)
        results[kind] = rounds[kind][0] if args.repeats == 1 else rounds[kind]
    if args.repeats > 1:
        print_summary(paths, rounds, local)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
