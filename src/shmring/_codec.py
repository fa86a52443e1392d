"""How a Python object becomes one message of a message ring, and back.

A message is a kind (a small integer stored in the ring's frame header next to
the body length) and a body of bytes. Encoding is split in two so the producer
can reserve exactly the right number of bytes in the ring and then write the
body straight into it, with one copy per buffer:

    enc = encode(obj)            # sizes everything, copies nothing big
    enc.nbytes                   # body size
    enc.write_into(dest)         # dest: writable buffer of exactly enc.nbytes

Kinds (the body layouts are little-endian; offsets are relative to the body,
whose start is 16-byte aligned in the ring):

BYTES (1)       the bytes themselves. ``bytes``, ``bytearray`` and
                ``memoryview`` arrive as ``bytes`` (a non-contiguous
                memoryview is sent in C order).
ARRAY (2)       a numpy array, never pickled:
                  u8 order ('C' or 'F'), u8 ndim, u16 descriptor length, u32 0,
                  u64 shape[ndim], descriptor text (UTF-8), padding to 16,
                  raw data (C or Fortran order as flagged).
                The descriptor is ``dtype.str`` for plain dtypes and the repr of
                ``numpy.lib.format.dtype_to_descr`` for structured ones; it is
                read back with ``ast.literal_eval`` (never ``eval``), so a
                consumer that refuses pickles can still take arrays safely.
PICKLE (3)      a pickle (protocol 5) with no out-of-band buffer: the stream.
PICKLE_OOB (4)  a pickle whose out-of-band buffers (PEP 574) are written
                beside the stream, never through it:
                  u64 stream length, u64 buffer count n,
                  n x (u64 offset, u64 length), the stream, then each buffer
                  at a 16-byte aligned offset.
PICKLE_ARRAYS (6)  a PICKLE_OOB body (same table, same buffers) whose plain
                arrays are rebuilt without any name being looked up: the
                stream starts with NEXT_BUFFER MEMOIZE POP, so memo entry 0 is
                the first object of ``buffers``, and every such array is
                ``memo[0](buffer, dtype.str, shape)`` (BINGET 0 ... REDUCE).
                A reader unpickles it with ``buffers=[array_from, *the
                message's buffers]``. (Saving the rebuild function by name cost
                a put ~6,400 instructions, an import lookup per message, and
                finding it again a get ~5,600.) The writer's other pickles
                start with NONE MEMOIZE POP instead, which any unpickler reads,
                so their memo indices match the writer's from 1 on.
MARSHAL (5)     plain data in ``marshal`` format version 2 (read by every
                Python 3): None, bools, and exact ints, floats, complex
                numbers, str and bytes, in exact tuples, lists, dicts, sets and
                frozensets, at most 8 deep, 1024 items and 16 lists, dicts and
                sets in all, none of those reached twice (version 2 has no
                references: a shared list would arrive as two; such objects are
                pickled, which keeps them one). Taken for plain data because it
                costs less than half a pickle on each side (a tuple of an int, a
                float and a short str: 0.10 us to write, 0.12 us to read, against
                0.23 and 0.20 us). Subclasses (named tuples, enums) are pickled,
                so their type is kept. A consumer that refuses pickles refuses
                these too (``marshal`` is not meant for untrusted data either).

Anything that is not a bytes-like or a plain ndarray is pickled, including
ndarray subclasses (to keep their type) and arrays of dtype ``object``: those
cannot be sent as raw memory (their items are pointers), so they are pickled
in-band and need a consumer that allows pickles.

Decoding takes a memoryview of the body. ``copy=True`` (pop) returns objects
that own their memory; ``copy=False`` (view) returns read-only views of the
body for every buffer (the bytes, the array, the arrays inside an object),
valid only as long as the caller keeps the body valid.
"""

from __future__ import annotations

import ast
import marshal
import pickle
import struct
from typing import Any, Callable

import numpy as np
from numpy.lib.format import descr_to_dtype, dtype_to_descr

from .errors import CorruptMessageError, PickleRefusedError

