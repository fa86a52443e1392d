"""Regression tests for defects found by an adversarial run: corrupted shared
indices, close() racing a GIL-free copy, counters under kill timing, recovery on
non-blocking calls, creators killed mid-create. Real segments, real processes,
real signals; every child goes through the `procs` fixture, which kills and
reaps it at teardown."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import struct
import threading
import time

import numpy as np
import pytest

import shmring
from shmring import _ring
from shmring.errors import Closed, CorruptRingError, Empty, Full

import _workers as W
from _procs import run

CTX = mp.get_context("fork")
SHM = "/dev/shm"


def poke(name: str, field: str, value: int, index: int = 0) -> None:
    """Write one shared word of a ring as a corrupting peer would."""
    off, size = _ring.LAYOUT[field]
    if field.startswith("cslot."):
        off += _ring.LAYOUT["cslot"][0] + index * _ring.LAYOUT["cslot"][1]
    with open(f"{SHM}/shmr-{name}", "r+b") as f:
        f.seek(off)
        f.write(value.to_bytes(size, "little"))


def peek(name: str, field: str, index: int = 0) -> int:
    off, size = _ring.LAYOUT[field]
    if field.startswith("cslot."):
        off += _ring.LAYOUT["cslot"][0] + index * _ring.LAYOUT["cslot"][1]
    with open(f"{SHM}/shmr-{name}", "rb") as f:
        f.seek(off)
        return int.from_bytes(f.read(size), "little")


def wait_for(pred, timeout, what):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)
    return time.monotonic() - t0


# ---- corrupted shared indices ------------------------------------------------

def _pop_after_corruption(name, how):
    """Exit 0: CorruptRingError; 1: returned normally; 2: another exception.
    A segfault shows as -SIGSEGV."""
    ring = shmring.Ring.attach(name)
    c = ring.consumer()
    try:
        if how == "pop_many":
            c.pop_many(10**6, timeout=1)
        elif how == "view":
            with c.view(10**6, timeout=1):
                pass
        else:
            c.pop(timeout=1)
    except CorruptRingError:
        os._exit(0)
    except BaseException:
        os._exit(2)
    os._exit(1)


@pytest.mark.parametrize("how", ["pop_many", "view", "pop"])
def test_corrupt_head_raises_instead_of_reading_past_the_mapping(ring_name, rings, procs, how):
    ring = rings.create(ring_name, np.uint64, 16)
    p = ring.producer()
    p.push_many(np.arange(4, dtype=np.uint64))
    poke(ring_name, "prod.head", 10**6)  # 10**6 - tail records "published" in a ring of 16
    child = procs(CTX, _pop_after_corruption, ring_name, how)
    child.join(30)
    assert child.exitcode == 0, f"exit {child.exitcode} (-11 = segfault, 1 = no error, 2 = other error)"


def test_corrupt_tail_beyond_head_raises(ring_name, rings):
    ring = rings.create(ring_name, np.uint64, 16)
    c = ring.consumer()
    ring.producer().push_many(np.arange(4, dtype=np.uint64))
    poke(ring_name, "tail.tail", 10**9)
    with pytest.raises(CorruptRingError, match="head|tail"):
        c.pop(timeout=0.2)


def test_corrupt_claim_length_is_not_reclaimed(ring_name, rings, procs):
    """A dead consumer's slot whose claim length exceeds the capacity: the sweep
    leaves the release records alone (no abandoned count of 10**12 records)."""
    ring = rings.create(ring_name, np.uint64, 8, max_consumers=2)
    p = ring.producer(liveness_interval=0.01)
    p.push_many(np.arange(8, dtype=np.uint64))
    owner = _dead_owner(procs)
    poke(ring_name, "cslot.owner", owner, 1)
    poke(ring_name, "cslot.claim_pos", 0, 1)
    poke(ring_name, "cslot.claim_n", 10**12, 1)
    poke(ring_name, "cslot.claim_state", 2, 1)
    poke(ring_name, "tail.tail", 8)
    with pytest.raises(Full):
        p.push(1, timeout=0.1)
    st = ring.stats()
    assert st["abandoned"] == 0 and st["evicted"] == 1


def test_corrupt_writable_end_refuses_producer(ring_name, rings):
    ring = rings.create(ring_name, np.uint64, 16)
    poke(ring_name, "prod.writable_end", 10**9)
    with pytest.raises(CorruptRingError):
        ring.producer()


# ---- close() while a large copy runs without the GIL --------------------------

BIG = np.dtype([("seq", "<u8"), ("pad", "u1", (1 << 20) - 8)])  # 1 MiB records: copies drop the GIL


def _big(start, n):
    a = np.zeros(n, BIG)
    a["seq"] = np.arange(start, start + n)
    return a


def test_consumer_close_during_copy_returns_the_batch(ring_name, rings):
    """A batch taken out of the ring before close() lands is returned; Closed comes
    with the next call. Records taken are exactly the records returned."""
    ring = rings.create(ring_name, BIG, 32)
    p = ring.producer()
    landed = 0
    seq = 0
    for trial in range(12):
        p.push_many(_big(seq, 32))
        c = ring.consumer()
        out = {}

        def run():
            try:
                a = c.pop_many(32)
                out["arr"] = a
                out["closed_at_return"] = c.closed
            except Closed as exc:
                out["exc"] = exc

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.001 + 0.0005 * (trial % 4))
        c.close()
        t.join(30)
        assert not t.is_alive()
        st = ring.stats()
        taken = 32 - st["available"]
        if "arr" in out:
            assert len(out["arr"]) == taken
            assert np.array_equal(out["arr"]["seq"], np.arange(seq, seq + taken))
            landed += out["closed_at_return"]
            with pytest.raises(Closed):
                c.pop(timeout=0)
        else:
            assert taken == 0, f"Closed raised after {taken} records left the ring (trial {trial})"
        # whatever is left is drained by a fresh consumer, in order
        rest = ring.consumer()
        if st["available"]:
            r = rest.pop_many(32, timeout=5)
            assert np.array_equal(r["seq"], np.arange(seq + taken, seq + 32))
        rest.close()
        seq += 32
    assert landed >= 1, "close() never landed during a copy: the test did not test anything"


def test_producer_close_during_copy_reports_what_was_published(ring_name, rings):
    ring = rings.create(ring_name, BIG, 32)
    c = ring.consumer()
    landed = 0
    seq = 0
    for trial in range(12):
        p = ring.producer()
        before = ring.stats()["pushed"]
        out = {}

        def run():
            try:
                out["n"] = p.push_many(_big(seq, 32))
                out["closed_at_return"] = p.closed
            except Closed as exc:
                out["exc"] = exc

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.001 + 0.0005 * (trial % 4))
        p.close()
        t.join(30)
        assert not t.is_alive()
        published = ring.stats()["pushed"] - before
        if "n" in out:
            assert out["n"] == published == 32
            landed += out["closed_at_return"]
            with pytest.raises(Closed):
                p.push_many(_big(0, 1))
        else:
            assert getattr(out["exc"], "pushed", None) == published, \
                f"Closed without the count of the {published} records already published"
        got = c.pop_many(32, timeout=5) if published else np.zeros(0, BIG)
        assert np.array_equal(got["seq"], np.arange(seq, seq + published))
        seq += published
    assert landed >= 1, "close() never landed during a copy: the test did not test anything"


# ---- counters under kill timing ----------------------------------------------

def _exit_now():
    os._exit(0)


def _dead_owner(procs) -> int:
    """The owner word of a process that really ran and is now dead (and reaped)."""
    child = procs(CTX, time.sleep, 30)
    start = _ring.start_time_of(child.pid)
    assert start
    pid = child.pid
    os.kill(pid, signal.SIGKILL)
    child.join(10)
    return ((start & 0xFFFFFFFF) << 32) | pid


def test_consumer_killed_while_taking_a_slot_is_not_counted_twice(ring_name, rings, procs):
    """A consumer killed inside consumer(), after taking a slot and before anything
    else, leaves the slot as its previous occupant left it plus its own owner word;
    the sweep must not count the previous occupant's records again."""
    ring = rings.create(ring_name, np.uint64, 1024, max_consumers=1)
    p = ring.producer()
    p.push_many(np.arange(1000, dtype=np.uint64))
    a = ring.consumer()
    assert len(a.pop_many(1000)) == 1000
    a.close()
    assert ring.stats()["popped"] == 1000
    poke(ring_name, "cslot.owner", _dead_owner(procs), 0)  # the state such a kill leaves
    b = ring.consumer()  # the table is full: this sweeps the dead slot and takes it
    st = ring.stats()
    assert st["evicted"] == 1
    assert st["popped"] == 1000, f"popped {st['popped']} after 1000 records were popped"
    p.push_many(np.arange(5, dtype=np.uint64))
    assert len(b.pop_many(5)) == 5
    st = ring.stats()
    assert st["popped"] == 1005 and st["popped"] + st["abandoned"] == st["pushed"]
    assert [c["popped"] for c in st["consumers"]] == [5]


