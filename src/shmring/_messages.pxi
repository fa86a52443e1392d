# Message rings: producer and consumer handles (included into _ring.pyx, so
# they share _Handle, Mapping, _raise and the waiting helpers).
#
# The framing lives in csrc/messages.c; what a body holds is shmring._codec.
# Hot paths (bytes in and out) stay in C calls; arrays and pickles go through
# the codec, which writes straight into the ring and reads straight out of it.

from cpython.buffer cimport PyBUF_ANY_CONTIGUOUS, PyBUF_WRITABLE, PyBuffer_FillInfo
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcmp, memcpy

import copyreg
import pickle
import threading
from pickle import loads as _pickle_loads

from shmring import _codec
from shmring.errors import CorruptMessageError, PickleRefusedError

cdef uint32_t K_BYTES = _codec.BYTES
cdef uint32_t K_PICKLE = _codec.PICKLE
cdef uint32_t K_ARRAY = _codec.ARRAY
cdef uint32_t K_PICKLE_OOB = _codec.PICKLE_OOB
cdef uint32_t K_PICKLE_ARRAYS = _codec.PICKLE_ARRAYS
cdef bytes PRELUDE_REBUILD = _codec.PRELUDE_REBUILD
cdef bytes PRELUDE_NONE = _codec.PRELUDE_NONE

DEF OOB_FAST_BUFS = 8  # out-of-band buffers a pickle may have and still be written without the codec

KIND_RECORDS = SHMR_KIND_RECORDS
KIND_MESSAGES = SHMR_KIND_MESSAGES
MSG_UNIT = SHMR_MSG_UNIT

DEF MSG_BATCH = 256   # messages claimed per call by pop_many

# A batch of undecoded messages (the bridge's wire form): one uint64 per message,
# body length in the low 55 bits, RAW_OWN when the body travels in a frame of its
# own (else it lies in the packed frame, after those before it), kind in the top 8.
cdef uint64_t RAW_OWN = (<uint64_t>1) << 55
cdef uint64_t RAW_LEN = RAW_OWN - 1
RAW_OWN_BIT = RAW_OWN


cdef inline uint64_t _raw_entry(const char *table, Py_ssize_t i) noexcept nogil:
    """Entry i of a message table: a view of a received frame, at whatever alignment
    the frame has, so read as bytes (a uint64 load from it would be undefined)."""
    cdef uint64_t e
    memcpy(&e, table + i * <Py_ssize_t>sizeof(uint64_t), sizeof(uint64_t))
    return e


def raw_check(table, Py_ssize_t packed_len, owns, kinds=frozenset(_codec.KIND_NAMES)):
    """None if a batch in the bridge's wire form is whole (every body where its
    table entry says, every kind one the codec knows), else what is wrong."""
    cdef const uint64_t[::1] t = table
    cdef Py_ssize_t n = t.shape[0], i, oi = 0, no = len(owns)
    cdef uint64_t small = 0, e, ln
    cdef const char *tp = <const char *>&t[0] if n else NULL
    for i in range(n):
        e = _raw_entry(tp, i)
        ln = e & RAW_LEN
        if (e >> 56) not in kinds:
            return f"message {i} has kind {e >> 56}, which no shmring codec writes"
        if e & RAW_OWN:
            if oi >= no:
                return f"message {i} should travel in a frame of its own; the batch has only {no}"
            if len(owns[oi]) != ln:
                return f"message {i} is {ln} bytes, its frame {len(owns[oi])}"
            oi += 1
        else:
            small += ln
            if small > <uint64_t>packed_len:
                return f"the packed bodies need more than the {packed_len} bytes sent"
    if small != <uint64_t>packed_len:
        return f"the packed bodies are {small} bytes, the frame {packed_len}"
    if oi != no:
        return f"{no} body frames for {oi} messages that travel in their own"
    return None


cdef object _too_large(uint64_t n, uint64_t limit):
    return ValueError(
        f"a message of {n} bytes can never fit this ring: at most {limit} bytes per message "
        f"(half the ring less a 32-byte frame header: every message is contiguous, and one that "
        f"does not fit before the end of the ring starts again at its beginning)")


@cython.final
cdef class _Span:
    """A window of ring memory exporting the buffer protocol; holds the mapping,
    so a memoryview or array over it can never point at unmapped memory."""
    cdef Mapping _map
    cdef char *_ptr
    cdef Py_ssize_t _len
    cdef bint _readonly

    def __getbuffer__(self, Py_buffer *buf, int flags):
        if (flags & PyBUF_WRITABLE) and self._readonly:
            raise BufferError("this view of a message is read-only")
        PyBuffer_FillInfo(buf, self, self._ptr, self._len, self._readonly, flags)

    def __releasebuffer__(self, Py_buffer *buf):
        pass


cdef inline _Span _raw_span(Mapping m, const void *ptr, uint64_t n, bint readonly):
    cdef _Span s = _Span.__new__(_Span)
    s._map = m
    s._ptr = <char *>ptr
    s._len = <Py_ssize_t>n
    s._readonly = readonly
    return s


cdef inline object _span(Mapping m, const void *ptr, uint64_t n, bint readonly):
    return memoryview(_raw_span(m, ptr, n, readonly))


cdef tuple _raw_batch(Mapping m, const shmr_msg *msgs, int64_t n, uint64_t own_from, bint copy_owns):
    """The bridge's wire form of n claimed messages: (table, packed, owns) as
    MessageConsumer._claim_raw documents it. ``copy_owns``: the large bodies are
    copied into bytes (the claim may end at once) instead of viewed in the ring."""
    cdef int64_t i
    cdef uint64_t total = 0, at = 0, ln
    cdef cnp.ndarray table = np.empty(n, np.uint64)
    cdef uint64_t *t = <uint64_t *>cnp.PyArray_DATA(table)
    cdef char *dst
    owns = []
    for i in range(n):
        ln = msgs[i].len
        if ln >= own_from:
            t[i] = ln | RAW_OWN | (<uint64_t>msgs[i].kind << 56)
            if copy_owns:
                owns.append(PyBytes_FromStringAndSize(<const char *>msgs[i].body, <Py_ssize_t>ln))
            else:
                owns.append(_span(m, msgs[i].body, ln, True))
        else:
            t[i] = ln | (<uint64_t>msgs[i].kind << 56)
            total += ln
    packed = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>total)
    dst = PyBytes_AS_STRING(packed)
    for i in range(n):
        ln = msgs[i].len
        if ln < own_from:
            memcpy(dst + at, msgs[i].body, ln)
            at += ln
    return table, packed, owns


cdef object _buffer_copy(const char *src, Py_ssize_t n):
    """A bytearray holding a copy of n bytes (an out-of-band buffer for
    pickle.loads: arrays rebuilt over it are writable and own their memory);
    large ones copied without the GIL, so other threads run meanwhile."""
    cdef object out = PyByteArray_FromStringAndSize(NULL, n)
    cdef char *dst = PyByteArray_AS_STRING(out)
    if n >= NOGIL_BYTES:
        with nogil:
            memcpy(dst, src, n)
    elif n:
        memcpy(dst, src, n)
    return out


cdef dict _rebuild_dtypes = {}


@cython.final
cdef class _ArrayRebuild:
    """What a PICKLE_ARRAYS stream calls to rebuild each plain array (memo entry
    0: shmring._codec, PICKLE_ARRAYS), as shmring._codec.array_from does. The
    pickler finds this object in its memo, never by name; no user object can
    be it (it is not reachable from Python), so a stream that never needs it
    may say PRELUDE_NONE."""

    def __call__(self, buf, descr, shape):
        dt = _rebuild_dtypes.get(descr)
        if dt is None:
            dt = np.dtype(descr)
            if len(_rebuild_dtypes) < 512:  # a bound, not a tuning knob
                _rebuild_dtypes[descr] = dt
        a = np.frombuffer(buf, dt)
        return a if len(shape) == 1 else a.reshape(shape)


