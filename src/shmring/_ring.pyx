# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled core of shmring: segment handles, producer and consumer.

The C core returns 0 / counts / -errno; _raise() is the one place where codes
become Python exceptions, and _Handle._block() the one place where a call
waits. Records cross here: the handles turn numpy arrays, scalars and np.void
into ring records and back (dtype checks and conversions on the hot path).
Naming, dtype descriptors, the stats dict and pickling live in the pure-Python
layer (shmring._api).
"""

import os
import time

import numpy as np
cimport cython
cimport numpy as cnp
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_CheckSignals
from cpython.object cimport PyTypeObject
from cpython.ref cimport PyObject, Py_INCREF, Py_REFCNT
from libc.errno cimport EACCES, EAGAIN, EBUSY, EEXIST, EINTR, EIO, EMSGSIZE, ENOENT, EPERM, ETIMEDOUT
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.unistd cimport getpid

from shmring._cshmring cimport *
from shmring._cmpqueue cimport *
from shmring.errors import (Closed, ConsumerTableFull, CorruptRingError, CreatorDiedError, Empty, Evicted, Full, Lagged,
                            LayoutVersionError, NotARingError, ProducerBusyError, RingError)

cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void *data, object descr, PyObject *base)
    object PyArray_NewFromDescr(object subtype, object descr, int nd, cnp.npy_intp *dims,
                                cnp.npy_intp *strides, void *data, int flags, PyObject *obj)

cnp.import_array()

# looked up once: push() compares a record's type with it on every call
cdef object _NP_VOID = np.void

include "_args.pxi"
include "_records.pxi"

# ---- constants the Python layer needs ------------------------------------

LAYOUT_VERSION = SHMR_LAYOUT_VERSION
NAME_MAX = SHMR_NAME_MAX
DESCR_MAX = SHMR_DESCR_MAX
MAX_CONSUMERS = SHMR_MAX_CONSUMERS
MODES = {"queue": SHMR_MODE_QUEUE, "broadcast": SHMR_MODE_BROADCAST}
OVERFLOWS = {"block": SHMR_OVERFLOW_BLOCK, "overwrite": SHMR_OVERFLOW_OVERWRITE}
STARTS = {"latest": SHMR_START_LATEST, "oldest": SHMR_START_OLDEST}
CLOSE_REASONS = {SHMR_OPEN: None, SHMR_CLOSED_BY_PRODUCER: "closed by producer",
                 SHMR_CLOSED_PRODUCER_DIED: "producer died"}


cdef dict _layout():
    cdef uint32_t n = 0
    cdef const shmr_layout_field *f = shmr_layout_fields(&n)
    cdef dict out = {}
    for k in range(n):
        out[f[k].name.decode("ascii")] = (f[k].offset, f[k].size)
    return out


# The segment layout, from csrc/shmr_layout.h: "region.field" -> (offset, size)
# and "region" -> (start, size); see shmr_layout_fields in csrc/shmring.h. The
# fuzzer and the tests that write segment bytes read offsets from here.
LAYOUT = _layout()
LAYOUT_MAGIC = SHMR_MAGIC
LAYOUT_QMAGIC = SHMR_QMAGIC
LAYOUT_PAGE = SHMR_PAGE
LAYOUT_BLOCK = SHMR_BLOCK

# Blocking calls sleep in slices (default 50 ms, the ``liveness_interval``);
# between slices they take the GIL back, run signal handlers (Ctrl-C) and check
# peer liveness, so a dead peer is noticed within one slice of waiting on it.
DEFAULT_LIVENESS_INTERVAL = 0.05
# Copies at least this large run without the GIL.
DEF NOGIL_BYTES = 65536
# pop() builds a numpy scalar through a scratch buffer up to this record size.
DEF SCRATCH_MAX = 65536

# ---- fork safety ----------------------------------------------------------

cdef int _fork_gen = 0

def _after_fork_in_child():
    global _fork_gen
    _fork_gen += 1

os.register_at_fork(after_in_child=_after_fork_in_child)

# ---- errors ---------------------------------------------------------------

cdef int _raise(int64_t rc, str what) except -1:
    cdef int code = <int>(-rc)
    if code == SHMR_EBADMAGIC:
        raise NotARingError(f"{what}: the shared-memory segment is not a shmring ring (bad magic)")
    if code == SHMR_EVERSION:
        raise LayoutVersionError(
            f"{what}: the ring was written with another layout version (this shmring reads v{SHMR_LAYOUT_VERSION})")
    if code == SHMR_ETRUNC:
        raise CorruptRingError(f"{what}: the segment is truncated (shorter than its header says)")
    if code == SHMR_ECORRUPT:
        raise CorruptRingError(f"{what}: the ring header is corrupt (a field is out of bounds)")
    if code == SHMR_EINIT:
        raise RingError(f"{what}: the ring is still being initialised by its creator")
    if code == SHMR_ECREATOR:
        raise CreatorDiedError(f"{what}: the ring's creator died before finishing it; remove it "
                               f"(`python -m shmring gc` or `rm`) and create it again")
    if code == SHMR_ESTATE:
        raise CorruptRingError(f"{what}: the ring's shared state is corrupt (an impossible head, tail "
                               f"or release position); nothing was read from it")
    if code == SHMR_EPRODUCER:
        raise ProducerBusyError(f"{what}: another live process is already the producer of this ring")
    if code == SHMR_ETABLEFULL:
        raise ConsumerTableFull(f"{what}: every consumer slot of this ring is taken")
    if code == SHMR_ECLOSED:
        raise Closed(f"{what}: the stream is closed and drained")
    if code == SHMR_EEVICTED:
        raise Evicted(0, f"{what}: this consumer was evicted for holding the producer back longer than the "
                         f"ring's evict_after; close it and open a new consumer")
    msg = f"{what}: {os.strerror(code)}"
    if code == ENOENT:
        raise FileNotFoundError(code, msg)
    if code == EEXIST:
        raise FileExistsError(code, msg)
    if code == EACCES or code == EPERM:
        raise PermissionError(code, msg)
    raise OSError(code, msg)


cdef dict _wait_stats_dict(const shmr_wait_stats *st):
    return {"waits": st.waits, "spun": st.spun, "spin_won": st.spin_won, "looks": st.looks,
            "shared_cpu": st.shared_cpu, "slept_at_once": st.slept_at_once, "switches": st.switches,
            "dense": st.dense, "dense_won": st.dense_won}


cdef inline int64_t _mono_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


# State of one blocking call. The timeout is parsed only once the call finds it
# must wait, so a call that succeeds at once never reads the clock.
cdef struct Waiting:
    bint started        # deadline is set
    int64_t deadline    # -1 = wait forever, else an absolute CLOCK_MONOTONIC time in ns
    int64_t spin_ns     # busy-poll before the first sleep only


cdef inline void _waiting_init(Waiting *w, int64_t spin_ns) noexcept:
    w.started = False
    w.deadline = -1
    w.spin_ns = spin_ns


cdef int _waiting_start(Waiting *w, object timeout) except -1:
    cdef double t = _timeout_arg(timeout)
    w.started = True
    w.deadline = -1 if (t < 0 or t > TIMEOUT_FOREVER) else _mono_ns() + <int64_t>(t * 1e9)
    return 0


cdef inline int64_t _waiting_slice(const Waiting *w, int64_t slice_ns) noexcept:
    """How long the next sleep may last: at most one slice, 0 once the deadline passed."""
    cdef int64_t left
    if w.deadline < 0:
        return slice_ns
    left = w.deadline - _mono_ns()
    if left <= 0:
        return 0
    return left if left < slice_ns else slice_ns


def start_time_of(uint32_t pid):
    """Start time of a process (clock ticks since boot), 0 if it is gone."""
    return shmr_proc_start_time(pid)


def process_alive(uint32_t pid, uint64_t start_time=0):
    """False only for a process known to be dead (see liveness())."""
    return bool(shmr_proc_alive(pid, start_time))


LIVENESS = {SHMR_DEAD: "dead", SHMR_ALIVE: "alive", SHMR_UNKNOWN: "unknown"}
LIVENESS_DEAD = SHMR_DEAD


def liveness(uint32_t pid, uint64_t start_time=0, uint64_t pidns=0):
    """"alive", "dead" or "unknown" (a process in another pid namespace, or one
    this user may not inspect): unknown never counts as dead."""
    return LIVENESS[shmr_proc_liveness(pid, start_time, pidns)]


def self_pidns():
    """The inode of this process's pid namespace (0 if /proc is not mounted)."""
    return shmr_self_pidns()