def test_popped_counted_once_when_killed_between_leaving_steps(ring_name, rings, procs):
    """A consumer killed after its last pop but before its slot is free is swept:
    its records count once, whoever did the accounting."""
    ring = rings.create(ring_name, np.uint64, 64, max_consumers=1)
    p = ring.producer()
    p.push_many(np.arange(40, dtype=np.uint64))
    child = procs(CTX, _pop_then_hang, ring, 25)
    wait_for(lambda: ring.stats()["popped"] == 25, 10, "the child's pops")
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    c = ring.consumer()  # sweeps the dead one
    assert len(c.pop_many(64)) == 15
    st = ring.stats()
    assert (st["popped"], st["abandoned"], st["evicted"]) == (40, 0, 1)


def _pop_then_hang(ring, n):
    c = ring.consumer()
    got = 0
    while got < n:
        got += len(c.pop_many(n - got))
    time.sleep(60)


# ---- recovery on non-blocking calls --------------------------------------------

def _hold_view(ring, ready):
    c = ring.consumer()
    with c.view(8):
        ready.set()
        time.sleep(60)


def _idle_consumer(ring, ready):
    c = ring.consumer()  # registered, never reads
    ready.set()
    time.sleep(60)
    c.close()


def _push_then_hang(ring, ready):
    p = ring.producer()
    p.push_many(np.arange(3, dtype=np.uint64))
    ready.set()
    time.sleep(60)


