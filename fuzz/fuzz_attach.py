#!/usr/bin/env python3
"""Fuzz target: arbitrary bytes as a ring segment, then Ring.attach() and a consumer.

Input format: byte 0 is a flag byte, the rest is written as the whole content of
/dev/shm/shmr-<name> (a new file for every input, so no earlier mapping is ever
truncated under its feet).

    flag 0x01  extend the file (sparse ftruncate) to the header's segment_size when
               that is larger than the bytes given and at most EXTEND_MAX
    flag 0x02  after attaching, also take the producer role and push/reserve (timeout 0)
    flag 0x04  consumer start="oldest" (else "latest")
    flag 0x08  read with view() and pop_many() as well as pop()
    flag 0x10  consumer on_lag="raise"

The contract checked for every input:
  * Ring.attach(name) either succeeds or raises a shmring.RingError subclass or an
    OSError (FileNotFoundError, ENOMEM for a size it cannot map, ...); never a crash
    (SIGSEGV/SIGBUS/abort) and never another exception type;
  * after a successful attach, stats(), a consumer, pop(timeout=0) (and with flags
    view/pop_many, the producer) raise nothing but RingError, Empty, Closed, Lagged,
    Full; never crash;
  * the descriptor text is never executed (it goes through ast.literal_eval).

Modes:
  fuzz_attach.py [libFuzzer flags] [CORPUS_DIR ...]   atheris fuzzing (pip install atheris)
  fuzz_attach.py --make-corpus DIR                    seed corpus from real rings
  fuzz_attach.py --field-counts                       mutations per layout field over the
                                                      deterministic cases (exit 1 if one is never hit)
  fuzz_attach.py --replay FILE|DIR ...                run inputs one by one, one line each:
                                                      "B <i>" before, "E <i> <outcome>" after,
                                                      "X <i> <exception>" for a broken contract
See fuzz/README.md.
"""

from __future__ import annotations

import os
import random
import struct
import sys
import traceback
from collections import Counter

from shmring import _ring

EXTEND_MAX = 64 << 20  # largest file the harness grows to (sparse)
SEED_PREFIX_BYTES = 8192  # seeds keep a real ring's first 8 KiB, then zero padding

# Every offset comes from the compiled module (csrc/shmr_layout.h via _ring.LAYOUT).
LAYOUT = _ring.LAYOUT
PAGE = _ring.LAYOUT_PAGE
BLOCK = _ring.LAYOUT_BLOCK
MAGIC = _ring.LAYOUT_MAGIC
DESCR_OFF, DESCR_MAX = LAYOUT["header.descr"]
CONSUMERS_OFF = LAYOUT["cslot"][0]
CSLOT_SIZE = LAYOUT["cslot"][1]
RELEASE_SIZE = LAYOUT["release"][1]
_FMT = {4: "<I", 8: "<Q"}


def _fields(region: str) -> dict[str, tuple[int, str]]:
    """name -> (offset, struct format) for the integer fields of one region."""
    out = {}
    for key, (off, size) in LAYOUT.items():
        reg, dot, name = key.partition(".")
        if dot and reg == region and size in _FMT:
            out[name] = (off, _FMT[size])
    return out


# header fields (every one except the descriptor text, which has its own cases)
FIELDS = _fields("header")
# control words after the header: "region.field" -> (absolute offset, format)
CONTROL = {f"{reg}.{name}": v for reg in ("prod", "tail", "data_ec", "space_ec", "ctl")
           for name, v in _fields(reg).items()}
# per-consumer slot and release-record fields: offsets within one slot / record
CSLOT = _fields("cslot")
RELEASE = _fields("release")

# How often each field was set by a mutation in this process ("header.capacity",
# "ctl.stream", "cslot.claim_n", ...); --field-counts prints it for the
# deterministic cases.
MUTATIONS: Counter[str] = Counter()

U32 = (1 << 32) - 1
U64 = (1 << 64) - 1


def interesting(fmt: str) -> list[int]:
    top = U32 if fmt == "<I" else U64
    vals = [0, 1, 2, 3, 4, 5, 7, 8, 9, 64, 127, 128, 129, 4095, 4096, 4097, 8192, 65536,
            1 << 20, (1 << 30) - 1, 1 << 30, (1 << 30) + 1, (1 << 31) - 1, 1 << 31, top]
    if fmt == "<Q":
        vals += [U32, 1 << 32, (1 << 32) + 1, 1 << 33, (1 << 62) - 1, 1 << 62, 1 << 63, (1 << 63) - 1,
                 top - 1, top - 4095]
    return vals


