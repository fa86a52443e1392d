from typing import Any, AsyncIterator, Iterable, Iterator, NoReturn, TypedDict, final, overload

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
KIND_RECORDS: int
KIND_MESSAGES: int
MSG_UNIT: int
RAW_OWN_BIT: int
LIVENESS: dict[int, str]
LIVENESS_DEAD: int

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
    evicted_stalled: int
    evict_after_ms: int
    creator_pid: int
    creator_start: int
    creator_alive: int
    create_time_ns: int
    kind: int
    bytes_pushed: int
    abandoned_bytes: int
    max_message: int

class _ConsumerInfo(TypedDict):
    """struct shmr_consumer_info, field for field."""

    index: int
    pid: int
    start_time: int
    cursor: int
    popped: int
    dropped: int
    dropped_bytes: int
    claim_pos: int
    claimed: int
    alive: int
    evicted: int

def start_time_of(pid: int) -> int:
    """Start time of a process (clock ticks since boot), 0 if it is gone."""

def process_alive(pid: int, start_time: int = ...) -> bool:
    """False only for a process known to be dead (see ``liveness()``)."""

def liveness(pid: int, start_time: int = ..., pidns: int = ...) -> str:
    """``"alive"``, ``"dead"`` or ``"unknown"`` (a process in another pid namespace, or one
    this user may not inspect): unknown never counts as dead."""

def self_pidns() -> int:
    """The inode of this process's pid namespace (0 if /proc is not mounted)."""

def check_name(name: str) -> int:
    """0 if ``name`` is a valid segment name, else a negative errno (the C check)."""

def unlink(name: str) -> None:
    """Remove a segment name (``FileNotFoundError`` if there is none); processes that have
    it mapped keep working."""

def check_count(value: int, what: str, lo: int, hi: int) -> int:
    """The integer-argument rule for the Python layer: ``value`` as an int in ``lo..hi``,
    else a ``ValueError`` or ``TypeError`` naming ``what``."""

def raw_check(table: Any, packed_len: int, owns: list[Any], kinds: Any = ...) -> str | None: ...
def marshal_dumps(obj: Any) -> bytes | None:
    """obj in marshal format when it is plain data (shmring._codec, MARSHAL), else None."""
def small_dumps(obj: Any) -> bytes | None:
    """obj as the small-record writer writes it (marshal v2 bytes), else None."""
def small_loads(body: bytes) -> tuple[bool, Any]:
    """(True, obj) as the small-record reader reads body, else (False, None)."""
def pickle_dumps(obj: Any) -> tuple[bytes, Any]:
    """(pickle stream, [PickleBuffer, ...] or ()): obj pickled with protocol 5,
    arrays inside it out of band (shmring._codec.dumps)."""


@disjoint_base
class Mapping:
    """Owns one mapping of a segment (internal: ``shmring.Ring`` wraps it). Producers,
    consumers and every array handed out over ring memory hold a reference, so the unmap
    happens only once the last of them is gone."""
    name: str
    """The segment name."""

    @staticmethod
    def create(name: str, capacity: int, record_size: int, align: int, mode: int, overflow: int,
               max_consumers: int, descr: bytes, perm: int, kind: int = ...,
               evict_after_ms: int = ...) -> Mapping: ...
    @staticmethod
    def attach(name: str) -> Mapping:
        """Map and validate an existing segment by name."""

    @staticmethod
    def attach_fd(fd: int, label: str) -> Mapping:
        """Validate and map an open descriptor (the descriptor is consumed)."""

    @property
    def descr(self) -> str:
        """The dtype descriptor stored in the header."""

    @property
    def file_owner(self) -> tuple[int, int]:
        """(uid, mode bits) of the segment file, from fstat on the descriptor mapped."""

    def stall(self) -> tuple[int, float] | None:
        """(consumer index, seconds) a waiting producer last found holding it back, or None."""

    @property
    def capacity(self) -> int:
        """Slots (record rings) or bytes (message rings)."""

    @property
    def record_size(self) -> int:
        """Bytes per record (0 on a message ring)."""

    @property
    def mode(self) -> int:
        """The ``MODES`` code."""

    @property
    def overflow(self) -> int:
        """The ``OVERFLOWS`` code."""

    @property
    def kind(self) -> int:
        """``KIND_RECORDS`` or ``KIND_MESSAGES``."""

    @property
    def max_message(self) -> int | None:
        """The largest message in bytes (None on a record ring)."""

    def info(self) -> _RingInfo:
        """shmr_ring_info as a dict, field for field (codes stay codes; ``shmring._api`` names them)."""

    def consumer_infos(self) -> list[_ConsumerInfo]:
        """One shmr_consumer_info dict per consumer, field for field."""

