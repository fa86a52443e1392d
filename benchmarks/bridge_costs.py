#!/usr/bin/env python3
"""What one bridge costs per batch while it streams: instructions (callgrind),
system calls (strace) or CPU time and page faults (cpu: every thread of the process,
from /proc), counted only between the first and the last batch.

    python benchmarks/bridge_costs.py {send,recv} {callgrind,strace,cpu} [--mode broadcast|queue]
                                      [--records N] [--big] [--messages]

A ring of 64-byte records (or, with --big, 1 MiB records) is forwarded over loopback
by a sending and a receiving bridge, each its own process; the one named runs under
the tool. Callgrind starts with instrumentation off and is switched on once both
bridges are connected and off again once the consumer has every record; strace
attaches and detaches at the same points, and cpu reads the process's counters there
(on a shared machine CPU time per batch is steadier than a rate). The figure printed is
per batch (the receiver's batch counter over the same window); cpu also prints CPU-seconds
per GB. callgrind and strace need valgrind or strace on PATH. --messages carries
1 MiB bytes messages through a message ring instead of records (with --big).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

import shmring
from shmring.bridge import read_sidecar

REC = np.dtype([("seq", "<u8"), ("ts", "<u8"), ("pad", "u1", (48,))])
MB = np.dtype((np.uint8, (1 << 20,)))


def wait_for(cond, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError("timed out")
        time.sleep(0.05)


def callgrind_split(path: str) -> dict:
    """Instructions by where they run: memcpy, the interpreter, ZeroMQ, the rest."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    split = {"total": 0, "memcpy": 0, "python": 0, "libzmq": 0, "pyzmq": 0, "numpy": 0, "shmring": 0, "other": 0}
    body = out.split("file:function", 1)[-1]
    for line in body.splitlines():
        head = line.strip().split(" ", 1)
        if not head[0].replace(",", "").isdigit():
            continue
        n = int(head[0].replace(",", ""))
        where = ("memcpy" if "memcpy" in line or "memmove" in line else "python" if "libpython" in line or "Python/" in line
                 else "libzmq" if "libzmq" in line else "pyzmq" if "zmq" in line else "numpy" if "numpy" in line
                 else "shmring" if "_ring" in line else "other")
        split[where] += n
        split["total"] += n
    return split


def strace_counts(path: str) -> dict:
    counts = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] not in ("total",) and f[3].isdigit():
            counts[f[-1]] = int(f[3])
    return counts


def proc_counters(pid: int) -> dict:
    """CPU-seconds of every thread (scheduler run time, ns resolution) and the
    process's minor and major page faults."""
    from bench_bridge import proc_cpu

    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    # fields 10 and 12 of stat (minflt, majflt), counted after the command name
    return {"cpu_s": proc_cpu(pid), "minflt": int(st[7]), "majflt": int(st[9])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("side", choices=("send", "recv"))
    ap.add_argument("tool", choices=("callgrind", "strace", "cpu"))
    ap.add_argument("--mode", choices=("broadcast", "queue"), default="broadcast")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--big", action="store_true", help="1 MiB records instead of 64 B")
    ap.add_argument("--messages", action="store_true", help="with --big: 1 MiB bytes messages in a message ring")
    ap.add_argument("--send-opt", action="append", default=[], metavar="OPT",
                    help="passed on to `bridge send` (e.g. --send-opt=--lend-hold=0); may repeat")
    args = ap.parse_args()
    dt, cap, block = (MB, 64, 8) if args.big else (REC, 65536, 1024)
    msgs = args.big and args.messages
    tag = f"bc{os.getpid()}"
    src, dst = tag + "s", tag + "d"
    endpoint = f"tcp://127.0.0.1:{5900 + os.getpid() % 90}"
    out_file = os.path.join(tempfile.mkdtemp(prefix="bridge-costs-"), args.tool + ".out")
    if msgs:
        ring = shmring.Ring.create(src, nbytes=64 << 20, mode=args.mode)
    else:
        ring = shmring.Ring.create(src, dt, cap, mode=args.mode)
    procs: dict[str, subprocess.Popen] = {}
    tracer = None

    def bridge(side: str, argv: list[str]) -> subprocess.Popen:
        pre = []
        if side == args.side and args.tool == "callgrind":
            pre = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}"]
        return subprocess.Popen(pre + [sys.executable, "-m", "shmring", "bridge", *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    try:
        procs["send"] = bridge("send", ["send", src, endpoint, "--max-records", "1024",
                                        "--max-bytes", str(max(1024 * REC.itemsize, dt.itemsize)), *args.send_opt])
        wait_for(lambda: any(c["alive"] for c in ring.stats()["consumers"]))
        procs["recv"] = bridge("recv", ["recv", endpoint, dst])
        wait_for(lambda: read_sidecar(dst) is not None)
        time.sleep(1)  # the handshake's heartbeat traffic settles
        out = shmring.Ring.attach(dst)
        got = [0]

        def consume() -> None:
            with out.consumer(start="oldest") as c:
                while got[0] < args.records:
                    got[0] += len(c.pop_many(4096, timeout=600))

        t = threading.Thread(target=consume)
        t.start()
        pid = str(procs[args.side].pid)
        if args.tool == "strace":
            tracer = subprocess.Popen(["strace", "-c", "-f", "-p", pid, "-o", out_file], stderr=subprocess.DEVNULL)
            time.sleep(1)  # attached to every thread
        elif args.tool == "callgrind":
            subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
        else:
            c0 = proc_counters(procs[args.side].pid)
        b0 = read_sidecar(dst)["batches"]
        with ring.producer() as p:
            if msgs:
                blk = [bytes(dt.itemsize)] * block
            else:
                blk = np.zeros(block, dt)
            for i in range(0, args.records, block):
                p.push_many(blk[:min(block, args.records - i)])
        t.join(900)
        batches = read_sidecar(dst)["batches"] - b0
        if tracer is not None:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(60)
            tracer = None
        elif args.tool == "callgrind":
            subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
        else:
            c1 = proc_counters(procs[args.side].pid)
        out.close()
    finally:
        if tracer is not None:
            tracer.kill()
            tracer.wait()
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        from bench_bridge import release

        release(ring, src, dst)
    if args.tool == "cpu":
        figures = {k: c1[k] - c0[k] for k in c0}
    else:
        figures = callgrind_split(out_file) if args.tool == "callgrind" else strace_counts(out_file)
    what = "1 MiB messages" if msgs else "1 MiB records" if args.big else "64 B records"
    print(f"# {args.side} bridge, {args.mode}, {what}: {got[0]} records in "
          f"{batches} batches; {args.tool} counts per batch (load average {os.getloadavg()[0]:.1f})")
    if args.tool == "cpu":
        gb = got[0] * (dt.itemsize if args.big else REC.itemsize) / 1e9
        print(json.dumps({"cpu_s_per_GB": round(figures["cpu_s"] / gb, 3),
                          "us_per_batch": round(figures["cpu_s"] / max(batches, 1) * 1e6, 1),
                          "minflt_per_batch": round(figures["minflt"] / max(batches, 1), 1)}))
        return 0
    print(json.dumps({k: round(v / max(batches, 1), 1) for k, v in sorted(figures.items(), key=lambda kv: -kv[1])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