BYTES = 1
ARRAY = 2
PICKLE = 3
PICKLE_OOB = 4
MARSHAL = 5
PICKLE_ARRAYS = 6
KIND_NAMES = {BYTES: "bytes", ARRAY: "array", PICKLE: "pickle", PICKLE_OOB: "pickle", MARSHAL: "marshal",
              PICKLE_ARRAYS: "pickle"}
# What the compiled pickler puts before its stream (see PICKLE_ARRAYS): memo
# entry 0 is the reader's rebuild function, or None when no array needs it.
PRELUDE_REBUILD = b"\x97\x940"  # NEXT_BUFFER MEMOIZE POP
PRELUDE_NONE = b"N\x940"  # NONE MEMOIZE POP
MARSHAL_VERSION = 2

ALIGN = 16  # the largest alignment numpy asks of any dtype (complex long double)
MAX_NDIM = 64  # numpy's own limit (NPY_MAXDIMS in numpy 2)

_ARRAY_HEAD = struct.Struct("<BBHI")
_OOB_HEAD = struct.Struct("<QQ")
_OOB_ENTRY = struct.Struct("<QQ")
_ORDER_C = ord("C")
_ORDER_F = ord("F")


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


# -- dtype descriptors ---------------------------------------------------------

_descr_of: dict[np.dtype, bytes] = {}
_dtype_of: dict[bytes, np.dtype] = {}
_CACHE_MAX = 512  # distinct dtypes remembered per process; a bound, not a tuning knob


def _descr(dt: np.dtype) -> bytes:
    d = _descr_of.get(dt)
    if d is None:
        if dt.fields is None and dt.subdtype is None:
            d = dt.str.encode("ascii")
        else:
            d = repr(dtype_to_descr(dt)).encode("utf-8")  # field names may be any str
        if len(d) > 0xFFFF:
            raise ValueError(f"dtype {dt} is too complex to send ({len(d)} bytes of descriptor, at most 65535)")
        if len(_descr_of) >= _CACHE_MAX:
            _descr_of.clear()
        _descr_of[dt] = d
    return d


def _dtype(text: bytes) -> np.dtype:
    dt = _dtype_of.get(text)
    if dt is None:
        try:
            s = text.decode("utf-8")
            dt = np.dtype(s) if not s.startswith(("[", "(", "{")) else descr_to_dtype(ast.literal_eval(s))
        except Exception as exc:  # malformed text is a corrupt message, never a crash
            raise CorruptMessageError(f"array message has a corrupt dtype descriptor ({exc!r})") from None
        if dt.hasobject:
            # never built by encode(): an object dtype over raw bytes would be pointers
            raise CorruptMessageError(f"array message claims dtype {dt}, which holds Python objects")
        if len(_dtype_of) >= _CACHE_MAX:
            _dtype_of.clear()
        _dtype_of[bytes(text)] = dt
    return dt


# -- encoding ------------------------------------------------------------------


class Encoded:
    """A sized message, ready to be written: ``kind``, ``nbytes`` and ``write_into``."""

    __slots__ = ("kind", "nbytes", "_write", "_arg")

    def __init__(self, kind: int, nbytes: int, write: Callable[[memoryview, Any], None], arg: Any) -> None:
        self.kind = kind
        self.nbytes = nbytes
        self._write = write
        self._arg = arg

    def parts(self) -> list | None:
        """(offset, contiguous buffer) pairs that together are the body, for a
        writer that copies each with one memcpy; None when the body must be
        written by write_into (a strided array is copied into its new layout)."""
        k, a = self.kind, self._arg
        if k == BYTES or k == PICKLE or k == MARSHAL:
            return [(0, a)]
        if k == ARRAY:
            head, off, arr, order = a
            return [(0, head), (off, arr)] if order == "K" else None
        stream, raws, offsets = a
        head = bytearray(_OOB_HEAD.pack(len(stream), len(raws)))
        for raw, o in zip(raws, offsets):
            head += _OOB_ENTRY.pack(o, raw.nbytes)
        head += stream
        return [(0, head)] + list(zip(offsets, raws))

    def write_into(self, dest: Any) -> None:
        """Write the body into ``dest``, a writable buffer of exactly ``nbytes`` bytes."""
        mv = dest if type(dest) is memoryview else memoryview(dest)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        if mv.nbytes != self.nbytes:
            raise ValueError(f"destination holds {mv.nbytes} bytes, the message needs {self.nbytes}")
        self._write(mv, self._arg)

    def __repr__(self) -> str:
        return f"<Encoded {KIND_NAMES.get(self.kind, self.kind)} {self.nbytes} bytes>"