cdef object _REBUILD = _ArrayRebuild()
cdef uint64_t _rebuilt = 0  # fast reductions made, by every pickler of the process


cdef object _copy_out(Mapping mp, uint32_t kind, const char *body, uint64_t n, bint allow_pickle):
    """A decoded copy of a body: every buffer copied once with memcpy (without
    the GIL when large) into memory the result owns."""
    cdef char *dst
    cdef uint64_t nb, at
    span = _span(mp, body, n, True)
    if kind == K_ARRAY:
        dt, shape, order, off = _codec.array_meta(span)
        out = np.empty(shape, dt, order=order)
        nb = out.nbytes
        at = off
        dst = <char *>cnp.PyArray_DATA(out)
        if nb >= NOGIL_BYTES:
            with nogil:
                memcpy(dst, body + at, nb)
        elif nb:
            memcpy(dst, body + at, nb)
        return out
    if (kind == K_PICKLE_OOB or kind == K_PICKLE_ARRAYS) and allow_pickle:
        return _oob_copy(mp, body, n, kind == K_PICKLE_ARRAYS)
    return _codec.decode(kind, span, copy=True, allow_pickle=allow_pickle)


cdef object _oob_copy(Mapping mp, const char *body, uint64_t n, bint rebuild):
    """A PICKLE_OOB or PICKLE_ARRAYS body unpickled over copies of its buffers,
    its table read here with the checks of shmring._codec.oob_table (the
    interpreted reader cost a get of a dict holding a 64 KiB array a third of
    what it spent besides the copy)."""
    cdef uint64_t head[2]
    cdef uint64_t entry[2]
    cdef uint64_t slen, nbuf, pos, i
    if n < 16:
        raise CorruptMessageError(f"pickle message of {n} bytes is shorter than its header")
    memcpy(head, body, 16)  # little-endian u64s (see MessageProducer._push_oob)
    slen = head[0]
    nbuf = head[1]
    pos = 16
    if nbuf > (n - pos) // 16 or slen > n - pos - nbuf * 16:
        raise CorruptMessageError("pickle message has a corrupt buffer table")
    bufs = []
    if rebuild:
        # the stream's first NEXT_BUFFER is the rebuild function (shmring._codec, PICKLE_ARRAYS)
        if slen < 3 or memcmp(body + pos + 16 * nbuf, PyBytes_AS_STRING(PRELUDE_REBUILD), 3) != 0:
            raise CorruptMessageError("pickle message with rebuilt arrays does not start with its prelude")
        bufs.append(_REBUILD)
    for i in range(nbuf):
        memcpy(entry, body + pos, 16)
        pos += 16
        if entry[0] > n or entry[1] > n - entry[0]:
            raise CorruptMessageError(
                f"pickle message buffer [{entry[0]}, {entry[0] + entry[1]}) lies outside its {n} bytes")
        bufs.append(_buffer_copy(body + entry[0], <Py_ssize_t>entry[1]))
    return _pickle_loads(_raw_span(mp, body + pos, slen, True), buffers=bufs)


# ---- producer ---------------------------------------------------------------

# ---- marshal and pickle -------------------------------------------------------

cdef extern from "marshal.h":
    object PyMarshal_WriteObjectToString(object, int)
    object PyMarshal_ReadObjectFromString(const char *, Py_ssize_t)

cdef uint32_t K_MARSHAL = _codec.MARSHAL
cdef int MARSHAL_VERSION = _codec.MARSHAL_VERSION
DEF MARSHAL_DEPTH = 8
DEF MARSHAL_ITEMS = 1024
DEF MARSHAL_MUTABLES = 16


cdef struct _PlainWalk:
    Py_ssize_t budget                   # items left to look at
    int nmut                            # mutable containers seen
    void *mut[MARSHAL_MUTABLES]


cdef bint _plain(object o, int depth, _PlainWalk *w) noexcept:
    """Whether o is plain data marshal writes and reads back as it was
    (shmring._codec, MARSHAL): exact builtin types only, bounded in depth and
    size (a big container is pickled, which costs no more per item), and no
    list, dict or set reached twice: marshal's version 2 has no references, so
    a shared one would come back as two (pickle keeps it one)."""
    cdef type t = type(o)
    cdef int i
    w.budget -= 1
    if w.budget < 0:
        return False
    if t is int or t is float or t is str or t is bool or o is None or t is bytes or t is complex:
        return True
    if depth == 0:
        return False
    if t is tuple or t is frozenset:
        for x in o:
            if not _plain(x, depth - 1, w):
                return False
        return True
    if t is list or t is dict or t is set:
        for i in range(w.nmut):
            if w.mut[i] == <void *>o:
                return False
        if w.nmut == MARSHAL_MUTABLES:
            return False
        w.mut[w.nmut] = <void *>o
        w.nmut += 1
        if t is dict:
            for k, v in (<dict>o).items():
                if not _plain(k, depth - 1, w) or not _plain(v, depth - 1, w):
                    return False
            return True
        for x in o:
            if not _plain(x, depth - 1, w):
                return False
        return True
    return False


cdef inline object _marshal_plain(object o):
    """o in marshal format, or None when o is not plain data."""
    cdef _PlainWalk w
    w.budget = MARSHAL_ITEMS
    w.nmut = 0
    if not _plain(o, MARSHAL_DEPTH, &w):
        return None
    return PyMarshal_WriteObjectToString(o, MARSHAL_VERSION)


def marshal_dumps(obj):
    """obj in marshal format when it is plain data (shmring._codec, MARSHAL), else None."""
    return _marshal_plain(obj)


# ---- small records: marshal's own bytes, written and read without marshal ------
#
# The commonest queue item is a short tuple of scalars ((seq, value, "name")).
# PyMarshal_WriteObjectToString spends most of a put on it (a bytes object
# grown and shrunk, a generic walk: 1,300 of 2,700 instructions) and
# PyMarshal_ReadObjectFromString half a get (a list of references made and
# dropped, an audit hook: 1,040 of 2,020). For a tuple of at most SMALL_ITEMS
# of None, bool, int of 32 bits, float, ASCII str or bytes (or one such scalar)
# the marshal bytes are written straight into the ring and read straight back;
# they are exactly what marshal.dumps(obj, 2) gives (a test compares), so the
# message stays kind MARSHAL and every reader reads it. Anything else (and any
# body this reader does not recognise) goes through marshal as before.

DEF SMALL_ITEMS = 16

cdef extern from "Python.h":
    object PyPickleBuffer_FromObject(object)
    long PyLong_AsLongAndOverflow(object, int *)
    bint PyUnicode_IS_ASCII(object)
    void *PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    object PyUnicode_DecodeUTF8(const char *, Py_ssize_t, const char *)
    object PyUnicode_New(Py_ssize_t, Py_UCS4)
    object PyLong_FromLong(long)
    object PyFloat_FromDouble(double)
    double PyFloat_AS_DOUBLE(object)
    object PyTuple_New(Py_ssize_t)
    void PyTuple_SET_ITEM(object, Py_ssize_t, object)
    Py_ssize_t PyTuple_GET_SIZE(object)
    PyObject *PyTuple_GET_ITEM(object, Py_ssize_t)

cdef bint _SMALL_OK = MARSHAL_VERSION == 2  # the format below is version 2's
cdef object _NDARRAY = np.ndarray  # read once: a module attribute costs a lookup per put


