"""shmring: a lock-free ring of numpy records in POSIX shared memory.

One producer, many consumer processes; ``mode="queue"`` hands each record to
exactly one consumer, ``mode="broadcast"`` to every consumer.
"""

from ._api import ConsumerStats, Ring, RingStats, Waiters, unlink
from ._ring import Consumer, Producer, Reservation, View
from .errors import (
    Closed,
    ConsumerTableFull,
    CorruptRingError,
    CreatorDiedError,
    Empty,
    Full,
    Lagged,
    LayoutVersionError,
    NotARingError,
    ProducerBusyError,
    RingError,
)

__all__ = [
    "Ring", "Producer", "Consumer", "Reservation", "View", "unlink", "RingStats", "ConsumerStats", "Waiters",
    "RingError", "NotARingError", "LayoutVersionError", "CorruptRingError", "CreatorDiedError", "ProducerBusyError",
    "ConsumerTableFull", "Full", "Empty", "Closed", "Lagged",
]
__version__ = "0.1.0"
