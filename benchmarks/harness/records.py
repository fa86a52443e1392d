"""The records every implementation moves, and the endpoint shape the cases drive."""

from __future__ import annotations

import numpy as np

REC = np.dtype([("seq", "<u8"), ("ts", "<u8"), ("px", "<f8", (6,))])
FRAME = np.dtype((np.uint8, (1080, 1920, 3)))
BATCH = 1024
ZEROS64 = bytes(64)
STOP64 = b"\xff" * 64


class Endpoint:
    """One side of a channel as plain callables, so hot loops call bound methods without a
    wrapper where the library allows it. A peer fills in what it supports; a case that needs a
    missing callable is not run for that peer."""

    send1 = recv1 = send_batch = recv_batch = send_frame = recv_frame = None
    send_frame_zc = recv_frame_zc = send_frame_fill = None

    def end(self, n_consumers: int) -> None:  # end of stream for the scaling cases
        pass

    def close(self) -> None:
        pass


def tick_record() -> np.void:
    a = np.zeros(1, REC)
    a["px"] = np.arange(6)
    return a[0]


def tick_batch() -> np.ndarray:
    a = np.zeros(BATCH, REC)
    a["seq"] = np.arange(BATCH)
    return a


def frame() -> np.ndarray:
    return np.full(FRAME.shape, 7, np.uint8)


def prepare(item):
    """The one extra call a real producer makes per record (stamping, building, logging) in the
    "default" configuration; kept trivial so what it measures is the call, nothing else."""
    return item
