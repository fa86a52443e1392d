"""What a newcomer meets: lossless conversion of pushed values, stale names and
restarts, broadcast start-up, cheap queue length, the non-raising calls and
the errors that must say what happened."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import re
import signal
import threading
import time

import numpy as np
import pytest

import shmring
from _polling import poll_until_closed
from shmring import _api
from shmring.__main__ import main as cli_main
from shmring.errors import CLOSE_REASONS

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
REC = np.dtype([("seq", "<i8"), ("small", "i1"), ("u", "<u2"), ("px", "<f4"), ("ok", "?"), ("tag", "S8"),
                ("z", "<c16")])
FORK = multiprocessing.get_context("fork")


def seg_path(name: str) -> str:
    return f"/dev/shm/shmr-{name}"


def drained(cons, n, timeout=5):
    out = []
    while len(out) < n:
        out.extend(cons.pop_many(n - len(out), timeout=timeout).tolist())
    return out


# ---- lossless conversion of pushed values --------------------------------------------------------

LOSSY = [
    # (record, exception, field named in the message)
    ((1.9, 0, 0, 0.0, False, b"", 0j), TypeError, "seq"),         # float into an int field
    ((2.0, 0, 0, 0.0, False, b"", 0j), TypeError, "seq"),         # same_kind: even an integral float
    ((1, 128, 0, 0.0, False, b"", 0j), ValueError, "small"),       # int8 range
    ((1, -129, 0, 0.0, False, b"", 0j), ValueError, "small"),
    ((1, 0, -1, 0.0, False, b"", 0j), ValueError, "u"),            # unsigned range
    ((1, 0, 65536, 0.0, False, b"", 0j), ValueError, "u"),
    ((2 ** 70, 0, 0, 0.0, False, b"", 0j), ValueError, "seq"),
    ((1, 0, 0, 1e300, False, b"", 0j), ValueError, "px"),          # float32 overflow
    ((1, 0, 0, 1j, False, b"", 0j), TypeError, "px"),              # complex into a float
    ((1, 0, 0, 0.0, 1, b"", 0j), TypeError, "ok"),                 # int into a bool
    ((1, 0, 0, 0.0, False, b"longer-than-eight", 0j), ValueError, "tag"),
    ((1, 0, 0, 0.0, False, "text", 0j), TypeError, "tag"),         # str into bytes
    (("7", 0, 0, 0.0, False, b"", 0j), TypeError, "seq"),          # strings are not parsed
]


@pytest.mark.parametrize("record,exc,field", LOSSY, ids=[f"{i}-{f}" for i, (_, _, f) in enumerate(LOSSY)])
@pytest.mark.parametrize("method", ["push", "push_many"])
def test_lossy_values_are_rejected_naming_the_field(record, exc, field, method, ring_name, rings):
    ring = rings.create(ring_name, REC, 8)
    prod, cons = ring.producer(), ring.consumer()
    # push_many: a good first record must not be half-pushed either
    arg = record if method == "push" else [(0, 0, 0, 0.0, False, b"", 0j), record]
    with pytest.raises(exc, match=f"'{field}'"):
        getattr(prod, method)(arg, timeout=0)
    assert ring.stats()["pushed"] == 0
    assert cons.try_pop() is None


@pytest.mark.parametrize("dtype,method,value,exc", [
    ("S8", "push", b"longer-than-eight", ValueError),
    ("S8", "push_many", [b"ok", b"longer-than-eight"], ValueError),
    ("<i8", "push_many", [1.5, 2.7], TypeError),
    ("<i8", "push_many", ["7", "8"], TypeError),
    ("<i8", "push_many", [1, 2 ** 64], ValueError),
    ("i1", "push", 300, ValueError),
    ("i1", "push_many", [1, 300], ValueError),
    ("<u4", "push", -1, ValueError),
    ("<f4", "push", 1e300, ValueError),
    ("<f4", "push_many", [1.0, 1e300], ValueError),
    ("?", "push", 1, TypeError),
])
def test_lossy_plain_values_are_rejected(dtype, method, value, exc, ring_name, rings):
    ring = rings.create(ring_name, dtype, 8)
    prod, cons = ring.producer(), ring.consumer()
    with pytest.raises(exc):
        getattr(prod, method)(value, timeout=0)
    assert ring.stats()["pushed"] == 0
    assert cons.try_pop() is None


def test_lossless_values_arrive_exactly(ring_name, rings):
    ring = rings.create(ring_name, REC, 16)
    prod, cons = ring.producer(), ring.consumer()
    want = [
        (1, 127, 65535, 0.5, True, b"12345678", 1 + 2j),
        (np.int32(-5), np.int8(-128), np.uint16(7), 3, np.bool_(False), np.bytes_(b"ab"), 2.5),  # widening
        (2 ** 63 - 1, -1, 0, np.float32(1.25), True, b"", np.complex64(1j)),
        (True, False, True, 1e38, False, b"abc", 7),
    ]
    for rec in want:
        prod.push(rec)
    prod.push_many(want)
    expected = [(int(a), int(b), int(c), float(np.float32(d)), bool(e), bytes(f).rstrip(b"\0"), complex(g))
                for a, b, c, d, e, f, g in want]
    got = [tuple(r) for r in drained(cons, 2 * len(want))]
    assert got == expected + expected


def test_tuple_push_stores_the_same_bytes_as_a_void_push(ring_name, rings):
    ring = rings.create(ring_name, REC, 8)
    prod, cons = ring.producer(), ring.consumer()
    rec = (42, -3, 999, 1.5, True, b"tick", 3 - 4j)
    prod.push(np.array(rec, dtype=REC)[()])
    prod.push(rec)
    a, b = cons.pop_many(2, timeout=1)
    assert a.tobytes() == b.tobytes() == np.array(rec, dtype=REC).tobytes()


def test_nested_and_subarray_fields_are_checked(ring_name, rings):
    dt = np.dtype([("id", "<u4"), ("pos", [("x", "<f8"), ("y", "<i2")]), ("px", "<i4", (3,))])
    ring = rings.create(ring_name, dt, 8)
    prod, cons = ring.producer(), ring.consumer()
    prod.push((1, (0.5, 7), [1, 2, 3]))
    with pytest.raises(ValueError, match="pos.y"):
        prod.push((1, (0.5, 70000), [1, 2, 3]))
    with pytest.raises(TypeError, match="'px'"):
        prod.push_many([(1, (0.5, 7), [1, 2.5, 3])])
    got = cons.pop(timeout=1)
    assert (int(got["id"]), float(got["pos"]["x"]), int(got["pos"]["y"]), got["px"].tolist()) == (1, 0.5, 7,
                                                                                                   [1, 2, 3])
    assert cons.try_pop() is None


# ---- stale names and restarts ----------------------------------------------------------------------

def _leave_a_ring_behind(name, n):
    """A run that crashes: creates, pushes n records, dies without closing anything."""
    ring = shmring.Ring.create(name, np.int64, 8)
    prod = ring.producer()
    prod.push_many(np.arange(n, dtype=np.int64))
    os._exit(0)


def _hold_a_ring(name, ready, stop):
    ring = shmring.Ring.attach(name)
    cons = ring.consumer()
    ready.set()
    stop.wait(30)
    cons.close()


def test_file_exists_after_a_crash_says_who_is_dead_and_what_to_do(ring_name, rings, procs):
    p = procs(FORK, _leave_a_ring_behind, ring_name, 3)
    p.join(30)
    assert p.exitcode == 0
    with pytest.raises(FileExistsError) as info:
        shmring.Ring.create(ring_name, np.int64, 8)
    msg = str(info.value)
    assert f"creator pid {p.pid} dead" in msg and f"producer pid {p.pid} dead" in msg, msg
    assert "exist_ok=True" in msg and "replace=True" in msg and f"shmring rm {ring_name}" in msg, msg
    # exist_ok re-attaches and delivers the dead run's leftovers, then the stream goes on
    ring = rings.create(ring_name, np.int64, 8, exist_ok=True)
    cons = ring.consumer(start="oldest")
    prod = ring.producer()
    prod.push(3)
    assert [int(v) for v in drained(cons, 4)] == [0, 1, 2, 3]


def test_replace_creates_afresh_once_everyone_is_dead(ring_name, rings, procs):
    p = procs(FORK, _leave_a_ring_behind, ring_name, 5)
    p.join(30)
    old_ino = os.stat(seg_path(ring_name)).st_ino
    ring = rings.create(ring_name, np.int32, 4, replace=True)
    assert ring.dtype == np.int32 and ring.stats()["pushed"] == 0
    assert os.stat(seg_path(ring_name)).st_ino != old_ino
    prod, cons = ring.producer(), ring.consumer()
    prod.push(7)
    assert int(cons.pop(timeout=1)) == 7


def test_replace_is_refused_while_a_participant_lives(ring_name, rings, procs):
    rings.create(ring_name, np.int64, 8)
    ready, stop = FORK.Event(), FORK.Event()
    p = procs(FORK, _hold_a_ring, ring_name, ready, stop)
    assert ready.wait(30)
    ino = os.stat(seg_path(ring_name)).st_ino
    with pytest.raises(FileExistsError, match=r"replace=True refused.*1 live"):
        shmring.Ring.create(ring_name, np.int64, 8, replace=True)
    with pytest.raises(FileExistsError, match="in use"):
        shmring.Ring.create(ring_name, np.int64, 8)
    assert os.stat(seg_path(ring_name)).st_ino == ino
    stop.set()
    p.join(30)


def test_unlink_on_close_lets_a_script_run_twice(ring_name):
    for _ in range(2):
        with shmring.Ring.create(ring_name, np.int64, 8, unlink_on_close=True) as ring:
            with ring.producer() as prod, ring.consumer() as cons:
                prod.push(1)
                assert int(cons.pop(timeout=1)) == 1
            assert os.path.exists(seg_path(ring_name))
        assert not os.path.exists(seg_path(ring_name))


def test_create_with_no_name_generates_a_unique_one(rings):
    a = rings.create(None, np.int64, 8, unlink_on_close=True)
    b = rings.create(None, np.int64, 8, unlink_on_close=True)
    assert a.name != b.name and len(a.name) >= 32
    other = rings.attach(a.name)
    with a.producer() as prod, other.consumer() as cons:
        prod.push(5)
        assert int(cons.pop(timeout=1)) == 5
    with pytest.raises(ValueError):
        shmring.Ring.create(None, np.int64, 8, exist_ok=True)


def _die_while_creating(name):
    """A creator killed during create: the file exists, its header is unfinished
    (magic 0), its creator recorded."""
    fd = os.open(seg_path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, 4096)
    off, size = shmring._ring.LAYOUT["header.creator_pid"]
    os.pwrite(fd, os.getpid().to_bytes(size, "little"), off)
    os.kill(os.getpid(), signal.SIGKILL)


def test_gc_removes_a_never_initialised_segment_once_its_creator_is_dead(ring_name, procs, monkeypatch,
                                                                          capsys):
    p = procs(FORK, _die_while_creating, ring_name)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL and os.path.exists(seg_path(ring_name))
    st = _api.segment_state(ring_name)
    assert st["state"] == "initialising" and st["creator_pid"] == p.pid and not st["creator_alive"]
    assert not st["all_dead"]  # within the grace period: left alone
    with pytest.raises(FileExistsError, match="never finished initialising"):
        shmring.Ring.create(ring_name, np.int64, 8)
    monkeypatch.setattr(_api, "INIT_GRACE_SECONDS", 0.0)
    assert cli_main(["gc", "--json"]) == 0
    assert ring_name in json.loads(capsys.readouterr().out)["removed"]
    assert not os.path.exists(seg_path(ring_name))


def test_gc_keeps_an_unfinished_segment_whose_creator_lives(ring_name, monkeypatch):
    fd = os.open(seg_path(ring_name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, 4096)
        off, size = shmring._ring.LAYOUT["header.creator_pid"]
        os.pwrite(fd, os.getpid().to_bytes(size, "little"), off)
    finally:
        os.close(fd)
    monkeypatch.setattr(_api, "INIT_GRACE_SECONDS", 0.0)
    assert not _api.segment_state(ring_name)["all_dead"]
    cli_main(["gc"])
    assert os.path.exists(seg_path(ring_name))
    # ... and replace=True takes over only from a dead creator
    with pytest.raises(FileExistsError, match="refused"):
        shmring.Ring.create(ring_name, np.int64, 8, replace=True)


def _save_sidecar(name: str) -> None:
    """A receiving bridge's sidecar for ring `name`, saved by the calling process."""
    from shmring.bridge import _Sidecar
    side = _Sidecar(name, fresh=True)
    side.save()
    side.close()