def check_name(str name):
    return shmr_name_check(name.encode())


def unlink(str name):
    cdef int rc = shmr_unlink(name.encode())
    if rc:
        _raise(rc, f"unlink ring {name!r}")


# ---- the mapping ----------------------------------------------------------

@cython.no_gc_clear  # a queue lane's _owner must outlive every handle on the lane
cdef class Mapping:
    """Owns one mapping of a segment. Producers, consumers and every array handed
    out over ring memory hold a reference, so the unmap happens only once the
    last of them is gone: an array can never point at unmapped memory."""

    cdef shmr_ring *r
    cdef readonly str name
    cdef object _owner      # a queue lane: the queue's mapping, which holds the memory

    def __dealloc__(self):
        if self.r != NULL:
            shmr_detach(self.r)
            self.r = NULL

    @staticmethod
    def create(str name, uint64_t capacity, uint64_t record_size, uint32_t align, uint32_t mode,
               uint32_t overflow, uint32_t max_consumers, bytes descr, unsigned perm,
               uint32_t kind=SHMR_KIND_RECORDS, uint32_t evict_after_ms=0):
        cdef Mapping m = Mapping.__new__(Mapping)
        cdef shmr_params p
        p.capacity = capacity
        p.record_size = record_size
        p.record_align = align
        p.mode = mode
        p.overflow = overflow
        p.max_consumers = max_consumers
        p.descr = descr
        p.descr_len = <uint32_t>len(descr)
        p.kind = kind
        p.evict_after_ms = evict_after_ms
        cdef bytes bname = name.encode()
        cdef const char *cname = bname
        cdef int rc
        with nogil:  # posix_fallocate of a large segment takes a while
            rc = shmr_create(cname, &p, perm, &m.r)
        if rc:
            _raise(rc, f"create ring {name!r}")
        m.name = name
        return m

    @staticmethod
    def attach(str name):
        cdef Mapping m = Mapping.__new__(Mapping)
        cdef bytes bname = name.encode()
        cdef int rc = shmr_attach(bname, &m.r)
        if rc:
            _raise(rc, f"attach ring {name!r}")
        m.name = name
        return m

    @staticmethod
    def attach_fd(int fd, str label):
        """Validate and map an open descriptor (the descriptor is consumed)."""
        cdef Mapping m = Mapping.__new__(Mapping)
        cdef int rc = shmr_attach_fd(fd, &m.r)
        if rc:
            _raise(rc, f"attach {label}")
        m.name = label
        return m

    def stall(self):
        """(consumer index, seconds) a waiting producer last found holding it back, or None."""
        cdef uint32_t idx = 0
        cdef uint64_t ns = 0
        if not shmr_stall_info(self.r, &idx, &ns):
            return None
        return idx, ns / 1e9

    @property
    def file_owner(self):
        """(uid, mode bits) of the segment file, from fstat on the descriptor mapped."""
        cdef uint32_t uid, mode
        shmr_file_owner(self.r, &uid, &mode)
        return uid, mode

    @property
    def descr(self):
        cdef uint32_t n
        cdef const char *d = shmr_descr(self.r, &n)
        return d[:n].decode("ascii")

    @property
    def capacity(self):
        return shmr_capacity(self.r)

    @property
    def record_size(self):
        return shmr_record_size(self.r)

    @property
    def mode(self):
        return shmr_mode(self.r)

    @property
    def overflow(self):
        return shmr_overflow(self.r)

    @property
    def kind(self):
        return shmr_kind(self.r)

    @property
    def max_message(self):
        return shmr_msg_max(self.r) if shmr_kind(self.r) == SHMR_KIND_MESSAGES else None

    def info(self):
        """shmr_ring_info as a dict, field for field (codes stay codes; shmring._api
        names them)."""
        cdef shmr_ring_info i
        shmr_info(self.r, &i)
        return i

    def consumer_infos(self):
        """One shmr_consumer_info dict per consumer, field for field."""
        cdef uint32_t n = 0
        cdef uint32_t cap = SHMR_MAX_CONSUMERS
        cdef shmr_consumer_info *buf = <shmr_consumer_info *>malloc(cap * sizeof(shmr_consumer_info))
        if buf == NULL:
            raise MemoryError()
        try:
            shmr_consumer_infos(self.r, buf, cap, &n)
            return [buf[k] for k in range(n)]
        finally:
            free(buf)


# ---- record layout shared by producer and consumer -------------------------

DEF PEERS_ON_STACK = 64


cdef object _owners(int64_t n, const uint64_t *buf):
    return tuple([buf[k] for k in range(n)])


ctypedef int64_t (*_peers_fn)(void *src, int arg, uint64_t *out, uint32_t cap) noexcept


cdef int64_t _ring_peers_fn(void *r, int producer_side, uint64_t *out, uint32_t cap) noexcept:
    return shmr_ring_peers(<shmr_ring *>r, producer_side, out, cap)


cdef int64_t _mpq_peers_fn(void *q, int unused, uint64_t *out, uint32_t cap) noexcept:
    return shmr_mpq_peers(<shmr_mpq *>q, out, cap)


cdef object _peers_of(_peers_fn fn, void *src, int arg):
    """shmr_ring_peers / shmr_mpq_peers as a tuple, None for -EXDEV (see
    _Waitable._peers)."""
    cdef uint64_t buf[PEERS_ON_STACK]
    cdef uint64_t *big = NULL
    cdef uint32_t cap
    cdef int64_t n = fn(src, arg, buf, PEERS_ON_STACK)
    if n < 0:
        return None
    if n <= PEERS_ON_STACK:
        return _owners(n, buf)
    try:
        while True:  # more processes than the stack array holds: sized by the last count
            free(big)
            cap = <uint32_t>n
            big = <uint64_t *>malloc(cap * sizeof(uint64_t))
            if big == NULL:
                raise MemoryError()
            n = fn(src, arg, big, cap)
            if n < 0:
                return None
            if n <= cap:
                return _owners(n, big)
    finally:
        free(big)


