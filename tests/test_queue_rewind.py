"""A queue-mode message ring's producer can start the lap again early while its
consumers keep up (messages.c m_rewind_pad; off by default, turned on here per
producer): what arrives through many such rewinds, a consumer that falls behind
and catches up, the room a pause right after a rewind leaves, a producer killed
on a rewound lane; and that by default a producer whose consumer does not run
meanwhile has the whole ring."""

from __future__ import annotations

import multiprocessing
import os
import queue
import random
import signal

import numpy as np
import pytest

import shmring
import _mpq_workers as W

LANE_WINDOW = W.LANE_WINDOW
ITEM = 8 * W.BIG_WORDS  # the array's bytes; the frame adds the pickle and headers


def _frame_bound():
    """A generous bound on one 64 KiB item's frame (body, pickle, headers)."""
    return ITEM + 4096


def put_get_offsets(q, n, first=0):
    """Puts then gets n 64 KiB items in turn; the lane offset of each put, and
    each item checked as it comes back."""
    prod = q._lane_producer()
    prod._set_rewind(LANE_WINDOW)
    offs = []
    for seq in range(first, first + n):
        offs.append(prod._lap_offset())
        q.put(W.big_item(0, seq), timeout=10)
        assert W.big_check(q.get(timeout=10)) == (0, seq)
    return offs


def test_lane_stays_in_its_window_while_the_consumer_keeps_up():
    q = shmring.Queue()  # an 8 MiB lane
    n = 400              # 25 MiB: three laps of the lane without rewinds
    offs = put_get_offsets(q, n)
    rewinds, top = W.lap_moves(offs)
    # every frame ends within the window plus a frame (the one that crossed it)
    assert top <= LANE_WINDOW + _frame_bound(), top
    assert rewinds >= n * ITEM // (LANE_WINDOW + _frame_bound()) - 1
    s = q.stats()
    assert s["put"] == s["got"] == n and s["items"] == 0 and s["lost"] == 0


def test_without_rewind_the_lane_cycles_whole():
    """The same stream with the rewind off (the default) walks the whole lane:
    the test above sees the policy, not a coincidence of sizes."""
    q = shmring.Queue()
    prod = q._lane_producer()
    offs = []
    for seq in range(200):
        offs.append(prod._lap_offset())
        q.put(W.big_item(0, seq), timeout=10)
        assert W.big_check(q.get(timeout=10)) == (0, seq)
    assert W.lap_moves(offs)[1] > q.nbytes // 2


def test_by_default_put_then_get_in_one_thread_has_the_whole_lane():
    """One thread puts a batch, then gets it, many times: with the default
    settings every batch that fits nbytes goes in without waiting, wherever the
    lane's lap stands (a rewind's padding would leave a window of room here, and
    the put would wait for a get that this thread can never make)."""
    q = shmring.Queue()
    per = 24  # 1.5 MiB a batch in an 8 MiB lane; 60 batches are 11 laps
    for r in range(60):
        for i in range(per):
            q.put_nowait(W.big_item(0, r * per + i))
        assert [W.big_check(q.get_nowait()) for _ in range(per)] == [(0, r * per + i) for i in range(per)]
    s = q.stats()
    assert s["put"] == s["got"] == 60 * per and s["items"] == 0


def test_consumer_falls_behind_then_catches_up():
    q = shmring.Queue()
    prod = q._lane_producer()
    prod._set_rewind(LANE_WINDOW)
    n_behind = 100  # 6.4 MiB put before any get: past the window, within the lane
    offs = []
    for seq in range(n_behind):
        offs.append(prod._lap_offset())
        q.put_nowait(W.big_item(0, seq))  # never waits: the whole lane is there
    assert max(offs) > 4 * LANE_WINDOW  # the start was never free: no rewind
    assert [W.big_check(q.get(timeout=10)) for _ in range(n_behind)] == [(0, s) for s in range(n_behind)]
    # caught up: back into the window within a lap, and there to stay
    offs = put_get_offsets(q, 300, first=n_behind)
    assert max(offs[150:]) <= LANE_WINDOW + _frame_bound()
    assert q.stats()["got"] == n_behind + 300


