"""`shmring top` against live rings fed by real processes: the figures it prints
(--once, --json) are checked against what the feeding processes did, and the
interactive view runs in a real pseudo-terminal (keys, sorting, q to quit)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import shmring
from shmring import top
from _procs import run

REC = np.dtype([("seq", "<u8"), ("pad", "<u8", (7,))])  # 64 bytes
CTX = mp.get_context("fork")


def run_top(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "shmring", "top", *args], capture_output=True, text=True,
                          timeout=timeout)


def segments(frame: dict, names) -> dict:
    return {s["name"]: s for s in frame["segments"] if s["name"] in names}


# ---- workers: each does an exact amount of work, reports it, then stays alive ----------

def hold(stop, limit=60.0):
    """Stay alive until stop is set. Polled rather than stop.wait(): Event.set() waits
    for every sleeping waiter to acknowledge, which a SIGKILLed waiter never does."""
    import time
    deadline = time.monotonic() + limit
    while not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)


def push_steps(ring, steps, stop):
    """steps: (go event or None, records to push, done event), in turn."""
    with ring.producer() as p:
        seq = 0
        for go, n, done in steps:
            if go is not None:
                go.wait(30)
            recs = np.zeros(n, REC)
            recs["seq"] = np.arange(seq, seq + n)
            p.push_many(recs, timeout=30)
            seq += n
            done.set()
        hold(stop)


def pop_then_hold(ring, n, ready, done, stop):
    with ring.consumer() as c:
        ready.set()
        got = 0
        while got < n:
            got += len(c.pop_many(n - got, timeout=30))
        done.set()
        hold(stop)


def push_paced(ring, stop):
    """About 50 records every 5 ms until stopped: a steady stream to measure."""
    import time
    with ring.producer() as p:
        seq = 0
        while not stop.is_set():
            recs = np.zeros(50, REC)
            recs["seq"] = np.arange(seq, seq + 50)
            try:
                p.push_many(recs, timeout=0.5)
            except shmring.Full as exc:
                seq += exc.pushed
                continue
            seq += 50
            time.sleep(0.005)


def pop_all(ring, ready, stop):
    with ring.consumer() as c:
        ready.set()
        while not stop.is_set():
            try:
                c.pop_many(1000, timeout=0.2)
            except (shmring.Empty, shmring.Closed):
                pass


@pytest.fixture
def stop():
    ev = CTX.Event()
    yield ev
    ev.set()


def test_once_and_json_report_exact_counts_of_live_rings(ring_names, rings, procs, stop):
    """Queue ring: 700 pushed, 200 popped; overwrite ring: 150 pushed over a consumer
    that read 10 of a 64-record ring. Both producers and consumers stay alive."""
    qname, oname = ring_names(), ring_names()
    q = rings.create(qname, REC, 1024)
    o = rings.create(oname, REC, 64, mode="broadcast", overflow="overwrite")
    ev = [CTX.Event() for _ in range(7)]
    qcons = procs(CTX, pop_then_hold, q, 200, ev[0], ev[1], stop)
    ocons = procs(CTX, pop_then_hold, o, 10, ev[2], ev[3], stop)
    assert ev[0].wait(30) and ev[2].wait(30)
    qprod = procs(CTX, push_steps, q, [(None, 700, ev[4])], stop)
    assert ev[4].wait(30) and ev[1].wait(30)  # 700 in, 200 taken
    # the overwrite consumer takes its 10 before the producer laps it with 140 more
    oprod = procs(CTX, push_steps, o, [(None, 10, ev[5]), (ev[3], 140, ev[6])], stop)
    assert ev[5].wait(30) and ev[6].wait(30)

    r = run_top("--json", "--once", "--interval", "0.2")
    assert r.returncode == 0, r.stderr
    frames = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(frames) == 1
    seg = segments(frames[0], {qname, oname})
    qs, os_ = seg[qname], seg[oname]

    assert qs["kind"] == "ring" and qs["mode"] == "queue" and qs["capacity"] == 1024
    assert qs["in"]["items"] == 700 and qs["in"]["bytes"] == 700 * 64
    assert qs["out"]["items"] == 200 and qs["out"]["bytes"] == 200 * 64
    assert qs["fill"] == 500 and qs["lag"] == 500 and qs["overwritten"] == 0
    assert qs["in"]["items_per_s"] == 0.0 and qs["out"]["items_per_s"] == 0.0  # idle now
    assert qs["producer_pid"] == qprod.pid and qs["producer_alive"] is True
    assert [(c["pid"], c["alive"], c["received"]) for c in qs["consumers"]] == [(qcons.pid, True, 200)]
    assert qs["error"] is None and 0 <= qs["age"] < 120

    assert os_["mode"] == "broadcast/overwrite" and os_["capacity"] == 64
    assert os_["in"]["items"] == 150 and os_["out"]["items"] == 10
    # the consumer is 140 behind, but only the newest 64 records are still there
    assert os_["fill"] == 64 and os_["overwritten"] == 76 and os_["lag"] == 140
    assert [(c["pid"], c["received"], c["lag"]) for c in os_["consumers"]] == [(ocons.pid, 10, 140)]
    assert os_["producer_pid"] == oprod.pid and os_["producer_alive"] is True

    # the same figures in the plain --once table
    r = run_top("--once", "--plain", "--interval", "0.2")
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.split()}
    assert "500/1024" in lines[qname] and str(qprod.pid) in lines[qname] and lines[qname].split()[-2] == "500"
    assert "64/64 -76" in lines[oname] and lines[oname].split()[-2] == "140"

    # a producer killed outright shows as dead
    qprod.kill()
    qprod.join(10)
    r = run_top("--json", "--once", "--interval", "0.1")
    qs = segments(json.loads(r.stdout), {qname})[qname]
    assert qs["producer_pid"] == qprod.pid and qs["producer_alive"] is False and qs["in"]["items"] == 700


def test_json_rates_are_the_counter_differences(ring_name, rings, procs, stop):
    """A paced producer and a consumer: every --json frame's rates equal the change of
    the cumulative counters between frames divided by the frame interval."""
    # room for seconds of the stream: a consumer starved by a loaded machine does not
    # stop the producer, so every frame sees records come in
    ring = rings.create(ring_name, REC, 1 << 16)
    ready = CTX.Event()
    cons = procs(CTX, pop_all, ring, ready, stop)
    assert ready.wait(30)
    procs(CTX, push_paced, ring, stop)
    r = run_top("--json", "--count", "4", "--interval", "0.3", "--sort", "in")
    assert r.returncode == 0, r.stderr
    frames = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(frames) == 4
    segs = [segments(f, {ring_name})[ring_name] for f in frames]
    assert all(s["in"]["items_per_s"] > 0 for s in segs), [s["in"] for s in segs]
    for prev, cur, frame in zip(segs, segs[1:], frames[1:]):
        dt = frame["interval"]
        assert 0.25 < dt < 5
        for side in ("in", "out"):
            d_items = cur[side]["items"] - prev[side]["items"]
            # interval is rounded to 0.1 ms in the JSON: compare with that tolerance
            assert cur[side]["items_per_s"] == pytest.approx(d_items / dt, rel=1e-3, abs=1.0)
            assert cur[side]["bytes_per_s"] == pytest.approx(cur[side]["items_per_s"] * 64, rel=1e-9)
        c0, c1 = prev["consumers"][0], cur["consumers"][0]
        assert c1["pid"] == cons.pid
        assert c1["per_s"] == pytest.approx((c1["received"] - c0["received"]) / dt, rel=1e-3, abs=1.0)
    assert segs[-1]["in"]["items"] > segs[0]["in"]["items"]


def test_json_stream_ends_quietly_when_the_reader_leaves(ring_name, rings):
    rings.create(ring_name, REC, 16)
    r = run(f"{sys.executable} -m shmring top --json --interval 0.05 --count 200 | head -n 1",
                       shell=True, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    assert ring_name in [s["name"] for s in json.loads(r.stdout)["segments"]]


def test_sort_orders_by_lag_and_reverse(ring_names, rings):
    names = [ring_names() for _ in range(3)]
    handles = []  # a handle that is garbage-collected leaves the ring
    for name, n in zip(names, (5, 20, 1)):
        ring = rings.create(name, REC, 32, mode="broadcast")
        handles += [ring.consumer(), ring.producer()]
        handles[-1].push_many(np.zeros(n, REC))
    r = run_top("--json", "--once", "--interval", "0.05", "--sort", "lag")
    order = [s["name"] for s in json.loads(r.stdout)["segments"] if s["name"] in names]
    assert order == [names[1], names[0], names[2]]
    r = run_top("--json", "--once", "--interval", "0.05", "--sort", "lag", "--reverse")
    order = [s["name"] for s in json.loads(r.stdout)["segments"] if s["name"] in names]
    assert order == [names[2], names[0], names[1]]


def test_bad_arguments_are_refused():
    r = run_top("--interval", "0")
    assert r.returncode != 0 and "--interval must be > 0" in r.stderr
    r = run_top("--sort", "colour")
    assert r.returncode == 2 and "invalid choice" in r.stderr


class Terminal:
    """A program in a real pseudo-terminal (pexpect), its output rendered by a terminal
    emulator (pyte) so tests read the screen a person would see."""

    def __init__(self, args, rows=40, cols=200):
        import pexpect
        import pyte

        self._pexpect = pexpect
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.Stream(self.screen)
        self.child = pexpect.spawn(sys.executable, args, dimensions=(rows, cols), timeout=30,
                                   encoding="utf-8", env=dict(os.environ, TERM="xterm-256color"))

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, predicate, timeout=30.0) -> str:
        """Feed output to the emulator until predicate(screen text) holds."""
        import time
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never matched; it shows:\n{text}")
            try:
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.2))
            except self._pexpect.TIMEOUT:
                pass

    def send(self, keys: str) -> None:
        self.child.send(keys)

    def wait_exit(self, timeout=30.0) -> int:
        self.child.expect(self._pexpect.EOF, timeout=timeout)
        self.child.close()
        return self.child.exitstatus

    def kill(self) -> None:
        if self.child.isalive():
            self.child.kill(signal.SIGKILL)
            self.child.close(force=True)


def _row(text: str, name: str) -> list[str] | None:
    for line in text.splitlines():
        cells = line.split()
        if cells[:1] == [name]:
            return cells
    return None


@pytest.mark.parametrize("plain", [False, True], ids=["rich", "plain"])
def test_interactive_view_in_a_pty(ring_name, rings, procs, stop, plain):
    """A real pseudo-terminal: the view shows the live ring with its producer and a
    non-zero rate, sort keys change the order at once, q quits with status 0."""
    pytest.importorskip("pexpect")
    pytest.importorskip("pyte")
    if not plain:
        pytest.importorskip("rich")
    ring = rings.create(ring_name, REC, 4096)
    ready = CTX.Event()
    cons = procs(CTX, pop_all, ring, ready, stop)
    assert ready.wait(30)
    prod = procs(CTX, push_paced, ring, stop)
    term = Terminal(["-m", "shmring", "top", "--interval", "0.3"] + (["--plain"] if plain else []))
    try:
        def live_row(text):
            cells = _row(text, ring_name)
            # NAME KIND MODE IN/s ...: a frame with rates (not "...") and something flowing
            return cells is not None and cells[3] not in ("...", "0") and "sorted by name" in text
        text = term.wait_for(live_row)
        cells = _row(text, ring_name)
        assert cells[1:3] == ["ring", "queue"] and str(prod.pid) in cells
        assert f"pid {cons.pid} alive" in text
        term.send("l")
        term.wait_for(lambda t: "sorted by lag" in t and "reversed" not in t)
        term.send("l")
        term.wait_for(lambda t: "sorted by lag reversed" in t)
        term.send("a")
        term.wait_for(lambda t: "sorted by age" in t)
        term.send("q")
        assert term.wait_exit() == 0
    finally:
        term.kill()


def test_monitor_api_and_provider_plug_in(ring_name, rings):
    """Another kind of segment plugs in with a provider; rates are shared code."""
    ring = rings.create(ring_name, REC, 64)
    prod = ring.producer()

    class FakeKind:  # a second kind of segment, counting what the test does
        kind = "board"
        writes = 0

        def names(self):
            return ["b1"]

        def sample(self, name):
            return top.Sample(kind="board", name=name, mode="latest value", capacity=8, fill=3,
                              items_in=self.writes, bytes_in=self.writes * 100, created=1.0)

    fake = FakeKind()
    mon = top.Monitor([top.RingProvider(), fake])
    first = mon.poll()
    assert first.interval is None and all(r.in_per_s is None for r in first.rows)
    prod.push_many(np.zeros(10, REC))
    fake.writes = 7
    second = mon.poll()
    rows = {(r.sample.kind, r.sample.name): r for r in second.rows}
    rr, br = rows[("ring", ring_name)], rows[("board", "b1")]
    assert rr.in_per_s == pytest.approx(10 / second.interval)
    assert br.in_per_s == pytest.approx(7 / second.interval)
    assert br.in_bytes_per_s == pytest.approx(700 / second.interval)
    text = top.plain_text(second, "n", False)
    assert "board" in text and "latest value" in text and "3/8" in text
