"""Message rings: creating them, every kind of object round-tripping through real
shared memory, bad input, wrap-around, zero-length and maximum-size messages."""

from __future__ import annotations

import dataclasses
import pickle
import sys
import threading

import numpy as np
import pytest

import shmring
from shmring.errors import PickleRefusedError
import _msg_workers as MW
from test_codec import DTYPES, OBJECTS, Frame, big_arrays_equal, same_array
from _procs import run


# ---- creating and attaching ------------------------------------------------------

def test_create_needs_exactly_one_of_dtype_and_nbytes(ring_name):
    with pytest.raises(TypeError, match="either dtype= and capacity=.*or nbytes="):
        shmring.Ring.create(ring_name)
    with pytest.raises(TypeError, match="not both"):
        shmring.Ring.create(ring_name, "<u8", nbytes=4096)
    with pytest.raises(TypeError, match="not capacity="):
        shmring.Ring.create(ring_name, capacity=16, nbytes=4096)
    with pytest.raises(TypeError, match="needs capacity="):
        shmring.Ring.create(ring_name, "<u8")
    with pytest.raises(ValueError, match="nbytes must be >= 1"):
        shmring.Ring.create(ring_name, nbytes=0)
    with pytest.raises(TypeError, match="nbytes must be an int"):
        shmring.Ring.create(ring_name, nbytes=4096.0)


def test_kind_nbytes_rounding_and_attach(ring_name, ring_names, rings):
    ring = rings.create(ring_name, nbytes=5000)
    assert ring.kind == "messages" and ring.dtype is None
    assert ring.nbytes == 8192  # rounded up to a power of two
    assert ring.max_message == 8192 // 2 - 32
    assert "messages" in repr(ring)
    other = rings.attach(ring_name)
    assert other.kind == "messages" and other.nbytes == 8192 and other.max_message == ring.max_message
    with pytest.raises(TypeError, match="message ring.*without dtype="):
        shmring.Ring.attach(ring_name, dtype="<u8")
    st = ring.stats()
    assert st["kind"] == "messages" and st["nbytes"] == 8192 and st["max_message"] == ring.max_message
    assert st["dtype"] is None and st["pushed"] == 0
    assert rings.create(ring_names(), nbytes=1).nbytes == 256  # the smallest ring
    again = shmring.Ring.create(ring_name, nbytes=8000, exist_ok=True)
    assert again.kind == "messages"
    again.close()
    with pytest.raises(FileExistsError, match="message ring"):
        shmring.Ring.create(ring_name, nbytes=1 << 20, exist_ok=True)
    with pytest.raises(FileExistsError):
        shmring.Ring.create(ring_name, "<u8", 64, exist_ok=True)


def test_records_ring_has_kind_records(ring_name, rings):
    ring = rings.create(ring_name, "<u8", 64)
    assert ring.kind == "records" and ring.stats()["kind"] == "records"
    with pytest.raises(TypeError, match="allow_pickle applies to message rings"):
        ring.consumer(allow_pickle=False)


def test_ring_pickles_by_name(ring_name, rings):
    ring = rings.create(ring_name, nbytes=4096)
    back = rings.add(pickle.loads(pickle.dumps(ring)))
    assert back.kind == "messages" and back.nbytes == 4096


# ---- round trips through a ring --------------------------------------------------

@pytest.fixture
def pair(ring_name, rings):
    ring = rings.create(ring_name, nbytes=1 << 20)
    prod = ring.producer()
    cons = ring.consumer()
    return ring, prod, cons


def _same(a, b):
    if isinstance(a, np.ndarray) and type(a) is np.ndarray and not a.dtype.hasobject:
        same_array(a, b)
    elif isinstance(a, (bytes, bytearray, memoryview)):
        assert type(b) in (bytes, memoryview) and bytes(b) == bytes(a)
    elif isinstance(a, np.ndarray):
        assert type(b) is type(a) and a.dtype == b.dtype and list(a) == list(b)
    else:
        big_arrays_equal(a, b)