def _write_bytes(dest: memoryview, src: Any) -> None:
    dest[:] = src


def _write_array(dest: memoryview, arg: tuple) -> None:
    head, off, arr, order = arg
    dest[: len(head)] = head
    if arr.nbytes == 0:
        return
    if order == "K":  # already contiguous: one memcpy of the raw bytes
        dest[off:] = arr.reshape(-1, order="A").view(np.uint8) if arr.ndim else arr.reshape(1).view(np.uint8)
    else:  # copy the strided input straight into place in its new layout
        out = np.ndarray(arr.shape, arr.dtype, buffer=dest, offset=off, order=order)
        np.copyto(out, arr, casting="no")


def _array_plan(arr: np.ndarray) -> Encoded:
    dt = arr.dtype
    descr = _descr(dt)
    ndim = arr.ndim
    if arr.flags.c_contiguous:
        flag, order = _ORDER_C, "K"
    elif arr.flags.f_contiguous:
        flag, order = _ORDER_F, "K"
    else:
        flag, order = _ORDER_C, "C"
    head = bytearray(_ARRAY_HEAD.pack(flag, ndim, len(descr), 0))
    if ndim:
        head += struct.pack(f"<{ndim}Q", *arr.shape)
    head += descr
    off = _align(len(head))
    return Encoded(ARRAY, off + arr.nbytes, _write_array, (head, off, arr, order))


def _write_oob(dest: memoryview, arg: tuple) -> None:
    stream, raws, offsets = arg
    n = len(raws)
    _OOB_HEAD.pack_into(dest, 0, len(stream), n)
    pos = _OOB_HEAD.size
    for raw, o in zip(raws, offsets):
        _OOB_ENTRY.pack_into(dest, pos, o, raw.nbytes)
        pos += _OOB_ENTRY.size
    dest[pos : pos + len(stream)] = stream
    for raw, o in zip(raws, offsets):
        dest[o : o + raw.nbytes] = raw


# -- pickling --------------------------------------------------------------------
#
# numpy's own reduction of an array pickles its dtype as an object (a global, a
# constructor call and a state tuple) and looks up a module-level rebuild
# function: for a dict holding one 64 KiB array that is 7 us of a 9 us put. The
# compiled module's pickler reduces a plain C-contiguous array to (array_from,
# (buffer, dtype.str, shape)) instead, the buffer still out of band, and is
# kept per producer handle and per thread and reused (a new Pickler per call
# costs about as much as a small tuple's whole pickle). Arrays it does not know
# how to rebuild exactly (other dtypes, metadata, other memory orders,
# subclasses) keep numpy's reduction.

SIMPLE_KINDS = frozenset("biufcmMSU")  # dtypes that ``dtype.str`` names exactly
_array_dtypes: dict = {}


def array_from(buf: Any, descr: str, shape: tuple) -> np.ndarray:
    """The array a fast-reduced one became (a pickle's rebuild function; the
    reduction is ``_reduce_array`` in the compiled module)."""
    dt = _array_dtypes.get(descr)
    if dt is None:
        dt = np.dtype(descr)
        if len(_array_dtypes) < _CACHE_MAX:
            _array_dtypes[descr] = dt
    a = np.frombuffer(buf, dt)
    return a if len(shape) == 1 else a.reshape(shape)


class _Pickler(pickle.Pickler):
    __slots__ = ()


class _Sink:
    """What a reused pickler writes to: its chunks, kept as the pickler made them
    (usually one bytes object per dump, so nothing is copied out of a buffer)."""

    __slots__ = ("write",)

    def __init__(self, write: Callable) -> None:
        self.write = write


