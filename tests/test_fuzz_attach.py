"""Attach/header validation over hostile segment bytes: a short deterministic fuzz run.

The inputs come from fuzz/fuzz_attach.py (the long-running atheris target shares them):
real rings' first 8 KiB (zero-padded to their size) with every header field set to edge
values, descriptors holding code or pointer dtypes, truncated files, and reproducible
random bytes. Each batch runs in a subprocess (``fuzz_attach.py --replay``), so a
SIGSEGV/SIGBUS or a hang shows up as a failing input here instead of killing pytest;
the batch then resumes after the input that crashed.

Contract: Ring.attach raises only RingError subclasses or OSError; after a successful
attach, stats/consumer/pop/pop_many/view raise only ring exceptions; nothing crashes;
a descriptor is never executed. Header fields are also checked against a Python
reference of the validation rules (which inputs must be refused, and with which error).

More inputs: SHMRING_FUZZ_CASES=20000 SHMRING_FUZZ_SEED=7 pytest tests/test_fuzz_attach.py
"""

from __future__ import annotations

import ast
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shmring import _ring

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "fuzz" / "fuzz_attach.py"

_spec = importlib.util.spec_from_file_location("shmring_fuzz_attach", FUZZ)
fz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fz)

RANDOM_CASES = int(os.environ.get("SHMRING_FUZZ_CASES", "20000"))
RANDOM_SEED = int(os.environ.get("SHMRING_FUZZ_SEED", "20261124"))
HANG_SECONDS = 20.0  # a batch making no progress for this long is a hang


@pytest.fixture(scope="module")
def seeds():
    return fz.make_seeds()


# ---- running a batch in subprocesses ---------------------------------------------------


