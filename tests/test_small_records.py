"""Small records (a short tuple of scalars, or one scalar) are written into the
ring and read back without marshal, in marshal's own version-2 bytes: what the
writer produces must be exactly marshal.dumps(obj, 2), what the reader makes of
any marshal body must be what marshal.loads makes, and anything either side
does not take goes through marshal as before."""

from __future__ import annotations

import marshal
import math
import queue
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shmring
from shmring import _ring

INT32 = st.integers(-(2 ** 31), 2 ** 31 - 1)
SCALARS = st.one_of(
    st.none(), st.booleans(), INT32, st.integers(-(2 ** 70), 2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), st.binary(max_size=40),
    st.sampled_from(["", "worker-07", "s\udc80", "é", "\u2603" * 3]),
)
RECORDS = st.one_of(SCALARS, st.tuples(SCALARS, SCALARS, SCALARS), st.lists(SCALARS, max_size=20).map(tuple))


def handled(o) -> bool:
    """What the small-record writer takes (the rest goes through marshal)."""
    def scalar(x):
        t = type(x)
        return (x is None or t is bool or t is float or t is bytes
                or t is int and -(2 ** 31) <= x < 2 ** 31 or t is str and x.isascii())
    if type(o) is tuple:
        return len(o) <= 16 and all(scalar(x) for x in o)
    return scalar(o)


def same(a, b) -> bool:
    """Equal with types, NaN and -0.0 told apart as marshal keeps them."""
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is float:
        return math.copysign(1, a) == math.copysign(1, b) and (a == b or math.isnan(a) and math.isnan(b))
    return a == b


@settings(max_examples=400, deadline=None)
@given(RECORDS)
def test_the_writer_writes_exactly_marshal_version_2(obj):
    mine = _ring.small_dumps(obj)
    if handled(obj):
        assert mine == marshal.dumps(obj, 2)
    else:
        assert mine is None


@settings(max_examples=400, deadline=None)
@given(RECORDS)
def test_the_reader_reads_what_marshal_reads_or_leaves_it_to_marshal(obj):
    body = marshal.dumps(obj, 2)
    ok, got = _ring.small_loads(body)
    assert ok == readable(obj)
    if ok:
        assert same(got, marshal.loads(body))


def readable(o) -> bool:
    """What the small-record reader takes: what the writer takes, and also
    strings that are not ASCII (marshal's own bytes of them)."""
    if type(o) is tuple:
        return len(o) <= 16 and all(type(x) is str or handled(x) for x in o)
    return type(o) is str or handled(o)


def test_the_reader_refuses_truncated_or_padded_bodies_and_other_types():
    for obj in [(7, 1.75, "worker-07", b"xy", None, True), 12, 2.5, "abc", b"raw", (), None]:
        body = marshal.dumps(obj, 2)
        ok, got = _ring.small_loads(body)
        assert ok and same(got, obj)
        for cut in range(len(body)):
            assert _ring.small_loads(body[:cut]) == (False, None), (obj, cut)
        assert _ring.small_loads(body + b"\0") == (False, None)
    for other in [[1], {"a": 1}, (1, (2,)), 2 ** 40, 1j, frozenset({1}), (1,) * 17]:
        assert _ring.small_loads(marshal.dumps(other, 2)) == (False, None)
    assert _ring.small_loads(b"(\xff\xff\xff\xff") == (False, None)  # a negative count
    assert _ring.small_loads(b"u\x05\x00\x00\x00ab") == (False, None)  # a length past the end


@pytest.fixture(scope="module")
def q():
    q = shmring.Queue(nbytes=1 << 20)
    yield q
    q.close()


@settings(max_examples=300, deadline=None)
@given(RECORDS)
def test_records_round_trip_through_a_queue_with_their_types(q, obj):
    q.put(obj)
    got = q.get(timeout=5)
    assert same(got, obj), (obj, got)


def test_a_small_record_too_large_for_the_lane_names_nbytes():
    q = shmring.Queue(nbytes=4096)
    try:
        with pytest.raises(ValueError, match="nbytes"):
            q.put((1, "x" * 5000))
        q.put((1, "x" * 100))
        assert q.get(timeout=5) == (1, "x" * 100)
    finally:
        q.close()


def test_a_put_waiting_for_another_threads_put_times_out_then_gets_the_lock():
    """The put lock of one process: a thread blocked inside put (its lane full)
    holds it; another thread's put waits for it within its timeout, then gets
    it once the first put returns."""
    q = shmring.Queue(nbytes=4096)
    try:
        n = 0
        while True:
            try:
                q.put_nowait((n, "fill"))
            except queue.Full:
                break
            n += 1
        inside = threading.Event()

        def blocked_put():
            inside.set()
            q.put((n, "blocked"), timeout=30)

        t = threading.Thread(target=blocked_put)
        t.start()
        assert inside.wait(5)
        time.sleep(0.1)  # the thread is inside put, asleep on the full lane
        t0 = time.monotonic()
        with pytest.raises(queue.Full, match="busy"):
            q.put((n + 1, "late"), timeout=0.2)
        assert time.monotonic() - t0 >= 0.15
        waiter = threading.Thread(target=lambda: q.put((n + 1, "late"), timeout=30))
        waiter.start()  # waits on the lock while the first put still blocks
        time.sleep(0.1)
        got = [q.get(timeout=5)]  # room: the blocked put completes and gives the lock
        t.join(10)
        got.append(q.get(timeout=5))  # room for the waiter's item
        waiter.join(10)
        assert not t.is_alive() and not waiter.is_alive()
        while True:
            try:
                got.append(q.get_nowait())
            except queue.Empty:
                break
        assert [x for x, _ in got] == list(range(n + 2))
        assert got[-2:] == [(n, "blocked"), (n + 1, "late")]
    finally:
        q.close()
