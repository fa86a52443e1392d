from typing import Any, Iterator, TypedDict

from typing_extensions import disjoint_base

import numpy as np

LAYOUT_VERSION: int
LAYOUT: dict[str, tuple[int, int]]
LAYOUT_MAGIC: int
LAYOUT_PAGE: int
LAYOUT_BLOCK: int
NAME_MAX: int
DESCR_MAX: int
MAX_CONSUMERS: int
DEFAULT_LIVENESS_INTERVAL: float
MODES: dict[str, int]
OVERFLOWS: dict[str, int]
STARTS: dict[str, int]
CLOSE_REASONS: dict[int, str | None]

class _Waiters(TypedDict):
    consumers: int
    producer: int

class _RingInfo(TypedDict):
    """struct shmr_ring_info, field for field."""

    capacity: int
    record_size: int
    segment_size: int
    mode: int
    overflow: int
    max_consumers: int
    layout_version: int
    pushed: int
    tail: int
    popped: int
    popped_retired: int
    available: int
    n_consumers: int
    waiters: _Waiters
    producer_pid: int
    producer_start: int
    producer_alive: int
    close_reason: int
    abandoned: int
    evicted: int
    creator_pid: int
    create_time_ns: int

class _ConsumerInfo(TypedDict):
    """struct shmr_consumer_info, field for field."""

    index: int
    pid: int
    start_time: int
    cursor: int
    popped: int
    dropped: int
    claim_pos: int
    claimed: int
    alive: int

def start_time_of(pid: int) -> int: ...
def process_alive(pid: int, start_time: int = ...) -> bool: ...
def check_name(name: str) -> int: ...
def unlink(name: str) -> None: ...

@disjoint_base
class Mapping:
    name: str
    @staticmethod
    def create(name: str, capacity: int, record_size: int, align: int, mode: int, overflow: int,
               max_consumers: int, descr: bytes, perm: int) -> Mapping: ...
    @staticmethod
    def attach(name: str) -> Mapping: ...
    @staticmethod
    def attach_fd(fd: int, label: str) -> Mapping: ...
    @property
    def descr(self) -> str: ...
    @property
    def capacity(self) -> int: ...
    @property
    def record_size(self) -> int: ...
    @property
    def mode(self) -> int: ...
    @property
    def overflow(self) -> int: ...
    def info(self) -> _RingInfo: ...
    def consumer_infos(self) -> list[_ConsumerInfo]: ...

@disjoint_base
class _Handle:
    @property
    def dtype(self) -> np.dtype: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...

@disjoint_base
class Reservation:
    @property
    def array(self) -> np.ndarray: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> np.ndarray: ...
    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: Any) -> bool: ...

@disjoint_base
class View:
    @property
    def array(self) -> np.ndarray: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> np.ndarray: ...
    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: Any) -> bool: ...

@disjoint_base
class Producer(_Handle):
    ring: Any
    def push(self, record: Any, timeout: float | None = None) -> None: ...
    def push_many(self, records: Any, timeout: float | None = None) -> int: ...
    def reserve(self, n: int, timeout: float | None = None) -> Reservation: ...
    def close(self) -> None: ...
    def __enter__(self) -> Producer: ...
    def __exit__(self, *exc: Any) -> None: ...

@disjoint_base
class Consumer(_Handle):
    ring: Any
    def pop(self, timeout: float | None = None) -> Any: ...
    def pop_many(self, max_records: int, timeout: float | None = None) -> np.ndarray: ...
    def view(self, max_records: int, timeout: float | None = None) -> View: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __next__(self) -> Any: ...
    @property
    def popped(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def index(self) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> Consumer: ...
    def __exit__(self, *exc: Any) -> None: ...