@disjoint_base
class _Waitable: ...

@disjoint_base
class _Handle(_Waitable):
    """What producer and consumer handles share: the dtype, closing, and a refusal to be pickled."""
    @property
    def dtype(self) -> np.dtype:
        """The dtype of the records (numpy)."""

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""

    def close(self) -> None:
        """Give the role or consumer slot back; later calls on the handle raise ``Closed``."""

    def __reduce__(self) -> NoReturn: ...
    def fileno(self) -> int: ...

@disjoint_base
class _ProducerSide(_Handle):
    async def apush(self, record: Any, timeout: float | None = None) -> None: ...
    async def apush_many(self, records: Any, timeout: float | None = None) -> int: ...

@disjoint_base
class _ConsumerSide(_Handle):
    def try_pop(self) -> Any | None: ...
    async def apop(self, timeout: float | None = None) -> Any: ...
    async def apop_many(self, max_records: int | None = None, timeout: float | None = None, *,
                        out: np.ndarray | None = None) -> Any: ...
    def __aiter__(self) -> AsyncIterator[Any]: ...
    async def __anext__(self) -> Any: ...

@disjoint_base
class Reservation:
    """A writable block of records inside the ring, from ``Producer.reserve(n)``.

    Use it as a context manager: ``with prod.reserve(n) as arr:`` fills ``arr`` in place;
    leaving the block normally publishes every record of it, an exception publishes none.
    The array is read-only after the block.
    """
    @property
    def array(self) -> np.ndarray:
        """The writable records (the same array the ``with`` block gives)."""

    def __len__(self) -> int:
        """Records reserved (possibly fewer than asked: only up to the ring's wrap point)."""

    def __enter__(self) -> np.ndarray:
        """The array; leaving the block publishes or releases it (see the class)."""

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: Any) -> bool:
        """Publish (or release) the block; after an exception nothing is published."""

@disjoint_base
class View:
    """A read-only block of records inside the ring, from ``Consumer.view(n)``.

    ``with cons.view(n) as arr:`` reads ``arr`` in place, no copy; leaving the block
    releases the records to the producer. Copy what must outlive the block. In
    broadcast-overwrite mode, leaving raises ``Lagged`` if the producer overwrote records
    of the view while it was held (what was read is then not valid).
    """
    @property
    def array(self) -> np.ndarray:
        """The read-only records (the same array the ``with`` block gives)."""

    def __len__(self) -> int:
        """Records in the view."""

    def __enter__(self) -> np.ndarray:
        """The read-only records."""

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: Any) -> bool:
        """Release the records to the producer; ``Lagged`` if they were overwritten meanwhile."""

