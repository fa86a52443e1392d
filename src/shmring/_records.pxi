# Records from Python values (included by _ring.pyx).
#
# numpy's assignment casts unsafely: b"longer-than-eight" into S8 is cut,
# 1.9 into an int field becomes 1, "7" is parsed as a number. A ring never
# stores a value that differs from what was pushed, so every value that is
# not already a record of the ring's dtype is converted here under numpy's
# "same_kind" rule with two additions: integers must fit the field's range and
# strings its length. Anything else is a TypeError (wrong kind) or a ValueError
# (out of range, too long) naming the field. np.void records and arrays of the
# ring's dtype never come here: they are copied as they are.
#
# Two ways in: _Packer writes a tuple (or a plain scalar) of simple fields
# straight into a record buffer, one C conversion per field; _checked_records
# handles everything else (lists for push_many, nested fields) with numpy,
# field by field. numpy's own tuple-to-record conversion is not used for the
# tuple: besides casting unsafely it costs several times a np.void push, and a
# tuple push is held to 2x of one (benchmarks/README.md, "Tuple push").

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.string cimport memcpy, memset


cdef enum LeafKind:
    LEAF_BOOL
    LEAF_INT
    LEAF_UINT
    LEAF_FLOAT
    LEAF_COMPLEX
    LEAF_BYTES


cdef str _field_label(object name):
    return "the record" if name is None else f"field {name!r}"


cdef int _type_error(object name, object value, object dt) except -1:
    raise TypeError(f"{_field_label(name)}: cannot store {type(value).__name__} {value!r} as {dt} "
                    f"without loss (numpy's same_kind rule; convert it explicitly)")


cdef int _range_error(object name, object value, object dt) except -1:
    raise ValueError(f"{_field_label(name)}: {value!r} is out of range for {dt}")


ctypedef struct _Leaf:
    Py_ssize_t offset
    Py_ssize_t size             # element size
    Py_ssize_t count            # elements (1 for a scalar field)
    int ndim                    # 0 for a scalar field
    int dims_at                 # where its extents start in _Packer.dims
    LeafKind kind
    PyObject *base              # element dtype, borrowed from _Packer.bases


cdef extern from "Python.h":
    # the plan's fast path works on borrowed references and plain C macros;
    # PyLong_AsLongLongAndOverflow is called only on an exact int, for which
    # it cannot fail (overflow is reported in *overflow, not raised)
    PyTypeObject PyLong_Type
    PyTypeObject PyFloat_Type
    PyTypeObject PyBytes_Type
    PyTypeObject PyBool_Type
    PyTypeObject *_type_of "Py_TYPE"(PyObject *o) noexcept
    PyObject *_py_true "Py_True"
    PyObject *_tuple_item "PyTuple_GET_ITEM"(object t, Py_ssize_t i) noexcept
    PyObject *_list_item "PyList_GET_ITEM"(object t, Py_ssize_t i) noexcept
    double _float_value "PyFloat_AS_DOUBLE"(PyObject *o) noexcept
    Py_ssize_t _bytes_size "PyBytes_GET_SIZE"(PyObject *o) noexcept
    char *_bytes_data "PyBytes_AS_STRING"(PyObject *o) noexcept
    long long _long_as_ll "PyLong_AsLongLongAndOverflow"(PyObject *o, int *overflow) noexcept