cdef class _Waitable:
    """A condition behind one eventcount, as event loops (shmring.aio) and
    wait_any() wait on it. A wait is taken apart: _arm counts this object as a
    sleeper of its eventcount and re-checks the condition, as a blocking wait
    does before it sleeps (1: true now, nothing counted; 0: armed, *word and
    *seen are the futex word and the value to sleep on, one _unarm owed); the
    sleep happens elsewhere (an io_uring futex wait, futex_waitv); _unarm
    un-counts. Ring handles and board changes implement it; any handle with a
    ready function and an eventcount plugs into the same machinery by
    implementing _arm, _unarm, _usable and _ready_now (and, when a dead
    process can end its wait, _peers, _tick_ns and _liveness)."""

    cdef uint32_t _arm_count    # arms not yet undone (_async.pxi)

    cdef int _arm(self, void **word, uint32_t *seen) except -1:
        raise NotImplementedError

    cdef void _unarm(self) noexcept:
        pass

    cdef bint _usable(self) noexcept:
        """The state an arm counted on is still there (else nothing to un-count)."""
        return False

    cdef bint _ready_now(self) except -1:
        raise NotImplementedError

    cdef uint64_t _watch_owner(self) noexcept:
        """The one owner word an awaited pop's inline wait looks its watch up
        by (a consumer's producer); 0: nothing to watch (none, or this process)."""
        return 0

    cdef object _peers(self):
        """The owner words of the processes whose exit may end the wait, as a
        tuple (each watched through a pidfd; when one exits, _liveness runs).
        Read after the arm: a process that joins later notifies the eventcount
        armed on, so the woken wait reads it when it arms again. None: one of
        them cannot be watched (another pid namespace): _liveness then runs
        every _tick_ns instead."""
        return ()

    cdef int64_t _tick_ns(self) noexcept:
        """While a peer cannot be watched, run _liveness every this many ns; 0:
        never (nothing but a write can end the wait)."""
        return 0

    cdef void _liveness(self) noexcept:
        pass


# no_gc_clear: a handle caught in a reference cycle must still have its mapping
# when __dealloc__ leaves the ring; clearing _map first would unmap under it.
@cython.no_gc_clear
cdef class _Handle(_Waitable):
    cdef object __weakref__
    cdef Mapping _map
    cdef object _dtype          # record dtype as the user sees it
    cdef object _base           # dtype of array elements (subarray base, else _dtype)
    cdef tuple _shape           # per-record array shape: subarray shape, else ()
    cdef object _rec_descr      # descr used for scalars
    cdef Py_ssize_t _record_size
    cdef bint _is_sub
    cdef int64_t _spin_ns
    cdef int64_t _slice_ns
    cdef int _gen
    cdef bint _closed
    cdef bint _busy             # a call on this handle is running without the GIL
    cdef object _fdw            # the poller behind fileno(), once asked for
    cdef int64_t _next_check_ns # a non-blocking call may run the liveness checks from then on

    cdef _setup(self, Mapping m, object dtype, object spin, object liveness_interval):
        self._map = m
        self._dtype = dtype
        if dtype.subdtype is not None:
            self._base, self._shape = dtype.subdtype
            self._is_sub = True
        else:
            self._base, self._shape = dtype, ()
            self._is_sub = False
        self._rec_descr = dtype
        self._record_size = dtype.itemsize
        # a spin budget beyond a minute is busy-polling for good: cap it there
        self._spin_ns = <int64_t>(min(_spin_arg(spin), 60.0) * 1e9)
        self._slice_ns = <int64_t>(_liveness_arg(liveness_interval) * 1e9)
        self._gen = _fork_gen

    cdef int _check(self) except -1:
        if self._gen != _fork_gen:
            raise RingError("this handle belongs to the process that created it (it was inherited "
                            "through fork); create a new producer/consumer in this process")
        if self._closed:
            raise Closed("the handle is closed", "handle closed")
        if self._busy:
            raise RuntimeError("this handle is in use by another thread; use one producer/consumer per thread")
        return 0

    # A handle is used by one thread at a time, but close() may come from
    # another thread (or a signal handler) while a call sleeps without the GIL:
    # then close() only marks it and wakes the sleeper, and the blocked call
    # frees the C handle when it takes the GIL back. A call that completed its
    # work without the GIL (a large copy) keeps its result: the records it took
    # or published are returned or counted, and Closed comes with the next call.
    cdef inline void _enter_nogil(self) noexcept:
        self._busy = True

    cdef bint _leave_nogil(self) noexcept:
        """True if the handle was closed meanwhile (the C handle is then freed)."""
        self._busy = False
        if self._closed:
            self._free_handle()
            return True
        return False

    cdef void _free_handle(self) noexcept:
        """Gives the C handle back (role or consumer slot); the subclass knows how."""
        pass

    cdef int _sleep(self, int64_t timeout_ns, int64_t spin_ns) noexcept nogil:
        """One eventcount wait of this side (0 = may be ready, else -errno)."""
        return 0

    cdef bint _between_slices(self) noexcept:
        """Liveness work between two sleeps (sweep dead consumers / notice a dead
        producer). True if it changed something worth another try."""
        return False

    cdef bint _block(self, Waiting *w, object timeout) except -1:
        """The one place a call waits: after the caller found nothing to do, sleeps
        at most one liveness slice, runs signal handlers and the liveness check.
        True: try again; False: the timeout is over."""
        cdef int rc
        cdef int64_t sl
        cdef int64_t now
        if not w.started:
            _waiting_start(w, timeout)
        sl = _waiting_slice(w, self._slice_ns)
        if sl == 0:
            # Non-blocking (or out of time): the liveness check still runs, at
            # most once per liveness interval, else a polling loop would see
            # Full / Empty forever behind a dead peer; the fast path never pays.
            now = _mono_ns()
            if now >= self._next_check_ns:
                self._next_check_ns = now + self._slice_ns
                if self._between_slices():
                    return True
            if self._fdw is not None:
                self._fdw.rearm()  # fileno() protocol: a call that found nothing re-arms
            return False
        self._enter_nogil()
        with nogil:
            rc = self._sleep(sl, w.spin_ns)
        if self._leave_nogil():
            raise Closed("the handle was closed while a call on it was blocked", "handle closed")
        w.spin_ns = 0
        if rc == 0:
            return True
        PyErr_CheckSignals()
        self._next_check_ns = _mono_ns() + self._slice_ns
        self._between_slices()
        return not (w.deadline >= 0 and _mono_ns() >= w.deadline)

    cdef void _wake(self) noexcept:
        if self._map is not None and self._map.r != NULL:
            shmr_wake_all(self._map.r)

    cdef int64_t _tick_ns(self) noexcept:
        return self._slice_ns

    cdef void _liveness(self) noexcept:
        # what a blocking call does between two sleeps
        if self._usable() and not self._closed:
            self._between_slices()

    def fileno(self):
        """A descriptor that polls readable when this handle may make progress
        (records or messages, room, end of stream): readable means "try now"; a
        non-blocking call that then finds nothing re-arms it (see README)."""
        return _aio_mod().fileno(self)

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self._busy:
            self._wake()
            return
        self._free_handle()

    cdef object _array(self, void *ptr, Py_ssize_t n, bint writable):
        """An ndarray of n records over ring memory that keeps the mapping alive."""
        cdef cnp.npy_intp dims[33]
        cdef int nd = 1 + <int>len(self._shape)
        if nd > 32:
            raise ValueError("record shape has too many dimensions")
        dims[0] = n
        for k, s in enumerate(self._shape):
            dims[k + 1] = s
        cdef int flags = cnp.NPY_ARRAY_C_CONTIGUOUS | (cnp.NPY_ARRAY_WRITEABLE if writable else 0)
        descr = self._base
        Py_INCREF(descr)  # PyArray_NewFromDescr steals it
        arr = PyArray_NewFromDescr(np.ndarray, descr, nd, dims, NULL, ptr, flags, NULL)
        cnp.set_array_base(arr, self._map)
        return arr

    cdef object _empty(self, Py_ssize_t n):
        return np.empty((n,) + self._shape, dtype=self._base)

    @property
    def dtype(self):
        return self._dtype

    @property
    def closed(self):
        return self._closed

    def __reduce__(self):
        # A handle is a role in this process (a producer role, a consumer slot);
        # it cannot move to another process. The Ring pickles by name.
        raise TypeError(f"a shmring {type(self).__name__} cannot be pickled or sent to another process: "
                        f"pass the Ring and open the handle in the worker "
                        f"(ring.{type(self).__name__.lower()}())")


