"""The message codec on plain buffers: every kind round-trips, views are views,
bad bodies give clear errors. (Through real rings in test_messages*.py.)"""

from __future__ import annotations

import collections
import dataclasses
import enum
import fractions
import pickle
import pickletools
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shmring import _codec as codec
from shmring.errors import CorruptMessageError, PickleRefusedError


def encode_to(obj, *, pad: int = 0) -> tuple[int, bytearray]:
    """Encodes into a buffer that starts 16-byte aligned, as bodies do in a ring."""
    enc = codec.encode(obj)
    raw = np.zeros(enc.nbytes + 64, np.uint8)
    start = (-raw.ctypes.data) % 16
    body = raw[start : start + enc.nbytes]
    enc.write_into(body)
    return enc.kind, body


def roundtrip(obj, *, copy: bool = True, allow_pickle: bool = True):
    kind, body = encode_to(obj)
    view = memoryview(body).toreadonly()
    return kind, codec.decode(kind, view, copy=copy, allow_pickle=allow_pickle), body


def same_array(a: np.ndarray, b: np.ndarray) -> None:
    assert type(b) is np.ndarray
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape
    # compare raw bytes so NaNs, NaTs and padding compare exactly
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


# -- bytes-likes -----------------------------------------------------------------

@pytest.mark.parametrize("obj", [
    b"", b"x", bytes(range(256)) * 5, bytearray(b"abc"), memoryview(b"hello world"),
    memoryview(bytearray(b"0123456789"))[2:7], memoryview(np.arange(6, dtype="<i4")),
    memoryview(np.arange(12, dtype="<u2").reshape(3, 4)),
])
def test_bytes_likes_arrive_as_bytes(obj):
    kind, out, _ = roundtrip(obj)
    assert kind == codec.BYTES
    assert type(out) is bytes and out == bytes(obj)


def test_non_contiguous_memoryview_is_sent_in_c_order():
    mv = memoryview(np.arange(20, dtype=np.uint8).reshape(4, 5)[:, ::2])
    kind, out, _ = roundtrip(mv)
    assert kind == codec.BYTES and out == mv.tobytes()


def test_bytes_view_is_read_only_view_of_body():
    kind, out, body = roundtrip(b"abcdef", copy=False)
    assert isinstance(out, memoryview) and out.readonly
    body[0] = ord("Z")
    assert out.tobytes() == b"Zbcdef"  # a view of the body, not a copy


# -- arrays ------------------------------------------------------------------------

DTYPES = [
    "?", "i1", "u1", "<i2", ">i2", "<u4", ">i8", "<u8", "<f2", "<f4", ">f8", "<g", "<c8", ">c16", "<G",
    "<M8[ns]", ">M8[D]", "<m8[us]", "M8", "S5", "<U3", ">U2", "V7",
    [("a", "<i4"), ("b", ">f8", (2, 3)), ("c", "S3")],
    [("x", [("y", "<i2", (2,)), ("z", "?")]), ("w", "<c8")],
    np.dtype({"names": ["a", "b"], "formats": ["u1", "<i8"], "offsets": [0, 8], "itemsize": 24}),
    np.dtype([("a", "u1"), ("b", "<i8")], align=True),
    np.dtype(("<i4", (2, 2))),  # a subarray dtype becomes extra dimensions, as numpy does itself
]


def sample(dt: np.dtype, shape) -> np.ndarray:
    arr = np.zeros(shape, dt)  # a subarray dtype turns into extra dimensions here
    raw = arr.reshape(-1).view(np.uint8)
    raw[:] = np.random.default_rng(7).integers(0, 256, raw.size, dtype=np.uint8)
    return arr


@pytest.mark.parametrize("dt", DTYPES, ids=lambda d: str(np.dtype(d)))
def test_arrays_of_every_dtype_kind_round_trip_without_pickle(dt):
    dt = np.dtype(dt)
    arr = sample(dt, (3, 2))
    kind, out, _ = roundtrip(arr)
    assert kind == codec.ARRAY
    same_array(arr, out)
    assert out.flags.writeable and out.flags.owndata


