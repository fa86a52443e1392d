#!/usr/bin/env python3
"""shmring against the usual ways of moving records between Python processes.

    python benchmarks/compare.py [--quick] [--json out.json] [--plot docs/bench.png]

Every implementation moves the same 64-byte tick record
(dtype [('seq','<u8'), ('ts','<u8'), ('px','<f8',(6,))]) between processes
started with multiprocessing's "spawn" method:

  (a) one-way latency: ping-pong between two processes, round trip / 2
  (b) throughput: one record per call, and 1024 records per call, in two
      configurations side by side -- "default" (not pinned, GC on, a producer
      that does a little work per record: what a user gets) and "tuned"
      (pinned, GC off, bare loops) -- each the median of several runs with
      the slowest and fastest; plus the producer with no consumer attached
  (c) large records: 6 MB video frames, copy vs zero-copy, GB/s
  (d) scaling: one producer, 1 / 2 / 4 consumers, queue and broadcast mode
  (e) the C core alone next to this machine's floor (benchmarks/cbench.c)

Peers (one module each in benchmarks/peers/): multiprocessing.Queue,
multiprocessing.Pipe, faster-fifo, pyzmq (PUSH/PULL over ipc://) and the
iceoryx2 Python bindings; a peer that is not installed is reported as skipped.

What each peer moves: shmring pushes and pops numpy records (np.void in,
np.void out; arrays for batches and frames). The peers move the same 64 bytes
as a `bytes` object (their cheapest path: no numpy pickling), batches as one
64 KiB message holding a numpy array of 1024 records, frames as one 6 MB
message -- what a user of each library would write.

benchmarks/README.md says how to add a peer or a case.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import numpy as np

import peers
from harness.machine import machine_info
from harness.plot import plot
from harness.report import report
from harness.runner import Runner


def _jsonable(o):
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    return o


def main(argv=None) -> int:
    names = peers.names()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (about three minutes)")
    ap.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    ap.add_argument("--plot", metavar="PATH", help="write a PNG plot (e.g. docs/bench.png)")
    ap.add_argument("--only", nargs="+", choices=["latency", "throughput", "frames", "scaling", "c"],
                    help="run only these sections")
    ap.add_argument("--peers", nargs="+", choices=names, help="run only these implementations")
    ap.add_argument("--repeats", type=int, default=None, metavar="N",
                    help="runs per case (default: 3 for throughput with --quick, 5 without; 1 / 3 elsewhere)")
    ap.add_argument("--silent", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--from-json", metavar="PATH", help="measure nothing: print the table (and --plot) of a saved --json")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="before each case wait up to SECONDS for other processes to use < 10%% of the CPUs")
    ap.add_argument("--nice", type=int, default=None, metavar="N",
                    help="run the benchmark processes at this nice value (negative needs root): on a shared "
                         "machine, other processes then take less of the CPUs from the measured ones")
    ap.add_argument("--retries", type=int, default=0, metavar="N",
                    help="re-run a case up to N times while other processes used > 10%% of the CPUs during it; "
                         "the least disturbed run is kept")
    args = ap.parse_args(argv)

    # numpy's OpenBLAS starts a thread per CPU in every process; they are idle
    # here but add wake-ups on a 2-CPU machine. Same setting for every peer.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if args.nice is not None:
        try:  # inherited by every child and by cbench
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except OSError as exc:
            print(f"--nice {args.nice}: {exc}", file=sys.stderr)
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        text, _ = report(saved["results"], saved["machine"],
                         ("quick" if saved.get("quick") else "full") + f", {saved.get('elapsed_s', 0):.0f} s")
        print(text)
        if args.plot:
            plot(saved["results"], saved["machine"], args.plot)
        return 0
    runner = Runner(args)
    machine = machine_info(runner.peers)
    machine["nice"] = os.getpriority(os.PRIO_PROCESS, 0) if args.nice is not None else None
    for name in runner.missing:  # installed metadata or not, it cannot be imported here
        machine["versions"][name] = None
    for name, why in runner.missing.items():
        print(f"{name}: skipped: {why}", file=sys.stderr)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    interrupted = False
    try:
        runner.run()
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: reporting what was measured", file=sys.stderr)
    finally:
        runner.res.cleanup()
    elapsed = time.monotonic() - t0
    machine["loadavg_end"] = list(os.getloadavg())
    text, targets = report(runner.results, machine, ("quick" if args.quick else "full") + f", {elapsed:.0f} s")
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_jsonable({"machine": machine, "config": runner.cfg, "quick": args.quick,
                                 "elapsed_s": elapsed, "results": runner.results, "targets": targets}), f, indent=1)
    if args.plot:
        try:
            plot(runner.results, machine, args.plot)
            print(f"plot written to {args.plot}", file=sys.stderr)
        except Exception as exc:
            print(f"plot failed: {exc}", file=sys.stderr)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