@pytest.mark.parametrize("case", ["queue_claim", "broadcast_block"])
def test_polling_producer_recovers_from_dead_consumer(ring_name, rings, procs, case):
    mode = "queue" if case == "queue_claim" else "broadcast"
    ring = rings.create(ring_name, np.uint64, 8, mode=mode)
    p = ring.producer(liveness_interval=0.02)
    if mode == "queue":
        p.push_many(np.arange(8, dtype=np.uint64))
    ready = CTX.Event()
    child = procs(CTX, _hold_view if mode == "queue" else _idle_consumer, ring, ready)
    assert ready.wait(10)
    if mode == "broadcast":
        p.push_many(np.arange(8, dtype=np.uint64))
    with pytest.raises(Full):
        p.push(8, timeout=0)
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    t0 = time.monotonic()
    calls = 0
    while True:
        calls += 1
        try:
            p.push(8, timeout=0)
            break
        except Full:
            assert time.monotonic() - t0 < 3, "push(timeout=0) never recovered the dead consumer's hold"
            time.sleep(0.001)
    st = ring.stats()
    assert st["evicted"] == 1
    if mode == "queue":
        assert st["abandoned"] == 8


def test_polling_consumer_sees_dead_producer(ring_name, rings, procs):
    ring = rings.create(ring_name, np.uint64, 8)
    c = ring.consumer(liveness_interval=0.02)
    ready = CTX.Event()
    child = procs(CTX, _push_then_hang, ring, ready)
    assert ready.wait(10)
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    got = []
    t0 = time.monotonic()
    while True:
        try:
            got.append(int(c.pop(timeout=0)))
        except Empty:
            assert time.monotonic() - t0 < 3, "pop(timeout=0) never saw the producer die"
            time.sleep(0.001)
        except Closed as exc:
            assert exc.reason == "producer died"
            break
    assert got == [0, 1, 2]


# ---- a creator killed during create --------------------------------------------

HUGE = np.dtype(("u1", 1 << 16))


def _create_huge(name, go):
    go.set()
    shmring.Ring.create(name, HUGE, 1 << 13)  # 512 MiB: posix_fallocate takes a while
    time.sleep(60)