# ---- what record and message handles share: the event-loop side ------------
# The coroutines try the non-blocking call first, here, so that with records
# (messages, room) there they finish on their first step and never reach the
# loop; shmring.aio holds their slow halves (wait, then try again).

cdef object _NOTHING = object()   # "nothing there now" (None is a valid message)
cdef object _EMPTY = object()     # _pop_now: nothing there, and pop(0) would only raise Empty


cdef extern from *:
    """
    /* am_send (Python 3.10+) lets an awaitable hand its result back without
     * raising StopIteration; before 3.10 the iterator protocol is used. */
    #if PY_VERSION_HEX >= 0x030A0000
    static int shmr_set_am_send(PyTypeObject *t, void *fn) {
        t->tp_as_async->am_send = (sendfunc)fn;
    #ifdef Py_TPFLAGS_HAVE_AM_SEND  /* a 3.10 pre-release flag; 3.10 itself reads the slot */
        t->tp_flags |= Py_TPFLAGS_HAVE_AM_SEND;
    #endif
        return 1;
    }
    #else
    static int shmr_set_am_send(PyTypeObject *t, void *fn) { return 0; }
    #endif
    """
    int shmr_set_am_send(PyTypeObject *t, void *fn)


@cython.final
@cython.freelist(8)
cdef class _Ready:
    """What ``async for`` awaits when the next item is already there: an
    awaitable that returns it at its first step, without the cost of a
    coroutine object (allocation, frame, send)."""
    cdef object value

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        value, self.value = self.value, None
        raise StopIteration(value)

    def send(self, arg):
        return self.__next__()


cdef int _ready_send(PyObject *it, PyObject *arg, PyObject **result) noexcept:
    cdef _Ready r = <_Ready>it
    value = r.value
    r.value = None
    Py_INCREF(value)
    result[0] = <PyObject *>value
    return 0  # PYGEN_RETURN


shmr_set_am_send(<PyTypeObject *>_Ready, <void *>_ready_send)


cdef inline _Ready _done(object value):
    cdef _Ready r = _Ready.__new__(_Ready)
    r.value = value
    return r


async def _anext_wait(_ConsumerSide c):
    try:
        return await _aio_mod().apop_wait(c, None)
    except Closed:
        raise StopAsyncIteration from None


@cython.no_gc_clear
cdef class _ProducerSide(_Handle):
    cdef shmr_producer *_p

    cdef int _arm(self, void **word, uint32_t *seen) except -1:
        self._check()
        return shmr_producer_arm(self._p, word, seen)

    cdef void _unarm(self) noexcept:
        shmr_producer_disarm(self._p)

    cdef bint _usable(self) noexcept:
        return self._gen == _fork_gen and self._p != NULL

    cdef bint _ready_now(self) except -1:
        self._check()
        return shmr_producer_ready(self._p) != 0

    cdef bint _between_slices(self) noexcept:
        cdef uint64_t reclaimed = 0
        return shmr_producer_recover(self._p, &reclaimed) > 0

    cdef object _peers(self):
        # its consumers: one that dies holding room comes back through a sweep
        return _peers_of(_ring_peers_fn, self._map.r, 1) if self._usable() else ()

    cdef object _many_arg(self, object records):
        """records as apush_many() retries them: sliced past what was pushed."""
        return records

    async def apush(self, record, timeout=None):
        """Coroutine form of push()."""
        try:
            return self.push(record, 0)
        except Full:
            pass
        return await _aio_mod().apush_wait(self, record, timeout)

    async def apush_many(self, records, timeout=None):
        """Coroutine form of push_many()."""
        cdef Py_ssize_t done
        records = self._many_arg(records)
        try:
            return self.push_many(records, 0)
        except Full as exc:
            done = exc.pushed
        return await _aio_mod().apush_many_wait(self, records, done, timeout)


@cython.no_gc_clear
cdef class _ConsumerSide(_Handle):
    cdef shmr_consumer *_c
    cdef _Ready _rd   # the awaitable async for was last handed (see __anext__)

    cdef int _sleep(self, int64_t timeout_ns, int64_t spin_ns) noexcept nogil:
        return shmr_consumer_wait(self._c, timeout_ns, spin_ns)

    cdef bint _between_slices(self) noexcept:
        return shmr_consumer_check_producer(self._c) != SHMR_OPEN

    cdef bint _has_pending(self) noexcept:
        """Records (messages) held back by an earlier error come first."""
        return False

    cdef int _arm(self, void **word, uint32_t *seen) except -1:
        self._check()
        if self._has_pending():
            return 1
        return shmr_consumer_arm(self._c, word, seen)

    cdef void _unarm(self) noexcept:
        shmr_consumer_disarm(self._c)

    cdef bint _usable(self) noexcept:
        return self._gen == _fork_gen and self._c != NULL

    cdef bint _ready_now(self) except -1:
        self._check()
        return self._has_pending() or shmr_consumer_ready(self._c) != 0

    cdef uint64_t _watch_owner(self) noexcept:
        cdef uint64_t owner
        if not self._usable():
            return 0
        owner = shmr_producer_owner(self._map.r)
        return 0 if <uint32_t>owner == <uint32_t>getpid() else owner

    cdef object _peers(self):
        return _peers_of(_ring_peers_fn, self._map.r, 0) if self._usable() else ()

    cdef object _pop_now(self):
        """pop()'s common case without the call overhead: the item; _EMPTY when
        nothing is there and nothing else is due (no fileno() waiter to re-arm,
        no liveness check due), so pop(0) would only raise Empty; _NOTHING when
        it needs pop()'s other paths."""
        return _NOTHING

    cdef object _try_pop(self):
        """One item now, or _NOTHING when none is there; Closed (and every other
        error of pop()) propagates."""
        item = self._pop_now()
        if item is _EMPTY:
            return _NOTHING
        if item is not _NOTHING:
            return item
        if self._fdw is None and _mono_ns() < self._next_check_ns and not self._ready_now():
            # plainly empty: no Empty raised and caught on the way to a wait
            # (pop(0) runs the liveness checks when they are due; a fileno()
            # poller needs pop()'s re-arm)
            return _NOTHING
        try:
            return self.pop(0)
        except Empty:
            return _NOTHING

    def try_pop(self):
        """One item like pop(), or None at once when none is there (never waits,
        never raises Empty). Raises Closed once the stream ended and was drained."""
        item = self._try_pop()
        return None if item is _NOTHING else item

    async def apop(self, timeout=None):
        """Coroutine form of pop()."""
        item = self._try_pop()
        if item is _NOTHING:
            item = await _aio_mod().apop_wait(self, timeout)
        return item

    async def apop_many(self, max_records=None, timeout=None, *, out=None):
        """Coroutine form of pop_many(); with ``out`` it fills out[:n] and
        returns n, allocating nothing per call."""
        try:
            if out is None:
                return self.pop_many(max_records, 0)
            return self.pop_many(max_records, 0, out=out)
        except Empty:
            pass
        return await _aio_mod().apop_many_wait(self, max_records, timeout, out)

    def __aiter__(self):
        return self

    def __anext__(self):
        # async for takes any awaitable: with an item there, one that is done
        # already; else a coroutine that waits
        cdef _Ready r
        try:
            item = self._try_pop()
        except Closed:
            raise StopAsyncIteration from None
        if item is _NOTHING:
            return _anext_wait(self)
        # the awaitable of the last step is free again once only we hold it
        # (async for dropped it after awaiting): reused, no allocation per item
        r = self._rd
        if r is None or Py_REFCNT(r) != 1:
            r = self._rd = _Ready.__new__(_Ready)
        r.value = item
        return r