def test_gc_removes_the_sidecar_of_a_dead_bridge_whose_ring_is_gone(ring_name, procs, capsys):
    from shmring.bridge import read_sidecar, remove_sidecar, sidecar_path
    gone, with_ring, live = ring_name + "-g", ring_name + "-r", ring_name + "-l"
    ring = shmring.Ring.create(with_ring, np.int64, 8)
    try:
        pids = []
        for n in (gone, with_ring):  # bridges that saved their sidecar and died
            p = procs(FORK, _save_sidecar, n)
            p.join(30)
            assert p.exitcode == 0
            pids.append(p.pid)
        assert read_sidecar(gone)["pid"] == pids[0]
        _save_sidecar(live)  # a bridge that still runs (this process) after its ring went
        assert cli_main(["gc", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert "shmrb-" + gone in out["sidecars"]
        assert "shmrb-" + with_ring not in out["sidecars"] and "shmrb-" + live not in out["sidecars"]
        assert not os.path.exists(sidecar_path(gone))
        assert os.path.exists(sidecar_path(with_ring)) and os.path.exists(sidecar_path(live))
        assert with_ring not in out["removed"]  # its creator (this process) lives
    finally:
        ring.close()
        shmring.unlink(with_ring)
        for n in (gone, with_ring, live):
            remove_sidecar(n)


def test_gc_names_a_segment_it_cannot_read_and_leaves_it(ring_name, ring_names, capsys):
    with open(seg_path(ring_name), "wb") as f:
        f.write(b"\x01" * 8192)  # not a ring or board of this layout
    # live segments of every kind are readable: never named
    live = [shmring.Ring.create(ring_names(), np.int64, 8), shmring.Ring.create(ring_names(), nbytes=1 << 12),
            shmring.Board.create(ring_names(), np.int64, 2), shmring.Queue(name=ring_names(), nbytes=1 << 12)]
    try:
        assert cli_main(["gc"]) == 0
        out = capsys.readouterr().out
        assert f"\n  {ring_name}: " in out and "`shmring rm NAME` removes one" in out
        assert os.path.exists(seg_path(ring_name))
        assert cli_main(["gc", "--json"]) == 0
        res = json.loads(capsys.readouterr().out)
        assert ring_name in res["unreadable"] and ring_name not in res["removed"]
        assert not {x.name for x in live} & (set(res["unreadable"]) | set(res["removed"]))
    finally:
        for x in live:
            x.close()
    assert cli_main(["rm", ring_name]) == 0
    assert not os.path.exists(seg_path(ring_name))


def _init_file(pid: int, name: str) -> str:
    start = shmring._ring.start_time_of(pid) & 0xFFFFFFFF
    return f"/dev/shm/{_api.INIT_PREFIX}{pid}-{start}-{name}"


def _die_while_building(name, conn):
    """A creator killed while its segment is still under its private name."""
    path = _init_file(os.getpid(), name)
    conn.send(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, 4096)
    os.kill(os.getpid(), signal.SIGKILL)


def test_gc_removes_a_private_build_file_of_a_dead_creator(ring_name, procs, monkeypatch, capsys):
    parent_end, child_end = FORK.Pipe()
    p = procs(FORK, _die_while_building, ring_name, child_end)
    assert parent_end.poll(30)
    path = parent_end.recv()
    p.join(30)
    mine = _init_file(os.getpid(), ring_name + "-live")
    try:
        assert p.exitcode == -signal.SIGKILL and os.path.exists(path)
        open(mine, "wb").close()  # a creator that is alive: this process
        segs = {s["file"]: s for s in _api.unfinished_segments()}
        dead, live = segs[os.path.basename(path)], segs[os.path.basename(mine)]
        # the file names its creator: once that process is known dead, nothing can finish it
        assert (dead["creator_pid"], dead["creator_alive"], dead["all_dead"]) == (p.pid, False, True)
        assert live["creator_alive"] and not live["all_dead"]
        monkeypatch.setattr(_api, "INIT_GRACE_SECONDS", 0.0)
        assert cli_main(["gc", "--json"]) == 0
        removed = json.loads(capsys.readouterr().out)["removed"]
        assert os.path.basename(path) in removed and os.path.basename(mine) not in removed
        assert not os.path.exists(path) and os.path.exists(mine)
    finally:
        for f in (path, mine):
            if os.path.exists(f):
                os.unlink(f)


# ---- broadcast start-up ---------------------------------------------------------------------------

def _late_consumer(name, delay, n, q):
    time.sleep(delay)
    ring = shmring.Ring.attach(name)
    with ring.consumer() as cons:
        got = [int(v) for v in cons]
    q.put(got)


def test_wait_for_consumers_then_no_record_is_missed(ring_name, rings, procs, mp_ctx):
    ring = rings.create(ring_name, np.int64, 64, mode="broadcast")
    prod = ring.producer()
    q = mp_ctx.Queue()
    for delay in (0.1, 0.3):
        procs(mp_ctx, _late_consumer, ring_name, delay, 1000, q)
    assert prod.wait_for_consumers(2, timeout=30) == 2
    for i in range(1000):
        prod.push(i, timeout=10)
    prod.close()
    assert [q.get(timeout=30) for _ in range(2)] == [list(range(1000))] * 2


@pytest.mark.parametrize("mode,overflow", [("queue", "block"), ("broadcast", "block"),
                                           ("broadcast", "overwrite")])
def test_wait_for_consumers_sleeps_and_a_join_wakes_it(mode, overflow, ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8, mode=mode, overflow=overflow)
    # slices of 10 s: only the join's futex wake can end the wait early
    prod = ring.producer(liveness_interval=10)
    t_cpu, t0 = time.thread_time(), time.monotonic()
    with pytest.raises(TimeoutError, match="0 of 1"):
        prod.wait_for_consumers(1, timeout=0.3)
    assert time.thread_time() - t_cpu < 0.1, "waiting burnt CPU"
    assert time.monotonic() - t0 >= 0.29
    holder = []
    t = threading.Timer(0.2, lambda: holder.append(ring.consumer()))
    t0 = time.monotonic()
    t.start()
    try:
        assert prod.wait_for_consumers(1, timeout=20) == 1
        assert time.monotonic() - t0 < 5
    finally:
        t.join(10)
    assert prod.wait_for_consumers(0) >= 1


def test_wait_for_consumers_does_not_count_dead_ones(ring_name, rings, procs):
    ring = rings.create(ring_name, np.int64, 8, mode="broadcast")
    p = procs(FORK, _join_and_die, ring_name)
    p.join(30)
    assert ring.stats()["n_consumers"] == 1  # the dead one still holds its slot
    prod = ring.producer()
    with pytest.raises(TimeoutError):
        prod.wait_for_consumers(1, timeout=0.2)


def _join_and_die(name):
    ring = shmring.Ring.attach(name)
    cons = ring.consumer()  # held: a collected consumer would leave its slot
    os._exit(0 if cons is not None else 1)


@pytest.mark.parametrize("bad,exc", [(1.5, TypeError), ("3", TypeError), (True, TypeError), (-1, ValueError),
                                     (65, ValueError)])
def test_wait_for_consumers_rejects_bad_counts(bad, exc, ring_name, rings):
    prod = rings.create(ring_name, np.int64, 8, mode="broadcast").producer()
    with pytest.raises(exc):
        prod.wait_for_consumers(bad, timeout=0)


# ---- cheap queue length ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode,overflow", [("queue", "block"), ("broadcast", "block"),
                                           ("broadcast", "overwrite")])