cdef inline Py_ssize_t _small_scalar_size(object x) noexcept:
    """Bytes of x in marshal v2 if this writer handles it, else -1."""
    cdef type t = type(x)
    cdef int overflow = 0
    cdef long v
    if x is None or t is bool:
        return 1
    if t is int:
        v = PyLong_AsLongAndOverflow(x, &overflow)  # no error for an exact int
        return 5 if not overflow and -2147483648 <= v <= 2147483647 else -1
    if t is float:
        return 9
    if t is str:
        return 5 + PyUnicode_GET_LENGTH(x) if PyUnicode_IS_ASCII(x) else -1
    if t is bytes:
        return 5 + PyBytes_GET_SIZE(x)
    return -1


cdef Py_ssize_t _small_size(object o) noexcept:
    """Bytes of o in marshal v2 if it is a small record this writer handles, else -1."""
    cdef Py_ssize_t n, k, i, s
    if not _SMALL_OK:
        return -1
    if type(o) is not tuple:
        return _small_scalar_size(o)
    k = PyTuple_GET_SIZE(o)
    if k > SMALL_ITEMS:
        return -1
    n = 5
    for i in range(k):
        s = _small_scalar_size(<object>PyTuple_GET_ITEM(o, i))
        if s < 0:
            return -1
        n += s
    if n > 0x7fffffff:
        return -1
    return n


cdef inline char *_put_i32(char *p, int32_t v) noexcept:
    cdef uint32_t u = <uint32_t>v
    p[0] = <char>(u & 0xff)
    p[1] = <char>((u >> 8) & 0xff)
    p[2] = <char>((u >> 16) & 0xff)
    p[3] = <char>(u >> 24)
    return p + 4


cdef char *_small_scalar_write(object x, char *p) noexcept:
    """x as marshal v2 writes it (x passed _small_scalar_size)."""
    cdef type t = type(x)
    cdef int overflow = 0
    cdef double d
    cdef Py_ssize_t n
    if x is None:
        p[0] = b'N'
        return p + 1
    if t is bool:
        p[0] = b'T' if x is True else b'F'
        return p + 1
    if t is int:
        p[0] = b'i'
        return _put_i32(p + 1, <int32_t>PyLong_AsLongAndOverflow(x, &overflow))
    if t is float:
        p[0] = b'g'
        d = PyFloat_AS_DOUBLE(x)
        memcpy(p + 1, &d, 8)  # little-endian IEEE 754, as PyFloat_Pack8(x, p, 1) on this host
        return p + 9
    if t is str:
        n = PyUnicode_GET_LENGTH(x)
        p[0] = b'u'  # version 2 has no short ASCII form: UTF-8, which ASCII already is
        p = _put_i32(p + 1, <int32_t>n)
        memcpy(p, PyUnicode_DATA(x), n)
        return p + n
    n = PyBytes_GET_SIZE(x)
    p[0] = b's'
    p = _put_i32(p + 1, <int32_t>n)
    memcpy(p, PyBytes_AS_STRING(x), n)
    return p + n


cdef void _small_write(object o, char *p) noexcept:
    cdef Py_ssize_t k, i
    if type(o) is not tuple:
        _small_scalar_write(o, p)
        return
    k = PyTuple_GET_SIZE(o)
    p[0] = b'('
    p = _put_i32(p + 1, <int32_t>k)
    for i in range(k):
        p = _small_scalar_write(<object>PyTuple_GET_ITEM(o, i), p)


def small_dumps(obj):
    """obj in marshal format as the small-record writer writes it, or None when
    that writer does not take it (tests compare it with marshal.dumps)."""
    cdef Py_ssize_t n = _small_size(obj)
    if n < 0:
        return None
    out = PyBytes_FromStringAndSize(NULL, n)
    _small_write(obj, PyBytes_AS_STRING(out))
    return out


cdef inline int32_t _get_i32(const unsigned char *p) noexcept:
    return <int32_t>(<uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24))


cdef object _small_scalar_read(const unsigned char *b, Py_ssize_t n, Py_ssize_t *pos):
    """The scalar at b[*pos] (advancing *pos), or _NOTHING if it is not one this
    reader knows or it does not fit in n (marshal then reads, or names the error)."""
    cdef Py_ssize_t i = pos[0], ln
    cdef double d
    cdef unsigned char c
    if i >= n:
        return _NOTHING
    c = b[i]
    if c == b'N':
        pos[0] = i + 1
        return None
    if c == b'T':
        pos[0] = i + 1
        return True
    if c == b'F':
        pos[0] = i + 1
        return False
    if c == b'i':
        if n - i < 5:
            return _NOTHING
        pos[0] = i + 5
        return PyLong_FromLong(_get_i32(b + i + 1))
    if c == b'g':
        if n - i < 9:
            return _NOTHING
        memcpy(&d, b + i + 1, 8)
        pos[0] = i + 9
        return PyFloat_FromDouble(d)
    if c == b'u' or c == b's':
        if n - i < 5:
            return _NOTHING
        ln = _get_i32(b + i + 1)
        if ln < 0 or ln > n - i - 5:
            return _NOTHING
        pos[0] = i + 5 + ln
        if c == b's':
            return PyBytes_FromStringAndSize(<const char *>b + i + 5, ln)
        return _utf8_str(<const char *>b + i + 5, ln)
    return _NOTHING


cdef object _utf8_str(const char *p, Py_ssize_t n):
    """str of UTF-8 bytes as marshal reads 'u' (surrogatepass); ASCII, the usual
    case, copied straight in (a third of the decoder's instructions)."""
    cdef Py_ssize_t j
    for j in range(n):
        if <unsigned char>p[j] >= 0x80:
            return PyUnicode_DecodeUTF8(p, n, "surrogatepass")
    s = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(s), p, n)
    return s


cdef object _small_read(const unsigned char *b, Py_ssize_t n):
    """A body the small-record writer could have written, read without marshal;
    _NOTHING for anything else (marshal reads it)."""
    cdef Py_ssize_t k, i, pos = 0
    if n < 1:
        return _NOTHING
    if b[0] != b'(':
        x = _small_scalar_read(b, n, &pos)
        return x if pos == n else _NOTHING
    if n < 5:
        return _NOTHING
    k = _get_i32(b + 1)
    if k < 0 or k > SMALL_ITEMS:
        return _NOTHING
    pos = 5
    t = PyTuple_New(k)
    for i in range(k):
        x = _small_scalar_read(b, n, &pos)
        if x is _NOTHING:
            return _NOTHING
        Py_INCREF(x)  # PyTuple_SET_ITEM steals a reference
        PyTuple_SET_ITEM(t, i, x)
    return t if pos == n else _NOTHING


def small_loads(body):
    """(True, obj): what _small_read makes of a body; (False, None) if it
    leaves the body to marshal (tests compare it with marshal.loads)."""
    cdef const unsigned char[::1] v = body
    x = _small_read(&v[0] if len(v) else NULL, len(v))
    return (False, None) if x is _NOTHING else (True, x)


cdef object _marshal_read(const char *body, uint64_t n):
    if n <= 0x7fffffff:
        x = _small_read(<const unsigned char *>body, <Py_ssize_t>n)
        if x is not _NOTHING:
            return x
    try:
        return PyMarshal_ReadObjectFromString(body, <Py_ssize_t>n)
    except (EOFError, ValueError, TypeError) as exc:
        raise CorruptMessageError(f"marshal message of {n} bytes is corrupt: {exc}") from None


cdef object _copyreg_table = copyreg.dispatch_table
cdef dict _fast_names = {}  # id(dtype) -> (dtype, dtype.str or None, 1 if exported as bytes)