def _kinds():
    out = [b"", b"x", bytes(range(256)), bytearray(b"abc"), memoryview(b"hello"),
           memoryview(np.arange(12, dtype="<u2").reshape(3, 4))]
    for dt in DTYPES:
        dt = np.dtype(dt)
        a = np.zeros((3, 2), dt)
        raw = a.reshape(-1).view(np.uint8)
        raw[:] = np.arange(raw.size) % 251
        out.append(a)
    for nd in range(7):
        out.append(np.arange(int(np.prod(range(2, 2 + nd))), dtype=">i4").reshape(tuple(range(2, 2 + nd))))
    out += [np.asfortranarray(np.arange(24.0).reshape(2, 3, 4)), np.arange(50, dtype="<f8")[::3],
            np.arange(30).reshape(5, 6)[:, ::2], np.array(3.5), np.zeros((0, 3))]
    img = np.arange(64 * 48, dtype="<u2").reshape(64, 48)
    out += [{"img": img, "meta": {"k": np.ones(3)}, "n": 1}, [img, (np.arange(4), "x")],
            Frame(3, img, {"a": np.float32(1)}), np.array([1, "a", None], dtype=object)]
    out += OBJECTS
    return out


KINDS = _kinds()


@pytest.mark.parametrize("i", range(len(KINDS)))
def test_every_kind_round_trips_through_pop_and_view(pair, i):
    ring, prod, cons = pair
    obj = KINDS[i]
    prod.push(obj)
    got = cons.pop(timeout=5)
    _same(obj, got)
    if isinstance(got, np.ndarray):
        assert got.flags.writeable  # a copy, owning its memory
    prod.push(obj)
    with cons.view(timeout=5) as v:
        _same(obj, v)
        for arr in _arrays_in(v):
            assert not arr.flags.writeable
    with pytest.raises(shmring.Empty):
        cons.pop(timeout=0)


def _arrays_in(obj):
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _arrays_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _arrays_in(v)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        yield from _arrays_in(vars(obj))  # asdict() would deep-copy the arrays


def test_views_point_into_the_ring(pair):
    ring, prod, cons = pair
    img = np.arange(50_000, dtype="<u4")
    prod.push({"img": img}, timeout=5)
    prod.push(img, timeout=5)
    prod.push(img.tobytes(), timeout=5)
    addrs = []
    for _ in range(3):
        with cons.view(timeout=5) as v:
            a = v["img"] if isinstance(v, dict) else v
            a = np.frombuffer(a, np.uint8) if isinstance(a, memoryview) else a
            assert not a.flags.writeable
            addrs.append(a.ctypes.data)
    # three 200 kB bodies, all inside the 1 MiB ring and 16-byte aligned
    assert all(a % 16 == 0 for a in addrs)
    assert max(addrs) - min(addrs) < (1 << 20)


def test_push_many_and_pop_many(pair):
    ring, prod, cons = pair
    objs = [b"a", np.arange(5), {"x": 1}, b"", np.array(7.0)]
    assert prod.push_many(objs) == 5
    assert prod.push_many(iter([b"gen"] * 3)) == 3
    got = cons.pop_many(100, timeout=5)
    assert len(got) == 8
    for a, b in zip(objs + [b"gen"] * 3, got):
        _same(a, b)
    assert cons.popped == 8
    assert ring.stats()["pushed"] == 8 and ring.stats()["bytes_pushed"] > 0


def test_reserve_publishes_bytes_on_exit_and_nothing_on_exception(pair):
    ring, prod, cons = pair
    with prod.reserve(1000) as buf:
        assert buf.dtype == np.uint8 and buf.shape == (1000,) and buf.flags.writeable
        buf[:] = np.arange(1000) % 256
    got = cons.pop(timeout=5)
    assert type(got) is bytes and got == (np.arange(1000) % 256).astype(np.uint8).tobytes()
    with pytest.raises(ZeroDivisionError):
        with prod.reserve(10) as buf:
            buf[:] = 1
            1 / 0
    with pytest.raises(shmring.Empty):
        cons.pop(timeout=0)
    prod.push(b"after")
    assert cons.pop(timeout=5) == b"after"
    assert ring.stats()["pushed"] == 2


# ---- bad input ---------------------------------------------------------------------

