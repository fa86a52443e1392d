#!/usr/bin/env python3
"""What one wake-up costs a receiver: user-space instructions (callgrind) and
system calls (strace) per record that arrives while the receiver sleeps.

    python benchmarks/wakecost.py [--tool callgrind|strace|both] [--kind records|messages]
                                  [--receivers blocking,apop-asyncio,...]

Each receiver of bench_async.py's latency case (the sender paces a record
every --gap seconds, so the receiver is asleep when it comes) runs twice in a
process of its own under the tool, receiving --n1 and then --n2 records; the
difference of the two totals over n2 - n1 is the cost of one wake-up, with the
start-up and tear-down of the process cancelled out. Only the receiving
process is measured (the sender is a spawned child the tools do not follow).

Receivers: blocking (pop() with spin=0, a futex sleep), apop-asyncio,
apop-uvloop (await apop() on each loop), floor-asyncio, floor-uvloop (the
loop's own floor: a pipe, one add_reader callback, a future; see
bench_async.latency_floor).

Instruction and call counts do not depend on the machine's load, which makes
them the repeatable figures; timings do.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
RECEIVERS = ["blocking", "apop-asyncio", "apop-uvloop", "floor-asyncio", "floor-uvloop"]


def receive(receiver: str, n: int, gap: float, kind: str) -> None:
    """The measured process: n paced records through one receiver."""
    sys.path.insert(0, HERE)
    import bench_async as ba
    if receiver == "blocking":
        lat = ba.latency_shm("blocking", n, gap, kind)
    elif receiver.startswith("apop-"):
        lat = ba.latency_shm(receiver[5:], n, gap, kind)
    else:
        lat = ba.latency_floor(receiver[6:], n, gap)
    assert len(lat) == n


def _run_tool(tool: str, receiver: str, n: int, gap: float, kind: str) -> int:
    me = [sys.executable, os.path.abspath(__file__), "--receive", receiver, "--n", str(n), "--gap", str(gap),
          "--kind", kind]
    # a fixed hash seed: start-up costs the same in both runs of a pair; one
    # BLAS thread: idle OpenBLAS workers spin, which callgrind counts
    env = dict(os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out")
        if tool == "callgrind":
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--trace-children=no"] + me
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
            m = re.search(r"Collected : (\d+)", p.stderr)
            if p.returncode or not m:
                raise RuntimeError(f"{receiver}: callgrind run failed:\n{p.stderr[-2000:]}")
            return int(m.group(1))
        cmd = ["strace", "-c", "-o", out] + me
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        if p.returncode:
            raise RuntimeError(f"{receiver}: strace run failed:\n{p.stderr[-2000:]}")
        with open(out) as f:
            text = f.read()
        calls = {}
        for line in text.splitlines():
            f = line.split()
            # % time, seconds, usecs/call, calls, [errors,] syscall
            if len(f) >= 5 and f[-1] != "total" and f[0][0].isdigit():
                try:
                    calls[f[-1]] = int(f[3])
                except ValueError:
                    pass
        if not calls:
            raise RuntimeError(f"{receiver}: no counts in strace output:\n{text[-2000:]}")
        _run_tool.last_calls = calls  # type: ignore[attr-defined]
        return sum(calls.values())


def per_wake(tool: str, receiver: str, n1: int, n2: int, gap: float, kind: str) -> tuple[float, dict]:
    a = _run_tool(tool, receiver, n1, gap, kind)
    ca = dict(getattr(_run_tool, "last_calls", {}))
    b = _run_tool(tool, receiver, n2, gap, kind)
    cb = dict(getattr(_run_tool, "last_calls", {}))
    by_call = {k: (cb.get(k, 0) - ca.get(k, 0)) / (n2 - n1) for k in set(ca) | set(cb)}
    by_call = {k: v for k, v in sorted(by_call.items(), key=lambda kv: -kv[1]) if v >= 0.05}
    return (b - a) / (n2 - n1), by_call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tool", choices=["callgrind", "strace", "both"], default="both")
    ap.add_argument("--kind", choices=["records", "messages"], default="records")
    ap.add_argument("--receivers", default=",".join(RECEIVERS))
    ap.add_argument("--n1", type=int, default=50)
    ap.add_argument("--n2", type=int, default=550)
    ap.add_argument("--gap", type=float, default=0.012, help="seconds between records (the receiver sleeps)")
    ap.add_argument("--receive", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receive:
        receive(args.receive, args.n, args.gap, args.kind)
        return
    receivers = args.receivers.split(",")
    tools = ["callgrind", "strace"] if args.tool == "both" else [args.tool]
    print(f"# wakecost: {args.kind}, per record that arrives while the receiver sleeps "
          f"(runs of {args.n1} and {args.n2} records, a record every {args.gap * 1e3:.0f} ms)")
    res: dict = {}
    for tool in tools:
        for r in receivers:
            res[(tool, r)] = per_wake(tool, r, args.n1, args.n2, args.gap, args.kind)
            v, calls = res[(tool, r)]
            detail = ""
            if tool == "strace":
                detail = "  (" + ", ".join(f"{k} {c:.2f}" for k, c in calls.items()) + ")"
            unit = "instructions" if tool == "callgrind" else "system calls"
            print(f"{r:<14} {v:12,.1f} {unit}{detail}", flush=True)
    for tool in tools:
        for lk in ("asyncio", "uvloop"):
            a, f = res.get((tool, f"apop-{lk}")), res.get((tool, f"floor-{lk}"))
            b = res.get((tool, "blocking"))
            if a and f:
                line = f"{tool} {lk}: apop / floor x{a[0] / f[0]:.2f}, apop - floor {a[0] - f[0]:,.0f}"
                if b:
                    line += f"; floor / blocking x{f[0] / b[0]:.2f}, apop / blocking x{a[0] / b[0]:.2f}"
                print(line)


if __name__ == "__main__":
    main()