cdef tuple _fast_name(object dt):
    """How the fast reduction names dt: (dt, dtype.str, raw) for dtypes whose str
    rebuilds them exactly, (dt, None, 0) for the others (structured, object,
    with metadata). Datetimes export no buffer: their bytes (raw=1) do."""
    cdef tuple e = _fast_names.get(id(dt))
    if e is not None and e[0] is dt:
        return e
    ok = dt.kind in _codec.SIMPLE_KINDS and dt.metadata is None
    e = (dt, dt.str if ok else None, 1 if dt.kind in "mM" else 0)
    if len(_fast_names) < 512:  # a bound, not a tuning knob
        _fast_names[id(dt)] = e  # the entry keeps dt alive, so its id is not reused
    return e


def _reduce_array(cnp.ndarray a):
    """Reduces a plain C-contiguous array to (rebuild, (buffer, dtype.str,
    shape)), the buffer out of band: numpy's own reduction pickles the dtype as
    an object and looks its rebuild function up by name, 7 us of the 9 us a
    put of a dict holding one 64 KiB array took. The rebuild function is memo
    entry 0 of every _Dumper (shmring._codec, PICKLE_ARRAYS), so it is not
    named either. Other arrays keep numpy's reduction."""
    global _rebuilt
    cdef tuple e = _fast_name(a.dtype)
    if e[1] is not None and cnp.PyArray_IS_C_CONTIGUOUS(a):
        raw = a.reshape(-1).view(np.uint8) if e[2] else a
        _rebuilt += 1
        # the C call: pickle.PickleBuffer(raw) parses its arguments (~500 instructions)
        return _REBUILD, (PyPickleBuffer_FromObject(raw), e[1], (<object>a).shape)
    return a.__reduce_ex__(5)


cdef object _array_from = _codec.array_from


def _reduce_array_named(cnp.ndarray a):
    """_reduce_array for a pickler without memo entry 0 (_Dumper's for long
    streams): the rebuild function is shmring._codec.array_from, by name."""
    cdef tuple e = _fast_name(a.dtype)
    if e[1] is not None and cnp.PyArray_IS_C_CONTIGUOUS(a):
        raw = a.reshape(-1).view(np.uint8) if e[2] else a
        return _array_from, (PyPickleBuffer_FromObject(raw), e[1], (<object>a).shape)
    return a.__reduce_ex__(5)


cdef object _memo0_proxy = None


cdef object _memo0():
    """The memo every _Dumper starts a dump with: a template pickler's, holding
    the rebuild function at index 0 (assigning a Pickler's memo proxy to another
    copies its table)."""
    global _memo0_proxy
    if _memo0_proxy is None:
        t = _codec._Pickler(_codec._Sink([].append), 5)
        t.memo = {id(_REBUILD): (0, _REBUILD)}
        _memo0_proxy = t.memo
    return _memo0_proxy


DEF FAST_STREAM = 256  # bytes: a dump after a shorter stream starts from the template memo


@cython.final
cdef class _Dumper:
    """A reused protocol-5 pickler (see shmring._codec: arrays reduce to their
    buffer, dtype.str and shape). Its dispatch table is copyreg's plus the array
    reduction, taken again whenever copyreg's changes size, so a reducer
    registered later still applies. One per producer handle and one per thread
    for the codec; a handle used while it is busy (a reducer that pushes, two
    threads on one handle) pickles with a new one.

    Two picklers. After a short stream (the common queue item: a dict of a few
    scalars and arrays), the next dump starts from a template memo holding the
    rebuild function at index 0 (PICKLE_ARRAYS): ~1,000 instructions to copy,
    where naming the function cost ~6,400 a dump with an array and finding it
    again ~5,600 a get. But a copied memo starts at 8 slots and regrows in
    every dump (a dict of 1,000 entries: +300,000 instructions, +24%), while a
    cleared one keeps its size; so after a long stream the next dump uses the
    other pickler, whose memo is cleared and which names the rebuild function
    (PICKLE_OOB), as the one pickler did before."""
    cdef list chunks
    cdef list pbs
    cdef object fast
    cdef object fast_dump
    cdef object plain
    cdef object plain_dump
    cdef object plain_clear
    cdef object memo0
    cdef Py_ssize_t seen
    cdef Py_ssize_t last_len
    cdef bint busy

    def __cinit__(self):
        self.chunks = []
        self.pbs = []
        sink = _codec._Sink(self.chunks.append)
        self.fast = _codec._Pickler(sink, 5, buffer_callback=self.pbs.append)
        self.fast_dump = self.fast.dump
        self.plain = _codec._Pickler(sink, 5, buffer_callback=self.pbs.append)
        self.plain_dump = self.plain.dump
        self.plain_clear = self.plain.clear_memo
        self.memo0 = _memo0()
        self.fast.memo = self.memo0
        self.seen = -1

    cdef tuple dumps(self, obj):
        """(stream, [PickleBuffer, ...] or (), prelude): the stream without its
        prelude, which is b"" (PICKLE / PICKLE_OOB), PRELUDE_NONE or
        PRELUDE_REBUILD (an array was reduced to the rebuild function, here or
        in a nested dump: a stream that never uses memo entry 0 reads the same
        with either)."""
        cdef Py_ssize_t n
        cdef uint64_t before = _rebuilt
        cdef bint fast
        if self.busy:
            return _Dumper().dumps(obj)
        n = len(_copyreg_table)
        if n != self.seen:
            table = dict(_copyreg_table)
            table[np.ndarray] = _reduce_array
            self.fast.dispatch_table = table
            table = dict(_copyreg_table)
            table[np.ndarray] = _reduce_array_named
            self.plain.dispatch_table = table
            self.seen = n
        fast = self.last_len < FAST_STREAM
        self.busy = True
        try:
            if fast:
                self.fast_dump(obj)
            else:
                self.plain_dump(obj)
            stream = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
            self.last_len = PyBytes_GET_SIZE(stream)
            pbs = list(self.pbs) if self.pbs else ()
            if not fast:
                return stream, pbs, b""
            return stream, pbs, (PRELUDE_REBUILD if _rebuilt != before else PRELUDE_NONE)
        finally:
            self.busy = False
            if fast:
                self.fast.memo = self.memo0  # drops what the dump memoized, keeps entry 0
            else:
                self.plain_clear()
            del self.chunks[:]
            del self.pbs[:]


_dumpers = threading.local()


def pickle_dumps(obj):
    """(pickle stream, [PickleBuffer, ...] or ()): obj pickled with protocol 5,
    arrays inside it out of band, its prelude first (shmring._codec.dumps)."""
    cdef _Dumper d = getattr(_dumpers, "d", None)
    if d is None:
        d = _dumpers.d = _Dumper()
    stream, pbs, prelude = d.dumps(obj)
    return prelude + stream if prelude else stream, pbs


