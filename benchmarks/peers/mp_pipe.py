"""multiprocessing.Pipe: send_bytes/recv_bytes over a one-way pipe."""

from __future__ import annotations

import numpy as np

from harness.peer import Peer
from harness.records import FRAME, REC, Endpoint


class MpPipe(Peer):
    name = "mp.Pipe"
    order = 20
    color = "#8c564b"
    notes = {("frames", "copy"): "send_bytes / recv_bytes"}

    def channel(self, res, ctx, kind, *, mode="queue", capacity=None, consumers=1, wait=None,
                own_dtype=True):
        r, w = ctx.Pipe(duplex=False)
        return {"r": r, "w": w}

    def tx(self, chan, spin):
        w = chan["w"]
        e = Endpoint()
        e.send1 = e.send_batch = w.send_bytes
        send_bytes = w.send_bytes
        # send_bytes() takes len() of a multi-dimensional uint8 buffer as its size: flatten
        e.send_frame = lambda frame: send_bytes(frame.reshape(-1))
        return e

    def rx(self, chan, spin):
        r = chan["r"]
        e = Endpoint()
        e.recv1 = r.recv_bytes
        recv_bytes = r.recv_bytes
        e.recv_batch = lambda: len(np.frombuffer(recv_bytes(), REC))
        e.recv_frame = lambda: np.frombuffer(recv_bytes(), np.uint8).reshape(FRAME.shape)
        return e


PEER = MpPipe()
