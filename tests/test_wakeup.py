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

import time

import numpy as np
import pytest

import shmring
from _wake_workers import echo

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