cdef class _Packer:
    """Writes a tuple of values (structured dtypes whose fields are all plain
    native numbers or bytes) or one value (plain dtypes) into a record buffer.
    Built only for dtypes it can handle entirely (see _Packer.build).

    Each field has a plan (_Leaf: offset, kind, size, shape) read by pack()'s
    fast path, which stores exact ints, floats, bools and bytes that the field
    takes as they are, and arrays of the field's exact dtype and shape, with
    plain C stores. Every other value, and every value it would refuse, goes to
    _put / _put_array, so what is stored and what is raised are theirs alone:
    the fast path only skips work, it never decides."""

    cdef Py_ssize_t n_fields
    cdef bint is_struct
    cdef list names
    cdef list dtypes
    cdef list shapes            # subarray shape of each field, () for a scalar field
    cdef list bases             # element dtype of each field
    cdef _Leaf *leaves
    cdef cnp.npy_intp *dims     # subarray extents of every field, one after another
    cdef char *buf
    cdef Py_ssize_t record_size

    def __dealloc__(self):
        free(self.leaves)
        free(self.dims)
        free(self.buf)

    @staticmethod
    cdef _Packer build(object dtype):
        """A packer for dtype, or None when some field needs the general path."""
        cdef _Packer p
        cdef Py_ssize_t i, k, ndims = 0
        cdef _Leaf *lf
        if dtype.subdtype is not None:
            return None
        if dtype.names is None:
            leaves = [(None, dtype, 0)]
        else:
            leaves = []
            for name in dtype.names:
                field = dtype.fields[name]
                leaves.append((name, field[0], field[1]))
        for _, dt, _ in leaves:
            base = dt.base
            if base.names is not None or not base.isnative or _leaf_kind(base) < 0:
                return None
            ndims += len(dt.shape)
        p = _Packer.__new__(_Packer)
        p.n_fields = len(leaves)
        p.is_struct = dtype.names is not None
        p.names = [l[0] for l in leaves]
        p.dtypes = [l[1] for l in leaves]
        p.bases = [l[1].base for l in leaves]
        p.shapes = [tuple(l[1].shape) for l in leaves]
        p.record_size = dtype.itemsize
        p.leaves = <_Leaf *>malloc(p.n_fields * sizeof(_Leaf))
        p.dims = <cnp.npy_intp *>malloc(max(1, ndims) * sizeof(cnp.npy_intp))
        p.buf = <char *>malloc(p.record_size)
        if p.leaves == NULL or p.dims == NULL or p.buf == NULL:
            raise MemoryError()
        memset(p.buf, 0, p.record_size)  # padding between fields stays zero
        ndims = 0
        for i in range(p.n_fields):
            lf = &p.leaves[i]
            dt = leaves[i][1]
            lf.offset = leaves[i][2]
            lf.size = dt.base.itemsize
            lf.count = dt.itemsize // max(1, dt.base.itemsize)
            lf.kind = <LeafKind>_leaf_kind(dt.base)
            lf.base = <PyObject *>p.bases[i]
            lf.ndim = len(dt.shape)
            lf.dims_at = ndims
            for k in range(lf.ndim):
                p.dims[ndims] = dt.shape[k]
                ndims += 1
        return p

    cdef const char *pack(self, object obj) except NULL:
        """obj (a tuple, or a scalar for plain dtypes) written into self.buf."""
        cdef Py_ssize_t i
        cdef tuple t
        cdef const _Leaf *lf
        cdef PyObject *v
        if not self.is_struct:
            if not _put_fast(&self.leaves[0], <PyObject *>obj, self.buf):
                self._put(0, obj, self.buf)
            return self.buf
        t = obj  # checked: only tuples are packed into structured records
        if len(t) != self.n_fields:
            raise ValueError(f"a record of this ring has {self.n_fields} fields, got a tuple of {len(t)}")
        for i in range(self.n_fields):
            lf = &self.leaves[i]
            v = _tuple_item(t, i)  # borrowed: t holds it for the whole call
            if lf.ndim == 0:
                if not _put_fast(lf, v, self.buf + lf.offset):
                    self._put(i, <object>v, self.buf + lf.offset)
            elif not self._put_array_fast(lf, <object>v):
                self._put_array(i, <object>v)
        return self.buf

    cdef object pack_list(self, list items, object dtype):
        """items (tuples, or scalars of the types push() packs for a plain dtype)
        as a new array of records, or None when an item is anything else or is
        refused: then the general path decides and raises its own error, so a
        list is refused exactly as before and only what the plan takes is faster."""
        cdef Py_ssize_t k, n = len(items)
        cdef cnp.ndarray out
        cdef char *dst
        cdef const char *src
        if n == 0:
            return None
        out = np.zeros(n, dtype)  # zeros: the padding between fields, as pack() leaves it
        dst = <char *>cnp.PyArray_DATA(out)
        for k in range(n):
            item = items[k]
            ti = type(item)
            if self.is_struct:
                if ti is not tuple:
                    return None
            elif not (ti is int or ti is float or ti is bool or ti is bytes or ti is complex
                      or isinstance(item, np.generic)):
                return None
            try:
                src = self.pack(item)
            except (TypeError, ValueError, OverflowError):
                return None
            memcpy(dst + k * self.record_size, src, self.record_size)
        return out

    cdef const char *pack_general(self, object obj) except NULL:
        """pack() without its fast path: every value through _put / _put_array
        (what tests compare the fast path with)."""
        cdef Py_ssize_t i
        cdef tuple t
        if not self.is_struct:
            self._put(0, obj, self.buf)
            return self.buf
        t = obj
        if len(t) != self.n_fields:
            raise ValueError(f"a record of this ring has {self.n_fields} fields, got a tuple of {len(t)}")
        for i in range(self.n_fields):
            if self.leaves[i].ndim == 0:
                self._put(i, t[i], self.buf + self.leaves[i].offset)
            else:
                self._put_array(i, t[i])
        return self.buf

    cdef bint _put_array_fast(self, const _Leaf *lf, object v) noexcept:
        """v stored when it is an ndarray of the field's exact shape and an
        equivalent dtype, C-contiguous, or a flat list or tuple of values the
        scalar plan takes; False when _put_array has to decide."""
        cdef Py_ssize_t k
        cdef char *dst = self.buf + lf.offset
        cdef cnp.ndarray a
        cdef cnp.npy_intp *d
        if type(v) is cnp.ndarray:
            a = <cnp.ndarray>v
            if cnp.PyArray_NDIM(a) != lf.ndim or not cnp.PyArray_IS_C_CONTIGUOUS(a):
                return False
            d = cnp.PyArray_DIMS(a)
            for k in range(lf.ndim):
                if d[k] != self.dims[lf.dims_at + k]:
                    return False
            if (<PyObject *>cnp.PyArray_DESCR(a) != lf.base
                    and not cnp.PyArray_EquivTypes(<cnp.dtype><PyObject *>cnp.PyArray_DESCR(a), <cnp.dtype>lf.base)):
                return False
            memcpy(dst, cnp.PyArray_DATA(a), lf.count * lf.size)
            return True
        if (type(v) is list or type(v) is tuple) and lf.ndim == 1 and len(v) == lf.count:
            # a value the plan does not take sends the whole field to _put_array,
            # which rewrites (or refuses) every element
            if type(v) is list:
                for k in range(lf.count):
                    if not _put_fast(lf, _list_item(v, k), dst + k * lf.size):
                        return False
            else:
                for k in range(lf.count):
                    if not _put_fast(lf, _tuple_item(v, k), dst + k * lf.size):
                        return False
            return True
        return False

    cdef int _put_array(self, Py_ssize_t i, object v) except -1:
        """A subarray field: an array of its exact dtype and shape is copied as it
        is, a flat list or tuple is stored element by element, anything else is
        converted with the general rule."""
        cdef Py_ssize_t k, n = self.leaves[i].count, size = self.leaves[i].size
        cdef char *dst = self.buf + self.leaves[i].offset
        cdef cnp.ndarray a
        shape = self.shapes[i]
        if type(v) is np.ndarray:
            a = <cnp.ndarray>v
            if (a.dtype is self.bases[i] or a.dtype == self.bases[i]) and v.shape == shape:
                if not cnp.PyArray_IS_C_CONTIGUOUS(a):
                    a = np.ascontiguousarray(a)
                memcpy(dst, cnp.PyArray_DATA(a), n * size)
                return 0
        elif (type(v) is list or type(v) is tuple) and len(shape) == 1 and len(v) == n:
            for k in range(n):
                self._put(i, v[k], dst + k * size)
            return 0
        conv = np.ascontiguousarray(_checked_leaf(v, self.bases[i], self.names[i]))
        if conv.shape != shape:
            raise ValueError(f"{_field_label(self.names[i])}: needs shape {shape}, got {conv.shape}")
        a = <cnp.ndarray>conv
        memcpy(dst, cnp.PyArray_DATA(a), n * size)
        return 0

    cdef int _put(self, Py_ssize_t i, object v, char *dst) except -1:
        cdef Py_ssize_t size = self.leaves[i].size
        cdef LeafKind kind = self.leaves[i].kind
        cdef long long si
        cdef unsigned long long ui
        cdef double d, im
        cdef float f
        cdef Py_ssize_t n
        tv = type(v)
        if kind == LEAF_INT or kind == LEAF_UINT:
            if tv is not int and tv is not bool:
                if isinstance(v, (np.integer, np.bool_)):
                    v = int(v)
                else:
                    return _type_error(self.names[i], v, self.dtypes[i])
            try:
                if kind == LEAF_INT:
                    si = v
                    if size < 8 and not (-(1LL << (8 * size - 1)) <= si < (1LL << (8 * size - 1))):
                        raise OverflowError
                else:
                    ui = v
                    if size < 8 and ui >= (1ULL << (8 * size)):
                        raise OverflowError
            except OverflowError:
                return _range_error(self.names[i], v, self.dtypes[i])
            if kind == LEAF_INT:
                _store_int(dst, si, size)
            else:
                _store_int(dst, <long long>ui, size)
            return 0
        if kind == LEAF_FLOAT:
            if tv is float:
                d = PyFloat_AS_DOUBLE(v)
            elif tv is int or tv is bool or isinstance(v, (np.floating, np.integer, np.bool_)):
                try:
                    d = float(v)
                except OverflowError:
                    return _range_error(self.names[i], v, self.dtypes[i])
            else:
                return _type_error(self.names[i], v, self.dtypes[i])
            if size == 8:
                memcpy(dst, &d, 8)
            else:
                f = <float>d
                if isfinite(d) and not isfinite(f):
                    return _range_error(self.names[i], v, self.dtypes[i])
                memcpy(dst, &f, 4)
            return 0
        if kind == LEAF_COMPLEX:
            if tv is complex or isinstance(v, np.complexfloating):
                d = v.real
                im = v.imag
            elif tv is float or tv is int or tv is bool or isinstance(v, (np.floating, np.integer, np.bool_)):
                try:
                    d = float(v)
                except OverflowError:
                    return _range_error(self.names[i], v, self.dtypes[i])
                im = 0.0
            else:
                return _type_error(self.names[i], v, self.dtypes[i])
            if size == 16:
                memcpy(dst, &d, 8)
                memcpy(dst + 8, &im, 8)
            else:
                f = <float>d
                if isfinite(d) and not isfinite(f):
                    return _range_error(self.names[i], v, self.dtypes[i])
                memcpy(dst, &f, 4)
                f = <float>im
                if isfinite(im) and not isfinite(f):
                    return _range_error(self.names[i], v, self.dtypes[i])
                memcpy(dst + 4, &f, 4)
            return 0
        if kind == LEAF_BOOL:
            if tv is bool or isinstance(v, np.bool_):
                dst[0] = 1 if v else 0
                return 0
            return _type_error(self.names[i], v, self.dtypes[i])
        # LEAF_BYTES
        if tv is not bytes and not isinstance(v, bytes):  # np.bytes_ subclasses bytes
            return _type_error(self.names[i], v, self.dtypes[i])
        n = PyBytes_GET_SIZE(v)
        if n > size:
            raise ValueError(f"{_field_label(self.names[i])}: {n} bytes do not fit {self.dtypes[i]} "
                             f"(at most {size}); nothing is cut silently")
        memcpy(dst, PyBytes_AS_STRING(v), n)
        memset(dst + n, 0, size - n)
        return 0