def test_bad_input_gets_clear_errors_and_publishes_nothing(ring_name, rings):
    ring = rings.create(ring_name, nbytes=4096)
    prod, cons = ring.producer(), ring.consumer()
    limit = ring.max_message
    assert limit == 2048 - 32
    prod.push(b"x" * limit)  # the largest message fits
    assert len(cons.pop(timeout=5)) == limit
    with pytest.raises(ValueError, match=f"at most {limit} bytes.*half the ring"):
        prod.push(b"x" * (limit + 1))
    with pytest.raises(ValueError, match="can never fit"):
        prod.push(np.zeros(limit, np.uint8))
    with pytest.raises(ValueError, match="can never fit"):
        prod.push({"a": np.zeros(limit, np.uint8)})
    with pytest.raises(ValueError, match="can never fit"):
        prod.push_many([b"ok", b"x" * (limit + 1)])
    with pytest.raises((TypeError, pickle.PicklingError, AttributeError)):
        prod.push({"lock": threading.Lock()})
    with pytest.raises((TypeError, pickle.PicklingError, AttributeError)):
        prod.push_many([b"first", threading.Lock()])
    with pytest.raises(ValueError, match="nbytes >= 1"):
        prod.reserve(0)
    with pytest.raises(ValueError, match="nbytes >= 1"):
        prod.reserve(-5)
    with pytest.raises(ValueError, match="can never fit"):
        prod.reserve(limit + 1)
    with pytest.raises(TypeError, match="not an array"):
        prod.push_many(np.zeros(4, "<u8"))
    with pytest.raises(TypeError, match="use push"):
        prod.push_many(b"abc")
    with pytest.raises(shmring.Empty):  # nothing of the above was published
        cons.pop(timeout=0)
    assert ring.stats()["pushed"] == 1
    prod.push(b"still works")
    assert cons.pop(timeout=5) == b"still works"


def test_objects_into_a_records_ring_are_refused(ring_name, rings):
    ring = rings.create(ring_name, "<u8", 16)
    prod = ring.producer()
    with pytest.raises(TypeError):
        prod.push_many([{"a": 1}, {"b": 2}])
    with pytest.raises(TypeError):
        prod.push({"a": 1})
    assert ring.stats()["pushed"] == 0


def test_allow_pickle_false_refuses_pickles_only(ring_name, rings):
    ring = rings.create(ring_name, nbytes=1 << 16)
    prod = ring.producer()
    cons = ring.consumer(allow_pickle=False)
    prod.push_many([b"bytes", np.arange(3), {"evil": 1}, np.arange(2)])
    assert cons.pop(timeout=5) == b"bytes"
    same_array(np.arange(3), cons.pop(timeout=5))
    with pytest.raises(PickleRefusedError, match="allow_pickle=False"):
        cons.pop(timeout=5)
    same_array(np.arange(2), cons.pop(timeout=5))  # the refused message was consumed, nothing else
    prod.push_many([b"a", {"x": 1}, b"b"])
    with pytest.raises(PickleRefusedError):
        cons.pop_many(10, timeout=5)
    assert cons.pop_many(10, timeout=5) == [b"a", b"b"]  # the others were kept
    prod.push({"x": 2})
    with pytest.raises(PickleRefusedError):
        with cons.view(timeout=5):
            pass


# ---- wrap-around, zero-length and maximum-size ----------------------------------------

@pytest.mark.parametrize("mode,overflow", [("queue", "block"), ("broadcast", "block"), ("broadcast", "overwrite")])
def test_wrap_around_at_every_offset_class(ring_names, rings, mode, overflow):
    """A 256-byte ring (16 units): every message size from 0 to the maximum (96
    bytes), started at every unit offset, alone and with others in flight."""
    ring = rings.create(ring_names(), nbytes=256, mode=mode, overflow=overflow)
    prod = ring.producer()
    cons = ring.consumer()
    maxm = ring.max_message
    assert maxm == 96
    seq = 0
    for in_flight in (1, 2, 3):
        for offset_step in range(16):
            for size in range(0, maxm + 1, 7 if in_flight > 1 else 1):
                batch = []
                for j in range(in_flight):
                    s = min(maxm, size if j == 0 else (size * (j + 3)) % (maxm + 1))
                    body = bytes([seq % 251]) * s
                    batch.append(body)
                    seq += 1
                fits = sum(32 + (len(b) + 15) // 16 * 16 for b in batch) <= 128 or len(batch) == 1
                if not fits:
                    batch = batch[:1]
                for b in batch:
                    prod.push(b, timeout=5)
                got = cons.pop_many(len(batch), timeout=5)
                while len(got) < len(batch):
                    got += cons.pop_many(len(batch) - len(got), timeout=5)
                assert [bytes(g) for g in got] == batch
            prod.push(b"\x00" * (offset_step % 16))  # move the start to the next offset
            cons.pop(timeout=5)
    assert cons.dropped == 0


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 95, 96])
def test_sizes_around_unit_boundaries_in_a_tiny_ring(ring_name, rings, size):
    ring = rings.create(ring_name, nbytes=256)
    prod, cons = ring.producer(), ring.consumer()
    for i in range(40):  # many laps
        prod.push(bytes([i]) * size, timeout=5)
        with cons.view(timeout=5) as v:
            assert bytes(v) == bytes([i]) * size


