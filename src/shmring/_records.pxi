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
# handles everything else (lists for push_many, nested and subarray fields)
# with numpy, field by field.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
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


cdef class _Packer:
    """Writes a tuple of values (structured dtypes whose fields are all plain
    native numbers or bytes) or one value (plain dtypes) into a record buffer.
    Built only for dtypes it can handle entirely (see _Packer.build)."""

    cdef Py_ssize_t n_fields
    cdef bint is_struct
    cdef list names
    cdef list dtypes
    cdef list shapes            # subarray shape of each field, () for a scalar field
    cdef list bases             # element dtype of each field
    cdef Py_ssize_t *offsets
    cdef Py_ssize_t *sizes      # element size
    cdef Py_ssize_t *counts     # elements per field (1 for a scalar field)
    cdef LeafKind *kinds
    cdef char *buf
    cdef Py_ssize_t record_size

    def __dealloc__(self):
        free(self.offsets)
        free(self.sizes)
        free(self.kinds)
        free(self.counts)
        free(self.buf)

    @staticmethod
    cdef _Packer build(object dtype):
        """A packer for dtype, or None when some field needs the general path."""
        cdef _Packer p
        cdef Py_ssize_t i
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
        p = _Packer.__new__(_Packer)
        p.n_fields = len(leaves)
        p.is_struct = dtype.names is not None
        p.names = [l[0] for l in leaves]
        p.dtypes = [l[1] for l in leaves]
        p.bases = [l[1].base for l in leaves]
        p.shapes = [tuple(l[1].shape) for l in leaves]
        p.record_size = dtype.itemsize
        p.offsets = <Py_ssize_t *>malloc(p.n_fields * sizeof(Py_ssize_t))
        p.sizes = <Py_ssize_t *>malloc(p.n_fields * sizeof(Py_ssize_t))
        p.kinds = <LeafKind *>malloc(p.n_fields * sizeof(LeafKind))
        p.counts = <Py_ssize_t *>malloc(p.n_fields * sizeof(Py_ssize_t))
        p.buf = <char *>malloc(p.record_size)
        if p.offsets == NULL or p.sizes == NULL or p.kinds == NULL or p.counts == NULL or p.buf == NULL:
            raise MemoryError()
        memset(p.buf, 0, p.record_size)  # padding between fields stays zero
        for i in range(p.n_fields):
            p.offsets[i] = leaves[i][2]
            p.sizes[i] = leaves[i][1].base.itemsize
            p.counts[i] = leaves[i][1].itemsize // max(1, leaves[i][1].base.itemsize)
            p.kinds[i] = <LeafKind>_leaf_kind(leaves[i][1].base)
        return p

    cdef const char *pack(self, object obj) except NULL:
        """obj (a tuple, or a scalar for plain dtypes) written into self.buf."""
        cdef Py_ssize_t i
        cdef tuple t
        if not self.is_struct:
            self._put(0, obj, self.buf)
            return self.buf
        t = obj  # checked: only tuples are packed into structured records
        if len(t) != self.n_fields:
            raise ValueError(f"a record of this ring has {self.n_fields} fields, got a tuple of {len(t)}")
        for i in range(self.n_fields):
            if self.counts[i] == 1 and not self.shapes[i]:
                self._put(i, t[i], self.buf + self.offsets[i])
            else:
                self._put_array(i, t[i])
        return self.buf

    cdef int _put_array(self, Py_ssize_t i, object v) except -1:
        """A subarray field: an array of its exact dtype and shape is copied as it
        is, a flat list or tuple is stored element by element, anything else is
        converted with the general rule."""
        cdef Py_ssize_t k, n = self.counts[i], size = self.sizes[i]
        cdef char *dst = self.buf + self.offsets[i]
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
        cdef Py_ssize_t size = self.sizes[i]
        cdef LeafKind kind = self.kinds[i]
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
    out = np.empty(src.shape, dtype)
    _fill_fields(out, src, dtype, "")
    return out