cdef inline bint _put_fast(const _Leaf *lf, PyObject *v, char *dst) noexcept:
    """v stored when it is an exact int, float, bool or bytes that the field
    takes as it is (the cases _Packer._put would store unchanged); False leaves
    v, and any error it deserves, to _Packer._put."""
    cdef int overflow = 0
    cdef long long si
    cdef double d
    cdef float f
    cdef Py_ssize_t n, size = lf.size
    cdef LeafKind kind = lf.kind
    cdef PyTypeObject *tv = _type_of(v)
    if kind == LEAF_INT or kind == LEAF_UINT:
        if tv != &PyLong_Type:
            return False
        si = _long_as_ll(v, &overflow)
        if overflow:
            return False  # beyond int64: uint64's upper half, or out of range
        if kind == LEAF_INT:
            if size < 8 and not (-(1LL << (8 * size - 1)) <= si < (1LL << (8 * size - 1))):
                return False
        elif si < 0 or (size < 8 and si >= (1LL << (8 * size))):
            return False
        _store_int(dst, si, size)
        return True
    if kind == LEAF_FLOAT:
        if tv != &PyFloat_Type:
            return False
        d = _float_value(v)
        if size == 8:
            memcpy(dst, &d, 8)
            return True
        f = <float>d
        if isfinite(d) and not isfinite(f):
            return False
        memcpy(dst, &f, 4)
        return True
    if kind == LEAF_BYTES:
        if tv != &PyBytes_Type:
            return False
        n = _bytes_size(v)
        if n > size:
            return False
        memcpy(dst, _bytes_data(v), n)
        memset(dst + n, 0, size - n)
        return True
    if kind == LEAF_BOOL and tv == &PyBool_Type:
        dst[0] = 1 if v == _py_true else 0
        return True
    return False


