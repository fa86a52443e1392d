"""Stateful property tests: random operation sequences against a pure-Python model.

One process plays the producer and every consumer, and every timeout is 0, so the
model can predict each call exactly:

* queue mode: every record goes to exactly one consumer, FIFO overall; push gets
  Full exactly when the oldest unreleased record is ``capacity`` behind the head;
* broadcast/block: every consumer sees every record from its join point in order;
  push gets Full exactly when the slowest consumer is ``capacity`` behind;
* broadcast/overwrite: the model predicts which records each consumer gets and its
  ``dropped`` count, including records torn by a reservation that is open or was
  aborted (its slots count as overwritten: the user may have written into them).

A consumer may serve a pop_many()/view() from its private copy of the head, so a batch
can be shorter than what is available; the model mirrors that copy, so batch sizes are
exact too. Which records, their order, their content, Full/Empty/Closed/Lagged and every
counter (popped, dropped, stats()) are checked after every step.

Four machines (queue, broadcast/block, broadcast/overwrite with on_lag="skip", and with
on_lag="raise" too), so that a failure in one does not hide the others. The regression
tests at the end pin down what the machines found.

Runs are deterministic (derandomize=True, no example database). To explore more:
SHMRING_HYPOTHESIS_EXAMPLES=2000 SHMRING_HYPOTHESIS_RANDOM=1 pytest tests/test_stateful.py
A failure prints the reproduce blob (print_blob=True) and the shrunk step list.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import shmring

BASE = 1000  # record at position p carries seq BASE + p: never-written (zero) slots cannot pass
GARBAGE = 0xDEAD_BEEF_DEAD_BEEF
SUB_KEY = 0x5A5A_5A5A_5A5A_5A5A

DTYPES = {
    "u8": np.dtype("<u8"),  # scalar pop path
    "struct": np.dtype([("seq", "<u8"), ("tag", "u1", (3,))]),  # np.void path, odd itemsize 11
    "sub": np.dtype(("<u8", (2,))),  # subarray path: records are ndarrays
}

_EXAMPLES = int(os.environ.get("SHMRING_HYPOTHESIS_EXAMPLES", "300"))
_RANDOM = os.environ.get("SHMRING_HYPOTHESIS_RANDOM", "") not in ("", "0")

SETTINGS = settings(
    max_examples=_EXAMPLES,
    stateful_step_count=50,
    deadline=None,
    database=None,
    derandomize=not _RANDOM,
    print_blob=True,
    report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],  # no slow 'explain'
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

_names = itertools.count()


def _unique_name() -> str:
    return f"st{os.getpid()}-{next(_names)}"  # <= 25 chars


# ---- record encoding --------------------------------------------------------


def encode_many(dt: np.dtype, positions) -> np.ndarray:
    seqs = np.array([BASE + p for p in positions], dtype="<u8")
    if dt.names:
        arr = np.zeros(len(seqs), dtype=dt)
        arr["seq"] = seqs
        arr["tag"] = (seqs % 251).astype("u1")[:, None]
        return arr
    if dt.subdtype is not None:
        return np.stack([seqs, seqs ^ np.uint64(SUB_KEY)], axis=1) if len(seqs) else np.zeros((0, 2), "<u8")
    return seqs


def encode_one(dt: np.dtype, pos: int):
    arr = encode_many(dt, [pos])
    if dt.names:
        return arr[0]  # np.void
    if dt.subdtype is not None:
        return arr[0]  # ndarray of shape (2,)
    return np.uint64(BASE + pos)


def fill(arr: np.ndarray, dt: np.dtype, positions) -> None:
    arr[...] = encode_many(dt, positions)


def fill_garbage(arr: np.ndarray, dt: np.dtype) -> None:
    if dt.names:
        arr["seq"] = GARBAGE
        arr["tag"] = 7
    else:
        arr[...] = GARBAGE


def decode_many(dt: np.dtype, arr: np.ndarray) -> list:
    """seq - BASE of each record; a record whose redundancy does not check out decodes
    to a ('corrupt', ...) marker, which never equals an expected position."""
    out = []
    arr = np.asarray(arr)
    if dt.names:
        for rec in arr.reshape(-1):
            s = int(rec["seq"])
            ok = all(int(t) == s % 251 for t in rec["tag"])
            out.append(s - BASE if ok else ("corrupt", s))
    elif dt.subdtype is not None:
        for rec in arr.reshape(-1, 2):
            s, chk = int(rec[0]), int(rec[1])
            out.append(s - BASE if chk == s ^ SUB_KEY else ("corrupt", s, chk))
    else:
        out = [int(x) - BASE for x in arr.reshape(-1)]
    return out


def check_pop_type(dt: np.dtype, rec: Any) -> None:
    if dt.names:
        assert isinstance(rec, np.void) and rec.dtype == dt, (type(rec), getattr(rec, "dtype", None))
    elif dt.subdtype is not None:
        assert isinstance(rec, np.ndarray) and rec.shape == (2,) and rec.dtype == np.dtype("<u8"), repr(rec)
    else:
        assert isinstance(rec, np.generic) and not isinstance(rec, np.ndarray) and rec.dtype == dt, repr(rec)


def check_batch_type(dt: np.dtype, arr: Any, n: Optional[int] = None) -> None:
    assert isinstance(arr, np.ndarray), type(arr)
    base, shape = (dt.subdtype if dt.subdtype is not None else (dt, ()))
    assert arr.dtype == base and arr.shape[1:] == shape, (arr.dtype, arr.shape)
    if n is not None:
        assert arr.shape[0] == n


# ---- the model --------------------------------------------------------------


@dataclass
class CModel:
    handle: Any
    on_lag: str
    cursor: int = 0  # broadcast: the ring's cursor (next position it will copy)
    popped: int = 0  # records the ring counts as handed out (ring counter)
    dropped: int = 0
    pending: list = field(default_factory=list)  # copied, held back by a Lagged; delivered next
    view: Optional[tuple] = None  # (View, array, pos, k)
    hc: int = 0  # the consumer's cached copy of the head
    last: int = -1  # last position delivered to the user (order check)


class RingMachine(RuleBasedStateMachine):
    MODE = "queue"
    OVERFLOW = "block"
    LAG_CHOICES = ("skip",)

    def __init__(self) -> None:
        super().__init__()
        self.ring = None
        self.name = None
        self.cons: list[CModel] = []
        self.prod = None
        self.res = None  # (Reservation, array, pos, k)
        self.head = 0
        self.intent = 0  # broadcast: highest position announced (open/aborted reservations)
        self.tail = 0  # queue: next position to claim
        self.closed = False
        self.delivered: list[int] = []  # queue: every position handed out, in order
        self.popped_retired = 0  # records received by consumers that have left

    # ---- set-up / teardown ----------------------------------------------------

    @initialize(
        cap_req=st.sampled_from([1, 2, 3, 4, 8]),
        dtype_key=st.sampled_from(sorted(DTYPES)),
        max_consumers=st.sampled_from([1, 2, 3, 64]),
        joins=st.lists(st.tuples(st.sampled_from(["latest", "oldest"]), st.integers(0, 1)), max_size=2),
    )
    def setup_ring(self, cap_req, dtype_key, max_consumers, joins):
        self.dt = DTYPES[dtype_key]
        self.name = _unique_name()
        try:
            shmring.unlink(self.name)
        except FileNotFoundError:
            pass
        self.ring = shmring.Ring.create(
            self.name, self.dt, cap_req, mode=self.MODE, overflow=self.OVERFLOW, max_consumers=max_consumers
        )
        self.cap = 1 << (cap_req - 1).bit_length()
        assert self.ring.capacity == self.cap
        assert (self.ring.mode, self.ring.overflow) == (self.MODE, self.OVERFLOW)
        self.max_consumers = max_consumers
        self.prod = self.ring.producer()
        for start, lag in joins:
            self.join(start, lag)

    def teardown(self):
        if self.ring is None:
            return
        try:
            for c in self.cons:
                c.handle.close()
            if self.prod is not None:
                self.prod.close()
            self.ring.close()
        finally:
            try:
                shmring.unlink(self.name)
            except FileNotFoundError:
                pass

    # ---- model helpers --------------------------------------------------------

    @property
    def broadcast(self) -> bool:
        return self.MODE == "broadcast"

    @property
    def overwrite(self) -> bool:
        return self.OVERFLOW == "overwrite"

    def room(self) -> float:
        """Records the producer may write now without waiting (inf: no limit; a batch is
        then written in chunks of at most capacity)."""
        if self.MODE == "queue":
            unreleased = [c.view[2] for c in self.cons if c.view is not None] + [self.tail]
            return min(self.cap, min(unreleased) + self.cap - self.head)
        if self.overwrite or not self.cons:
            return float("inf")
        slowest = min(c.view[2] if c.view is not None else c.cursor for c in self.cons)
        return self.cap - (self.head - slowest)

    def announce(self, k: int) -> None:
        if self.broadcast:
            self.intent = max(self.intent, self.head + k)

    def pick(self, i: int) -> CModel:
        return self.cons[i % len(self.cons)]

    def deliver(self, c: CModel, positions: list[int]) -> None:
        """Positions handed to the user by consumer c, in this order."""
        for p in positions:
            assert p > c.last, f"consumer got position {p} after {c.last}"
            c.last = p
            if self.MODE == "queue":  # each record to exactly one consumer, FIFO overall
                assert p == len(self.delivered), (p, len(self.delivered))
                self.delivered.append(p)

    # The consumer keeps a private copy of the head ("head cache") and re-reads the shared
    # head only when its cursor reaches the copy; the model mirrors it, so batch sizes are
    # exact. Which records come out, and every counter, follow from the spec.

    def torn(self, frm: int, k: int) -> int:
        """Broadcast: leading records of [frm, frm+k) whose slots were (or are being)
        rewritten: announced positions run up to intent."""
        if not self.broadcast:
            return 0
        return min(k, max(0, self.intent - self.cap - frm))

    def closed_and_drained(self, c: CModel) -> bool:
        if not self.closed:
            return False
        c.hc = self.head
        return (self.tail if self.MODE == "queue" else c.cursor) >= c.hc

    def q_claim(self, c: CModel, mx: int, contiguous: bool) -> int:
        if self.tail >= c.hc:
            c.hc = self.head
            if self.tail >= c.hc:
                return 0
        k = min(mx, c.hc - self.tail)
        if contiguous:
            k = min(k, self.cap - self.tail % self.cap)
        return k

    def b_ready(self, c: CModel, mx: int, contiguous: bool):
        """(k, skipped): moves c.cursor past records the (cached) head has lapped."""
        if c.cursor >= c.hc:
            c.hc = self.head
            if c.cursor >= c.hc:
                return 0, 0
        skipped = 0
        if c.hc - c.cursor > self.cap:
            skipped = c.hc - self.cap - c.cursor
            c.cursor = c.hc - self.cap
        k = min(mx, c.hc - c.cursor)
        if contiguous:
            k = min(k, self.cap - c.cursor % self.cap)
        return k, skipped

    def c_pop(self, c: CModel, mx: int):
        """One shmr_pop: ("data", positions, dropped) | ("empty"|"closed", [], dropped)."""
        if self.MODE == "queue":
            k = self.q_claim(c, mx, False)
            if k == 0:
                return ("closed" if self.closed_and_drained(c) else "empty"), [], 0
            pos = self.tail
            self.tail += k
            c.popped += k
            return "data", list(range(pos, pos + k)), 0
        dropped = 0
        while True:
            k, skipped = self.b_ready(c, mx, False)
            if k == 0:
                return ("closed" if self.closed_and_drained(c) else "empty"), [], dropped
            frm = c.cursor
            bad = self.torn(frm, k)
            c.cursor = frm + k
            c.popped += k - bad
            c.dropped += skipped + bad
            dropped += skipped + bad
            if k > bad:
                return "data", list(range(frm + bad, frm + k)), dropped

    def c_pop_call(self, c: CModel, mx: int):
        """What Consumer.pop()/pop_many() does at timeout=0: a second shmr_pop before
        giving up (Empty/Closed)."""
        kind, pos, dropped = self.c_pop(c, mx)
        if kind != "data":
            kind, pos, d2 = self.c_pop(c, mx)
            dropped += d2
        return kind, pos, dropped

    def end_exc(self, kind: str, c: "CModel | None" = None, dropped: int = 0):
        """What a call that got no record raises: a loss is reported first (Lagged)
        to an on_lag="raise" consumer, then Empty/Closed."""
        if dropped and c is not None and c.on_lag == "raise":
            return shmring.Lagged
        return shmring.Closed if kind == "closed" else shmring.Empty

    # ---- producer rules ----------------------------------------------------------

    @precondition(lambda self: self.ring is not None)
    @rule()
    def push(self):
        if self.prod is None:
            return
        if self.res is not None:
            with pytest.raises(RuntimeError):
                self.prod.push(encode_one(self.dt, self.head), timeout=0)
            return
        if self.room() == 0:
            event("push: Full")
            with pytest.raises(shmring.Full) as ei:
                self.prod.push(encode_one(self.dt, self.head), timeout=0)
            assert ei.value.pushed == 0
            return
        self.prod.push(encode_one(self.dt, self.head), timeout=0)
        self.announce(1)
        self.head += 1

    @precondition(lambda self: self.ring is not None)
    @rule(n=st.integers(0, 17))
    def push_many(self, n):
        if self.prod is None:
            return
        batch = encode_many(self.dt, range(self.head, self.head + n))
        if self.res is not None:
            with pytest.raises(RuntimeError):
                self.prod.push_many(batch, timeout=0)
            return
        if self.overwrite:
            assert self.prod.push_many(batch, timeout=0) == n
            # written in chunks of at most capacity; each chunk is announced first
            self.intent = max(self.intent, self.head + n)
            self.head += n
            return
        k = int(min(n, self.room()))
        if k < n:
            event("push_many: partial, Full")
            with pytest.raises(shmring.Full) as ei:
                self.prod.push_many(batch, timeout=0)
            assert ei.value.pushed == k, (ei.value.pushed, k)
        else:
            assert self.prod.push_many(batch, timeout=0) == n
        self.announce(k)
        self.head += k

    @precondition(lambda self: self.ring is not None and self.prod is not None)
    @rule(n=st.integers(1, 10))
    def reserve_open(self, n):
        if self.res is not None:
            with pytest.raises(RuntimeError):
                self.prod.reserve(n, timeout=0)
            return
        k = int(min(n, self.cap - self.head % self.cap, self.room()))
        if k == 0:
            event("reserve: Full")
            with pytest.raises(shmring.Full):
                self.prod.reserve(n, timeout=0)
            return
        res = self.prod.reserve(n, timeout=0)
        assert len(res) == k, (len(res), k)
        arr = res.__enter__()
        check_batch_type(self.dt, arr, k)
        assert arr.flags.writeable
        self.announce(k)
        self.res = (res, arr, self.head, k)

    @precondition(lambda self: self.res is not None)
    @rule()
    def reserve_commit(self):
        res, arr, pos, k = self.res
        self.res = None
        fill(arr, self.dt, range(pos, pos + k))
        res.__exit__(None, None, None)
        if self.prod is None:  # producer closed while the block was open: nothing is published
            return
        assert pos == self.head
        self.head += k

    @precondition(lambda self: self.res is not None)
    @rule()
    def reserve_abort(self):
        res, arr, pos, k = self.res
        self.res = None
        event("reserve: aborted")
        fill_garbage(arr, self.dt)  # the user wrote into the slots, then raised
        err = ValueError("abort")
        assert res.__exit__(ValueError, err, None) is False  # the exception propagates
        # nothing published; the slots stay announced (their old records are gone)

    @precondition(lambda self: self.ring is not None and self.prod is not None)
    @rule(really=st.integers(0, 3))
    def producer_close(self, really):
        if really:  # (3 in 4 draws do nothing: a closed stream makes later steps dull)
            return
        old, self.prod = self.prod, None
        old.close()
        self.closed = True
        # a closed handle refuses every producer call
        with pytest.raises(shmring.Closed):
            old.push(encode_one(self.dt, self.head), timeout=0)
        with pytest.raises(shmring.Closed):
            old.reserve(1, timeout=0)

    @precondition(lambda self: self.ring is not None)
    @rule()
    def producer_open(self):
        if self.prod is not None:
            with pytest.raises(shmring.ProducerBusyError):
                self.ring.producer()
            return
        event("producer: reopened")
        if self.res is not None:  # the block of the closed producer is left now
            self.reserve_commit()
        self.prod = self.ring.producer()
        self.closed = False

    # ---- consumer rules ----------------------------------------------------------

    @precondition(lambda self: self.ring is not None)
    @rule(start=st.sampled_from(["latest", "oldest"]), lag=st.integers(0, 1))
    def join(self, start, lag):
        on_lag = self.LAG_CHOICES[lag % len(self.LAG_CHOICES)]
        if len(self.cons) == self.max_consumers:
            event("join: table full")
            with pytest.raises(shmring.ConsumerTableFull):
                self.ring.consumer(start=start, on_lag=on_lag)
            return
        h = self.ring.consumer(start=start, on_lag=on_lag)
        c = CModel(h, on_lag, hc=self.head)
        if self.broadcast:
            cur = self.head if start == "latest" else max(0, self.head - self.cap)
            cur = max(cur, self.intent - self.cap)  # never start inside announced slots
            c.cursor = cur
            c.last = cur - 1
        self.cons.append(c)

    @precondition(lambda self: self.cons)
    @rule(i=st.integers(0, 7))
    def leave(self, i):
        c = self.pick(i)
        view = c.view
        c.handle.close()
        self.cons.remove(c)
        bad = 0
        if view is not None:  # close() inside a view waits for the block's end to release
            bad = self.torn(view[2], view[3])
            c.popped += view[3] - bad
        self.popped_retired += c.popped
        if view is not None:
            # leaving the block releases the claim and leaves the ring; records
            # overwritten while it was held are reported as usual
            if bad:
                with pytest.raises(shmring.Lagged) as ei:
                    view[0].__exit__(None, None, None)
                assert ei.value.count == bad
            else:
                assert view[0].__exit__(None, None, None) is False
        with pytest.raises(shmring.Closed):
            c.handle.pop(timeout=0)

    def _lagged_or_data(self, c: CModel, call, positions, dropped, many: bool):
        """Run call(); expect Lagged(dropped) for an on_lag="raise" consumer that lost
        records, else the records at positions."""
        if dropped:
            event(f"pop: lost records (on_lag={c.on_lag})")
        if dropped and c.on_lag == "raise":
            with pytest.raises(shmring.Lagged) as ei:
                call()
            assert ei.value.count == dropped, (ei.value.count, dropped)
            c.pending = list(positions)
            return
        out = call()
        if many:
            check_batch_type(self.dt, out, len(positions))
        else:
            check_pop_type(self.dt, out)
        got = decode_many(self.dt, out)
        assert got == positions, (got, positions, dropped)
        self.deliver(c, positions)

    @precondition(lambda self: self.cons)
    @rule(i=st.integers(0, 7))
    def pop(self, i):
        c = self.pick(i)
        h = c.handle
        if c.view is not None:
            with pytest.raises(RuntimeError):
                h.pop(timeout=0)
            return
        if c.pending:
            rec = h.pop(timeout=0)
            # (the container type of a record handed back after Lagged is checked by
            # test_pending_* below; here only its content)
            got = decode_many(self.dt, rec)
            assert got == c.pending[:1], (got, c.pending)
            self.deliver(c, c.pending[:1])
            c.pending = c.pending[1:]
            return
        kind, positions, dropped = self.c_pop_call(c, 1)
        if kind != "data":
            event(f"pop: {kind}")
            exc = self.end_exc(kind, c, dropped)
            with pytest.raises(exc) as ei:
                h.pop(timeout=0)
            if exc is shmring.Lagged:
                assert ei.value.count == dropped
            elif kind == "closed":
                assert ei.value.reason == "closed by producer"
            return
        self._lagged_or_data(c, lambda: h.pop(timeout=0), positions, dropped, many=False)

    @precondition(lambda self: self.cons)
    @rule(i=st.integers(0, 7), mx=st.integers(1, 12))
    def pop_many(self, i, mx):
        c = self.pick(i)
        h = c.handle
        if c.view is not None:
            with pytest.raises(RuntimeError):
                h.pop_many(mx, timeout=0)
            return
        if c.pending:
            arr = h.pop_many(mx, timeout=0)
            got = decode_many(self.dt, arr)
            want = c.pending[:mx]
            assert got == want, (got, want)
            self.deliver(c, want)
            c.pending = c.pending[len(want):]
            return
        kind, positions, dropped = self.c_pop_call(c, mx)
        if kind != "data":
            with pytest.raises(self.end_exc(kind, c, dropped)):
                h.pop_many(mx, timeout=0)
            return
        self._lagged_or_data(c, lambda: h.pop_many(mx, timeout=0), positions, dropped, many=True)

    @precondition(lambda self: self.cons)
    @rule(i=st.integers(0, 7), mx=st.integers(1, 12))
    def view_open(self, i, mx):
        c = self.pick(i)
        h = c.handle
        if c.view is not None:
            with pytest.raises(RuntimeError):
                h.view(mx, timeout=0)
            return
        if c.pending:
            # records held back by a Lagged come first, as a read-only copy
            v = h.view(mx, timeout=0)
            arr = v.__enter__()
            want = c.pending[:mx]
            assert not arr.flags.writeable
            assert decode_many(self.dt, arr) == want, (decode_many(self.dt, arr), want)
            assert v.__exit__(None, None, None) is False
            self.deliver(c, want)
            c.pending = c.pending[len(want):]
            return
        if self.MODE == "queue":
            k = self.q_claim(c, mx, True)
            if k == 0:
                kind = "closed" if self.closed_and_drained(c) else "empty"
                with pytest.raises(self.end_exc(kind)):
                    h.view(mx, timeout=0)
                return
            pos = self.tail
            self.tail += k
        else:
            k, skipped = self.b_ready(c, mx, True)
            c.dropped += skipped
            if k == 0:
                kind = "closed" if self.closed_and_drained(c) else "empty"
                with pytest.raises(self.end_exc(kind, c, skipped)):
                    h.view(mx, timeout=0)
                return
            pos = c.cursor
            if skipped:
                event(f"view: lapped at claim (on_lag={c.on_lag})")
            if skipped and c.on_lag == "raise":
                before, dropped_before = h.popped, h.dropped
                with pytest.raises(shmring.Lagged) as ei:
                    h.view(mx, timeout=0)
                # the loss is reported at once; the claimed records are copied, released
                # and handed out by the next call (less any overwritten meanwhile)
                bad = self.torn(pos, k)
                assert ei.value.count == skipped + bad, (ei.value.count, skipped, bad)
                assert h.dropped - dropped_before == ei.value.count
                assert h.popped - before == k - bad
                c.popped += k - bad
                c.dropped += bad
                c.cursor = pos + k
                c.pending = list(range(pos + bad, pos + k))
                return
        v = h.view(mx, timeout=0)
        arr = v.__enter__()
        assert len(v) == k and arr.shape[0] == k, (len(v), k)
        check_batch_type(self.dt, arr, k)
        assert not arr.flags.writeable
        got = decode_many(self.dt, arr)
        valid_from = pos + self.torn(pos, k)  # slots below are already being rewritten
        assert got[valid_from - pos:] == list(range(valid_from, pos + k)), (got, pos, valid_from)
        if self.MODE == "queue":
            self.deliver(c, list(range(pos, pos + k)))
        c.view = (v, arr, pos, k)

    @precondition(lambda self: any(c.view is not None for c in self.cons))
    @rule(i=st.integers(0, 7), raise_inside=st.booleans())
    def view_close(self, i, raise_inside):
        holders = [c for c in self.cons if c.view is not None]
        c = holders[i % len(holders)]
        v, arr, pos, k = c.view
        c.view = None
        if self.MODE == "queue":
            assert v.__exit__(None, None, None) is False
            c.popped += k
            return
        bad = self.torn(pos, k)
        if bad:
            event("view: overwritten while held")
        if bad and not raise_inside:
            # the view's leading records were overwritten while held: their contents are
            # not valid and the block says so (whatever on_lag says)
            with pytest.raises(shmring.Lagged) as ei:
                v.__exit__(None, None, None)
            assert ei.value.count == bad
        elif raise_inside:
            assert v.__exit__(KeyError, KeyError("x"), None) is False
        else:
            assert v.__exit__(None, None, None) is False
        if k > bad:
            self.deliver(c, list(range(pos + bad, pos + k)))
        c.popped += k - bad
        c.dropped += bad
        c.cursor = pos + k

    # ---- invariants ----------------------------------------------------------------

    @invariant()
    def stats_agree(self):
        if self.ring is None:
            return
        s = self.ring.stats()
        assert s["pushed"] == self.head
        assert s["capacity"] == self.cap
        assert s["n_consumers"] == len(self.cons)
        assert s["closed"] == self.closed
        assert s["popped"] == self.popped_retired + sum(c.popped for c in self.cons)
        by_index = {ci["index"]: ci for ci in s["consumers"]}
        assert len(by_index) == len(self.cons)
        for c in self.cons:
            ci = by_index[c.handle.index]
            assert ci["popped"] == c.popped == c.handle.popped, (ci["popped"], c.popped, c.handle.popped)
            assert ci["dropped"] == c.dropped == c.handle.dropped, (ci["dropped"], c.dropped, c.handle.dropped)
            if self.broadcast:
                cur = c.view[2] if c.view is not None else c.cursor
                assert ci["cursor"] == cur, (ci["cursor"], cur)
            else:
                assert ci["claimed"] == (c.view[3] if c.view is not None else 0)
        if self.MODE == "queue":
            assert s["available"] == self.head - self.tail
        else:
            curs = [c.view[2] if c.view is not None else c.cursor for c in self.cons]
            assert s["available"] == self.head - min(curs + [self.head])
        if not self.overwrite:
            assert all(c.dropped == 0 for c in self.cons)


class QueueMachine(RingMachine):
    MODE, OVERFLOW, LAG_CHOICES = "queue", "block", ("skip",)  # on_lag="raise" is refused on a queue ring


class BroadcastBlockMachine(RingMachine):
    MODE, OVERFLOW, LAG_CHOICES = "broadcast", "block", ("skip", "raise")


class BroadcastOverwriteMachine(RingMachine):
    MODE, OVERFLOW, LAG_CHOICES = "broadcast", "overwrite", ("skip",)


class BroadcastOverwriteLagRaiseMachine(RingMachine):
    MODE, OVERFLOW, LAG_CHOICES = "broadcast", "overwrite", ("raise", "skip")


TestQueue = QueueMachine.TestCase
TestQueue.settings = SETTINGS
TestBroadcastBlock = BroadcastBlockMachine.TestCase
TestBroadcastBlock.settings = SETTINGS
TestBroadcastOverwrite = BroadcastOverwriteMachine.TestCase
TestBroadcastOverwrite.settings = SETTINGS
TestBroadcastOverwriteLagRaise = BroadcastOverwriteLagRaiseMachine.TestCase
TestBroadcastOverwriteLagRaise.settings = SETTINGS


# ---- deterministic regressions for what the machines above found -------------------------
# (each one is the smallest sequence showing the behaviour; see the module docstring)


@pytest.fixture
def overwrite_ring():
    """A broadcast/overwrite ring of 4 uint64 records (seq = position) and its producer."""
    name = _unique_name()
    try:
        shmring.unlink(name)
    except FileNotFoundError:
        pass
    ring = shmring.Ring.create(name, "<u8", 4, mode="broadcast", overflow="overwrite")
    prod = ring.producer()
    try:
        yield ring, prod
    finally:
        ring.close()
        shmring.unlink(name)


def _lapped_consumer(ring, prod, n=10):
    cons = ring.consumer(start="oldest", on_lag="raise")
    prod.push_many(np.arange(n, dtype="<u8"), timeout=0)  # positions 0..n-1; 0..n-5 are lost
    return cons


def test_view_lagged_count_matches_what_is_lost(overwrite_ring):
    """view() on a lapped on_lag="raise" consumer raises Lagged(count). count is "the exact
    number of records this consumer lost": the records after the lap point must still be
    delivered (or be counted in count and in consumer.dropped)."""
    ring, prod = overwrite_ring
    cons = _lapped_consumer(ring, prod)
    with pytest.raises(shmring.Lagged) as ei:
        cons.view(4, timeout=0)
    lost = ei.value.count
    assert cons.dropped == lost
    nxt = int(cons.pop(timeout=0))
    assert nxt == lost, (
        f"Lagged({lost}) from view(), but the next record is position {nxt}: positions "
        f"{lost}..{nxt - 1} were silently consumed (consumer.popped={cons.popped})")


def test_pop_many_after_lagged_pop_returns_an_array(overwrite_ring):
    """After pop() raised Lagged, the record it held back comes next; pop_many() must still
    return an ndarray of records, not a scalar."""
    ring, prod = overwrite_ring
    cons = _lapped_consumer(ring, prod)
    with pytest.raises(shmring.Lagged):
        cons.pop(timeout=0)
    out = cons.pop_many(3, timeout=0)
    assert isinstance(out, np.ndarray) and out.ndim == 1, repr(out)
    assert list(out) == [6]


def test_pop_after_lagged_pop_many_returns_a_record(overwrite_ring):
    """After pop_many() raised Lagged, the records it held back come next; pop() must
    still return one record (a numpy scalar here), not a 1-element array."""
    ring, prod = overwrite_ring
    cons = _lapped_consumer(ring, prod)
    with pytest.raises(shmring.Lagged):
        cons.pop_many(4, timeout=0)
    rec = cons.pop(timeout=0)
    assert isinstance(rec, np.generic) and not isinstance(rec, np.ndarray), repr(rec)
    assert int(rec) == 6


def test_view_after_lagged_pop_many_keeps_order(overwrite_ring):
    """Records held back by a Lagged must not be overtaken by a view(): a broadcast
    consumer sees records in order."""
    ring, prod = overwrite_ring
    cons = _lapped_consumer(ring, prod)
    with pytest.raises(shmring.Lagged):
        cons.pop_many(2, timeout=0)  # holds back positions 6, 7
    seen = []
    try:
        with cons.view(4, timeout=0) as arr:
            seen += [int(x) for x in arr]
    except (shmring.Empty, RuntimeError):
        pass  # refusing the view while records are held back is fine too
    seen += [int(x) for x in cons.pop_many(4, timeout=0)]
    assert seen == sorted(seen) and seen[0] == 6, seen


def test_losses_are_reported_to_an_on_lag_raise_consumer(overwrite_ring):
    """An on_lag="raise" consumer learns of every lost record through Lagged: here the
    records it could read are all being rewritten by an open reservation, pop() drops
    them (consumer.dropped grows) and raises Empty; no later call may forget them."""
    ring, prod = overwrite_ring
    cons = ring.consumer(start="latest", on_lag="raise")
    prod.push_many(np.arange(4, dtype="<u8"), timeout=0)
    reported = 0
    with prod.reserve(4, timeout=0) as arr:  # rewrites the slots of positions 0..3
        arr[...] = np.arange(4, 8, dtype="<u8")
        try:
            cons.pop(timeout=0)
        except shmring.Lagged as exc:
            reported += exc.count
        except shmring.Empty:
            pass
    got = []
    for _ in range(6):
        try:
            got.append(int(cons.pop(timeout=0)))
        except shmring.Lagged as exc:
            reported += exc.count
        except shmring.Empty:
            break
    assert cons.dropped == 4
    assert reported == cons.dropped, (
        f"consumer.dropped={cons.dropped} but Lagged reported {reported}; records received {got}")
