"""Shared fixtures: unique ring names (unlinked at teardown) and start methods."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sys

import pytest

import shmring

# Worker functions live in tests/_workers.py; make it importable as `_workers`
# whatever pytest's import mode is, and in spawn/forkserver children (which copy
# the parent's sys.path).
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

_counter = itertools.count()


def _unlink_quietly(name: str) -> None:
    try:
        shmring.unlink(name)
    except FileNotFoundError:
        pass


def make_ring_name() -> str:
    """A fresh short name: letters, digits, '-' only, at most 25 bytes."""
    name = f"t{os.getpid()}-{next(_counter)}"
    assert len(name) <= 25
    return name


@pytest.fixture
def ring_name():
    """A unique ring name; the ring (if any) is unlinked at teardown."""
    name = make_ring_name()
    yield name
    _unlink_quietly(name)


@pytest.fixture
def ring_names():
    """A factory of unique ring names, all unlinked at teardown."""
    names = []

    def new() -> str:
        n = make_ring_name()
        names.append(n)
        return n

    yield new
    for n in names:
        _unlink_quietly(n)


START_METHODS = ["fork", "spawn"]


@pytest.fixture(params=START_METHODS)
def mp_ctx(request):
    """A multiprocessing context for each start method (fork, spawn)."""
    return multiprocessing.get_context(request.param)



class RingRegistry:
    """Creates/attaches rings for a test and keeps them alive until teardown,
    then closes them (which closes every producer/consumer made through them).

    Keeping each Ring (and so its mapping) referenced until its handles are closed
    matters: handles left in a garbage cycle (a failed assertion's traceback is one)
    must not outlive the mapping they point into."""

    def __init__(self):
        self.rings = []

    def add(self, ring):
        self.rings.append(ring)
        return ring

    def create(self, *args, **kwargs):
        return self.add(shmring.Ring.create(*args, **kwargs))

    def attach(self, *args, **kwargs):
        return self.add(shmring.Ring.attach(*args, **kwargs))

    def close_all(self):
        for r in reversed(self.rings):
            r.close()
        self.rings.clear()


@pytest.fixture
def rings():
    """Registry of the rings a test uses; see RingRegistry."""
    reg = RingRegistry()
    yield reg
    reg.close_all()


@pytest.fixture
def procs():
    """Process starter; anything still alive at teardown is killed."""
    started = []

    def start(ctx, target, *args, **kwargs):
        p = ctx.Process(target=target, args=args, kwargs=kwargs, daemon=True)
        p.start()
        started.append(p)
        return p

    yield start
    for p in started:
        if p.is_alive():
            p.kill()
        p.join(10)


@pytest.fixture
def popen():
    """subprocess.Popen in a new session; the whole session is SIGKILLed and
    reaped at teardown, so a hung child (and its children) never outlives a test."""
    import signal
    import subprocess

    started = []

    def start(args, **kwargs):
        p = subprocess.Popen(args, start_new_session=True, **kwargs)
        started.append(p)
        return p

    yield start
    for p in started:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(10)