cdef inline void _store_int(char *dst, long long v, Py_ssize_t size) noexcept:
    cdef int8_t b1
    cdef int16_t b2
    cdef int32_t b4
    if size == 8:
        memcpy(dst, &v, 8)
    elif size == 4:
        b4 = <int32_t>v
        memcpy(dst, &b4, 4)
    elif size == 2:
        b2 = <int16_t>v
        memcpy(dst, &b2, 2)
    else:
        b1 = <int8_t>v
        memcpy(dst, &b1, 1)


cdef int _leaf_kind(object dt) except -2:
    """The packer's kind for a plain native dtype, -1 if the packer cannot store it."""
    k = dt.kind
    if k == "b":
        return LEAF_BOOL
    if k == "i" and dt.itemsize in (1, 2, 4, 8):
        return LEAF_INT
    if k == "u" and dt.itemsize in (1, 2, 4, 8):
        return LEAF_UINT
    if k == "f" and dt.itemsize in (4, 8):
        return LEAF_FLOAT
    if k == "c" and dt.itemsize in (8, 16):
        return LEAF_COMPLEX
    if k == "S":
        return LEAF_BYTES
    return -1


def _packed(dtype, value, bint fast=True, before=()):
    """The record the packer makes of value (a tuple, or a scalar for a plain
    dtype) as bytes, through pack() or, with fast=False, pack_general(); None
    when the dtype has no packer. The values of before are packed first by the
    same packer (their errors ignored), as earlier pushes of a producer. For tests."""
    cdef _Packer p = _Packer.build(np.dtype(dtype))
    cdef const char *out
    if p is None:
        return None
    for v in list(before) + [value]:
        if p.is_struct and type(v) is not tuple:
            raise TypeError("a structured record is packed from a tuple")
        if v is not value:
            try:
                p.pack(v) if fast else p.pack_general(v)
            except (TypeError, ValueError):
                pass
    out = p.pack(value) if fast else p.pack_general(value)
    return out[:p.record_size]