# descriptor texts that must be rejected or decoded harmlessly; MARKER is replaced by a
# path that must never be created (code in the descriptor must not run)
CODE_DESCRS = [
    "__import__('os').system('touch MARKER')",
    "('v1', __import__('os').system('touch MARKER'), ())",
    "exec(\"open('MARKER', 'w').close()\")",
    "('v1', '<u8', ())); open('MARKER', 'w').close(); ((",
    "('v1', '<u8', ())\nopen('MARKER', 'w').close()",
    "eval(\"__import__('os').system('touch MARKER')\")",
    "[open('MARKER', 'w') for _ in (1,)]",
    "(lambda: open('MARKER', 'w'))()",
    "('v1', f\"{open('MARKER', 'w')}\", ())",
    "breakpoint()",
    "('v1', '<u8', ()) if open('MARKER', 'w') else 0",
    "type('x', (), {'__del__': lambda s: open('MARKER', 'w')})()",
]

# (text, record size it claims or None = keep the seed's) -- dtypes that must never be
# accepted for shared memory, malformed literals, odd but legal numpy descriptors
DTYPE_DESCRS = [
    ("('v1', '|O', ())", 8),                              # object pointers read from shm
    ("('v1', '|O8', ())", 8),
    ("('v1', [('a', '<u8'), ('b', '|O')], ())", 16),
    ("('v1', '|O', (2,))", 16),
    ("('v1', 'T', ())", 16),                              # numpy StringDType: pointers too
    ("('v1', [('s', 'T')], ())", 16),
    ("('v1', ('|V8', [('a', '|O')]), ())", 8),
    ("('v1', ('<u8', [('a', '|O')]), ())", 8),
    ("('v1', '<u8', ())", 8),
    ("('v1', '<u8', ())", 16),                            # itemsize disagrees
    ("('v2', '<u8', ())", 8),
    ("('v1', '<u8')", 8),
    ("('v1', '<u8', (), 4)", 8),
    ("('v1', '<u8', (-1,))", 8),
    ("('v1', '<u8', (0,))", 8),
    ("('v1', '<u8', (10000000000,))", 8),
    ("('v1', '<u8', (1.5,))", 8),
    ("('v1', '<u8', ('a',))", 8),
    ("('v1', '<u8', (" + ", ".join(["1"] * 31) + ",))", 8),
    ("('v1', '<u8', (" + ", ".join(["1"] * 40) + ",))", 8),
    ("('v1', '<u8', (" + ", ".join(["1"] * 63) + ",))", 8),
    ("('v1', '<u8', (" + ", ".join(["1"] * 64) + ",))", 8),
    ("('v1', '<u8', (" + ", ".join(["1"] * 65) + ",))", 8),
    ("('v1', '|V8', ())", 8),
    ("('v1', '|V0', ())", 8),
    ("('v1', [('', '|V8')], ())", 8),
    ("('v1', [('a', '<u8', (-1,))], ())", 8),
    ("('v1', [('a', '<u4'), ('a', '<u4')], ())", 8),
    ("('v1', [(('t', 'a'), '<u8')], ())", 8),
    ("('v1', [(1, '<u8')], ())", 8),
    ("('v1', [('a',)], ())", 8),
    ("('v1', {'names': ['a'], 'formats': ['<u8']}, ())", 8),
    ("('v1', '<U2', ())", 8),
    ("('v1', '<M8[D]', ())", 8),
    ("('v1', '<m8[zs]', ())", 8),
    ("('v1', '>c16', ())", 16),
    ("('v1', '<f16', ())", 16),
    ("('v1', 'S8', ())", 8),
    ("('v1', 'b1', ())", 1),
    ("('v1', 'float64', ())", 8),
    ("('v1', 'O', ())", 8),
    ("('v1', '', ())", 8),
    ("('v1', 'i', ())", 4),
    ("('v1', '<u8', ())" + " " * 3900, 8),
    ("(" * 199 + "1" + ")" * 199, 8),
    ("(" * 300 + "1" + ")" * 300, 8),
    ("[" * 1900, 8),
    ("-" * 3900 + "1", 8),
    ("1" * 3967, 8),
    ("1e999999", 8),
    ("'''", 8),
    ("b'\\x00' * 8", 8),
    ("None", 8),
    ("", 8),
    (" ", 8),
    ("\\", 8),
    ("('v1', 'a.b.c', ())", 8),
    ("('v1', '" + "a" * 3900 + "', ())", 8),
    ("('v1', [('f%d', '|u1')], ())" % 0, 1),
    ("('v1', [" + ", ".join(f"('f{i}', '|u1')" for i in range(300)) + "], ())", 300),
]

