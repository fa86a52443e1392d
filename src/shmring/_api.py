"""The friendly layer over the compiled core: naming, dtypes, stats, pickling."""

from __future__ import annotations

import ast
import errno
import os
import weakref
from typing import Any, TypedDict

import numpy as np
from numpy.lib.format import descr_to_dtype, dtype_to_descr

from . import _ring
from ._ring import Consumer, Producer
from .errors import CorruptRingError, RingError


class Waiters(TypedDict):
    consumers: int  # consumers asleep waiting for records
    producer: int  # the producer asleep waiting for room (0 or 1)


class ConsumerStats(TypedDict, total=False):
    """One consumer in Ring.stats()["consumers"]: struct shmr_consumer_info
    (csrc/shmring.h) field for field, plus ``lag`` in broadcast mode."""

    index: int
    pid: int
    start_time: int
    cursor: int
    popped: int
    dropped: int
    claim_pos: int
    claimed: int
    alive: bool  # not known dead: alive, or "unknown" (see liveness)
    liveness: str  # "alive", "dead" or "unknown" (another pid namespace, or not ours to inspect)
    lag: int


class StallInfo(TypedDict):
    """Ring.stats()["stall"]: the consumer holding a full ring back."""

    index: int
    pid: int | None
    lag: int | None  # records it holds (queue) or is behind (broadcast)
    seconds: float  # since the producer first waited on it


class RingStats(TypedDict):
    """Ring.stats(): struct shmr_ring_info (csrc/shmring.h) field for field, with
    codes given as names (mode, overflow, close_reason), plus what only the Python
    layer knows (name, dtype, consumers, closed, created). README "Stats" has the table."""

    name: str
    dtype: str
    mode: str
    overflow: str
    capacity: int
    record_size: int
    segment_size: int
    max_consumers: int
    layout_version: int
    pushed: int
    tail: int
    popped: int
    popped_retired: int
    available: int
    n_consumers: int
    waiters: Waiters
    producer_pid: int | None
    producer_start: int
    producer_alive: bool  # a producer holds the role and is not known dead
    producer_liveness: str | None  # "alive", "dead", "unknown"; None without a producer
    closed: bool
    close_reason: str | None
    abandoned: int
    evicted: int
    stall: StallInfo | None
    creator_pid: int
    creator_start: int
    creator_alive: bool  # not known dead
    creator_liveness: str
    create_time_ns: int
    created: float
    consumers: list[ConsumerStats]


DEFAULT_MAX_CONSUMERS = 64
MAX_RECORD_NDIM = 31
DEFAULT_SPIN = 20e-6  # seconds of busy polling before a blocked call sleeps
SHM_DIR = "/dev/shm"
SEGMENT_PREFIX = "shmr-"


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"ring name must be a str, not {type(name).__name__}")
    if "/" in name:
        raise ValueError(f"ring name {name!r} may not contain '/'")
    if not name:
        raise ValueError("ring name may not be empty")
    if "\0" in name:
        raise ValueError(f"ring name {name!r} may not contain a NUL character")
    if len(name.encode()) > _ring.NAME_MAX:
        raise ValueError(f"ring name {name!r} is too long ({len(name.encode())} > {_ring.NAME_MAX} bytes)")
    if _ring.check_name(name) != 0:
        raise ValueError(f"ring name {name!r} may only use letters, digits, '_', '-' and '.'")
    return name


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"not a numpy dtype: {dtype!r} ({exc})") from None
    if dt.hasobject:
        raise TypeError(f"dtype {dt} holds Python objects; a shared-memory ring needs plain data")
    if dt.itemsize == 0:
        raise ValueError(f"dtype {dt} has size 0; records need at least one byte")
    if dt.subdtype is not None and len(dt.subdtype[1]) > MAX_RECORD_NDIM:
        raise ValueError(f"dtype {dt} has a {len(dt.subdtype[1])}-dimensional record shape "
                         f"(at most {MAX_RECORD_NDIM}, so a batch still fits numpy's dimension limit)")
    return dt


