# The board's compiled half (included from _ring.pyx): the mapping, key
# resolution, and the read / write / view / wait paths that must be fast.
# Creation, naming, pickling and watch() live in shmring.board.

from libc.errno cimport EAGAIN, EINTR, ENOENT, ETIMEDOUT
from shmring._cboard cimport *
from shmring.errors import BoardChanged, NotABoardError

BOARD_MAX_COPIES = SHMR_BOARD_MAX_COPIES
BOARD_MAX_KEYS = SHMR_BOARD_MAX_KEYS
BOARD_MAX_VALUE = SHMR_BOARD_MAX_VALUE
BOARD_MAX_NAMES = SHMR_BOARD_MAX_NAMES
BOARD_DESCR_MAX = SHMR_BOARD_DESCR_MAX
# A read that was overtaken this many times in a row takes the GIL back to run
# signal handlers, then tries again (a writer faster than the reader's copy).
DEF BOARD_READ_TRIES = 64


cdef int _board_raise(int64_t rc, str what) except -1:
    cdef int code = <int>(-rc)
    if code == SHMR_ENOTBOARD:
        raise NotABoardError(f"{what}: the shared-memory segment is a shmring ring, not a board")
    if code == SHMR_EBADMAGIC:
        raise NotABoardError(f"{what}: the shared-memory segment is not a shmring board (bad magic)")
    if code == SHMR_EVERSION:
        raise LayoutVersionError(
            f"{what}: the board was written with another layout version (this shmring reads v{SHMR_BOARD_VERSION})")
    return _raise(rc, what)


@cython.final
cdef class BoardMapping:
    """Owns one mapping of a board segment; every array over board memory holds
    a reference, so the unmap happens only after the last of them is gone."""

    cdef shmr_board *b
    cdef readonly str name

    def __dealloc__(self):
        if self.b != NULL:
            shmr_board_detach(self.b)
            self.b = NULL

    @staticmethod
    def create(str name, uint64_t nkeys, uint64_t value_size, uint32_t align, uint32_t ncopies,
               uint32_t key_kind, bytes descr, bytes names, unsigned perm):
        cdef BoardMapping m = BoardMapping.__new__(BoardMapping)
        cdef shmr_board_params p
        p.nkeys = nkeys
        p.value_size = value_size
        p.value_align = align
        p.ncopies = ncopies
        p.key_kind = key_kind
        p.descr = descr
        p.descr_len = <uint32_t>len(descr)
        p.names = names
        p.names_len = len(names)
        cdef bytes bname = name.encode()
        cdef const char *cname = bname
        cdef int rc
        with nogil:  # posix_fallocate of a large segment takes a while
            rc = shmr_board_create(cname, &p, perm, &m.b)
        if rc:
            _board_raise(rc, f"create board {name!r}")
        m.name = name
        return m

    @staticmethod
    def attach(str name):
        cdef BoardMapping m = BoardMapping.__new__(BoardMapping)
        cdef bytes bname = name.encode()
        cdef int rc = shmr_board_attach(bname, &m.b)
        if rc:
            _board_raise(rc, f"attach board {name!r}")
        m.name = name
        return m

    @property
    def file_owner(self):
        """(uid, mode bits) of the board's file, from fstat on the descriptor mapped."""
        cdef uint32_t uid, mode
        shmr_board_file_owner(self.b, &uid, &mode)
        return uid, mode

    @property
    def descr(self):
        cdef uint32_t n
        cdef const char *d = shmr_board_descr(self.b, &n)
        return d[:n].decode("ascii")

    @property
    def names(self):
        cdef uint64_t n
        cdef const char *d = shmr_board_names(self.b, &n)
        return d[:n]

    def info(self):
        cdef shmr_board_info i
        shmr_board_info_get(self.b, &i)
        return {"nkeys": i.nkeys, "value_size": i.value_size, "segment_size": i.segment_size,
                "stride": i.stride, "copies": i.ncopies, "key_kind": i.key_kind,
                "layout_version": i.version, "creator_pid": i.creator_pid,
                "create_time_ns": i.create_time_ns}

    def key_info(self, uint64_t idx):
        cdef shmr_board_key_info k
        if shmr_board_key_info_get(self.b, idx, &k):
            raise IndexError(idx)
        return {"version": k.version, "owner_pid": k.owner_pid or None, "owner_alive": bool(k.owner_alive),
                "last_writer_pid": k.last_writer_pid or None, "last_writer_alive": bool(k.last_writer_alive),
                "write_time": k.write_time_ns / 1e9 if k.write_time_ns else None,
                "takeovers": k.takeovers, "waiters": k.waiters}


