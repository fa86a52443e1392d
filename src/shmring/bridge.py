"""Bridge a ring to other hosts over ZeroMQ.

A :class:`Sender` attaches to a local ring as one consumer and forwards what it
receives; a :class:`Receiver` connects to a sender, creates (or attaches to) a local
ring of the same kind, dtype and mode, and produces into it. Consumers on either
side use the ordinary ring API.

- broadcast rings fan out over XPUB/SUB: every batch carries the absolute position
  of its first record in the sending ring, so a receiver counts exactly the records
  it missed (high-water-mark drops, reconnects, a restarted bridge on either side);
  large frames are lent from the ring, and a receiver that keeps one too long
  (lend_hold) has its connection dropped rather than hold the ring;
- queue rings share work over ROUTER/DEALER with credit-based flow control: a
  receiver grants credit for a few batches and returns one credit per batch only
  once that batch is in its local ring (several at a time, in one message), so a
  slow or absent receiving side stalls the sender, which stops consuming, which
  back-pressures the sending ring's producer. Records in flight to a host that
  disappears are never re-sent (at most once, as the ring itself treats a dead
  consumer's claim); the sender counts them in ``unconfirmed``.

A named shmring.Queue crosses as a queue ring does (each item to one host, credits),
its items undecoded, as the messages of its lanes they are.

What depends on the ring's kind (records, messages, queue) is one codec class per kind
(_CODECS): the handshake's kind-specific fields, how the local ring is made or
checked, how a batch is taken, framed, checked and pushed. Message rings cross
undecoded: every message keeps its kind and length, and its body is copied once
into the receiving ring.

pyzmq is an optional dependency (``pip install 'shmring[bridge]'``); importing this
module does not import it.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import random
import struct
import threading
import time
from typing import Any

import numpy as np

from ._api import SHM_DIR, Ring, _encode_dtype
from ._api import _decode_dtype as _api_decode_dtype
from .errors import Closed, Empty, Full, NotARingError, RingError

__all__ = ["Sender", "Receiver", "BridgeError", "keygen", "read_sidecar", "remove_sidecar", "sidecar_path"]

PROTO = 1
MAGIC = b"SHB1"
# magic, type, kind, flags, stream, source, seq, first, count, reserved
HEADER = struct.Struct("<4sBBHQQQQII")
T_HELLO, T_DESC, T_DATA, T_CREDIT, T_END = 1, 2, 3, 4, 5
F_CLOSED = 1   # DESC: the sending ring's stream is closed and everything was sent
F_RESYNC = 2   # DESC: the sender does not know this receiver (re-grant your window)
# the wire code of each kind a bridge may carry (a kind this shmring has no codec for
# is refused at the handshake with a clear error)
KINDS = {"records": 0, "messages": 1, "queue": 2}
KIND_NAMES = {v: k for k, v in KINDS.items()}
MAX_DESC = 1 << 16
POLLIN_EVENTS = 15  # ZMQ_EVENTS: its value has bit 0 (ZMQ_POLLIN) set while a message waits

SIDECAR_PREFIX = "shmrb-"
_SIDE_FIELDS = ("expected", "have_expected", "source", "stream", "records", "batches", "bytes", "lost",
                "duplicates", "bad", "resets", "streams", "wal_count", "wal_head", "updated_ns")
_SIDE_SLOT = np.dtype([(f, "<u8") for f in _SIDE_FIELDS])
_SIDE_MAGIC = 0x3162726D68735F  # "_shmrb1"
_SIDE_SIZE = 64 + 2 * _SIDE_SLOT.itemsize
_SIDE_PACK = struct.Struct("<" + "Q" * len(_SIDE_FIELDS))


class BridgeError(RingError):
    """The bridge cannot start or go on: bad endpoint, handshake mismatch, bad keys."""


_zmq_module = None


def _zmq():
    global _zmq_module
    if _zmq_module is None:  # looked up once: the sending path asks for it every batch
        try:
            import zmq
        except ImportError:
            raise ImportError("the shmring bridge needs pyzmq: pip install 'shmring[bridge]'") from None
        _zmq_module = zmq
    return _zmq_module


# -- wire helpers -------------------------------------------------------------

def _decode_dtype(text: Any) -> np.dtype:
    if not isinstance(text, str) or len(text) > MAX_DESC:
        raise ValueError("dtype descriptor missing or too long")
    # the same descriptor a ring header stores: literals only, never runs code
    return _api_decode_dtype(text, "handshake")


def _header(mtype: int, kind: int, flags: int, stream: int, source: int, seq: int, first: int,
            count: int) -> bytes:
    return HEADER.pack(MAGIC, mtype, kind, flags, stream, source, seq, first, count, 0)


def _parse(frame: Any) -> tuple | None:
    """The header fields of a frame, or None if it is not one of ours."""
    buf = frame.buffer if hasattr(frame, "buffer") else frame
    if len(buf) != HEADER.size:
        return None
    h = HEADER.unpack(buf)
    if h[0] != MAGIC or h[2] not in KIND_NAMES:
        return None
    return h


def _source_id(ring: Ring, facts: dict) -> int:
    """Names one incarnation of the sending ring: positions are only comparable within it."""
    key = f"{ring.name}:{facts['created']!r}:{facts['creator_pid']}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


class _Codec:
    """Everything that depends on the ring's kind: what the handshake says about
    the ring, how a local ring is made or checked against it, how a batch is taken
    from a consumer, laid out in frames, checked on arrival and pushed into a
    producer. One subclass per kind, registered in _CODECS; the sender and the
    receiver never ask which kind they carry.

    A taken ``part`` and a decoded ``data`` are whatever the kind likes; the
    codec alone looks inside them (count, nbytes, trim)."""

    kind = ""
    modes: tuple[str, ...] = ("queue", "broadcast")  # what the kind's sender may name in its handshake
    held = False  # take() left a claim open: send the part, then call sent()
    _lent_bytes = 0  # lent to ZeroMQ by the last frames()
    # Frames of this many bytes and more leave without a copy where the ring's
    # memory may be lent to ZeroMQ (the claim waits for ZeroMQ to let go: queue
    # mode, and broadcast while lending is on, see Sender); smaller ones are copied
    # once, straight out of the ring, as they are sent.
    # Below about this size a copy costs less than ZeroMQ's zero-copy hand-back
    # (a message to pyzmq's garbage-collector thread per frame); it is also the
    # sending socket's copy_threshold.
    lend_from = 1 << 18

    # -- handshake: the kind's own fields, and the local ring to produce into --
    def facts(self, ring: Ring) -> dict:
        """What every kind's handshake says: mode, overflow, layout version, and
        the creation time and creator that name the ring's incarnation."""
        st = ring.stats()
        return {"mode": ring.mode, "overflow": ring.overflow, "layout": st["layout_version"],
                "created": st["created"], "creator_pid": st["creator_pid"]}

    def describe(self, ring: Ring) -> dict:
        raise NotImplementedError

    @classmethod
    def from_handshake(cls, d: dict) -> "_Codec":
        raise NotImplementedError

    def same(self, other: "_Codec") -> bool:
        raise NotImplementedError

    def create(self, name: str, capacity: int | None, d: dict, mode: str, overflow: str) -> Ring:
        raise NotImplementedError

    def mismatch(self, ring: Ring, mode: str, overflow: str) -> str | None:
        """Why an existing local ring cannot take this stream (None: it can)."""
        raise NotImplementedError

    def open_local(self, name: str, capacity: int | None, d: dict, mode: str, overflow: str):
        """The local ring to produce into: (ring, made here), attached if it exists."""
        try:
            return self.attach(name), False
        except FileNotFoundError:
            pass
        try:
            return self.create(name, capacity, d, mode, overflow), True
        except FileExistsError:  # made by someone else meanwhile
            return self.attach(name), False

    def attach(self, name: str) -> Ring:
        """The existing local ring ``name``; BridgeError if it is not a ring."""
        try:
            return Ring.attach(name)
        except (NotARingError, TypeError) as exc:
            raise BridgeError(f"local {name!r} is {_what_is(name)}; the sender sends a {self} ({exc})") from None

    def producer(self, ring: Ring):
        return ring.producer()

    def head(self, ring: Ring) -> int:
        """Everything ever published into the local ring (the receiver's log of a
        batch in flight compares it before and after)."""
        return ring.stats()["pushed"]

    # -- sender --
    def consumer(self, ring: Ring, start: str | None, spin: float | None = None):
        kw = {} if spin is None else {"spin": spin}
        return ring.consumer(**kw) if start is None else ring.consumer(start=start, **kw)

    def open(self, ring: Ring) -> None:
        """Called once the sender's consumer exists (per-ring state)."""

    def limit(self, max_records: int, max_bytes: int) -> int:
        raise NotImplementedError

    def position(self, ring: Ring, consumer) -> int:
        """Broadcast: the absolute position of the consumer's next record."""
        raise NotImplementedError

    def take(self, consumer, max_count: int, timeout: float):
        raise NotImplementedError

    def count(self, part) -> int:
        raise NotImplementedError

    def nbytes(self, part) -> int:
        raise NotImplementedError

    def frames(self, parts: list) -> list:
        raise NotImplementedError

    def available(self, consumer) -> int | None:
        """Records the consumer could take now, if that is cheap to know."""
        return None

    def sent(self, stop, deadline: float | None = None) -> bool:
        """After a part taken with ``held`` set went out: end its claim once ZeroMQ
        let go of what was lent. False (claim still open) if ``deadline`` (a
        time.monotonic() value) passed first."""
        return True

    def release(self) -> None:
        """End any claim still open (the sender is going away)."""

    # -- receiver --
    def decode(self, frames: list, count: int):
        raise NotImplementedError

    def trim(self, data, skip: int):
        raise NotImplementedError

    def push(self, producer, data, stop, keepalive) -> int:
        raise NotImplementedError


