"""What a 6 MB frame copy costs as the set of destination buffers grows, in one process.

    python benchmarks/frame_cache.py [--repeat 5] [--copies 48]

A ring of capacity N cycles its copies through N frame slots. This writes one 6 MB
source frame into N buffers in turn (N = 1 .. 16) and reports CPU time per copy
(min and median of ``--repeat`` rounds of ``--copies`` copies; process CPU time, so
other processes on the machine change it less than wall time). Where the cost jumps,
the slots plus the source no longer fit in the cache share this process gets: pick a
ring capacity below that point for large records.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

FRAME = 1080 * 1920 * 3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--copies", type=int, default=48)
    a = ap.parse_args(argv)
    src = np.full(FRAME, 7, np.uint8)
    print(f"6 MB frame copies; load average {os.getloadavg()[0]:.2f}")
    for nbuf in (1, 2, 3, 4, 6, 8, 16):
        bufs = [np.ones(FRAME, np.uint8) for _ in range(nbuf)]  # touched: no page faults below
        per = []
        for _ in range(a.repeat):
            t0 = time.process_time()
            for i in range(a.copies):
                np.copyto(bufs[i % nbuf], src)
            per.append((time.process_time() - t0) / a.copies)
        per.sort()
        print(f"{nbuf:3d} slots ({nbuf * FRAME / 2**20:5.1f} MiB + 5.9 MiB source): "
              f"min {per[0] * 1e6:5.0f} us, median {per[len(per) // 2] * 1e6:5.0f} us per copy "
              f"({FRAME / per[0] / 1e9:4.1f} GB/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