# raw (bytes) descriptors that the printable-ASCII check in the core must refuse
RAW_DESCRS = [
    b"('v1', '<u8', ())\x00",
    b"('v1', '<u8', \x00())",
    b"('v1', '<u8', ())\n",
    b"('v1', '\xff<u8', ())",
    b"('v1', '<u8', ())\x7f",
    b"\x80" * 8,
    b"('v1', '\xc3\xa9', ())",
]


# ---- segment helpers ---------------------------------------------------------


def round_up(v: int, a: int) -> int:
    return (v + a - 1) // a * a


def layout(cap: int, stride: int, mode: int, max_consumers: int, kind: int = 0) -> tuple[int, int, int, int]:
    """(consumers_offset, releases_offset, slots_offset, segment_size), as the core computes it.
    A message ring (kind 1) keeps its release records in its frames: no side array."""
    consumers = CONSUMERS_OFF
    end = consumers + max_consumers * CSLOT_SIZE
    if mode == 0 and kind == 0:
        releases = round_up(end, BLOCK)
        end = releases + cap * RELEASE_SIZE
    else:
        releases = 0
    slots = round_up(end, PAGE)
    return consumers, releases, slots, round_up(slots + cap * stride, PAGE)


def _where(seg: bytes, field: str, index: int = 0) -> tuple[int, str]:
    """(offset, format) of a header field ("capacity"), a control word ("ctl.stream"),
    or field of consumer slot / release record number index ("cslot.owner", "release.tag")."""
    if field in FIELDS:
        return FIELDS[field]
    if field in CONTROL:
        return CONTROL[field]
    region, _, name = field.partition(".")
    if region == "cslot":
        off, fmt = CSLOT[name]
        return CONSUMERS_OFF + index * CSLOT_SIZE + off, fmt
    off, fmt = RELEASE[name]
    base = struct.unpack_from(FIELDS["releases_offset"][1], seg, FIELDS["releases_offset"][0])[0]
    return base + index * RELEASE_SIZE + off, fmt


def get(seg: bytes, field: str, index: int = 0) -> int:
    off, fmt = _where(seg, field, index)
    return struct.unpack_from(fmt, seg, off)[0]


def put(seg: bytearray, field: str, value: int, index: int = 0) -> None:
    off, fmt = _where(seg, field, index)
    top = U32 if fmt == "<I" else U64
    if len(seg) < off + struct.calcsize(fmt):
        seg.extend(b"\0" * (off + struct.calcsize(fmt) - len(seg)))
    struct.pack_into(fmt, seg, off, value & top)


def mutate_field(seg: bytearray, field: str, value: int, index: int = 0) -> bytearray:
    """put(), counted in MUTATIONS under the field's layout name."""
    put(seg, field, value, index)
    MUTATIONS[field if "." in field else f"header.{field}"] += 1
    return seg


def fmt_of(field: str) -> str:
    if field in FIELDS:
        return FIELDS[field][1]
    if field in CONTROL:
        return CONTROL[field][1]
    region, _, name = field.partition(".")
    return (CSLOT if region == "cslot" else RELEASE)[name][1]


def relayout(seg: bytearray, **params: int) -> bytearray:
    """Set capacity/record_size/mode/max_consumers/... and recompute the offsets and
    segment_size so that a header stays self-consistent."""
    for k, v in params.items():
        mutate_field(seg, k, v)
    if "record_size" in params and "stride" not in params:
        put(seg, "stride", params["record_size"])
    cap, stride, mode, max_consumers = (get(seg, f) for f in ("capacity", "stride", "mode", "max_consumers"))
    consumers, releases, slots, size = layout(cap, stride, mode, max_consumers)
    put(seg, "consumers_offset", consumers)
    put(seg, "releases_offset", releases)
    put(seg, "slots_offset", slots)
    put(seg, "segment_size", size)
    return seg


def fill_slots(seg: bytearray, byte: int) -> bytearray:
    """The record area (slots_offset .. segment_size) filled with one byte value."""
    start, end = get(seg, "slots_offset"), get(seg, "segment_size")
    if start < end <= EXTEND_MAX:
        if len(seg) < end:
            seg.extend(b"\0" * (end - len(seg)))
        seg[start:end] = bytes([byte]) * (end - start)
    return seg


