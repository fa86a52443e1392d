# Queue segments (csrc/mpqueue.c): the mapping, and the hot half of
# shmring.Queue (put/get and their waits). Included into _ring.pyx, so a lane
# is driven by the very MessageProducer / MessageConsumer code of message rings
# (and its codec); shmring.queues adds the stdlib-shaped API around it.

import threading

from shmring.errors import ConsumerTableFull as _ConsumerTableFull

MPQ_MAX_LANES = SHMR_MPQ_MAX_LANES
MPQ_MIN_LANE_BYTES = SHMR_MPQ_MIN_LANE_BYTES

# _NOTHING (declared in _ring.pyx) marks "no item": any object a user puts is a real item

DEF WAIT_DATA = 0
DEF WAIT_ROOM = 1
DEF WAIT_JOIN = 2


cdef extern from "pythread.h":
    ctypedef void *PyThread_type_lock
    ctypedef long long PY_TIMEOUT_T
    PyThread_type_lock PyThread_allocate_lock()
    void PyThread_free_lock(PyThread_type_lock)
    int PyThread_acquire_lock_timed(PyThread_type_lock, PY_TIMEOUT_T microseconds, int intr_flag) nogil
    void PyThread_release_lock(PyThread_type_lock) nogil
    int PY_LOCK_ACQUIRED
    int PY_LOCK_INTR


