"""The notify fence against the sleeper's membarrier, measured in one run.

    python benchmarks/notify_fence.py [--runs 7] [--quick]

Builds benchmarks/notifycost.c with the C core and alternates, run by run, the
default protocol (notifiers put a compiler barrier after a publication; a
sleeper issues membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)) with
SHMRING_NOTIFY_FENCE=1 (every notify pays a seq_cst fence, as before). Prints
min / median / max of each and the ratio of the medians. Processes are not
pinned; on a shared machine the two-process figures are noisy, the in-process
one much less so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def build(out: str) -> None:
    core = sorted(os.path.join(ROOT, "csrc", f) for f in os.listdir(os.path.join(ROOT, "csrc")) if f.endswith(".c"))
    cc = os.environ.get("CC", "gcc")
    subprocess.run([cc, "-O2", "-flto", "-std=c11", "-D_GNU_SOURCE=", "-I" + os.path.join(ROOT, "csrc"),
                    "-o", out, os.path.join(HERE, "notifycost.c"), *core, "-lrt", "-pthread"], check=True)


def run(exe: str, mode: str, n: int, fence: bool) -> float:
    env = dict(os.environ)
    env.pop("SHMRING_NOTIFY_FENCE", None)
    if fence:
        env["SHMRING_NOTIFY_FENCE"] = "1"
    out = subprocess.run([exe, mode, str(n)], env=env, check=True, capture_output=True, text=True, timeout=600)
    return float(out.stdout.strip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    a = ap.parse_args()
    scale = 10 if a.quick else 1
    cases = [  # mode, iterations, unit, higher is better
        ("inproc", 5_000_000 // scale, "ns per push+pop", False),
        ("spsc", 5_000_000 // scale, "M records/s", True),
        ("sleepy", 50_000 // scale, "us per round trip", False),
    ]
    with tempfile.TemporaryDirectory() as d:
        exe = os.path.join(d, "notifycost")
        build(exe)
        print(f"notify fence vs. membarrier on the sleep path ({a.runs} runs each, alternated, not pinned, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
        for mode, n, unit, higher in cases:
            res = {False: [], True: []}
            for _ in range(a.runs):
                for fence in (False, True):
                    res[fence].append(run(exe, mode, n, fence))
            for fence in (False, True):
                v = res[fence]
                label = "fence in every notify" if fence else "membarrier when sleeping"
                print(f"  {mode:7s} {label:26s} min {min(v):9.3f}  median {statistics.median(v):9.3f}  "
                      f"max {max(v):9.3f}  {unit}")
            m0, m1 = statistics.median(res[False]), statistics.median(res[True])
            gain = (m0 / m1) if higher else (m1 / m0)
            print(f"  {mode:7s} ratio (membarrier / fence, >1 is better): {gain:.2f}x")
        bar = [run(exe, "barrier", 200_000 // scale, False) for _ in range(a.runs)]
        print(f"  membarrier(GLOBAL_EXPEDITED) per call: min {min(bar):.1f}  median {statistics.median(bar):.1f} ns "
              "(added to every wait that goes to sleep)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