def dumps(obj: Any) -> tuple:
    """(pickle stream, [PickleBuffer, ...] or ()): ``obj`` pickled with protocol
    5, arrays inside it out of band, through the compiled module's reused
    pickler (one per thread). The stream starts with PRELUDE_NONE or
    PRELUDE_REBUILD (see PICKLE_ARRAYS): ``loads`` reads either."""
    from ._ring import pickle_dumps

    return pickle_dumps(obj)


def loads(stream: Any, buffers: Any = ()) -> Any:
    """The object a stream from ``dumps`` holds, ``buffers`` its out-of-band buffers."""
    if bytes(stream[:3]) == PRELUDE_REBUILD:
        return pickle.loads(stream, buffers=[array_from, *buffers])
    return pickle.loads(stream, buffers=buffers)


def marshal_loads(body: Any) -> Any:
    """The object a MARSHAL body holds; a body marshal cannot read is corrupt."""
    try:
        return marshal.loads(body)
    except (EOFError, ValueError, TypeError) as exc:
        raise CorruptMessageError(f"marshal message of {len(body)} bytes is corrupt: {exc}") from None


def _pickle_plan(obj: Any) -> Encoded:
    return pickled(*dumps(obj))


def pickled(stream: bytes, pbs: list) -> Encoded:
    """The message for a pickle stream already made with ``buffer_callback=pbs.append``
    (one that starts with PRELUDE_REBUILD is a PICKLE_ARRAYS message)."""
    rebuild = stream[:3] == PRELUDE_REBUILD
    if not pbs and not rebuild:
        return Encoded(PICKLE, len(stream), _write_bytes, stream)
    # pickle itself refuses a PickleBuffer over non-contiguous memory, so raw() cannot fail
    bufs = [pb.raw() for pb in pbs]
    pos = _OOB_HEAD.size + _OOB_ENTRY.size * len(bufs) + len(stream)
    offsets = []
    for raw in bufs:
        pos = _align(pos)
        offsets.append(pos)
        pos += raw.nbytes
    return Encoded(PICKLE_ARRAYS if rebuild else PICKLE_OOB, pos, _write_oob, (stream, bufs, offsets))


def encode(obj: Any) -> Encoded:
    """Size ``obj`` as a message; nothing big is copied until ``write_into``.

    Raises what pickle raises for an object it cannot pickle (before anything is
    written anywhere)."""
    t = type(obj)
    if t is bytes:
        return Encoded(BYTES, len(obj), _write_bytes, obj)
    if t is bytearray or t is memoryview:
        mv = memoryview(obj)
        if not mv.c_contiguous:
            mv = memoryview(mv.tobytes())
        elif mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        return Encoded(BYTES, mv.nbytes, _write_bytes, mv)
    if t is np.ndarray and not obj.dtype.hasobject:
        return _array_plan(obj)
    from ._ring import marshal_dumps

    body = marshal_dumps(obj)
    if body is not None:
        return Encoded(MARSHAL, len(body), _write_bytes, body)
    return _pickle_plan(obj)


def encode_bytes(obj: Any) -> bytes:
    """The whole body as one ``bytes`` object (for tests and small tools)."""
    enc = encode(obj)
    out = bytearray(enc.nbytes)
    enc.write_into(out)
    return bytes(out)


# -- decoding ------------------------------------------------------------------


def array_meta(body: Any) -> tuple:
    """(dtype, shape, order, data offset) of an array message, checked against its size."""
    body = body if type(body) is memoryview else memoryview(body)
    n = len(body)
    if n < _ARRAY_HEAD.size:
        raise CorruptMessageError(f"array message of {n} bytes is shorter than its header")
    flag, ndim, dlen, _ = _ARRAY_HEAD.unpack_from(body, 0)
    if flag not in (_ORDER_C, _ORDER_F) or ndim > MAX_NDIM:
        raise CorruptMessageError(f"array message has a corrupt header (order {flag}, ndim {ndim})")
    pos = _ARRAY_HEAD.size
    shape = struct.unpack_from(f"<{ndim}Q", body, pos) if ndim else ()
    pos += 8 * ndim
    if pos + dlen > n:
        raise CorruptMessageError("array message is shorter than its descriptor")
    dt = _dtype(bytes(body[pos : pos + dlen]))
    off = _align(pos + dlen)
    count = 1
    for s in shape:
        count *= s
    if off + count * dt.itemsize != n:
        raise CorruptMessageError(
            f"array message of {n} bytes does not hold shape {tuple(shape)} of {dt} after a {off}-byte header")
    return dt, shape, "F" if flag == _ORDER_F else "C", off