def test_len_and_free_count_exactly(mode, overflow, ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8, mode=mode, overflow=overflow)
    prod = ring.producer()
    a, b = ring.consumer(), ring.consumer()
    assert (len(a), len(b), prod.free()) == (0, 0, 8)
    assert a and b  # empty, yet a consumer handle is truthy
    prod.push_many(np.arange(5, dtype=np.int64))
    room = 8 if overflow == "overwrite" else 3
    assert (len(a), len(b), prod.free()) == (5, 5, room)
    a.pop_many(2, timeout=1)
    if mode == "queue":  # shared: what one takes, the other no longer sees
        assert (len(a), len(b), prod.free()) == (3, 3, 5)
    else:  # own cursors: the slower consumer holds the producer back
        assert (len(a), len(b), prod.free()) == (3, 5, room)
    if overflow == "overwrite":
        prod.push_many(np.arange(20, dtype=np.int64))
        assert (len(a), len(b), prod.free()) == (8, 8, 8)  # lapped: the whole ring is readable


# ---- non-raising and allocation-free calls -----------------------------------------------------

def test_try_pop(ring_name, rings):
    ring = rings.create(ring_name, REC, 8)
    prod, cons = ring.producer(), ring.consumer()
    assert cons.try_pop() is None
    prod.push((1, 2, 3, 4.0, True, b"x", 0j))
    rec = cons.try_pop()
    assert rec is not None and int(rec["seq"]) == 1
    assert cons.try_pop() is None
    prod.push((2, 2, 3, 4.0, True, b"x", 0j))
    prod.close()
    assert int(cons.try_pop()["seq"]) == 2
    with pytest.raises(shmring.Closed):
        cons.try_pop()