def replay(cases, workdir: Path, popen):
    """Runs every case; returns (outcomes by index, problems). A problem is
    (label, kind, detail) with kind "crash", "hang" or "contract"."""
    workdir.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (_, data) in enumerate(cases):
        path = workdir / f"{i:06d}"
        path.write_bytes(data)
        files.append(str(path))
    outcomes: dict[int, str] = {}
    problems = []
    start = 0
    while start < len(files):
        proc = popen(
            [sys.executable, str(FUZZ), "--replay", *files[start:]],
            cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        hung = False
        try:
            out, err = proc.communicate(timeout=HANG_SECONDS + 0.01 * (len(files) - start))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            hung = True
        # a child that crashed or hung left its segment behind
        for leftover in (f"/dev/shm/shmr-fz{proc.pid}",):
            try:
                os.unlink(leftover)
            except FileNotFoundError:
                pass
        last_begun = None
        for line in out.splitlines():
            tag, _, rest = line.partition(" ")
            idx_s, _, info = rest.partition(" ")
            if tag not in ("B", "E", "X") or not idx_s.isdigit():
                continue
            idx = start + int(idx_s)
            if tag == "B":
                last_begun = idx
            elif tag == "E":
                outcomes[idx] = info
            else:
                outcomes[idx] = "broken"
                problems.append((cases[idx][0], "contract", info))
        unfinished = last_begun is not None and last_begun not in outcomes
        if hung or proc.returncode not in (0, 1):
            if not unfinished:
                problems.append(("<harness>", "crash", f"exit {proc.returncode}\n{err[-3000:]}"))
                break
            if hung:
                kind, detail = "hang", f"no progress for {HANG_SECONDS:.0f} s"
            else:
                rc = proc.returncode
                detail = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
                kind = "crash"
            problems.append((cases[last_begun][0], kind, f"{detail}\n{err[-1500:]}"))
            outcomes[last_begun] = kind
            start = last_begun + 1
            continue
        break
    return outcomes, problems


def describe(problems, limit=40) -> str:
    lines = [f"{len(problems)} input(s) broke the contract:"]
    for label, kind, detail in problems[:limit]:
        first = detail.strip().splitlines()[0] if detail.strip() else ""
        lines.append(f"  [{kind}] {label}: {first}")
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


# ---- a reference of the header rules ------------------------------------------------------


def file_size_for(data: bytes) -> int:
    """The size write_segment() gives the file for this input."""
    flags, seg = (data[0] if data else 0), data[1:]
    size = len(seg)
    if flags & 0x01 and len(seg) >= fz.DESCR_OFF:
        want = fz.get(seg, "segment_size")
        if size < want <= fz.EXTEND_MAX:
            size = want
    return size


def _pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def expected_attach(data: bytes) -> str:
    """What Ring.attach must do with this input, by the documented header rules:
    "attached" or "attach:<exception class>". The descriptor must be a literal
    ("v1", descr, shape) whose dtype has the header's record size."""
    seg = data[1:]
    size = file_size_for(data)
    if size == 0:
        return "attach:RingError"  # still being initialised
    if size < fz.PAGE:
        return "attach:CorruptRingError"  # truncated
    g = {f: fz.get(seg, f) for f in fz.FIELDS}
    if g["magic"] == 0:
        return "attach:RingError"
    if g["magic"] != fz.MAGIC:
        return "attach:NotARingError"
    if g["version"] != _ring.LAYOUT_VERSION:
        return "attach:LayoutVersionError"
    corrupt = "attach:CorruptRingError"
    cap, rs = g["capacity"], g["record_size"]
    if g["header_size"] != fz.PAGE:
        return corrupt
    if not _pow2(cap) or cap > 1 << 32 or not 1 <= rs <= 1 << 30:
        return corrupt
    if not _pow2(g["record_align"]) or g["record_align"] > fz.PAGE:
        return corrupt
    if g["mode"] > 1 or g["overflow"] > 1 or (g["mode"] == 0 and g["overflow"] != 0):
        return corrupt
    if not 1 <= g["max_consumers"] <= 1024 or not 1 <= g["descr_len"] < fz.DESCR_MAX:
        return corrupt
    if g["stride"] != rs or cap > (fz.U64 // 4) // rs:
        return corrupt
    kind = g["kind"]  # 0 records, 1 messages (whole 16-byte units, at least 16 of them)
    if kind > 1 or (kind == 1 and (rs != 16 or g["record_align"] != 16 or cap < 16)):
        return corrupt
    text = seg[fz.DESCR_OFF:fz.DESCR_OFF + g["descr_len"]]
    if any(b < 0x20 or b > 0x7E for b in text):
        return corrupt
    lay = fz.layout(cap, rs, g["mode"], g["max_consumers"], kind)
    if (g["consumers_offset"], g["releases_offset"], g["slots_offset"], g["segment_size"]) != lay:
        return corrupt
    if size < g["segment_size"]:
        return corrupt  # truncated
    if kind == 1:
        return "attached"  # a message ring has no dtype; its descriptor text is not read
    import numpy as np
    from numpy.lib.format import descr_to_dtype

    try:
        tag, descr, shape = ast.literal_eval(text.decode())
        assert tag == "v1"
        base = descr_to_dtype(descr)
        dt = np.dtype((base, tuple(shape))) if shape else base
    except Exception:
        return corrupt
    if dt.itemsize != rs or dt.hasobject:
        return corrupt
    if dt.subdtype is not None and len(dt.subdtype[1]) > 31:
        return corrupt  # a batch of such records would exceed the record-shape limit (shmring._api.MAX_RECORD_NDIM)
    return "attached"


def outcome_kind(outcome: str) -> str:
    return "attached" if outcome.startswith("attached") else outcome


# ---- the tests -------------------------------------------------------------------------------


def test_real_segments_attach_and_work(seeds, tmp_path, popen):
    """Sanity: the unmodified seeds attach, and consumers and producers work on them
    (so the mutations below start from segments that reach every code path)."""
    cases = []
    for label, seg in seeds:
        for flags in (0x0D, 0x0F, 0x18, 0x1F):
            cases.append((f"{label}/flags={flags:#x}", bytes([flags]) + seg))
    outcomes, problems = replay(cases, tmp_path / "cases", popen)
    assert not problems, describe(problems)
    for i, (label, _) in enumerate(cases):
        assert outcomes[i].startswith("attached:"), (label, outcomes[i])
        assert "consumer," in outcomes[i] + ",", (label, outcomes[i])


def test_header_field_mutations(seeds, tmp_path, popen):
    """Every header field at edge values (0, 1, non-powers of two, 2**32, 2**63, all
    ones, off by one, ...), with and without the layout fields recomputed to match;
    near-miss magics; files cut short or longer than the header says. No crash, and
    each input is refused or accepted exactly as the header rules say."""
    cases = [c for c in fz.targeted_cases(seeds, "/nonexistent/unused")
             if "/descr:" not in c[0] and "/descr-" not in c[0]]  # keeps descr_len
    outcomes, problems = replay(cases, tmp_path / "cases", popen)
    wrong = []
    for i, (label, data) in enumerate(cases):
        if i not in outcomes or outcomes[i] in ("crash", "hang", "broken"):
            continue
        want, got = expected_attach(data), outcome_kind(outcomes[i])
        if want != got:
            wrong.append((label, "verdict", f"expected {want}, got {outcomes[i]}"))
    assert not problems and not wrong, describe(problems + wrong)


def test_descriptor_text_is_never_executed(seeds, tmp_path, popen):
    """Descriptors holding Python code (calls, exec/eval, comprehensions, lambdas,
    f-strings, a statement after the literal) are refused as corrupt and never run."""
    marker = tmp_path / "MARKER"
    cases = [c for c in fz.targeted_cases(seeds, str(marker)) if "/descr-code:" in c[0]]
    assert len(cases) >= 6 * len(fz.CODE_DESCRS)
    outcomes, problems = replay(cases, tmp_path / "cases", popen)
    assert not problems, describe(problems)
    assert not marker.exists(), "a descriptor's code was executed"
    for i, (label, _) in enumerate(cases):
        assert outcomes[i] == "attach:CorruptRingError", (label, outcomes[i])


POINTER_DESCRS = ("'|O'", "'|O8'", "'T'", "'O'", "('b', '|O')", "('s', 'T')", "[('a', '|O')]")


def test_descriptors_holding_pointers_are_refused(seeds, tmp_path, popen):
    """A dtype whose items are pointers (object, numpy StringDType) cannot live in shared
    memory: Ring.create refuses it, so Ring.attach must refuse a segment claiming one
    (CorruptRingError) instead of handing out records whose pointers it then follows."""
    some = [s for s in seeds if s[0] in ("queue-u8-c4", "bcast-struct-c8", "bcast-sub-c2-ow")]
    cases = [c for c in fz.targeted_cases(some, "/nonexistent/unused")
             if "/descr:" in c[0] and any(p in c[0] for p in POINTER_DESCRS)]
    assert len(cases) >= 3 * 2 * 7
    outcomes, problems = replay(cases, tmp_path / "cases", popen)
    wrong = []
    for i, (label, data) in enumerate(cases):
        if outcomes.get(i, "").startswith("attached"):
            wrong.append((label, "verdict", f"attached a pointer dtype ({outcomes[i]})"))
    assert not problems and not wrong, describe(problems + wrong)


def test_malformed_and_odd_descriptors(seeds, tmp_path, popen):
    """Malformed literals (wrong tag or arity, deep nesting, huge numbers, bad shapes,
    non-printable bytes, wrong lengths) are refused with CorruptRingError; legal but
    odd numpy descriptors either attach and work or are refused -- never a crash or a
    stray exception from pop/pop_many/view."""
    cases = [c for c in fz.targeted_cases(seeds, "/nonexistent/unused")
             if (("/descr:" in c[0] or "/descr-raw:" in c[0] or "/descr-all" in c[0])
                 and not any(p in c[0] for p in POINTER_DESCRS))]
    outcomes, problems = replay(cases, tmp_path / "cases", popen)
    wrong = []
    for i, (label, data) in enumerate(cases):
        if i not in outcomes or outcomes[i] in ("crash", "hang", "broken"):
            continue
        want, got = expected_attach(data), outcome_kind(outcomes[i])
        if want != got:
            wrong.append((label, "verdict", f"expected {want}, got {outcomes[i]}"))
    assert not problems and not wrong, describe(problems + wrong)


def test_control_word_mutations(seeds, tmp_path, popen):
    """Every control word after the header (producer block, tail, eventcounts, control
    block), consumer slot field and release record field at edge values: the header is
    intact, so the ring attaches, and a consumer, the producer, pops, views, pushes and
    a reservation on the corrupt state raise only ring exceptions, never crash or hang."""
    cases = fz.control_cases(seeds)
    fields = {label.split("/")[1].split("[")[0] for label, _ in cases}
    assert fields >= set(fz.CONTROL) | {f"cslot.{n}" for n in fz.CSLOT} | {f"release.{n}" for n in fz.RELEASE}
    outcomes, problems = replay(cases, tmp_path / "cases", popen)
    wrong = [(label, "verdict", f"expected attached, got {outcomes[i]}")
             for i, (label, _) in enumerate(cases)
             if i in outcomes and not outcomes[i].startswith("attached")
             and outcomes[i] not in ("crash", "hang", "broken")]
    assert not problems and not wrong, describe(problems + wrong)
    assert len(outcomes) == len(cases)


def test_every_layout_field_is_mutated(seeds):
    """The deterministic cases set every header and control field of the layout the
    compiled core exports (so a field added to csrc/shmr_layout.h is fuzzed too)."""
    counts = fz.field_counts(seeds, random_n=600)
    missing = [f for f in fz.every_field() if counts[f] == 0]
    assert not missing, f"never mutated: {missing}"
    for name in ("header.capacity", "prod.writable_end", "prod.join_claim", "ctl.join_epoch",
                 "ctl.stream", "cslot.claim_state", "release.len"):
        assert counts[name] > 0, name


def test_layout_offsets_are_the_cores(seeds):
    """The exported layout reads the same bytes a real ring holds (seeds were made by
    the core): magic, version, capacity and the offsets the core computed."""
    by_label = dict(seeds)
    seg = by_label["queue-u8-c4"]
    assert fz.get(seg, "magic") == fz.MAGIC and fz.get(seg, "version") == _ring.LAYOUT_VERSION
    assert fz.get(seg, "capacity") == 4 and fz.get(seg, "record_size") == 8
    lay = fz.layout(4, 8, 0, 1)
    assert (fz.get(seg, "consumers_offset"), fz.get(seg, "releases_offset"),
            fz.get(seg, "slots_offset"), fz.get(seg, "segment_size")) == lay
    assert fz.get(seg, "prod.head") == 3  # the seed pushed three records, nobody popped
    bc = by_label["bcast-struct-c8"]
    assert fz.get(bc, "releases_offset") == 0 and fz.get(bc, "prod.head") >= 8
    assert fz.get(bc, "cslot.ready", 0) == 1 and fz.get(bc, "cslot.owner", 0) & 0xFFFFFFFF == os.getpid()


def test_random_inputs(seeds, tmp_path, popen):
    """Reproducible random inputs: raw bytes (with and without a valid magic), seeds
    with random header bytes, random field values, random descriptor text, random
    self-consistent layouts (file grown to fit) and random bytes anywhere."""
    cases = fz.random_cases(seeds, RANDOM_CASES, RANDOM_SEED)
    outcomes, problems = replay(cases, tmp_path / "cases", popen)
    assert not problems, describe(problems)
    assert len(outcomes) == len(cases)
