"""Dicts holding numpy arrays, sent between processes through a message ring.

A message ring (created without a dtype) carries any picklable object. Arrays inside a
dict are written next to the pickle stream, never through it (pickle protocol 5,
out-of-band buffers), so a camera frame costs one copy into the ring and one out. The
consumer reads half the messages with ``pop`` (a copy it owns) and half with ``view``
(read-only views into the ring, valid inside the block), and checks every value
against what the producer must have sent.

    python examples/messages_dicts_of_arrays.py [--messages N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys

import numpy as np

import shmring


def make(i: int) -> dict:
    """Message i, rebuilt identically on both sides to check what arrived."""
    rng = np.random.default_rng(i)
    return {
        "seq": i,
        "camera": f"cam{i % 3}",
        "frame": rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8),
        "pose": rng.standard_normal(6),
        "boxes": rng.random((i % 5, 4), dtype=np.float32),  # 0..4 rows: empty arrays too
    }


def producer(ring: shmring.Ring, n: int) -> None:
    with ring.producer() as prod:  # leaving the block ends the stream
        for i in range(n):
            prod.push(make(i), timeout=30)


def same(got: dict, want: dict) -> bool:
    if got.keys() != want.keys() or got["seq"] != want["seq"] or got["camera"] != want["camera"]:
        return False
    return all(got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
               and np.array_equal(got[k], want[k]) for k in ("frame", "pose", "boxes"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=300, help="messages to send (default 300)")
    args = ap.parse_args()

    # name=None: a generated, unique name; the name goes away when the ring is closed
    with shmring.Ring.create(None, nbytes=4 << 20, unlink_on_close=True) as ring:
        cons = ring.consumer()  # registered before the producer starts: it misses nothing
        child = mp.get_context("spawn").Process(target=producer, args=(ring, args.messages))
        child.start()
        bad = received = viewed = 0
        try:
            while True:
                try:
                    if received % 2:
                        with cons.view(timeout=30) as msg:  # no copy: arrays are views of the ring
                            ok = same(msg, make(received)) and not msg["frame"].flags.writeable
                        viewed += 1
                    else:
                        msg = cons.pop(timeout=30)  # a copy that owns its memory
                        ok = same(msg, make(received)) and msg["frame"].flags.writeable
                except shmring.Closed:  # the producer finished and everything was read
                    break
                if not ok:
                    bad += 1
                    print(f"MISMATCH in message {received}")
                received += 1
        finally:
            cons.close()
            child.join(30)
            if child.is_alive():
                child.kill()
    if bad or received != args.messages or child.exitcode != 0:
        print(f"FAILED: {received} of {args.messages} messages, {bad} wrong, producer exit {child.exitcode}")
        return 1
    mb = args.messages * make(0)["frame"].nbytes / 1e6
    print(f"ok: {received} dicts of arrays ({mb:.1f} MB of frames) arrived intact, in order; "
          f"{viewed} read in place")
    return 0


if __name__ == "__main__":
    sys.exit(main())