@cython.no_gc_clear
cdef class MessageProducer(_ProducerSide):
    """The one writer of a message ring. Obtain it with ``Ring.producer()``."""

    cdef bint _reserving
    cdef uint64_t _want          # body bytes of the message a blocked call (or await) waits to place
    cdef readonly uint64_t max_message
    cdef readonly object ring
    cdef str _size_note          # appended to the too-large error (a queue names its nbytes)
    cdef _Dumper _dumper

    def __cinit__(self):
        self._p = NULL

    @staticmethod
    def _open(Mapping m, object ring, double spin, double liveness_interval):
        cdef MessageProducer self = MessageProducer.__new__(MessageProducer)
        self._setup(m, np.dtype(np.uint8), spin, liveness_interval)
        cdef int rc = shmr_producer_open(m.r, &self._p)
        if rc:
            _raise(rc, f"producer of ring {m.name!r}")
        self.max_message = shmr_msg_max(m.r)
        self.ring = ring
        self._dumper = _Dumper()
        return self

    @staticmethod
    cdef MessageProducer _adopt(Mapping m, shmr_producer *p, str size_note, double spin, double liveness_interval):
        """A handle on a producer role already taken (a queue's lane)."""
        cdef MessageProducer self = MessageProducer.__new__(MessageProducer)
        self._setup(m, np.dtype(np.uint8), spin, liveness_interval)
        self._p = p
        self.max_message = shmr_msg_max(m.r)
        self._size_note = size_note
        self._dumper = _Dumper()
        return self

    cdef object _too_big(self, uint64_t n):
        err = _too_large(n, self.max_message)
        if self._size_note:
            err = ValueError(f"{err.args[0]}; {self._size_note}")
        return err

    def __dealloc__(self):
        self._free_handle()

    cdef int _sleep(self, int64_t timeout_ns, int64_t spin_ns) noexcept nogil:
        return shmr_msg_producer_wait(self._p, self._want, timeout_ns, spin_ns)

    # An awaiting push waits for room for the message its last try could not
    # place (_place leaves its size in _want), not merely for any room.
    cdef int _arm(self, void **word, uint32_t *seen) except -1:
        self._check()
        return shmr_msg_producer_arm(self._p, self._want, word, seen)

    cdef bint _ready_now(self) except -1:
        self._check()
        return shmr_msg_producer_ready(self._p, self._want) != 0

    cdef object _many_arg(self, object objects):
        self._check_many(objects)
        return objects if isinstance(objects, list) else list(objects)

    cdef int _check_many(self, object objects) except -1:
        if isinstance(objects, np.ndarray):
            raise TypeError("push_many() on a message ring takes an iterable of objects, not an array "
                            "(to send the array as one message use push(array))")
        if isinstance(objects, (bytes, bytearray, memoryview, str, dict)):
            raise TypeError(f"push_many() takes an iterable of messages, not a {type(objects).__name__} "
                            f"(use push() to send it as one message)")
        return 0

    cdef void *_place(self, uint32_t kind, uint64_t nbytes, object timeout, uint64_t *pushed) except NULL:
        """Room for one message after those pending; waits (publishing what is
        pending first) until there is some."""
        cdef void *body = NULL
        cdef int rc
        cdef Waiting w
        _waiting_init(&w, self._spin_ns)
        while True:
            rc = shmr_msg_reserve(self._p, kind, nbytes, &body)
            if rc == 1:
                return body
            if rc < 0:
                if rc == -EMSGSIZE:
                    raise self._too_big(nbytes)
                _raise(rc, "push")
            pushed[0] += shmr_msg_commit(self._p)  # what is pending may be what frees room
            self._want = nbytes
            if not self._block(&w, timeout):
                raise Full(f"ring is full: {pushed[0]} messages pushed before the timeout", pushed=pushed[0])

    cdef int _write(self, object enc, void *body) except -1:
        """One memcpy per buffer (without the GIL for large ones); a strided array
        is copied into its new layout by numpy instead."""
        cdef uint64_t n = enc.nbytes
        cdef Py_buffer buf
        cdef Py_ssize_t off
        if n == 0:
            return 0
        parts = enc.parts()
        if parts is None:
            enc.write_into(_span(self._map, body, n, False))
            return 0
        for off, obj in parts:
            PyObject_GetBuffer(obj, &buf, PyBUF_ANY_CONTIGUOUS)
            try:
                if <uint64_t>(off + buf.len) > n:
                    raise ValueError("a message part lies outside its body")  # never from the codec
                if buf.len >= NOGIL_BYTES:
                    with nogil:
                        memcpy(<char *>body + off, buf.buf, buf.len)
                else:
                    memcpy(<char *>body + off, buf.buf, buf.len)
            finally:
                PyBuffer_Release(&buf)
        return 0

    def _push_raw(self, table, packed, owns, Py_ssize_t start=0, timeout=None):
        """Publishes messages start.. of a batch laid out as _claim_raw() makes it,
        without decoding them: one memcpy per body, straight into the ring (without
        the GIL for large ones). Returns how many it published: all of them, or
        fewer when ``timeout`` ran out (those stay published). The batch must have
        passed raw_check()."""
        cdef const uint64_t[::1] t = table
        cdef Py_ssize_t n = t.shape[0], i
        cdef uint64_t off = 0, ln, e, pushed = 0
        cdef Py_ssize_t oi = 0
        cdef Py_buffer pk, ob
        cdef bint own
        cdef const char *src
        cdef void *body
        cdef const char *tp = <const char *>&t[0] if n else NULL
        self._check_push()
        if start < 0 or start > n:
            raise ValueError(f"start {start} is outside the batch of {n}")
        for i in range(start):
            e = _raw_entry(tp, i)
            if e & RAW_OWN:
                oi += 1
            else:
                off += e & RAW_LEN
        PyObject_GetBuffer(packed, &pk, PyBUF_SIMPLE)
        try:
            for i in range(start, n):
                e = _raw_entry(tp, i)
                ln = e & RAW_LEN
                own = (e & RAW_OWN) != 0
                if own:
                    PyObject_GetBuffer(owns[oi], &ob, PyBUF_SIMPLE)
                    oi += 1
                elif off + ln > <uint64_t>pk.len:
                    raise ValueError("a message lies outside its batch")  # raw_check() stops these
                try:
                    if own and <uint64_t>ob.len != ln:
                        raise ValueError("a message's frame disagrees with its length")
                    try:
                        body = self._place(<uint32_t>(e >> 56), ln, timeout, &pushed)
                    except Full:
                        return i - start  # what was placed before the wait is published
                    src = <const char *>ob.buf if own else <const char *>pk.buf + off
                    if ln >= NOGIL_BYTES:
                        with nogil:
                            memcpy(body, src, ln)
                    elif ln:
                        memcpy(body, src, ln)
                finally:
                    if own:
                        PyBuffer_Release(&ob)
                if not own:
                    off += ln
        except BaseException:
            shmr_msg_cancel(self._p)
            raise
        finally:
            PyBuffer_Release(&pk)
        shmr_msg_commit(self._p)
        return n - start

    cdef int _check_push(self) except -1:
        self._check()
        if self._reserving:
            raise RuntimeError("push inside an open reserve() block")
        return 0

    def push(self, obj, timeout=None):
        """Send one message: bytes-likes arrive as bytes, numpy arrays as arrays (never
        pickled), anything else pickled (protocol 5, arrays inside it out of band).
        Blocks while the ring is full: ``timeout`` None = forever, 0 = never, else seconds."""
        self._push_one(obj, timeout)

    cdef int _push_one(self, obj, timeout) except -1:
        cdef void *body
        cdef uint64_t n, pushed = 0
        cdef uint32_t kind = K_BYTES
        self._check_push()
        t = type(obj)
        if t is tuple or t is int or t is float or t is str:
            n = <uint64_t>_small_size(obj)
            if n != <uint64_t>-1:  # a small record: written straight into the ring
                if n > self.max_message:
                    raise self._too_big(n)
                body = self._place(K_MARSHAL, n, timeout, &pushed)
                _small_write(obj, <char *>body)
                shmr_msg_commit(self._p)
                return 0
        if t is not bytes and t is not bytearray and t is not memoryview and t is not _NDARRAY:
            enc = _marshal_plain(obj)
            if enc is not None:
                obj = enc
                kind = K_MARSHAL
            else:
                obj = self._push_pickle(obj, timeout)
                if obj is None:
                    return 0
                kind = K_PICKLE  # an Encoded: written by the codec below
        if type(obj) is bytes:  # the common cases, without the codec
            n = <uint64_t>PyBytes_GET_SIZE(obj)
            if n > self.max_message:
                raise self._too_big(n)
            body = self._place(kind, n, timeout, &pushed)
            memcpy(body, PyBytes_AS_STRING(obj), n)
            shmr_msg_commit(self._p)
            return 0
        enc = obj if kind != K_BYTES else _codec.encode(obj)
        if enc.nbytes > self.max_message:
            raise self._too_big(enc.nbytes)
        body = self._place(enc.kind, enc.nbytes, timeout, &pushed)
        try:
            self._write(enc, body)
        except BaseException:
            shmr_msg_cancel(self._p)
            raise
        shmr_msg_commit(self._p)
        return 0

    cdef object _push_pickle(self, obj, timeout):
        """obj pickled and pushed (None), or, with more out-of-band buffers than
        _push_oob takes, the codec's Encoded for the caller to write. A method of
        its own: its locals cost the small-record path nothing."""
        cdef void *body
        cdef uint64_t n, pushed = 0
        # most pickles have no out-of-band buffer and are copied like bytes
        cdef bytes prelude
        cdef uint64_t pl
        stream, pbs, prelude = self._dumper.dumps(obj)
        pl = <uint64_t>PyBytes_GET_SIZE(prelude)
        if pbs or prelude is PRELUDE_REBUILD:
            if len(pbs) <= OOB_FAST_BUFS:
                self._push_oob(stream, pbs, prelude, timeout)
                return None
            return _codec.pickled(prelude + stream if pl else stream, pbs)
        n = pl + <uint64_t>PyBytes_GET_SIZE(stream)
        if n > self.max_message:
            raise self._too_big(n)
        body = self._place(K_PICKLE, n, timeout, &pushed)
        memcpy(body, PyBytes_AS_STRING(prelude), pl)
        memcpy(<char *>body + pl, PyBytes_AS_STRING(stream), n - pl)
        shmr_msg_commit(self._p)
        return None

    cdef int _push_oob(self, bytes stream, object pbs, bytes prelude, timeout) except -1:
        """A pickle with out-of-band buffers, laid out as shmring._codec writes
        PICKLE_OOB or PICKLE_ARRAYS (u64 stream length, u64 count, (u64 offset,
        u64 length) per buffer, the prelude and the stream, each buffer 16-byte
        aligned) straight into the ring:
        the codec's plan and parts cost a put of a dict holding a 64 KiB array
        ~19 000 instructions of interpreted code, as many as the rest of the put
        without the copy."""
        cdef Py_buffer bufs[OOB_FAST_BUFS]
        cdef uint64_t offs[OOB_FAST_BUFS]
        cdef uint64_t head[2]
        cdef uint64_t entry[2]
        cdef Py_ssize_t n = len(pbs), got = 0, i
        cdef uint64_t pl = <uint64_t>PyBytes_GET_SIZE(prelude)
        cdef uint64_t slen = pl + <uint64_t>PyBytes_GET_SIZE(stream), pos, pushed = 0
        cdef char *body
        try:
            for i in range(n):
                # pickle refuses a PickleBuffer over non-contiguous memory, so this holds
                PyObject_GetBuffer(pbs[i], &bufs[i], PyBUF_ANY_CONTIGUOUS)
                got += 1
            pos = 16 + 16 * <uint64_t>n + slen
            for i in range(n):
                pos = (pos + 15) & ~(<uint64_t>15)
                offs[i] = pos
                pos += <uint64_t>bufs[i].len
            if pos > self.max_message:
                raise self._too_big(pos)
            body = <char *>self._place(K_PICKLE_ARRAYS if prelude is PRELUDE_REBUILD else K_PICKLE_OOB, pos,
                                       timeout, &pushed)
            # little-endian u64s, as the codec's struct "<QQ" on this host (the
            # segment layout is little-endian throughout: shmr_layout.h)
            head[0] = slen
            head[1] = <uint64_t>n
            memcpy(body, head, 16)
            for i in range(n):
                entry[0] = offs[i]
                entry[1] = <uint64_t>bufs[i].len
                memcpy(body + 16 + 16 * i, entry, 16)
            memcpy(body + 16 + 16 * n, PyBytes_AS_STRING(prelude), pl)
            memcpy(body + 16 + 16 * n + pl, PyBytes_AS_STRING(stream), slen - pl)
            for i in range(n):
                if bufs[i].len >= NOGIL_BYTES:
                    with nogil:
                        memcpy(body + offs[i], bufs[i].buf, bufs[i].len)
                elif bufs[i].len:
                    memcpy(body + offs[i], bufs[i].buf, bufs[i].len)
            shmr_msg_commit(self._p)
        finally:
            for i in range(got):
                PyBuffer_Release(&bufs[i])
        return 0

    def push_many(self, objects, timeout=None):
        """Send every object of an iterable as one message each, in order, publishing
        in batches. Every object is encoded before anything is published, so an
        object that cannot be sent publishes nothing. Returns the count; on timeout
        raises Full with ``pushed`` = messages published (they stay published)."""
        cdef void *body
        cdef uint64_t pushed = 0
        self._check_push()
        self._check_many(objects)
        encs = [_codec.encode(o) for o in objects]
        for enc in encs:
            if enc.nbytes > self.max_message:
                raise self._too_big(enc.nbytes)
        try:
            for enc in encs:
                body = self._place(enc.kind, enc.nbytes, timeout, &pushed)
                self._write(enc, body)
        except BaseException:
            shmr_msg_cancel(self._p)  # published batches stay published, as Full.pushed says
            raise
        shmr_msg_commit(self._p)
        return len(encs)

    def reserve(self, Py_ssize_t nbytes, timeout=None):
        """Context manager giving a writable numpy uint8 array of exactly ``nbytes``
        inside the ring; leaving the block publishes it as one bytes message, an
        exception inside it publishes nothing."""
        cdef void *body
        cdef cnp.npy_intp dims[1]
        cdef uint64_t pushed = 0
        self._check_push()
        if nbytes < 1:
            raise ValueError(f"reserve() needs nbytes >= 1, got {nbytes} (push(b'') sends an empty message)")
        if <uint64_t>nbytes > self.max_message:
            raise self._too_big(nbytes)
        body = self._place(_codec.BYTES, nbytes, timeout, &pushed)
        dims[0] = nbytes
        descr = np.dtype(np.uint8)
        Py_INCREF(descr)
        arr = PyArray_NewFromDescr(np.ndarray, descr, 1, dims, NULL, body,
                                   cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_WRITEABLE, NULL)
        cnp.set_array_base(arr, self._map)
        self._reserving = True
        return MessageReservation._make(self, arr)

    cdef _finish(self, bint publish):
        self._reserving = False
        if self._closed or self._p == NULL or self._gen != _fork_gen:
            return
        if publish:
            shmr_msg_commit(self._p)
        else:
            shmr_msg_cancel(self._p)

    def _wait_stats(self):
        """As Producer._wait_stats."""
        cdef shmr_wait_stats st
        self._check()
        shmr_producer_wait_stats(self._p, &st)
        return _wait_stats_dict(&st)

    def _set_rewind(self, uint64_t nbytes):
        """Queue mode: how far into the lap frames go before the producer starts
        at offset 0 again when that is free (0: never; see shmr_msg_set_rewind)."""
        self._check()
        shmr_msg_set_rewind(self._p, nbytes)

    def _lap_offset(self):
        """Bytes into the lap where the next frame would start (tests)."""
        self._check()
        return shmr_msg_lap_offset(self._p)

    def close(self):
        """End the stream: consumers drain what was published, then see Closed."""
        _Handle.close(self)

    cdef void _free_handle(self) noexcept:
        if self._p == NULL:
            return
        _drop_arms(self)
        if self._gen == _fork_gen:
            shmr_msg_cancel(self._p)
            shmr_producer_close_stream(self._p)
            shmr_producer_free(self._p)
        else:
            free(<void *>self._p)  # inherited through fork: the role is the parent's
        self._p = NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@cython.no_gc_clear