cdef class BoardCore:
    """The compiled half of shmring.Board (see there for the API)."""

    cdef object __weakref__
    cdef BoardMapping _m
    cdef readonly str name
    cdef object _dtype          # value dtype as the user gave it
    cdef object _base           # element dtype (subarray base, else _dtype)
    cdef tuple _shape           # value shape: subarray shape, else ()
    cdef bint _is_sub
    cdef object _same_dtype
    cdef Py_ssize_t _vs
    cdef uint64_t _nkeys
    cdef dict _index            # str keys -> position; None for int keys
    cdef tuple _keys
    cdef int64_t _spin_ns
    cdef int64_t _slice_ns
    cdef char *_scratch
    cdef readonly uint64_t retries   # reads that were overtaken by a writer and redone

    def __cinit__(self):
        self._scratch = NULL

    def __dealloc__(self):
        free(self._scratch)

    def _init_core(self, BoardMapping m, str name, object dtype, tuple keys, bint str_keys,
                   double spin, double liveness_interval):
        self._m = m
        self.name = name
        self._dtype = dtype
        if dtype.subdtype is not None:
            self._base, self._shape = dtype.subdtype
            self._is_sub = True
        else:
            self._base, self._shape = dtype, ()
            self._is_sub = False
        self._vs = dtype.itemsize
        self._nkeys = len(keys)
        self._keys = keys
        self._index = {k: i for i, k in enumerate(keys)} if str_keys else None
        if spin < 0:
            raise ValueError(f"spin must be >= 0 seconds, not {spin!r}")
        if not (0.001 <= liveness_interval <= 60):
            raise ValueError(f"liveness_interval must be in [0.001, 60] seconds, not {liveness_interval!r}")
        self._spin_ns = <int64_t>(spin * 1e9)
        self._slice_ns = <int64_t>(liveness_interval * 1e9)
        if not self._is_sub and self._vs <= SCRATCH_MAX:
            self._scratch = <char *>malloc(self._vs)
            if self._scratch == NULL:
                raise MemoryError()

    cdef inline shmr_board *_b(self) except NULL:
        if self._m is None:
            raise ValueError(f"board {self.name!r} is closed")
        return self._m.b

    cdef int64_t _key(self, object key) except -1:
        cdef Py_ssize_t k
        if self._index is None:
            if type(key) is int or (isinstance(key, (int, np.integer)) and not isinstance(key, bool)):
                k = key
                if 0 <= k < <Py_ssize_t>self._nkeys:
                    return k
                raise KeyError(f"board {self.name!r} has keys 0..{self._nkeys - 1}; {key!r} is not one of them")
            raise TypeError(f"board {self.name!r} has int keys 0..{self._nkeys - 1}, "
                            f"not {type(key).__name__} keys ({key!r})")
        if type(key) is str:
            idx = self._index.get(key)
            if idx is not None:
                return idx
            raise KeyError(f"board {self.name!r} has no key {key!r}")
        raise TypeError(f"board {self.name!r} has str keys, not {type(key).__name__} keys ({key!r})")

    cdef object _keyname(self, uint64_t idx):
        return self._keys[idx]

    # -- writing -------------------------------------------------------------

    cdef object _as_value(self, object obj):
        """obj as a C-contiguous buffer holding exactly one value of the board's dtype."""
        if type(obj) is np.void:
            dt = (<object>obj).dtype
            if dt is not self._dtype and dt is not self._same_dtype:
                if dt != self._dtype:
                    raise TypeError(f"value has dtype {dt}, board {self.name!r} holds {self._dtype}")
                self._same_dtype = dt
            return obj
        if isinstance(obj, np.ndarray):
            arr = obj
            if arr.dtype is not self._base and arr.dtype != self._base:
                if self._base.names is not None or arr.dtype.hasobject or \
                        not np.can_cast(arr.dtype, self._base, "same_kind"):
                    raise TypeError(f"value has dtype {arr.dtype}, board {self.name!r} holds {self._dtype}")
                arr = arr.astype(self._base)
        else:
            if self._base.names is not None and not isinstance(obj, tuple):
                raise TypeError(f"cannot write {type(obj).__name__} to board {self.name!r} of {self._dtype}: "
                                f"pass a np.void, a tuple or an array of that dtype")
            # the rings' lossless conversion: same_kind casts, ranges and string lengths checked
            arr = _checked_records(obj, self._base)
        if arr.shape != self._shape and not (arr.shape == (1,) + self._shape):
            raise ValueError(f"a value of board {self.name!r} has shape {self._shape}, got {arr.shape}")
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        return arr

    def write(self, key, value, timeout=None):
        """Publish ``value`` as the latest value of ``key``; returns its version.
        Waits for another live writer of the same key (``timeout`` None = forever,
        else seconds: TimeoutError); takes over a dead writer's claim."""
        cdef shmr_board *b = self._b()
        cdef BoardMapping keep = self._m  # close() from another thread must not unmap under us
        cdef int64_t idx = self._key(key)
        cdef Py_buffer buf
        cdef int64_t rc, sl = 0
        cdef Waiting w
        cdef bint big = self._vs >= NOGIL_BYTES
        src = self._as_value(value)
        PyObject_GetBuffer(src, &buf, PyBUF_SIMPLE)
        try:
            if buf.len != self._vs:
                raise ValueError(f"value has {buf.len} bytes, a value of board {self.name!r} has {self._vs}")
            _waiting_init(&w, self._spin_ns)
            while True:
                # first try (sl = 0): claim if free, spinning briefly, no sleep
                if big or w.started:
                    with nogil:
                        rc = shmr_board_write(b, idx, buf.buf, buf.len, sl, self._spin_ns)
                else:
                    rc = shmr_board_write(b, idx, buf.buf, buf.len, sl, self._spin_ns)
                if rc > 0:
                    return rc
                if rc != -ETIMEDOUT and rc != -EINTR:
                    _board_raise(rc, f"write key {key!r} of board {self.name!r}")
                PyErr_CheckSignals()
                if not w.started:
                    _waiting_start(&w, timeout)
                elif w.deadline >= 0 and _mono_ns() >= w.deadline:
                    raise TimeoutError(f"write key {key!r} of board {self.name!r}: another live process "
                                       f"held the key's write claim for the whole timeout")
                sl = _waiting_slice(&w, self._slice_ns)
                self._b()
        finally:
            PyBuffer_Release(&buf)

    def __setitem__(self, key, value):
        self.write(key, value)

    # -- reading -------------------------------------------------------------

    cdef int _read_into(self, shmr_board *b, int64_t idx, char *dst, uint64_t *version) except -1:
        cdef BoardMapping keep = self._m  # close() from another thread must not unmap under us
        cdef int rc
        cdef uint64_t retries = 0
        while True:
            if self._vs >= NOGIL_BYTES:
                with nogil:
                    rc = shmr_board_read(b, idx, dst, self._vs, version, BOARD_READ_TRIES, &retries)
            else:
                rc = shmr_board_read(b, idx, dst, self._vs, version, BOARD_READ_TRIES, &retries)
            self.retries += retries
            retries = 0
            if rc == 0:
                return 0
            if rc == -ENOENT:
                raise KeyError(f"key {self._keyname(idx)!r} of board {self.name!r} has never been written")
            if rc != -EAGAIN:
                _board_raise(rc, f"read board {self.name!r}")
            PyErr_CheckSignals()

    cdef object _read(self, shmr_board *b, int64_t idx, object out, uint64_t *version):
        if out is not None:
            if not isinstance(out, np.ndarray) or out.dtype != self._base or out.shape != self._shape \
                    or not out.flags.c_contiguous or not out.flags.writeable:
                raise ValueError(f"out must be a writable C-contiguous array of dtype {self._base} "
                                 f"and shape {self._shape}")
            self._read_into(b, idx, <char *>cnp.PyArray_DATA(out), version)
            return out
        if self._scratch != NULL:
            self._read_into(b, idx, self._scratch, version)
            return PyArray_Scalar(self._scratch, self._dtype, NULL)
        arr = np.empty(self._shape, dtype=self._base)
        self._read_into(b, idx, <char *>cnp.PyArray_DATA(arr), version)
        return arr

    def read(self, key, *, with_version=False, out=None):
        """A copy of the latest value of ``key`` (KeyError if it was never written);
        ``with_version=True`` returns ``(value, version)``; ``out`` reads into that array."""
        cdef shmr_board *b = self._b()
        cdef uint64_t version = 0
        value = self._read(b, self._key(key), out, &version)
        if with_version:
            return value, version
        return value

    def __getitem__(self, key):
        cdef shmr_board *b = self._b()
        cdef uint64_t version = 0
        return self._read(b, self._key(key), None, &version)

    def version(self, key):
        """Writes of ``key`` so far (0: never written)."""
        cdef shmr_board *b = self._b()
        return shmr_board_version(b, self._key(key))

    def versions(self):
        """Every key's version, as a uint64 array in key order."""
        cdef shmr_board *b = self._b()
        cdef cnp.ndarray out = np.empty(self._nkeys, dtype=np.uint64)
        cdef uint64_t *p = <uint64_t *>cnp.PyArray_DATA(out)
        cdef uint64_t i
        for i in range(self._nkeys):
            p[i] = shmr_board_version(b, i)
        return out

    def snapshot(self):
        """``(values, versions)``: every key's latest value (zeros where never written)
        and version (0 there), as arrays in key order."""
        cdef shmr_board *b = self._b()
        values = np.zeros((self._nkeys,) + self._shape, dtype=self._base)
        cdef cnp.ndarray versions = np.zeros(self._nkeys, dtype=np.uint64)
        cdef char *dst = <char *>cnp.PyArray_DATA(values)
        cdef uint64_t *vp = <uint64_t *>cnp.PyArray_DATA(versions)
        cdef uint64_t i, v
        cdef int rc
        cdef uint64_t retries = 0
        for i in range(self._nkeys):
            while True:
                rc = shmr_board_read(b, i, dst + i * self._vs, self._vs, &v, BOARD_READ_TRIES, &retries)
                if rc == 0:
                    vp[i] = v
                    break
                if rc == -ENOENT:
                    break
                PyErr_CheckSignals()
        self.retries += retries
        return values, versions

    def view(self, key):
        """Context manager: a read-only array over the latest value of ``key`` in
        shared memory (no copy). Leaving the block raises BoardChanged if a writer
        started to overwrite that copy meanwhile (what was read is then invalid)."""
        cdef shmr_board *b = self._b()
        cdef int64_t idx = self._key(key)
        cdef const void *ptr = NULL
        cdef uint64_t version = 0, token = 0
        cdef int rc
        cdef cnp.npy_intp dims[33]
        cdef int nd = <int>len(self._shape)
        while True:
            rc = shmr_board_view(b, idx, &ptr, &version, &token)
            if rc == 0:
                break
            if rc == -ENOENT:
                raise KeyError(f"key {key!r} of board {self.name!r} has never been written")
            if rc != -EAGAIN:
                _board_raise(rc, f"view board {self.name!r}")
            PyErr_CheckSignals()
        for k, s in enumerate(self._shape):
            dims[k] = s
        descr = self._base
        Py_INCREF(descr)  # PyArray_NewFromDescr steals it
        arr = PyArray_NewFromDescr(np.ndarray, descr, nd, dims, NULL, <void *>ptr,
                                   cnp.NPY_ARRAY_C_CONTIGUOUS, NULL)
        cnp.set_array_base(arr, self._m)
        return BoardView._make(self._m, idx, key, version, token, arr)

    # -- waiting -------------------------------------------------------------

    cdef uint64_t _newer(self, shmr_board *b, int64_t idx, object newer_than) except? 0:
        if newer_than is None:
            return shmr_board_version(b, idx)
        if not isinstance(newer_than, (int, np.integer)) or isinstance(newer_than, bool) or newer_than < 0:
            raise ValueError(f"newer_than must be None or a version (an int >= 0), not {newer_than!r}")
        return <uint64_t>newer_than

    def wait(self, key, newer_than=None, timeout=None):
        """Block (no CPU) until ``key`` has a version above ``newer_than`` (default:
        its version now), then return ``(value, version)``. TimeoutError on timeout."""
        cdef shmr_board *b = self._b()
        cdef BoardMapping keep = self._m
        cdef int64_t idx = self._key(key)
        cdef uint64_t newer, version = 0
        cdef Waiting w
        cdef int64_t sl
        cdef int rc
        _waiting_init(&w, self._spin_ns)
        _waiting_start(&w, timeout)
        newer = self._newer(b, idx, newer_than)
        while shmr_board_version(b, idx) <= newer:
            sl = _waiting_slice(&w, self._slice_ns)
            if sl == 0:
                raise TimeoutError(f"key {key!r} of board {self.name!r} was not written past version "
                                   f"{newer} within {timeout} s")
            with nogil:
                rc = shmr_board_wait(b, idx, newer, sl, self._spin_ns)
            PyErr_CheckSignals()
            b = self._b()
        value = self._read(b, idx, None, &version)
        return value, version

    def change(self, key, newer_than=None):
        """A BoardChange: ready once ``key`` has a version above ``newer_than``
        (default: its version now). Pass it to wait_any() / await_any() beside ring
        handles; await_change() awaits one."""
        cdef shmr_board *b = self._b()
        cdef int64_t idx = self._key(key)
        return BoardChange._make(self, self._m, idx, key, self._newer(b, idx, newer_than))

    def _wait_any(self, list idxs, list newer, double timeout):
        """True once any idxs[i] has a version above newer[i]; False after timeout s."""
        cdef shmr_board *b = self._b()
        cdef BoardMapping keep = self._m
        cdef Py_ssize_t n = len(idxs), i
        cdef cnp.ndarray ka = np.asarray(idxs, dtype=np.uint64)
        cdef cnp.ndarray na = np.asarray(newer, dtype=np.uint64)
        cdef uint64_t *kp = <uint64_t *>cnp.PyArray_DATA(ka)
        cdef uint64_t *np_ = <uint64_t *>cnp.PyArray_DATA(na)
        cdef Waiting w
        cdef int64_t sl
        cdef int rc
        _waiting_init(&w, 0)
        _waiting_start(&w, None if timeout < 0 else timeout)
        while True:
            for i in range(n):
                if shmr_board_version(b, kp[i]) > np_[i]:
                    return True
            sl = _waiting_slice(&w, self._slice_ns)
            if sl == 0:
                return False
            with nogil:
                rc = shmr_board_wait_any(b, kp, np_, n, sl)
            PyErr_CheckSignals()
            b = self._b()

    def _index_of(self, key):
        return self._key(key)

    def _mapping(self):
        return self._m

    def close(self):
        """Detach; arrays handed out by views stay valid memory until they are freed."""
        if self._m is not None:
            shmr_board_wake_all(self._m.b)
        self._m = None

    @property
    def closed(self):
        return self._m is None

    @property
    def dtype(self):
        return self._dtype

    @property
    def keys(self):
        return list(self._keys)

    def __len__(self):
        return self._nkeys

    def __contains__(self, key):
        if self._index is None:
            return isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= key < <Py_ssize_t>self._nkeys
        return key in self._index

    def __iter__(self):
        return iter(self._keys)


