"""The friendly layer over the compiled core: naming, dtypes, stats, pickling."""

from __future__ import annotations

import ast
import errno
import math
import os
import time
import uuid
import weakref
from typing import Any, Literal, TypedDict

import numpy as np
from numpy.lib.format import descr_to_dtype, dtype_to_descr

from . import _ring
from ._ring import Consumer, MessageConsumer, MessageProducer, Producer
from .errors import CorruptRingError, RingError

Mode = Literal["queue", "broadcast"]
Overflow = Literal["block", "overwrite"]
Start = Literal["latest", "oldest"]
OnLag = Literal["skip", "raise"]


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
    dropped_bytes: int
    claim_pos: int
    claimed: int
    alive: bool  # not known dead: alive, or "unknown" (see liveness)
    liveness: str  # "alive", "dead" or "unknown" (another pid namespace, or not ours to inspect)
    evicted: bool  # evicted for holding the producer back (evict_after); gone once it closes
    lag: int


class StallInfo(TypedDict):
    """Ring.stats()["stall"]: the consumer holding a full ring back."""

    index: int
    pid: int | None
    lag: int | None  # records it holds (queue) or is behind (broadcast)
    seconds: float  # since the producer first waited on it


class RingStats(TypedDict):
    """Ring.stats(): struct shmr_ring_info (csrc/shmring.h) field for field, with
    codes given as names (mode, overflow, close_reason, kind), plus what only the
    Python layer knows (name, dtype, nbytes, consumers, closed, created). On a
    message ring pushed / popped / abandoned / dropped count messages and
    available counts bytes. README "Stats" has the table."""

    name: str
    kind: str
    dtype: str | None
    nbytes: int
    max_message: int | None
    bytes_pushed: int
    abandoned_bytes: int
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
    evicted_stalled: int  # live consumers evicted for holding the producer back (evict_after)
    evict_after_ms: int  # evict_after in milliseconds; 0: never
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
MESSAGES_DESCR = b"messages"  # the descriptor text of a message ring (its kind is in the header)
MIN_MESSAGE_RING = 256  # bytes: 16 units, so the largest message is 96 bytes
SEGMENT_PREFIX = "shmr-"
# A segment whose header was never completed is left alone for this long after
# it was created (posix_fallocate of a large ring takes a while), then judged by
# its creator's liveness.
INIT_GRACE_SECONDS = 60.0


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"ring name must be a str, not {type(name).__name__}")
    if "/" in name:
        raise ValueError(f"ring name {name!r} may not contain '/'")
    if not name:
        raise ValueError("ring name may not be empty")
    if name.startswith("-"):
        raise ValueError(f"ring name {name!r} may not start with '-' (it would read as an option "
                         f"on the command line)")
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


def _round_nbytes(nbytes: Any) -> int:
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
        raise TypeError(f"nbytes must be an int, not {type(nbytes).__name__}")
    nbytes = int(nbytes)
    if nbytes < 1:
        raise ValueError(f"nbytes must be >= 1, got {nbytes}")
    limit = _ring.MSG_UNIT << 32
    if nbytes > limit:
        raise ValueError(f"nbytes {nbytes} is too large (at most 2**{limit.bit_length() - 1} bytes)")
    return max(MIN_MESSAGE_RING, 1 << (nbytes - 1).bit_length())