@disjoint_base
class Producer(_ProducerSide):
    """The one writer of a record ring. Obtain it with ``Ring.producer()``.

    One live process holds the producer role at a time; a new producer may take over from
    a process that died. A handle belongs to the process (and thread) that opened it: it
    cannot be pickled or used after ``fork``; use it as a context manager or call
    ``close()`` to end the stream.
    """
    ring: Any
    """The ``Ring`` this producer writes to."""
    def push(self, record: Any, timeout: float | None = None) -> None:
        """Publish one record (np.void, tuple, scalar or 1-record array).

        Blocks while the ring is full: ``timeout`` None = forever, 0 = never, else seconds;
        raises ``Full`` when it runs out. Values are converted only where nothing is lost.
        """

    def push_many(self, records: Any, timeout: float | None = None) -> int:
        """Publish an array of records in order, in as few copies as the ring allows.

        Returns the count. On timeout raises ``Full`` with ``pushed`` = the records published
        (they stay published).
        """

    def reserve(self, n: int, timeout: float | None = None) -> Reservation:
        """A ``Reservation``: up to ``n`` writable records inside the ring (only the contiguous
        part up to the wrap point, so possibly fewer). Leaving its ``with`` block publishes
        them; an exception inside it publishes nothing. Waits for room like ``push``.
        """

    def free(self) -> int:
        """Records a push could place now without waiting (the capacity in
        broadcast-overwrite mode, where the producer never waits).
        """

    def wait_for_consumers(self, n: int = 1, timeout: float | None = None) -> int:
        """Block until at least ``n`` consumers are registered (sleeping, no CPU).

        Returns the count; raises ``TimeoutError`` when ``timeout`` seconds pass first. Dead
        consumers are swept first, so they do not count.
        """

    def close(self) -> None:
        """End the stream: consumers drain what was published, then see ``Closed``."""

    def __enter__(self) -> Producer:
        """The producer itself; leaving the block closes it."""

    def __exit__(self, *exc: Any) -> None:
        """Close the producer (end of stream)."""

    def fileno(self) -> int:
        """A descriptor that polls readable when ``push`` may make progress, for ``select``,
        ``selectors`` or an event loop. Re-armed by every call that found the ring full.
        """

    async def apush(self, record: Any, timeout: float | None = None) -> None:
        """Coroutine form of ``push()``: waits for room without blocking the event loop."""

    async def apush_many(self, records: Any, timeout: float | None = None) -> int:
        """Coroutine form of ``push_many()``."""

