"""Pickles with out-of-band arrays (a dict holding arrays, the common queue item):
written into the lane and read out of it by the compiled module, in the layout
shmring._codec documents (PICKLE_OOB), with real processes and real shared
memory."""

from __future__ import annotations

import numpy as np
import pytest

import shmring
from shmring import _codec as codec
from shmring.errors import CorruptMessageError

import _oob_workers as W


def _exactly_once(parts, n_producers, n_each):
    allp = np.concatenate(parts)
    assert len(allp) == n_producers * n_each
    assert sorted(map(tuple, allp.tolist())) == [(p, s) for p in range(n_producers) for s in range(n_each)]
    for part in parts:
        for pid in np.unique(part[:, 0]):
            seqs = part[part[:, 0] == pid][:, 1]
            assert np.all(np.diff(seqs) > 0), f"producer {pid}'s items out of order"


def test_dicts_of_arrays_from_many_producers_arrive_once_intact(mp_ctx, procs):
    n_prod, n_cons, each = 3, 2, 120
    q = shmring.Queue(nbytes=1 << 20)  # small lanes: every producer laps its lane many times
    pipes = [mp_ctx.Pipe() for _ in range(n_cons)]
    cs = [procs(mp_ctx, W.consume, q, b) for _, b in pipes]
    ps = [procs(mp_ctx, W.produce, q, pid, each) for pid in range(n_prod)]
    for p in ps:
        p.join(120)
        assert p.exitcode == 0
    for _ in cs:
        q.put(None)
    parts = []
    for a, _ in pipes:
        assert a.poll(120), "a consumer sent nothing back"
        got = a.recv()
        assert not isinstance(got, str), got
        parts.append(got)
    for c in cs:
        c.join(60)
        assert c.exitcode == 0
    _exactly_once(parts, n_prod, each)
    s = q.stats()
    assert s["put"] == s["got"] == n_prod * each + n_cons and s["items"] == 0 and s["lost"] == 0


def test_a_got_array_is_the_receivers_own_and_later_puts_leave_it_alone():
    q = shmring.Queue(nbytes=1 << 20)
    q.put({"k": 0, "a": np.full(8192, 7, np.uint64), "b": np.arange(5, dtype="<f4")})
    first = q.get()
    a = first["a"]
    assert a.flags.writeable and a.flags.c_contiguous and a.ctypes.data % 16 == 0
    # laps the 1 MiB lane ~10 times over the memory the first item was read from
    for k in range(1, 160):
        q.put({"k": k, "a": np.full(8192, 1000 + k, np.uint64)})
        got = q.get()
        assert got["k"] == k and (got["a"] == 1000 + k).all()
        assert got["a"].ctypes.data != a.ctypes.data
    assert (a == 7).all() and first["b"].tolist() == [0, 1, 2, 3, 4]
    a[:] = 3  # it is the receiver's to change; the next item is not
    q.put({"k": -1, "a": np.full(8192, 5, np.uint64)})
    assert (q.get()["a"] == 5).all() and (a == 3).all()


class Custom:
    def __init__(self, a, b):
        self.a, self.b = a, b

    def __eq__(self, other):
        return type(other) is Custom and self.a == other.a and _same(self.b, other.b)


def _same(a, b):
    try:
        _equal(a, b)
        return True
    except AssertionError:
        return False