@pytest.mark.parametrize("ndim", range(7))
def test_shapes_from_0d_to_6d(ndim):
    shape = tuple(range(2, 2 + ndim))
    arr = np.arange(int(np.prod(shape)), dtype=">f8").reshape(shape)
    for copy in (True, False):
        kind, out, _ = roundtrip(arr, copy=copy)
        assert kind == codec.ARRAY
        same_array(arr, out)
        assert out.ndim == ndim


def test_empty_arrays_and_zero_dims():
    for shape in [(0,), (3, 0), (0, 4, 2)]:
        arr = np.zeros(shape, "<i4")
        kind, out, _ = roundtrip(arr)
        same_array(arr, out)


def test_fortran_order_is_kept_and_views_are_read_only_views():
    arr = np.asfortranarray(np.arange(24, dtype="<i8").reshape(2, 3, 4))
    kind, out, body = roundtrip(arr)
    same_array(arr, out)
    assert out.flags.f_contiguous and not out.flags.c_contiguous
    kind, view, body = roundtrip(arr, copy=False)
    same_array(arr, view)
    assert view.flags.f_contiguous and not view.flags.writeable
    # the view's memory is the body's memory
    lo = np.frombuffer(body, np.uint8).ctypes.data
    assert lo <= view.ctypes.data < lo + len(body)
    assert view.ctypes.data % 16 == 0  # the data lies 16-byte aligned


@pytest.mark.parametrize("make", [
    lambda a: a[::2],
    lambda a: a[:, ::3],
    lambda a: a.T[1:],
    lambda a: a[::-1, 1::2],
    lambda a: np.broadcast_to(a[0], (5,) + a.shape[1:]),
])
def test_non_contiguous_input_arrives_contiguous_with_same_values(make):
    base = np.arange(8 * 9, dtype="<f4").reshape(8, 9)
    arr = make(base)
    assert not (arr.flags.c_contiguous or arr.flags.f_contiguous)
    kind, out, _ = roundtrip(arr)
    assert kind == codec.ARRAY
    assert out.dtype == arr.dtype and out.shape == arr.shape and np.array_equal(out, arr)
    assert out.flags.c_contiguous


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(
    dtype=st.one_of(hnp.scalar_dtypes(), hnp.array_dtypes(subtype_strategy=hnp.scalar_dtypes(), max_size=4)),
    shape=hnp.array_shapes(min_dims=0, max_dims=6, min_side=0, max_side=4),
), st.booleans(), st.booleans())
def test_random_arrays_round_trip(arr, fortran, copy):
    if fortran:
        arr = np.asfortranarray(arr)
    kind, out, _ = roundtrip(arr, copy=copy)
    assert kind == codec.ARRAY
    same_array(arr, out)


# -- pickled objects -----------------------------------------------------------------

@dataclasses.dataclass
class Frame:
    seq: int
    image: np.ndarray
    meta: dict


class Plain:
    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return type(other) is Plain and other.x == self.x


def big_arrays_equal(a, b) -> None:
    if isinstance(a, np.ndarray):
        same_array(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            big_arrays_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            big_arrays_equal(x, y)
    elif dataclasses.is_dataclass(a):
        assert type(a) is type(b)
        big_arrays_equal(dataclasses.asdict(a), dataclasses.asdict(b))
    else:
        assert a == b


OBJECTS = [
    None, 0, -(2 ** 70), 1.5, "text", "ü" * 10, (1, "a"), {"a": 1, "b": 2.0, "c": "x"},
    [1, [2, [3]]], {1, 2, 3}, fractions.Fraction(1, 3), Plain(4), np.float32(2.5), np.int64(-3),
]


MARSHALLED = {"NoneType", "int", "float", "str", "tuple", "dict", "list", "set"}


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: type(o).__name__)
def test_plain_objects_round_trip(obj):
    kind, out, _ = roundtrip(obj)
    assert kind == (codec.MARSHAL if type(obj).__name__ in MARSHALLED else codec.PICKLE)
    assert type(out) is type(obj) and out == obj


Point = collections.namedtuple("Point", "x y")


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


@pytest.mark.parametrize("obj", [
    (True, False, None, 1 + 2j, b"raw", "s\udc80", -(2 ** 200), float("inf"), 0.1),
    {"k": [1, {2: (3, frozenset({4, 5}))}], (1, 2): {"nested": [[[]]]}, 7: {}},
    [[[[[[[[1]]]]]]]],
])
def test_plain_data_goes_by_marshal_and_keeps_every_type_and_value(obj):
    kind, out, _ = roundtrip(obj)
    assert kind == codec.MARSHAL
    assert repr(out) == repr(obj)