@disjoint_base
class Consumer(_ConsumerSide):
    """A reader of a record ring. Obtain it with ``Ring.consumer()``.

    Queue mode: each record goes to exactly one consumer. Broadcast mode: every
    consumer sees every record in order (in overwrite mode, a consumer that falls a
    whole ring behind skips ahead and counts the loss in ``dropped``). Iterating yields
    records until the stream ends; ``async for`` does the same in an event loop.
    """
    ring: Any
    """The ``Ring`` this consumer reads from."""
    def pop(self, timeout: float | None = None) -> Any:
        """One record, copied out of the ring (np.void for structured dtypes, a numpy scalar
        for plain ones, an ndarray for subarray dtypes).

        Blocks while empty: ``timeout`` None = forever, 0 = never, else seconds. Raises
        ``Empty`` on timeout and ``Closed`` once the stream ended and everything was consumed.
        """

    @overload
    def pop_many(self, max_records: int, timeout: float | None = None, *, out: None = None) -> np.ndarray: ...
    @overload
    def pop_many(self, max_records: int | None = None, timeout: float | None = None, *,
                 out: np.ndarray) -> int:
        """An array of 1..max_records records copied out of the ring (waits for the first one
        like ``pop()``).

        With ``out`` (a C-contiguous writable array of the ring's records) it fills
        ``out[:n]`` without allocating and returns ``n``; ``max_records`` then defaults to
        ``len(out)``.
        """

    def try_pop(self) -> Any | None:
        """One record like ``pop()``, or None at once when none is there (never waits, never
        raises ``Empty``). Raises ``Closed`` once the stream ended and was drained.
        """

    def __len__(self) -> int:
        """Records this consumer could take now without waiting (queue mode: not yet taken by
        any consumer; broadcast: not yet read by this one).
        """

    def __bool__(self) -> bool:
        """True while ``len(consumer) > 0``."""

    def view(self, max_records: int, timeout: float | None = None) -> View:
        """A ``View``: 1..max_records records read in place (no copy), waiting for the first
        one like ``pop()``. Leaving its ``with`` block releases them to the producer.
        """

    def __iter__(self) -> Iterator[Any]:
        """The consumer itself: iteration pops records until the stream ends."""

    def __next__(self) -> Any:
        """The next record (``pop()``); ``StopIteration`` once the stream ended and was drained."""

    @property
    def popped(self) -> int:
        """Records this consumer received."""

    @property
    def dropped(self) -> int:
        """Records this consumer lost because an overwriting producer lapped it."""

    @property
    def index(self) -> int:
        """This consumer's slot in the ring's consumer table (-1 once closed)."""

    def close(self) -> None:
        """Leave the ring; a broadcast producer stops waiting for this consumer at once.
        Inside a ``view()`` block the records stay held until the block ends.
        """

    def __enter__(self) -> Consumer:
        """The consumer itself; leaving the block closes it."""

    def __exit__(self, *exc: Any) -> None:
        """Close the consumer."""

    def fileno(self) -> int:
        """A descriptor that polls readable when ``pop`` may make progress, for ``select``,
        ``selectors`` or an event loop. Re-armed by every call that found the ring empty.
        """

    async def apop(self, timeout: float | None = None) -> Any:
        """Coroutine form of ``pop()``: returns at once when a record is there, else waits in
        the event loop.
        """

    @overload  # type: ignore[override]
    async def apop_many(self, max_records: int | None = None, timeout: float | None = None, *,
                        out: None = None) -> np.ndarray: ...
    @overload
    async def apop_many(self, max_records: int | None = None, timeout: float | None = None, *,
                        out: np.ndarray) -> int:
        """Coroutine form of ``pop_many()``; with ``out`` it fills ``out[:n]`` and returns ``n``."""

    def __aiter__(self) -> AsyncIterator[Any]:
        """The consumer itself: ``async for`` pops records until the stream ends."""

    async def __anext__(self) -> Any:
        """The next record (``apop()``); ``StopAsyncIteration`` once the stream ended."""

@disjoint_base
class UringWaiter:
    """An io_uring whose completions wake an event loop (internal to ``shmring.aio``)."""
    def __new__(cls, entries: int = 64, one_thread: bool = False) -> UringWaiter: ...
    def close(self) -> None:
        """Close the io_uring and its eventfd."""

    def fileno(self) -> int:
        """The eventfd the event loop watches."""

    def arm(self, h: _Waitable, token: int) -> bool:
        """Arm a handle and submit a futex wait completing with ``token``. False: the handle may
        make progress now (nothing armed). True: armed; one ``_disarm`` is owed.
        """

    def arm_until(self, h: _Waitable, token: int, deadline: float) -> int:
        """``arm()`` with a deadline (``time.monotonic()`` seconds) the kernel keeps. 0: the
        handle may make progress now; 1: armed; 2: armed without the deadline (the caller
        keeps it). One ``_disarm`` is owed when armed.
        """

    def dispatch(self, futs: dict[int, Any]) -> None:
        """Reap what completed and set the result of the future each token names (taken out
        of ``futs``)."""

    def poll(self, fd: int, token: int) -> None:
        """Submit a poll of ``fd`` completing with ``token``."""

    def timeout(self, seconds: float, token: int) -> None:
        """Submit a timeout of ``seconds`` completing with ``token``."""

    def cancel(self, token: int) -> None:
        """Cancel the operation submitted with ``token``."""

    def reap(self) -> list[tuple[int, int]]:
        """[(token, result), ...] of the operations completed since the last call."""

@disjoint_base
class WakeWord:
    """A futex word in private memory: the control channel of ``shmring.aio`` waits (internal)."""
    @property
    def value(self) -> int:
        """The word's current value."""

    def bump(self) -> None:
        """Increment the word and wake its waiters."""

    def wait(self, seen: int, timeout: float = -1.0) -> None:
        """Sleep while the word still equals ``seen`` (at most ``timeout`` seconds; < 0 = no limit)."""

