"""Exceptions raised by shmring. Each subclasses the stdlib class users already catch."""

from __future__ import annotations

import pickle
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

    # A message without an __init__ of our own: pop(timeout=0) on an empty ring
    # builds one per call, and the C constructor is what keeps that cheap.
    def __str__(self) -> str:
        return super().__str__() or "no record was available before the timeout"


class Closed(EOFError):
    """The stream ended and every record published before that was consumed, or
    the handle itself was closed. ``reason`` is one of CLOSE_REASONS.

    ``pushed``: from push_many, how many records of the call were published
    before the handle was closed under it (a retry must skip them)."""

    def __init__(self, msg: str = "ring closed", reason: str = "closed", pushed: int = 0) -> None:
        super().__init__(msg)
        self.reason = reason
        self.pushed = pushed


# Every value Closed.reason takes: the stream was closed by its producer, the
# producer's process died, or this handle was closed (by close(), possibly from
# another thread while a call on it was blocked).
CLOSE_REASONS = ("closed by producer", "producer died", "handle closed")


class Lagged(RuntimeError):
    """A broadcast consumer was lapped by an overwriting producer.

    ``count`` is the exact number of records (messages, on a message ring) this
    consumer lost; ``nbytes`` the bytes of those messages (message rings).
    """

    def __init__(self, count: int, msg: str | None = None, nbytes: int | None = None) -> None:
        super().__init__(msg or f"consumer was lapped by the producer: {count} records lost")
        self.count = count
        self.nbytes = nbytes


class Evicted(Lagged):
    """This consumer held a block-mode producer back for longer than the ring's
    ``evict_after`` and was evicted: the producer no longer waits for it.

    ``count`` is the number of records of the batch it held that were taken
    back from it (queue mode; counted in the ring's ``abandoned``, never
    delivered to anyone), 0 in broadcast mode. Every later call on the handle
    raises this again: close it and open a new consumer."""



class NotABoardError(RingError):
    """The shared-memory segment exists but is not a shmring board (a ring, or foreign)."""


class BoardChanged(RuntimeError):
    """A writer started to overwrite the value a ``Board.view`` was reading in place:
    what was read inside the block is not valid. ``key`` and ``version`` name the
    value that was viewed."""

    def __init__(self, key: object, version: int, msg: str | None = None) -> None:
        super().__init__(msg or f"the value of key {key!r} (version {version}) was overwritten while it "
                                f"was viewed; what was read from it is not valid")
        self.key = key
        self.version = version


class CorruptMessageError(ValueError):
    """A message's body does not decode: its header, table or descriptor is inconsistent."""


class PickleRefusedError(pickle.UnpicklingError):
    """A consumer opened with ``allow_pickle=False`` met a pickled message.

    The message is consumed (a queue does not hand it to another consumer);
    bytes and numpy arrays, which are never pickled, still arrive."""
