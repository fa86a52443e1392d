"""Exceptions raised by shmring. Each subclasses the stdlib class users already catch."""

from __future__ import annotations

import queue


class RingError(Exception):
    """A ring cannot be created or attached: bad layout, bad header, bad parameters."""


class NotARingError(RingError):
    """The shared-memory segment exists but is not a shmring ring."""


class LayoutVersionError(RingError):
    """The segment was written by a shmring with another layout version."""


class CorruptRingError(RingError):
    """A header field is out of bounds or the segment is shorter than its header says."""


class CreatorDiedError(RingError):
    """The segment's creator died before finishing it: nothing can use it; remove it."""


class ProducerBusyError(RingError):
    """Another live process already holds the producer role."""


class ConsumerTableFull(RingError):
    """Every consumer slot of the ring is taken by a live consumer."""


class Full(queue.Full):
    """push/push_many could not place every record before the timeout.

    ``pushed`` says how many records of the call were published before it gave up.
    """

    def __init__(self, msg: str = "ring is full", pushed: int = 0) -> None:
        super().__init__(msg)
        self.pushed = pushed


class Empty(queue.Empty):
    """pop/pop_many/view found no record before the timeout."""


class Closed(EOFError):
    """The stream ended (``reason``: "closed by producer" or "producer died") and
    every record published before that was consumed; or the handle was closed.

    ``pushed``: from push_many, how many records of the call were published
    before the handle was closed under it (a retry must skip them)."""

    def __init__(self, msg: str = "ring closed", reason: str = "closed", pushed: int = 0) -> None:
        super().__init__(msg)
        self.reason = reason
        self.pushed = pushed


class Lagged(RuntimeError):
    """A broadcast consumer was lapped by an overwriting producer.

    ``count`` is the exact number of records this consumer lost.
    """

    def __init__(self, count: int, msg: str | None = None) -> None:
        super().__init__(msg or f"consumer was lapped by the producer: {count} records lost")
        self.count = count