def _push_zero_and_max(ring, n):
    prod = ring.producer()
    for i in range(n):
        prod.push(b"" if i % 2 == 0 else bytes([i % 256]) * ring.max_message, timeout=30)
    prod.close()


def test_zero_length_and_maximum_size_across_processes(ring_name, rings, procs, mp_ctx):
    ring = rings.create(ring_name, nbytes=1 << 16)
    cons = ring.consumer()
    p = procs(mp_ctx, _push_zero_and_max, ring, 200)
    got = []
    for m in cons:
        got.append(m)
    p.join(30)
    assert p.exitcode == 0
    assert len(got) == 200
    for i, m in enumerate(got):
        assert m == (b"" if i % 2 == 0 else bytes([i % 256]) * ring.max_message)


def _push_kinds(ring):
    prod = ring.producer()
    for obj in KINDS:
        prod.push(obj, timeout=30)
    prod.close()


def test_every_kind_round_trips_across_processes(ring_name, rings, procs, mp_ctx):
    ring = rings.create(ring_name, nbytes=1 << 20)
    cons = ring.consumer()
    p = procs(mp_ctx, _push_kinds, ring)
    got = list(cons)
    p.join(30)
    assert p.exitcode == 0
    assert len(got) == len(KINDS)
    for a, b in zip(KINDS, got):
        _same(a, b)


# ---- command line -----------------------------------------------------------------------

def test_cli_shows_the_kind(ring_name, rings):
    ring = rings.create(ring_name, nbytes=1 << 16, mode="broadcast")
    ring.producer().push(b"abc")
    ls = run([sys.executable, "-m", "shmring", "ls"], capture_output=True, text=True, timeout=60)
    line = [ln for ln in ls.stdout.splitlines() if ring_name in ln]
    assert line and "messages" in line[0], ls.stdout
    info = run([sys.executable, "-m", "shmring", "info", ring_name], capture_output=True, text=True,
                          timeout=60)
    assert "kind" in info.stdout and "messages" in info.stdout and "max_message" in info.stdout, info.stdout


# ---- corrupt frames ----------------------------------------------------------------------

@pytest.mark.parametrize("mode,overflow", [("queue", "block"), ("broadcast", "block"), ("broadcast", "overwrite")])
@pytest.mark.parametrize("field", ["tag", "info", "seq", "cum"])
@pytest.mark.parametrize("value", [0, 1, 0x7F, 2 ** 40 + 3, 2 ** 64 - 1])
def test_corrupt_frame_headers_give_ring_errors_never_a_crash(ring_name, rings, mode, overflow, field, value):
    """A frame header overwritten by a stray writer (never by shmring): consumers get
    a ring or message exception, or messages of at most the largest size, never a
    crash, a hang or a read outside the ring."""
    import mmap
    import struct

    from shmring import _ring
    from shmring.errors import CorruptMessageError, CorruptRingError

    ring = rings.create(ring_name, nbytes=4096, mode=mode, overflow=overflow)
    prod, cons = ring.producer(), ring.consumer()
    sent = [bytes([i]) * (10 * i) for i in range(1, 6)] + [{"k": 1}, np.arange(4)]
    prod.push_many(sent)
    slots = _ring.LAYOUT["header.slots_offset"]
    with open(f"/dev/shm/shmr-{ring_name}", "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        base = struct.unpack_from("<Q", mm, slots[0])[0]
        off, size = _ring.LAYOUT[f"frame.{field}"]
        struct.pack_into("<Q", mm, base + off, value)  # the first frame, at unit 0
    got = []
    for _ in range(len(sent) + 1):
        try:
            got.append(cons.pop(timeout=0))
        except (shmring.Empty, shmring.Lagged, CorruptRingError, CorruptMessageError,
                pickle.UnpicklingError, ValueError, EOFError, TypeError) as exc:
            got.append(type(exc))
    for g in got:
        if isinstance(g, bytes):
            assert len(g) <= ring.max_message