cdef class MessageReservation:
    cdef MessageProducer _prod
    cdef object _arr
    cdef bint _done

    @staticmethod
    cdef MessageReservation _make(MessageProducer prod, object arr):
        cdef MessageReservation r = MessageReservation.__new__(MessageReservation)
        r._prod = prod
        r._arr = arr
        return r

    @property
    def array(self):
        return self._arr

    def __len__(self):
        return self._arr.shape[0]

    def __enter__(self):
        return self._arr

    def __exit__(self, et, ev, tb):
        if not self._done:
            self._done = True
            self._prod._finish(et is None)
        return False

    def __dealloc__(self):
        if not self._done and self._prod is not None:  # never exited: publish nothing
            self._done = True
            self._prod._finish(False)


# ---- consumer ---------------------------------------------------------------

@cython.no_gc_clear
cdef class MessageConsumer(_ConsumerSide):
    """A reader of a message ring. Obtain it with ``Ring.consumer()``; iterate it or pop()."""

    cdef shmr_msg _one[1]
    cdef bint _allow_pickle
    cdef bint _raise_lag
    cdef bint _viewing
    cdef bint _overwrite
    cdef list _pending       # messages received while an error was being raised
    cdef shmr_msg *_raw      # the bridge's claim, held from _claim_raw to _release_raw
    cdef int64_t _raw_cap
    cdef readonly object ring

    def __cinit__(self):
        self._c = NULL
        self._raw = NULL
        self._raw_cap = 0

    @staticmethod
    def _open(Mapping m, object ring, uint32_t start, bint raise_lag, bint allow_pickle, double spin,
              double liveness_interval):
        cdef MessageConsumer self = MessageConsumer.__new__(MessageConsumer)
        self._setup(m, np.dtype(np.uint8), spin, liveness_interval)
        self._raise_lag = raise_lag
        self._allow_pickle = allow_pickle
        self._overwrite = shmr_overflow(m.r) == SHMR_OVERFLOW_OVERWRITE
        cdef int rc = shmr_consumer_open(m.r, start, &self._c)
        if rc:
            _raise(rc, f"consumer of ring {m.name!r}")
        self.ring = ring
        return self

    def __dealloc__(self):
        self._free_handle()
        free(self._raw)
        self._raw = NULL

    cdef bint _has_pending(self) noexcept:
        return self._pending is not None and len(self._pending) > 0

    cdef object _closed_error(self):
        reason = CLOSE_REASONS.get(shmr_close_reason(self._map.r)) or "closed"
        return Closed(f"ring {self._map.name!r}: the stream is closed ({reason}) and drained", reason)

    cdef int _lag(self, shmr_loss *loss, list got) except -1:
        """With on_lag="raise": keep what did arrive for the next call, report the loss."""
        if loss.msgs and self._raise_lag:
            if got:
                self._pending = got
            raise Lagged(loss.msgs, f"consumer was lapped by the producer: {loss.msgs} messages "
                                    f"({loss.bytes} bytes) lost", nbytes=loss.bytes)
        return 0

    cdef int64_t _claim(self, shmr_msg *out, uint64_t max, object timeout, shmr_loss *loss) except -1:
        cdef int64_t n
        cdef Waiting w
        _waiting_init(&w, self._spin_ns)
        while True:
            n = shmr_msg_claim(self._c, out, max, loss)
            if n > 0:
                return n
            if n == -SHMR_ECLOSED:
                self._lag(loss, None)
                raise self._closed_error()
            if n < 0:
                if n == -EIO:
                    raise CorruptRingError(f"ring {self._map.name!r}: a message frame is corrupt "
                                           f"(never written by shmring)")
                _raise(n, "pop")
            if not self._block(&w, timeout):
                self._lag(loss, None)  # a loss is reported even when nothing arrived
                raise Empty()

    cdef object _decode_copy(self, shmr_msg *m):
        """The message as an object owning its memory, read straight from the ring
        (queue and broadcast-block: the claim keeps the frame from being reused)."""
        if m.kind == K_BYTES:
            return PyBytes_FromStringAndSize(<const char *>m.body, m.len)
        if m.kind == K_MARSHAL and self._allow_pickle:
            return _marshal_read(<const char *>m.body, m.len)
        if m.kind == K_PICKLE and self._allow_pickle:
            return _pickle_loads(_raw_span(self._map, m.body, m.len, True))
        return _copy_out(self._map, m.kind, <const char *>m.body, m.len, self._allow_pickle)

    cdef list _take(self, Py_ssize_t max_messages, object timeout):
        """Up to max_messages decoded messages (at least one: waits like pop)."""
        cdef shmr_loss loss
        cdef shmr_msg *msgs = self._one
        cdef int64_t n, i, torn
        cdef list out = []
        cdef list raws
        cdef object err = None
        loss.msgs = 0
        loss.bytes = 0
        if max_messages > 1:
            msgs = <shmr_msg *>malloc(min(max_messages, MSG_BATCH) * sizeof(shmr_msg))
            if msgs == NULL:
                raise MemoryError()
        try:
            while True:
                n = self._claim(msgs, min(max_messages, MSG_BATCH), timeout, &loss)
                if not self._overwrite:
                    for i in range(n):
                        try:
                            out.append(self._decode_copy(&msgs[i]))
                        except (PickleRefusedError, CorruptMessageError) as exc:
                            err = err or exc  # this message is consumed; the others still arrive
                    shmr_msg_release(self._c, msgs, &loss)
                    break
                # overwrite: copy out, then check nothing was overwritten meanwhile,
                # and only then decode (never unpickle what may be torn)
                # bytes arrive as bytes; anything else decodes over a private,
                # writable copy (arrays from pop() are writable)
                raws = [PyBytes_FromStringAndSize(<const char *>msgs[i].body, msgs[i].len)
                        if msgs[i].kind == _codec.BYTES else
                        PyByteArray_FromStringAndSize(<const char *>msgs[i].body, msgs[i].len)
                        for i in range(n)]
                kinds = [msgs[i].kind for i in range(n)]
                torn = shmr_msg_release(self._c, msgs, &loss)
                for i in range(torn, n):
                    if kinds[i] == _codec.BYTES:
                        out.append(raws[i])
                        continue
                    try:
                        out.append(_codec.decode(kinds[i], raws[i], copy=False, allow_pickle=self._allow_pickle))
                    except (PickleRefusedError, CorruptMessageError) as exc:
                        err = err or exc
                if out or err is not None:
                    break
                # every message of the claim was overwritten: counted, try again
        finally:
            if msgs != self._one:
                free(msgs)
        self._lag(&loss, out)
        if err is not None:
            if out:
                self._pending = out
            raise err
        return out

    cdef int _ready_check(self) except -1:
        self._check()
        if self._viewing:
            raise RuntimeError("pop inside an open view() block")
        return 0

    cdef object _pop_now(self):
        # pop()'s hot path (queue and broadcast-block), and the common empty poll;
        # everything else (held-back messages, overwrite's torn check, errors,
        # the liveness check) is pop(0)'s
        cdef shmr_loss loss
        cdef int64_t n
        self._ready_check()
        if self._overwrite or self._pending:
            return _NOTHING
        loss.msgs = 0
        loss.bytes = 0
        n = shmr_msg_claim(self._c, self._one, 1, &loss)
        if n > 0:
            try:
                return self._decode_copy(self._one)
            finally:
                shmr_msg_release(self._c, self._one, &loss)
        if n == 0 and self._fdw is None and _mono_ns() < self._next_check_ns:
            return _EMPTY
        return _NOTHING

    def pop(self, timeout=None):
        """The next message as the object that was pushed (bytes-likes as bytes),
        owning its memory. Blocks while empty: ``timeout`` None = forever, 0 = never,
        else seconds. Raises Empty on timeout and Closed once the stream ended and
        everything was consumed."""
        cdef shmr_loss loss
        cdef int64_t n
        self._ready_check()
        if self._pending:
            return self._pending.pop(0)
        if not self._overwrite:
            # the hot path: one message, no list
            loss.msgs = 0
            n = shmr_msg_claim(self._c, self._one, 1, &loss)
            if n <= 0:
                n = self._claim(self._one, 1, timeout, &loss)
            try:
                obj = self._decode_copy(self._one)
            finally:
                shmr_msg_release(self._c, self._one, &loss)
            return obj
        out = self._take(1, timeout)
        obj = out.pop(0)
        if out:
            self._pending = out
        return obj

    async def apop_many(self, Py_ssize_t max_messages, timeout=None):
        """Coroutine form of pop_many()."""
        try:
            return self.pop_many(max_messages, 0)
        except Empty:
            pass
        return await _aio_mod().apop_many_wait(self, max_messages, timeout)

    def pop_many(self, Py_ssize_t max_messages, timeout=None):
        """A list of 1..max_messages messages (waits for the first one like pop())."""
        self._ready_check()
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        if self._pending:
            out = self._pending[:max_messages]
            del self._pending[:max_messages]
            return out
        return self._take(max_messages, timeout)

    def view(self, timeout=None):
        """Context manager giving the next message with every buffer in it (the bytes,
        the array, the arrays inside an object) as a read-only view into the ring, no
        copy. Valid inside the block; leaving it releases the message."""
        cdef shmr_loss loss
        loss.msgs = 0
        loss.bytes = 0
        self._ready_check()
        if self._pending:  # held back by an earlier error: they come first, as copies
            return MessageView._make(None, self._pending.pop(0))
        self._claim(self._one, 1, timeout, &loss)
        self._viewing = True
        try:
            span = _span(self._map, self._one[0].body, self._one[0].len, True)
            if self._one[0].kind == _codec.BYTES:
                obj = span
            elif self._overwrite and self._one[0].kind != _codec.ARRAY:
                # a pickle is never run over memory that may be overwritten under it:
                # the stream is copied and checked first, the buffers stay views
                obj = self._view_pickle(span)
            else:
                obj = _codec.decode(self._one[0].kind, span, copy=False, allow_pickle=self._allow_pickle)
        except BaseException:
            self._release()
            raise
        if loss.msgs and self._raise_lag:
            held = _codec.decode(self._one[0].kind, bytes(span), copy=True, allow_pickle=self._allow_pickle)
            bad = self._release()
            self._lag(&loss, [held] if not bad else [])
        return MessageView._make(self, obj)

    cdef object _view_pickle(self, object span):
        raw = bytes(span)
        if shmr_msg_intact(self._c, self._one) == 0:
            raise Lagged(1, "the producer overwrote this message while it was being read", nbytes=len(raw))
        kind = self._one[0].kind
        if kind != _codec.PICKLE_OOB and kind != _codec.PICKLE_ARRAYS:
            return _codec.decode(kind, raw, copy=True, allow_pickle=self._allow_pickle)
        return _codec.decode(kind, raw, copy=False, allow_pickle=self._allow_pickle, buffers_from=span)

    cdef int64_t _release(self) except -1:
        cdef shmr_loss loss
        self._viewing = False
        if self._closed or self._c == NULL or self._gen != _fork_gen:
            return 0
        return shmr_msg_release(self._c, self._one, &loss)

    # -- undecoded batches, for the bridge (shmring.bridge) --------------------

    def _claim_raw(self, Py_ssize_t max_messages, uint64_t own_from, timeout=None):
        """Claims 1..max_messages messages (waits like pop) without decoding them.
        Returns (table, packed, owns): ``table`` a uint64 array, one entry per
        message, ``length | RAW_OWN * (length >= own_from) | kind << 56``;
        ``packed`` the bodies shorter than ``own_from`` end to end, copied;
        ``owns`` read-only memoryviews into the ring of the other bodies, in order.
        The claim, and with it the memory under ``owns``, is held until
        _release_raw() (the views are only valid until then; in overwrite mode
        they may be overwritten meanwhile, which _release_raw() reports)."""
        cdef shmr_loss loss
        cdef int64_t n
        loss.msgs = 0
        loss.bytes = 0
        self._ready_check()
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        if max_messages > self._raw_cap:
            free(self._raw)
            self._raw = <shmr_msg *>malloc(max_messages * sizeof(shmr_msg))
            if self._raw == NULL:
                self._raw_cap = 0
                raise MemoryError()
            self._raw_cap = max_messages
        n = self._claim(self._raw, max_messages, timeout, &loss)
        self._viewing = True
        try:
            return _raw_batch(self._map, self._raw, n, own_from, False)
        except BaseException:
            self._release_raw()
            raise

    def _release_raw(self):
        """Ends the claim of _claim_raw(). Returns how many leading messages of it
        may have been overwritten while it was held (broadcast-overwrite: what was
        copied of them is not valid; they count as dropped); 0 in the other modes."""
        cdef shmr_loss loss
        self._viewing = False
        if self._closed or self._c == NULL or self._gen != _fork_gen or self._raw == NULL:
            return 0
        return shmr_msg_release(self._c, self._raw, &loss)

    @property
    def _next_seq(self):
        """Broadcast: the sequence number of the next message this consumer takes
        (between claims: its start plus what it popped and lost)."""
        self._check()
        return shmr_msg_next_seq(self._c)

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.pop()
        except Closed:
            raise StopIteration from None

    def _wait_stats(self):
        """As Producer._wait_stats."""
        cdef shmr_wait_stats st
        self._check()
        shmr_consumer_wait_stats(self._c, &st)
        return _wait_stats_dict(&st)

    @property
    def popped(self):
        """Messages this consumer received."""
        return shmr_consumer_popped(self._c) if self._c != NULL else 0

    @property
    def dropped(self):
        """Messages this consumer lost because an overwriting producer lapped it."""
        return shmr_consumer_dropped(self._c) if self._c != NULL else 0

    @property
    def dropped_bytes(self):
        """Body bytes of the messages counted in ``dropped``."""
        return shmr_consumer_dropped_bytes(self._c) if self._c != NULL else 0

    @property
    def index(self):
        return shmr_consumer_index(self._c) if self._c != NULL else -1

    def close(self):
        """Leave the ring; a broadcast producer stops waiting for this consumer at once."""
        _Handle.close(self)

    cdef void _free_handle(self) noexcept:
        cdef shmr_loss loss
        if self._c == NULL:
            return
        _drop_arms(self)
        if self._gen == _fork_gen:
            if self._viewing:
                # a claim of either kind: shmr_msg_release only reads the bodies'
                # positions in overwrite mode, to count torn ones, and counts nothing
                # with NULL
                shmr_msg_release(self._c, NULL, &loss)
            shmr_consumer_free(self._c)
        else:
            free(<void *>self._c)
        self._c = NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@cython.no_gc_clear
cdef class MessageView:
    cdef MessageConsumer _cons
    cdef object _obj
    cdef bint _done

    @staticmethod
    cdef MessageView _make(MessageConsumer cons, object obj):
        cdef MessageView v = MessageView.__new__(MessageView)
        v._cons = cons
        v._obj = obj
        return v

    @property
    def message(self):
        return self._obj

    def __enter__(self):
        return self._obj

    def __exit__(self, et, ev, tb):
        if self._done:
            return False
        self._done = True
        if self._cons is None:
            return False
        cdef int64_t bad = self._cons._release()
        if bad > 0 and et is None:
            raise Lagged(bad, "the producer overwrote this message while the view was held; "
                              "its contents are not valid")
        return False

    def __dealloc__(self):
        if not self._done and self._cons is not None:
            self._done = True
            try:
                self._cons._release()
            except Exception:
                pass