@cython.final
cdef class BoardChange(_Waitable):
    """One key of a board written past a version, as a condition wait_any(),
    await_any() and the event loops wait on (the key's own eventcount, the one
    Board.wait() sleeps on). Ready at once when the board is closed, so a wait
    ends and the next call on the board says so."""

    cdef BoardCore _board
    cdef BoardMapping _m        # keeps the segment mapped while a wait is armed on it
    cdef int64_t _idx
    cdef readonly object key
    cdef readonly uint64_t newer_than

    @staticmethod
    cdef BoardChange _make(BoardCore board, BoardMapping m, int64_t idx, object key, uint64_t newer):
        cdef BoardChange c = BoardChange.__new__(BoardChange)
        c._board = board
        c._m = m
        c._idx = idx
        c.key = key
        c.newer_than = newer
        return c

    @property
    def board(self):
        return self._board

    cdef int _arm(self, void **word, uint32_t *seen) except -1:
        if self._board._m is None:
            return 1
        return shmr_board_arm(self._m.b, <uint64_t>self._idx, self.newer_than, word, seen)

    cdef void _unarm(self) noexcept:
        shmr_board_disarm(self._m.b, <uint64_t>self._idx)

    cdef bint _usable(self) noexcept:
        return self._m.b != NULL

    cdef bint _ready_now(self) except -1:
        return self._board._m is None or shmr_board_version(self._m.b, <uint64_t>self._idx) > self.newer_than

    def __repr__(self):
        return f"<shmring.BoardChange {self._board.name!r} key {self.key!r} newer than {self.newer_than}>"


@cython.final
cdef class BoardView:
    """``with board.view(key) as arr:``; ``changed`` says whether a writer has
    started to overwrite the viewed copy (then what was read is invalid)."""

    cdef BoardMapping _m
    cdef uint64_t _idx, _token
    cdef readonly uint64_t version
    cdef readonly object key
    cdef object _arr

    @staticmethod
    cdef BoardView _make(BoardMapping m, uint64_t idx, object key, uint64_t version, uint64_t token, object arr):
        cdef BoardView v = BoardView.__new__(BoardView)
        v._m = m
        v._idx = idx
        v.key = key
        v.version = version
        v._token = token
        v._arr = arr
        return v

    @property
    def array(self):
        return self._arr

    @property
    def changed(self):
        return not shmr_board_view_valid(self._m.b, self._idx, self._token)

    def __enter__(self):
        return self._arr

    def __exit__(self, et, ev, tb):
        if et is None and not shmr_board_view_valid(self._m.b, self._idx, self._token):
            raise BoardChanged(self.key, self.version)
        return False
