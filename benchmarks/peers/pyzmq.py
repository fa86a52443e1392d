"""pyzmq: PUSH/PULL sockets over ipc:// (a fan-out PUSH binds when there are several consumers)."""

from __future__ import annotations

from functools import partial

import numpy as np

from harness.peer import Peer
from harness.records import FRAME, REC, Endpoint


def _socket(chan, kind, hwm_option, *, linger, bind):
    """A socket of the channel: one end binds, the other connects (the fan-out PUSH binds)."""
    import zmq

    s = zmq.Context.instance().socket(kind)
    s.setsockopt(zmq.LINGER, linger)
    s.setsockopt(hwm_option, chan["hwm"])
    if bind:
        s.bind(chan["addr"])
    else:
        s.connect(chan["addr"])
    return s


class Pyzmq(Peer):
    name = "pyzmq"
    order = 40
    color = "#1f77b4"
    requires = "zmq"
    dist = "pyzmq"
    notes = {("frames", "copy"): "send(copy=False) / recv(copy=False)"}

    def channel(self, res, ctx, kind, *, mode="queue", capacity=None, consumers=1, wait=None,
                own_dtype=True):
        hwm = 4 if kind == "frame" else (64 if kind == "batch" else 1000)
        return {"addr": f"ipc://{res.tmp}/z{res.next_id()}", "fanout": consumers > 1, "hwm": hwm}

    def tx(self, chan, spin):
        import zmq

        s = _socket(chan, zmq.PUSH, zmq.SNDHWM, linger=2000, bind=chan.get("fanout"))
        e = Endpoint()
        e.send1 = e.send_batch = s.send
        e.send_frame = partial(s.send, copy=False)

        def end(n):
            for _ in range(n):
                s.send(b"")

        e.end = end
        e.close = lambda: s.close()
        return e

    def rx(self, chan, spin):
        import zmq

        s = _socket(chan, zmq.PULL, zmq.RCVHWM, linger=0, bind=not chan.get("fanout"))
        e = Endpoint()
        e.recv1 = s.recv
        recv = s.recv
        e.recv_batch = lambda: len(np.frombuffer(recv(), REC))

        def recv_frame():
            m = s.recv(copy=False)
            return np.frombuffer(m.buffer, np.uint8).reshape(FRAME.shape)

        e.recv_frame = recv_frame
        e.close = lambda: s.close()
        return e


PEER = Pyzmq()
