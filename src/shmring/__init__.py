"""shmring: a lock-free ring of numpy records in POSIX shared memory.

One producer, many consumer processes; ``mode="queue"`` hands each record to
exactly one consumer, ``mode="broadcast"`` to every consumer. ``Board`` keeps
the latest value per key for every process.
"""

from ._api import ConsumerStats, Ring, RingStats, Waiters, unlink
from ._version import __version__
from ._ring import BoardChange, BoardView, Consumer, Producer, Reservation, View
from .board import Board
from .queues import JoinableQueue, Queue, SimpleQueue
from .aio import await_any, wait_any
from .errors import (
    BoardChanged,
    Closed,
    ConsumerTableFull,
    CorruptRingError,
    CreatorDiedError,
    Empty,
    Evicted,
    Full,
    Lagged,
    LayoutVersionError,
    NotABoardError,
    NotARingError,
    ProducerBusyError,
    RingError,
)

__all__ = [
    "Ring", "Producer", "Consumer", "Reservation", "View", "unlink", "RingStats", "ConsumerStats", "Waiters",
    "RingError", "NotARingError", "LayoutVersionError", "CorruptRingError", "CreatorDiedError", "ProducerBusyError",
    "ConsumerTableFull", "Full", "Empty", "Closed", "Lagged", "Evicted", "wait_any", "await_any",
    "Board", "BoardView", "BoardChange", "BoardChanged", "NotABoardError", "Queue", "JoinableQueue", "SimpleQueue",
]
