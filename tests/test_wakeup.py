"""Wake-ups are never lost: the eventcount's store-buffering pair (the sleeper
raises the waiter count, then re-checks; the notifier publishes, then reads the
count) must hold across processes, through the binding's sliced waits.

Blocking calls sleep in liveness slices, so a lost wake-up only shows as a wait
that lasts its whole slice. Here the slice is long (5 s) and every round trip is
bounded far below it, so one lost wake-up fails the test. The hardware race a
missing fence opens is a few tens of ns wide: hitting it takes about a million
tightly timed round trips, more than a Python loop makes in this suite's budget;
verify/interleavings/lost_wakeup.c (run by test_interleavings.py) makes them in C
and fails on that mutant. This test guards the binding's side: a wait that
re-checks too late, a slice that swallows a wake, a notify the binding skips.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import shmring
from _wake_workers import PUSHER, echo, sleeper

LIVENESS = 5.0  # the slice a lost wake-up would cost
BOUND = 2.0  # a round trip longer than this is a lost wake-up (or a stalled machine)


def _busy_ns(ns: int) -> None:
    end = time.perf_counter_ns() + ns
    while time.perf_counter_ns() < end:
        pass


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_pingpong_no_lost_wakeup(start_method, ring_names, rings, procs):
    """2,000 round trips; the echo side sleeps in the futex as soon as it finds
    ping empty (after a delay that sweeps 0-4 us), and the parent publishes
    each ping after its own sweeping delay, so publications land throughout the
    echo side's way into its sleep. A missed waiter leaves the echo side asleep
    for its 5 s slice and the parent's 2 s wait fails."""
    import multiprocessing

    trips = 2000
    ping = rings.create(ring_names(), np.uint64, 4)
    pong = rings.create(ring_names(), np.uint64, 4)
    prod = ping.producer(spin=0, liveness_interval=LIVENESS)
    # the parent polls pong (a long spin) so that it publishes the next ping
    # within microseconds of the echo, while the echo side is going to sleep
    cons = pong.consumer(start="oldest", spin=0.5, liveness_interval=LIVENESS)
    child = procs(multiprocessing.get_context(start_method), echo, ping.name, pong.name, trips, LIVENESS)
    first = True
    worst = 0.0
    for i in range(trips):
        _busy_ns((i * 37) % 3000)
        t0 = time.perf_counter()
        prod.push(np.uint64(i), timeout=BOUND)
        try:
            # the first trip includes the child's start-up (spawn imports numpy)
            v = cons.pop(timeout=60 if first else BOUND)
        except shmring.Empty:
            pytest.fail(f"round trip {i} took over {BOUND} s: a wake-up was lost (echo exit {child.exitcode})")
        dt = time.perf_counter() - t0
        assert int(v) == i, f"trip {i}: got {int(v)}"
        if not first:
            worst = max(worst, dt)
        first = False
    child.join(10)
    assert child.exitcode == 0, f"echo side exit {child.exitcode}"
    assert cons.popped == trips and ping.stats()["pushed"] == trips
    assert worst < BOUND, f"worst round trip {worst:.3f} s"


def _sleepers(ring) -> int:
    return ring.stats()["waiters"]["consumers"]


def _wait_for(cond, what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def _futex_wakes_between_markers(trace: str) -> int:
    """FUTEX_WAKE calls between the two getppid() markers of a strace -f log."""
    lines = trace.splitlines()
    marks = [i for i, l in enumerate(lines) if "getppid()" in l]
    assert len(marks) == 2, f"markers missing from the trace:\n{trace[-2000:]}"
    return sum(1 for l in lines[marks[0]:marks[1]] if re.search(r"futex\(.*FUTEX_WAKE", l))


@pytest.mark.parametrize("mode", ["queue", "broadcast"])
def test_dead_sleepers_leave_no_waiter_count(mode, ring_names, rings, procs, popen, tmp_path):
    """20 consumers killed while asleep in pop(): the sweep that frees their
    slots takes their counts out of the waiter count (before, each stayed
    there for good and made every later push a FUTEX_WAKE syscall). The count
    returns to the 2 live sleepers, then to 0, and 1,000 pushes make no wake
    syscall at all (counted with strace in the pushing process)."""
    import multiprocessing

    if shutil.which("strace") is None:
        pytest.fail("strace not found: needed to count the wake syscalls (apt-get install strace)")
    ctx = multiprocessing.get_context("fork")
    ring = rings.create(ring_names(), np.uint64, 4096, mode=mode, max_consumers=22)
    kids = [procs(ctx, sleeper, ring.name, 60.0) for _ in range(22)]
    _wait_for(lambda: _sleepers(ring) == 22, "22 consumers asleep")
    for k in kids[:20]:
        os.kill(k.pid, signal.SIGKILL)
    for k in kids[:20]:
        k.join(10)
        assert k.exitcode == -signal.SIGKILL
    # killed inside the futex wait: their counts are still there
    assert _sleepers(ring) == 22
    # a consumer that finds the table full sweeps the dead slots
    extra = ring.consumer()
    extra.close()
    st = ring.stats()
    assert st["evicted"] == 20
    assert st["waiters"]["consumers"] == 2, st["waiters"]
    # the two live sleepers take one record each and leave
    prod = ring.producer()
    prod.push(np.uint64(7))
    prod.push(np.uint64(8))
    for k in kids[20:]:
        k.join(30)
        assert k.exitcode == 0
    _wait_for(lambda: _sleepers(ring) == 0, "the live sleepers to leave")
    prod.close()
    # nobody sleeps, so a publish must not enter the kernel
    trace = tmp_path / "strace.txt"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    p = popen(["strace", "-f", "-e", "trace=futex,getppid", "-o", str(trace),
               sys.executable, "-c", PUSHER, ring.name, "1000"], env=env,
              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err.decode()[-2000:]
    assert ring.stats()["pushed"] == 1002
    assert _futex_wakes_between_markers(trace.read_text()) == 0
