"""Bridge a broadcast ring to another ring over TCP (loopback here, another host in practice).

A Sender attaches to the source ring as one consumer and publishes it on a TCP port; a
Receiver connects, creates the destination ring like the source (dtype, mode, overflow,
capacity) and produces into it. Consumers on the far side use the ordinary API. Both run
in background threads (``start()``/``stop()``). Every record carries a sequence number and
a checksum: the far side must get all of them, in order, intact, and the receiver must
count nothing lost. Needs pyzmq (``pip install 'shmring[bridge]'``).

    python examples/bridge_loopback.py [--records N]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import shmring
from shmring.bridge import Receiver, Sender, remove_sidecar

TICK = np.dtype([("seq", "<u8"), ("price", "<f8"), ("check", "<u8")])


def ticks(start: int, n: int) -> np.ndarray:
    a = np.zeros(n, TICK)
    a["seq"] = np.arange(start, start + n)
    a["price"] = 100.0 + a["seq"] * 0.01
    a["check"] = a["seq"] * 2654435761 % (1 << 32)
    return a


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000, help="records to send (default 100000)")
    args = ap.parse_args()
    n = args.records

    dst_name = f"bridged-{os.getpid()}"
    with shmring.Ring.create(None, TICK, 4096, mode="broadcast", unlink_on_close=True) as src:
        # port 0: the system picks a free port; sender.bound says which
        sender = Sender(src, "tcp://127.0.0.1:0").start()
        receiver = Receiver(sender.bound, dst_name).start()
        dst = None
        try:
            if not receiver.wait_ready(10):  # the handshake created the destination ring
                print("FAILED: the receiver did not connect")
                return 1
            dst = shmring.Ring.attach(dst_name)
            got = []
            with dst.consumer(start="oldest") as cons, src.producer() as prod:
                for i in range(0, n, 1000):
                    prod.push_many(ticks(i, min(1000, n - i)), timeout=10)
                    while True:  # read what has crossed so far, without blocking
                        try:
                            got.append(cons.pop_many(4096, timeout=0))
                        except shmring.Empty:
                            break
                while sum(map(len, got)) < n:
                    got.append(cons.pop_many(4096, timeout=10))
            recv = receiver.counters
        finally:
            receiver.stop()
            sender.stop()
            if dst is not None:
                dst.close()
            shmring.unlink(dst_name)
            remove_sidecar(dst_name)  # the receiver's saved position and counters

    sent = sender.counters  # read after stop(): final
    out = np.concatenate(got)
    in_order = np.array_equal(out["seq"], np.arange(n))
    intact = np.array_equal(out["check"], out["seq"] * 2654435761 % (1 << 32)) and \
        np.array_equal(out["price"], 100.0 + out["seq"] * 0.01)
    if not in_order or not intact or recv["lost"] != 0 or recv["records"] != n:
        print(f"FAILED: {len(out)} of {n} records, in order {in_order}, intact {intact}, receiver {recv}")
        return 1
    print(f"sender: {sent['batches']} batches, {sent['records']} records, {sent['bytes']} bytes")
    print(f"ok: {n} records crossed tcp loopback in order and intact, {recv['lost']} lost, "
          f"{recv['duplicates']} duplicates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