WAITV_MAX: int

def _disarm(h: _Waitable) -> None: ...
def _ready(h: _Waitable) -> bool: ...
def _liveness(h: _Waitable) -> None: ...
def _tick(h: _Waitable) -> float: ...
def _owner(h: _Waitable) -> int: ...
def _peers(h: _Waitable) -> tuple[int, ...] | None: ...
def _fd_waiter(h: _Handle) -> Any: ...
def _set_fd_waiter(h: _Handle, w: Any) -> None: ...
def _queue_item_wait(q: _QueueCore) -> _Waitable: ...
TAKE_NOTHING: object
def _take(c: _ConsumerSide) -> Any: ...
def _queue_pass_on(w: _Waitable) -> None: ...
def _wait_many(handles: list[Any], timeout: float, ctl: WakeWord | None = None, ctl_seen: int = 0) -> bool: ...

# ---- board ----------------------------------------------------------------

BOARD_MAX_COPIES: int
BOARD_MAX_KEYS: int
BOARD_MAX_VALUE: int
BOARD_MAX_NAMES: int
BOARD_DESCR_MAX: int

@final
class BoardMapping:
    """A mapped board segment (internal: ``shmring.Board`` wraps it)."""
    name: str
    @staticmethod
    def create(name: str, nkeys: int, value_size: int, align: int, ncopies: int, key_kind: int,
               descr: bytes, names: bytes, perm: int) -> BoardMapping: ...
    @staticmethod
    def attach(name: str) -> BoardMapping:
        """Map and validate an existing board segment by name."""

    @property
    def file_owner(self) -> tuple[int, int]: ...
    @property
    def descr(self) -> str:
        """The dtype descriptor stored in the header."""

    @property
    def names(self) -> bytes:
        """The key names as stored (JSON bytes)."""

    def info(self) -> dict[str, Any]:
        """The board header as a dict."""

    def key_info(self, idx: int) -> dict[str, Any]:
        """One key's version, last writer and claim holder as a dict."""

@final
class BoardChange(_Waitable):
    @property
    def board(self) -> BoardCore: ...
    @property
    def key(self) -> Any: ...
    @property
    def newer_than(self) -> int: ...

@final
class BoardView:
    """A read-only view of one key's latest value, from ``Board.view(key)``.

    ``with board.view(key) as arr:`` reads the value in place, no copy. Writers never
    wait for a view: if a writer starts to overwrite the viewed copy, ``changed`` becomes
    True and leaving the block raises ``BoardChanged``.
    """
    version: int
    """The version of the value viewed."""
    key: Any
    """The key viewed."""
    @property
    def array(self) -> np.ndarray:
        """The read-only value (the same array the ``with`` block gives)."""

    @property
    def changed(self) -> bool:
        """True once a writer has started to overwrite the viewed copy (what was read is then
        not valid).
        """

    def __enter__(self) -> np.ndarray:
        """The value as a read-only array over shared memory."""

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        """Raise ``BoardChanged`` if a writer started to overwrite the viewed copy."""