def set_descr(seg: bytearray, text: bytes, descr_len: int | None = None) -> bytearray:
    text = text[: DESCR_MAX]
    seg[DESCR_OFF:DESCR_OFF + DESCR_MAX] = text + b"\0" * (DESCR_MAX - len(text))
    put(seg, "descr_len", len(text) if descr_len is None else descr_len)
    MUTATIONS["header.descr"] += 1
    return seg


# ---- the target ----------------------------------------------------------------


class ContractBroken(AssertionError):
    """An input made shmring raise something it must not (a crash kills the process)."""


_NAME = f"fz{os.getpid()}"
# long runs: stop at attach for the dtype classes already reported (pointer dtypes,
# subarrays of more than 31 dimensions) so the fuzzer keeps looking for new problems
_SKIP_KNOWN = os.environ.get("SHMRING_FUZZ_SKIP_KNOWN", "") not in ("", "0")


def segment_path(name: str) -> str:
    return f"/dev/shm/shmr-{name}"


def write_segment(name: str, seg: bytes, extend: bool) -> None:
    path = segment_path(name)
    try:
        os.unlink(path)  # a new inode each time: earlier mappings keep the old one
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if seg:
            os.write(fd, seg)
        if extend and len(seg) >= DESCR_OFF:
            want = get(seg, "segment_size")
            if len(seg) < want <= EXTEND_MAX:
                os.ftruncate(fd, want)
    finally:
        os.close(fd)


def _record_for(dtype):
    import numpy as np

    return np.zeros(1, dtype=dtype)


def run_one(data: bytes, name: str = _NAME) -> str:
    """Runs one input; returns an outcome label; raises ContractBroken."""
    import shmring

    flags = data[0] if data else 0
    seg = bytes(data[1:])
    write_segment(name, seg, bool(flags & 0x01))
    try:
        try:
            ring = shmring.Ring.attach(name)
        except (shmring.RingError, OSError) as exc:
            return f"attach:{type(exc).__name__}"
        except BaseException as exc:  # noqa: BLE001 - the point is to catch anything else
            raise ContractBroken(f"Ring.attach raised {type(exc).__name__}: {exc!r}\n"
                                 + traceback.format_exc()) from None
        try:
            return "attached:" + _exercise(ring, flags)
        finally:
            ring.close()
    finally:
        try:
            os.unlink(segment_path(name))
        except FileNotFoundError:
            pass


def _has_unicode(dt) -> bool:
    if dt.subdtype is not None:
        return _has_unicode(dt.subdtype[0])
    if dt.names:
        return any(_has_unicode(dt.fields[n][0]) for n in dt.names)
    return dt.kind == "U"


def _touch(obj) -> None:
    """Reads every record as a user would (repr follows pointers, decodes strings). Only a
    crash matters here: numpy may refuse garbage contents (a 'U' record with an invalid
    code point), which is the data's business, not the ring's."""
    try:
        repr(obj)
    except Exception:  # noqa: BLE001
        pass


def _known_producer_hang(ring) -> bool:
    """Queue mode: a release record with tag == writable_end and len == 0 at the
    producer's writable_end made push() spin forever in older cores (reported;
    skipped with SHMRING_FUZZ_SKIP_KNOWN)."""
    if ring.mode != "queue":
        return False
    with open(segment_path(ring.name), "rb") as f:
        seg = f.read()
    end = get(seg, "prod.writable_end")
    index = end & (ring.capacity - 1)
    off, _ = _where(seg, "release.tag", index)
    if off + RELEASE_SIZE > len(seg):
        return False
    return get(seg, "release.len", index) == 0 and get(seg, "release.tag", index) == end


