"""shmring: numpy records pushed and popped (np.void in, np.void out; arrays for batches and
frames), frames also reserved and viewed in place."""

from __future__ import annotations

import numpy as np

from harness.peer import Peer
from harness.records import BATCH, FRAME, REC, Endpoint, tick_record


def _attach(chan: dict):
    """Attach with dtype=: the ring then uses our dtype object, the one the records we push
    carry (as a ring made by Ring.create in this process does). chan["own_dtype"] False attaches
    without it, so pushed records carry an equal but distinct dtype object (shmring <= e49c984
    compared the two structured dtypes on every push, ~0.27 us; now it compares once)."""
    import shmring

    dt = FRAME if chan["kind"] == "frame" else REC
    return shmring.Ring.attach(chan["name"], dtype=dt if chan["own_dtype"] else None)


def _owning(e, ring, handle):
    """e, made to keep ring and its producer or consumer alive; close() closes both."""
    def close():
        handle.close()
        ring.close()

    e.close = close
    e._keep = (ring, handle)
    return e


class Shmring(Peer):
    name = "shmring"
    order = 0
    color = "#d62728"
    requires = "shmring"
    dist = "shmring"
    features = frozenset({"spin", "spin_budget", "own_dtype", "zero_copy", "alone"})
    scaling_modes = ("queue", "broadcast")
    scaling_batch = True
    notes = {
        ("latency", "spin"): "spin=1.0 s",
        ("latency", "sleep"): "spin=0: futex right away",
        ("latency", "spin-nodt"): "spin=1.0 s, rings attached without dtype= (records carry an equal, "
                                  "distinct dtype)",
        ("throughput", "rec"): "push()/pop()",
        ("throughput", "batch"): "push_many()/pop_many(1024)",
        ("throughput", "rec-nodt"): "push()/pop(), ring attached without dtype= (records carry an equal, "
                                    "distinct dtype)",
        ("throughput", "rec-alone"): "push() into a broadcast ring with no consumer attached: the producer's "
                                     "own rate",
        ("frames", "copy"): "push(frame) / pop() -> new array",
        ("frames", "zc fill"): "reserve(1): frame written in place / view(1): read in place",
        ("frames", "zc marker"): "reserve/view, 1 byte written and read: hand-off rate, GB/s nominal",
        ("frames", "copy cap 8"): "as copy, through a ring of 8 frames (48 MB) instead of 2",
        ("frames", "zc fill cap 8"): "as zc fill, through a ring of 8 frames (48 MB) instead of 2",
    }

    def channel(self, res, ctx, kind, *, mode="queue", capacity=None, consumers=1, wait=None,
                own_dtype=True):
        import shmring

        name = f"bench{res.tag}-{res.next_id()}"
        dtype = FRAME if kind == "frame" else REC
        # frames: 2 slots, the capacity the README advises for records of megabytes (a
        # ring cycles its writes through every slot; 8 frames are 48 MB, past the cache)
        cap = capacity or (2 if kind == "frame" else 16384)
        ring = shmring.Ring.create(name, dtype, cap, mode=mode, max_consumers=max(4, consumers))
        res.rings.append(name)
        ring.close()
        return {"name": name, "kind": kind, "own_dtype": own_dtype}

    def tx(self, chan, spin):
        ring = _attach(chan)
        prod = ring.producer(spin=spin)
        e = Endpoint()
        e.send1 = prod.push
        e.send_batch = prod.push_many
        e.send_frame = prod.push
        reserve = prod.reserve

        def send_frame_zc(i):
            with reserve(1) as a:
                a[0, 0, 0, 0] = i & 255  # the frame is produced in place; we write a marker only

        e.send_frame_zc = send_frame_zc

        def send_frame_fill(src):
            with reserve(1) as a:
                np.copyto(a[0], src)  # the frame is written straight into the ring: the only copy

        e.send_frame_fill = send_frame_fill
        e.end = lambda n: prod.close()
        return _owning(e, ring, prod)

    def rx(self, chan, spin):
        ring = _attach(chan)
        cons = ring.consumer(start="oldest", spin=spin)
        e = Endpoint()
        e.recv1 = cons.pop
        pop_many = cons.pop_many
        e.recv_batch = lambda: len(pop_many(BATCH))
        e.recv_frame = cons.pop
        view = cons.view

        def recv_frame_zc():
            with view(1) as v:
                return v[0, 0, 0, 0]  # read in place; nothing is copied

        e.recv_frame_zc = recv_frame_zc
        return _owning(e, ring, cons)

    def item(self):
        return tick_record()

    def stop_echo(self, tx):
        tx.end(1)

    def echo(self, tx, rx):
        import shmring

        send, recv = tx.send1, rx.recv1
        try:
            while True:
                send(recv())
        except shmring.Closed:
            pass

    def consume(self, rx, batch, done):
        import shmring

        n = 0
        try:
            if batch:
                fn = rx.recv_batch
                while True:
                    n += fn()
            else:
                fn = rx.recv1
                while True:
                    fn()
                    n += 1
        except shmring.Closed:
            pass
        return n


PEER = Shmring()
