"""What an idle event loop costs the thread it runs in.

On this kind of machine (a virtual one) a thread that sleeps and is woken is
charged CPU time for the wake-up itself, whatever woke it: measured here 0.2-1 ms
a wake-up for a C program in epoll_wait, 1-8 ms for the interpreter after a
sleep of 0.1-2 s, and more as the host gets busier. A wait that costs nothing
while idle still shows that much, so an idle wait is measured beside a bare
sleep of the same length in the same loop (the baseline), and the number of
times the thread went to sleep (its voluntary context switches) shows any
polling directly: a wait with no timer sleeps once however long it lasts.
"""

from __future__ import annotations

import gc
import resource
import time
from typing import Any, Awaitable, Callable


class Window:
    """The loop thread's CPU seconds, wall seconds and sleeps over one awaited call."""

    def __init__(self, cpu: float, wall: float, sleeps: int) -> None:
        self.cpu, self.wall, self.sleeps = cpu, wall, sleeps

    def __repr__(self) -> str:
        return f"Window(cpu={self.cpu * 1e3:.1f} ms, wall={self.wall:.2f} s, sleeps={self.sleeps})"


def _now() -> tuple[float, float, int]:
    return time.thread_time(), time.monotonic(), resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


async def window(make: Callable[[], Awaitable[Any]], expect: type[BaseException] | None = None) -> Window:
    """Awaits make() in the calling (loop) thread and measures it. A full
    collection of the test run's heap (tens of ms, set off by any allocation)
    is not what a wait costs: it is done first and the collector is off during
    the window. expect: an exception the call ends with (a timeout)."""
    gc.collect()
    gc.disable()
    try:
        c0, t0, s0 = _now()
        try:
            await make()
        except BaseException as exc:
            if expect is None or not isinstance(exc, expect):
                raise
        else:
            if expect is not None:
                raise AssertionError(f"expected {expect.__name__}")
        c1, t1, s1 = _now()
    finally:
        gc.enable()
    return Window(c1 - c0, t1 - t0, s1 - s0)