def _encode_dtype(dt: np.dtype) -> str:
    # dtype.descr and dtype_to_descr lose a top-level subarray, so it is kept apart;
    # likewise a union (a scalar type with named fields over it, np.dtype((np.int32,
    # {...}))), which they turn into a plain struct.
    if dt.fields is not None and dt.type is not np.void:
        fields = [(n, dtype_to_descr(f[0]), f[1]) for n, f in dt.fields.items()]
        return repr(("v1u", dtype_to_descr(np.dtype(dt.type).newbyteorder(dt.byteorder)), fields))
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return repr(("v1", dtype_to_descr(base), tuple(shape)))
    return repr(("v1", dtype_to_descr(dt), ()))


def _decode_dtype(text: str, where: str) -> np.dtype:
    try:
        tag, descr, shape = ast.literal_eval(text)
        if tag == "v1u":  # a union: shape holds its fields (name, descr, offset)
            dt = np.dtype((descr_to_dtype(descr), {n: (descr_to_dtype(d), int(o)) for n, d, o in shape}))
        elif tag == "v1":
            base = descr_to_dtype(descr)
            dt = np.dtype((base, tuple(shape))) if shape else base
        else:
            raise ValueError(tag)
    except Exception as exc:  # any malformed text is a corrupt header, never a crash
        raise CorruptRingError(f"{where}: the ring's dtype descriptor is corrupt ({exc!r})") from None
    # create() never stores these: reading pointers out of shared memory would crash
    if dt.hasobject or dt.itemsize == 0 or (dt.subdtype is not None and len(dt.subdtype[1]) > MAX_RECORD_NDIM):
        raise CorruptRingError(f"{where}: the ring's dtype {dt} is not one shmring creates")
    return dt


def _round_capacity(capacity: Any) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
        raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
    capacity = int(capacity)
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1 record, got {capacity}")
    if capacity > 1 << 32:
        raise ValueError(f"capacity {capacity} is too large (at most 2**32 records)")
    return 1 << (capacity - 1).bit_length()