@cython.final
cdef class _Lock:
    """A thread lock for the put and get paths, taken and given with the GIL
    held: uncontended, a take and a give are a flag each (the GIL orders them
    against every other thread). A thread that finds the flag set waits, with
    the GIL released, on a PyThread lock used as a baton that every give
    releases while someone waits; PyThread_acquire_lock_timed alone cost ~130
    instructions per call (it reads the clock even to try)."""
    cdef PyThread_type_lock _l
    cdef bint _busy
    cdef int _waiting

    def __cinit__(self):
        self._l = PyThread_allocate_lock()
        if self._l == NULL:
            raise MemoryError()
        PyThread_acquire_lock_timed(self._l, 0, 0)  # the baton starts taken: waiters block

    def __dealloc__(self):
        if self._l != NULL:
            PyThread_free_lock(self._l)

    cdef bint take(self, double timeout) except -1:
        """True once held; False when timeout (seconds, < 0 forever) passed first."""
        cdef int r
        cdef int64_t deadline, left
        cdef PY_TIMEOUT_T us
        if not self._busy:
            self._busy = True
            return True
        if timeout == 0:
            return False
        deadline = -1 if timeout < 0 else _mono_ns() + <int64_t>(timeout * 1e9)
        self._waiting += 1
        try:
            while True:
                if deadline < 0:
                    us = -1
                else:
                    left = deadline - _mono_ns()
                    if left <= 0:
                        return False
                    us = <PY_TIMEOUT_T>(left // 1000)
                with nogil:
                    r = PyThread_acquire_lock_timed(self._l, us, 1)
                if not self._busy:  # a give, or another waiter's baton it no longer needed
                    self._busy = True
                    return True
                if r == PY_LOCK_INTR:
                    PyErr_CheckSignals()  # a handler's exception ends the wait
        finally:
            self._waiting -= 1

    cdef void give(self) noexcept:
        self._busy = False
        if self._waiting:
            PyThread_release_lock(self._l)


cdef int _raise_q(int64_t rc, str what) except -1:
    cdef int code = <int>(-rc)
    if code == SHMR_ENOTQUEUE:
        raise NotARingError(f"{what}: the segment is a shmring ring, not a queue (use shmring.Ring.attach)")
    if code == SHMR_EBADMAGIC:
        raise NotARingError(f"{what}: the shared-memory segment is not a shmring queue (bad magic)")
    if code == SHMR_EVERSION:
        raise LayoutVersionError(f"{what}: the queue was written with another layout version")
    if code == SHMR_ECORRUPT:
        raise CorruptRingError(f"{what}: the queue header is corrupt (a field is out of bounds)")
    return _raise(rc, what)


@cython.final
cdef class QueueMapping:
    """Owns one mapping of a queue segment and its file descriptor. Every lane
    Mapping holds a reference, so nothing is unmapped while a lane is in use."""

    cdef shmr_mpq *q
    cdef readonly str name     # "" for an anonymous queue

    def __dealloc__(self):
        if self.q != NULL:
            shmr_mpq_detach(self.q)
            self.q = NULL

    @staticmethod
    def create(str name, uint32_t lanes, uint32_t max_consumers, uint64_t lane_bytes, int64_t maxsize,
               unsigned perm):
        cdef QueueMapping m = QueueMapping.__new__(QueueMapping)
        cdef shmr_mpq_params p
        p.lanes = lanes
        p.max_consumers = max_consumers
        p.lane_bytes = lane_bytes
        p.maxsize = maxsize
        cdef bytes bname = name.encode() if name else b""
        cdef const char *cname = NULL
        if name:
            cname = bname
        cdef int rc = shmr_mpq_create(cname, &p, perm, &m.q)
        if rc:
            _raise_q(rc, f"create queue {name!r}" if name else "create queue")
        m.name = name or ""
        return m

    @staticmethod
    def attach(str name):
        cdef QueueMapping m = QueueMapping.__new__(QueueMapping)
        cdef bytes bname = name.encode()
        cdef int rc = shmr_mpq_attach(bname, &m.q)
        if rc:
            _raise_q(rc, f"attach queue {name!r}")
        m.name = name
        return m

    @staticmethod
    def attach_fd(int fd, str name):
        """Validate and map an open descriptor (consumed: closed with the mapping)."""
        cdef QueueMapping m = QueueMapping.__new__(QueueMapping)
        cdef int rc = shmr_mpq_attach_fd(fd, &m.q)
        if rc:
            _raise_q(rc, f"attach queue {name!r}" if name else "attach queue")
        m.name = name
        return m

    @property
    def fd(self):
        return shmr_mpq_fd(self.q)

    @property
    def params(self):
        """(max_producers, max_consumers, nbytes per lane, maxsize)"""
        cdef shmr_mpq_params p
        shmr_mpq_params_of(self.q, &p)
        return p.lanes, p.max_consumers, p.lane_bytes, p.maxsize

    @property
    def file_owner(self):
        cdef uint32_t uid, mode
        shmr_mpq_file_owner(self.q, &uid, &mode)
        return uid, mode

    def stats(self):
        """shmr_mpq_info as a dict, field for field."""
        cdef shmr_mpq_info i
        shmr_mpq_stats(self.q, &i)
        return i

    def items(self):
        return shmr_mpq_items(self.q)

    def unfinished(self):
        return shmr_mpq_unfinished(self.q)

    def recover(self):
        """Sweep dead consumers and repair lanes of dead producers; what was fixed."""
        return shmr_mpq_recover(self.q)

    def lane(self, uint32_t i):
        """A ring Mapping over lane i (for stats), None while it is not formatted."""
        cdef shmr_ring *r
        cdef int rc = shmr_mpq_lane_open(self.q, i, &r)
        if rc == -EAGAIN:
            return None
        if rc:
            _raise_q(rc, f"lane {i}")
        return _lane_mapping(self, r, i)


cdef Mapping _lane_mapping(QueueMapping qm, shmr_ring *r, uint32_t i):
    cdef Mapping m = Mapping.__new__(Mapping)
    m.r = r
    m._owner = qm
    m.name = f"{qm.name or 'queue'}[lane {i}]"
    return m


@cython.no_gc_clear
cdef class _QueueCore:
    """What every process does with a queue: its own lane for put, a consumer
    slot on every lane in use for get. Handles are opened lazily, per process:
    after a fork the child drops the parent's (never using its lane or slots)."""

    cdef QueueMapping _qm
    cdef shmr_mpq *_q
    cdef int _gen
    cdef MessageProducer _prod
    cdef uint32_t _lane
    cdef uint64_t _consumed
    cdef list _cons
    cdef _Lock _put_lock
    cdef _Lock _get_lock
    cdef bint _qclosed
    cdef int64_t _spin_ns
    cdef int64_t _slice_ns
    cdef int64_t _next_check_ns
    cdef uint32_t _spins_lost     # getter spins in a row that ran out
    cdef uint32_t _sleep_at_once  # getter waits left that skip the spin
    cdef shmr_msg *_batch
    cdef readonly int64_t _maxsize
    cdef readonly uint64_t _nbytes

    def __dealloc__(self):
        if self._batch != NULL:
            free(self._batch)
            self._batch = NULL

    def _core_init(self, QueueMapping qm, double spin, double liveness_interval):
        self._qm = qm
        self._q = qm.q
        self._spin_ns = <int64_t>(min(_spin_arg(spin), 60.0) * 1e9)
        self._slice_ns = <int64_t>(_liveness_arg(liveness_interval) * 1e9)
        lanes, mc, nbytes, maxsize = qm.params
        self._maxsize = maxsize
        self._nbytes = nbytes
        self._fresh()

    cdef void _fresh(self):
        """Per-process state: nothing opened yet."""
        self._gen = _fork_gen
        self._prod = None
        self._cons = []
        self._consumed = 0
        self._put_lock = _Lock()
        self._get_lock = _Lock()

    cdef inline int _enter(self) except -1:
        if self._qclosed:
            raise ValueError(f"{self!r} is closed")
        if self._gen != _fork_gen:
            # inherited through fork: the parent's lane and consumer slots stay
            # the parent's (their handles only free their memory here)
            self._fresh()
        return 0

    @property
    def _queue_mapping(self):
        return self._qm

    # ---- waiting ------------------------------------------------------------

    cdef bint _wait(self, Waiting *w, object timeout, int what, uint64_t n) except -1:
        """As _Handle._block, for the queue's eventcounts: sleeps at most one
        liveness slice, then runs signal handlers and recovery. True: try again."""
        cdef int rc
        cdef int64_t sl, now
        cdef shmr_mpq *q = self._q
        cdef int64_t spin, t0
        if not w.started:
            _waiting_start(w, timeout)
        sl = _waiting_slice(w, self._slice_ns)
        if sl == 0:
            # non-blocking: recovery still runs once per interval, so a polling
            # loop cannot see Empty / Full forever behind a dead peer
            now = _mono_ns()
            if now >= self._next_check_ns:
                self._next_check_ns = now + self._slice_ns
                if shmr_mpq_recover(q) > 0:
                    return True
            if what == WAIT_DATA:
                _queue_fd_rearm(self)  # fileno() protocol (_queue_fd.pxi)
            return False
        spin = w.spin_ns
        if what == WAIT_DATA and spin > 0 and self._sleep_at_once > 0:
            self._sleep_at_once -= 1
            spin = 0
        t0 = _mono_ns() if spin > 0 else 0
        with nogil:
            if what == WAIT_DATA:
                rc = shmr_mpq_wait_data(q, sl, spin)
            elif what == WAIT_ROOM:
                rc = shmr_mpq_wait_room(q, n, sl, spin)
            else:
                rc = shmr_mpq_wait_join(q, sl, spin)
        if what == WAIT_DATA and spin > 0:
            # A getter's spin pays while items come faster than a sleep and a wake
            # cost; when spins keep running out (items slower than the spin, or
            # more processes than CPUs, where a spinner takes a CPU a putter
            # needs), the next waits sleep at once, and every eighth spins again
            if rc == 0 and _mono_ns() - t0 <= spin:
                self._spins_lost = 0
            else:
                self._spins_lost += 1
                if self._spins_lost >= 2:
                    self._sleep_at_once = 7
        w.spin_ns = 0
        if self._qclosed:
            raise ValueError(f"{self!r} was closed while a call on it was blocked")
        if rc == 0:
            return True
        PyErr_CheckSignals()
        self._next_check_ns = _mono_ns() + self._slice_ns
        shmr_mpq_recover(q)
        if w.deadline >= 0 and _mono_ns() >= w.deadline:
            if what == WAIT_DATA:
                shmr_mpq_leave(q)  # a put's single wake may have been ours
            return False
        return True

    # ---- put ----------------------------------------------------------------

    cdef MessageProducer _producer(self):
        cdef shmr_ring *r
        cdef shmr_producer *p
        cdef uint32_t lane
        cdef int rc
        if self._prod is not None:
            return self._prod
        if self._qclosed:  # close() ran while this put waited for the lock
            raise ValueError(f"{self!r} is closed")
        rc = shmr_mpq_producer_open(self._q, &r, &p, &lane)
        if rc == -SHMR_ELANES:
            lanes = self._qm.params[0]
            raise RingError(f"{self!r}: all {lanes} lanes are held by live producer processes "
                            f"(max_producers={lanes}); create the queue with a larger max_producers")
        if rc:
            _raise_q(rc, "put")
        note = (f"a queue item is at most {shmr_msg_max(r)} bytes encoded: half of nbytes={self._nbytes} "
                f"less a 32-byte frame header; create the queue with a larger nbytes")
        m = _lane_mapping(self._qm, r, lane)
        self._prod = MessageProducer._adopt(m, p, note, self._spin_ns / 1e9, self._slice_ns / 1e9)
        self._lane = lane
        return self._prod

    cdef int _admit(self, uint64_t n, object timeout, Waiting *w) except -1:
        if shmr_mpq_admit(self._q, self._lane, n, &self._consumed):
            return 0
        if <uint64_t>self._maxsize < n:
            raise ValueError(f"{n} items can never fit a queue of maxsize={self._maxsize}")
        while True:
            if not self._wait(w, timeout, WAIT_ROOM, n):
                raise Full(f"queue is full: {self._maxsize} items (maxsize)")
            if shmr_mpq_admit(self._q, self._lane, n, &self._consumed):
                return 0

    cdef object _left(self, Waiting *w, object timeout):
        """What remains of the call's timeout for a wait inside it."""
        cdef int64_t left
        if not w.started:
            return timeout
        if w.deadline < 0:
            return None
        left = w.deadline - _mono_ns()
        return left / 1e9 if left > 0 else 0

    def put(self, obj, block=True, timeout=None):
        """Put obj into the queue (see shmring.Queue.put)."""
        cdef Waiting w
        cdef MessageProducer prod
        self._enter()
        if not block:
            timeout = 0
        elif timeout is not None:
            _timeout_arg(timeout)  # a negative or non-number timeout: ValueError / TypeError
        _waiting_init(&w, self._spin_ns)
        if not self._put_lock.take(-1 if timeout is None else min(_timeout_arg(timeout), TIMEOUT_FOREVER)):
            raise Full("queue is busy: another thread of this process is putting and the timeout passed")
        try:
            prod = self._producer()
            self._admit(1, timeout, &w)
            try:
                prod._push_one(obj, self._left(&w, timeout))
            except Full:
                shmr_mpq_unadmit(self._q, self._lane, 1)
                raise Full(f"queue is full: this process's lane holds nbytes={self._nbytes} bytes in flight")
            except BaseException:
                shmr_mpq_unadmit(self._q, self._lane, 1)
                raise
        finally:
            if self._qclosed:
                self._drop_producer()  # close() came from another thread meanwhile
            self._put_lock.give()

    def put_many(self, items, block=True, timeout=None):
        """Put every item of an iterable, in order; returns how many."""
        cdef Waiting w
        cdef MessageProducer prod
        cdef uint64_t n
        cdef bint admitted = False
        self._enter()
        if not block:
            timeout = 0
        elif timeout is not None:
            _timeout_arg(timeout)  # a negative or non-number timeout: ValueError / TypeError
        if isinstance(items, (bytes, bytearray, memoryview, str, dict, np.ndarray)):
            raise TypeError(f"put_many() takes an iterable of items, not a {type(items).__name__} "
                            f"(use put() to send it as one item)")
        items = list(items)
        n = len(items)
        if n == 0:
            return 0
        _waiting_init(&w, self._spin_ns)
        if not self._put_lock.take(-1 if timeout is None else min(_timeout_arg(timeout), TIMEOUT_FOREVER)):
            raise Full("queue is busy: another thread of this process is putting and the timeout passed")
        try:
            prod = self._producer()
            if self._maxsize <= 0:
                admitted = shmr_mpq_admit(self._q, self._lane, n, &self._consumed)  # always room
            elif n <= <uint64_t>self._maxsize:
                # all at once when there is room for all now (one admit, one publish)
                admitted = shmr_mpq_admit(self._q, self._lane, n, &self._consumed)
            if admitted:
                try:
                    prod.push_many(items, timeout)
                except Full as exc:
                    shmr_mpq_unadmit(self._q, self._lane, n - exc.pushed)
                    raise Full(f"queue is full: this process's lane holds nbytes={self._nbytes} bytes in flight; "
                               f"{exc.pushed} of {n} items were put", pushed=exc.pushed) from None
                except BaseException:
                    shmr_mpq_unadmit(self._q, self._lane, n)
                    raise
        finally:
            if self._qclosed:
                self._drop_producer()  # close() came from another thread meanwhile
            self._put_lock.give()
        if admitted:
            return n
        # no room under maxsize for all of them now: each item is admitted on its
        # own, as put() would, so the queue never holds more than maxsize
        for k, obj in enumerate(items):
            try:
                self.put(obj, True, self._left(&w, timeout))
            except Full as exc:
                raise Full(f"{exc}; {k} of {n} items were put", pushed=k) from None
            if not w.started:
                _waiting_start(&w, timeout)
        return n

    # ---- get ----------------------------------------------------------------

    cdef MessageConsumer _consumer(self, Py_ssize_t i):
        cdef shmr_ring *r
        cdef int rc = shmr_mpq_lane_open(self._q, <uint32_t>i, &r)
        if rc == -EAGAIN:
            return None  # its first producer is still formatting it
        if rc:
            _raise_q(rc, "get")
        m = _lane_mapping(self._qm, r, <uint32_t>i)
        try:
            mc = MessageConsumer._open(m, None, SHMR_START_LATEST, False, True, self._spin_ns / 1e9,
                                       self._slice_ns / 1e9)
        except _ConsumerTableFull:
            mcs = self._qm.params[1]
            raise _ConsumerTableFull(f"{self!r}: {mcs} consumer processes use the queue already "
                                     f"(max_consumers={mcs}); create it with a larger max_consumers") from None
        self._cons[i] = mc
        shmr_mpq_joined(self._q)  # awaiting putters watch us from now on (getters: shmr_consumer_open)
        return mc

    cdef object _take(self, list out, Py_ssize_t max_items, uint64_t raw_own=0):
        """Items from the lane holding the oldest one (shmr_mpq_pick): for get
        (out None) the item or _NOTHING; for get_many appended to out. With
        ``raw_own`` (the bridge's _get_raw) at most max_items undecoded, appended
        to out as one _raw_batch; returns how many, or _NOTHING."""
        cdef uint32_t lane = 0
        cdef uint64_t count = 0
        cdef Py_ssize_t j, want, tries
        cdef int64_t got
        cdef MessageConsumer mc
        cdef shmr_loss loss
        cdef shmr_msg *msgs
        loss.msgs = 0
        loss.bytes = 0
        if raw_own:
            want = min(max_items, MSG_BATCH)
        else:
            want = 1 if out is None else min(max_items - len(out), MSG_BATCH)
        self._get_lock.take(-1)
        try:
            # a lane the pick named may be emptied by another consumer before our
            # claim: pick again (bounded; the caller's wait re-checks)
            for tries in range(64):
                if not shmr_mpq_pick(self._q, want, &lane, &count):
                    return _NOTHING
                if lane >= len(self._cons):
                    self._cons.extend([None] * (lane + 1 - len(self._cons)))
                mc = self._cons[lane]
                if mc is None:
                    mc = self._consumer(lane)
                    if mc is None:
                        continue
                msgs = mc._one
                if count > 1:
                    if self._batch == NULL:
                        self._batch = <shmr_msg *>malloc(MSG_BATCH * sizeof(shmr_msg))
                        if self._batch == NULL:
                            raise MemoryError()
                    msgs = self._batch
                got = shmr_msg_claim(mc._c, msgs, count, &loss)
                if got == 0 or got == -SHMR_ECLOSED:
                    continue  # taken meanwhile; a lane whose producer left is merely empty
                if got < 0:
                    if got == -EIO:
                        raise CorruptRingError(f"{self!r}: a message frame in lane {lane} is corrupt")
                    _raise(got, "get")
                try:
                    if raw_own:
                        out.append(_raw_batch(mc._map, msgs, got, raw_own, True))
                        return got
                    if out is None:
                        return mc._decode_copy(msgs)
                    for j in range(got):
                        out.append(mc._decode_copy(&msgs[j]))
                finally:
                    shmr_msg_release(mc._c, msgs, &loss)
                    shmr_mpq_taken(self._q)
                return _NOTHING
        finally:
            self._get_lock.give()
        return _NOTHING

    def get(self, block=True, timeout=None):
        """Remove and return an item (see shmring.Queue.get)."""
        cdef Waiting w
        self._enter()
        obj = self._take(None, 1)
        if obj is not _NOTHING:
            return obj
        if not block:
            timeout = 0
        elif timeout is not None:
            _timeout_arg(timeout)  # a negative or non-number timeout: ValueError / TypeError
        _waiting_init(&w, self._spin_ns)
        while True:
            if not self._wait(&w, timeout, WAIT_DATA, 0):
                raise Empty("the queue stayed empty until the timeout")
            obj = self._take(None, 1)
            if obj is not _NOTHING:
                return obj

    cdef int _fill(self, list out, Py_ssize_t max_items) except -1:
        """Takes batches, oldest first, until max_items or nothing is left."""
        cdef Py_ssize_t before
        while len(out) < max_items:
            before = len(out)
            self._take(out, max_items)
            if len(out) == before:
                break
        return 0

    def get_many(self, Py_ssize_t max_items, block=True, timeout=None):
        """A list of 1..max_items items, oldest first (each lane's run of items
        older than every other lane's is taken as one batch); waits for the
        first one like get()."""
        cdef Waiting w
        cdef list out = []
        self._enter()
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self._fill(out, max_items)
        if out:
            return out
        if not block:
            timeout = 0
        elif timeout is not None:
            _timeout_arg(timeout)  # a negative or non-number timeout: ValueError / TypeError
        _waiting_init(&w, self._spin_ns)
        while True:
            if not self._wait(&w, timeout, WAIT_DATA, 0):
                raise Empty("the queue stayed empty until the timeout")
            self._fill(out, max_items)
            if out:
                return out

    # ---- undecoded items (the bridge) ---------------------------------------

    def _get_raw(self, Py_ssize_t max_items, uint64_t own_from, timeout=None):
        """Takes 1..max_items items, oldest first as get_many does, without
        decoding them: (table, packed, owns) laid out as
        MessageConsumer._claim_raw() makes them, every body copied out (owns as
        bytes), so no claim outlives the call. Waits for the first item like
        get(); queue.Empty when the timeout passed."""
        cdef Waiting w
        cdef list parts = []
        cdef Py_ssize_t left = max_items
        self._enter()
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        if own_from < 1:
            raise ValueError("own_from must be >= 1")
        if timeout is not None:
            _timeout_arg(timeout)
        _waiting_init(&w, self._spin_ns)
        while True:
            while left > 0:
                got = self._take(parts, left, own_from)
                if got is _NOTHING:
                    break
                left -= <Py_ssize_t>got
            if parts:
                break
            if not self._wait(&w, timeout, WAIT_DATA, 0):
                raise Empty("the queue stayed empty until the timeout")
        if len(parts) == 1:
            return parts[0]
        return (np.concatenate([p[0] for p in parts]), b"".join([p[1] for p in parts]),
                [o for p in parts for o in p[2]])

    def _put_raw(self, table, packed, owns, Py_ssize_t start=0, timeout=None):
        """Puts items start.. of a batch in the form _get_raw() returns (checked
        by raw_check() first), in order, each admitted against maxsize as put()
        admits it; one memcpy per body into this process's lane. Returns how
        many it put: all of them, or fewer when ``timeout`` ran out."""
        cdef Waiting w
        cdef MessageProducer prod
        cdef Py_ssize_t n = len(table), k, got, done = 0
        self._enter()
        if start < 0 or start > n:
            raise ValueError(f"start {start} is outside the batch of {n}")
        if timeout is not None:
            _timeout_arg(timeout)
        _waiting_init(&w, self._spin_ns)
        if not self._put_lock.take(-1 if timeout is None else min(_timeout_arg(timeout), TIMEOUT_FOREVER)):
            return 0
        try:
            prod = self._producer()
            while start + done < n:
                # all that is left if maxsize has room for it, else one item at a
                # time as consumers make room (as put_many admits each item)
                k = n - start - done
                if not shmr_mpq_admit(self._q, self._lane, k, &self._consumed):
                    k = 1
                    try:
                        self._admit(1, timeout, &w)
                    except Full:
                        break
                try:
                    got = prod._push_raw(table[:start + done + k], packed, owns, start + done,
                                         self._left(&w, timeout))
                except BaseException:
                    shmr_mpq_unadmit(self._q, self._lane, k)
                    raise
                if got < k:
                    shmr_mpq_unadmit(self._q, self._lane, k - got)
                done += got
                if got < k:
                    break
        finally:
            if self._qclosed:
                self._drop_producer()  # close() came from another thread meanwhile
            self._put_lock.give()
        return done

    def _leave(self):
        """A getter that stops waiting without an item (an aget cancelled or timed
        out) passes on the single wake a put may have given it."""
        if self._gen == _fork_gen and not self._qclosed:
            shmr_mpq_leave(self._q)

    def _lane_producer(self):
        """This process's lane producer (taken on first use), for tests."""
        self._enter()
        return self._producer()

    # ---- counts, JoinableQueue ---------------------------------------------

    def qsize(self):
        """Items put and not yet taken, over every process."""
        return shmr_mpq_items(self._q)

    def empty(self):
        return shmr_mpq_has_data(self._q) == 0

    def full(self):
        return self._maxsize > 0 and shmr_mpq_items(self._q) >= <uint64_t>self._maxsize

    def _task_done(self):
        if shmr_mpq_task_done(self._q):
            raise ValueError("task_done() called too many times")

    def _join(self, timeout=None):
        """Waits until every item put was task_done(); False on timeout."""
        cdef Waiting w
        if shmr_mpq_unfinished(self._q) == 0:
            return True
        _waiting_init(&w, self._spin_ns)
        while True:
            if not self._wait(&w, timeout, WAIT_JOIN, 0):
                return shmr_mpq_unfinished(self._q) == 0
            if shmr_mpq_unfinished(self._q) == 0:
                return True

    def _close_handles(self):
        """This process stops using the queue: its lane and slots are given back.
        A put running in another thread keeps the lane until it returns (it may
        still have to take back what it admitted, which only the lane's holder
        may do); a get is never inside a lane's claim while we close."""
        self._qclosed = True
        if self._gen == _fork_gen:
            if self._put_lock.take(0):
                try:
                    self._drop_producer()
                finally:
                    self._put_lock.give()
            self._get_lock.take(-1)
            try:
                for mc in self._cons:
                    if mc is not None:
                        mc.close()
                self._cons = []
            finally:
                self._get_lock.give()
        else:
            self._prod = None
            self._cons = []
        if self._q != NULL:
            shmr_mpq_wake_all(self._q)  # threads of ours blocked in get/put see the close

    cdef int _drop_producer(self) except -1:
        if self._prod is not None:
            self._prod.close()
            self._prod = None
        return 0

    @property
    def _closed(self):
        return self._qclosed

    @property
    def _lane_index(self):
        return self._lane if self._prod is not None and self._gen == _fork_gen else None


# ---- event loops: a queue's waits as _Waitable (shmring.aio) -----------------

DEF QW_DATA = 0
DEF QW_ROOM = 1
DEF QW_LANE = 2


@cython.final
cdef class _QueueWait(_Waitable):
    """One wait of aget / aput (or of wait_any on a queue), as _Waitable: a get
    waits on the queue's data eventcount; a put on room under maxsize, or, with
    that room there, on room in this process's lane for the item its last try
    could not place. Each call makes its own, so an arm and its unarm always
    name the same eventcount."""

    cdef _QueueCore core
    cdef bint put
    cdef int _kind               # what the pending arms counted on
    cdef MessageProducer _prod   # the lane a QW_LANE arm counted on

    cdef int _arm(self, void **word, uint32_t *seen) except -1:
        cdef _QueueCore c = self.core
        c._enter()
        if not self.put:
            self._kind = QW_DATA
            return shmr_mpq_arm_data(c._q, word, seen)
        if not shmr_mpq_room_ready(c._q, 1):
            self._kind = QW_ROOM
            return shmr_mpq_arm_room(c._q, 1, word, seen)
        if c._prod is None or not c._prod._usable():
            return 1  # no lane yet: a put takes one
        self._kind = QW_LANE
        self._prod = c._prod
        return self._prod._arm(word, seen)

    cdef void _unarm(self) noexcept:
        if self._kind == QW_LANE:
            if self._prod._usable():
                self._prod._unarm()
        elif self._kind == QW_ROOM:
            shmr_mpq_disarm_room(self.core._q)
        else:
            shmr_mpq_disarm_data(self.core._q)

    cdef bint _usable(self) noexcept:
        # the mapping lives as long as the core; a closed queue still un-counts
        return self.core._gen == _fork_gen

    cdef bint _ready_now(self) except -1:
        cdef _QueueCore c = self.core
        c._enter()
        if not self.put:
            return shmr_mpq_has_data(c._q) != 0
        if not shmr_mpq_room_ready(c._q, 1):
            return False
        return c._prod is None or not c._prod._usable() or shmr_msg_producer_ready(c._prod._p, c._prod._want) != 0

    cdef object _peers(self):
        # every lane's producer and consumers (shmr_mpq_peers says why each)
        return _peers_of(_mpq_peers_fn, self.core._q, 0) if self._usable() else ()

    cdef int64_t _tick_ns(self) noexcept:
        # only while a peer cannot be watched (another pid namespace): each
        # tick is a whole wake-up of the awaiting task, so 8 liveness intervals
        return 8 * self.core._slice_ns

    cdef void _liveness(self) noexcept:
        if not self.core._qclosed and self.core._gen == _fork_gen:
            shmr_mpq_recover(self.core._q)


def _queue_wait(_QueueCore q, bint put, timeout=None):
    """A fresh waitable for one aget (put False) or aput (put True) on q; the
    timeout is checked as get / put check it."""
    _timeout_arg(timeout)
    cdef _QueueWait w = _QueueWait.__new__(_QueueWait)
    w.core = q
    w.put = put
    return w