def test_pause_right_after_a_rewind_leaves_a_window_then_the_lane():
    """A padding frame left by a rewind holds the rest of the lap until the
    item after it is taken: the room a pause leaves is about the window, and
    the whole lane again once the consumer takes that item."""
    q = shmring.Queue()
    prod = q._lane_producer()
    prod._set_rewind(LANE_WINDOW)
    seq = 0
    while True:  # steady put/get until a put is placed by a rewind
        off = prod._lap_offset()
        q.put(W.big_item(0, seq))
        seq += 1
        if prod._lap_offset() < off:
            break
        assert W.big_check(q.get(timeout=10))[1] == seq - 1
        assert seq < 100, "no rewind within 100 items"
    rewound = seq - 1
    with pytest.raises(queue.Full):
        while True:
            q.put_nowait(W.big_item(0, seq))
            seq += 1
    paused = seq - rewound  # in flight, the rewound item included
    assert LANE_WINDOW // (ITEM + 4096) - 1 <= paused <= (LANE_WINDOW + 2 * _frame_bound()) // ITEM, paused
    assert W.big_check(q.get(timeout=10)) == (0, rewound)  # and its padding frame with it
    with pytest.raises(queue.Full):
        while True:
            q.put_nowait(W.big_item(0, seq))
            seq += 1
    in_flight = seq - rewound - 1
    assert in_flight >= (q.nbytes - LANE_WINDOW) // _frame_bound(), in_flight
    got = [W.big_check(q.get(timeout=10))[1] for _ in range(in_flight)]
    assert got == list(range(rewound + 1, seq))
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_message_ring_many_laps_random_batches(ring_name, rings):
    """A queue-mode message ring with a small window: random sizes, random
    numbers in flight, many rewinds; every message once, in order, intact. A
    batch stays within the room a rewind leaves (the window less a frame: see
    the pause test above), as this one thread pushes a batch before it pops."""
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rnd = random.Random(seed)
    ring = rings.create(ring_name, nbytes=64 << 10)
    prod, cons = ring.producer(), ring.consumer()
    assert prod._lap_offset() == 0
    prod._set_rewind(8 << 10)
    sent = got = total = 0
    offs = []
    while sent < 3000:
        k = rnd.randint(1, 6)
        for _ in range(k):
            offs.append(prod._lap_offset())
            body = bytes([sent % 251]) * rnd.randint(0, 1000) + sent.to_bytes(4, "little")
            prod.push(body, timeout=5)
            sent += 1
            total += len(body)
        while got < sent:
            for m in cons.pop_many(sent - got, timeout=5):
                m = bytes(m)
                assert int.from_bytes(m[-4:], "little") == got
                assert m[:-4] == bytes([got % 251]) * (len(m) - 4)
                got += 1
    rewinds, top = W.lap_moves(offs)
    # six frames of up to 1 KiB may go in past the window before the start is free
    assert top <= (8 << 10) + 6 * 1100, top
    assert rewinds > total // (64 << 10) * 4  # far more laps than the ring alone makes
    assert cons.popped == sent and cons.dropped == 0


@pytest.mark.parametrize("overflow", ["block", "overwrite"])
def test_broadcast_rings_never_rewind(ring_name, rings, overflow):
    """Broadcast keeps its whole lap as history for late joiners and lapped
    readers: the window is ignored there."""
    ring = rings.create(ring_name, nbytes=64 << 10, mode="broadcast", overflow=overflow)
    prod, cons = ring.producer(), ring.consumer()
    prod._set_rewind(8 << 10)
    offs = []
    for i in range(200):
        offs.append(prod._lap_offset())
        prod.push(bytes([i]) * 1000, timeout=5)
        assert bytes(cons.pop(timeout=5)) == bytes([i]) * 1000
    assert max(offs) > 48 << 10