def test_creator_killed_during_create_does_not_wedge_the_name(ring_name, rings, procs):
    go = CTX.Event()
    child = procs(CTX, _create_huge, ring_name, go)
    assert go.wait(10)
    wait_for(lambda: any(ring_name in e for e in os.listdir(SHM)), 10, "the segment to appear")
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    left = [e for e in os.listdir(SHM) if ring_name in e]
    assert left, "nothing was left behind: the kill missed the creation"
    if f"shmr-{ring_name}" in left:
        assert peek(ring_name, "header.magic") == 0, "the kill landed after the creation finished"
    # the name is not wedged: attach says why, and create(exist_ok=True) works
    try:
        shmring.Ring.attach(ring_name)
    except FileNotFoundError:
        pass
    except shmring.RingError as exc:
        assert "died" in str(exc)
    ring = rings.create(ring_name, np.uint64, 8, exist_ok=True)
    ring.producer().push(7)
    assert int(ring.consumer(start="oldest").pop(timeout=1)) == 7
    # gc removes what the dead creator left (and leaves the live ring alone)
    import subprocess
    import sys
    r = run([sys.executable, "-m", "shmring", "gc"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [e for e in os.listdir(SHM) if ring_name in e] == [f"shmr-{ring_name}"]


# ---- a stalled consumer is named ------------------------------------------------

def _read_then_stop(ring, ready, take_view):
    c = ring.consumer()
    if take_view:
        with c.view(4):
            ready.set()
            os.kill(os.getpid(), signal.SIGSTOP)
    else:
        ready.set()
        os.kill(os.getpid(), signal.SIGSTOP)
    c.close()


@pytest.mark.parametrize("mode", ["queue", "broadcast"])
def test_full_names_the_stalled_consumer(ring_name, rings, procs, mode):
    """A stopped (live) consumer holds the producer back: Full says which one,
    and stats()["stall"] too; the record goes once records flow again."""
    ring = rings.create(ring_name, np.uint64, 8, mode=mode)
    p = ring.producer(liveness_interval=0.02)
    if mode == "queue":
        p.push_many(np.arange(8, dtype=np.uint64))
    ready = CTX.Event()
    child = procs(CTX, _read_then_stop, ring, ready, mode == "queue")
    assert ready.wait(10)
    if mode == "broadcast":
        p.push_many(np.arange(8, dtype=np.uint64))
    wait_for(lambda: open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "T", 10, "SIGSTOP")
    if mode == "queue":  # the four records not in the stopped view go to a live reader
        assert len(ring.consumer().pop_many(8, timeout=1)) == 4
    with pytest.raises(Full) as ei:
        p.push_many(np.arange(8, dtype=np.uint64), timeout=0.2)
    [c] = [c for c in ring.stats()["consumers"] if c["pid"] == child.pid]
    msg = str(ei.value)
    assert f"consumer #{c['index']} (pid {child.pid}" in msg, msg
    assert ("4 records behind" if mode == "queue" else "8 records behind") in msg, msg
    st = ring.stats()["stall"]
    assert st["index"] == c["index"] and st["pid"] == child.pid and st["seconds"] >= 0.1
    os.kill(child.pid, signal.SIGCONT)
    child.join(10)
    p.push(1, timeout=5)
    assert ring.stats()["stall"] is None


# ---- waits end on time, and a wake-up is never lost ------------------------------

def test_timeouts_are_bounded_above_with_a_long_liveness_interval(ring_name, rings):
    """A wait ends at its timeout, not at the end of a liveness slice (1 s here)."""
    ring = rings.create(ring_name, np.uint64, 4)
    p = ring.producer(liveness_interval=1.0, spin=0)
    c = ring.consumer(liveness_interval=1.0, spin=0)
    calls = {
        "pop": lambda: c.pop(timeout=0.02),
        "pop_many": lambda: c.pop_many(4, timeout=0.02),
        "view": lambda: c.view(4, timeout=0.02),
    }
    for what, call in calls.items():
        t0 = time.monotonic()
        with pytest.raises(Empty):
            call()
        took = time.monotonic() - t0
        assert 0.02 <= took < 0.5, f"{what}(timeout=0.02) took {took:.3f} s"
    p.push_many(np.arange(4, dtype=np.uint64))
    calls = {
        "push": lambda: p.push(9, timeout=0.02),
        "push_many": lambda: p.push_many(np.arange(3, dtype=np.uint64), timeout=0.02),
        "reserve": lambda: p.reserve(2, timeout=0.02),
    }
    for what, call in calls.items():
        t0 = time.monotonic()
        with pytest.raises(Full):
            call()
        took = time.monotonic() - t0
        assert 0.02 <= took < 0.5, f"{what}(timeout=0.02) took {took:.3f} s"


def _echo(ring_in, ring_out, n):
    c = ring_in.consumer(liveness_interval=60, spin=0)
    p = ring_out.producer(liveness_interval=60, spin=0)
    for _ in range(n):
        p.push(c.pop(timeout=30), timeout=30)
    p.close()


ROUND_TRIPS = int(os.environ.get("SHMRING_WAKE_TRIPS", "3000"))


def test_no_lost_wakeup_over_many_round_trips(ring_names, rings, procs):
    """Ping-pong through two rings, both sides sleeping in the futex (spin=0) with
    60 s liveness slices: a lost wake-up would show as a round trip of seconds
    (a slice never ends early), not the usual microseconds. Removing the seq_cst
    fence of the notify path makes this fail."""
    a = rings.create(ring_names(), np.uint64, 2)
    b = rings.create(ring_names(), np.uint64, 2)
    ca = b.consumer(liveness_interval=60, spin=0)
    child = procs(CTX, _echo, a, b, ROUND_TRIPS)
    p = a.producer(liveness_interval=60, spin=0)
    worst = 0.0
    for i in range(ROUND_TRIPS):
        t0 = time.monotonic()
        p.push(i, timeout=30)
        try:
            got = int(ca.pop(timeout=2.0))
        except Empty:
            raise AssertionError(f"round trip {i}: no answer within 2 s (a lost wake-up)") from None
        worst = max(worst, time.monotonic() - t0)
        assert got == i
    child.join(30)
    assert child.exitcode == 0
    print(f"worst round trip of {ROUND_TRIPS}: {worst * 1e3:.2f} ms")
    assert worst < 1.0


# ---- smaller defects ------------------------------------------------------------

def test_reserved_array_is_read_only_after_the_block(ring_name, rings):
    ring = rings.create(ring_name, np.uint64, 8)
    p, c = ring.producer(), ring.consumer()
    with p.reserve(2) as a:
        a[:] = [5, 6]
    with pytest.raises(ValueError, match="read-only"):
        a[0] = 99  # would rewrite a published record
    assert list(c.pop_many(2)) == [5, 6]


def test_consumer_close_inside_a_view_defers_the_release(ring_name, rings):
    ring = rings.create(ring_name, np.uint64, 4)
    p, c = ring.producer(), ring.consumer()
    p.push_many(np.arange(4, dtype=np.uint64))
    with c.view(4) as v:
        c.close()
        with pytest.raises(Full):  # the view still holds every slot
            p.push_many(np.arange(10, 14, dtype=np.uint64), timeout=0.1)
        assert list(v) == [0, 1, 2, 3]
    assert c.closed
    p.push_many(np.arange(10, 14, dtype=np.uint64), timeout=1)  # released at the block's end
    with pytest.raises(Closed):
        c.pop(timeout=0)
    st = ring.stats()
    assert st["popped"] == 4 and st["n_consumers"] == 0


def test_exist_ok_compares_max_consumers(ring_name, rings):
    rings.create(ring_name, np.uint64, 8, max_consumers=4)
    with pytest.raises(FileExistsError, match="max_consumers=4"):
        shmring.Ring.create(ring_name, np.uint64, 8, max_consumers=8, exist_ok=True)
    rings.create(ring_name, np.uint64, 8, max_consumers=4, exist_ok=True)


@pytest.mark.parametrize("mode,cap,dtype,maxc", [("queue", 1, np.uint8, 1), ("queue", 1 << 12, np.uint8, 64),
                                                 ("broadcast", 64, np.float64, 3), ("queue", 16, W.REC, 1024)])
def test_segment_size_estimate_is_exact(ring_name, rings, mode, cap, dtype, maxc):
    from shmring._api import _segment_bytes
    ring = rings.create(ring_name, dtype, cap, mode=mode, max_consumers=maxc)
    assert _segment_bytes(cap, np.dtype(dtype).itemsize, mode, maxc) == ring.stats()["segment_size"]


ENOSPC_CHILD = """
import errno, sys
import numpy as np
import shmring
try:
    shmring.Ring.create(sys.argv[1], np.uint8, 1 << 20)  # 1 MiB of records + 16 MiB of release records
except OSError as exc:
    assert exc.errno == errno.ENOSPC, exc
    print(exc)
    sys.exit(0)
sys.exit(1)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a private tmpfs")
def test_enospc_message_counts_the_whole_segment(ring_name, popen):
    import subprocess
    import sys
    from shmring._api import _segment_bytes
    script = f"mount -t tmpfs -o size=4m tmpfs /dev/shm && exec {sys.executable} -c '{ENOSPC_CHILD}' {ring_name}"
    proc = popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    if proc.returncode != 0 and "mount" in err:
        pytest.skip(f"cannot mount a private tmpfs here: {err.strip()}")
    assert proc.returncode == 0, (out, err)
    need = _segment_bytes(1 << 20, 1, "queue", 64)
    assert need > 17 << 20
    assert f"needs about {need} bytes" in out, out


def test_union_dtype_round_trips(ring_name, rings):
    dt = np.dtype((np.int32, {"lo": (np.int16, 0), "hi": (np.int16, 2)}))
    ring = rings.create(ring_name, dt, 8)
    again = rings.create(ring_name, dt, 8, exist_ok=True)  # failed: "exists with dtype [('lo'..."
    assert rings.attach(ring_name).dtype == dt == again.dtype
    ring.producer().push_many(np.array([0x10002, 7], dtype=dt))
    got = again.consumer(start="oldest").pop_many(2, timeout=1)
    assert list(got["lo"]) == [2, 7] and list(got["hi"]) == [1, 0]