def _exercise(ring, flags: int) -> str:
    import shmring

    allowed = (shmring.RingError, shmring.Empty, shmring.Closed, shmring.Lagged, shmring.Full)
    # numpy itself refuses some garbage 'U' contents when making a scalar (a code point
    # above 0x10FFFF before a trailing NUL raises SystemError): the data's business
    decode = (SystemError, ValueError, UnicodeError) if _has_unicode(ring.dtype) else ()
    steps = []

    def step(label, fn):
        try:
            out = fn()
            steps.append(label)
            return out
        except allowed as exc:
            steps.append(f"{label}:{type(exc).__name__}")
            return None
        except decode as exc:
            if not label.startswith("pop"):
                raise
            steps.append(f"{label}:{type(exc).__name__}(contents)")
            return None
        except BaseException as exc:  # noqa: BLE001
            raise ContractBroken(f"after a successful attach, {label} raised "
                                 f"{type(exc).__name__}: {exc!r}\n" + traceback.format_exc()) from None

    step("stats", ring.stats)
    step("repr", lambda: repr(ring))
    if _SKIP_KNOWN and (ring.dtype.hasobject or len(ring.dtype.shape) > 31):
        return "skipped-known-issue"
    # on_lag="raise" is for broadcast rings only (a queue never drops records)
    raise_lag = bool(flags & 0x10) and ring.mode == "broadcast"
    cons = step("consumer", lambda: ring.consumer(start="oldest" if flags & 0x04 else "latest",
                                                 on_lag="raise" if raise_lag else "skip"))
    if cons is not None:
        step("pop", lambda: _touch(cons.pop(timeout=0)))
        if flags & 0x08:
            step("pop_many", lambda: _touch(cons.pop_many(4, timeout=0)))

            def view():
                with cons.view(4, timeout=0) as arr:
                    _touch(arr.copy())
                    _touch(arr)
            step("view", view)
    if flags & 0x02 and not (_SKIP_KNOWN and _known_producer_hang(ring)):
        prod = step("producer", ring.producer)
        if prod is not None:
            step("push_many", lambda: prod.push_many(_record_for(ring.dtype), timeout=0))

            def reserve():
                with prod.reserve(2, timeout=0) as arr:
                    arr.view("u1")[...] = 0  # any dtype, as raw bytes
            step("reserve", reserve)
            if cons is not None:
                step("pop2", lambda: cons.pop(timeout=0))
            step("producer.close", prod.close)
    if cons is not None:
        step("consumer.close", cons.close)
    step("stats2", ring.stats)
    return ",".join(steps)


# ---- seeds and deterministic cases -----------------------------------------------


SEED_CONFIGS = [
    # label, dtype, capacity, mode, overflow, max_consumers, records to push, consumers to keep, close producer
    ("queue-u8-c4", "<u8", 4, "queue", "block", 1, 3, 0, False),
    ("queue-struct-c1", [("a", "<u4"), ("b", "<f8", (2,))], 1, "queue", "block", 2, 1, 1, True),
    ("queue-f4-c64-mc64", "<f4", 64, "queue", "block", 64, 70, 0, True),
    ("bcast-struct-c8", [("seq", "<u8"), ("tag", "u1", (3,))], 8, "broadcast", "block", 3, 10, 1, False),
    ("bcast-sub-c2-ow", ("<u8", (2,)), 2, "broadcast", "overwrite", 2, 5, 0, True),
    ("bcast-u1-c16-ow", "|u1", 16, "broadcast", "overwrite", 4, 40, 2, False),
]


def make_seeds() -> list[tuple[str, bytes]]:
    """(label, segment bytes): each real ring's first 8 KiB, zero-padded to its size."""
    import numpy as np

    import shmring

    out = []
    for i, (label, dt, cap, mode, ov, max_consumers, n, keep, close) in enumerate(SEED_CONFIGS):
        name = f"fzs{os.getpid()}-{i}"
        try:
            shmring.unlink(name)
        except FileNotFoundError:
            pass
        ring = shmring.Ring.create(name, dt, cap, mode=mode, overflow=ov, max_consumers=max_consumers)
        try:
            cons = [ring.consumer(start="oldest") for _ in range(keep)]
            prod = ring.producer()
            dtype = np.dtype(dt)
            for k in range(n):
                try:
                    prod.push_many(np.full(1, k, dtype=dtype) if dtype.names is None else np.zeros(1, dtype),
                                   timeout=0)
                except shmring.Full:
                    if cons and mode == "queue":
                        cons[0].pop_many(cap, timeout=0)
                    elif cons:
                        for c in cons:
                            c.pop_many(cap, timeout=0)
            if close:
                prod.close()
            with open(segment_path(name), "rb") as f:
                raw = f.read()
            seg = raw[:SEED_PREFIX_BYTES] + b"\0" * max(0, len(raw) - SEED_PREFIX_BYTES)
            out.append((label, seg))
            del cons, prod
        finally:
            ring.close()
            shmring.unlink(name)
    return out


