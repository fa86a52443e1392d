"""Bad input and damaged segments: every failure has the documented exception type
and leaves the ring (or the name) usable afterwards."""

from __future__ import annotations

import errno
import os
import struct
import sys
import time

import numpy as np
import pytest

import shmring
from shmring import _ring
import _workers as W
from shmring._ring import LAYOUT, LAYOUT_PAGE
from _procs import run

SHM = "/dev/shm"
STRUCT = np.dtype([("a", "<i4"), ("b", "<f8")])
SUBARRAY = np.dtype((np.uint8, (4, 5)))


def seg_path(name: str) -> str:
    return os.path.join(SHM, f"shmr-{name}")


def roundtrip(ring, prod=None, cons=None):
    """Push one distinctive record and pop it back byte for byte (ring must be empty)."""
    own_p, own_c = prod is None, cons is None
    prod = prod if prod is not None else ring.producer()
    cons = cons if cons is not None else ring.consumer()
    try:
        size = ring.dtype.itemsize
        raw = bytes((i * 53 + 7) % 251 + 1 for i in range(size))
        rec = np.frombuffer(raw, dtype=np.uint8).view(ring.dtype.base).reshape((1,) + ring.dtype.shape)
        prod.push(rec, timeout=5)
        assert np.asarray(cons.pop(timeout=5)).tobytes() == raw
        with pytest.raises(shmring.Empty):
            cons.pop(timeout=0)
    finally:
        if own_c:
            cons.close()
        if own_p:
            prod.close()


def fresh_ring_works(rings, name, dtype=np.int64):
    """The name is free again: a new ring under it can be created and used."""
    assert not os.path.exists(seg_path(name)), "a failed call left a segment behind"
    ring = rings.create(name, dtype, 8)
    roundtrip(ring)


# ---- names -------------------------------------------------------------------------------

def _bad_names(base: str):
    return {
        "empty": "",
        "slash": f"{base}/x",
        "201-bytes": base + "x" * (201 - len(base)),
        "leading-dash": f"-{base}",
        "space": f"{base} x",
        "non-ascii": f"{base}\u00e9",
        "nul": f"{base}\0x",
        "newline": f"{base}\n",
    }


@pytest.mark.parametrize("kind", list(_bad_names("b")))
def test_bad_name_is_value_error(kind, ring_name, rings):
    bad = _bad_names(ring_name)[kind]
    # files a wrongly accepted name could create: itself, or its prefix up to a NUL
    maybe = {seg_path(bad.split("\0")[0])} if "/" not in bad and bad else set()
    try:
        with pytest.raises(ValueError):
            rings.create(bad, np.int64, 8)
        for p in maybe:
            assert not os.path.exists(p), f"create({bad!r}) raised but left {p}"
        with pytest.raises(ValueError):
            rings.attach(bad)
        with pytest.raises(ValueError):
            shmring.unlink(bad)
    finally:
        rings.close_all()
        for p in maybe:
            if os.path.exists(p):
                os.unlink(p)
    fresh_ring_works(rings, ring_name)


@pytest.mark.parametrize("length", [25, 36, 200])
def test_long_names_up_to_200_bytes_are_accepted(length, ring_name, rings):
    """A UUID (36) and anything up to 200 bytes (what fits /dev/shm's 255-byte
    file names with the prefixes)."""
    name = ring_name + "x" * (length - len(ring_name))
    try:
        ring = rings.create(name, np.int64, 8)
        assert os.path.exists(seg_path(name))
        roundtrip(ring)
        roundtrip(rings.attach(name))
    finally:
        rings.close_all()
        shmring.unlink(name)


@pytest.mark.parametrize("bad", [b"abc", 5, None])
def test_non_str_name_is_type_error(bad, ring_name, rings):
    if bad is not None:  # create(None, ...) generates a name
        with pytest.raises(TypeError):
            rings.create(bad, np.int64, 8)
    with pytest.raises(TypeError):
        rings.attach(bad)
    with pytest.raises(TypeError):
        shmring.unlink(bad)
    fresh_ring_works(rings, ring_name)


