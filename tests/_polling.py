"""Polling a consumer with try_pop() until its stream ends, as a user's loop would."""

from __future__ import annotations

import time

import pytest

import shmring


def poll_until_closed(cons, decode, timeout: float = 10.0):
    """Polls cons.try_pop() until it raises Closed (within timeout, else the test
    fails); returns (decoded items in the order they came, the Closed raised)."""
    got = []
    deadline = time.monotonic() + timeout
    with pytest.raises(shmring.Closed) as exc:
        while time.monotonic() < deadline:
            item = cons.try_pop()
            if item is not None:
                got.append(decode(item))
    return got, exc.value