def _segment_bytes(cap: int, record_size: int, mode: str, max_consumers: int, messages: bool = False) -> int:
    """The segment size create() asks for (compute_layout in csrc/segment.c): the
    header and control pages, the consumer slots, in a queue of records a 16-byte
    release record per slot (a message ring keeps them in its frames), then the
    records, each part rounded as the core rounds it."""
    page, block = _ring.LAYOUT_PAGE, _ring.LAYOUT_BLOCK
    end = _ring.LAYOUT["cslot"][0] + max_consumers * _ring.LAYOUT["cslot"][1]
    if mode == "queue" and not messages:
        end = -(-end // block) * block + cap * _ring.LAYOUT["release"][1]
    slots = -(-end // page) * page
    return -(-(slots + cap * record_size) // page) * page


def _shm_free_bytes() -> int | None:
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _read_header_word(fd: int, field: str) -> int:
    off, size = _ring.LAYOUT[field]
    data = os.pread(fd, size, off)
    return int.from_bytes(data, "little") if len(data) == size else 0


def segment_state(name: str) -> dict[str, Any]:
    """Who is behind an existing segment, read without changing it.

    Keys: ``state`` ("ring", "initialising" or "invalid"), ``creator_pid``,
    ``creator_alive``, ``producer_pid``, ``producer_alive``, ``consumers_alive``,
    ``consumers_dead``, ``age`` (seconds since the segment file was created),
    ``error`` (for "invalid"), and ``all_dead``: no participant is alive (for an
    unfinished segment: its creator is dead and the grace period is over)."""
    path = os.path.join(SHM_DIR, SEGMENT_PREFIX + name)
    out: dict[str, Any] = {"name": name, "state": "invalid", "creator_pid": None, "creator_alive": False,
                           "producer_pid": None, "producer_alive": False, "consumers_alive": 0,
                           "consumers_dead": 0, "age": None, "all_dead": False}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        out["error"] = "no such ring"
        return out
    try:
        st = os.fstat(fd)
        out["age"] = max(0.0, time.time() - st.st_ctime)
        magic = _read_header_word(fd, "header.magic") if st.st_size >= _ring.LAYOUT_PAGE else 0
        creator = _read_header_word(fd, "header.creator_pid") if st.st_size >= _ring.LAYOUT_PAGE else 0
        start = (_read_header_word(fd, "header.creator_start")
                 if "header.creator_start" in _ring.LAYOUT and st.st_size >= _ring.LAYOUT_PAGE else 0)
    finally:
        os.close(fd)
    if magic == 0:
        out["state"] = "initialising"
        out["creator_pid"] = creator or None
        out["creator_alive"] = bool(creator) and _ring.liveness(creator, start) != "dead"
        # no creator recorded yet: judged by age alone
        out["all_dead"] = not out["creator_alive"] and out["age"] >= INIT_GRACE_SECONDS
        return out
    try:
        ring = Ring.attach(name)
    except (RingError, OSError, TypeError, ValueError) as exc:
        out["error"] = str(exc)
        return out
    try:
        info = ring._mapping().info()
        cons = ring._mapping().consumer_infos()
    finally:
        ring.close()
    out["state"] = "ring"
    out["creator_pid"] = info["creator_pid"] or None
    out["creator_alive"] = bool(info["creator_pid"]) and info["creator_alive"] != _ring.LIVENESS_DEAD
    out["producer_pid"] = info["producer_pid"] or None
    out["producer_alive"] = info["producer_alive"]
    out["consumers_alive"] = sum(1 for c in cons if c["alive"])
    out["consumers_dead"] = sum(1 for c in cons if not c["alive"])
    out["all_dead"] = not (out["creator_alive"] or out["producer_alive"] or out["consumers_alive"])
    return out


INIT_PREFIX = ".shmr-init-"  # a segment being built: INIT_PREFIX + "PID-START-NAME" (csrc/segment.c)


def shm_files(prefix: str) -> list[str]:
    """Names of the files in /dev/shm that start with ``prefix`` (sorted; none if the
    directory cannot be read)."""
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return []
    return sorted(e for e in entries if e.startswith(prefix))


def unfinished_segments() -> list[dict[str, Any]]:
    """Segments still being built under their private name, each with its
    creator (pid, start time, from the file name), whether that process lives,
    the file's age, and ``all_dead``: the creator is dead and the grace period
    is over, so nothing will ever finish it."""
    out = []
    for entry in shm_files(INIT_PREFIX):
        pid, _, rest = entry[len(INIT_PREFIX):].partition("-")
        start, _, name = rest.partition("-")
        if not (pid.isdigit() and start.isdigit() and name) or int(pid) >= 1 << 32 or int(start) >= 1 << 32:
            continue  # not a name shmring makes: never ours to remove
        try:
            age = max(0.0, time.time() - os.lstat(os.path.join(SHM_DIR, entry)).st_ctime)
        except FileNotFoundError:
            continue  # finished (or removed) meanwhile
        # the file is named after its creator, so a dead creator is proof enough:
        # no grace period (one in another pid namespace is unknown, never removed)
        alive = _ring.liveness(int(pid), int(start)) != "dead"
        out.append({"file": entry, "name": name, "creator_pid": int(pid), "creator_alive": alive, "age": age,
                    "all_dead": not alive})
    return out


def _who(st: dict[str, Any]) -> str:
    """The participants of a segment in words, for error messages."""
    def pid(role: str) -> str:
        p = st[f"{role}_pid"]
        if p is None:
            return f"no {role}"
        return f"{role} pid {p} {'alive' if st[f'{role}_alive'] else 'dead'}"
    if st["state"] == "initialising":
        return (f"never finished initialising; {pid('creator')}, segment {st['age']:.0f} s old")
    if st["state"] == "invalid":
        return f"not a usable ring: {st.get('error')}"
    return (f"{pid('creator')}, {pid('producer')}, {st['consumers_alive']} live and "
            f"{st['consumers_dead']} dead consumers")


def _generated_name() -> str:
    return f"ring-{uuid.uuid4().hex}"


class Ring:
    """A ring of numpy records in a POSIX shared-memory segment.

    Create it in one process with :meth:`create`, attach to it from any other with
    :meth:`attach` (or pass it to a ``multiprocessing.Process``: it pickles by name).
    """

    def __init__(self, mapping: _ring.Mapping, name: str, dtype: np.dtype | None) -> None:
        self._map: _ring.Mapping | None = mapping
        self._name = name
        self._dtype = dtype
        self._kind = "messages" if mapping.kind == _ring.KIND_MESSAGES else "records"
        self._capacity = mapping.capacity
        self._mode: Mode = "queue" if mapping.mode == _ring.MODES["queue"] else "broadcast"
        self._overflow: Overflow = "overwrite" if mapping.overflow == _ring.OVERFLOWS["overwrite"] else "block"
        self._handles: weakref.WeakSet = weakref.WeakSet()
        self._unlink_on_close = False

    # -- life cycle -----------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str | None,
        dtype: Any = None,
        capacity: int | None = None,
        *,
        nbytes: int | None = None,
        mode: Mode = "queue",
        overflow: Overflow = "block",
        max_consumers: int = DEFAULT_MAX_CONSUMERS,
        exist_ok: bool = False,
        permissions: int = 0o600,
        replace: bool = False,
        unlink_on_close: bool = False,
        evict_after: float | None = None,
    ) -> "Ring":
        """Create a ring. With ``dtype``: a ring of ``capacity`` records of that dtype
        (capacity rounded up to a power of two). Without: a message ring of ``nbytes``
        bytes (rounded up to a power of two, at least 256), carrying bytes, numpy
        arrays and any picklable object, each message up to half the ring.

        ``name=None`` picks a unique name (read it from ``ring.name``). On a name
        that exists: ``exist_ok=True`` attaches to that ring (same dtype, capacity
        and mode required), which then delivers the records it still holds, a
        crashed run's leftovers included; ``replace=True`` removes it and creates
        afresh, refused while its creator, producer or a consumer is alive.
        ``unlink_on_close=True`` removes the name when this object is closed (or
        leaves its ``with`` block), so a script can run twice.

        ``evict_after=SECONDS`` (rings of records in block mode: queue, or
        broadcast with overflow='block'): a consumer that holds the producer
        back that long, alive but stopped or not reading, is evicted: the
        producer goes on without it, ``stats()["evicted_stalled"]`` counts it,
        and its next call raises Evicted. In queue mode the batch it held is
        taken back and counted abandoned, never delivered (see README,
        "Crashes and stalls")."""
        if exist_ok and replace:
            raise ValueError("exist_ok=True and replace=True contradict each other: pick one")
        generated = name is None
        if generated:
            if exist_ok or replace:
                raise ValueError("exist_ok and replace need a name (name=None always creates a new ring)")
            name = _generated_name()
        name = _check_name(name)
        if dtype is None:
            if nbytes is None:
                raise TypeError("Ring.create() needs either dtype= and capacity= (a ring of records) "
                                "or nbytes= (a message ring of that many bytes)")
            if capacity is not None:
                raise TypeError("a message ring is sized by nbytes=, not capacity= "
                                "(capacity counts records of a dtype)")
            kind = _ring.KIND_MESSAGES
            size = _round_nbytes(nbytes)
            cap, rsize, align, descr = size // _ring.MSG_UNIT, _ring.MSG_UNIT, _ring.MSG_UNIT, MESSAGES_DESCR
            dt = None
        else:
            if nbytes is not None:
                raise TypeError("give either dtype= and capacity= (a ring of records) or nbytes= "
                                "(a message ring), not both")
            if capacity is None:
                raise TypeError("a ring of records needs capacity= (the number of records it holds)")
            kind = _ring.KIND_RECORDS
            dt = _check_dtype(dtype)
            cap = _round_capacity(capacity)
            if dt.itemsize > 1 << 30:
                raise ValueError(f"records of {dt.itemsize} bytes are too large (at most 1 GiB)")
            descr = _encode_dtype(dt).encode("ascii")
            if len(descr) >= _ring.DESCR_MAX:
                raise ValueError(f"dtype {dt} is too complex to store ({len(descr)} bytes of descriptor)")
            rsize, align = dt.itemsize, max(dt.alignment, 1)
        if mode not in _ring.MODES:
            raise ValueError(f"mode must be 'queue' or 'broadcast', not {mode!r}")
        if overflow not in _ring.OVERFLOWS:
            raise ValueError(f"overflow must be 'block' or 'overwrite', not {overflow!r}")
        if mode == "queue" and overflow != "block":
            raise ValueError("overflow='overwrite' needs mode='broadcast' (a work queue never drops records)")
        max_consumers = _ring.check_count(max_consumers, "max_consumers", 1, _ring.MAX_CONSUMERS)
        if isinstance(permissions, bool) or not isinstance(permissions, int) or not 0 <= permissions <= 0o777:
            raise ValueError(f"permissions must be an int in 0..0o777, not {permissions!r}")
        evict_ms = _evict_after_ms(evict_after, kind == _ring.KIND_MESSAGES, mode, overflow)

        def make() -> _ring.Mapping:
            return _ring.Mapping.create(
                name, cap, rsize, align, _ring.MODES[mode], _ring.OVERFLOWS[overflow], max_consumers,
                descr, permissions, kind, evict_ms,
            )

        try:
            try:
                mapping = make()
            except FileExistsError:
                if generated:  # 122 random bits collided: draw again
                    name = _generated_name()
                    mapping = make()
                elif replace:
                    cls._remove_stale(name)
                    mapping = make()
                else:
                    raise
        except FileExistsError:
            if replace:  # refused by _remove_stale, which says why
                raise
            if not exist_ok:
                st = segment_state(name)
                if st["all_dead"]:
                    advice = ("it is left over from a run that ended without unlinking it: pass "
                              "exist_ok=True to attach and receive the records it still holds, "
                              "replace=True to start afresh, or remove it (`python -m shmring rm "
                              f"{name}` or shmring.unlink({name!r}))")
                else:
                    advice = ("it is in use: attach to it (Ring.attach or exist_ok=True) or pick another "
                              "name (name=None generates one)")
                raise FileExistsError(errno.EEXIST, f"a ring named {name!r} already exists ({_who(st)}); "
                                      f"{advice}") from None
            # joining what is there must not hand our records to whoever made it:
            # it must be ours, and no more open than we asked for
            ring = cls.attach(name, owner_only=True, permissions=permissions)
            info = ring._mapping().info()
            have_mc, have_evict = info["max_consumers"], info.get("evict_after_ms", 0)
            want = (dt, cap, mode, overflow) if dt is not None else ("messages", cap * _ring.MSG_UNIT, mode, overflow)
            have = ((ring.dtype, ring.capacity, ring.mode, ring.overflow) if ring.kind == "records"
                    else ("messages", ring.nbytes, ring.mode, ring.overflow))
            if have + (have_mc, have_evict) != want + (max_consumers, evict_ms):
                ring.close()
                raise FileExistsError(
                    errno.EEXIST,
                    f"ring {name!r} exists as {ring._describe()}, max_consumers={have_mc}, "
                    f"evict_after={have_evict / 1000 if have_evict else None}, not as "
                    + (f"dtype={dt}, capacity={cap}" if dt is not None else f"a message ring of nbytes={cap * _ring.MSG_UNIT}")
                    + f", mode={mode!r}, overflow={overflow!r}, max_consumers={max_consumers}, "
                    f"evict_after={evict_ms / 1000 if evict_ms else None}",
                ) from None
            if dt is not None:
                ring._dtype = dt  # equal to the stored one; keep the caller's (alignment flag)
            return ring
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.ENOMEM):
                need = _segment_bytes(cap, rsize, mode, max_consumers, messages=dt is None)
                raise OSError(exc.errno, _no_memory_message(name, need)) from None
            raise
        ring = cls(mapping, name, dt)
        ring._unlink_on_close = bool(unlink_on_close)
        return ring

    @staticmethod
    def _remove_stale(name: str) -> None:
        """replace=True: unlink the segment called name if nobody uses it."""
        st = segment_state(name)
        if not st["all_dead"]:
            raise FileExistsError(errno.EEXIST, f"replace=True refused: ring {name!r} is in use ({_who(st)}); "
                                                f"close it there first, or pick another name")
        try:
            unlink(name)
        except FileNotFoundError:
            pass

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
        _check_owner(name, mapping.file_owner, owner_only, permissions, "ring")
        if mapping.kind == _ring.KIND_MESSAGES:
            if want is not None:
                raise TypeError(f"ring {name!r} is a message ring (it has no dtype); attach it without dtype=")
            return cls(mapping, name, None)
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
        if self._map is not None and self._unlink_on_close:
            try:
                unlink(self._name)
            except FileNotFoundError:
                pass
        self._map = None

    def unlink(self) -> None:
        """Remove the segment name; processes that have it mapped keep working."""
        unlink(self._name)

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self):
        return (_attach_for_pickle, (self._name, _encode_dtype(self._dtype) if self._dtype is not None else None))

    def _describe(self) -> str:
        if self._kind == "messages":
            return f"a message ring of nbytes={self.nbytes}, mode={self._mode!r}, overflow={self._overflow!r}"
        return f"dtype={self._dtype}, capacity={self._capacity}, mode={self._mode!r}, overflow={self._overflow!r}"

    def __repr__(self) -> str:
        if self._kind == "messages":
            state = "closed" if self._map is None else f"nbytes={self.nbytes}"
            return f"<shmring.Ring {self._name!r} messages mode={self._mode!r} {state}>"
        state = "closed" if self._map is None else f"capacity={self._capacity}"
        return f"<shmring.Ring {self._name!r} {self._dtype} mode={self._mode!r} {state}>"

    # -- handles --------------------------------------------------------------

    def _mapping(self) -> _ring.Mapping:
        if self._map is None:
            raise RingError(f"ring {self._name!r} is closed")
        return self._map

    # The handle's class follows the ring's kind, known only at run time: Producer /
    # Consumer for a ring of records, MessageProducer / MessageConsumer for messages.
    def producer(self, *, spin: float = DEFAULT_SPIN,
                 liveness_interval: float = _ring.DEFAULT_LIVENESS_INTERVAL) -> Any:
        """The producer handle (MessageProducer on a message ring). Only one live process may hold it; a new one may take
        over from a producer whose process died. ``spin``: seconds of busy polling
        before a blocked push sleeps. ``liveness_interval``: while blocked, how often
        (seconds) to look for dead consumers holding the ring back; a dead consumer's
        claim is reclaimed (and counted in stats()["abandoned"]) within this bound."""
        if self._kind == "messages":
            p = MessageProducer._open(self._mapping(), self, spin, liveness_interval)
        else:
            p = Producer._open(self._mapping(), self._dtype, self, spin, liveness_interval)
        self._handles.add(p)
        return p

    def consumer(self, *, start: Start = "latest", on_lag: OnLag = "skip", spin: float = DEFAULT_SPIN,
                 liveness_interval: float = _ring.DEFAULT_LIVENESS_INTERVAL,
                 allow_pickle: bool = True) -> Any:
        """Register a consumer (MessageConsumer on a message ring). Broadcast mode: ``start`` is "latest" (the next record
        pushed) or "oldest" (the oldest record still in the ring); ``on_lag`` is "skip"
        (count lost records in ``consumer.dropped``) or "raise" (raise Lagged).
        ``liveness_interval``: while blocked, how often (seconds) to check that the
        producer is alive; a dead producer's stream ends within this bound.
        ``allow_pickle`` (message rings): False refuses pickled messages with
        PickleRefusedError (unpickling runs code); bytes and arrays still arrive."""
        if start not in _ring.STARTS:
            raise ValueError(f"start must be 'latest' or 'oldest', not {start!r}")
        if on_lag not in ("skip", "raise"):
            raise ValueError(f"on_lag must be 'skip' or 'raise', not {on_lag!r}")
        if on_lag == "raise" and self._mode == "queue":
            raise ValueError(f"on_lag='raise' applies to broadcast rings (a lapped consumer); ring "
                             f"{self._name!r} is a queue, which never drops records")
        if self._kind == "messages":
            c = MessageConsumer._open(self._mapping(), self, _ring.STARTS[start], on_lag == "raise",
                                      bool(allow_pickle), spin, liveness_interval)
        else:
            if allow_pickle is not True:
                raise TypeError("allow_pickle applies to message rings; a ring of records never unpickles")
            c = Consumer._open(self._mapping(), self._dtype, self, _ring.STARTS[start], on_lag == "raise",
                               spin, liveness_interval)
        self._handles.add(c)
        return c

    # -- facts ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def dtype(self) -> np.dtype | None:
        """The record dtype (None for a message ring)."""
        return self._dtype

    @property
    def kind(self) -> str:
        """"records" (a ring of one dtype) or "messages" (bytes, arrays, objects)."""
        return self._kind

    @property
    def nbytes(self) -> int:
        """Bytes of ring memory for data (message rings: the rounded ``nbytes``)."""
        return self._capacity * (_ring.MSG_UNIT if self._kind == "messages" else self._dtype.itemsize)

    @property
    def max_message(self) -> int | None:
        """The largest message body this ring can carry (None for a ring of records)."""
        return self._mapping().max_message if self._kind == "messages" else None

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def overflow(self) -> Overflow:
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
            c["evicted"] = bool(c["evicted"])
            if self._kind == "messages":
                c["claimed"] *= _ring.MSG_UNIT  # positions count 16-byte units: bytes held
            elif self._mode == "broadcast":
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
            kind=self._kind,
            dtype=str(self._dtype) if self._dtype is not None else None,
            mode=self._mode,
            overflow=self._overflow,
            producer_pid=info["producer_pid"] or None,
            producer_alive=has_producer and info["producer_alive"] != _ring.LIVENESS_DEAD,
            closed=reason is not None,
            close_reason=reason,
            created=info["create_time_ns"] / 1e9,
            consumers=consumers,
        )
        info["nbytes"] = self.nbytes
        if self._kind == "records":
            info["max_message"] = None
        return info  # type: ignore[return-value]


