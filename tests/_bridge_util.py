"""Helpers for the bridge tests: network namespaces, bridge processes, producers and readers."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest

import shmring
from shmring.bridge import read_sidecar, remove_sidecar

from _procs import kill_session
from _records import REC, make_records, n_bad

# A 4 KiB record for tests that must overflow socket buffers quickly.
BIG = np.dtype([("seq", "<u8"), ("fill", "u1", (4088,))])


def make_big(start: int, n: int) -> np.ndarray:
    recs = np.empty(n, dtype=BIG)
    seq = np.arange(start, start + n, dtype=np.uint64)
    recs["seq"] = seq
    recs["fill"] = (seq & np.uint64(0xFF)).astype(np.uint8)[:, None]
    return recs


def bad_big(recs: np.ndarray) -> int:
    want = (recs["seq"] & np.uint64(0xFF)).astype(np.uint8)[:, None]
    return int(np.count_nonzero((recs["fill"] != want).any(axis=1)))


def records_for(dtype: np.dtype, start: int, n: int) -> np.ndarray:
    return make_big(start, n) if dtype == BIG else make_records(start, n)


def bad_for(recs: np.ndarray) -> int:
    return bad_big(recs) if recs.dtype == BIG else n_bad(recs)


def produce(name: str, n: int, batch: int = 256, rate: float = 0.0, start: int = 0) -> None:
    """Child process: push records start..start+n-1 (at about `rate` records/s if
    given), then close the stream."""
    ring = shmring.Ring.attach(name)
    with ring.producer() as p:
        t0 = time.monotonic()
        i = 0
        while i < n:
            k = min(batch, n - i)
            p.push_many(records_for(ring.dtype, start + i, k), timeout=60)
            i += k
            if rate:
                ahead = t0 + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    ring.close()


class Reader:
    """Reads a ring in a thread until the stream is closed by its producer (a dead
    producer is a bridge being restarted: keep reading). ``slow``: seconds to sleep
    after each pop of at most ``chunk`` records."""

    def __init__(self, name: str, *, slow: float = 0.0, chunk: int = 4096, start: str = "oldest",
                 timeout: float = 60.0) -> None:
        self.ring = shmring.Ring.attach(name)
        self.cons = self.ring.consumer(start=start)
        self.slow = slow
        self.chunk = chunk
        self.timeout = timeout
        self.parts: list = []
        self.ended = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        end = time.monotonic() + self.timeout
        try:
            while time.monotonic() < end:
                try:
                    a = self.cons.pop_many(self.chunk, timeout=0.2)
                except shmring.Empty:
                    continue
                except shmring.Closed as exc:
                    if exc.reason == "closed by producer":
                        self.ended = True
                        return
                    time.sleep(0.05)  # the bridge died: a restarted one reopens the stream
                    continue
                self.parts.append(a)
                if self.slow:
                    time.sleep(self.slow)
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self, timeout: float = 60.0) -> np.ndarray:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "reader did not see the end of the stream in time"
        if self.error is not None:
            raise self.error
        assert self.ended, "reader timed out before the stream ended"
        self.cons.close()
        self.ring.close()
        if not self.parts:
            return np.empty(0, dtype=REC)
        out = np.concatenate(self.parts)
        assert bad_for(out) == 0, "a record arrived corrupted"
        return out

    def stop(self) -> None:
        self.timeout = 0
        self.thread.join(5)
        if not self.cons.closed:
            self.cons.close()
        self.ring.close()


def wait_for(cond, timeout: float = 15.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def consumers_of(name: str) -> int:
    try:
        r = shmring.Ring.attach(name)
    except FileNotFoundError:
        return 0
    try:
        return sum(1 for c in r.stats()["consumers"] if c["alive"])
    finally:
        r.close()


def sidecar_pid(name: str):
    s = read_sidecar(name)
    return None if s is None else s["pid"]


def cleanup_ring(name: str) -> None:
    try:
        shmring.unlink(name)
    except FileNotFoundError:
        pass
    remove_sidecar(name)


@pytest.fixture
def names(ring_names):
    """names() gives a new ring name; each ring and its sidecar is removed at teardown."""
    made = []

    def new():
        made.append(ring_names())
        return made[-1]

    yield new
    for n in made:
        cleanup_ring(n)


# -- network namespaces ----------------------------------------------------------

_net_counter = itertools.count()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def netns_unavailable() -> str | None:
    """None if this process can make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    probe = f"shbprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except FileNotFoundError:
        return "the `ip` command (iproute2) is not installed"
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` failed: {exc.stderr.decode().strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


class Net:
    """Hosts on this machine: one network namespace each, joined by veth pairs.
    Addresses exist only inside the namespaces; everything is removed by close()."""

    def __init__(self, tmpdir) -> None:
        self.tag = f"{os.getpid() % 100000}x{next(_net_counter)}"
        self.hosts: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.tmpdir = tmpdir
        self._links = 0
        self._logs = itertools.count()

    def host(self, label: str) -> str:
        ns = f"shb{self.tag}{label}"
        _ip("netns", "add", ns)
        self.hosts.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def link(self, a: str, b: str) -> tuple[str, str, str]:
        """veth pair a <-> b; returns (device on a's side, a's address, b's address)."""
        k = self._links
        self._links += 1
        da, db = f"v{self.tag}{k}a", f"v{self.tag}{k}b"
        assert len(da) <= 15
        _ip("link", "add", da, "netns", a, "type", "veth", "peer", "name", db, "netns", b)
        addr_a, addr_b = f"10.77.{k}.1", f"10.77.{k}.2"
        _ip("-n", a, "addr", "add", f"{addr_a}/24", "dev", da)
        _ip("-n", b, "addr", "add", f"{addr_b}/24", "dev", db)
        _ip("-n", a, "link", "set", da, "up")
        _ip("-n", b, "link", "set", db, "up")
        return da, addr_a, addr_b

    def set_link(self, ns: str, dev: str, up: bool) -> None:
        _ip("-n", ns, "link", "set", dev, "up" if up else "down")

    def run(self, ns: str, *args: str) -> subprocess.Popen:
        """python -m shmring ARGS inside namespace ns (stdout/stderr to files)."""
        k = next(self._logs)
        out = open(os.path.join(self.tmpdir, f"p{k}.out"), "w+")
        err = open(os.path.join(self.tmpdir, f"p{k}.err"), "w+")
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "shmring", *args],
                             stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        p.out, p.err = out, err  # type: ignore[attr-defined]
        self.procs.append(p)
        return p

    @staticmethod
    def finish(p: subprocess.Popen, timeout: float = 20.0, term: bool = False) -> tuple[int, str, str]:
        """Wait for (or SIGTERM then wait for) a bridge process; its exit code, stdout, stderr."""
        if term and p.poll() is None:
            p.send_signal(signal.SIGTERM)
        p.wait(timeout)
        p.out.seek(0)
        p.err.seek(0)
        return p.returncode, p.out.read(), p.err.read()

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                kill_session(p)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
            p.out.close()
            p.err.close()
        for ns in self.hosts:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self.hosts.clear()


# -- message rings ----------------------------------------------------------------
# Messages of every kind a message ring carries, each naming its sequence number and
# checkable on arrival: bytes, plain arrays (sent raw) and dicts of arrays (pickled,
# the arrays out of band); every 97th dict carries a 300 KB array, so large bodies
# travel in frames of their own (lent to ZeroMQ straight from the ring in queue mode).

def make_msg(i: int):
    r = i % 4
    if r == 0:
        return b"m%d:" % i + bytes([i & 0xFF]) * (i % 300)
    if r == 1:
        return np.full(4 + i % 50, i, np.uint64)
    x = (np.arange(16 + (i % 7) * 100 + (75_000 if i % 97 == 2 else 0), dtype=np.uint64)
         * np.uint64(2654435761) + np.uint64(i)).astype(np.uint32)
    return {"seq": i, "x": x, "crc": zlib.crc32(x.tobytes()), "m": np.full((2, 3), float(i))}


def msg_seq(m) -> int:
    """The sequence number of a message made by make_msg; AssertionError if it is
    not intact."""
    if isinstance(m, (bytes, memoryview)):
        m = bytes(m)
        head, _, tail = m.partition(b":")
        i = int(head[1:])
        assert tail == bytes([i & 0xFF]) * (i % 300), f"bytes message {i} is corrupt"
        return i
    if isinstance(m, np.ndarray):
        i = int(m[0])
        assert m.dtype == np.uint64 and len(m) == 4 + i % 50 and np.all(m == i), "array message corrupt"
        return i
    i = m["seq"]
    assert zlib.crc32(m["x"].tobytes()) == m["crc"], f"dict message {i} is corrupt"
    assert len(m["x"]) == 16 + (i % 7) * 100 + (75_000 if i % 97 == 2 else 0)
    assert np.array_equal(m["m"], np.full((2, 3), float(i)))
    return i


def produce_msgs(name: str, n: int, batch: int = 64, rate: float = 0.0, start: int = 0) -> None:
    """Child process: push messages start..start+n-1 (at about `rate` per second if
    given), then close the stream."""
    ring = shmring.Ring.attach(name)
    with ring.producer() as p:
        t0 = time.monotonic()
        i = 0
        while i < n:
            k = min(batch, n - i)
            p.push_many([make_msg(start + j) for j in range(i, i + k)], timeout=60)
            i += k
            if rate:
                ahead = t0 + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    ring.close()


class MsgReader(Reader):
    """Reader of a message ring: result() is the array of sequence numbers that
    arrived, every message checked intact."""

    def _run(self) -> None:
        end = time.monotonic() + self.timeout
        try:
            while time.monotonic() < end:
                try:
                    got = self.cons.pop_many(self.chunk, timeout=0.2)
                except shmring.Empty:
                    continue
                except shmring.Closed as exc:
                    if exc.reason == "closed by producer":
                        self.ended = True
                        return
                    time.sleep(0.05)
                    continue
                self.parts.append(np.array([msg_seq(m) for m in got], dtype=np.int64))
                if self.slow:
                    time.sleep(self.slow)
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self, timeout: float = 60.0) -> np.ndarray:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "reader did not see the end of the stream in time"
        if self.error is not None:
            raise self.error
        assert self.ended, "reader timed out before the stream ended"
        self.cons.close()
        self.ring.close()
        return np.concatenate(self.parts) if self.parts else np.empty(0, np.int64)


# -- shmring.Queue ------------------------------------------------------------------
# Items put by several producer processes, each naming its producer and sequence
# number and checkable on arrival: bytes, plain arrays and dicts of arrays (pickled),
# every 61st a 200 KB array, which travels in a frame of its own.

def make_qitem(k: int, i: int):
    r = i % 3
    if r == 0:
        return b"q%d:%d:" % (k, i) + bytes([(k * 31 + i) & 0xFF]) * (i % 200)
    if r == 1:
        return np.full(3 + (i % 40) + (25_000 if i % 61 == 1 else 0), (k << 32) | i, np.uint64)
    x = (np.arange(8 + i % 90, dtype=np.uint64) * np.uint64(40503) + np.uint64(k * 7 + i)).astype(np.uint32)
    return {"k": k, "i": i, "x": x, "crc": zlib.crc32(x.tobytes())}


def qitem_key(m) -> tuple[int, int]:
    """(producer, sequence) of an item made by make_qitem; AssertionError if it is
    not intact."""
    if isinstance(m, (bytes, memoryview)):
        head, seq, tail = bytes(m).split(b":", 2)
        k, i = int(head[1:]), int(seq)
        assert tail == bytes([(k * 31 + i) & 0xFF]) * (i % 200), f"bytes item {k}/{i} is corrupt"
        return k, i
    if isinstance(m, np.ndarray):
        v = int(m[0])
        k, i = v >> 32, v & 0xFFFFFFFF
        assert m.dtype == np.uint64 and len(m) == 3 + (i % 40) + (25_000 if i % 61 == 1 else 0), "array item corrupt"
        assert np.all(m == v), f"array item {k}/{i} is corrupt"
        return k, i
    k, i = m["k"], m["i"]
    assert zlib.crc32(m["x"].tobytes()) == m["crc"] and len(m["x"]) == 8 + i % 90, f"dict item {k}/{i} is corrupt"
    return k, i


def put_items(name: str, k: int, n: int, batch: int = 32) -> None:
    """Child process: producer k puts its items 0..n-1 into the named queue."""
    q = shmring.Queue.attach(name)
    for i in range(0, n, batch):
        q.put_many([make_qitem(k, j) for j in range(i, min(n, i + batch))], timeout=60)
    q.close()


def drain_queue(name: str, n: int, timeout: float = 60.0, keys: list | None = None) -> list:
    """Gets items from the named queue until n arrived (or the timeout passed);
    their (producer, sequence) keys, in the order got, every item checked intact."""
    q = shmring.Queue.attach(name)
    out = [] if keys is None else keys
    end = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < end:
            try:
                got = q.get_many(1024, timeout=0.2)
            except shmring.Empty:
                continue
            out.extend(qitem_key(m) for m in got)
    finally:
        q.close()
    return out


def check_queue_delivery(keys: list, producers: int, n: int, ordered: bool = True) -> None:
    """Exactly once, and (``ordered``: keys got from one queue) each producer's
    items in the order it put them."""
    assert len(keys) == producers * n, f"{len(keys)} items arrived, {producers * n} were put"
    assert sorted(keys) == [(k, i) for k in range(producers) for i in range(n)], "not exactly once"
    for k in range(producers if ordered else 0):
        mine = [i for kk, i in keys if kk == k]
        assert mine == sorted(mine), f"producer {k}'s items out of order"
