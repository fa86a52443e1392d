"""Tests that put two sides of a ring on two CPUs: skip without two, pin this process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest


def two_cpus(why: str) -> list[int]:
    """This process's CPUs, sorted; the test is skipped, saying why, with fewer than two."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip(f"needs two CPUs: {why}")
    return cpus


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """This process on `cpu` for the block, on the CPUs it had before afterwards."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