@pytest.mark.parametrize("obj", [
    Point(1, 2), (Point(1, 2),), Color.RED, [Color.RED], Name("x"), {"a": Name("x")}, (np.arange(2),),
    [bytearray(b"buffer, not bytes")], [[[[[[[[[1]]]]]]]]], list(range(2000)),
    {"f": 1.0, "inner": [{"deep": (np.float64(1.0),)}]},
])
def test_anything_marshal_would_not_give_back_as_it_was_is_pickled(obj):
    kind, out, _ = roundtrip(obj)
    assert kind in (codec.PICKLE, codec.PICKLE_OOB, codec.PICKLE_ARRAYS)
    assert repr(out) == repr(obj) or isinstance(obj, tuple) and isinstance(obj[0], np.ndarray)
    if isinstance(obj, (Point, Name, Color)):
        assert type(out) is type(obj)


def test_shared_or_self_containing_containers_are_pickled_and_stay_shared():
    inner = [1, 2]
    shared = [inner, inner]
    looped = [0]
    looped.append(looped)
    many = [[i] for i in range(20)]  # more lists than the walk keeps track of
    for obj in (shared, {"a": inner, "b": inner}, looped, many):
        kind, out, _ = roundtrip(obj)
        assert kind == codec.PICKLE
    out = roundtrip(shared)[1]
    assert out[0] is out[1] and out == [[1, 2], [1, 2]]
    out = roundtrip(looped)[1]
    assert out[1] is out
    assert roundtrip(many)[1] == many
    tup = (1, "x")
    assert roundtrip([tup, tup])[0] == codec.MARSHAL  # immutables may repeat


def test_a_memoryview_inside_an_object_is_not_turned_into_bytes():
    with pytest.raises(TypeError):  # what pickle says; marshal would have sent bytes
        codec.encode([memoryview(b"view")])


def test_marshal_messages_are_refused_like_pickles_and_corrupt_ones_named():
    kind, body = encode_to({"a": 1})
    assert kind == codec.MARSHAL
    with pytest.raises(PickleRefusedError, match="allow_pickle=False"):
        codec.decode(kind, memoryview(body), allow_pickle=False)
    with pytest.raises(CorruptMessageError, match="marshal message of 3 bytes is corrupt"):
        codec.decode(codec.MARSHAL, memoryview(b"\xfb\x01\x02"))


def test_arrays_inside_objects_go_out_of_band_not_through_the_stream():
    img = np.arange(100_000, dtype="<u2").reshape(250, 400)
    obj = {"frame": Frame(7, img, {"k": np.ones(3, ">f8")}), "list": [np.asfortranarray(img[:5, :6]), 3],
           "tags": ("a", 1.0)}
    kind, body = encode_to(obj)
    assert kind == codec.PICKLE_ARRAYS  # img is rebuilt by memo entry 0, the Fortran slice by numpy
    slen, nbuf = codec._OOB_HEAD.unpack_from(body, 0)
    assert nbuf == 3
    assert slen < 2000  # the 200 kB image is not in the stream
    for copy in (True, False):
        out = codec.decode(kind, memoryview(body).toreadonly(), copy=copy)
        big_arrays_equal(obj, out)
        got = out["frame"].image
        assert got.flags.writeable == copy
        lo = np.frombuffer(body, np.uint8).ctypes.data
        inside = lo <= got.ctypes.data < lo + len(body)
        assert inside != copy  # views point into the body, copies do not
        if not copy:
            assert got.ctypes.data % 16 == 0


def test_object_arrays_are_pickled_in_band():
    arr = np.array([1, "two", (3,), None], dtype=object)
    kind, out, _ = roundtrip(arr)
    assert kind == codec.PICKLE
    assert out.dtype == object and list(out) == list(arr)
    with pytest.raises(PickleRefusedError, match="allow_pickle=False"):
        roundtrip(arr, allow_pickle=False)


def test_ndarray_subclass_keeps_its_type_through_pickle():
    m = np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])
    kind, out, _ = roundtrip(m)
    assert kind in (codec.PICKLE, codec.PICKLE_OOB, codec.PICKLE_ARRAYS)
    assert type(out) is np.ma.MaskedArray and list(out.mask) == [False, True, False]