def targeted_cases(seeds: list[tuple[str, bytes]], marker: str) -> list[tuple[str, bytes]]:
    """(label, input) pairs: every header field set to edge values, on every seed."""
    cases: list[tuple[str, bytes]] = []

    def add(label: str, seg: bytes, flags: int = 0x0D) -> None:
        cases.append((label, bytes([flags]) + bytes(seg)))

    for slabel, seed in seeds:
        add(f"{slabel}/unchanged", seed)
        add(f"{slabel}/unchanged+producer", seed, 0x0F)
        add(f"{slabel}/unchanged-latest-raise", seed, 0x18)
        for field, (off, fmt) in FIELDS.items():
            orig = get(seed, field)
            values = set(interesting(fmt)) | {orig + 1, orig - 1 if orig else 1, orig * 2, orig // 2, orig ^ 0x80}
            for v in sorted(values):
                seg = mutate_field(bytearray(seed), field, v)
                add(f"{slabel}/{field}={v:#x}", seg)
                if field in ("capacity", "record_size", "max_consumers", "mode", "stride"):
                    # the same value with the layout fields recomputed, file grown to fit
                    seg = relayout(bytearray(seed), **{field: v})
                    add(f"{slabel}/{field}={v:#x}+relayout", seg, 0x0F)
        # magic: near misses
        for m in (MAGIC ^ 1, MAGIC ^ (1 << 63), int.from_bytes(MAGIC.to_bytes(8, "little"), "big"),
                  int.from_bytes(b"SMRRING2", "little"), int.from_bytes(b"SMRRING0", "little")):
            seg = mutate_field(bytearray(seed), "magic", m)
            add(f"{slabel}/magic={m:#x}", seg)
        # file shorter / longer than the header says
        size = get(seed, "segment_size")
        for cut in (0, 1, 8, 100, 4095, 4096, 4097, 8191, size - 4096, size - 1):
            if 0 <= cut < len(seed):
                add(f"{slabel}/truncated-to-{cut}", seed[:cut], 0x0C)
        add(f"{slabel}/longer", seed + b"\xAA" * 4096)
        # descriptors
        for text in CODE_DESCRS:
            t = text.replace("MARKER", marker).encode()
            add(f"{slabel}/descr-code:{text[:40]!r}", set_descr(bytearray(seed), t))
        for text, rs in DTYPE_DESCRS:
            seg = set_descr(bytearray(seed), text.encode())
            if rs is not None:
                relayout(seg, record_size=rs)
            add(f"{slabel}/descr:{text[:60]!r}/rs={rs}", seg, 0x0D)
            # the same with records full of bytes 0x41 (what a reader of pointers would follow)
            add(f"{slabel}/descr:{text[:60]!r}/rs={rs}/data=0x41", fill_slots(seg, 0x41), 0x0D)
        for raw in RAW_DESCRS:
            add(f"{slabel}/descr-raw:{raw[:30]!r}", set_descr(bytearray(seed), raw))
        dl = get(seed, "descr_len")
        for v in (0, 1, dl - 1, dl + 1, DESCR_MAX - 1, DESCR_MAX, DESCR_MAX + 1, U32):
            seg = mutate_field(bytearray(seed), "descr_len", v)
            add(f"{slabel}/descr_len={v}", seg)
        seg = bytearray(seed)
        seg[DESCR_OFF:DESCR_OFF + DESCR_MAX] = b"A" * DESCR_MAX
        put(seg, "descr_len", DESCR_MAX - 1)
        add(f"{slabel}/descr-all-A", seg)
    return cases


def control_values(fmt: str, orig: int) -> list[int]:
    top = U32 if fmt == "<I" else U64
    return sorted({0, 1, 2, 3, 8, 4096, 1 << 31, top, top - 1, orig + 1, orig - 1 if orig else 1, orig ^ (1 << 31)}
                  | ({1 << 32, 1 << 63, U32} if fmt == "<Q" else set()))


def control_cases(seeds: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """(label, input) pairs: every control word after the header (producer block,
    tail, both eventcounts, control block), every field of consumer slots 0 and 1
    and of the release record at the producer's position set to edge values, on
    every seed. The header stays valid, so every input must attach; then a
    consumer, the producer, pops, views, pushes and a reservation run on the
    corrupt state (flag 0x0F) and must raise nothing but ring exceptions."""
    cases: list[tuple[str, bytes]] = []
    for slabel, seed in seeds:
        targets = [(f, 0) for f in CONTROL] + [(f"cslot.{n}", i) for n in CSLOT for i in (0, 1)]
        if get(seed, "releases_offset"):
            at = get(seed, "prod.writable_end") & (get(seed, "capacity") - 1)
            targets += [(f"release.{n}", at) for n in RELEASE]
        for field, index in targets:
            fmt = fmt_of(field)
            for v in control_values(fmt, get(seed, field, index)):
                seg = mutate_field(bytearray(seed), field, v, index)
                cases.append((f"{slabel}/{field}[{index}]={v:#x}", bytes([0x0F]) + bytes(seg)))
    return cases


def every_field() -> list[str]:
    """The layout names of every header and control field the fuzzer must mutate.
    Message frame headers live in the data area of message rings; their
    corruption is tested in tests/test_messages.py (test_corrupt_frame_headers); queue
    segment headers (qheader., lane.) in tests/test_mpqueue.py (test_queue_header_mutations)."""
    return sorted(k for k in LAYOUT if "." in k and not k.startswith(("frame.", "qheader.", "lane.")))


def field_counts(seeds: list[tuple[str, bytes]], random_n: int = 2000, seed: int = 20261124) -> Counter[str]:
    """Mutations per field over the deterministic cases (targeted, control, and
    random_n reproducible random inputs), counted as the cases are built."""
    MUTATIONS.clear()
    targeted_cases(seeds, "/nonexistent/unused")
    control_cases(seeds)
    random_cases(seeds, random_n, seed)
    return Counter({k: MUTATIONS.get(k, 0) for k in every_field()}) + Counter(
        {k: v for k, v in MUTATIONS.items() if k not in LAYOUT})


def random_cases(seeds: list[tuple[str, bytes]], n: int, seed: int) -> list[tuple[str, bytes]]:
    """n reproducible random inputs: raw random bytes, and seeds with random header bytes,
    random field values, random printable descriptors and random consistent layouts."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 6
        slabel, base = seeds[rng.randrange(len(seeds))]
        flags = rng.randrange(256) & ~0x02  # the producer only on valid runtime state
        if kind == 0:
            size = rng.choice([0, 1, 7, 64, 4095, 4096, 4097, 8192, 12288, rng.randrange(20000)])
            seg = bytearray(rng.getrandbits(8) for _ in range(size))
            if size >= 8 and rng.random() < 0.5:
                put(seg, "magic", MAGIC)  # get past the magic check at least
            label = f"random-bytes-{i}"
        elif kind == 1:
            seg = bytearray(base)
            for _ in range(rng.randrange(1, 16)):
                seg[rng.randrange(8, DESCR_OFF + 64)] = rng.getrandbits(8)
            label = f"{slabel}/random-header-bytes-{i}"
        elif kind == 2:
            seg = bytearray(base)
            for _ in range(rng.randrange(1, 4)):
                field = rng.choice(list(FIELDS))
                fmt = FIELDS[field][1]
                v = rng.choice(interesting(fmt) + [rng.getrandbits(32 if fmt == "<I" else 64)])
                mutate_field(seg, field, v)
            label = f"{slabel}/random-fields-{i}"
        elif kind == 3:
            seg = bytearray(base)
            n_chars = rng.randrange(0, 200)
            alphabet = "()[]{},:'\"<>|0123456789 .-_abcdefOTUSVMmiufcb"
            text = "".join(rng.choice(alphabet) for _ in range(n_chars))
            if rng.random() < 0.5:
                text = f"('v1', {text}, ())"
            set_descr(seg, text.encode())
            label = f"{slabel}/random-descr-{i}"
        elif kind == 4:
            seg = bytearray(base)
            relayout(seg,
                     capacity=rng.choice([1, 2, 4, 8, 1 << 10, 1 << 16, 1 << 20, 1 << 32, 3, 0]),
                     record_size=rng.choice([1, 2, 4, 8, 11, 16, 3, 0, 1 << 20, 1 << 30]),
                     mode=rng.choice([0, 1, 2]),
                     overflow=rng.choice([0, 1, 0, 2]),
                     max_consumers=rng.choice([1, 2, 64, 1024, 1025, 0]))
            flags |= 0x01
            label = f"{slabel}/random-layout-{i}"
        else:
            seg = bytearray(base)
            for _ in range(rng.randrange(1, 64)):
                seg[rng.randrange(len(seg))] = rng.getrandbits(8)
            put(seg, "magic", MAGIC)
            label = f"{slabel}/random-anywhere-{i}"
        out.append((label, bytes([flags]) + bytes(seg)))
    return out


# ---- structure-aware mutator for atheris --------------------------------------------


def mutate(data: bytes, max_size: int, seed: int, runtime: bool = False) -> bytes:
    rng = random.Random(seed)
    buf = bytearray(data or b"\x0d")
    flags, seg = buf[0], bytearray(buf[1:])
    op = rng.randrange(8 if runtime else 7)
    if len(seg) < DESCR_OFF + 8:
        seg.extend(b"\0" * (DESCR_OFF + 8 - len(seg)))
        put(seg, "magic", MAGIC)
    if op == 0:
        field = rng.choice(list(FIELDS))
        put(seg, field, rng.choice(interesting(FIELDS[field][1]) + [get(seg, field) + rng.choice((-1, 1))]))
    elif op == 1:
        relayout(seg, **{rng.choice(["capacity", "record_size", "mode", "max_consumers"]):
                         rng.choice([0, 1, 2, 3, 4, 8, 16, 64, 1024, 1025, 1 << 20, 1 << 30, 1 << 32])})
        flags |= 0x01
    elif op == 2:
        text, rs = rng.choice(DTYPE_DESCRS)
        set_descr(seg, text.encode())
        relayout(seg, record_size=rs)
        flags |= 0x01
    elif op == 3:
        set_descr(seg, rng.choice(CODE_DESCRS).replace("MARKER", "/nonexistent/shmring-fuzz-marker").encode())
    elif op == 4:
        set_descr(seg, rng.choice(RAW_DESCRS))
    elif op == 5:
        flags ^= 1 << rng.randrange(5)
    elif op == 6:
        import atheris

        out = atheris.Mutate(bytes(buf), max_size)
        return out[:max_size]
    else:  # runtime words and consumer slots (opt-in: corrupt run-time state)
        if rng.random() < 0.5:
            field = rng.choice(list(CONTROL))
            mutate_field(seg, field, rng.choice(interesting(CONTROL[field][1])))
        else:
            field = rng.choice([f"cslot.{n}" for n in CSLOT] + [f"release.{n}" for n in RELEASE])
            index = rng.randrange(4)
            off, fmt = _where(seg, field, index)
            if off + struct.calcsize(fmt) <= len(seg):
                mutate_field(seg, field, rng.choice(interesting(fmt) + [os.getpid()]), index)
    return (bytes([flags]) + bytes(seg))[:max_size]


# ---- command line ---------------------------------------------------------------------


def _replay(paths: list[str]) -> int:
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, f) for f in os.listdir(p))
        else:
            files.append(p)
    broken = 0
    for i, path in enumerate(files):
        with open(path, "rb") as f:
            data = f.read()
        print(f"B {i} {path}", flush=True)
        try:
            outcome = run_one(data)
        except ContractBroken as exc:
            broken += 1
            print(f"X {i} {str(exc).splitlines()[0]}", flush=True)
            print(str(exc), file=sys.stderr, flush=True)
            continue
        print(f"E {i} {outcome}", flush=True)
    return 1 if broken else 0


def _make_corpus(directory: str) -> int:
    os.makedirs(directory, exist_ok=True)
    for label, seg in make_seeds():
        for flags in (0x0D, 0x0F, 0x18):
            with open(os.path.join(directory, f"seed-{label}-{flags:02x}"), "wb") as f:
                f.write(bytes([flags]) + seg)
    print(f"wrote seeds to {directory}")
    return 0


def _field_counts() -> int:
    counts = field_counts(make_seeds())
    width = max(len(k) for k in counts)
    missing = [k for k in every_field() if counts[k] == 0]
    for k in every_field():
        print(f"{k:<{width}} {counts[k]:>7}{'   <-- never mutated' if counts[k] == 0 else ''}")
    print(f"{len(every_field()) - len(missing)}/{len(every_field())} layout fields mutated")
    return 1 if missing else 0


def main(argv: list[str]) -> int:
    if len(argv) > 1 and argv[1] == "--replay":
        return _replay(argv[2:])
    if len(argv) > 1 and argv[1] == "--field-counts":
        return _field_counts()
    if len(argv) > 1 and argv[1] == "--make-corpus":
        return _make_corpus(argv[2])
    import atheris

    import numpy.lib.format  # noqa: F401

    import shmring  # noqa: F401

    # shmring was imported for its layout before atheris was: instrument what is loaded
    atheris.instrument_all()
    runtime = os.environ.get("SHMRING_FUZZ_RUNTIME", "") not in ("", "0")

    def test_one_input(data: bytes) -> None:
        run_one(data)  # ContractBroken (or a signal) is the finding

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        return mutate(data, max_size, seed, runtime)

    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