def _push_records_then_die(ring, n):
    prod = ring.producer()
    prod.push_many(np.arange(n, dtype=np.int64))
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("mode", ["queue", "broadcast"])
def test_polling_with_try_pop_ends_when_the_producer_dies(ring_name, rings, procs, mode):
    """try_pop() never raises Empty, so the liveness check must still run between polls
    that find nothing: a loop polling a ring whose producer was killed ends with Closed."""
    ring = rings.create(ring_name, np.int64, 8, mode=mode)
    cons = ring.consumer(liveness_interval=0.02)
    p = procs(FORK, _push_records_then_die, ring, 5)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    got, closed = poll_until_closed(cons, int)
    assert closed.reason == "producer died"
    assert got == [0, 1, 2, 3, 4]


def test_try_pop_of_subarray_records(ring_name, rings):
    dt = np.dtype((np.uint8, (2, 3)))
    ring = rings.create(ring_name, dt, 4)
    prod, cons = ring.producer(), ring.consumer()
    assert cons.try_pop() is None
    prod.push(np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert cons.try_pop().tolist() == [[0, 1, 2], [3, 4, 5]]


def test_pop_many_into_a_callers_array(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 16)
    prod, cons = ring.producer(), ring.consumer()
    out = np.full(8, -1, dtype=np.int64)
    prod.push_many(np.arange(5, dtype=np.int64))
    assert cons.pop_many(out=out, timeout=1) == 5
    assert out.tolist() == [0, 1, 2, 3, 4, -1, -1, -1]
    prod.push_many(np.arange(5, 10, dtype=np.int64))
    assert cons.pop_many(3, out=out, timeout=1) == 3
    assert out[:3].tolist() == [5, 6, 7]
    assert cons.pop_many(out=out, timeout=0) == 2 and out[:2].tolist() == [8, 9]
    with pytest.raises(shmring.Empty):
        cons.pop_many(out=out, timeout=0)
    for bad, exc in [(np.zeros(4, np.int32), TypeError), (np.zeros((4, 2), np.int64), ValueError),
                     (np.zeros(8, np.int64)[::2], ValueError), ([0, 0], TypeError),
                     (np.zeros(0, np.int64), ValueError)]:
        with pytest.raises(exc):
            cons.pop_many(out=bad, timeout=0)
    ro = np.zeros(4, np.int64)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        cons.pop_many(out=ro, timeout=0)


def test_pop_with_zero_timeout_on_an_empty_ring(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8)
    prod, cons = ring.producer(), ring.consumer()
    for _ in range(3):
        with pytest.raises(shmring.Empty, match="no record"):
            cons.pop(timeout=0)
    prod.push(3)
    assert int(cons.pop(timeout=0.0)) == 3
    prod.close()
    with pytest.raises(shmring.Closed):
        cons.pop(timeout=0)


# ---- errors that mislead ------------------------------------------------------------------------

def test_handles_refuse_pickling_with_advice(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8)
    for handle in (ring.producer(), ring.consumer()):
        with pytest.raises(TypeError, match="pass the Ring and open the handle in the worker"):
            pickle.dumps(handle)
    assert pickle.loads(pickle.dumps(ring)).name == ring_name


def test_second_producer_in_the_same_process_says_so(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8)
    prod = ring.producer()
    with pytest.raises(shmring.ProducerBusyError, match="this process already holds"):
        rings.attach(ring_name).producer()
    prod.close()
    rings.attach(ring_name).producer().push(1)


def test_every_close_reason_is_listed_in_the_readme_and_happens(ring_name, rings, procs):
    text = open(README).read()
    for reason in CLOSE_REASONS:
        assert f'"{reason}"' in text, reason
    ring = rings.create(ring_name, np.int64, 8)
    seen = set()
    cons = ring.consumer()
    cons.close()
    with pytest.raises(shmring.Closed) as e:
        cons.pop(timeout=0)
    seen.add(e.value.reason)
    cons = ring.consumer()
    ring.producer().close()
    with pytest.raises(shmring.Closed) as e:
        cons.pop(timeout=1)
    seen.add(e.value.reason)
    p = procs(FORK, _produce_and_die, ring_name)
    p.join(30)
    assert p.exitcode == 0
    with pytest.raises(shmring.Closed) as e:
        cons.pop(timeout=5)
    seen.add(e.value.reason)
    assert seen == set(CLOSE_REASONS)


def _produce_and_die(name):
    ring = shmring.Ring.attach(name)
    prod = ring.producer()  # held: a collected producer would close the stream
    os._exit(0 if prod is not None else 1)


def test_a_ring_larger_than_the_tmpfs_reports_what_failed(ring_name):
    st = os.statvfs("/dev/shm")
    total = st.f_blocks * st.f_frsize
    itemsize = 1 << 20
    capacity = 1 << max(1, (2 * total // itemsize).bit_length())
    with pytest.raises(OSError) as info:
        shmring.Ring.create(ring_name, np.dtype((np.uint8, itemsize)), capacity)
    msg = str(info.value)
    assert "reserving" in msg and "tmpfs" in msg and "bytes free" in msg, msg
    assert not os.path.exists(seg_path(ring_name))


def test_queue_rings_reject_on_lag_raise(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8)
    with pytest.raises(ValueError, match="never drops"):
        ring.consumer(on_lag="raise")


def test_empty_has_a_message():
    assert str(shmring.Empty())


# ---- argument validation ------------------------------------------------------------------------

BAD_TIMEOUTS = [("0.01", TypeError), ("1", TypeError), (True, TypeError), (False, TypeError),
                (10 ** 400, ValueError), (-1, ValueError), (-0.5, ValueError), (float("nan"), ValueError),
                (float("inf"), ValueError), ([1], TypeError)]


@pytest.mark.parametrize("bad,exc", BAD_TIMEOUTS, ids=[repr(b)[:12] for b, _ in BAD_TIMEOUTS])
def test_bad_timeouts_are_rejected_before_anything_happens(bad, exc, ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8)
    prod, cons = ring.producer(), ring.consumer()
    prod.push(1)
    for call in (lambda: prod.push(2, timeout=bad), lambda: prod.push_many(np.arange(2), timeout=bad),
                 lambda: prod.reserve(1, timeout=bad), lambda: cons.pop(timeout=bad),
                 lambda: cons.pop_many(4, timeout=bad), lambda: cons.view(4, timeout=bad),
                 lambda: prod.wait_for_consumers(1, timeout=bad)):
        with pytest.raises(exc, match="timeout"):
            call()
    # nothing was pushed or taken by the rejected calls
    assert ring.stats()["pushed"] == 1
    assert [int(v) for v in cons.pop_many(8, timeout=1)] == [1]


def test_good_timeouts_of_every_numeric_type(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8)
    prod, cons = ring.producer(), ring.consumer()
    for t in (0, 0.0, 1, 2.5, np.float32(0.5), np.int64(1), 10 ** 12):
        prod.push(1, timeout=t)
        assert int(cons.pop(timeout=t)) == 1


@pytest.mark.parametrize("kwargs,exc", [
    ({"spin": float("nan")}, ValueError), ({"spin": float("inf")}, ValueError), ({"spin": -1}, ValueError),
    ({"spin": "0.1"}, TypeError), ({"spin": True}, TypeError),
    ({"liveness_interval": True}, TypeError), ({"liveness_interval": 0}, ValueError),
    ({"liveness_interval": float("nan")}, ValueError),
])
def test_bad_spin_and_liveness_interval(kwargs, exc, ring_name, rings):
    ring = rings.create(ring_name, np.int64, 8)
    with pytest.raises(exc, match=list(kwargs)[0]):
        ring.producer(**kwargs)
    with pytest.raises(exc, match=list(kwargs)[0]):
        ring.consumer(**kwargs)


@pytest.mark.parametrize("bad,exc", [(1.5, TypeError), ("3", TypeError), (True, TypeError), (0, ValueError),
                                     (10 ** 6, ValueError)])
def test_bad_max_consumers(bad, exc, ring_name, rings):
    with pytest.raises(exc, match="max_consumers"):
        rings.create(ring_name, np.int64, 8, max_consumers=bad)
    assert not os.path.exists(seg_path(ring_name))
    assert rings.create(ring_name, np.int64, 8, max_consumers=np.int32(3)).stats()["max_consumers"] == 3