def test_allow_pickle_false_refuses_pickles_but_takes_bytes_and_arrays():
    assert roundtrip(b"ok", allow_pickle=False)[1] == b"ok"
    same_array(np.arange(3), roundtrip(np.arange(3), allow_pickle=False)[1])
    for obj in [{"a": 1}, {"a": np.arange(3)}]:
        with pytest.raises(PickleRefusedError, match="allow_pickle=False"):
            roundtrip(obj, allow_pickle=False)


def test_unpicklable_object_raises_pickles_own_error_before_sizing():
    with pytest.raises((TypeError, pickle.PicklingError, AttributeError)):
        codec.encode(threading.Lock())
    with pytest.raises((TypeError, pickle.PicklingError, AttributeError)):
        codec.encode({"f": lambda: 1})


def test_write_into_checks_the_destination_size():
    enc = codec.encode(b"abc")
    with pytest.raises(ValueError, match="needs 3"):
        enc.write_into(bytearray(4))


# -- corrupt bodies ----------------------------------------------------------------

def test_corrupt_bodies_give_clear_errors():
    kind, body = encode_to(np.arange(10, dtype="<i4"))
    with pytest.raises(CorruptMessageError, match="does not hold shape"):
        codec.decode(kind, body[:-4])
    bad = bytearray(body)
    bad[0] = ord("X")
    with pytest.raises(CorruptMessageError, match="corrupt header"):
        codec.decode(kind, bad)
    bad = bytearray(body)
    dpos = codec._ARRAY_HEAD.size + 8
    bad[dpos : dpos + 3] = b"([{"
    with pytest.raises(CorruptMessageError, match="descriptor"):
        codec.decode(kind, bad)
    bad = bytearray(body)
    bad[dpos : dpos + 3] = b"|O8"[:3]
    with pytest.raises(CorruptMessageError):
        codec.decode(kind, bad)
    with pytest.raises(CorruptMessageError, match="unknown message kind"):
        codec.decode(99, b"")
    kind, body = encode_to({"a": np.arange(100)})
    bad = bytearray(body)
    codec._OOB_ENTRY.pack_into(bad, codec._OOB_HEAD.size, 10 ** 9, 8)
    with pytest.raises(CorruptMessageError, match="outside"):
        codec.decode(kind, bad)
    with pytest.raises(CorruptMessageError, match="shorter"):
        codec.decode(codec.ARRAY, b"\x43")


def test_non_contiguous_pickle_buffer_is_pickles_own_error():
    strided = np.arange(40, dtype="<i8")[::3]
    with pytest.raises(pickle.PicklingError, match="non-contiguous"):
        codec.encode([pickle.PickleBuffer(strided), np.arange(5)])


FAST_DTYPES = ["?", "i1", "<u2", ">i4", "<i8", "<f2", "<f4", ">f8", "<c8", "<c16", "<M8[ns]", "<m8[s]",
               "|S3", "<U5", ">U2"]


@pytest.mark.parametrize("dt", FAST_DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 4), (2, 0, 3)])
def test_arrays_inside_objects_keep_dtype_shape_values_and_writability(dt, shape):
    n = int(np.prod(shape))
    arr = np.frombuffer(np.random.default_rng(len(dt)).bytes(n * np.dtype(dt).itemsize), dt).reshape(shape)
    arr = arr.copy()
    for copy in (True, False):
        kind, out, body = roundtrip({"a": arr, "b": [arr]}, copy=copy)
        assert kind == codec.PICKLE_ARRAYS
        for got in (out["a"], out["b"][0]):
            assert type(got) is np.ndarray and got.dtype == arr.dtype and got.dtype.str == arr.dtype.str
            assert got.shape == arr.shape
            assert got.tobytes() == arr.tobytes()
            assert got.flags.writeable == copy or arr.nbytes == 0


