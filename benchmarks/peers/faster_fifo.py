"""faster-fifo: a multiprocessing.Queue replacement on a shared-memory circular buffer."""

from __future__ import annotations

from functools import partial

from harness.peer import Peer
from harness.records import Endpoint


class FasterFifo(Peer):
    name = "faster-fifo"
    order = 30
    color = "#2ca02c"
    requires = "faster_fifo"
    dist = "faster-fifo"
    scaling_modes = ("queue",)
    notes = {("frames", "copy"): "put / get (pickled)"}

    def channel(self, res, ctx, kind, *, mode="queue", capacity=None, consumers=1, wait=None,
                own_dtype=True):
        import faster_fifo

        size = 64 << 20 if kind == "frame" else (8 << 20 if kind == "batch" else 1 << 20)
        return {"q": faster_fifo.Queue(max_size_bytes=size)}

    def tx(self, chan, spin):
        q = chan["q"]
        e = Endpoint()
        e.send1 = e.send_batch = e.send_frame = partial(q.put, timeout=3600.0)

        def end(n):
            for _ in range(n):
                q.put(None, timeout=3600.0)

        e.end = end
        return e

    def rx(self, chan, spin):
        q = chan["q"]
        e = Endpoint()
        get = partial(q.get, timeout=3600.0)
        e.recv1 = e.recv_frame = get
        e.recv_batch = lambda: len(get())
        return e


PEER = FasterFifo()
