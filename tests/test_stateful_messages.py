"""Stateful property tests of message rings against a pure-Python model of the
frames (16-byte units, 32-byte headers, padding frames at the wrap).

One process plays the producer and every consumer, all timeouts are 0, so the
model predicts each call exactly in queue and broadcast-block mode: which message
each consumer gets, batch sizes (a consumer sizes a claim by its private copy of
the head, as the model does), and exactly when push raises Full (the frame plus
any padding must fit before the oldest unreleased unit, or the slowest cursor,
plus the ring size). Views may stay open across steps and hold their frames.
In overwrite mode the model checks what must hold whatever the interleaving:
every message arrives intact and in order, and received + dropped is exactly
what was sent, in messages and in bytes.

Deterministic (derandomize=True); SHMRING_HYPOTHESIS_EXAMPLES raises the count.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import shmring
from conftest import make_ring_name

NBYTES = 512
UNITS = NBYTES // 16
MAXM = NBYTES // 2 - 32
_EXAMPLES = int(os.environ.get("SHMRING_HYPOTHESIS_EXAMPLES", "150"))

SETTINGS = settings(max_examples=_EXAMPLES, stateful_step_count=60, deadline=None, database=None,
                    derandomize=True, suppress_health_check=list(HealthCheck), print_blob=True)


def frame_units(n: int) -> int:
    return 2 + (n + 15) // 16


def body(seq: int, n: int) -> bytes:
    return bytes([seq % 251]) * n


class MsgMachine(RuleBasedStateMachine):
    mode = "queue"
    overflow = "block"

    @initialize()
    def setup(self):
        self.name = make_ring_name()
        self.ring = shmring.Ring.create(self.name, nbytes=NBYTES, mode=self.mode, overflow=self.overflow)
        assert self.ring.max_message == MAXM
        self.prod = self.ring.producer()
        self.head = 0
        self.msgs = []  # (seq, start incl. padding, frame pos, end, len)
        self.cons = {}  # i -> dict(h=consumer, hc=head copy, next=index, cursor=units, view=None, got=[])
        self.tail_idx = 0  # queue: the next unclaimed message
        self.sent_bytes = 0

    def teardown(self):
        if getattr(self, "ring", None) is not None:
            self.ring.close()
            shmring.unlink(self.name)

    # -- model -------------------------------------------------------------------

    def _held_starts(self):
        return [c["view"][0] for c in self.cons.values() if c["view"] is not None]

    def _room_end(self) -> int:
        """Units below this may be written."""
        if self.mode == "queue":
            starts = self._held_starts()
            starts.append(self.msgs[self.tail_idx][1] if self.tail_idx < len(self.msgs) else self.head)
            return min(starts) + UNITS
        if self.overflow == "overwrite" or not self.cons:
            return self.head + UNITS
        return min(c["cursor"] for c in self.cons.values()) + UNITS

    # -- producer ------------------------------------------------------------------

    @rule(n=st.one_of(st.integers(0, MAXM), st.sampled_from([0, 1, 15, 16, 17, MAXM - 1, MAXM])))
    def push(self, n):
        seq = len(self.msgs)
        u = frame_units(n)
        left = UNITS - self.head % UNITS
        pad = left if u > left else 0
        fits = self.head + pad + u <= self._room_end()
        try:
            self.prod.push(body(seq, n), timeout=0)
        except shmring.Full:
            assert not fits, f"Full with room: head {self.head} need {pad + u} end {self._room_end()}"
            return
        assert fits, f"push succeeded without room: head {self.head} need {pad + u} end {self._room_end()}"
        self.msgs.append((seq, self.head, self.head + pad, self.head + pad + u, n))
        self.head += pad + u
        self.sent_bytes += n

    @rule(n=st.integers(MAXM + 1, 4 * MAXM))
    def push_too_large(self, n):
        with pytest.raises(ValueError, match=f"at most {MAXM} bytes"):
            self.prod.push(b"x" * n, timeout=0)

    # -- consumers --------------------------------------------------------------------

    @precondition(lambda self: len(self.cons) < 3)
    @rule()
    def join(self):
        i = max(self.cons, default=-1) + 1
        h = self.ring.consumer(start="latest")
        self.cons[i] = dict(h=h, hc=self.head, next=len(self.msgs), cursor=self.head, view=None, got=[],
                            dropped=0)

    def _claim(self, c, mx):
        """The messages a claim of up to mx gets, as the C core sizes it."""
        if self.mode == "queue":
            first = self.tail_idx
            start = self.msgs[first][1] if first < len(self.msgs) else self.head
        else:
            first = c["next"]
            start = c["cursor"]
        if start >= c["hc"]:
            c["hc"] = self.head
        out = []
        k = first
        while len(out) < mx and k < len(self.msgs) and self.msgs[k][1] < c["hc"]:
            out.append(self.msgs[k])
            k += 1
        return out

    def _check(self, got, want):
        assert [bytes(g) for g in got] == [body(m[0], m[4]) for m in want]

    def _consumed(self, c, want):
        if self.mode == "queue":
            self.tail_idx += len(want)
        else:
            c["next"] += len(want)
        c["got"] += [m[0] for m in want]

    @precondition(lambda self: self.cons and self.overflow == "block")
    @rule(data=st.data(), mx=st.integers(1, 6))
    def pop_many(self, data, mx):
        i = data.draw(st.sampled_from(sorted(self.cons)))
        c = self.cons[i]
        if c["view"] is not None:
            return
        want = self._claim(c, mx)
        if not want:
            with pytest.raises(shmring.Empty):
                c["h"].pop_many(mx, timeout=0)
            return
        got = c["h"].pop_many(mx, timeout=0) if mx > 1 else [c["h"].pop(timeout=0)]
        self._check(got, want)
        self._consumed(c, want)
        if self.mode != "queue":
            c["cursor"] = want[-1][3]

    @precondition(lambda self: self.cons and self.overflow == "block")
    @rule(data=st.data())
    def open_view(self, data):
        i = data.draw(st.sampled_from(sorted(self.cons)))
        c = self.cons[i]
        if c["view"] is not None:
            return
        want = self._claim(c, 1)
        if not want:
            with pytest.raises(shmring.Empty):
                c["h"].view(timeout=0)
            return
        v = c["h"].view(timeout=0)
        mv = v.__enter__()
        self._check([mv], want)
        start = want[0][1] if self.mode == "queue" else c["cursor"]
        c["view"] = (start, v, want)
        self._consumed(c, want)

    @precondition(lambda self: any(c["view"] is not None for c in self.cons.values()))
    @rule(data=st.data())
    def close_view(self, data):
        i = data.draw(st.sampled_from(sorted(k for k, c in self.cons.items() if c["view"] is not None)))
        c = self.cons[i]
        start, v, want = c["view"]
        v.__exit__(None, None, None)
        c["view"] = None
        if self.mode != "queue":
            c["cursor"] = want[-1][3]

    @precondition(lambda self: self.cons)
    @rule(data=st.data())
    def leave(self, data):
        i = data.draw(st.sampled_from(sorted(self.cons)))
        c = self.cons.pop(i)
        if c["view"] is not None:
            c["view"][1].__exit__(None, None, None)
        c["h"].close()

    # overwrite: whatever arrives is intact and in order; the loss is exact
    @precondition(lambda self: self.cons and self.overflow == "overwrite")
    @rule(data=st.data(), mx=st.integers(1, 6))
    def pop_overwrite(self, data, mx):
        i = data.draw(st.sampled_from(sorted(self.cons)))
        c = self.cons[i]
        try:
            got = c["h"].pop_many(mx, timeout=0)
        except shmring.Empty:
            return
        for g in got:
            seq = next(m[0] for m in self.msgs[c["next"]:] if body(m[0], m[4]) == g and m[0] >= c["next"])
            c["next"] = seq + 1
            c["got"].append(seq)

    @invariant()
    def counters(self):
        if not hasattr(self, "ring"):
            return
        st_ = self.ring.stats()
        assert st_["pushed"] == len(self.msgs) and st_["bytes_pushed"] == self.sent_bytes
        for c in self.cons.values():
            got = c["got"]
            assert got == sorted(set(got))
            if self.overflow == "block":
                assert c["h"].dropped == 0
            else:
                # every message from the join on was received or counted lost, exactly
                joined = c.setdefault("joined", len(self.msgs) if not got and c["next"] == len(self.msgs) else None)
                h = c["h"]
                assert h.popped == len(got)
                if got:
                    lost = set(range(got[0] if joined is None else joined, got[-1] + 1)) - set(got)
                    assert h.dropped >= len([s for s in lost if s < got[-1]])
        if self.mode == "queue":
            assert st_["popped"] <= self.tail_idx


class QueueMessages(MsgMachine):
    mode = "queue"


class BroadcastBlockMessages(MsgMachine):
    mode = "broadcast"


class BroadcastOverwriteMessages(MsgMachine):
    mode = "broadcast"
    overflow = "overwrite"


TestQueueMessages = QueueMessages.TestCase
TestQueueMessages.settings = SETTINGS
TestBroadcastBlockMessages = BroadcastBlockMessages.TestCase
TestBroadcastBlockMessages.settings = SETTINGS
TestBroadcastOverwriteMessages = BroadcastOverwriteMessages.TestCase
TestBroadcastOverwriteMessages.settings = SETTINGS
