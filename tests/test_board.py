"""shmring.Board: latest value per key across processes.

Real shared memory, real processes (fork and spawn), real futex waits and
SIGKILL. Values are made of uint64 words that all hold one tag per write, so a
torn value (a mix of two writes) shows as words that disagree.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import random
import resource
import signal
import sys
import time

import numpy as np
import pytest

import _board_workers as W
import shmring
from _procs import run

SOAK = os.environ.get("SHMRING_SOAK") == "1"
FORK = multiprocessing.get_context("fork")
SPAWN = multiprocessing.get_context("spawn")
SMALL = 64
FRAME = 6 * 1000 * 1000  # a 6 MB camera frame


@pytest.fixture
def boards(ring_names):
    """create(...) / attach(...) with unique names; all closed (and unlinked) at teardown."""
    made = []

    class Factory:
        def create(self, dtype, keys, **kw):
            b = shmring.Board.create(ring_names(), dtype, keys, **kw)
            made.append(b)
            return b

        def attach(self, name, **kw):
            b = shmring.Board.attach(name, **kw)
            made.append(b)
            return b

    yield Factory()
    for b in made:
        b.close()


def get(q, timeout=120):
    return q.get(timeout=timeout)


def join_all(ps, timeout=120):
    for p in ps:
        p.join(timeout)
        assert p.exitcode == 0, f"child {p.pid} exited with {p.exitcode}"


# ---- basics ---------------------------------------------------------------


def test_int_keys_read_write_versions(boards):
    b = boards.create("f8", 3)
    assert b.keys == [0, 1, 2] and len(b) == 3 and list(b) == [0, 1, 2]
    assert 2 in b and 3 not in b and "x" not in b
    with pytest.raises(KeyError, match="never been written"):
        b[0]
    assert b.version(0) == 0
    assert b.write(0, 1.5) == 1
    b[0] = 2.5
    b[np.int64(2)] = -1.0
    assert b[0] == 2.5 and b.read(0, with_version=True) == (2.5, 2)
    assert b.read(2, with_version=True) == (-1.0, 1)
    assert b.versions().tolist() == [2, 0, 1]
    values, versions = b.snapshot()
    assert values.tolist() == [2.5, 0.0, -1.0] and versions.tolist() == [2, 0, 1]


def test_str_keys_structured_values(boards):
    dt = np.dtype([("price", "<f8"), ("qty", "<i8"), ("sym", "S8")])
    b = boards.create(dt, ["AAPL", "MSFT", "héllo"])
    assert b.keys == ["AAPL", "MSFT", "héllo"]
    b["AAPL"] = (101.5, 7, b"AAPL")
    b["héllo"] = np.array((1.0, 2, b"x"), dtype=dt)
    rec = b["AAPL"]
    assert isinstance(rec, np.void) and rec["price"] == 101.5 and rec["qty"] == 7 and rec["sym"] == b"AAPL"
    other = boards.attach(b.name)
    assert other.keys == b.keys and other.dtype == dt
    assert other.read("héllo", with_version=True)[1] == 1
    values, versions = other.snapshot()
    assert versions.tolist() == [1, 0, 1] and values["qty"].tolist() == [7, 0, 2]


def test_read_into_out_and_subarray_values(boards):
    b = boards.create(("<u4", (3, 4)), 2)
    src = np.arange(12, dtype="<u4").reshape(3, 4)
    b[1] = src
    got = b[1]
    assert got.shape == (3, 4) and (got == src).all()
    got[0, 0] = 99  # a copy: the board keeps its value
    assert b[1][0, 0] == 0
    out = np.empty((3, 4), "<u4")
    assert b.read(1, out=out) is out and (out == src).all()
    with pytest.raises(ValueError, match="out must be"):
        b.read(1, out=np.empty((4, 3), "<u4"))
    b[0] = src.T.copy().T  # a non-contiguous array is accepted and copied once
    assert (b[0] == src).all()


def test_view_in_place_and_board_changed(boards):
    b = boards.create(("<u8", (4,)), 1)
    b[0] = np.full(4, 1, "<u8")
    v = b.view(0)
    with v as arr:
        assert arr.tolist() == [1, 1, 1, 1] and not arr.flags.writeable and v.version == 1
        b[0] = np.full(4, 2, "<u8")  # goes to the other copy: the view stays valid
        assert not v.changed and arr.tolist() == [1, 1, 1, 1]
    with pytest.raises(shmring.BoardChanged) as ei:
        with b.view(0) as arr:
            assert arr[0] == 2
            b[0] = np.full(4, 3, "<u8")
            b[0] = np.full(4, 4, "<u8")  # the second write after the view reuses its copy
    assert ei.value.key == 0 and ei.value.version == 2
    with b.view(0) as arr:
        assert arr.tolist() == [4, 4, 4, 4]


def test_more_copies_keep_views_valid_longer(boards):
    b = boards.create("<i8", 1, copies=4)
    b[0] = 1
    v = b.view(0)
    arr = v.__enter__()
    for i in range(3):
        b[0] = 10 + i
    assert int(arr) == 1 and not v.changed
    b[0] = 99
    assert v.changed
    with pytest.raises(shmring.BoardChanged):
        v.__exit__(None, None, None)
    assert b[0] == 99


def test_view_outlives_close(boards):
    b = boards.create(("<u8", (1000,)), 1)
    b[0] = np.arange(1000, dtype="<u8")
    with b.view(0) as arr:
        b.close()
        assert int(arr.sum()) == 999 * 1000 // 2  # the mapping lives as long as the array
    with pytest.raises(ValueError, match="closed"):
        b[0]


@pytest.mark.parametrize("ctx", [FORK, SPAWN], ids=["fork", "spawn"])
def test_pickles_by_name_and_child_writes(boards, procs, ctx):
    b = boards.create("<i8", ["a", "b"])
    assert pickle.loads(pickle.dumps(b)).name == b.name
    p = procs(ctx, W.write_sequence, b, [("a", 5), ("b", 6), ("a", 7)], 0.0)
    p.join(60)
    assert p.exitcode == 0
    assert b.read("a", with_version=True) == (7, 2) and b.read("b", with_version=True) == (6, 1)
    st = b.stats()
    assert st["kind"] == "board" and st["writes"] == 3
    assert {k["key"]: k["last_writer_pid"] for k in st["keys"]} == {"a": p.pid, "b": p.pid}
    assert not any(k["last_writer_alive"] for k in st["keys"])


# ---- errors -----------------------------------------------------------------


def test_bad_keys(boards):
    b = boards.create("f8", 2)
    with pytest.raises(KeyError, match="keys 0..1"):
        b[2]
    with pytest.raises(KeyError):
        b[-1] = 1.0
    with pytest.raises(TypeError, match="int keys"):
        b["0"]
    with pytest.raises(TypeError, match="int keys"):
        b[True]
    with pytest.raises(TypeError, match="int keys"):
        b.write(1.0, 1.0)
    s = boards.create("f8", ["x"])
    with pytest.raises(KeyError, match="no key 'y'"):
        s["y"]
    with pytest.raises(TypeError, match="str keys"):
        s[0] = 1.0
    with pytest.raises(KeyError):
        s.wait("nope", timeout=0)
    with pytest.raises(KeyError):
        list(s.watch(["nope"], timeout=0))


def test_bad_create_arguments(ring_names):
    name = ring_names()
    for keys, exc, msg in [(0, ValueError, "1.."), ([], ValueError, "at least one"),
                           (["a", "a"], ValueError, "distinct"), ([1, 2], TypeError, "must be str"),
                           ("ab", TypeError, "int n"), ([""], ValueError, "empty"), (True, TypeError, "int n")]:
        with pytest.raises(exc, match=msg):
            shmring.Board.create(name, "f8", keys)
    with pytest.raises(TypeError, match="Python objects"):
        shmring.Board.create(name, object, 2)
    with pytest.raises(TypeError, match="not a numpy dtype"):
        shmring.Board.create(name, "nonsense", 2)
    with pytest.raises(ValueError, match="copies"):
        shmring.Board.create(name, "f8", 2, copies=1)
    with pytest.raises(ValueError, match="copies"):
        shmring.Board.create(name, "f8", 2, copies=9)
    with pytest.raises(ValueError, match="may not contain '/'"):
        shmring.Board.create("a/b", "f8", 2)
    assert not os.path.exists(f"/dev/shm/shmr-{name}")


def test_bad_values(boards):
    b = boards.create(("<f4", (2, 3)), 1)
    with pytest.raises(ValueError, match=r"shape \(2, 3\), got \(3, 2\)"):
        b[0] = np.zeros((3, 2), "<f4")
    with pytest.raises(ValueError, match="shape"):
        b[0] = np.zeros(6, "<f4")
    with pytest.raises(TypeError, match="dtype complex128"):
        b[0] = np.zeros((2, 3), complex)
    b[0] = np.ones((2, 3), "<f8")  # same kind: converted
    assert b[0].dtype == np.float32 and b.version(0) == 1
    s = boards.create([("a", "<i4"), ("b", "<f8")], 1)
    with pytest.raises(TypeError, match="pass a np.void, a tuple"):
        s[0] = 5
    with pytest.raises(TypeError, match="dtype"):
        s[0] = np.zeros(1, [("x", "<i4")])[0]
    with pytest.raises(TypeError, match="field .a.: <U1 values cannot be stored as int32"):
        s[0] = ("x", "y")
    i = boards.create("<i8", 1)
    with pytest.raises(TypeError, match="float64 values cannot be stored as int64 without loss"):
        i[0] = 1.5
    assert i.version(0) == 0 and s.version(0) == 0


def test_attach_errors(boards, ring_names, rings):
    with pytest.raises(FileNotFoundError):
        shmring.Board.attach(ring_names())
    b = boards.create("<f8", 2)
    with pytest.raises(TypeError, match="holds values of dtype float64, not int32"):
        shmring.Board.attach(b.name, dtype="<i4")
    with pytest.raises(shmring.NotARingError):
        shmring.Ring.attach(b.name)  # a board is never taken for a ring
    ring = rings.create(ring_names(), "<f8", 8)
    with pytest.raises(shmring.NotABoardError, match="is a shmring ring, not a board"):
        shmring.Board.attach(ring.name)
    with pytest.raises(FileExistsError, match="already exists"):
        shmring.Board.create(b.name, "<f8", 2)
    same = shmring.Board.create(b.name, "<f8", 2, exist_ok=True)
    same.close()
    with pytest.raises(FileExistsError, match="exists with dtype=float64, 2 keys"):
        shmring.Board.create(b.name, "<f8", 3, exist_ok=True)


def test_corrupt_segment_is_refused(ring_names):
    name = ring_names()
    path = f"/dev/shm/shmr-{name}"
    with open(path, "wb") as f:
        f.write(b"\x01" * 8192)
    with pytest.raises(shmring.NotABoardError, match="bad magic"):
        shmring.Board.attach(name)
    b = shmring.Board.create(ring_names(), "<f8", 2)
    b.close()
    with open(f"/dev/shm/shmr-{b.name}", "r+b") as f:
        f.seek(24)
        f.write((1 << 40).to_bytes(8, "little"))  # nkeys out of bounds
    with pytest.raises(shmring.CorruptRingError):
        shmring.Board.attach(b.name)


# ---- wait / watch -------------------------------------------------------------


def test_wait_wakes_on_write(boards, procs):
    b = boards.create("<i8", ["k"])
    b["k"] = 1
    p = procs(FORK, W.delayed_write, b, "k", 42, 0.3)
    t0 = time.monotonic()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    value, version = b.wait("k", newer_than=1, timeout=30)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    assert (value, version) == (42, 2)
    assert time.monotonic() - t0 >= 0.2
    # asleep on the futex, not spinning: far less CPU than the time waited
    assert (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime) < 0.1
    p.join(10)
    # already newer: returns at once
    assert b.wait("k", newer_than=0, timeout=0) == (42, 2)


def test_wait_times_out(boards):
    b = boards.create("<i8", 1)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="not written past version 0"):
        b.wait(0, timeout=0.2)
    assert 0.19 <= time.monotonic() - t0 < 5
    with pytest.raises(TimeoutError):
        b.wait(0, timeout=0)
    with pytest.raises(ValueError, match="newer_than"):
        b.wait(0, newer_than=-1, timeout=0)
    with pytest.raises(ValueError, match="timeout"):
        b.wait(0, timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        list(b.watch(timeout=-1))


def test_close_from_another_thread_wakes_a_waiter(boards):
    import threading
    b = boards.create("<i8", 1)
    t = threading.Timer(0.2, b.close)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="closed"):
        b.wait(0, timeout=30)
    assert time.monotonic() - t0 < 10
    t.join(10)


def test_watch_sees_changes_and_times_out(boards, procs):
    b = boards.create("<i8", ["a", "b", "c"])
    b["c"] = 0
    items = [("a", 1), ("b", 2), ("a", 3), ("c", 4)]
    p = procs(SPAWN, W.write_sequence, b, items, 0.15)
    seen = []
    t0 = time.monotonic()
    for key, value, version in b.watch(["a", "c"], timeout=5):
        seen.append((key, int(value), version))
        if key == "c":
            break
    assert time.monotonic() - t0 < 30
    assert seen == [("a", 1, 1), ("a", 3, 2), ("c", 4, 2)]
    p.join(10)
    t0 = time.monotonic()
    assert list(b.watch(timeout=0.2)) == []
    assert 0.19 <= time.monotonic() - t0 < 5


# ---- torn-value hunt -------------------------------------------------------------


@pytest.mark.parametrize("nbytes,reads", [(SMALL, 10**6 if SOAK else 10**5),
                                           (FRAME, 10**4 if SOAK else 300)], ids=["64B", "6MB"])
def test_torn_value_hunt(boards, procs, nbytes, reads):
    """One writer writes continuously, 4 reader processes read (one also through
    views): zero torn values, versions never go backwards, each value's tag is the
    version it was read with."""
    b = boards.create(W.words_dtype(nbytes), 1)
    b[0] = np.full(nbytes // 8, 1, "<u8")
    q = FORK.Queue()
    readers = [procs(FORK, W.hunt_reader, b, 0, reads, q, i == 3) for i in range(4)]
    writer = procs(FORK, W.tagged_writer, b, 0, 1 << 62, nbytes)
    res = [get(q, 1800) for _ in readers]
    writer.kill()
    join_all(readers)
    writes = b.version(0)
    print(f"\n{nbytes} B: {writes} writes during {sum(r['reads'] for r in res)} reads; "
          f"overtaken reads redone {sum(r['retries'] for r in res)}; "
          f"views whose copy changed {sum(r['changed'] for r in res)}")
    for r in res:
        assert r["torn"] == 0 and r["backwards"] == 0 and r["mismatch"] == 0, r
    assert writes > 10, "the writer did not run alongside the readers"
    assert sum(r["views_ok"] + r["changed"] for r in res) == reads // 8


def test_torn_detector_detects_torn_values():
    """The hunt's check is not vacuous: a mix of two writes is flagged."""
    a = np.full(8, 5, "<u8")
    assert not W.torn(a)
    a[3] = 6
    assert W.torn(a)