# ---- producer ---------------------------------------------------------------

@cython.no_gc_clear
cdef class Producer(_ProducerSide):
    """The one writer of a ring. Obtain it with ``Ring.producer()``."""

    cdef bint _reserving
    cdef bint _stalled          # a stall was recorded for stats(); cleared once records flow
    cdef object _same_dtype     # a dtype object already found equal to the ring's
    cdef _Packer _packer        # tuples / scalars straight into a record (None: general path)
    cdef bint _is_struct
    cdef uint32_t _consumers_wanted  # inside wait_for_consumers: _sleep waits for joins, not room
    cdef shmr_ring *_ring_c
    cdef bint _packer_built
    cdef readonly object ring

    def __cinit__(self):
        self._p = NULL

    @staticmethod
    def _open(Mapping m, object dtype, object ring, object spin, object liveness_interval):
        cdef Producer self = Producer.__new__(Producer)
        self._setup(m, dtype, spin, liveness_interval)
        self._is_struct = dtype.names is not None
        cdef int rc = shmr_producer_open(m.r, &self._p)
        if rc == -SHMR_EPRODUCER and m.info()["producer_pid"] == os.getpid():
            raise ProducerBusyError(
                f"producer of ring {m.name!r}: this process already holds the producer of this ring "
                f"(a Producer that is not closed yet); use that one, or close() it before opening another")
        if rc:
            _raise(rc, f"producer of ring {m.name!r}")
        self.ring = ring
        return self

    def __dealloc__(self):
        self._free_handle()  # a producer that goes away ends its stream, like close()

    cdef object _as_records(self, object obj, bint many):
        """obj as a C-contiguous ndarray (or np.void) of this ring's records."""
        cdef tuple want
        if type(obj) is _NP_VOID:
            if many:
                raise TypeError("push_many() takes an array of records, not a single np.void")
            dt = (<object>obj).dtype
            if dt is not self._dtype and dt is not self._same_dtype:
                # equal but distinct objects are common (a ring attached without
                # dtype=): compare once, then recognise the object by identity
                if dt != self._dtype:
                    raise TypeError(f"record has dtype {dt}, the ring holds {self._dtype}")
                self._same_dtype = dt
            return obj
        if isinstance(obj, np.ndarray):
            arr = obj
            if arr.dtype is not self._base and arr.dtype != self._base:
                if self._is_sub or arr.dtype != self._dtype:
                    raise TypeError(f"array has dtype {arr.dtype}, the ring holds {self._dtype}")
        else:
            if self._dtype.names is not None and not many and not isinstance(obj, tuple):
                raise TypeError(f"cannot push {type(obj).__name__} into a ring of {self._dtype}: "
                                f"pass a np.void, a tuple or a 1-record array")
            arr = None
            if many and type(obj) is list and not self._is_sub and self._get_packer() is not None:
                # the single push's field plan, record by record: tens of times
                # cheaper than numpy's object arrays in the general path
                arr = self._packer.pack_list(<list>obj, self._dtype)
            if arr is None:
                arr = _checked_records(obj, self._dtype if not self._is_sub else self._base)
        shape = arr.shape
        if many:
            if arr.ndim == 0 or shape[1:] != self._shape:
                raise ValueError(f"push_many() needs shape (n,) + {self._shape}, got {shape}")
        elif shape != self._shape and shape != (1,) + self._shape:
            raise ValueError(f"a record of this ring has shape {self._shape}, got {shape}")
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        return arr

    cdef int _sleep(self, int64_t timeout_ns, int64_t spin_ns) noexcept nogil:
        if self._consumers_wanted:
            return shmr_wait_consumers(self._ring_c, self._consumers_wanted, timeout_ns, spin_ns)
        return shmr_producer_wait(self._p, timeout_ns, spin_ns)

    cdef bint _between_slices(self) noexcept:
        cdef uint64_t reclaimed = 0
        if shmr_producer_recover(self._p, &reclaimed) > 0:
            return True
        # evict_after: not while waiting for consumers to join, only for room
        return self._consumers_wanted == 0 and shmr_producer_evict(self._p) > 0

    cdef int64_t _push_ptr(self, const char *src, uint64_t n, object timeout) except -1:
        cdef uint64_t done = 0
        cdef int64_t k
        cdef Waiting w
        cdef bint nogil_copy = n * self._record_size >= NOGIL_BYTES
        cdef bint closed = False
        _waiting_init(&w, self._spin_ns)
        while True:
            if nogil_copy:
                self._enter_nogil()
                with nogil:
                    k = shmr_push(self._p, src + done * self._record_size, n - done)
                closed = self._leave_nogil()
            else:
                k = shmr_push(self._p, src + done * self._record_size, n - done)
            done += k
            if done == n:
                if self._stalled:
                    self._stalled = False
                    shmr_producer_unstall(self._p)
                return done  # published: a close() that landed meanwhile shows on the next call
            if closed:
                raise Closed(f"the handle was closed during push_many: {done} of {n} records were "
                             f"published", "handle closed", done)
            if k > 0:
                continue
            if not w.started:
                self._note_stall()
            try:
                if not self._block(&w, timeout):
                    raise Full(f"ring is full: {done} of {n} records pushed before the timeout"
                               f"{self._stall_text()}", pushed=done)
            except Closed as exc:
                exc.pushed = done
                raise

    cdef _Packer _get_packer(self):
        if not self._packer_built:
            self._packer = _Packer.build(self._dtype)
            self._packer_built = True
        return self._packer

    def push(self, record, timeout=None):
        """Publish one record (np.void, tuple, scalar or 1-record array).
        Blocks while the ring is full: ``timeout`` None = forever, 0 = never, else seconds.
        Values are converted only where nothing is lost (see the README)."""
        cdef Py_buffer buf
        cdef const char *packed
        cdef _Packer packer
        if timeout is not None:
            _timeout_arg(timeout)
        self._check()
        if self._reserving:
            raise RuntimeError("push() inside an open reserve() block")
        tr = type(record)
        # a np.void (the fast path) is recognised by one pointer comparison
        if tr is not _NP_VOID and (tr is tuple or (not self._is_struct and not self._is_sub
                                                   and (tr is int or tr is float or tr is bool or tr is bytes
                                                        or tr is complex or isinstance(record, np.generic)))):
            packer = self._get_packer()
            if packer is not None:
                packed = packer.pack(record)
                if shmr_push(self._p, packed, 1) == 1:
                    if self._stalled:
                        self._stalled = False
                        shmr_producer_unstall(self._p)
                    return None
                self._push_ptr(packed, 1, timeout)
                return None
        obj = self._as_records(record, False)
        PyObject_GetBuffer(obj, &buf, PyBUF_SIMPLE)
        try:
            if buf.len != self._record_size:
                raise ValueError(f"record is {buf.len} bytes, the ring's records are {self._record_size}")
            if shmr_push(self._p, buf.buf, 1) == 1:
                if self._stalled:
                    self._stalled = False
                    shmr_producer_unstall(self._p)
                return None
            self._push_ptr(<const char *>buf.buf, 1, timeout)
        finally:
            PyBuffer_Release(&buf)

    def push_many(self, records, timeout=None):
        """Publish an array of records in order, in as few copies as the ring allows.
        Returns the count. On timeout raises Full with ``pushed`` = records published."""
        if timeout is not None:
            _timeout_arg(timeout)
        self._check()
        if self._reserving:
            raise RuntimeError("push_many() inside an open reserve() block")
        arr = self._as_records(records, True)
        cdef uint64_t n = arr.shape[0]
        if n == 0:
            return 0
        return self._push_ptr(<const char *>cnp.PyArray_DATA(arr), n, timeout)

    def _wait_stats(self):
        """This handle's waits so far: how many spun first, how many of those the
        spin ended, how many slept at once (see csrc/spin_policy.h)."""
        cdef shmr_wait_stats st
        self._check()
        shmr_producer_wait_stats(self._p, &st)
        return _wait_stats_dict(&st)

    def free(self):
        """Records a push could place now without waiting (the capacity in
        broadcast-overwrite mode, where the producer never waits)."""
        self._check()
        return shmr_producer_room(self._p)

    def wait_for_consumers(self, n=1, timeout=None):
        """Block until at least ``n`` consumers are registered (sleeping on the
        futex, no CPU). Returns the count; raises TimeoutError when ``timeout``
        seconds pass first. Dead consumers are swept first, so they do not count."""
        cdef shmr_ring_info info
        cdef uint32_t want
        cdef uint64_t reclaimed
        cdef Waiting w
        _waiting_init(&w, self._spin_ns)
        _timeout_arg(timeout)
        self._check()
        shmr_info(self._map.r, &info)
        want = <uint32_t>_count_arg(n, "n", 0, info.max_consumers)
        shmr_producer_recover(self._p, &reclaimed)
        self._ring_c = self._map.r
        self._consumers_wanted = want
        try:
            while shmr_consumer_count(self._map.r) < want:
                if not self._block(&w, timeout):
                    raise TimeoutError(f"ring {self._map.name!r}: {shmr_consumer_count(self._map.r)} of {want} "
                                       f"consumers registered before the timeout")
        finally:
            self._consumers_wanted = 0
        return shmr_consumer_count(self._map.r)

    def reserve(self, Py_ssize_t n, timeout=None):
        """Context manager giving a writable array of up to n records inside the ring
        (only the contiguous part up to the wrap point, so possibly fewer). Leaving the
        block publishes them; an exception inside it publishes nothing."""
        cdef void *ptr = NULL
        cdef int64_t k
        cdef Waiting w
        _waiting_init(&w, self._spin_ns)
        if timeout is not None:
            _timeout_arg(timeout)
        self._check()
        if self._reserving:
            raise RuntimeError("reserve() blocks cannot nest")
        if n < 1:
            raise ValueError(f"reserve() needs n >= 1, got {n}")
        while True:
            k = shmr_reserve(self._p, n, &ptr)
            if k > 0:
                if self._stalled:
                    self._stalled = False
                    shmr_producer_unstall(self._p)
                break
            if not w.started:
                self._note_stall()
            if not self._block(&w, timeout):
                raise Full(f"ring is full: nothing to reserve before the timeout{self._stall_text()}")
        self._reserving = True
        return Reservation._make(self, self._array(ptr, k, True), k)

    cdef void _note_stall(self) noexcept:
        """The producer starts waiting: record who holds it back, and since when."""
        cdef uint32_t idx = 0
        cdef uint64_t behind = 0
        if self._p != NULL and shmr_producer_stall(self._p, &idx, &behind):
            self._stalled = True

    cdef str _stall_text(self):
        """Who holds the ring full, for Full's message (also recorded for stats())."""
        cdef uint32_t idx = 0
        cdef uint64_t behind = 0
        if self._p == NULL or not shmr_producer_stall(self._p, &idx, &behind):
            return ""
        self._stalled = True
        st = self._map.stall()
        who = next((c for c in self._map.consumer_infos() if c["index"] == idx), None)
        pid = f"pid {who['pid']}, " if who else ""
        since = f", stalled for {st[1]:.3g} s" if st is not None else ""
        return f"; held back by consumer #{idx} ({pid}{behind} records behind{since})"

    cdef _commit(self, uint64_t k):
        self._reserving = False
        if not self._closed and self._p != NULL and self._gen == _fork_gen:
            shmr_commit(self._p, k)

    def close(self):
        """End the stream: consumers drain what was published, then see Closed."""
        _Handle.close(self)

    cdef void _free_handle(self) noexcept:
        if self._p == NULL:
            return
        _drop_arms(self)
        if self._gen == _fork_gen:
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
cdef class Reservation:
    cdef Producer _prod
    cdef object _arr
    cdef uint64_t _k
    cdef bint _done

    @staticmethod
    cdef Reservation _make(Producer prod, object arr, uint64_t k):
        cdef Reservation r = Reservation.__new__(Reservation)
        r._prod = prod
        r._arr = arr
        r._k = k
        return r

    @property
    def array(self):
        return self._arr

    def __len__(self):
        return self._k

    def __enter__(self):
        return self._arr

    def __exit__(self, et, ev, tb):
        if self._done:
            return False
        self._done = True
        # the slots belong to the consumers from here on: the array handed out
        # must not write into published records (views taken of it inside the
        # block keep their own flags)
        self._arr.flags.writeable = False
        self._prod._commit(self._k if et is None else 0)
        return False

    def __dealloc__(self):
        # never entered or never exited: publish nothing, free the producer
        if not self._done and self._prod is not None:
            self._done = True
            self._prod._commit(0)