_BASE = np.arange(24, dtype="<i8")
OBJECTS = [
    {"one": np.arange(10, dtype="<u8")},
    {"none": np.zeros(0, np.float64), "dt": np.array(["2020-01-01"], "<M8[D]")},
    [np.full((3, 4), k, ">i4") for k in range(8)],  # the most the compiled writer takes
    [np.full(5, k, "<f8") for k in range(9)],  # one more: the codec writes it
    (np.asfortranarray(np.arange(12).reshape(3, 4)), "tail", {"x": np.ones(65536, np.uint8)}),
    # two arrays and a view of one of them (the view arrives as an array of its own)
    [_BASE, np.ones((2, 3), "<f4"), _BASE[2:10], np.arange(6)[::2]],
    {"zero-d": np.array(3.5), "td": np.arange(4, dtype="<m8[s]"), "u": np.array(["ab", "c"], "<U2"),
     "struct": np.zeros(3, [("x", "<i4"), ("y", "<f8", (2,))]), "obj": np.array([1, "x", None], object)},
    {"k": Custom(1, np.arange(3.0)), "c": 1 + 2j, "big": 2**80, "set": {1, 2}},  # not plain data
    [np.asfortranarray(np.ones((4, 5)))],  # out of band, no array rebuilt by memo entry 0
    [Custom("no array", {1: 2.5}), Custom(2, b"x")],  # no buffer at all
]
IDS = ["1-buf", "empty+datetime", "8-bufs", "9-bufs", "fortran+64k", "view+strided", "dtypes", "custom",
       "fortran-only", "no-array"]
KINDS = dict.fromkeys(IDS, codec.PICKLE_ARRAYS) | {"fortran-only": codec.PICKLE_OOB, "no-array": codec.PICKLE}