def test_arrays_the_fast_reduction_cannot_name_keep_numpys_own():
    structured = np.zeros(3, [("x", "<i4"), ("y", "<f8", (2,))])
    meta = np.arange(4, dtype=np.dtype("<i4", metadata={"unit": "m"}))
    fortran = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    strided = np.arange(20)[::3]
    objects = np.array([1, "x", None], dtype=object)
    codec.dumps(None)  # a short stream: the next dump starts from the memo holding entry 0
    for arr in (structured, meta, fortran, strided, objects):
        stream, _ = codec.dumps([arr])
        assert stream.startswith(codec.PRELUDE_NONE)  # memo entry 0 unused: any unpickler reads it
        _, out, _ = roundtrip([arr])
        got = out[0]
        assert got.dtype == arr.dtype and got.shape == arr.shape
        if arr.dtype.hasobject:
            assert got.tolist() == arr.tolist()
        else:
            assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(arr).tobytes()
    codec.dumps(None)
    stream, pbs = codec.dumps([np.arange(5)])
    # rebuilt by memo entry 0, never named: no global in the stream at all
    assert stream.startswith(codec.PRELUDE_REBUILD) and b"array_from" not in stream and len(pbs) == 1
    assert not any(op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ") for op, _, _ in pickletools.genops(stream))
    assert codec.loads(stream, [pbs[0].raw()])[0].tolist() == [0, 1, 2, 3, 4]


def test_the_reused_pickler_sees_reducers_registered_later_and_pickles_reentrantly():
    import copyreg

    class Inner:
        def __reduce__(self):
            # pickling from inside a reduction (on the same thread) must not share the pickler
            stream, pbs = codec.dumps({"inner": np.arange(3)})
            return (_unpickle_inner, (stream, [pb.raw().tobytes() for pb in pbs]))

    codec.dumps(_Later(0))  # the pickler exists before the reducer is registered
    copyreg.pickle(_Later, lambda o: (_Later2, (o.v * 10,)))
    try:
        _, out, _ = roundtrip([_Later(4)])
        assert type(out[0]) is _Later2 and out[0].v == 40
    finally:
        del copyreg.dispatch_table[_Later]
    _, out, _ = roundtrip({"x": Inner(), "y": np.arange(4)})
    assert out["x"]["inner"].tolist() == [0, 1, 2] and out["y"].tolist() == [0, 1, 2, 3]
    with pytest.raises((TypeError, pickle.PicklingError, AttributeError)):
        codec.dumps([np.arange(3), threading.Lock()])
    stream, pbs = codec.dumps((1, "after a failed dump"))  # nothing left over from the failure
    assert pickle.loads(stream) == (1, "after a failed dump") and pbs == ()
    # the memo is back to entry 0 alone after each dump: a repeated object is one
    # object, indices match the reader's (a stale entry would shift them)
    s = "x" * 40
    for _ in range(3):
        stream, _ = codec.dumps([s, s, (s,)])
        out = pickle.loads(stream)
        assert out == [s, s, (s,)] and out[0] is out[1] is out[2][0]


def test_after_a_long_stream_arrays_are_named_and_every_reader_reads_both_forms():
    # a long stream is followed by a dump whose memo was cleared, not copied (a copied
    # memo regrows in every dump: a dict of 1000 entries cost 24% more); that dump
    # names the rebuild function, as PICKLE_OOB always did
    big = {f"k{i}": (i, None) for i in range(1000)}
    obj = {"a": np.arange(6, dtype="<i2").reshape(2, 3), "s": "x"}
    kinds = []
    for first in (None, big, None):
        codec.dumps(first)
        stream, pbs = codec.dumps(obj)
        kind, out, _ = roundtrip(obj) if first is None else (None, None, None)
        enc = codec.pickled(stream, pbs)
        kinds.append(enc.kind)
        body = bytearray(enc.nbytes)
        enc.write_into(body)
        for copy in (True, False):
            got = codec.decode(enc.kind, memoryview(bytes(body)), copy=copy)
            assert got["a"].tolist() == [[0, 1, 2], [3, 4, 5]] and got["a"].dtype == "<i2" and got["s"] == "x"
        assert codec.loads(stream, [pb.raw() for pb in pbs])["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
        assert (b"array_from" in stream) == (enc.kind == codec.PICKLE_OOB)
    assert kinds == [codec.PICKLE_ARRAYS, codec.PICKLE_OOB, codec.PICKLE_ARRAYS]


class _Later:
    def __init__(self, v):
        self.v = v


class _Later2:
    def __init__(self, v):
        self.v = v


def _unpickle_inner(stream, raws):
    return codec.loads(stream, raws)