def test_queue_mode_tiny_ring_keeps_its_whole_room(ring_name, rings):
    """A window over a quarter of the ring is refused (left off): a ring that
    small keeps all of its room for messages in flight."""
    ring = rings.create(ring_name, nbytes=4096)
    prod, cons = ring.producer(), ring.consumer()
    prod._set_rewind(2048)
    for rnd in range(20):
        n = 0
        while True:
            try:
                prod.push(bytes([n]) * 200, timeout=0)
            except shmring.Full:
                break
            n += 1
        assert n >= 4096 // 2 // 240, n  # at least half the ring, wherever the lap starts
        assert [bytes(cons.pop(timeout=5)) for _ in range(n)] == [bytes([i]) * 200 for i in range(n)]


def test_many_laps_across_processes(procs):
    """Two producer processes, two consumer processes (fork and spawn), 64 KiB
    items through many rewinds of each lane: exactly once, per-producer order,
    every word checked. maxsize keeps the producers from running far ahead of
    the consumers (as their own pace would on a machine with cores to spare),
    so the lanes rewind."""
    q = shmring.Queue(maxsize=4)
    n_prod, each = 2, 800
    pipes_c = []
    cs = []
    for method in ("fork", "spawn"):
        ctx = multiprocessing.get_context(method)
        a, b = ctx.Pipe()
        pipes_c.append(a)
        cs.append(procs(ctx, W.big_consume, q, b))
    fork = multiprocessing.get_context("fork")
    pipes_p = []
    ps = []
    for pid in range(n_prod):
        a, b = fork.Pipe()
        pipes_p.append(a)
        ps.append(procs(fork, W.big_produce, q, pid, each, b))
    offsets = []
    for a in pipes_p:
        assert a.poll(120)
        offsets.append(a.recv())
    for p in ps:
        p.join(60)
        assert p.exitcode == 0
    for _ in cs:
        q.put(None)
    parts = []
    for a in pipes_c:
        assert a.poll(120)
        parts.append(a.recv())
    for c in cs:
        c.join(60)
        assert c.exitcode == 0
    allp = np.concatenate(parts)
    assert len(allp) == n_prod * each
    assert len({(int(p), int(s)) for p, s in allp}) == len(allp), "an item arrived twice"
    for part in parts:
        for pid in range(n_prod):
            seqs = part[part[:, 0] == pid][:, 1]
            assert np.all(np.diff(seqs) > 0), f"producer {pid}'s items out of order"
    # each lane did rewind (far more returns to the start than 50 MiB makes in 8 MiB laps)
    for offs in offsets:
        assert W.lap_moves(offs)[0] > 2 * each * ITEM // q.nbytes
    s = q.stats()
    assert s["put"] == s["got"] == n_prod * each + len(cs) and s["lost"] == 0 and s["abandoned"] == 0


def test_producer_killed_on_a_rewound_lane(procs):
    """SIGKILL of a producer whose lane has rewound many times: everything it
    published arrives once and in order, its loss is counted (at most the item
    it was writing), and the next producer puts through the queue as before."""
    ctx = multiprocessing.get_context("fork")
    q = shmring.Queue()
    ready = ctx.Event()
    p = procs(ctx, W.big_produce_until_killed, q, 0, ready, 10)
    got = []
    while not ready.is_set():
        got.append(W.big_check(q.get(timeout=30)))
        assert len(got) < 100_000
    for _ in range(50):  # a little more, so the kill lands mid-stream
        got.append(W.big_check(q.get(timeout=30)))
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert p.exitcode == -signal.SIGKILL
    while True:
        try:
            got.append(W.big_check(q.get(timeout=0.5)))
        except queue.Empty:
            break
    assert got == [(0, s) for s in range(len(got))]
    q._queue_mapping.recover()
    s = q.stats()
    assert s["put"] == s["got"] == len(got) and s["items"] == 0
    assert s["admitted"] == s["put"] and s["lost"] in (0, 1)
    # the next producer (it may take over the dead one's lane) is delivered whole
    a, b = ctx.Pipe()
    p2 = procs(ctx, W.big_produce, q, 1, 300, b)
    after = [W.big_check(q.get(timeout=30)) for _ in range(300)]
    assert after == [(1, s) for s in range(300)]
    assert a.poll(60)
    a.recv()
    p2.join(30)
    assert p2.exitcode == 0
