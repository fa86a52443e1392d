"""Smoke test of an installed shmring, run from outside the source tree.

Checks that the package imported is the installed one, that records cross a
process boundary intact (spawned consumer, checksummed sequence), that the
version agrees with the installed metadata and that the command line answers.
Exits non-zero with a message on the first failure.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
from importlib import metadata

import numpy as np

import shmring

DT = np.dtype([("seq", "<u8"), ("check", "<u8")])
N = 20_000


def consume(ring, out) -> None:
    total = count = 0
    with ring.consumer() as cons:
        while True:
            try:
                batch = cons.pop_many(1000, timeout=30)
            except shmring.Closed:
                break
            if np.any(batch["check"] != batch["seq"] * 3 + 1):
                out.put("bad checksum")
                return
            total += int(batch["seq"].sum())
            count += len(batch)
    out.put((count, total))


def main() -> int:
    here = os.path.dirname(os.path.abspath(shmring.__file__))
    if "site-packages" not in here:
        raise SystemExit(f"smoke: shmring imported from {here}, not from an installed copy")
    if shmring.__version__ != metadata.version("shmring"):
        raise SystemExit(f"smoke: __version__ {shmring.__version__} != metadata {metadata.version('shmring')}")
    name = f"smoke-{os.getpid()}"
    ring = shmring.Ring.create(name, DT, 1024)
    try:
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        proc = ctx.Process(target=consume, args=(ring, out), daemon=True)
        proc.start()
        with ring.producer() as prod:  # queue mode: a consumer that joins late still gets every record
            seq = np.arange(N, dtype=np.uint64)
            recs = np.empty(N, DT)
            recs["seq"], recs["check"] = seq, seq * 3 + 1
            ls = subprocess.run([sys.executable, "-m", "shmring", "ls", "--json"],
                                capture_output=True, text=True, timeout=60, check=True)
            if name not in [r["name"] for r in json.loads(ls.stdout)]:
                raise SystemExit(f"smoke: `shmring ls --json` does not list {name}")
            prod.push_many(recs, timeout=30)
        got = out.get(timeout=60)
        proc.join(30)
        if got != (N, N * (N - 1) // 2):
            raise SystemExit(f"smoke: consumer received {got}, expected {(N, N * (N - 1) // 2)}")
    finally:
        ring.close()
        shmring.unlink(name)
    print(f"smoke ok: shmring {shmring.__version__} from {here}, {N} records across processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