def _segment_bytes(cap: int, record_size: int, mode: str, max_consumers: int) -> int:
    """The segment size create() asks for (compute_layout in csrc/segment.c): the
    header and control pages, the consumer slots, in queue mode a 16-byte release
    record per slot, then the records, each part rounded as the core rounds it."""
    page, block = _ring.LAYOUT_PAGE, _ring.LAYOUT_BLOCK
    end = _ring.LAYOUT["cslot"][0] + max_consumers * _ring.LAYOUT["cslot"][1]
    if mode == "queue":
        end = -(-end // block) * block + cap * _ring.LAYOUT["release"][1]
    slots = -(-end // page) * page
    return -(-(slots + cap * record_size) // page) * page


def _shm_free_bytes() -> int | None:
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class Ring:
    """A ring of numpy records in a POSIX shared-memory segment.

    Create it in one process with :meth:`create`, attach to it from any other with
    :meth:`attach` (or pass it to a ``multiprocessing.Process``: it pickles by name).
    """

    def __init__(self, mapping: _ring.Mapping, name: str, dtype: np.dtype) -> None:
        self._map: _ring.Mapping | None = mapping
        self._name = name
        self._dtype = dtype
        self._capacity = mapping.capacity
        self._mode = "queue" if mapping.mode == _ring.MODES["queue"] else "broadcast"
        self._overflow = "overwrite" if mapping.overflow == _ring.OVERFLOWS["overwrite"] else "block"
        self._handles: weakref.WeakSet = weakref.WeakSet()

    # -- life cycle -----------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        dtype: Any,
        capacity: int,
        *,
        mode: str = "queue",
        overflow: str = "block",
        max_consumers: int = DEFAULT_MAX_CONSUMERS,
        exist_ok: bool = False,
        permissions: int = 0o600,
    ) -> "Ring":
        """Create a ring of ``capacity`` records (rounded up to a power of two)."""
        name = _check_name(name)
        dt = _check_dtype(dtype)
        cap = _round_capacity(capacity)
        if mode not in _ring.MODES:
            raise ValueError(f"mode must be 'queue' or 'broadcast', not {mode!r}")
        if overflow not in _ring.OVERFLOWS:
            raise ValueError(f"overflow must be 'block' or 'overwrite', not {overflow!r}")
        if mode == "queue" and overflow != "block":
            raise ValueError("overflow='overwrite' needs mode='broadcast' (a work queue never drops records)")
        if not 1 <= int(max_consumers) <= _ring.MAX_CONSUMERS:
            raise ValueError(f"max_consumers must be in 1..{_ring.MAX_CONSUMERS}, got {max_consumers}")
        if dt.itemsize > 1 << 30:
            raise ValueError(f"records of {dt.itemsize} bytes are too large (at most 1 GiB)")
        descr = _encode_dtype(dt).encode("ascii")
        if len(descr) >= _ring.DESCR_MAX:
            raise ValueError(f"dtype {dt} is too complex to store ({len(descr)} bytes of descriptor)")
        try:
            mapping = _ring.Mapping.create(
                name, cap, dt.itemsize, max(dt.alignment, 1), _ring.MODES[mode],
                _ring.OVERFLOWS[overflow], int(max_consumers), descr, permissions,
            )
        except FileExistsError:
            if not exist_ok:
                raise FileExistsError(errno.EEXIST, f"a ring named {name!r} already exists") from None
            # joining what is there must not hand our records to whoever made it:
            # it must be ours, and no more open than we asked for
            ring = cls.attach(name, owner_only=True, permissions=permissions)
            have_mc = ring._mapping().info()["max_consumers"]
            if (ring.dtype, ring.capacity, ring.mode, ring.overflow, have_mc) != (
                    dt, cap, mode, overflow, int(max_consumers)):
                ring.close()
                raise FileExistsError(
                    errno.EEXIST,
                    f"ring {name!r} exists with dtype={ring.dtype}, capacity={ring.capacity}, "
                    f"mode={ring.mode!r}, overflow={ring.overflow!r}, max_consumers={have_mc}, not "
                    f"dtype={dt}, capacity={cap}, mode={mode!r}, overflow={overflow!r}, "
                    f"max_consumers={int(max_consumers)}",
                ) from None
            ring._dtype = dt  # equal to the stored one; keep the caller's (alignment flag)
            return ring
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                free = _shm_free_bytes()
                need = _segment_bytes(cap, dt.itemsize, mode, int(max_consumers))
                raise OSError(
                    errno.ENOSPC,
                    f"not enough shared memory for ring {name!r}: needs about {need} bytes, "
                    f"{SHM_DIR} has {free if free is not None else 'unknown'} free",
                ) from None
            raise
        return cls(mapping, name, dt)

    @classmethod
    def attach(cls, name: str, *, dtype: Any = None, owner_only: bool = False,
               permissions: int | None = None) -> "Ring":
        """Attach to an existing ring; if ``dtype`` is given it must match the ring's.

        A ring may be shared between users on purpose (``permissions=0o660``), so
        by default any segment this process may open is joined. ``owner_only=True``
        refuses (PermissionError) a segment not owned by this process's user;
        ``permissions=BITS`` refuses one more open than BITS. ``create(...,
        exist_ok=True)`` applies both, with its own ``permissions``."""
        name = _check_name(name)
        want = _check_dtype(dtype) if dtype is not None else None
        mapping = _ring.Mapping.attach(name)
        uid, mode = mapping.file_owner
        if owner_only and uid != os.geteuid():
            raise PermissionError(
                errno.EPERM, f"ring {name!r} is owned by uid {uid}, not by this user (uid {os.geteuid()}); "
                             f"refusing to join it")
        if permissions is not None and mode & ~int(permissions) & 0o7777:
            raise PermissionError(
                errno.EPERM, f"ring {name!r} has permissions {oct(mode)}, more open than the {oct(permissions)} "
                             f"asked for; refusing to join it")
        stored = _decode_dtype(mapping.descr, f"attach ring {name!r}")
        if stored.itemsize != mapping.record_size:
            raise CorruptRingError(f"attach ring {name!r}: dtype size disagrees with the record size")
        if want is not None:
            if want != stored:
                raise TypeError(f"ring {name!r} holds records of dtype {stored}, not {want}")
            stored = want
        return cls(mapping, name, stored)

    def close(self) -> None:
        """Detach: closes the producer and consumers made through this object. Arrays
        handed out by views and reservations stay valid memory until they are freed."""
        for h in list(self._handles):
            h.close()
        self._handles.clear()
        self._map = None

    def unlink(self) -> None:
        """Remove the segment name; processes that have it mapped keep working."""
        unlink(self._name)

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self):
        return (_attach_for_pickle, (self._name, _encode_dtype(self._dtype)))

    def __repr__(self) -> str:
        state = "closed" if self._map is None else f"capacity={self._capacity}"
        return f"<shmring.Ring {self._name!r} {self._dtype} mode={self._mode!r} {state}>"

    # -- handles --------------------------------------------------------------

    def _mapping(self) -> _ring.Mapping:
        if self._map is None:
            raise RingError(f"ring {self._name!r} is closed")
        return self._map

    def producer(self, *, spin: float = DEFAULT_SPIN,
                 liveness_interval: float = _ring.DEFAULT_LIVENESS_INTERVAL) -> Producer:
        """The producer handle. Only one live process may hold it; a new one may take
        over from a producer whose process died. ``spin``: seconds of busy polling
        before a blocked push sleeps. ``liveness_interval``: while blocked, how often
        (seconds) to look for dead consumers holding the ring back; a dead consumer's
        claim is reclaimed (and counted in stats()["abandoned"]) within this bound."""
        p = Producer._open(self._mapping(), self._dtype, self, float(spin), float(liveness_interval))
        self._handles.add(p)
        return p

    def consumer(self, *, start: str = "latest", on_lag: str = "skip", spin: float = DEFAULT_SPIN,
                 liveness_interval: float = _ring.DEFAULT_LIVENESS_INTERVAL) -> Consumer:
        """Register a consumer. Broadcast mode: ``start`` is "latest" (the next record
        pushed) or "oldest" (the oldest record still in the ring); ``on_lag`` is "skip"
        (count lost records in ``consumer.dropped``) or "raise" (raise Lagged).
        ``liveness_interval``: while blocked, how often (seconds) to check that the
        producer is alive; a dead producer's stream ends within this bound."""
        if start not in _ring.STARTS:
            raise ValueError(f"start must be 'latest' or 'oldest', not {start!r}")
        if on_lag not in ("skip", "raise"):
            raise ValueError(f"on_lag must be 'skip' or 'raise', not {on_lag!r}")
        c = Consumer._open(self._mapping(), self._dtype, self, _ring.STARTS[start], on_lag == "raise",
                           float(spin), float(liveness_interval))
        self._handles.add(c)
        return c

    # -- facts ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def overflow(self) -> str:
        return self._overflow

    @property
    def closed(self) -> bool:
        return self._map is None

    def stats(self) -> RingStats:
        """A snapshot of the ring's counters (read without locks; values may be
        mid-update relative to each other). Keys: see RingStats."""
        m = self._mapping()
        info: dict[str, Any] = m.info()
        consumers: list[dict[str, Any]] = m.consumer_infos()
        for c in consumers:
            c["liveness"] = _ring.LIVENESS[c["alive"]]
            c["alive"] = c["liveness"] != "dead"
            if self._mode == "broadcast":
                c["lag"] = max(0, info["pushed"] - c["cursor"])
        reason = _ring.CLOSE_REASONS.get(info["close_reason"])
        has_producer = info["producer_pid"] != 0
        stall: StallInfo | None = None
        held = m.stall()
        if held is not None:
            who = next((c for c in consumers if c["index"] == held[0]), None)
            stall = {"index": held[0], "pid": who["pid"] if who else None, "seconds": held[1],
                     "lag": (who.get("lag", who["claimed"]) if who else None)}
        info.update(
            stall=stall,
            producer_liveness=_ring.LIVENESS[info["producer_alive"]] if has_producer else None,
            creator_liveness=_ring.LIVENESS[info["creator_alive"]],
            creator_alive=info["creator_alive"] != _ring.LIVENESS_DEAD,
            name=self._name,
            dtype=str(self._dtype),
            mode=self._mode,
            overflow=self._overflow,
            producer_pid=info["producer_pid"] or None,
            producer_alive=has_producer and info["producer_alive"] != _ring.LIVENESS_DEAD,
            closed=reason is not None,
            close_reason=reason,
            created=info["create_time_ns"] / 1e9,
            consumers=consumers,
        )
        return info  # type: ignore[return-value]


def _attach_for_pickle(name: str, descr: str) -> Ring:
    return Ring.attach(name, dtype=_decode_dtype(descr, "unpickle"))


def unlink(name: str) -> None:
    """Remove the ring called ``name`` (FileNotFoundError if there is none)."""
    _ring.unlink(_check_name(name))