def _equal(a, b):
    if isinstance(a, np.ndarray):
        assert type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
        if a.dtype.hasobject:
            assert a.tolist() == b.tolist()
        else:
            assert a.tobytes() == b.tobytes()
        if a.flags.c_contiguous or a.flags.f_contiguous:  # a strided one arrives C-contiguous
            assert a.flags.f_contiguous == b.flags.f_contiguous
    elif isinstance(a, set):
        assert a == b
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _equal(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("obj", OBJECTS, ids=IDS)
def test_compiled_writer_and_reader_agree_with_the_codec(obj, ring_name, rings):
    ring = rings.create(ring_name, nbytes=1 << 20)
    prod, cons = ring.producer(), ring.consumer()
    codec.dumps(None)  # after a short stream, as a fresh producer: the memo holding entry 0
    kind = codec.encode(obj).kind
    # a plain C-contiguous array inside: rebuilt by memo entry 0, no name looked up
    assert kind == KINDS[IDS[next(i for i, o in enumerate(OBJECTS) if o is obj)]]
    # written by push(), read back as raw bytes by the codec in Python
    prod.push(obj)
    table, packed, owns = cons._claim_raw(1, 1 << 30)
    try:
        assert table[0] >> 56 == kind
        body = bytes(packed)
        assert len(body) == table[0] & ((1 << 55) - 1)
        _equal(obj, codec.decode(kind, memoryview(body), copy=True))
        _equal(obj, codec.decode(kind, memoryview(body).toreadonly(), copy=False))
    finally:
        cons._release_raw()
    # the compiled writer's bytes again, read back by pop() and by view()
    prod.push(obj)
    _equal(obj, cons.pop(timeout=5))
    prod.push(obj)
    with cons.view(timeout=5) as got:
        _equal(obj, got)
    # written by the codec in Python, read back by pop() (after a long stream, as
    # PICKLE_OOB naming the rebuild function: either form arrives)
    enc = codec.encode(obj)
    body = bytearray(enc.nbytes)
    enc.write_into(body)
    body = bytes(body)
    entry = np.array([len(body) | enc.kind << 56], np.uint64)
    assert prod._push_raw(entry, body, []) == 1
    _equal(obj, cons.pop(timeout=5))


def test_a_producer_after_long_pickles_sends_arrays_by_name_and_they_arrive(ring_name, rings):
    ring = rings.create(ring_name, nbytes=1 << 20)
    prod, cons = ring.producer(), ring.consumer()
    big = {f"k{i}": (i, None) for i in range(1000)}  # more than marshal takes: pickled, a long stream
    obj = {"a": np.arange(5.0), "n": 1}
    for item in (obj, big, obj, obj):
        prod.push(item)
    table, packed, owns = cons._claim_raw(4, 1 << 30)
    try:
        kinds = [int(t >> 56) for t in table]
    finally:
        cons._release_raw()
    assert kinds == [codec.PICKLE_ARRAYS, codec.PICKLE, codec.PICKLE_OOB, codec.PICKLE_ARRAYS]
    for item in (obj, big, obj, obj):
        prod.push(item)
    for item in (obj, big, obj, obj):
        _equal(item, cons.pop(timeout=5))


def _old_writer_body(obj):
    """A PICKLE_OOB body as writers before PICKLE_ARRAYS made it: arrays reduced
    to shmring._codec.array_from by name, no prelude."""
    import io
    import pickle

    pbs, f = [], io.BytesIO()
    p = pickle.Pickler(f, 5, buffer_callback=pbs.append)
    p.dispatch_table = {np.ndarray: lambda a: (codec.array_from, (pickle.PickleBuffer(a), a.dtype.str, a.shape))}
    p.dump(obj)
    stream = f.getvalue()
    assert b"array_from" in stream
    return codec.encode_bytes.__globals__["pickled"](stream, pbs), stream


def test_messages_of_older_writers_still_arrive(ring_name, rings):
    ring = rings.create(ring_name, nbytes=1 << 20)
    prod, cons = ring.producer(), ring.consumer()
    obj = {"a": np.arange(7, dtype="<u4"), "b": [np.ones((2, 2)), "s"]}
    enc, _ = _old_writer_body(obj)
    assert enc.kind == codec.PICKLE_OOB
    body = bytearray(enc.nbytes)
    enc.write_into(body)
    _equal(obj, codec.decode(codec.PICKLE_OOB, memoryview(bytes(body))))
    entry = np.array([len(body) | codec.PICKLE_OOB << 56], np.uint64)
    for _ in range(2):
        assert prod._push_raw(entry, bytes(body), []) == 1
    _equal(obj, cons.pop(timeout=5))
    with cons.view(timeout=5) as got:
        _equal(obj, got)


def test_a_rebuilt_arrays_body_without_its_prelude_is_named_corrupt(ring_name, rings):
    ring = rings.create(ring_name, nbytes=1 << 16)
    prod, cons = ring.producer(), ring.consumer()
    enc, _ = _old_writer_body({"a": np.arange(3)})  # no prelude: not a PICKLE_ARRAYS stream
    body = bytearray(enc.nbytes)
    enc.write_into(body)
    with pytest.raises(CorruptMessageError, match="prelude"):
        codec.decode(codec.PICKLE_ARRAYS, memoryview(bytes(body)))
    entry = np.array([len(body) | codec.PICKLE_ARRAYS << 56], np.uint64)
    assert prod._push_raw(entry, bytes(body), []) == 1
    prod.push({"after": np.arange(3)})
    with pytest.raises(CorruptMessageError, match="prelude"):
        cons.pop(timeout=5)
    assert cons.pop(timeout=5)["after"].tolist() == [0, 1, 2]


def _oob_body(stream_len, entries, size):
    head = codec._OOB_HEAD.pack(stream_len, len(entries))
    head += b"".join(codec._OOB_ENTRY.pack(o, n) for o, n in entries)
    return head + b"\0" * (size - len(head))


@pytest.mark.parametrize("body, why", [
    (b"\x01\x02", "pickle message of 2 bytes is shorter than its header"),
    (_oob_body(0, [], 16)[:8] + (10**6).to_bytes(8, "little"), "corrupt buffer table"),
    (_oob_body(10**6, [(48, 8)], 64), "corrupt buffer table"),
    (_oob_body(0, [(48, 32)], 64), r"buffer \[48, 80\) lies outside its 64 bytes"),
    (_oob_body(0, [(2**64 - 8, 16)], 64), "lies outside its 64 bytes"),
])
def test_a_corrupt_out_of_band_table_is_named_and_the_next_message_arrives(body, why, ring_name, rings):
    ring = rings.create(ring_name, nbytes=1 << 16)
    prod, cons = ring.producer(), ring.consumer()
    entry = np.array([len(body) | codec.PICKLE_OOB << 56], np.uint64)
    assert prod._push_raw(entry, body, []) == 1
    prod.push({"after": np.arange(3)})
    with pytest.raises(CorruptMessageError, match=why):
        cons.pop(timeout=5)
    assert cons.pop(timeout=5)["after"].tolist() == [0, 1, 2]