# ---- capacity ----------------------------------------------------------------------------

@pytest.mark.parametrize("cap", [0, -1, -(2**40), 2**32 + 1, 2**40])
def test_bad_capacity_is_value_error(cap, ring_name, rings):
    with pytest.raises(ValueError):
        rings.create(ring_name, np.int64, cap)
    fresh_ring_works(rings, ring_name)


@pytest.mark.parametrize("cap", [8.0, "8", True, None])
def test_non_int_capacity_is_type_error(cap, ring_name, rings):
    with pytest.raises(TypeError):
        rings.create(ring_name, np.int64, cap)
    fresh_ring_works(rings, ring_name)


@pytest.mark.parametrize("cap,expected", [(1, 1), (2, 2), (3, 4), (1000, 1024), (1024, 1024), (np.int64(9), 16)])
def test_capacity_rounds_up_to_power_of_two(cap, expected, ring_name, rings):
    ring = rings.create(ring_name, np.int64, cap)
    assert ring.capacity == expected and ring.stats()["capacity"] == expected
    prod, cons = ring.producer(), ring.consumer()
    assert prod.push_many(np.arange(expected, dtype=np.int64), timeout=0) == expected
    with pytest.raises(shmring.Full):
        prod.push(-1, timeout=0)
    got = []
    while len(got) < expected:
        got.extend(cons.pop_many(expected, timeout=0).tolist())
    assert got == list(range(expected))
    roundtrip(ring, prod, cons)


# ---- dtypes --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [
    object,
    np.dtype([("a", "O")]),
    np.dtype([("a", "<i4"), ("b", "O")]),
    np.dtype((object, (2,))),
    "not-a-dtype",
])
def test_object_or_invalid_dtype_is_type_error(dtype, ring_name, rings):
    with pytest.raises(TypeError):
        rings.create(ring_name, dtype, 8)
    fresh_ring_works(rings, ring_name)


@pytest.mark.parametrize("dtype", [np.dtype([]), np.dtype("V0"), np.dtype("S0")])
def test_zero_size_dtype_is_value_error(dtype, ring_name, rings):
    with pytest.raises(ValueError):
        rings.create(ring_name, dtype, 8)
    fresh_ring_works(rings, ring_name)


# ---- other create() parameters ---------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"mode": "fifo"},
    {"overflow": "drop"},
    {"mode": "queue", "overflow": "overwrite"},
    {"max_consumers": 0},
    {"max_consumers": 1025},
])
def test_bad_create_options_are_value_error(kwargs, ring_name, rings):
    with pytest.raises(ValueError):
        rings.create(ring_name, np.int64, 8, **kwargs)
    fresh_ring_works(rings, ring_name)


# ---- records of the wrong dtype / shape ----------------------------------------------------------

OTHER_STRUCT = np.dtype([("a", "<i8"), ("b", "<f8")])

WRONG_DTYPE_CASES = [
    # (ring dtype, method, record)
    (STRUCT, "push", np.zeros(1, OTHER_STRUCT)),
    (STRUCT, "push", np.zeros(1, OTHER_STRUCT)[0]),
    (STRUCT, "push", [1, 2.0]),
    (STRUCT, "push", "text"),
    (STRUCT, "push", 5),
    (STRUCT, "push", {"a": 1, "b": 2.0}),
    (STRUCT, "push", (1, "not a float")),
    (STRUCT, "push_many", np.zeros(3, "f8")),
    (STRUCT, "push_many", np.zeros(3, OTHER_STRUCT)),
    (STRUCT, "push_many", np.zeros(1, STRUCT)[0]),
    ("float64", "push", "abc"),
    ("float64", "push", None),
    ("float64", "push", 1 + 2j),
    ("float64", "push", np.zeros(1, "i4")),
    ("float64", "push", np.zeros(1, STRUCT)),
    ("float64", "push_many", np.zeros(3, "i4")),
    ("float64", "push_many", ["a", "b"]),
    ("int32", "push", 1.5),
    ("int32", "push", np.float64(2.0)),
    ("int32", "push", "7"),
    ("int32", "push_many", np.zeros(3, "i8")),
    (SUBARRAY, "push", np.zeros((4, 5), "i2")),
    (SUBARRAY, "push", np.zeros((4, 5), "f4")),
    (SUBARRAY, "push_many", np.zeros((2, 4, 5), "f8")),
]