# ---- consumer ---------------------------------------------------------------

@cython.no_gc_clear
cdef class Consumer(_ConsumerSide):
    """A reader of a ring. Obtain it with ``Ring.consumer()``; iterate it or pop()."""

    cdef char *_scratch
    cdef bint _scalar_path
    cdef bint _raise_lag
    cdef bint _viewing
    cdef object _pending      # records (an array) received while a Lagged was being raised
    cdef readonly object ring

    def __cinit__(self):
        self._c = NULL
        self._scratch = NULL

    @staticmethod
    def _open(Mapping m, object dtype, object ring, uint32_t start, bint raise_lag, object spin,
              object liveness_interval):
        cdef Consumer self = Consumer.__new__(Consumer)
        self._setup(m, dtype, spin, liveness_interval)
        self._raise_lag = raise_lag
        self._scalar_path = (not self._is_sub) and self._record_size <= SCRATCH_MAX
        if self._scalar_path:
            self._scratch = <char *>malloc(self._record_size)
            if self._scratch == NULL:
                raise MemoryError()
        cdef int rc = shmr_consumer_open(m.r, start, &self._c)
        if rc:
            _raise(rc, f"consumer of ring {m.name!r}")
        self.ring = ring
        return self

    def __dealloc__(self):
        self._free_handle()
        if self._scratch != NULL:
            free(self._scratch)
            self._scratch = NULL

    cdef bint _has_pending(self) noexcept:
        return self._pending is not None

    cdef int _lagged(self, uint64_t dropped, object records) except -1:
        """With on_lag="raise": keep the records that did arrive for the next call
        and report the loss now."""
        if dropped and self._raise_lag:
            self._pending = records if records is not None and len(records) else None
            raise Lagged(dropped)
        return 0

    cdef object _closed_error(self):
        reason = CLOSE_REASONS.get(shmr_close_reason(self._map.r)) or "closed"
        return Closed(f"ring {self._map.name!r}: the stream is closed ({reason}) and drained", reason)

    cdef int64_t _pop_into(self, char *dst, uint64_t max, object timeout, uint64_t *dropped) except -1:
        cdef int64_t n
        cdef Waiting w
        cdef bint nogil_copy = max * self._record_size >= NOGIL_BYTES
        cdef bint closed = False
        _waiting_init(&w, self._spin_ns)
        while True:
            if nogil_copy:
                self._enter_nogil()
                with nogil:
                    n = shmr_pop(self._c, dst, max, dropped)
                closed = self._leave_nogil()
            else:
                n = shmr_pop(self._c, dst, max, dropped)
            if n > 0:
                return n  # taken out of the ring: returned even if close() landed meanwhile
            if closed:
                raise Closed("the handle was closed while a call on it was blocked", "handle closed")
            if n == -SHMR_EEVICTED:
                raise self._evicted_error()
            if n < 0 and n != -SHMR_ECLOSED:
                _raise(n, f"pop from ring {self._map.name!r}")
            if n == -SHMR_ECLOSED:
                self._lagged(dropped[0], None)
                raise self._closed_error()
            if not self._block(&w, timeout):
                self._lagged(dropped[0], None)  # a loss is reported even when nothing arrived
                raise Empty()

    cdef int _ready_check(self) except -1:
        self._check()
        if self._viewing:
            raise RuntimeError("pop inside an open view() block")
        return 0

    def pop(self, timeout=None):
        """One record, copied out of the ring (np.void for structured dtypes, a numpy
        scalar for plain ones, an ndarray for subarray dtypes). Blocks while empty:
        ``timeout`` None = forever, 0 = never, else seconds. Raises Empty on timeout and
        Closed once the stream ended and everything was consumed."""
        cdef uint64_t dropped = 0
        cdef int64_t n
        if timeout is not None:
            _timeout_arg(timeout)
        self._ready_check()
        if self._pending is not None:
            return self._take_pending(1)[0]
        if self._scalar_path:
            n = shmr_pop(self._c, self._scratch, 1, &dropped)
            if (n == 0 and not dropped and _is_zero_timeout(timeout) and self._fdw is None
                    and _mono_ns() < self._next_check_ns):
                # the common poll: no deadline, no wait machinery (unless a
                # fileno() waiter must re-arm, or the liveness check is due)
                raise Empty()
            if n <= 0:
                self._pop_into(self._scratch, 1, timeout, &dropped)
            rec = PyArray_Scalar(self._scratch, self._rec_descr, NULL)
            if dropped:
                self._lagged(dropped, np.array([rec], dtype=self._dtype))
            return rec
        arr = self._empty(1)
        self._pop_into(<char *>cnp.PyArray_DATA(arr), 1, timeout, &dropped)
        if dropped:
            self._lagged(dropped, arr)
        return arr[0]

    def try_pop(self):
        """One record like pop(), or None at once when none is there (never waits,
        never raises Empty). Raises Closed once the stream ended and was drained."""
        cdef uint64_t dropped = 0
        cdef int64_t n
        self._ready_check()
        if self._pending is not None:
            return self._take_pending(1)[0]
        if self._scalar_path:
            n = shmr_pop(self._c, self._scratch, 1, &dropped)
            if n == 1:
                rec = PyArray_Scalar(self._scratch, self._rec_descr, NULL)
                if dropped:
                    self._lagged(dropped, np.array([rec], dtype=self._dtype))
                return rec
        else:
            arr = self._empty(1)
            n = shmr_pop(self._c, <char *>cnp.PyArray_DATA(arr), 1, &dropped)
            if n == 1:
                if dropped:
                    self._lagged(dropped, arr)
                return arr[0]
        if n == -SHMR_ECLOSED:
            self._lagged(dropped, None)
            raise self._closed_error()
        if n == -SHMR_EEVICTED:
            raise self._evicted_error()
        if n < 0:
            _raise(n, f"pop from ring {self._map.name!r}")
        if not dropped and _mono_ns() >= self._next_check_ns:
            # the liveness check is due: pop(0) runs it (at most once per
            # interval), else a polling loop would see nothing forever behind a
            # dead producer; it re-arms a fileno() waiter too
            try:
                return self.pop(0)
            except Empty:
                return None
        if self._fdw is not None:
            self._fdw.rearm()  # fileno() protocol: a call that found nothing re-arms
        self._lagged(dropped, None)
        return None

    def _wait_stats(self):
        """As Producer._wait_stats, for this consumer's waits."""
        cdef shmr_wait_stats st
        self._check()
        shmr_consumer_wait_stats(self._c, &st)
        return _wait_stats_dict(&st)

    def __len__(self):
        """Records this consumer could take now without waiting (queue mode: not yet
        taken by any consumer; broadcast: not yet read by this one)."""
        cdef Py_ssize_t held = 0 if self._pending is None else len(self._pending)
        if self._c == NULL:
            return held
        return <Py_ssize_t>shmr_consumer_available(self._c) + held

    def __bool__(self):
        # a handle stays truthy when nothing is waiting (`if cons:` means "have a consumer")
        return True

    cdef object _take_pending(self, Py_ssize_t max_records):
        """The first max_records held-back records, as an array."""
        pend = self._pending
        out = pend[:max_records]
        rest = pend[max_records:]
        self._pending = rest if len(rest) else None
        return out

    def pop_many(self, max_records=None, timeout=None, *, out=None):
        """An array of 1..max_records records copied out of the ring (waits for the
        first one like pop()). With ``out`` (a C-contiguous writable array of the
        ring's records), fills out[:n] without allocating and returns n;
        max_records then defaults to len(out)."""
        cdef uint64_t dropped = 0
        cdef int64_t n
        cdef Py_ssize_t cap
        if timeout is not None:
            _timeout_arg(timeout)
        if out is not None:
            return self._pop_many_into(max_records, timeout, out)
        if max_records is None:
            raise TypeError("pop_many() needs max_records (or out=)")
        cap = _count_arg(max_records, "max_records", 1, PY_SSIZE_T_MAX)
        self._ready_check()
        if self._pending is not None:
            return self._take_pending(cap)
        arr = self._empty(cap)
        max_records = cap
        n = self._pop_into(<char *>cnp.PyArray_DATA(arr), cap, timeout, &dropped)
        if n < cap:
            arr = arr[:n].copy() if n * 4 < cap else arr[:n]
        if dropped:
            self._lagged(dropped, arr)
        return arr

    cdef object _pop_many_into(self, object max_records, object timeout, object out):
        cdef uint64_t dropped = 0
        cdef int64_t n
        cdef Py_ssize_t cap, k
        cdef cnp.ndarray a
        if type(out) is not np.ndarray:
            raise TypeError(f"out must be a numpy array of the ring's records, not {type(out).__name__}")
        a = <cnp.ndarray>out
        if a.dtype is not self._base and a.dtype != self._base:
            raise TypeError(f"out has dtype {a.dtype}, the ring holds {self._dtype}")
        if a.ndim != 1 + len(self._shape) or tuple(out.shape[1:]) != self._shape:
            raise ValueError(f"out needs shape (n,) + {self._shape}, got {out.shape}")
        if not cnp.PyArray_ISCARRAY(a):
            raise ValueError("out must be C-contiguous, aligned and writable")
        cap = a.shape[0]
        if max_records is not None:
            cap = _count_arg(max_records, "max_records", 1, cap) if cap else 0
        if cap < 1:
            raise ValueError("out has room for no record")
        self._ready_check()
        if self._pending is not None:
            pend = self._take_pending(cap)
            k = len(pend)
            out[:k] = pend
            return k
        n = self._pop_into(<char *>cnp.PyArray_DATA(a), cap, timeout, &dropped)
        if dropped:
            self._lagged(dropped, out[:n].copy())
        return n

    def view(self, Py_ssize_t max_records, timeout=None):
        """Context manager giving a read-only array of 1..max_records records that
        lives in the ring (no copy). Leaving the block releases them to the producer."""
        cdef const void *ptr = NULL
        cdef uint64_t dropped = 0
        cdef int64_t k
        cdef Waiting w
        _waiting_init(&w, self._spin_ns)
        if timeout is not None:
            _timeout_arg(timeout)
        self._ready_check()
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        if self._pending is not None:  # held back by an earlier Lagged: they come first
            pend = self._take_pending(max_records)
            pend.flags.writeable = False
            return View._make(None, pend)
        while True:
            k = shmr_claim(self._c, max_records, &ptr, &dropped)
            if k > 0:
                break
            if k == -SHMR_ECLOSED:
                self._lagged(dropped, None)
                raise self._closed_error()
            if k == -SHMR_EEVICTED:
                raise self._evicted_error()
            if k < 0:
                _raise(k, "view")
            if not self._block(&w, timeout):
                self._lagged(dropped, None)
                raise Empty()
        self._viewing = True
        try:
            arr = self._array(<void *>ptr, k, False)
        except BaseException:
            self._release_claim()
            raise
        if dropped and self._raise_lag:
            # report the loss now; what this claim got is copied and handed out
            # first by the next call (less whatever was overwritten meanwhile)
            held = arr.copy()
            bad = self._release_claim()
            self._lagged(dropped + bad, held[bad:])
        return View._make(self, arr)

    cdef int64_t _release_claim(self) except -1:
        cdef int64_t bad
        self._viewing = False
        if self._c == NULL or self._gen != _fork_gen:
            return 0
        if self._closed and not self._busy:
            # close() came inside the view block and was deferred to here: the
            # records stay the view's until the block ends
            bad = shmr_release(self._c)
            err = self._evicted_error() if bad == -SHMR_EEVICTED else None
            self._free_handle()
        else:
            bad = shmr_release(self._c)
            err = self._evicted_error() if bad == -SHMR_EEVICTED else None
        if err is not None:
            # the producer took the viewed records back while they were held:
            # what the view showed may have been overwritten
            raise err
        return bad

    cdef object _evicted_error(self):
        cdef uint64_t taken = shmr_consumer_evicted_claim(self._c) if self._c != NULL else 0
        after = self._map.info()["evict_after_ms"] / 1000
        what = (f"; the {taken} records it held were taken back and counted abandoned (not delivered)"
                if taken else "")
        return Evicted(taken, f"consumer #{shmr_consumer_index(self._c) if self._c != NULL else '?'} of ring "
                              f"{self._map.name!r} was evicted: it held the producer back for longer than "
                              f"evict_after={after:g} s{what}; close it and open a new consumer")

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.pop()
        except Closed:
            raise StopIteration from None

    @property
    def popped(self):
        """Records this consumer received."""
        return shmr_consumer_popped(self._c) if self._c != NULL else 0

    @property
    def dropped(self):
        """Records this consumer lost because an overwriting producer lapped it."""
        return shmr_consumer_dropped(self._c) if self._c != NULL else 0

    @property
    def index(self):
        return shmr_consumer_index(self._c) if self._c != NULL else -1

    def close(self):
        """Leave the ring; a broadcast producer stops waiting for this consumer at once.
        Inside a view() block the records stay held until the block ends."""
        if self._viewing and not self._closed:
            self._closed = True  # the view's __exit__ releases and leaves
            return
        _Handle.close(self)

    cdef void _free_handle(self) noexcept:
        if self._c == NULL:
            return
        _drop_arms(self)
        if self._gen == _fork_gen:
            shmr_consumer_free(self._c)
        else:
            free(<void *>self._c)
        self._c = NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    cdef object _pop_now(self):
        cdef uint64_t dropped = 0
        self._ready_check()
        if self._scalar_path and self._pending is None and shmr_pop(self._c, self._scratch, 1, &dropped) == 1:
            rec = PyArray_Scalar(self._scratch, self._rec_descr, NULL)
            if dropped:
                self._lagged(dropped, np.array([rec], dtype=self._dtype))
            return rec
        return _NOTHING


@cython.no_gc_clear
cdef class View:
    cdef Consumer _cons
    cdef object _arr
    cdef bint _done

    @staticmethod
    cdef View _make(Consumer cons, object arr):
        cdef View v = View.__new__(View)
        v._cons = cons
        v._arr = arr
        return v

    @property
    def array(self):
        return self._arr

    def __len__(self):
        return self._arr.shape[0]

    def __enter__(self):
        return self._arr

    def __exit__(self, et, ev, tb):
        if self._done:
            return False
        self._done = True
        if self._cons is None:  # a copy of held-back records: nothing to release
            return False
        cdef int64_t bad = self._cons._release_claim()
        if bad > 0 and et is None:
            raise Lagged(bad, f"the producer overwrote {bad} records of this view while it was held; "
                              f"their contents are not valid")
        return False

    def __dealloc__(self):
        # never entered or never exited: give the records back
        if not self._done and self._cons is not None:
            self._done = True
            try:
                self._cons._release_claim()
            except Exception:
                pass


include "_board.pxi"
include "_messages.pxi"
include "_async.pxi"
include "_queue.pxi"
include "_queue_fd.pxi"
