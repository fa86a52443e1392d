"""Child side of the wake-up tests (importable under spawn)."""

from __future__ import annotations

import sys
import time

import shmring


def echo(ping_name: str, pong_name: str, trips: int, liveness: float) -> None:
    """Pop each record from ping and push it back on pong, sleeping on the futex
    at once when ping is empty (spin=0), after a delay that sweeps 0-4 us. Exit 0 after `trips` records, 3 if a
    pop gave up (the parent stopped), 4 on a record out of sequence."""
    ping = shmring.Ring.attach(ping_name)
    pong = shmring.Ring.attach(pong_name)
    cons = ping.consumer(start="oldest", spin=0, liveness_interval=liveness)
    prod = pong.producer(spin=0, liveness_interval=liveness)
    for i in range(trips):
        # sweeps the moment this side goes to sleep over the moment the
        # parent publishes the next ping (a few microseconds after our echo)
        end = time.perf_counter_ns() + (i * 37) % 4000
        while time.perf_counter_ns() < end:
            pass
        try:
            v = cons.pop(timeout=4 * liveness)
        except shmring.Empty:
            sys.exit(3)
        if int(v) != i:
            sys.exit(4)
        prod.push(v, timeout=4 * liveness)
    sys.exit(0)


def sleeper(name: str, timeout: float) -> None:
    """Sleep in pop() on an empty ring (one liveness slice: counted as a sleeper
    the whole time) until killed, or until a record comes: exit 0."""
    ring = shmring.Ring.attach(name)
    cons = ring.consumer(start="oldest", spin=0, liveness_interval=timeout)
    try:
        cons.pop(timeout=timeout)
    except shmring.Empty:
        sys.exit(3)
    sys.exit(0)


PUSHER = """
import os, sys
import numpy as np
import shmring
ring = shmring.Ring.attach(sys.argv[1])
prod = ring.producer()
os.getppid()  # marker in the syscall trace: the pushes start
for i in range(int(sys.argv[2])):
    prod.push(np.uint64(i))
os.getppid()  # marker: the pushes are over
"""
