"""multiprocessing.Queue: put/get of pickled objects through a pipe and a feeder thread."""

from __future__ import annotations

from harness.peer import Peer
from harness.records import Endpoint


class MpQueue(Peer):
    name = "mp.Queue"
    order = 10
    color = "#7f7f7f"
    scaling_modes = ("queue",)
    notes = {("frames", "copy"): "put / get (pickled)"}

    def channel(self, res, ctx, kind, *, mode="queue", capacity=None, consumers=1, wait=None,
                own_dtype=True):
        return {"q": ctx.Queue(8 if kind == "frame" else (64 if kind == "batch" else 16384))}

    def tx(self, chan, spin):
        q = chan["q"]
        e = Endpoint()
        e.send1 = e.send_batch = e.send_frame = q.put

        def end(n):
            for _ in range(n):
                q.put(None)

        e.end = end
        return e

    def rx(self, chan, spin):
        q = chan["q"]
        e = Endpoint()
        e.recv1 = q.get
        e.recv_frame = q.get
        get = q.get
        e.recv_batch = lambda: len(get())
        return e


PEER = MpQueue()