@pytest.mark.parametrize("dtype,method,record", WRONG_DTYPE_CASES,
                         ids=[f"{np.dtype(d).str if np.dtype(d).names is None else 'struct'}-{m}-{i}"
                              for i, (d, m, _) in enumerate(WRONG_DTYPE_CASES)])
def test_wrong_dtype_record_is_type_error(dtype, method, record, ring_name, rings):
    ring = rings.create(ring_name, dtype, 8)
    prod, cons = ring.producer(), ring.consumer()
    with pytest.raises(TypeError):
        getattr(prod, method)(record, timeout=0)
    assert ring.stats()["pushed"] == 0  # nothing was half-pushed
    roundtrip(ring, prod, cons)


WRONG_SHAPE_CASES = [
    ("int32", "push", np.zeros(2, "i4")),
    ("int32", "push", np.zeros((1, 1), "i4")),
    ("int32", "push", [1, 2]),
    ("int32", "push_many", np.zeros((3, 2), "i4")),
    (SUBARRAY, "push", np.zeros((5, 4), "u1")),
    (SUBARRAY, "push", np.zeros((2, 4, 5), "u1")),
    (SUBARRAY, "push", np.zeros(20, "u1")),
    (SUBARRAY, "push_many", np.zeros((3, 5, 4), "u1")),
    (SUBARRAY, "push_many", np.zeros((4, 5), "u1")),
    (STRUCT, "push", np.zeros(2, STRUCT)),
    (STRUCT, "push_many", np.zeros((2, 2), STRUCT)),
]


@pytest.mark.parametrize("dtype,method,record", WRONG_SHAPE_CASES,
                         ids=[f"{np.dtype(d).str if np.dtype(d).names is None else 'struct'}-{m}-{i}"
                              for i, (d, m, _) in enumerate(WRONG_SHAPE_CASES)])
def test_wrong_shape_record_is_value_error(dtype, method, record, ring_name, rings):
    ring = rings.create(ring_name, dtype, 8)
    prod, cons = ring.producer(), ring.consumer()
    with pytest.raises(ValueError):
        getattr(prod, method)(record, timeout=0)
    assert ring.stats()["pushed"] == 0
    roundtrip(ring, prod, cons)


_ZERO_D_SCRIPT = r"""
import sys
import numpy as np
import shmring
from shmring import _ring
name, kind = sys.argv[1], sys.argv[2]
dt = np.dtype([("a", "<i4"), ("b", "<f8")]) if kind == "struct" else np.dtype("int32")
ring = shmring.Ring.create(name, dt, 8)
prod, cons = ring.producer(), ring.consumer()
rec = {"int": 5, "0d": np.array(5, dtype="int32"), "struct": np.zeros((), dtype=dt)}[kind]
try:
    prod.push_many(rec, timeout=0)
    print("no error")
except (ValueError, TypeError) as exc:
    print(type(exc).__name__)
prod.push(np.zeros(1, dtype=dt))
print("pushed", ring.stats()["pushed"], "popped", len(cons.pop_many(8, timeout=1)))
"""