class _RecordCodec(_Codec):
    """Rings of records: a batch is the records end to end, sent from a view of
    the ring (overwrite mode: a copy checked intact), one frame per part taken."""

    kind = "records"

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.itemsize = dtype.itemsize
        if dtype.subdtype is not None:  # records are arrays: (n, *shape) of the base
            self._base, self._shape = dtype.subdtype
        else:
            self._base, self._shape = dtype, None

    def describe(self, ring: Ring) -> dict:
        return {"dtype": _encode_dtype(self.dtype), "capacity": ring.capacity}

    @classmethod
    def from_handshake(cls, d: dict) -> "_RecordCodec":
        try:
            dt = _decode_dtype(d.get("dtype"))
        except Exception as exc:
            raise _Bad(f"handshake dtype is not valid ({exc!r})")
        return cls(dt)

    def same(self, other: _Codec) -> bool:
        return isinstance(other, _RecordCodec) and other.dtype == self.dtype

    def __str__(self) -> str:
        return f"records ring of dtype {self.dtype}"

    def create(self, name, capacity, d, mode, overflow) -> Ring:
        cap = capacity or d.get("capacity")
        if not isinstance(cap, int) or cap < 1:
            raise _Bad(f"handshake capacity {cap!r}")
        return Ring.create(name, self.dtype, cap, mode=mode, overflow=overflow)

    def mismatch(self, ring, mode, overflow):
        if (_ring_kind(ring), ring.dtype, ring.mode, ring.overflow) == ("records", self.dtype, mode, overflow):
            return None
        return (f"local ring {ring.name!r} is a {_ring_kind(ring)} ring of dtype {ring.dtype}, mode "
                f"{ring.mode!r}, overflow {ring.overflow!r}; the sender sends a records ring of dtype "
                f"{self.dtype}, mode {mode!r}, overflow {overflow!r}")

    def limit(self, max_records: int, max_bytes: int) -> int:
        return max(1, min(max_records, max_bytes // self.itemsize))

    def position(self, ring, consumer) -> int:
        me = consumer.index
        return next(c["cursor"] for c in ring.stats()["consumers"] if c["index"] == me)

    _view = None
    _views = False
    _lend = False
    _trackers: list = []

    def open(self, ring: Ring) -> None:
        # Overwrite mode copies first and checks the copy (pop_many does both): a
        # view could be overwritten while ZeroMQ copies it, and torn records would
        # leave. Elsewhere the batch is sent from a view of the ring: one copy,
        # into ZeroMQ's message, or none (large frames, lent).
        self._views = ring.overflow != "overwrite"
        self._lend = self._views  # the sender turns it off in broadcast while a subscriber lags

    def available(self, consumer) -> int | None:
        return len(consumer) if self._views else None

    def take(self, consumer, max_count: int, timeout: float):
        if not self._views:
            return consumer.pop_many(max_count, timeout=timeout)
        v = consumer.view(max_count, timeout=timeout)
        self._view = v
        self.held = True
        return v.array

    def sent(self, stop, deadline: float | None = None) -> bool:
        return _wait_trackers(self, stop, deadline)

    def release(self) -> None:
        self._trackers = []
        if self._view is not None:
            v, self._view = self._view, None
            self.held = False
            v.__exit__(None, None, None)

    def count(self, part) -> int:
        return len(part)

    def nbytes(self, part) -> int:
        return part.nbytes

    def byte_view(self, arr: np.ndarray) -> memoryview:
        """Writable bytes over a block of records (a reservation's array)."""
        return memoryview(arr.reshape(-1).view(np.uint8))

    def frames(self, parts: list) -> list:
        if self.held:
            return _frames_of_held(self, parts)
        return list(parts)  # copies already: each goes out as one frame, large ones lent to ZeroMQ

    def decode(self, frames: list, count: int) -> list:
        total = 0
        arrays = []
        for f in frames:
            buf = f.buffer if hasattr(f, "buffer") else memoryview(f)
            nb = len(buf)
            if nb % self.itemsize:
                raise ValueError(f"frame of {nb} bytes is not whole records of {self.itemsize}")
            if not nb:
                continue
            if self._shape is not None:
                a = np.frombuffer(buf, dtype=self._base).reshape((-1,) + self._shape)
            else:
                a = np.frombuffer(buf, dtype=self.dtype)
            arrays.append(a)
            total += nb // self.itemsize
        if total != count:
            raise ValueError(f"batch says {count} records but carries {total}")
        return arrays

    def data_count(self, arrays: list) -> int:
        return sum(len(a) for a in arrays)

    def data_nbytes(self, arrays: list) -> int:
        return sum(a.nbytes for a in arrays)

    def trim(self, arrays: list, skip: int) -> list:
        out = []
        for a in arrays:
            if skip >= len(a):
                skip -= len(a)
                continue
            out.append(a[skip:])
            skip = 0
        return out

    def push(self, producer, arrays: list, stop, keepalive) -> int:
        """Push every array; waits in slices so stop() and keep-alives are served."""
        done = 0
        for a in arrays:
            try:  # the common case: room for all of it at once
                done += producer.push_many(a, timeout=0)
                continue
            except Full as exc:
                done += exc.pushed
                a = a[exc.pushed:]
            while len(a):
                try:
                    done += producer.push_many(a, timeout=0.05)
                    break
                except Full as exc:
                    done += exc.pushed
                    a = a[exc.pushed:]
                    keepalive()
                    if stop.is_set():
                        return done
        return done


class _MsgPart:
    """Messages taken in one claim, in the wire form of _ring.raw_check: a table
    (length, own-frame flag and kind per message), the small bodies packed end to
    end, and the large ones each in a frame of its own."""

    __slots__ = ("table", "packed", "owns", "start")

    def __init__(self, table, packed, owns, start: int = 0) -> None:
        self.table = table
        self.packed = packed
        self.owns = owns
        self.start = start  # messages before it are already in the ring (trimmed duplicates)


_LEN_MASK = (1 << 55) - 1


class _MessageCodec(_Codec):
    """Message rings: every message keeps its kind (bytes, array, pickle) and
    length and is never decoded on the way: the sender copies the small bodies of
    a claim into one frame and sends the large ones (``own_from`` bytes and up)
    each as a frame of its own; the receiver writes each body straight into its
    ring with one memcpy. The claim stays open until the batch is sent: its own
    frames are copied once into ZeroMQ's messages, or, in a queue ring and from
    ``lend_from`` bytes, lent to ZeroMQ (no copy; the claim then waits for ZeroMQ
    to let go). In overwrite mode the ring may overwrite a body while it is sent,
    so everything is copied first and checked intact."""

    kind = "messages"
    own_from = 1 << 16  # bodies this large travel in a frame of their own, not packed

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._lend = False
        self._overwrite = False
        self._open_claim = False
        self.held = False

    def describe(self, ring: Ring) -> dict:
        return {"nbytes": ring.nbytes, "max_message": ring.max_message}

    @classmethod
    def from_handshake(cls, d: dict) -> "_MessageCodec":
        nb, mm = d.get("nbytes"), d.get("max_message")
        if not isinstance(nb, int) or not isinstance(mm, int) or nb < 1 or not 0 <= mm < nb:
            raise _Bad(f"handshake names a message ring of nbytes {nb!r}, max_message {mm!r}")
        c = cls(mm)
        c.nbytes_ring = nb
        return c

    nbytes_ring = 0

    def same(self, other: _Codec) -> bool:
        return isinstance(other, _MessageCodec)

    def __str__(self) -> str:
        return "message ring"

    def create(self, name, capacity, d, mode, overflow) -> Ring:
        return Ring.create(name, nbytes=capacity or self.nbytes_ring, mode=mode, overflow=overflow)

    def mismatch(self, ring, mode, overflow):
        if (_ring_kind(ring), ring.mode, ring.overflow) != ("messages", mode, overflow):
            what = (f"a records ring of dtype {ring.dtype}" if _ring_kind(ring) == "records"
                    else f"a {_ring_kind(ring)} ring")
            return (f"local ring {ring.name!r} is {what}, mode {ring.mode!r}, overflow {ring.overflow!r}; "
                    f"the sender sends a message ring, mode {mode!r}, overflow {overflow!r}")
        if ring.max_message < self.max_message:
            return (f"local message ring {ring.name!r} carries messages of at most {ring.max_message} bytes; "
                    f"the sender's carries up to {self.max_message} (make it at least "
                    f"{self.nbytes_ring} bytes)")
        return None

    def open(self, ring: Ring) -> None:
        self._overwrite = ring.overflow == "overwrite"
        self._lend = not self._overwrite

    def limit(self, max_records: int, max_bytes: int) -> int:
        return max(1, min(max_records, max_bytes // 64))

    def position(self, ring, consumer) -> int:
        return consumer._next_seq

    def take(self, consumer, max_count: int, timeout: float):
        own = self.own_from
        table, packed, owns = consumer._claim_raw(max_count, own, timeout)
        if not self._overwrite:
            # the claim lasts until the batch is sent (and, for frames lent to
            # ZeroMQ, until ZeroMQ let go of them)
            self.held = self._open_claim = True
            self._cons = consumer
            return _MsgPart(table, packed, owns)
        try:
            if owns:
                owns = [bytes(v) for v in owns]
        finally:
            torn = consumer._release_raw()
        if torn:
            # overwritten while copied: they count as dropped (the sender sees it in
            # consumer.dropped), so the batch starts after them
            lens = table[:torn] & _LEN_MASK
            own_mask = (table[:torn] >> 55) & 1
            small = int(lens[own_mask == 0].sum())
            packed = packed[small:]
            owns = owns[int(own_mask.sum()):]
            table = table[torn:]
            if not len(table):
                raise Empty()
        return _MsgPart(table, packed, owns)

    _trackers: list = []

    def sent(self, stop, deadline: float | None = None) -> bool:
        if self._open_claim:
            return _wait_trackers(self, stop, deadline)
        return True

    def release(self) -> None:
        self._trackers = []
        if self._open_claim:
            self._open_claim = self.held = False
            self._cons._release_raw()
            self._cons = None

    def count(self, part) -> int:
        return len(part.table)

    def nbytes(self, part) -> int:
        return len(part.packed) + sum(len(v) for v in part.owns)

    def frames(self, parts: list) -> list:
        if len(parts) == 1:
            p = parts[0]
            table, packed = p.table, p.packed
        else:
            table = np.concatenate([p.table for p in parts])
            packed = b"".join(p.packed for p in parts)
        owns = [v for p in parts for v in p.owns]
        if self.held:
            owns = _frames_of_held(self, owns)
        return [table, packed] + owns

    def decode(self, frames: list, count: int) -> _MsgPart:
        if len(frames) < 2:
            raise ValueError("a message batch needs a table and a packed frame")
        tb = frames[0].buffer if hasattr(frames[0], "buffer") else memoryview(frames[0])
        if len(tb) != 8 * count:
            raise ValueError(f"batch says {count} messages but its table has {len(tb)} bytes")
        table = np.frombuffer(tb, "<u8")
        packed = frames[1].buffer if hasattr(frames[1], "buffer") else memoryview(frames[1])
        owns = [f.buffer if hasattr(f, "buffer") else memoryview(f) for f in frames[2:]]
        from . import _ring
        why = _ring.raw_check(table, len(packed), owns)
        if why is not None:
            raise ValueError(why)
        for i in np.flatnonzero((table & _LEN_MASK) > self.max_message)[:1]:
            raise ValueError(f"message {i} is larger than the sender's ring can hold")
        return _MsgPart(table, packed, owns)

    def data_count(self, part) -> int:
        return len(part.table) - part.start

    def data_nbytes(self, part) -> int:
        return int((part.table[part.start:] & _LEN_MASK).sum())

    def trim(self, part, skip: int):
        part.start = min(len(part.table), part.start + skip)
        return part

    def push(self, producer, part, stop, keepalive) -> int:
        done = 0
        n = len(part.table)
        timeout = 0
        while part.start + done < n:
            done += producer._push_raw(part.table, part.packed, part.owns, part.start + done, timeout)
            if part.start + done < n:
                keepalive()
                if stop.is_set():
                    break
                timeout = 0.05
        return done


class _QueueSource:
    """The sending bridge's side of a shmring.Queue: it gets items as any
    consumer process would (so each goes to exactly one host), and a queue never
    drops an item."""

    dropped = 0
    closed = False

    def __init__(self, queue) -> None:
        self.queue = queue

    def close(self) -> None:
        self.closed = True


class _QueueSink:
    """The receiving bridge's side of a shmring.Queue: one producer process of
    it (one lane), so the items of a batch keep their order."""

    closed = False

    def __init__(self, queue) -> None:
        self.queue = queue

    def _push_raw(self, table, packed, owns, start: int, timeout: float) -> int:
        return self.queue._put_raw(table, packed, owns, start, timeout)

    def close(self) -> None:
        self.closed = True


class _QueueCodec(_MessageCodec):
    """shmring.Queue: its items are messages of a message ring (a lane) and cross
    as message batches do; only the ends differ. The sender gets raw items (every
    body copied out at once: a get holds no claim), so small and large items leave
    as the message codec frames them; the receiver puts them, admitted against
    its queue's maxsize, into its own lane. Work sharing and credits are those of
    queue rings."""

    kind = "queue"
    modes = ("queue",)

    def facts(self, q) -> dict:
        from . import _ring
        st = q.stats()
        # the items are frames of the lanes' message rings: their layout is the one
        # both ends must share (each end's queue header is its own business)
        return {"mode": "queue", "overflow": "block", "layout": _ring.LAYOUT_VERSION,
                "created": st["create_time_ns"], "creator_pid": st["creator_pid"]}

    def describe(self, q) -> dict:
        lanes, consumers, nbytes, maxsize = q._queue_mapping.params
        return {"nbytes": nbytes, "max_message": _queue_max_item(nbytes), "maxsize": maxsize,
                "max_producers": lanes, "max_consumers": consumers}

    @classmethod
    def from_handshake(cls, d: dict) -> "_QueueCodec":
        c = super().from_handshake(d)
        assert isinstance(c, _QueueCodec)
        ms, mp, mc = d.get("maxsize"), d.get("max_producers"), d.get("max_consumers")
        if not (isinstance(ms, int) and isinstance(mp, int) and isinstance(mc, int)) or mp < 1 or mc < 1:
            raise _Bad(f"handshake names a queue of maxsize {ms!r}, max_producers {mp!r}, max_consumers {mc!r}")
        c.queue_params = (max(ms, 0), mp, mc)
        return c

    queue_params = (0, 1, 1)

    def same(self, other: _Codec) -> bool:
        return isinstance(other, _QueueCodec)

    def __str__(self) -> str:
        return "shmring.Queue"

    def create(self, name, capacity, d, mode, overflow):
        from .queues import Queue
        maxsize, lanes, consumers = self.queue_params
        return Queue(maxsize, nbytes=capacity or self.nbytes_ring, name=name, max_producers=lanes,
                     max_consumers=consumers)

    def attach(self, name: str):
        from .queues import Queue
        try:
            return Queue.attach(name)
        except NotARingError:
            raise BridgeError(f"local {name!r} is {_what_is(name)}, not a shmring.Queue; the sender sends "
                              f"a {self}") from None

    def mismatch(self, q, mode, overflow):
        most = _queue_max_item(q.nbytes)
        if most < self.max_message:
            return (f"local queue {q.name!r} carries items of at most {most} bytes; the sender's carries up "
                    f"to {self.max_message} (make it with nbytes of at least {self.nbytes_ring})")
        return None

    def producer(self, q) -> _QueueSink:
        return _QueueSink(q)

    def head(self, q) -> int:
        # every local producer's puts: exact for the log of a batch only while
        # the bridge is the queue's one producer on this host
        return q.stats()["put"]

    def consumer(self, q, start, spin=None):
        return _QueueSource(q)  # a queue's getter spins as the queue's own waits do

    def open(self, q) -> None:
        self._lend = self._overwrite = False

    def take(self, source: _QueueSource, max_count: int, timeout: float) -> _MsgPart:
        return _MsgPart(*source.queue._get_raw(max_count, self.own_from, timeout))

    def sent(self, stop, deadline: float | None = None) -> bool:
        return True

    def release(self) -> None:
        pass


def _queue_max_item(nbytes: int) -> int:
    # a lane frames an item with a 32-byte header in at most half its ring
    return nbytes // 2 - 32


def _what_is(name: str) -> str:
    """What the local segment ``name`` is, for an error message."""
    from .queues import Queue
    try:
        q = Queue.attach(name)
    except Exception:
        pass
    else:
        q.close()
        return "a shmring.Queue"
    try:
        r = Ring.attach(name)
    except Exception:
        return "not a shmring ring"
    try:
        kind = _ring_kind(r)
        return (f"a records ring of dtype {r.dtype}" if kind == "records" else f"a {kind} ring") + \
            f", mode {r.mode!r}"
    finally:
        r.close()


def _attach_local(name: str):
    """Ring.attach or Queue.attach, whichever ``name`` is."""
    try:
        return Ring.attach(name)
    except NotARingError:
        from .queues import Queue
        try:
            return Queue.attach(name)
        except NotARingError:
            pass
        raise


def _frames_of_held(codec: _Codec, bufs: list) -> list:
    """Frames for buffers that lie in ring memory under an open claim. Small ones
    are copied as they are sent; large ones are lent to ZeroMQ and tracked while
    the codec lends (sent() waits until ZeroMQ and every Frame object let go: the
    caller drops its list of frames first), copied otherwise. (Smaller ones are
    left as they are: below the socket's copy_threshold pyzmq copies them.)"""
    zmq = _zmq()
    out = []
    trackers = []
    lent = 0
    for b in bufs:
        # .nbytes of the array or memoryview itself: memoryview() of a structured
        # array would make numpy build its buffer format string every batch
        if b.nbytes >= codec.lend_from:
            if codec._lend:
                f = zmq.Frame(b, copy=False, track=True)
                trackers.append(f.tracker)
                lent += b.nbytes
            else:
                f = zmq.Frame(b, copy=True)
            out.append(f)
        else:
            out.append(b)
    codec._trackers = trackers
    codec._lent_bytes = lent
    return out


def _wait_trackers(codec: _Codec, stop, deadline: float | None = None) -> bool:
    # ZeroMQ holds a lent frame until it is written out (or the peer's pipe is
    # dropped); the ring memory under it must not be reused before.
    for t in codec._trackers:
        while not t.done:
            try:
                t.wait(0.05 if deadline is None else min(0.05, max(deadline - time.monotonic(), 0.001)))
            except _zmq().NotDone:
                if stop.is_set():
                    return False  # teardown closes the sockets (freeing the frames) first
                if deadline is not None and time.monotonic() >= deadline:
                    return False
    codec.release()
    return True


# A broadcast sender waits this long at most for ZeroMQ to write a lent frame to
# every subscriber before it calls the slowest one lagging and stops lending for a
# while: one large frame leaves in well under a millisecond when every subscriber's
# socket takes it, so only a host that is behind waits this long, and until it is
# found lagging it paces the others.
LEND_LAG = 0.05
# ... plus the time to write what the claim lent at this rate (bytes/s), well below
# what one host that keeps up takes on loopback or a veth pair (1-2 GB/s here)
LEND_RATE = 200e6

_CODECS = {"records": _RecordCodec, "messages": _MessageCodec, "queue": _QueueCodec}


def _codec_of(ring: Ring) -> _Codec:
    kind = _ring_kind(ring)
    if kind == "records":
        return _RecordCodec(ring.dtype)
    if kind == "messages":
        return _MessageCodec(ring.max_message)
    if kind == "queue":
        return _QueueCodec(_queue_max_item(ring.nbytes))
    raise BridgeError(f"this shmring cannot bridge rings of kind {kind!r} "
                      f"(it knows: {', '.join(sorted(_CODECS))})")


def _codec_from_handshake(kind: str, d: dict) -> _Codec:
    cls = _CODECS.get(kind)
    if cls is None:
        raise BridgeError(f"this shmring cannot bridge rings of kind {kind!r} "
                          f"(it knows: {', '.join(sorted(_CODECS))})")
    return cls.from_handshake(d)


def _ring_kind(ring: Ring) -> str:
    from .queues import Queue
    if isinstance(ring, Queue):
        return "queue"
    return getattr(ring, "kind", "records")


# -- CURVE keys ---------------------------------------------------------------

def keygen(directory: str, client: str = "client") -> dict:
    """Create a server key pair (once) and a client key pair in ``directory``; the
    client's public key is authorised by copying it to ``directory/authorized_clients``.

    The sending host needs ``server.key_secret`` and ``authorized_clients/``; a
    receiving host needs ``server.key`` and its own ``CLIENT.key_secret``."""
    zmq = _zmq()
    import zmq.auth
    if not zmq.has("curve"):
        raise BridgeError("this libzmq was built without CURVE support")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    auth_dir = os.path.join(directory, "authorized_clients")
    os.makedirs(auth_dir, mode=0o700, exist_ok=True)
    made = {}
    if not os.path.exists(os.path.join(directory, "server.key_secret")):
        zmq.auth.create_certificates(directory, "server")
    made["server"] = os.path.join(directory, "server.key")
    pub, secret = zmq.auth.create_certificates(directory, client)
    os.chmod(secret, 0o600)
    os.chmod(os.path.join(directory, "server.key_secret"), 0o600)
    with open(pub, "rb") as src, open(os.path.join(auth_dir, f"{client}.key"), "wb") as dst:
        dst.write(src.read())
    made["client"] = secret
    return made


def _load(path: str, secret: bool) -> tuple:
    import zmq.auth
    if not os.path.exists(path):
        raise BridgeError(f"CURVE key file {path} does not exist (make keys with `shmring bridge keygen DIR`)")
    try:
        pub, sec = zmq.auth.load_certificate(path)
    except Exception as exc:
        raise BridgeError(f"CURVE key file {path} cannot be read: {exc}") from None
    if secret and not sec:
        raise BridgeError(f"CURVE key file {path} holds no secret key")
    return pub, sec


# -- receiver-side state that survives a killed bridge --------------------------

def sidecar_path(name: str) -> str:
    return os.path.join(SHM_DIR, SIDECAR_PREFIX + name)


class _Sidecar:
    """The receiver's counters and stream position, next to its ring in /dev/shm.

    Two slots and an index: a new state is written to the idle slot, then the index
    flips (one aligned 8-byte store), so a bridge killed at any point leaves one whole
    state. Before a batch is pushed the state names the batch (``wal_count``) and the
    ring's head before it; a restarted bridge compares that head with the ring's to
    know how much of the batch landed, so the position and the loss count stay exact
    across kill -9."""

    def __init__(self, name: str, fresh: bool = False) -> None:
        path = sidecar_path(name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIDE_SIZE:
                os.ftruncate(fd, _SIDE_SIZE)
            self._mm = mmap.mmap(fd, _SIDE_SIZE)
        finally:
            os.close(fd)
        self._meta = np.frombuffer(self._mm, dtype="<u8", count=8)
        self._slots = np.frombuffer(self._mm, dtype=_SIDE_SLOT, count=2, offset=64)
        if self._meta[0] != _SIDE_MAGIC or fresh:  # a new ring starts from zero
            self._slots[:] = 0
            self._meta[1] = 0
            self._meta[0] = _SIDE_MAGIC
        self._idx = int(self._meta[1]) & 1
        self.state = {f: int(self._slots[self._idx][f]) for f in _SIDE_FIELDS}
        self._pid_saved = False

    def save(self) -> None:
        # twice per batch: packed with one struct call, no numpy record per save
        idle = self._idx ^ 1
        st = self.state
        st["updated_ns"] = time.time_ns()
        _SIDE_PACK.pack_into(self._mm, 64 + idle * _SIDE_SLOT.itemsize, *[st[f] for f in _SIDE_FIELDS])
        self._meta[1] = idle  # the flip: one aligned 8-byte store
        self._idx = idle
        if not self._pid_saved:
            self._meta[2] = os.getpid()
            self._pid_saved = True

    def close(self) -> None:
        self._meta = self._slots = None
        self._mm.close()


def remove_sidecar(name: str) -> None:
    try:
        os.unlink(sidecar_path(name))
    except FileNotFoundError:
        pass


def read_sidecar(name: str) -> dict | None:
    """The receiving bridge's counters for ring ``name`` (None if no bridge ever fed it)."""
    try:
        with open(sidecar_path(name), "rb") as f:
            raw = f.read(_SIDE_SIZE)
    except FileNotFoundError:
        return None
    if len(raw) < _SIDE_SIZE:
        return None
    meta = np.frombuffer(raw, dtype="<u8", count=8)
    if meta[0] != _SIDE_MAGIC:
        return None
    slot = np.frombuffer(raw, dtype=_SIDE_SLOT, count=2, offset=64)[int(meta[1]) & 1]
    out = {f: int(slot[f]) for f in ("records", "batches", "bytes", "lost", "duplicates", "bad",
                                       "resets", "streams")}
    out["position"] = int(slot["expected"]) if slot["have_expected"] else None
    out["pid"] = int(meta[2])
    return out


# -- common socket plumbing -----------------------------------------------------

class _Bridge:
    _thread: threading.Thread | None = None

    def __init__(self, *, hwm: int, heartbeat: float, peer_timeout: float, curve_keys: str | None) -> None:
        zmq = _zmq()
        if heartbeat <= 0 or peer_timeout <= heartbeat:
            raise ValueError("need 0 < heartbeat < peer_timeout")
        if hwm < 1:
            raise ValueError(f"hwm must be >= 1 message, got {hwm}")
        self._zmq = zmq
        self.hwm = int(hwm)
        self.heartbeat = float(heartbeat)
        self.peer_timeout = float(peer_timeout)
        self.curve_keys = curve_keys
        self._stop = threading.Event()
        self._ctx = None
        self._sock = None
        self._auth = None
        self.error: BaseException | None = None

    def _socket(self, stype: int):
        zmq = self._zmq
        if self._ctx is None:
            self._ctx = zmq.Context()
        s = self._ctx.socket(stype)
        s.linger = 200
        s.sndhwm = s.rcvhwm = self.hwm
        s.reconnect_ivl_max = 1000
        # TCP keepalives find a dead peer the kernel would otherwise keep for hours.
        # Not ZMTP heartbeats: libzmq 4.3.5 writes a ping, and the pong that
        # answers one, straight from the event (stream_engine_base.cpp, out_event),
        # and asserts, aborting the process, if the connection's input had been
        # stopped by a full queue when the peer closed it: a lagging receiving
        # host whose sending bridge stopped or restarted.
        s.tcp_keepalive = 1
        every = max(1, round(self.heartbeat))  # seconds: the kernel's unit
        s.tcp_keepalive_idle = s.tcp_keepalive_intvl = every
        s.tcp_keepalive_cnt = max(1, math.ceil(self.peer_timeout / every))
        s.copy_threshold = _Codec.lend_from
        return s

    def _close_sockets(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=200)
            self._sock = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    # -- life cycle --
    def run(self) -> None:
        """Set up and forward until stop() (from another thread) or the end of the
        stream with ``once=True``."""
        self._setup()
        try:
            self._loop()
        finally:
            self._teardown()

    def _run_thread(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # kept for stop()/wait() to raise in the caller
            self.error = exc
        finally:
            self._teardown()

    def start(self) -> "_Bridge":
        """Set up in the calling thread (so a bad endpoint or key raises here), then
        forward in a background thread."""
        self._setup()
        self._thread = threading.Thread(target=self._run_thread, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop forwarding; raises the error that ended the background thread, if any."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise BridgeError(f"{type(self).__name__} did not stop within {timeout} s")
            self._thread = None
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the background thread to end by itself (``once=True``); True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# -- sender --------------------------------------------------------------------

class _Peer:
    __slots__ = ("ident", "credit", "seen", "inflight", "seq")

    def __init__(self, ident: bytes, now: float) -> None:
        self.ident = ident
        self.credit = 0
        self.seen = now
        self.inflight: dict[int, int] = {}
        self.seq = 0


class Sender(_Bridge):
    """Forward a local ring to receivers: ``Sender(ring_or_name, "tcp://0.0.0.0:5555")``.

    Binds ``endpoint`` (nothing listens unless asked). A broadcast ring is published
    to every receiver; a queue ring's records go each to one receiver that has credit.
    ``start`` ("latest" or "oldest", broadcast only) is where this sender's consumer
    starts. A batch closes at ``max_records`` records, ``max_bytes`` bytes or
    ``flush_delay`` seconds after its first record, whichever comes first (the
    delay applies only while records come densely: an isolated record is sent at
    once). A broadcast sender with no receiver connected stops taking records for
    up to ``hold`` seconds (a blocking ring's producer waits meanwhile), so a
    restart on either side loses nothing that a moment's wait saves.

    Frames of 256 KiB and more are lent to ZeroMQ straight from the ring (no copy)
    and the claim on them ends once ZeroMQ has written them to every receiver. In
    broadcast a receiver that has not taken a lent frame within 50 ms (plus 5 ms
    per MiB the batch lends) lags: the sender copies large frames instead for a
    while (10 s, doubling each time a receiver is found lagging again, at most
    5 min; ``lend_pauses``), so a lagging host meets PUB/SUB's drops at the
    high-water mark instead of pacing the others. One that still has not taken
    it after ``lend_hold`` seconds (or twice the lag allowance, if longer) would
    hold the ring: the sender drops its connections (each receiver reconnects
    and counts exactly what it missed; ``lend_resets``). ``lend_hold=0`` always
    copies in broadcast.

    ``spin`` (seconds; None: the ring's default, 20 us) is how long the sender's
    consumer busy-polls the ring (without the GIL) before it sleeps on it. A
    record that comes within it is taken with no futex wake-up, one wake-up less
    on an isolated record's path (20-40 us on a virtual machine); the price is a
    core kept busy while records come at least that often, and ``spin`` seconds
    of every idle wait (one per heartbeat or 50 ms)."""

    def __init__(self, ring: Ring | str, endpoint: str, *, start: str = "latest",
                 max_records: int = 1024, max_bytes: int = 1 << 20, flush_delay: float = 100e-6,
                 hwm: int = 1000, heartbeat: float = 0.5, peer_timeout: float = 5.0, hold: float = 5.0,
                 lend_hold: float = 1.0, spin: float | None = None, curve_keys: str | None = None) -> None:
        super().__init__(hwm=hwm, heartbeat=heartbeat, peer_timeout=peer_timeout, curve_keys=curve_keys)
        if spin is not None and not spin >= 0:
            raise ValueError(f"spin must be >= 0 seconds, got {spin!r}")
        self.spin = spin
        self.hold = float(hold)
        self.lend_hold = float(lend_hold)
        self.lent_batches = 0
        self.lend_pauses = 0
        self.lend_resets = 0
        self._subs = 0
        self._alone_since: float | None = None
        if max_records < 1 or max_bytes < 1 or flush_delay < 0 or lend_hold < 0:
            raise ValueError("need max_records >= 1, max_bytes >= 1, flush_delay >= 0, lend_hold >= 0")
        if start not in ("latest", "oldest"):
            raise ValueError(f"start must be 'latest' or 'oldest', not {start!r}")
        self._own_ring = isinstance(ring, str)
        self.ring = _attach_local(ring) if isinstance(ring, str) else ring
        self.endpoint = endpoint
        self.start_at = start
        self.max_records = int(max_records)
        self.max_bytes = int(max_bytes)
        self.flush_delay = float(flush_delay)
        self.kind = _ring_kind(self.ring)
        self.codec = _codec_of(self.ring)
        facts = self.codec.facts(self.ring)
        self.stream = random.getrandbits(63) | 1
        self.source = _source_id(self.ring, facts)
        self.broadcast = facts["mode"] == "broadcast"
        self._k = KINDS[self.kind]
        self._lim = self.codec.limit(self.max_records, self.max_bytes)
        self._cons = None
        self._seq = 0
        self._pos = 0
        self._dropped_seen = 0
        self._closed = False
        self._peers: dict[bytes, _Peer] = {}
        self._rr = 0
        self._held = None
        self._end_sent = False
        self.batches = self.records = self.bytes = 0
        self.dropped_at_source = 0
        self.unconfirmed = 0
        self.peers_lost = 0
        self.bad = 0
        self.bound = None
        self._desc = json.dumps({
            "proto": PROTO, "kind": self.kind, "mode": facts["mode"], "overflow": facts["overflow"],
            "layout": facts["layout"], "name": self.ring.name,
            **self.codec.describe(self.ring),
        }).encode()

    @property
    def counters(self) -> dict:
        return {"batches": self.batches, "records": self.records, "bytes": self.bytes,
                "dropped_at_source": self.dropped_at_source, "unconfirmed": self.unconfirmed,
                "peers": len(self._peers), "peers_lost": self.peers_lost, "bad": self.bad,
                "lent_batches": self.lent_batches, "lend_pauses": self.lend_pauses,
                "lend_resets": self.lend_resets,
                "position": self._pos if self.broadcast else None}

    def _bind(self, endpoint: str, retry_for: float = 0.0):
        """The sending socket, configured and bound to ``endpoint``; an address still
        held by a socket just closed is retried for ``retry_for`` seconds."""
        zmq = self._zmq
        sock = self._socket(zmq.XPUB if self.broadcast else zmq.ROUTER)
        try:
            if self.broadcast:
                # every (un)subscription: every newcomer gets a DESC, and we know when nobody listens
                sock.setsockopt(zmq.XPUB_VERBOSER, 1)
            else:
                sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a vanished peer fails instead of vanishing
            if self._curve is not None:
                sock.curve_secretkey, sock.curve_publickey = self._curve
                sock.curve_server = True
            end = time.monotonic() + retry_for
            while True:
                try:
                    sock.bind(endpoint)
                    break
                except zmq.ZMQError as exc:
                    if exc.errno != zmq.EADDRINUSE or time.monotonic() >= end:
                        raise BridgeError(f"cannot bind {endpoint}: {exc}") from None
                    time.sleep(0.01)
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    _curve = None

    def _setup(self) -> None:
        zmq = self._zmq
        try:
            if self.curve_keys:
                if not zmq.has("curve"):
                    raise BridgeError("this libzmq was built without CURVE support")
                from zmq.auth.thread import ThreadAuthenticator
                pub, sec = _load(os.path.join(self.curve_keys, "server.key_secret"), True)
                auth_dir = os.path.join(self.curve_keys, "authorized_clients")
                if not os.path.isdir(auth_dir):
                    raise BridgeError(f"{auth_dir} is missing: no client could ever connect")
                if self._ctx is None:
                    self._ctx = zmq.Context()
                self._auth = ThreadAuthenticator(self._ctx)
                self._auth.start()
                self._auth.configure_curve(domain="*", location=auth_dir)
                self._curve = (sec, pub)
            self._sock = self._bind(self.endpoint)
            self.bound = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self._cons = self.codec.consumer(self.ring, self.start_at if self.broadcast else None, self.spin)
            self.codec.open(self.ring)
            if self.broadcast:
                self._pos = self.codec.position(self.ring, self._cons)
                if self.lend_hold <= 0:
                    self.codec._lend = False
        except BaseException:
            self._teardown()
            raise

    def _teardown(self) -> None:
        # sockets first: terminating the context frees every frame ZeroMQ still
        # holds, among them any that point into the ring under an open claim
        self._close_sockets()
        if self._held is not None:
            # taken from the ring (or queue) for a host that refused it, and never
            # handed to another: gone with this sender, so counted as unconfirmed
            self.unconfirmed += self._held[1]
            self._held = None
        if self._cons is not None:
            self.codec.release()
            self._cons.close()
            self._cons = None
        if self._own_ring:
            self.ring.close()

    # -- batches --
    def _take(self, timeout: float):
        """One batch: (first position, record count, arrays) or None."""
        c = self._cons
        codec = self.codec
        lim = self._lim
        if self._dense_since_send():
            # A codec that holds its claim sends one claim per batch: let the batch
            # fill for one flush delay first if records are coming densely.
            avail = codec.available(c)
            if avail is not None and 0 < avail < lim:
                time.sleep(self.flush_delay)
        first_part = codec.take(c, lim, timeout)
        d = c.dropped
        if d != self._dropped_seen:
            self.dropped_at_source += d - self._dropped_seen
            self._pos += d - self._dropped_seen
            self._dropped_seen = d
        first = self._pos
        parts = [first_part]
        n = codec.count(first_part)
        nb = codec.nbytes(first_part)
        self._pos += n
        if codec.held or n >= lim or nb >= self.max_bytes:
            return first, n, parts
        now = time.monotonic()
        # Wait for more only while records come densely (the last batch left less than
        # one flush delay ago): an isolated record goes out at once, a stream is batched.
        deadline = now + self.flush_delay if now - self._last_sent < self.flush_delay else now
        while n < lim and nb < self.max_bytes:
            left = deadline - time.monotonic()
            try:
                a = codec.take(c, lim - n, max(left, 0.0))
            except (Empty, Closed):
                break
            d = c.dropped
            if d != self._dropped_seen:
                # records were lost between two parts: this batch ends before them
                self._held_part = (a, d)
                break
            parts.append(a)
            k = codec.count(a)
            n += k
            nb += codec.nbytes(a)
            self._pos += k
            if codec.held:
                break  # its claim stays open until it is sent
        return first, n, parts

    def _carry(self):
        """A part taken after a loss inside the previous batch starts the next one."""
        a, d = self._held_part
        self._held_part = None
        self.dropped_at_source += d - self._dropped_seen
        self._pos += d - self._dropped_seen
        self._dropped_seen = d
        first = self._pos
        k = self.codec.count(a)
        self._pos += k
        return first, k, [a]

    _held_part = None
    _last_sent = 0.0

    def _dense_since_send(self) -> bool:
        return self.flush_delay > 0 and time.monotonic() - self._last_sent < self.flush_delay

    def _send_data(self, ident, seq: int, first: int, n: int, parts: list) -> None:
        codec = self.codec
        frames = codec.frames(parts)
        frames.insert(0, HEADER.pack(MAGIC, T_DATA, self._k, 0, self.stream, self.source, seq, first, n, 0))
        if ident is not None:
            frames.insert(0, ident)
        # send_multipart's work without its per-frame type checks and enum flag
        # arithmetic: plain ints (ZMQ_DONTWAIT 1, ZMQ_SNDMORE 2). A ROUTER refuses a
        # full peer at the first frame only, so a refused batch sent nothing.
        send = self._sock.send
        fl = 1 if ident is not None else 0
        last = frames.pop()
        f = None
        for f in frames:
            send(f, fl | 2, copy=False)
        send(last, fl, copy=False)
        if codec.held:
            # a tracked frame is done only once no Frame object refers to it
            frames = last = f = None  # noqa: F841
            if not codec._trackers:
                codec.sent(self._stop)
            elif not self.broadcast:
                self.lent_batches += 1
                codec.sent(self._stop)
            else:
                self.lent_batches += 1
                t0 = time.monotonic()
                # a claim of many large messages takes a while to write even to
                # subscribers that keep up
                lag = LEND_LAG + codec._lent_bytes / LEND_RATE
                if not codec.sent(self._stop, t0 + min(self.lend_hold, lag)) and not self._stop.is_set():
                    # a subscriber lags: waiting for it paces every other one
                    self._pause_lending()
                    if not codec.sent(self._stop, t0 + max(self.lend_hold, 2 * lag)) and not self._stop.is_set():
                        self._unstick()
        self._last_sent = time.monotonic()
        self.batches += 1
        self.records += n
        self.bytes += codec.nbytes(parts[0]) if len(parts) == 1 else sum(codec.nbytes(p) for p in parts)

    def _pause_lending(self) -> None:
        """Copy instead of lending for a while (doubling each time a subscriber is
        found lagging again): a host that lags then meets PUB/SUB's drops at the
        high-water mark instead of pacing the others."""
        self.lend_pauses += 1
        self.codec._lend = False
        self._lend_again = time.monotonic() + self._lend_pause
        self._lend_pause = min(self._lend_pause * 2, 300.0)

    def _unstick(self) -> None:
        """A subscriber has not taken a frame lent from the ring within lend_hold
        (its host reads much slower than the others, or not at all): the claim on
        the ring, and with it the ring's producer, would wait for it. Closing the
        socket drops every subscriber's queue and with it the frame; the
        subscribers reconnect by themselves and each counts what it missed
        (positions)."""
        self.lend_resets += 1
        self._sock.close(linger=0)
        self._sock = None
        if not self.codec.sent(self._stop, time.monotonic() + 10.0):
            if self._stop.is_set():
                return
            raise BridgeError("ZeroMQ kept a frame lent from the ring 10 s after its socket closed")
        self._sock = self._bind(self.bound, retry_for=5.0)
        self._subs = 0
        self._alone_since = None

    _lend_again = 0.0
    _lend_pause = 10.0

    def _desc_frames(self, flags: int) -> list:
        return [_header(T_DESC, self._k, flags, self.stream, self.source, self._seq, self._pos, 0), self._desc]

    # -- loops --
    def _loop(self) -> None:
        if self.broadcast:
            self._loop_broadcast()
        else:
            self._loop_queue()

    def _loop_broadcast(self) -> None:
        next_hb = 0.0
        next_check = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            sock = self._sock  # replaced when a lagging subscriber held a lent frame
            if self._lend_again and now >= self._lend_again:
                self._lend_again = 0.0
                self.codec._lend = True
            if now >= next_check or not self._subs:
                next_check = now + 0.01
                while sock.getsockopt(POLLIN_EVENTS) & 1:
                    msg = sock.recv()
                    if msg[:1] == b"\x01":
                        if not self._subs:
                            self._alone_since = None
                        self._subs += 1
                        sock.send_multipart(self._desc_frames(F_CLOSED if self._closed else 0))
                    elif msg[:1] == b"\x00":
                        self._subs = max(0, self._subs - 1)
                    # anything else from a subscriber needs no answer
            if not self._subs:
                # PUB drops what nobody subscribes to. Hold on a while, so that a restarted
                # sender (start="oldest") or a reconnecting receiver does not miss records
                # that waiting a moment would have delivered; then forward into the void
                # (receivers count the gap when they come back).
                if self._alone_since is None:
                    self._alone_since = now
                if now - self._alone_since < self.hold:
                    sock.poll(20)
                    continue
            if now >= next_hb:
                next_hb = now + self.heartbeat
                sock.send_multipart(self._desc_frames(F_CLOSED if self._closed else 0))
            if self._held_part is not None:
                batch = self._carry()
            else:
                try:
                    batch = self._take(min(0.05, max(0.0, next_hb - now)))
                except Empty:
                    continue
                except Closed:
                    if not self._closed:
                        self._closed = True
                        sock.send_multipart(self._desc_frames(F_CLOSED))
                    self._stop.wait(0.05)
                    continue
            if self._closed:
                self._closed = False  # a new producer reopened the stream
            first, n, parts = batch
            self._send_data(None, self._seq, first, n, parts)
            self._seq += 1

    def _peer_msg(self, frames: list, now: float) -> None:
        if len(frames) < 2:
            self.bad += 1
            return
        ident = frames[0].bytes
        h = _parse(frames[1])
        if h is None or h[1] not in (T_HELLO, T_CREDIT):
            self.bad += 1
            return
        p = self._peers.get(ident)
        if h[1] == T_HELLO:
            if p is None:
                p = self._peers[ident] = _Peer(ident, now)
            p.seen = now
            self._send_ctl(ident, F_CLOSED if self._end_sent else 0)
            return
        if p is None:  # a receiver we had given up on, or one of our previous incarnation
            p = self._peers[ident] = _Peer(ident, now)
            self._send_ctl(ident, F_RESYNC | (F_CLOSED if self._end_sent else 0))
            return
        p.seen = now
        if h[7]:  # first = 1: this credit confirms every batch up to seq (one pipe keeps order)
            upto = h[6]
            for k in [k for k in p.inflight if k <= upto]:
                del p.inflight[k]
        p.credit += h[8]

    def _send_ctl(self, ident: bytes, flags: int) -> None:
        try:
            self._sock.send_multipart([ident] + self._desc_frames(flags), flags=self._zmq.NOBLOCK)
        except self._zmq.ZMQError:
            pass  # the peer left already; its silence retires it

    def _drop_peer(self, p: _Peer) -> None:
        self.unconfirmed += sum(p.inflight.values())
        self.peers_lost += 1
        self._peers.pop(p.ident, None)

    def _loop_queue(self) -> None:
        zmq = self._zmq
        sock = self._sock
        next_sweep = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            # EVENTS, not poll(0): no Poller object and no system call per batch
            while sock.getsockopt(POLLIN_EVENTS) & 1:
                self._peer_msg(sock.recv_multipart(copy=False), now)
            if now >= next_sweep:
                next_sweep = now + min(0.1, self.heartbeat)
                for p in list(self._peers.values()):
                    if now - p.seen > self.peer_timeout:
                        self._drop_peer(p)
            ready = [p for p in self._peers.values() if p.credit > 0]
            if not ready:
                if self._closed and not self._end_sent and not any(p.inflight for p in self._peers.values()) \
                        and self._held is None:
                    self._send_end()
                sock.poll(min(50, int(self.heartbeat * 1000)))
                continue
            if self._held is not None:
                batch, self._held = self._held, None
            else:
                try:
                    batch = self._take(0.02)
                    self._closed = self._end_sent = False  # (re)opened stream
                except Empty:
                    continue
                except Closed:
                    self._closed = True
                    if not self._end_sent and not any(p.inflight for p in self._peers.values()):
                        self._send_end()
                    sock.poll(50)
                    continue
            self._rr += 1
            p = ready[self._rr % len(ready)]
            first, n, parts = batch
            seq = p.seq
            try:
                self._send_data(p.ident, seq, 0, n, parts)
            except zmq.ZMQError as exc:
                # never handed to that peer: safe to give to another
                self._held = batch
                if exc.errno == zmq.EAGAIN:
                    p.credit = 0  # its pipe is full (credit outran hwm): wait for confirmations
                else:
                    self._drop_peer(p)
                continue
            p.seq += 1
            p.credit -= 1
            p.inflight[seq] = n

    def _send_end(self) -> None:
        self._end_sent = True
        for ident in list(self._peers):
            self._send_ctl(ident, F_CLOSED)


# -- receiver ------------------------------------------------------------------

class Receiver(_Bridge):
    """Feed a local ring ``name`` from a Sender at ``endpoint`` (connects; reconnects
    by itself). The ring is created like the sender's (kind, dtype, mode, overflow,
    and ``capacity`` unless given: records, or bytes for a message ring) or, if it
    exists, checked against it.

    Queue rings: ``window`` batches of credit are granted to the sender (it bounds
    what is in flight to this host: at most ``window`` batches of the sender's
    ``max_bytes``). 32 rather than 8: a credit comes back only after a round trip
    through both bridges' ZeroMQ threads, and with 8 the sender of 64 KiB batches
    across a veth pair often sat without credit (0.42-0.88 of raw pyzmq's rate,
    against 0.61-1.12 with 32, four runs each). With
    ``once=True`` the bridge ends after the sending stream closed."""

    def __init__(self, endpoint: str, name: str, *, capacity: int | None = None, window: int = 32,
                 hwm: int = 1000, heartbeat: float = 0.5, peer_timeout: float = 5.0,
                 curve_keys: str | None = None, curve_client: str = "client", once: bool = False) -> None:
        super().__init__(hwm=hwm, heartbeat=heartbeat, peer_timeout=peer_timeout, curve_keys=curve_keys)
        if window < 1:
            raise ValueError(f"window must be >= 1 batch, got {window}")
        from ._api import _check_name
        self.name = _check_name(name)
        self.endpoint = endpoint
        self.capacity = capacity
        self.window = int(window)
        self.curve_client = curve_client
        self.once = once
        self.ring: Ring | None = None
        self._prod = None
        self.codec = None
        self.mode = None
        self._stream = None
        self._side: _Sidecar | None = None
        self._head = 0
        self.unexpected = 0
        self.ended = False
        self.direct_batches = 0  # batches received straight into the ring (the rest: decoded, then pushed)
        self._unsaved = False  # a batch received straight into the ring is not in the sidecar yet

    @property
    def counters(self) -> dict:
        if self._side is None:
            return {"records": 0, "batches": 0, "bytes": 0, "lost": 0, "duplicates": 0, "bad": self.unexpected,
                    "resets": 0, "streams": 0, "position": None, "configured": False}
        s = self._side.state
        out = {k: s[k] for k in ("records", "batches", "bytes", "lost", "duplicates", "bad", "resets",
                                 "streams")}
        out["position"] = s["expected"] if s["have_expected"] else None
        out["configured"] = True
        return out

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Wait until the handshake made the local ring; raises the error that stopped it."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.error is not None:
                raise self.error
            if self._side is not None:
                return True
            time.sleep(0.01)
        return False

    def _setup(self) -> None:
        zmq = self._zmq
        try:
            self._curve = None
            if self.curve_keys:
                if not zmq.has("curve"):
                    raise BridgeError("this libzmq was built without CURVE support")
                server_pub, _ = _load(os.path.join(self.curve_keys, "server.key"), False)
                pub, sec = _load(os.path.join(self.curve_keys, f"{self.curve_client}.key_secret"), True)
                self._curve = (server_pub, pub, sec)
            # The sender's mode is not known before its first message, so both
            # patterns connect; the one the sender does not speak stays silent.
            self._sub = self._connect(zmq.SUB)
            self._sub.setsockopt(zmq.SUBSCRIBE, b"")
            self._dealer = self._connect(zmq.DEALER)
            self._poller = zmq.Poller()
            self._poller.register(self._sub, zmq.POLLIN)
            self._poller.register(self._dealer, zmq.POLLIN)
        except BaseException:
            self._close_all()
            raise

    def _connect(self, stype):
        zmq = self._zmq
        s = self._socket(stype)
        if self._curve is not None:
            s.curve_serverkey, s.curve_publickey, s.curve_secretkey = self._curve
        try:
            s.connect(self.endpoint)
        except zmq.ZMQError as exc:
            s.close(linger=0)
            raise BridgeError(f"cannot connect to {self.endpoint}: {exc}") from None
        return s

    def _close_all(self) -> None:
        for attr in ("_sub", "_dealer"):
            s = getattr(self, attr, None)
            if s is not None:
                s.close(linger=200)
                setattr(self, attr, None)
        self._close_sockets()

    def _teardown(self) -> None:
        if self._side is not None:
            self._side.save()
        if self._prod is not None:
            self._prod.close()  # local consumers see the end; a restarted bridge reopens the stream
            self._prod = None
        self._close_all()
        if self.ring is not None:
            self.ring.close()

    # -- handshake --
    def _configure(self, h: tuple, body: bytes) -> None:
        try:
            d = json.loads(body)
            if not isinstance(d, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            raise _Bad(f"handshake is not valid JSON ({exc})")
        if d.get("proto") != PROTO:
            raise BridgeError(f"sender speaks bridge protocol {d.get('proto')!r}, this one {PROTO}")
        kind = d.get("kind")
        if kind != KIND_NAMES[h[2]]:
            raise _Bad("handshake kind disagrees with its header")
        mode, overflow = d.get("mode"), d.get("overflow")
        if mode not in ("queue", "broadcast") or overflow not in ("block", "overwrite"):
            raise _Bad(f"handshake names mode {mode!r} / overflow {overflow!r}")
        codec = _codec_from_handshake(kind, d)
        if mode not in codec.modes:
            raise _Bad(f"handshake names a {codec} in mode {mode!r}")
        from . import _ring
        if d.get("layout") != _ring.LAYOUT_VERSION:
            raise BridgeError(f"sender's ring has layout version {d.get('layout')!r}, "
                              f"this shmring has {_ring.LAYOUT_VERSION}")
        if self.ring is None:
            ring, created = codec.open_local(self.name, self.capacity, d, mode, overflow)
            why = codec.mismatch(ring, mode, overflow)
            if why is not None:
                ring.close()
                raise BridgeError(why)
            try:
                self._prod = codec.producer(ring)
            except RingError as exc:
                ring.close()
                raise BridgeError(f"cannot produce into local ring {self.name!r}: {exc}") from None
            self.ring = ring
            self.codec = codec
            self.mode = mode
            unused = "_dealer" if mode == "broadcast" else "_sub"
            s = getattr(self, unused)
            self._poller.unregister(s)
            s.close(linger=0)
            setattr(self, unused, None)
            self._head = codec.head(ring)
            side = _Sidecar(self.name, fresh=created)
            self._recover(side)
            side.state["bad"] += self.unexpected
            self.unexpected = 0
            self._stream = side.state["stream"] or None
            self._side = side
            side.save()
        elif not (self.codec.same(codec) and self.mode == mode):
            raise BridgeError(f"sender changed to a {codec}, mode {mode!r} while feeding local ring "
                              f"{self.name!r} (a {self.codec}, mode {self.mode!r})")

    def _recover(self, side: _Sidecar) -> None:
        s = side.state
        if s["wal_count"]:
            landed = min(max(self._head - s["wal_head"], 0), s["wal_count"])
            s["records"] += landed
            s["expected"] += landed
            s["wal_count"] = 0

    # -- broadcast --
    def _on_position(self, h: tuple, data: list | None) -> list | None:
        """Gap/overlap accounting for a batch (or a DESC, which says where the sender is)."""
        s = self._side.state
        source, first = h[5], h[7]
        if s["source"] != source:
            if s["have_expected"]:
                s["resets"] += 1  # another sending ring: positions are not comparable
            s["source"] = source
            s["have_expected"] = 1
            s["expected"] = first
        if h[4] != self._stream:
            self._stream = s["stream"] = h[4]
            s["streams"] += 1
        exp = s["expected"]
        if first > exp:
            s["lost"] += first - exp
            s["expected"] = first
        elif first < exp and data is not None:
            skip = exp - first
            s["duplicates"] += min(skip, h[8])
            data = self.codec.trim(data, skip)
        return data

    def _header_of(self, frames: list, mode: str, wrong_mode: str) -> tuple | None:
        """The header of a message, a DESC already applied; None for a malformed
        message (counted as bad)."""
        h = _parse(frames[0])
        if h is None:
            self._bad()
            return None
        if h[1] == T_DESC:
            if len(frames) != 2:
                self._bad()
                return None
            self._configure(h, frames[1].bytes)
            if self.mode != mode:
                raise BridgeError(wrong_mode)
        return h

    def _broadcast_msg(self, frames: list) -> None:
        h = self._header_of(frames, "broadcast", "sender publishes a queue ring over PUB (protocol error)")
        if h is None:
            return
        if h[1] == T_DESC:
            self._on_position(h, None)
            if h[3] & F_CLOSED and self._side.state["expected"] >= h[7]:
                self._end_stream()
            self._side.save()
            return
        if h[1] != T_DATA or self._side is None:
            if h[1] != T_DATA:
                self._bad()
            return  # data before the handshake: from before we joined
        try:
            data = self.codec.decode(frames[1:], h[8])
        except ValueError:
            self._bad()
            return
        self._reopen()
        data = self._on_position(h, data)
        s = self._side.state
        n = self.codec.data_count(data)
        s["batches"] += 1
        s["bytes"] += self.codec.data_nbytes(data)
        if n:
            s["wal_count"] = n
            s["wal_head"] = self._head
            self._side.save()
            done = self.codec.push(self._prod, data, self._stop, lambda: None)
            self._head += done
            s["records"] += done
            s["expected"] += done
            if done < n:  # stopped mid-batch: the rest is lost to this host
                s["lost"] += n - done
                s["expected"] += n - done
            s["wal_count"] = 0
        self._side.save()

    def _bad(self) -> None:
        if self._side is not None:
            self._side.state["bad"] += 1
        else:
            self.unexpected += 1

    def _reopen(self) -> None:
        if self._prod is None or self._prod.closed:
            self._prod = self.codec.producer(self.ring)
            self.ended = False

    def _end_stream(self) -> None:
        if not self.ended:
            self.ended = True
            self._prod.close()
            if self.once:
                self._stop.set()

    # -- queue --
    def _grant(self, n: int, seq: int = 0, confirm: int = 0) -> None:
        zmq = self._zmq
        try:
            self._dealer.send(_header(T_CREDIT, 0, 0, self._stream or 0, 0, seq, confirm, n),
                              flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # not connected: the sender will resync us

    _owed = 0       # credits earned by batches now in the ring, not yet returned
    _owed_seq = 0   # the last of those batches

    def _confirm(self, seq: int) -> None:
        """A batch is in the ring (or refused and counted): its credit goes back with
        others in one message, once the socket is drained or half the window is owed,
        so the sender never waits on a message per batch."""
        self._owed += 1
        self._owed_seq = seq
        if self._owed * 2 >= self.window:
            self._flush_credit()

    def _flush_credit(self) -> None:
        if self._owed:
            n, self._owed = self._owed, 0
            self._grant(n, self._owed_seq, 1)

    def _queue_msg(self, frames: list) -> None:
        h = self._header_of(frames, "queue", "sender sends a broadcast ring over ROUTER (protocol error)")
        if h is None:
            return
        if h[1] == T_DESC:
            if h[4] != self._granted or h[3] & F_RESYNC:
                # a new sender, a restarted one, one that forgot us, or we restarted
                s = self._side.state
                if h[4] != s["stream"]:
                    s["streams"] += 1
                    s["stream"] = h[4]
                self._granted = h[4]
                self._owed = 0  # owed to the stream before: this one gets a whole window
                self._grant(self.window)
            if h[3] & F_CLOSED:
                self._end_stream()
            self._side.save()
            return
        if h[1] != T_DATA or self._side is None:
            self._bad()
            return
        try:
            data = self.codec.decode(frames[1:], h[8])
        except ValueError:
            self._bad()
            self._confirm(h[6])  # give the credit back: the batch is refused, not lost silently
            return
        self._reopen()
        s = self._side.state
        n = h[8]
        s["wal_count"] = n
        s["wal_head"] = self._head
        self._side.save()
        nbytes = self.codec.data_nbytes(data)
        done = self.codec.push(self._prod, data, self._stop, self._keepalive)
        self._head += done
        s["records"] += done
        s["batches"] += 1
        s["bytes"] += nbytes if done == n else nbytes - self.codec.data_nbytes(self.codec.trim(data, done))
        s["wal_count"] = 0
        self._side.save()
        if done == n:
            self._confirm(h[6])

    def _keepalive(self) -> None:
        self._flush_credit()  # about to wait for room: what is owed goes back first
        now = time.monotonic()
        if now >= self._next_ka:
            self._next_ka = now + self.heartbeat
            self._grant(0)

    _next_ka = 0.0
    _granted = None  # the sender stream this process granted its window to

    def _loop(self) -> None:
        zmq = self._zmq
        next_hello = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self.mode != "broadcast":
                if self._side is None or self.mode is None:
                    if now >= next_hello:
                        next_hello = now + self.heartbeat
                        try:
                            self._dealer.send(_header(T_HELLO, 0, 0, 0, 0, 0, 0, 0), flags=zmq.NOBLOCK)
                        except zmq.ZMQError:
                            pass
                else:
                    self._keepalive()
            events = dict(self._poller.poll(int(min(self.heartbeat, 0.05) * 1000)))
            self._drain("_sub", events, self._broadcast_msg)
            self._drain("_dealer", events, self._queue_msg)
            self._flush_credit()

    def _drain(self, attr: str, events: dict, handle) -> None:
        """Handles every message waiting on the socket named attr; a message may
        replace or drop that socket, so it is looked up again each time."""
        zmq = self._zmq
        sock = getattr(self, attr)
        if sock is None or sock not in events:
            return
        direct = attr == "_sub"
        polled = True  # the poller just saw a message: no need to ask ZMQ_EVENTS for the first
        while not self._stop.is_set() and (sock := getattr(self, attr)) is not None:
            if not polled and not sock.getsockopt(POLLIN_EVENTS) & 1:
                break
            polled = False
            try:
                # the header alone first: a batch of records may then be received
                # straight into the local ring (_into_ring); anything else is taken whole
                first = sock.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            if sock.getsockopt(RCVMORE):
                if self._into_ring(sock, first, direct):
                    continue
                frames = [first]
                while True:
                    frames.append(sock.recv(copy=False))
                    if not sock.getsockopt(RCVMORE):
                        break
            else:
                frames = [first]
            self._guard(handle, frames)
        if self._unsaved:
            self._unsaved = False
            self._side.save()

    def _into_ring(self, sock, hdr: bytes, broadcast: bool) -> bool:
        """A batch of records received straight into room reserved in the local ring:
        ZeroMQ's message is copied once, into the ring, and no frame, array or list
        object is made for it. Taken only in the common case (records, room for the
        whole batch now, contiguous, nothing to trim); False leaves the batch, still
        unread past its header, to the general path."""
        codec = self.codec
        if type(codec) is not _RecordCodec or self._side is None or len(hdr) != HEADER.size:
            return False
        h = HEADER.unpack(hdr)
        if h[0] != MAGIC or h[1] != T_DATA or h[2] != KINDS["records"] or h[8] < 1:
            return False
        s = self._side.state
        if broadcast:
            if self.mode != "broadcast" or s["source"] != h[5] or h[7] < s["expected"]:
                return False  # a new source or records already delivered: the general path sorts them out
        elif self.mode != "queue":
            return False
        prod = self._prod
        if prod is None or prod.closed:
            return False
        n = h[8]
        try:
            res = prod.reserve(n, timeout=0)
        except Full:
            return False  # no room now: the general path waits for it, serving keep-alives
        if len(res) < n:  # the ring wraps inside the batch
            res.__exit__(_Abort, _Abort(), None)
            return False
        want = n * codec.itemsize
        buf = codec.byte_view(res.array)
        got = 0
        more = 1
        recv_into = sock.recv_into
        while more:
            k = recv_into(buf[got:] if got else buf)
            got += k
            more = sock.getsockopt(RCVMORE)
            if got > want:  # truncated: more bytes than the header's count
                break
        if got != want:
            while more:  # the rest of a refused batch is read and dropped
                sock.recv_into(_EMPTY)
                more = sock.getsockopt(RCVMORE)
            res.__exit__(_Abort, _Abort(), None)  # publishes nothing
            self._bad()
            if not broadcast:
                self._confirm(h[6])  # refused, not lost silently: its credit goes back
            return True
        if broadcast:
            self._on_position(h, None)  # a gap before it is counted here
        s["wal_count"] = n
        s["wal_head"] = self._head
        self._side.save()
        res.__exit__(None, None, None)  # publishes the whole batch at once
        self._head += n
        self.direct_batches += 1
        s["records"] += n
        s["batches"] += 1
        s["bytes"] += want
        if broadcast:
            s["expected"] += n
        s["wal_count"] = 0
        # Saved once the socket is drained, not per batch: until then the state on
        # disk names this batch as in flight, and a restart after a kill resolves it
        # against the ring's head (all of it landed), as for any logged batch.
        self._unsaved = True
        if not broadcast:
            self._confirm(h[6])
        return True

    def _guard(self, fn, frames) -> None:
        try:
            fn(frames)
        except _Bad:
            self._bad()


class _Bad(Exception):
    """A message that is not a valid bridge message: counted, never fatal."""


class _Abort(Exception):
    """Ends a reservation without publishing it."""


_EMPTY = bytearray()  # receiving into it discards a frame
RCVMORE = 13  # ZMQ_RCVMORE


# -- command line ----------------------------------------------------------------

def _print_counters(bridge) -> None:
    print(json.dumps(bridge.counters), flush=True)


def cli_main(argv: list[str]) -> int:
    import argparse
    import signal
    import sys

    ap = argparse.ArgumentParser(prog="shmring bridge", description="Bridge rings across hosts over ZeroMQ.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("send", help="forward local ring or shmring.Queue NAME to receivers connecting to ENDPOINT")
    p.add_argument("name")
    p.add_argument("endpoint", help="where to listen, e.g. tcp://0.0.0.0:5555")
    p.add_argument("--start", choices=("latest", "oldest"), default="latest")
    p.add_argument("--max-records", type=int, default=1024)
    p.add_argument("--max-bytes", type=int, default=1 << 20)
    p.add_argument("--flush-delay", type=float, default=100e-6, help="seconds")
    p.add_argument("--hwm", type=int, default=1000, help="messages queued per receiver before drops")
    p.add_argument("--heartbeat", type=float, default=0.5)
    p.add_argument("--peer-timeout", type=float, default=5.0)
    p.add_argument("--hold", type=float, default=5.0,
                   help="broadcast: seconds to wait for a receiver before forwarding to nobody")
    p.add_argument("--lend-hold", type=float, default=1.0,
                   help="broadcast: seconds a receiver may keep a frame lent from the ring before the sender "
                        "drops its connections and copies instead for a while (0: always copy)")
    p.add_argument("--spin", type=float, default=None,
                   help="seconds the sender busy-polls its ring before it sleeps on it (default: the ring's, "
                        "20 us); longer saves an isolated record a wake-up and costs a core while records "
                        "come at least that often")
    p.add_argument("--curve-keys", metavar="DIR")
    p = sub.add_parser("recv", help="feed local ring or shmring.Queue NAME from the sender at ENDPOINT")
    p.add_argument("endpoint")
    p.add_argument("name")
    p.add_argument("--capacity", type=int,
                   help="size of the local ring if it is made here: records, or bytes for a message ring "
                        "or for each lane of a queue (default: the sender's)")
    p.add_argument("--window", type=int, default=32, help="queue rings: batches of credit")
    p.add_argument("--hwm", type=int, default=1000)
    p.add_argument("--heartbeat", type=float, default=0.5)
    p.add_argument("--peer-timeout", type=float, default=5.0)
    p.add_argument("--curve-keys", metavar="DIR")
    p.add_argument("--curve-client", default="client", help="name of this host's key pair in DIR")
    p.add_argument("--once", action="store_true", help="exit when the sending stream closes")
    p = sub.add_parser("keygen", help="make CURVE keys: a server pair and a client pair")
    p.add_argument("dir")
    p.add_argument("--client", default="client")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "keygen":
            made = keygen(args.dir, args.client)
            print(f"server public key {made['server']} (receivers need it), secret "
                  f"{os.path.join(args.dir, 'server.key_secret')} (sender only)")
            print(f"client secret key {made['client']} (receiver {args.client!r} only), authorised in "
                  f"{os.path.join(args.dir, 'authorized_clients')}")
            return 0
        if args.cmd == "send":
            b = Sender(args.name, args.endpoint, start=args.start, max_records=args.max_records,
                       max_bytes=args.max_bytes, flush_delay=args.flush_delay, hwm=args.hwm,
                       heartbeat=args.heartbeat, peer_timeout=args.peer_timeout, hold=args.hold,
                       lend_hold=args.lend_hold, spin=args.spin, curve_keys=args.curve_keys)
        else:
            b = Receiver(args.endpoint, args.name, capacity=args.capacity, window=args.window, hwm=args.hwm,
                         heartbeat=args.heartbeat, peer_timeout=args.peer_timeout, curve_keys=args.curve_keys,
                         curve_client=args.curve_client, once=args.once)
    except (BridgeError, RingError, OSError, ValueError, TypeError, ImportError) as exc:
        print(f"shmring bridge {args.cmd}: {exc}", file=sys.stderr)
        return 2

    def _term(signum, frame):
        b._stop.set()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    try:
        b.run()
    except (BridgeError, RingError, OSError) as exc:
        print(f"shmring bridge {args.cmd}: {exc}", file=sys.stderr)
        _print_counters(b)
        return 2
    _print_counters(b)
    return 0
