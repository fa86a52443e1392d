"""try_pop() on message consumers: the next message or None at once, never Empty."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import shmring
from _polling import poll_until_closed
import _msg_workers as MW

MODES = [("queue", "block"), ("broadcast", "block"), ("broadcast", "overwrite")]


@pytest.mark.parametrize("mode,overflow", MODES)
def test_try_pop_returns_each_message_then_none_then_closed(ring_name, rings, mode, overflow):
    ring = rings.create(ring_name, nbytes=1 << 16, mode=mode, overflow=overflow)
    prod, cons = ring.producer(), ring.consumer()
    assert cons.try_pop() is None
    sent = [b"", b"abc", np.arange(7, dtype="<i4"), {"k": [1, 2]}, bytes(range(200))]
    for obj in sent:
        prod.push(obj)
    got = [cons.try_pop() for _ in sent]
    assert got[:2] == [b"", b"abc"] and got[3] == {"k": [1, 2]} and got[4] == bytes(range(200))
    assert got[2].dtype == np.dtype("<i4") and got[2].tolist() == list(range(7))
    assert cons.try_pop() is None
    assert cons.popped == len(sent)
    prod.push(b"last")
    prod.close()
    assert cons.try_pop() == b"last"
    with pytest.raises(shmring.Closed):
        cons.try_pop()


def test_try_pop_counts_what_the_producer_lapped(ring_name, rings):
    ring = rings.create(ring_name, nbytes=256, mode="broadcast", overflow="overwrite")
    prod, cons = ring.producer(), ring.consumer()
    for i in range(20):
        prod.push(bytes([i]) * 40)
    first = cons.try_pop()
    assert first is not None and len(first) == 40
    rest = []
    while (m := cons.try_pop()) is not None:
        rest.append(m)
    # every message is delivered or counted lost, in order, exactly once
    seqs = [first[0]] + [m[0] for m in rest]
    assert seqs == list(range(20 - len(seqs), 20))
    assert cons.dropped == 20 - len(seqs) and cons.dropped > 0


def test_try_pop_keeps_a_message_that_does_not_decode_from_hiding_the_next(ring_name, rings):
    ring = rings.create(ring_name, nbytes=1 << 12)
    prod, cons = ring.producer(), ring.consumer(allow_pickle=False)
    prod.push({"pickled": True})
    prod.push(b"after")
    with pytest.raises(shmring.errors.PickleRefusedError):
        cons.try_pop()
    assert cons.try_pop() == b"after"
    assert cons.try_pop() is None


def test_try_pop_on_a_closed_handle_is_a_clear_error(ring_name, rings):
    ring = rings.create(ring_name, nbytes=1 << 12)
    cons = ring.consumer()
    cons.close()
    with pytest.raises(shmring.Closed, match="handle is closed"):
        cons.try_pop()


@pytest.mark.parametrize("mode,overflow", [("queue", "block"), ("broadcast", "block")])
def test_polling_with_try_pop_receives_every_message_across_processes(
        ring_name, rings, procs, mp_ctx, mode, overflow):
    ring = rings.create(ring_name, nbytes=1 << 14, mode=mode, overflow=overflow)
    cons = ring.consumer()
    n = 3000
    p = procs(mp_ctx, MW.producer, ring, n, 7)
    maxp = ring.max_message - MW.ENV.size
    got, empty_polls = [], 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            m = cons.try_pop()
            if m is None:
                empty_polls += 1
                continue
            got.append(MW.check(m, maxp))  # every byte checked
    except shmring.Closed:
        pass
    p.join(30)
    assert p.exitcode == 0
    assert got == list(range(n))  # in order, exactly once
    assert cons.popped == n


def _push_then_die(ring, n):
    prod = ring.producer()
    for i in range(n):
        prod.push(i.to_bytes(4, "little"))
    os.kill(os.getpid(), signal.SIGKILL)


def test_polling_with_try_pop_ends_when_the_producer_dies(ring_name, rings, procs, mp_ctx):
    """The liveness check still runs between polls that find nothing."""
    ring = rings.create(ring_name, nbytes=1 << 12)
    cons = ring.consumer(liveness_interval=0.02)
    p = procs(mp_ctx, _push_then_die, ring, 5)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    got, closed = poll_until_closed(cons, lambda m: int.from_bytes(m, "little"))
    assert closed.reason == "producer died"
    assert got == [0, 1, 2, 3, 4]