@pytest.mark.parametrize("kind", ["int", "0d", "struct"])
def test_push_many_of_a_0d_record_is_rejected(kind, ring_name):
    """push_many() needs an array of records; a scalar / 0-d array has the wrong
    shape. Run in a subprocess because the failure mode is a crash."""
    proc = run([sys.executable, "-c", _ZERO_D_SCRIPT, ring_name, kind],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"exit code {proc.returncode}; stderr: {proc.stderr[-2000:]}"
    lines = proc.stdout.split("\n")
    assert lines[0] in ("ValueError", "TypeError"), lines
    assert lines[1] == "pushed 1 popped 1"


# ---- runtime arguments -------------------------------------------------------------------------

def test_bad_runtime_arguments_are_value_error(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 4)
    prod, cons = ring.producer(), ring.consumer()
    for call in (lambda: cons.pop(timeout=-1), lambda: cons.pop(timeout=float("nan")),
                 lambda: cons.pop_many(4, timeout=-0.5), lambda: cons.pop_many(0),
                 lambda: cons.pop_many(-3), lambda: ring.consumer(start="middle"),
                 lambda: ring.consumer(on_lag="ignore"), lambda: ring.consumer(spin=-1)):
        with pytest.raises(ValueError):
            call()
    prod.push_many(np.arange(4, dtype=np.int64))
    with pytest.raises(ValueError):
        prod.push(9, timeout=-1)  # ring is full: the timeout matters, and it is bad
    assert cons.pop_many(4).tolist() == [0, 1, 2, 3]
    assert len(ring.stats()["consumers"]) == 1  # the failed consumer() calls took no slot
    roundtrip(ring, prod, cons)


def test_bad_producer_spin_does_not_take_the_role(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 4)
    with pytest.raises(ValueError):
        ring.producer(spin=-1)
    assert ring.stats()["producer_pid"] is None
    roundtrip(ring)


# ---- shared memory exhausted -----------------------------------------------------------------------

def test_enospc_fails_fast_and_leaves_nothing(ring_name, rings):
    dt = np.dtype([("b", "u1", (4096,))])
    cap = 2**32
    st = os.statvfs(SHM)
    assert cap * dt.itemsize > st.f_bavail * st.f_frsize  # precondition of this test
    t0 = time.monotonic()
    with pytest.raises(OSError) as ei:
        rings.create(ring_name, dt, cap)
    elapsed = time.monotonic() - t0
    assert ei.value.errno == errno.ENOSPC
    assert elapsed < 15, f"ENOSPC took {elapsed:.1f}s"
    assert not os.path.exists(seg_path(ring_name))
    fresh_ring_works(rings, ring_name, dt)


# ---- names that exist / do not exist ------------------------------------------------------------------

def test_missing_ring_is_file_not_found(ring_name, rings):
    with pytest.raises(FileNotFoundError):
        rings.attach(ring_name)
    with pytest.raises(FileNotFoundError):
        shmring.unlink(ring_name)
    fresh_ring_works(rings, ring_name)
    ring = rings.rings[-1]
    ring.unlink()
    with pytest.raises(FileNotFoundError):
        ring.unlink()
    roundtrip(ring)  # still mapped, still works


def test_create_twice_is_file_exists(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8)
    with pytest.raises(FileExistsError):
        rings.create(ring_name, np.int64, 8)
    roundtrip(ring)


@pytest.mark.parametrize("kwargs", [
    {"dtype": np.int64, "capacity": 16},
    {"dtype": np.int64, "capacity": 8, "mode": "broadcast"},
    {"dtype": np.float64, "capacity": 8},
    {"dtype": STRUCT, "capacity": 8},
], ids=["capacity", "mode", "dtype", "struct-dtype"])
def test_exist_ok_with_incompatible_ring_is_file_exists(kwargs, ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8)
    kw = dict(kwargs)
    dtype, cap = kw.pop("dtype"), kw.pop("capacity")
    with pytest.raises(FileExistsError):
        rings.create(ring_name, dtype, cap, exist_ok=True, **kw)
    assert (ring.capacity, ring.mode, ring.dtype) == (8, "queue", np.dtype(np.int64))
    roundtrip(ring)
    roundtrip(rings.create(ring_name, np.int64, 8, exist_ok=True))


def test_exist_ok_broadcast_overflow_mismatch_is_file_exists(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8, mode="broadcast", overflow="overwrite")
    with pytest.raises(FileExistsError):
        rings.create(ring_name, np.int64, 8, mode="broadcast", overflow="block", exist_ok=True)
    same = rings.create(ring_name, np.int64, 8, mode="broadcast", overflow="overwrite", exist_ok=True)
    assert same.overflow == "overwrite"
    cons = same.consumer()
    roundtrip(ring, None, cons)


@pytest.mark.parametrize("want", [np.float64, ">i8", np.int32, STRUCT, np.dtype((np.int64, (1,)))])
def test_attach_with_other_dtype_is_type_error(want, ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8)
    with pytest.raises(TypeError):
        rings.attach(ring_name, dtype=want)
    with pytest.raises(TypeError):
        rings.attach(ring_name, dtype=object)
    same = rings.attach(ring_name, dtype="<i8")
    assert same.dtype == np.dtype(np.int64)
    roundtrip(ring, None, same.consumer())


# ---- damaged segments -----------------------------------------------------------------------------

_FMT = {4: "<I", 8: "<Q"}


def _read_field(path, field):
    """An integer field of the segment, at the offset the compiled core exports."""
    off, size = LAYOUT[field]
    with open(path, "rb") as f:
        f.seek(off)
        return struct.unpack(_FMT[size], f.read(size))[0]


def _write_field(path, field, value):
    off, size = LAYOUT[field]
    data = value if isinstance(value, bytes) else struct.pack(_FMT[size], value)
    assert len(data) <= size
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


@pytest.mark.parametrize("size", [4096, 65536])
def test_garbage_segment_is_not_a_ring(size, ring_name, rings):
    seed = 4242 + size
    print(f"seed={seed}")
    data = bytearray(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    data[0] = data[0] | 1  # magic word non-zero: "garbage", not "being initialised"
    with open(seg_path(ring_name), "xb") as f:
        f.write(bytes(data))
    os.chmod(seg_path(ring_name), 0o600)
    with pytest.raises(shmring.NotARingError) as ei:
        rings.attach(ring_name)
    assert isinstance(ei.value, shmring.RingError)
    with pytest.raises(shmring.NotARingError):
        rings.create(ring_name, np.int64, 8, exist_ok=True)
    with pytest.raises(FileExistsError):
        rings.create(ring_name, np.int64, 8)
    with open(seg_path(ring_name), "rb") as f:
        assert f.read() == bytes(data)  # nobody wrote into it
    shmring.unlink(ring_name)
    fresh_ring_works(rings, ring_name)


def test_other_layout_version(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8)
    prod, cons = ring.producer(), ring.consumer()
    prod.push(41)
    path = seg_path(ring_name)
    assert _read_field(path, "header.version") == _ring.LAYOUT_VERSION
    _write_field(path, "header.version", _ring.LAYOUT_VERSION + 1)
    with pytest.raises(shmring.LayoutVersionError) as ei:
        rings.attach(ring_name)
    assert isinstance(ei.value, shmring.RingError)
    with pytest.raises(shmring.LayoutVersionError):
        rings.create(ring_name, np.int64, 8, exist_ok=True)
    # handles mapped before the change keep working
    assert int(cons.pop(timeout=1)) == 41
    roundtrip(ring, prod, cons)
    _write_field(path, "header.version", _ring.LAYOUT_VERSION)
    again = rings.attach(ring_name)
    roundtrip(again, prod, again.consumer())


@pytest.mark.parametrize("cut", ["page", "half", "minus-one-page", "minus-one-byte", "tiny"])
def test_truncated_segment_is_corrupt(cut, ring_name, rings):
    ring = rings.create(ring_name, W.REC, 1024)
    size = ring.stats()["segment_size"]
    path = seg_path(ring_name)
    assert os.path.getsize(path) == size
    ring.close()  # no mapping may touch pages that are about to vanish
    rings.close_all()
    new_size = {"page": LAYOUT_PAGE, "half": size // 2, "minus-one-page": size - LAYOUT_PAGE,
                "minus-one-byte": size - 1, "tiny": 100}[cut]
    os.truncate(path, new_size)
    with pytest.raises(shmring.CorruptRingError) as ei:
        rings.attach(ring_name)
    assert isinstance(ei.value, shmring.RingError)
    shmring.unlink(ring_name)
    fresh_ring_works(rings, ring_name, W.REC)


@pytest.mark.parametrize("field", ["capacity", "record_size", "slots_offset", "mode", "descr", "header_size"])
def test_corrupt_header_field(field, ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8)
    ring.close()
    rings.close_all()
    path = seg_path(ring_name)
    value = {
        "capacity": 3,                  # not a power of two
        "record_size": 16,              # disagrees with stride/layout
        "slots_offset": LAYOUT_PAGE,    # overlaps the control blocks
        "mode": 7,                      # no such mode
        "descr": b"x" * 8,              # unparsable dtype text
        "header_size": 64,
    }[field]
    _write_field(path, f"header.{field}", value)
    with pytest.raises(shmring.CorruptRingError):
        rings.attach(ring_name)
    shmring.unlink(ring_name)
    fresh_ring_works(rings, ring_name)


# ---- consumer table ----------------------------------------------------------------------------------

def test_consumer_table_full(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8, max_consumers=2)
    prod = ring.producer()
    c1, c2 = ring.consumer(), ring.consumer()
    with pytest.raises(shmring.ConsumerTableFull) as ei:
        ring.consumer()
    assert isinstance(ei.value, shmring.RingError)
    other = rings.attach(ring_name)
    with pytest.raises(shmring.ConsumerTableFull):
        other.consumer()
    roundtrip(ring, prod, c2)
    c1.close()
    c3 = other.consumer()  # a slot is free again
    roundtrip(ring, prod, c3)


# ---- closed handles / rings ----------------------------------------------------------------------------

def test_closed_ring_object(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8)
    prod, cons = ring.producer(), ring.consumer()
    ring.close()
    assert ring.closed and prod.closed and cons.closed
    with pytest.raises(shmring.Closed):
        prod.push(1)
    with pytest.raises(shmring.Closed):
        cons.pop(timeout=0)
    with pytest.raises(shmring.RingError):
        ring.producer()
    with pytest.raises(shmring.RingError):
        ring.consumer()
    with pytest.raises(shmring.RingError):
        ring.stats()
    # the role and the consumer slot were given back
    again = rings.attach(ring_name)
    st = again.stats()
    assert st["producer_pid"] is None and st["consumers"] == []
    roundtrip(again)


def _use_inherited_consumer(cons, results):
    try:
        cons.pop(timeout=0)
    except shmring.RingError as exc:
        results.put(("RingError", str(exc)))
    except BaseException as exc:  # reported to the parent, which asserts
        results.put((type(exc).__name__, str(exc)))
    else:
        results.put(("no error", ""))


def test_handle_inherited_through_fork_is_refused(ring_name, rings, procs):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    ring = rings.create(ring_name, np.int64, 8)
    prod, cons = ring.producer(), ring.consumer()
    prod.push(5)
    results = ctx.Queue()
    child = procs(ctx, _use_inherited_consumer, cons, results)
    try:
        kind, msg = results.get(timeout=30)
    finally:
        W.join_all([child], 30)
    assert kind == "RingError", (kind, msg)
    assert child.exitcode == 0
    # the parent's handles are untouched: the record is still there
    assert int(cons.pop(timeout=1)) == 5
    roundtrip(ring, prod, cons)