def oob_table(body: Any) -> tuple:
    """(stream offset, stream length, [(offset, length) of each buffer]) of a
    PICKLE_OOB message, checked against its size."""
    body = body if type(body) is memoryview else memoryview(body)
    n = len(body)
    if n < _OOB_HEAD.size:
        raise CorruptMessageError(f"pickle message of {n} bytes is shorter than its header")
    slen, nbuf = _OOB_HEAD.unpack_from(body, 0)
    pos = _OOB_HEAD.size
    if nbuf > (n - pos) // _OOB_ENTRY.size or pos + nbuf * _OOB_ENTRY.size + slen > n:
        raise CorruptMessageError("pickle message has a corrupt buffer table")
    table = []
    for _ in range(nbuf):
        o, ln = _OOB_ENTRY.unpack_from(body, pos)
        pos += _OOB_ENTRY.size
        if o > n or ln > n - o:
            raise CorruptMessageError(f"pickle message buffer [{o}, {o + ln}) lies outside its {n} bytes")
        table.append((o, ln))
    return pos, slen, table


def _decode_array(body: memoryview, copy: bool) -> np.ndarray:
    dt, shape, order, off = array_meta(body)
    if copy:
        out = np.empty(shape, dt, order=order)
        if out.nbytes:
            # one copy, straight from the body into the new array's memory
            out.reshape(-1, order="A").view(np.uint8)[:] = np.frombuffer(body, np.uint8, out.nbytes, off)
        return out
    return np.ndarray(shape, dt, buffer=body, offset=off, order=order)


def _decode_oob(body: memoryview, copy: bool, src: memoryview, rebuild: bool) -> Any:
    pos, slen, table = oob_table(body)
    bufs = [bytearray(src[o : o + ln]) if copy else src[o : o + ln] for o, ln in table]
    if rebuild:
        if bytes(body[pos : pos + 3]) != PRELUDE_REBUILD:
            raise CorruptMessageError("pickle message with rebuilt arrays does not start with its prelude")
        bufs.insert(0, array_from)
    return pickle.loads(body[pos : pos + slen], buffers=bufs)


def decode(kind: int, body: Any, *, copy: bool = True, allow_pickle: bool = True,
           buffers_from: Any = None) -> Any:
    """The object a message holds. ``body``: a buffer of exactly the body's bytes.

    ``copy=False`` returns views of ``body`` for every buffer in the message;
    pass a read-only ``body`` to get read-only views. ``buffers_from``: another
    buffer with the same bytes to take a pickle's out-of-band buffers from (a
    reader that copied the stream to check it, keeping the buffers as views)."""
    mv = body if type(body) is memoryview else memoryview(body)
    if kind == BYTES:
        return bytes(mv) if copy else mv
    if kind == ARRAY:
        return _decode_array(mv, copy)
    if kind == PICKLE or kind == PICKLE_OOB or kind == MARSHAL or kind == PICKLE_ARRAYS:
        if not allow_pickle:
            raise PickleRefusedError(
                "refused a pickled message: this consumer was opened with allow_pickle=False "
                "(bytes and numpy arrays still arrive; anything else is sent pickled)")
        if kind == PICKLE:
            return pickle.loads(mv)
        if kind == MARSHAL:
            return marshal_loads(mv)
        src = mv if buffers_from is None else memoryview(buffers_from)
        if len(src) != len(mv):
            raise ValueError("buffers_from must hold as many bytes as the body")
        return _decode_oob(mv, copy, src, kind == PICKLE_ARRAYS)
    raise CorruptMessageError(f"unknown message kind {kind}")