def _check_owner(name: str, file_owner: tuple[int, int], owner_only: bool, permissions: int | None,
                 what: str) -> None:
    """PermissionError for a segment of another user (owner_only) or one more open than permissions."""
    uid, mode = file_owner
    if owner_only and uid != os.geteuid():
        raise PermissionError(
            errno.EPERM, f"{what} {name!r} is owned by uid {uid}, not by this user (uid {os.geteuid()}); "
                         f"refusing to join it")
    if permissions is not None and mode & ~int(permissions) & 0o7777:
        raise PermissionError(
            errno.EPERM, f"{what} {name!r} has permissions {oct(mode)}, more open than the {oct(permissions)} "
                         f"asked for; refusing to join it")


def _evict_after_ms(evict_after: Any, messages: bool, mode: str, overflow: str) -> int:
    """Ring.create(evict_after=...) as whole milliseconds (0: never), checked."""
    if evict_after is None:
        return 0
    if isinstance(evict_after, bool) or not isinstance(evict_after, (int, float)):
        raise TypeError(f"evict_after must be a number of seconds or None, not {type(evict_after).__name__}")
    if not math.isfinite(evict_after) or evict_after <= 0:
        raise ValueError(f"evict_after must be a positive number of seconds, not {evict_after!r}")
    if evict_after > 86400 * 30:
        raise ValueError(f"evict_after of {evict_after!r} s is longer than 30 days: pass None to never evict")
    if messages:
        raise ValueError("evict_after applies to rings of records; message rings do not offer it")
    if overflow != "block":
        raise ValueError("evict_after applies to block mode (queue, or broadcast with overflow='block'): "
                         "an overwriting producer never waits for a consumer")
    return max(1, math.ceil(evict_after * 1000))


def _no_memory_message(name: str, need: int) -> str:
    free = _shm_free_bytes()
    try:
        with open("/proc/meminfo") as f:
            avail = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), None)
    except OSError:
        avail = None
    known = [f"{SHM_DIR} reports {free} bytes free" if free is not None else None,
             f"the machine has {avail} bytes of memory available" if avail is not None else None]
    return (f"cannot create ring {name!r}: it needs about {need} bytes and reserving them in {SHM_DIR} failed "
            f"(tmpfs could not allocate the memory: the real limit is the smaller of the tmpfs size and "
            f"the memory the kernel can give; " + "; ".join(k for k in known if k) + ")")


def _attach_for_pickle(name: str, descr: str | None) -> Ring:
    return Ring.attach(name, dtype=_decode_dtype(descr, "unpickle") if descr is not None else None)


def unlink(name: str) -> None:
    """Remove the ring called ``name`` (FileNotFoundError if there is none)."""
    _ring.unlink(_check_name(name))