# ---- the general path ----------------------------------------------------------

def _object_shadow(dtype):
    """dtype with every leaf field replaced by object (shapes kept), so numpy
    spreads nested tuples over the fields without converting any value."""
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return np.dtype((_object_shadow(base), shape))
    if dtype.names is None:
        return np.dtype(object)
    return np.dtype([(name, _object_shadow(dtype.fields[name][0])) for name in dtype.names])


def _checked_leaf(values, dt, name):
    """values (a list, scalar or object array) as an array of the plain dtype dt,
    or TypeError/ValueError if any value would change."""
    label = _field_label(name)
    try:
        if isinstance(values, np.ndarray) and values.dtype.hasobject:
            src = np.array(values.tolist()) if values.size else np.empty(values.shape, dt)
        else:
            src = np.asarray(values)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{label}: cannot read the values as {dt} ({exc})") from None
    if src.dtype.hasobject:
        flat = src.ravel().tolist()
        if dt.kind in "iu" and flat and all(type(v) is int for v in flat):
            raise ValueError(f"{label}: {max(flat, key=abs)} is out of range for {dt}")
        raise TypeError(f"{label}: values of mixed or unsupported types cannot be stored as {dt}")
    sk, tk = src.dtype.kind, dt.kind
    # signed into unsigned (and back) is decided by the values: the range check below
    if not (sk in "iu" and tk in "iu") and not np.can_cast(src.dtype, dt, "same_kind"):
        raise TypeError(f"{label}: {src.dtype} values cannot be stored as {dt} without loss "
                        f"(numpy's same_kind rule; convert them explicitly)")
    if sk in "SU" and src.dtype.itemsize > dt.itemsize:
        raise ValueError(f"{label}: a string of {src.dtype.itemsize // (4 if sk == 'U' else 1)} "
                         f"characters does not fit {dt}; nothing is cut silently")
    if tk in "iu" and sk in "iu" and src.size:
        info = np.iinfo(dt)
        lo, hi = src.min(), src.max()
        if lo < info.min or hi > info.max:
            raise ValueError(f"{label}: {lo if lo < info.min else hi} is out of range for {dt}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = src.astype(dt)
    if tk in "fc" and sk in "fc" and src.size and bool(np.any(np.isfinite(src) & ~np.isfinite(out))):
        raise ValueError(f"{label}: a value is out of range for {dt}")
    return out


def _fill_fields(out, src, dtype, prefix):
    for name in dtype.names:
        base = dtype.fields[name][0].base
        path = prefix + name
        if base.names is not None:
            _fill_fields(out[name], src[name], base, path + ".")
        else:
            vals = _checked_leaf(src[name], base, path)
            try:
                out[name] = vals
            except ValueError as exc:
                raise ValueError(f"field {path!r}: {exc}") from None


def _checked_records(obj, dtype):
    """obj (lists, tuples, scalars) as an array of records of dtype, each value
    converted only where nothing is lost."""
    if dtype.names is None:
        return _checked_leaf(obj, dtype, None)
    try:
        src = np.array(obj, dtype=_object_shadow(dtype))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot read {type(obj).__name__} as records of {dtype}: {exc}") from None
    out = np.zeros(src.shape, dtype)  # zeros: padding between fields is never stale memory
    _fill_fields(out, src, dtype, "")
    return out