# ---- crashes --------------------------------------------------------------------------


def test_writers_sigkilled_at_random_moments(boards, procs):
    """50 writers killed at random moments (mid-copy most of the time): readers
    never see a torn value and never hang, and the next writer takes over."""
    nbytes = 1 << 20
    b = boards.create(W.words_dtype(nbytes), 1, liveness_interval=0.02)
    b[0] = np.full(nbytes // 8, 1, "<u8")
    stop = FORK.Event()
    q = FORK.Queue()
    readers = [procs(FORK, W.checking_reader, b, 0, stop, q) for _ in range(2)]
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"\nseed {seed}")
    mine = np.full(nbytes // 8, 7, "<u8")
    waits = []
    for i in range(50):
        ready = FORK.Event()
        w = procs(FORK, W.endless_writer, b, 0, nbytes, ready)
        assert ready.wait(30)
        time.sleep(rng.uniform(0, 0.02))
        os.kill(w.pid, signal.SIGKILL)
        w.join(30)
        assert w.exitcode == -signal.SIGKILL
        before = b.version(0)
        t0 = time.monotonic()
        v = b.write(0, mine, timeout=10)  # the next writer proceeds
        waits.append(time.monotonic() - t0)
        assert v == before + 1
        got, gv = b.read(0, with_version=True)
        assert gv >= v and not W.torn(got)
    stop.set()
    res = [get(q) for _ in readers]
    join_all(readers)
    takeovers = b.stats()["keys"][0]["takeovers"]
    print(f"takeovers {takeovers}/50; slowest next write {max(waits) * 1e3:.1f} ms; "
          f"reads {[r['reads'] for r in res]}")
    for r in res:
        assert r["torn"] == 0 and r["backwards"] == 0 and r["reads"] > 0, r
    assert takeovers >= 10, "kills should often land while the writer held the claim"
    assert b.stats()["keys"][0]["owner_pid"] is None


# ---- concurrent writers -----------------------------------------------------------------


@pytest.mark.parametrize("same_key", [True, False], ids=["same-key", "different-keys"])
def test_concurrent_writers(boards, procs, same_key):
    """3 writer processes, 300 writes each: same key = serialised, every write
    gets its own version exactly once and lands whole; different keys = independent."""
    n, nw, nbytes = 300, 3, 4096
    b = boards.create(W.words_dtype(nbytes), nw)
    stop = FORK.Event()
    rq, wq = FORK.Queue(), SPAWN.Queue()
    reader = procs(FORK, W.checking_reader, b, 0, stop, rq)
    writers = [procs(FORK if i % 2 else SPAWN, W.counted_writer, b, 0 if same_key else i, i + 1, n, nbytes, wq)
               for i in range(nw)]
    got = [get(wq) for _ in writers]
    join_all(writers)
    stop.set()
    r = get(rq)
    join_all([reader])
    assert r["torn"] == 0 and r["backwards"] == 0
    if same_key:
        versions = sorted(v for _, _, vs in got for v in vs)
        assert versions == list(range(1, n * nw + 1))  # exactly once each
        assert b.version(0) == n * nw
        last = b[0]
        assert not W.torn(last) and (int(last[0]) & 0xffffffff) == n - 1
    else:
        for wid, key, vs in got:
            assert vs == list(range(1, n + 1))
            assert int(b[key][0]) == (wid << 32) | (n - 1)


# ---- memory -----------------------------------------------------------------------------


def _pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise AssertionError("no Pss line")


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs /proc/PID/smaps_rollup (Linux 4.14+)")
def test_pss_one_copy_for_four_viewers(boards, procs):
    """A 256 MB value viewed in place by 4 processes at once: their combined PSS
    grows by about one copy of it, not four."""
    nbytes = 256 << 20
    b = boards.create(("u1", (nbytes,)), 1)
    w = procs(SPAWN, W.write_once_and_exit, b, 0, nbytes, 3)
    w.join(120)
    assert w.exitcode == 0 and b.version(0) == 1
    ready = [SPAWN.Event() for _ in range(4)]
    go, done = SPAWN.Event(), SPAWN.Event()
    q = SPAWN.Queue()
    ps = [procs(SPAWN, W.pss_viewer, b, 0, ready[i], go, done, q) for i in range(4)]
    for e in ready:
        assert e.wait(120)
    before = sum(_pss_kb(p.pid) for p in ps)
    go.set()
    sums = [get(q) for _ in ps]
    after = sum(_pss_kb(p.pid) for p in ps)
    done.set()
    join_all(ps)
    assert all(total == 3 * (nbytes // 4096) for _, total in sums)
    grew_mb = (after - before) / 1024
    print(f"\ncombined PSS of 4 viewers grew by {grew_mb:.0f} MB for a {nbytes >> 20} MB value")
    assert 0.8 * 256 < grew_mb < 1.3 * 256


# ---- command line ------------------------------------------------------------------------


def _cli(*args):
    p = run([sys.executable, "-m", "shmring", *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def test_cli_shows_and_removes_boards(boards, procs):
    b = boards.create("<f8", ["alpha", "beta"])
    p = procs(FORK, W.write_sequence, b, [("alpha", 1.0), ("alpha", 2.0)], 0.0)
    p.join(30)
    rc, out, _ = _cli("ls")
    line = next(l for l in out.splitlines() if l.startswith(b.name + " "))
    assert "board" in line and f" {p.pid} " in line and "float64" in line
    rc, out, _ = _cli("info", b.name)
    assert rc == 0 and "kind            board" in out
    assert any("alpha" in l and "version 2" in l and f"{p.pid} (dead)" in l for l in out.splitlines())
    assert any("beta" in l and "version 0" in l for l in out.splitlines())
    rc, out, _ = _cli("info", b.name, "--json")
    import json
    st = json.loads(out)
    assert st["kind"] == "board" and st["keys"][0]["version"] == 2
    # the creator (this process) is alive: gc keeps it
    rc, out, _ = _cli("gc", "--dry-run", "--json")
    assert b.name not in json.loads(out)["removed"]
    rc, out, _ = _cli("rm", b.name)
    assert rc == 0 and not os.path.exists(f"/dev/shm/shmr-{b.name}")


def test_cli_gc_removes_dead_board(ring_names):
    name = ring_names()
    code = (f"import shmring; b = shmring.Board.create({name!r}, 'f8', 2); b[1] = 1.0; b.close()")
    run([sys.executable, "-c", code], check=True, timeout=60)
    rc, out, _ = _cli("gc", "--json")
    import json
    assert name in json.loads(out)["removed"]
    assert not os.path.exists(f"/dev/shm/shmr-{name}")


# ---- segment files: atomic create, owner checks ------------------------------------------


def _create_huge_board(name, go):
    go.set()
    shmring.Board.create(name, np.dtype(("u1", 1 << 16)), 4096)  # 512 MiB: posix_fallocate takes a while
    time.sleep(60)


def test_creator_killed_during_create_leaves_no_half_board(ring_names, procs):
    """A board appears under its name only once complete (segment.c's create):
    a creator killed while building it leaves only a private leftover, the name
    stays free, and gc removes the leftover."""
    name = ring_names()
    go = FORK.Event()
    child = procs(FORK, _create_huge_board, name, go)
    assert go.wait(10)
    t_end = time.monotonic() + 10
    while not any(name in e for e in os.listdir("/dev/shm")):
        assert time.monotonic() < t_end, "the segment never appeared"
        time.sleep(0.001)
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    left = [e for e in os.listdir("/dev/shm") if name in e]
    assert left, "nothing was left behind: the kill missed the creation"
    if f"shmr-{name}" in left:  # the kill came after the board was complete: it attaches whole
        with shmring.Board.attach(name) as b:
            assert len(b) == 4096
    else:
        assert all(e.startswith(".shmr-init-") for e in left), left
        with pytest.raises(FileNotFoundError):
            shmring.Board.attach(name)
        b = shmring.Board.create(name, np.int64, 2, exist_ok=True)  # the name is free
        b[0] = 5
        assert b[0] == 5
        b.close()
    r = run([sys.executable, "-m", "shmring", "gc"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not [e for e in os.listdir("/dev/shm") if name in e and e.startswith(".shmr-init-")]


def test_exist_ok_refuses_a_board_more_open_or_of_another_user(ring_names):
    """create(exist_ok=True) must not join a board another user made first (to
    read or inject values), nor one more open than asked for."""
    name = ring_names()
    b = shmring.Board.create(name, np.int64, 2, permissions=0o666)
    try:
        with pytest.raises(PermissionError, match="more open than the 0o600"):
            shmring.Board.create(name, np.int64, 2, exist_ok=True)
        same = shmring.Board.create(name, np.int64, 2, exist_ok=True, permissions=0o666)
        same.close()
        if os.geteuid() == 0:  # only root can hand the file to another user
            os.chown(f"/dev/shm/shmr-{name}", 54321, -1)
            with pytest.raises(PermissionError, match="owned by uid 54321"):
                shmring.Board.create(name, np.int64, 2, exist_ok=True, permissions=0o666)
            with pytest.raises(PermissionError, match="owned by uid 54321"):
                shmring.Board.attach(name, owner_only=True)
            shmring.Board.attach(name).close()  # sharing on purpose stays possible
    finally:
        b.close()