@disjoint_base
class BoardCore:
    """The compiled half of ``shmring.Board``: reads, writes, views and waits."""
    name: str
    """The board's segment name."""
    retries: int
    """Reads that had to retry because a writer was overwriting the copy they read."""
    def _init_core(self, m: BoardMapping, name: str, dtype: np.dtype, keys: tuple[Any, ...], str_keys: bool,
                   spin: float, liveness_interval: float) -> None: ...
    def write(self, key: Any, value: Any, timeout: float | None = ...) -> int:
        """Publish ``value`` as the latest value of ``key``; returns its version.

        Waits for another live writer of the same key (``timeout`` None = forever, else
        seconds: ``TimeoutError``); takes over a dead writer's claim. Never waits for readers.
        """

    def __setitem__(self, key: Any, value: Any, /) -> None:
        """``board[key] = value``: ``write(key, value)``."""

    def read(self, key: Any, *, with_version: bool = ..., out: np.ndarray | None = ...) -> Any:
        """A copy of the latest value of ``key`` (``KeyError`` if it was never written).

        ``with_version=True`` returns ``(value, version)``; ``out`` reads into that array.
        """

    def __getitem__(self, key: Any, /) -> Any:
        """``board[key]``: ``read(key)``."""

    def version(self, key: Any) -> int:
        """Writes of ``key`` so far (0: never written)."""

    def versions(self) -> np.ndarray:
        """Every key's version, as a uint64 array in key order."""

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """``(values, versions)``: every key's latest value (zeros where never written) and
        version (0 there), as arrays in key order. Each value is whole (never torn).
        """

    def view(self, key: Any) -> BoardView:
        """A ``BoardView``: the latest value of ``key`` read in place (no copy). Leaving its
        ``with`` block raises ``BoardChanged`` if a writer started to overwrite that copy
        meanwhile.
        """

    def wait(self, key: Any, newer_than: int | None = ..., timeout: float | None = ...) -> tuple[Any, int]:
        """Block (no CPU) until ``key`` has a version above ``newer_than`` (default: its
        version now), then return ``(value, version)``. ``TimeoutError`` on timeout.
        """

    def change(self, key: Any, newer_than: int | None = None) -> BoardChange: ...
    def _wait_any(self, idxs: list[int], newer: list[int], timeout: float) -> bool: ...
    def _index_of(self, key: Any) -> int: ...
    def _mapping(self) -> BoardMapping | None: ...
    def close(self) -> None:
        """Detach; arrays handed out by views stay valid memory until they are freed."""

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the values."""

    @property
    def keys(self) -> list[Any]:
        """The keys, in order: the names given at creation, or ``0..n-1``."""

    def __len__(self) -> int:
        """The number of keys."""

    def __contains__(self, key: object, /) -> bool:
        """Whether ``key`` is a key of this board."""

    def __iter__(self) -> Iterator[Any]:
        """The keys, in order."""

# ---- message rings --------------------------------------------------------

@final
class _Span:
    """A window of ring memory exporting the buffer protocol (read with memoryview())."""

@disjoint_base
class MessageReservation:
    """A writable byte block inside a message ring, from ``MessageProducer.reserve(nbytes)``.

    ``with prod.reserve(n) as buf:`` fills the uint8 array ``buf`` in place; leaving the
    block publishes it as one bytes message, an exception publishes nothing.
    """
    @property
    def array(self) -> np.ndarray:
        """The writable uint8 array (the same one the ``with`` block gives)."""

    def __len__(self) -> int:
        """Bytes reserved."""

    def __enter__(self) -> np.ndarray:
        """The array; leaving the block publishes or releases it (see the class)."""

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: Any) -> bool:
        """Publish (or release) the block; after an exception nothing is published."""

@disjoint_base
class MessageView:
    """The next message read in place, from ``MessageConsumer.view()``.

    ``with cons.view() as msg:`` gives the message with every buffer in it (the bytes,
    the array, the arrays inside a pickled object) as read-only views of the ring; leaving
    the block releases it. Copy what must outlive the block.
    """
    @property
    def message(self) -> Any:
        """The message, its buffers viewing the ring (the same object the ``with`` block gives)."""

    def __enter__(self) -> Any:
        """The message, its buffers viewing the ring."""

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: Any) -> bool:
        """Release the message; ``Lagged`` if the producer overwrote it meanwhile."""

@disjoint_base
class MessageProducer(_ProducerSide):
    """The one writer of a message ring (a ring created without a dtype). Obtain it with
    ``Ring.producer()``.

    Sends bytes, numpy arrays (never pickled) and any picklable object (pickle protocol 5,
    its arrays out of band), each up to ``max_message`` bytes.
    """
    ring: Any
    """The ``Ring`` this producer writes to."""
    max_message: int
    """The largest message this ring takes, in bytes (half the ring less 32 bytes)."""
    def push(self, obj: Any, timeout: float | None = None) -> None:
        """Send one message: bytes-likes arrive as bytes, numpy arrays as arrays (never
        pickled), anything else pickled (protocol 5, arrays inside it out of band).

        Blocks while the ring is full: ``timeout`` None = forever, 0 = never, else seconds;
        raises ``Full`` when it runs out. A message larger than ``max_message`` is a
        ``ValueError``, raised before anything is published.
        """

    def push_many(self, objects: Any, timeout: float | None = None) -> int:
        """Send every object of an iterable as one message each, in order, publishing in
        batches. Every object is encoded before anything is published, so an object that
        cannot be sent publishes nothing. Returns the count; on timeout raises ``Full`` with
        ``pushed`` = messages published (they stay published).
        """

    def reserve(self, nbytes: int, timeout: float | None = None) -> MessageReservation:
        """A ``MessageReservation``: a writable uint8 array of exactly ``nbytes`` inside the
        ring; leaving its ``with`` block publishes it as one bytes message, an exception
        inside it publishes nothing.
        """

    def _push_raw(self, table: Any, packed: Any, owns: list[Any], start: int = 0,
                  timeout: float | None = None) -> int: ...
    def _set_rewind(self, nbytes: int) -> None: ...
    def _lap_offset(self) -> int: ...

    def close(self) -> None:
        """End the stream: consumers drain what was published, then see ``Closed``."""

    def __enter__(self) -> MessageProducer:
        """The producer itself; leaving the block closes it."""

    def __exit__(self, *exc: Any) -> None:
        """Close the producer (end of stream)."""

@disjoint_base
class MessageConsumer(_ConsumerSide):
    """A reader of a message ring. Obtain it with ``Ring.consumer()``.

    Messages arrive as they were sent: bytes-likes as ``bytes``, arrays as arrays, other
    objects unpickled. Delivery modes and loss accounting are those of record rings.
    """
    ring: Any
    """The ``Ring`` this consumer reads from."""
    def pop(self, timeout: float | None = None) -> Any:
        """The next message as the object that was pushed (bytes-likes as bytes), owning its
        memory.

        Blocks while empty: ``timeout`` None = forever, 0 = never, else seconds. Raises
        ``Empty`` on timeout and ``Closed`` once the stream ended and everything was consumed.
        """

    def pop_many(self, max_messages: int, timeout: float | None = None) -> list[Any]:
        """A list of 1..max_messages messages (waits for the first one like ``pop()``)."""

    def try_pop(self) -> Any | None:
        """The next message like ``pop()``, or None at once when none is there (never waits,
        never raises ``Empty``). Raises ``Closed`` once the stream ended and was drained. A
        message that is itself ``None`` reads the same as none: poll with ``pop(0)`` then.
        """

    def view(self, timeout: float | None = None) -> MessageView:
        """A ``MessageView``: the next message with every buffer in it (the bytes, the array,
        the arrays inside an object) as a read-only view into the ring, no copy. Valid inside
        the ``with`` block; leaving it releases the message.
        """

    def _claim_raw(self, max_messages: int, own_from: int, timeout: float | None = None) -> tuple[Any, bytes, list[memoryview]]: ...
    def _release_raw(self) -> int: ...
    @property
    def _next_seq(self) -> int: ...

    def __iter__(self) -> Iterator[Any]:
        """The consumer itself: iteration pops messages until the stream ends."""

    def __next__(self) -> Any:
        """The next message (``pop()``); ``StopIteration`` once the stream ended and was drained."""

    @property
    def popped(self) -> int:
        """Messages this consumer received."""

    @property
    def dropped(self) -> int:
        """Messages this consumer lost because an overwriting producer lapped it."""

    @property
    def dropped_bytes(self) -> int:
        """Body bytes of the messages counted in ``dropped``."""

    @property
    def index(self) -> int:
        """This consumer's slot in the ring's consumer table (-1 once closed)."""

    def close(self) -> None:
        """Leave the ring; a broadcast producer stops waiting for this consumer at once."""

    def __enter__(self) -> MessageConsumer:
        """The consumer itself; leaving the block closes it."""

    def __exit__(self, *exc: Any) -> None:
        """Close the consumer."""

    async def apop_many(self, max_messages: int, timeout: float | None = None) -> list[Any]:  # type: ignore[override]
        """Coroutine form of ``pop_many()``."""

# ---- queue segments (shmring.Queue; see shmring.queues) ----------------------

MPQ_MAX_LANES: int
MPQ_MIN_LANE_BYTES: int
LAYOUT_QMAGIC: int

class _QueueInfo(TypedDict):
    lanes: int
    lanes_used: int
    max_consumers: int
    layout_version: int
    maxsize: int
    lane_bytes: int
    segment_size: int
    items: int
    bytes: int
    put: int
    got: int
    abandoned: int
    lost: int
    admitted: int
    done: int
    producers: int
    consumers: int
    creator_pid: int
    create_time_ns: int

@final
class QueueMapping:
    """One mapping of a queue segment and its descriptor."""
    name: str
    @staticmethod
    def create(name: str, lanes: int, max_consumers: int, lane_bytes: int, maxsize: int, perm: int) -> QueueMapping: ...
    @staticmethod
    def attach(name: str) -> QueueMapping: ...
    @staticmethod
    def attach_fd(fd: int, name: str) -> QueueMapping: ...
    @property
    def fd(self) -> int: ...
    @property
    def params(self) -> tuple[int, int, int, int]: ...
    @property
    def file_owner(self) -> tuple[int, int]: ...
    def stats(self) -> _QueueInfo: ...
    def items(self) -> int: ...
    def unfinished(self) -> int: ...
    def recover(self) -> int: ...
    def lane(self, i: int) -> Mapping | None: ...

@disjoint_base
class _QueueCore:
    """The compiled half of shmring.Queue: put/get and their waits."""
    _maxsize: int
    _nbytes: int
    def _core_init(self, qm: QueueMapping, spin: float, liveness_interval: float) -> None: ...
    def _leave(self) -> None: ...
    @property
    def _queue_mapping(self) -> QueueMapping: ...
    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put obj into the queue; blocks while it is full (maxsize, or this
        process's lane holds nbytes in flight): ``block=False`` raises queue.Full
        at once, ``timeout`` (seconds) bounds the wait."""
    def put_many(self, items: Iterable[Any], block: bool = True, timeout: float | None = None) -> int:
        """Put every item of an iterable, in order; returns how many."""
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; blocks while the queue is empty:
        ``block=False`` raises queue.Empty at once, ``timeout`` bounds the wait."""
    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[Any]:
        """A list of 1..max_items items, oldest first; waits for the first like get()."""
    def qsize(self) -> int:
        """Items put and not yet taken, over every process."""
    def empty(self) -> bool:
        """True if no item is in the queue now (approximate, as for multiprocessing.Queue)."""
    def full(self) -> bool:
        """True if ``maxsize`` items are in the queue now (never with ``maxsize <= 0``; a put
        may still wait for room in its producer's lane). Approximate, as for
        multiprocessing.Queue."""
    def _get_raw(self, max_items: int, own_from: int, timeout: float | None = None) -> tuple[Any, bytes, list[bytes]]: ...
    def _put_raw(self, table: Any, packed: Any, owns: list[Any], start: int = 0,
                 timeout: float | None = None) -> int: ...
    def _lane_producer(self) -> MessageProducer: ...
    def _task_done(self) -> None: ...
    def _join(self, timeout: float | None = None) -> bool: ...
    def _close_handles(self) -> None: ...
    @property
    def _closed(self) -> bool: ...
    @property
    def _lane_index(self) -> int | None: ...
