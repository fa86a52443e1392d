"""Camera frames broadcast to every viewer, with one slow viewer (broadcast, overwrite).

A camera process writes 640x480 RGB frames straight into the ring (``reserve``: no copy
on the way in); every viewer reads each frame in place (``view``: no copy on the way
out). The camera never waits for anyone: a viewer that falls more than a ring behind
skips to the newest frames, and what it missed is counted exactly in ``dropped``.

The fast viewer sees every frame in order; the slow one sees fewer, in order, and
received + dropped adds up to every frame.

    python examples/camera_broadcast.py [--frames N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

import numpy as np

import shmring

FRAME = np.dtype((np.uint8, (480, 640, 3)))  # one record is one frame (900 KiB)


def viewer(ring: shmring.Ring, delay: float, ready, results) -> None:
    seen = []
    with ring.consumer(start="oldest") as cons:
        ready.set()
        while True:
            try:
                with cons.view(1) as frames:  # frames[0] is the frame, in shared memory
                    frame_no = int(frames[0, 0, 0, 0]) | int(frames[0, 0, 0, 1]) << 8
                    intact = bool(frames[0, -1, -1, 2] == frame_no % 251)
            except shmring.Lagged:  # the camera overwrote the frame while we held it:
                continue            # not valid, counted in cons.dropped
            except shmring.Closed:
                break
            seen.append((frame_no, intact))
            time.sleep(delay)  # a slow viewer: some analysis per frame
        results.put((delay, seen, cons.dropped))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300, help="frames to send (default 300)")
    args = ap.parse_args()

    name = f"camera-{os.getpid()}"
    ring = shmring.Ring.create(name, FRAME, capacity=8, mode="broadcast", overflow="overwrite")
    try:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        results = ctx.Queue()
        delays = (0.0, 0.01)  # a fast viewer, and one that takes 10 ms per frame
        ready = [ctx.Event() for _ in delays]
        viewers = [ctx.Process(target=viewer, args=(ring, d, r, results)) for d, r in zip(delays, ready)]
        for v in viewers:
            v.start()
        for r in ready:
            r.wait(30)  # both registered before the first frame: nobody misses the start
        with ring.producer() as cam:
            for i in range(args.frames):
                with cam.reserve(1) as frames:  # write in place
                    frames[0].fill(0)
                    frames[0, 0, 0, 0], frames[0, 0, 0, 1] = i & 0xFF, i >> 8
                    frames[0, -1, -1, 2] = i % 251
                time.sleep(0.002)  # about a 500 fps camera
        got = sorted(results.get(timeout=120) for _ in viewers)
        for v in viewers:
            v.join(30)
    finally:
        ring.close()
        ring.unlink()

    ok = True
    for delay, seen, dropped in got:
        numbers = [n for n, _ in seen]
        in_order = all(a < b for a, b in zip(numbers, numbers[1:]))
        intact = all(i for _, i in seen)
        print(f"viewer with {delay * 1000:.0f} ms per frame: {len(seen)} frames, {dropped} dropped, "
              f"in order: {in_order}, intact: {intact}")
        ok &= in_order and intact and len(seen) + dropped == args.frames
    fast = got[0][1]
    ok &= [n for n, _ in fast] == list(range(args.frames)) or got[0][2] > 0
    if not ok:
        print("MISMATCH: a viewer saw frames out of order, torn, or received + dropped != frames sent")
        return 1
    print(f"ok: {args.frames} frames; every viewer got each frame once, in order, or counted it as dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
