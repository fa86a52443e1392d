"""The bridge over loopback, sender and receiver in this process (their own threads):
semantics, handshake errors, hostile peers, CURVE, the command line."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

zmq = pytest.importorskip("zmq", reason="the bridge needs pyzmq (pip install 'shmring[bridge]')")

import shmring
from _bridge_util import (MsgReader, Reader, check_queue_delivery, consumers_of, drain_queue, make_msg,  # noqa: F401
                          make_qitem, msg_seq, names, produce_msgs, put_items, wait_for)  # names is a fixture
from _records import REC, make_records, n_bad
from shmring import bridge
from shmring.bridge import HEADER, MAGIC, BridgeError, Receiver, Sender, read_sidecar
from _procs import run

LOOP = "tcp://127.0.0.1:0"


@pytest.fixture
def bridges():
    """Bridges started by a test; all stopped at teardown."""
    started = []

    def add(b):
        started.append(b)
        return b

    yield add
    for b in reversed(started):
        try:
            b.stop()
        except Exception:
            pass


def pull_all(name, n, timeout=20.0, start="oldest"):
    """Read ring `name` until n records arrived (or the stream closed)."""
    r = shmring.Ring.attach(name)
    out = []
    got = 0
    end = time.monotonic() + timeout
    with r.consumer(start=start) as c:
        while got < n and time.monotonic() < end:
            try:
                a = c.pop_many(4096, timeout=0.2)
            except shmring.Empty:
                continue
            except shmring.Closed:
                break
            out.append(a)
            got += len(a)
    r.close()
    return np.concatenate(out) if out else np.empty(0, r.dtype)


def push(ring, start, n, batch=500):
    with ring.producer() as p:
        for i in range(start, start + n, batch):
            p.push_many(make_records(i, min(batch, start + n - i)), timeout=20)


# -- semantics -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.dtype("<f8"), np.dtype((np.uint8, (16, 16))),
                                   np.dtype([("a", "<i4"), ("b", "S3"), ("m", "<f4", (2, 3))])])
@pytest.mark.parametrize("mode", ["broadcast", "queue"])
def test_any_dtype_both_modes_round_trip(names, rings, bridges, mode, dtype):
    src, dst = names(), names()
    ring = rings.create(src, dtype, 4096, mode=mode)
    s = bridges(Sender(ring, LOOP, max_records=100).start())
    rcv = bridges(Receiver(s.bound, dst).start())
    assert rcv.wait_ready(10)
    out = rings.attach(dst)
    assert (out.dtype, out.mode, out.overflow, out.capacity) == (dtype, mode, "block", 4096)
    data = np.frombuffer(np.random.default_rng(7).bytes(dtype.itemsize * 3000), dtype=dtype)
    with out.consumer(start="oldest") as c, ring.producer() as p:
        p.push_many(data[:1000], timeout=10)
        p.push_many(data[1000:], timeout=10)
        got = []
        while sum(map(len, got)) < len(data):
            got.append(c.pop_many(4096, timeout=10))
    assert np.concatenate(got).tobytes() == data.tobytes()
    assert rcv.counters["records"] == 3000 and rcv.counters["lost"] == 0


@pytest.mark.parametrize("mode", ["broadcast", "queue"])
def test_batches_received_into_the_ring_and_across_its_wrap_arrive_exactly_once(names, rings, bridges, mode):
    """Batches of up to 96 records into a ring of 512 (a view of the sending ring of
    1024 never crosses its wrap, so a receiving ring as large would never see a
    batch straddle its own): most are received straight into room reserved in the
    ring, those that would straddle its wrap point go the general way; every record
    arrives once, in order, intact."""
    src, dst = names(), names()
    ring = rings.create(src, REC, 1000, mode=mode)
    s = bridges(Sender(ring, LOOP, max_records=96).start())
    rcv = bridges(Receiver(s.bound, dst, capacity=512).start())
    assert rcv.wait_ready(10)
    n = 30_000
    reader = Reader(dst, timeout=60)
    push(ring, 0, n, batch=96)
    wait_for(lambda: rcv.counters["records"] == n, timeout=60, what="every record")
    reader.thread.join(30)
    got = np.concatenate(reader.parts)
    reader.stop()
    assert got["seq"].tolist() == list(range(n)) and n_bad(got) == 0
    c = rcv.counters
    assert (c["lost"], c["duplicates"], c["bad"]) == (0, 0, 0)
    assert 0 < rcv.direct_batches < c["batches"], (rcv.direct_batches, c["batches"])


@pytest.mark.parametrize("mode", ["broadcast", "queue"])
def test_a_spinning_sender_forwards_a_sparse_stream_once_in_order(names, rings, bridges, mode):
    """spin: the sender's consumer busy-polls 2 ms before it sleeps. Records pushed
    one at a time, 0.2 ms apart, then a dense burst: every record arrives once, in
    order, intact, and the spin took some of the sparse ones with no sleep."""
    src, dst = names(), names()
    ring = rings.create(src, REC, 4096, mode=mode)
    s = bridges(Sender(ring, LOOP, spin=0.002).start())
    rcv = bridges(Receiver(s.bound, dst).start())
    assert rcv.wait_ready(10)
    reader = Reader(dst, timeout=60)
    sparse, dense = 400, 20_000
    with ring.producer() as p:
        for i in range(sparse):
            p.push_many(make_records(i, 1), timeout=10)
            time.sleep(0.0002)
        for i in range(sparse, sparse + dense, 1000):
            p.push_many(make_records(i, 1000), timeout=10)
    wait_for(lambda: rcv.counters["records"] == sparse + dense, timeout=60, what="every record")
    reader.thread.join(30)
    got = np.concatenate(reader.parts)
    reader.stop()
    assert got["seq"].tolist() == list(range(sparse + dense)) and n_bad(got) == 0
    c = rcv.counters
    assert (c["lost"], c["duplicates"], c["bad"]) == (0, 0, 0)
    assert s.counters["records"] == sparse + dense
    st = s._cons._wait_stats()
    assert 0 < st["spin_won"] <= st["spun"], st


def test_sender_spin_must_not_be_negative(names, rings):
    ring = rings.create(names(), REC, 64)
    with pytest.raises(ValueError, match="spin"):
        Sender(ring, LOOP, spin=-1)


@pytest.mark.parametrize("mode, overflow", [("queue", "block"), ("broadcast", "block"),
                                            ("broadcast", "overwrite")])
def test_large_batches_sent_from_the_ring_arrive_intact(names, rings, bridges, mode, overflow):
    """Batches of 512 KB: lent to ZeroMQ straight from the ring (queue), copied once
    out of a view (broadcast) or copied and checked first (overwrite); the claim
    ends only once ZeroMQ is done, so the producer never overwrites what is sent."""
    src, dst = names(), names()
    dt = np.dtype((np.uint8, (32768,)))
    ring = rings.create(src, dt, 64, mode=mode, overflow=overflow)
    s = bridges(Sender(ring, LOOP, max_records=16, max_bytes=1 << 20).start())
    rcv = bridges(Receiver(s.bound, dst, capacity=1024 if overflow == "overwrite" else None).start())
    assert rcv.wait_ready(10)
    n = 600
    data = np.empty((n, 32768), np.uint8)
    data[:] = (np.arange(n) % 251)[:, None]
    data[:, :8] = np.arange(n, dtype="<u8").view(np.uint8).reshape(n, 8)
    reader = Reader(dst, timeout=60)
    with ring.producer() as p:
        for i in range(0, n, 20):
            p.push_many(data[i:i + 20], timeout=20)
    wait_for(lambda: rcv.counters["records"] + rcv.counters["lost"] == n, timeout=60, what="the stream's end")
    reader.thread.join(30)
    got = np.concatenate(reader.parts) if reader.parts else np.empty((0, 32768), np.uint8)
    reader.stop()
    seq = got[:, :8].copy().view("<u8").ravel()
    assert np.array_equal(got[:, 8:], np.broadcast_to((seq % 251).astype(np.uint8)[:, None], (len(seq), 32760)))
    assert len(seq) == rcv.counters["records"] and np.all(np.diff(seq.astype(np.int64)) > 0)
    if overflow == "block":
        assert seq.tolist() == list(range(n))
    else:
        assert rcv.counters["lost"] == s.counters["dropped_at_source"] == n - len(seq)


QUARTER = np.dtype((np.uint8, (1 << 18,)))  # one record is a frame the sender lends from the ring


def quarters(start, n):
    data = np.empty((n, 1 << 18), np.uint8)
    data[:] = (np.arange(start, start + n) % 251)[:, None]
    data[:, :8] = np.arange(start, start + n, dtype="<u8").view(np.uint8).reshape(n, 8)
    return data


def check_quarters(got):
    """The sequence numbers of 256 KiB records made by quarters(), each checked intact."""
    seq = got[:, :8].copy().view("<u8").ravel()
    assert np.array_equal(got[:, 8:], np.broadcast_to((seq % 251).astype(np.uint8)[:, None], (len(seq), (1 << 18) - 8)))
    return seq


def test_broadcast_lends_from_the_ring_and_a_stuck_host_does_not_hold_it(names, rings, bridges):
    """Broadcast lends 256 KiB frames from the ring. A host whose consumer stops
    reading stops taking them, and the claim on the lent frame would hold the
    ring's producer as long as it lags: after lend_hold the sender drops its
    connections, copies from then on, and the producer finishes while the stuck
    host still reads nothing. Each host counts exactly what it missed; what
    arrives is intact and in order, never twice."""
    src, fast, slow = names(), names(), names()
    ring = rings.create(src, QUARTER, 16, mode="broadcast")
    s = bridges(Sender(ring, LOOP, max_records=1, max_bytes=1 << 18, hwm=4, lend_hold=0.3).start())
    rf = bridges(Receiver(s.bound, fast, hwm=4).start())
    rs = bridges(Receiver(s.bound, slow, hwm=2, capacity=4).start())
    assert rf.wait_ready(10) and rs.wait_ready(10)
    wait_for(lambda: s._subs == 2, what="both subscriptions")
    fast_reader = Reader(fast, timeout=90)
    stuck_ring = rings.attach(slow)
    stuck = stuck_ring.consumer(start="oldest")  # registered, reads nothing until the end
    n = 240  # 60 MiB: more than the stuck host's socket buffers and queues take in
    with ring.producer() as p:
        for i in range(0, n, 8):
            p.push_many(quarters(i, 8), timeout=30)  # a held ring would time out here
    wait_for(lambda: rf.counters["records"] + rf.counters["lost"] == n, timeout=60, what="the fast host's end")
    c = s.counters
    # one bound or the other let go of the stuck host (which one depends on timing:
    # a lent frame not taken within the lag allowance makes the sender copy; one
    # held past lend_hold drops the connections); either way the producer finished
    assert c["lent_batches"] > 0 and c["lend_pauses"] + c["lend_resets"] >= 1, c
    fast_reader.thread.join(30)
    got = np.concatenate(fast_reader.parts)
    fast_reader.stop()
    seq = check_quarters(got)
    assert len(seq) == rf.counters["records"] == n - rf.counters["lost"]
    assert np.all(np.diff(seq.astype(np.int64)) > 0) and rf.counters["duplicates"] == 0
    parts = []
    end = time.monotonic() + 60
    while rs.counters["records"] + rs.counters["lost"] < n or len(stuck):
        assert time.monotonic() < end, ("the stuck host's end", rs.counters)
        try:
            parts.append(stuck.pop_many(64, timeout=0.2))
        except shmring.Empty:
            continue
        except shmring.Closed:
            break
    stuck.close()
    seq = check_quarters(np.concatenate(parts)) if parts else np.empty(0, np.uint64)
    assert len(seq) == rs.counters["records"] == n - rs.counters["lost"] and rs.counters["lost"] > 0
    assert np.all(np.diff(seq.astype(np.int64)) > 0) and rs.counters["duplicates"] == 0


def test_broadcast_lend_hold_zero_copies(names, rings, bridges):
    src, dst = names(), names()
    ring = rings.create(src, QUARTER, 16, mode="broadcast")
    s = bridges(Sender(ring, LOOP, max_records=2, max_bytes=1 << 19, lend_hold=0).start())
    rcv = bridges(Receiver(s.bound, dst).start())
    assert rcv.wait_ready(10)
    reader = Reader(dst, timeout=60)
    with ring.producer() as p:
        for i in range(0, 64, 8):
            p.push_many(quarters(i, 8), timeout=30)
    reader.thread.join(30)
    assert reader.ended and reader.error is None
    got = np.concatenate(reader.parts)
    reader.stop()
    assert check_quarters(got).tolist() == list(range(64))
    assert s.counters["lent_batches"] == s.counters["lend_pauses"] == s.counters["lend_resets"] == 0
    with pytest.raises(ValueError, match="lend_hold"):
        Sender(ring, LOOP, lend_hold=-1)


def test_queue_backpressure_stalls_the_sending_producer(names, rings, bridges):
    src, dst = names(), names()
    ring = rings.create(src, REC, 64, mode="queue")
    sender = bridges(Sender(ring, LOOP, max_records=16).start())
    rcv = bridges(Receiver(sender.bound, dst, capacity=64, window=2).start())
    assert rcv.wait_ready(10)
    # nobody reads dst: it fills, the receiver stops granting credit, the sender stops
    # taking records, the source fills and the producer times out
    pushed = 0
    with ring.producer() as p:
        with pytest.raises(shmring.Full) as ei:
            while True:
                p.push_many(make_records(pushed, 8), timeout=1.0)
                pushed += 8
        pushed += ei.value.pushed
        # bounded: source ring + destination ring + the credit window + the batch the
        # sender holds; never a growing buffer
        assert 64 + 64 <= pushed <= 64 + 64 + 2 * 16 + 16, pushed
        assert sender.counters["records"] <= 64 + 2 * 16
        got = pull_all(dst, pushed)
        assert sorted(got["seq"].tolist()) == list(range(pushed))
        assert n_bad(got) == 0
        # and the flow resumes once the far side reads
        reader = Reader(dst, timeout=30)
        for i in range(pushed, pushed + 5000, 100):
            p.push_many(make_records(i, 100), timeout=10)
    rest = reader.result(30)["seq"]
    assert rest.tolist() == list(range(pushed, pushed + 5000))


def test_broadcast_restart_with_start_oldest_skips_duplicates_and_counts_gaps(names, rings, bridges):
    src, dst = names(), names()
    ring = rings.create(src, REC, 1024, mode="broadcast", overflow="overwrite")
    s1 = Sender(ring, LOOP).start()
    ep = s1.bound
    rcv = bridges(Receiver(ep, dst).start())
    assert rcv.wait_ready(10)
    reader = Reader(dst, timeout=30)
    prod = ring.producer()
    prod.push_many(make_records(0, 500), timeout=10)
    wait_for(lambda: rcv.counters["records"] == 500, what="first 500")
    s1.stop()
    prod.push_many(make_records(500, 300), timeout=10)  # nobody forwards these, but the ring keeps them
    s2 = Sender(ring, ep, start="oldest").start()
    wait_for(lambda: rcv.counters["records"] == 800, what="the retained records")
    assert rcv.counters["duplicates"] == 500 and rcv.counters["lost"] == 0
    s2.stop()
    prod.push_many(make_records(800, 200), timeout=10)  # pushed while no sender runs
    s3 = bridges(Sender(ring, ep, start="latest").start())
    wait_for(lambda: rcv.counters["streams"] == 3, what="the third sender")
    prod.push_many(make_records(1000, 100), timeout=10)
    prod.close()
    wait_for(lambda: rcv.counters["records"] == 900, what="records after the gap")
    c = rcv.counters
    assert c["lost"] == 200 and c["duplicates"] == 500 and c["streams"] == 3
    seq = reader.result(10)["seq"]
    assert seq.tolist() == list(range(800)) + list(range(1000, 1100))
    assert s3.counters["records"] == 100


def test_overwrite_loss_at_the_sender_is_counted_at_the_receiver(names, rings, bridges):
    src, dst = names(), names()
    ring = rings.create(src, REC, 64, mode="broadcast", overflow="overwrite")
    s = bridges(Sender(ring, LOOP).start())
    rcv = bridges(Receiver(s.bound, dst, capacity=1 << 16).start())
    assert rcv.wait_ready(10)
    n = 200_000
    with ring.producer() as p:  # far faster than one Python sender thread forwards
        for i in range(0, n, 4096):
            p.push_many(make_records(i, min(4096, n - i)), timeout=20)
    wait_for(lambda: rcv.counters["records"] + rcv.counters["lost"] == n, what="the end of the stream")
    got = pull_all(dst, rcv.counters["records"])
    c = rcv.counters
    assert len(got) == c["records"] and n_bad(got) == 0
    assert np.all(np.diff(got["seq"].astype(np.int64)) > 0)
    assert c["lost"] == s.counters["dropped_at_source"] > 0


@pytest.mark.parametrize("hold", [0.0, 5.0])
def test_receiver_restart_resumes_with_gap_counted(names, rings, bridges, hold):
    """hold=0: what the sender published while the receiver was away is lost and
    counted exactly; hold=5: the sender waited for a receiver, so nothing is lost."""
    src, dst = names(), names()
    ring = rings.create(src, REC, 4096, mode="broadcast")
    s = bridges(Sender(ring, LOOP, hold=hold).start())
    prod = ring.producer()
    r1 = Receiver(s.bound, dst).start()
    assert r1.wait_ready(10)
    prod.push_many(make_records(0, 1000), timeout=10)
    wait_for(lambda: r1.counters["records"] == 1000, what="first part")
    r1.stop()
    wait_for(lambda: s._subs == 0, what="the sender to see the receiver leave")
    prod.push_many(make_records(1000, 700), timeout=10)  # nobody listens now
    if hold == 0:
        wait_for(lambda: s.counters["records"] == 1700, what="the sender to publish to nobody")
    r2 = bridges(Receiver(s.bound, dst).start())
    assert r2.wait_ready(10)
    prod.push_many(make_records(1700, 300), timeout=10)
    prod.close()
    lost = 700 if hold == 0 else 0
    wait_for(lambda: r2.counters["records"] + r2.counters["lost"] == 2000, what="the end after restart")
    assert r2.counters["lost"] == lost
    side = read_sidecar(dst)
    assert side["lost"] == lost and side["records"] == 2000 - lost and side["position"] == 2000
    got = pull_all(dst, 2000 - lost)
    want = list(range(1000)) + list(range(1000 + lost, 2000))
    assert got["seq"].tolist() == want


# -- message rings -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["broadcast", "queue"])
def test_message_ring_round_trip_every_kind(names, rings, bridges, procs, mode):
    """Bytes, arrays and dicts of arrays (pickled, arrays out of band), some with
    300 KB arrays that travel in frames of their own (lent from the ring itself
    in queue mode): each arrives once, in order, intact, as the object pushed."""
    src, dst = names(), names()
    ring = rings.create(src, nbytes=1 << 20, mode=mode)
    s = bridges(Sender(ring, LOOP, max_records=200).start())
    rcv = bridges(Receiver(s.bound, dst).start())
    assert rcv.wait_ready(10)
    out = rings.attach(dst)
    assert (out.kind, out.nbytes, out.mode, out.overflow) == ("messages", 1 << 20, mode, "block")
    reader = MsgReader(dst, chunk=256)
    n = 3000
    prod = procs(mp.get_context("fork"), produce_msgs, src, n, 50)
    seq = reader.result(60)
    prod.join(30)
    assert prod.exitcode == 0
    assert seq.tolist() == list(range(n))
    c, sc = rcv.counters, s.counters
    assert c["records"] == n == sc["records"] and c["lost"] == 0 and c["bad"] == 0
    assert c["bytes"] == sc["bytes"] > 300_000 * (n // 97 // 2)
    assert c["batches"] == sc["batches"]


def test_message_ring_view_and_decoded_objects_match_what_was_pushed(names, rings, bridges):
    src, dst = names(), names()
    ring = rings.create(src, nbytes=1 << 20, mode="queue")
    s = bridges(Sender(ring, LOOP).start())
    rcv = bridges(Receiver(s.bound, dst).start())
    assert rcv.wait_ready(10)
    objs = [b"", b"x" * 100_000, np.zeros((0, 3)), np.asfortranarray(np.arange(12.0).reshape(3, 4)),
            {"k": [1, 2, 3]}, "text", np.array([1 + 2j]), bytearray(b"ba")]
    with ring.producer() as p:
        p.push_many(objs, timeout=10)
    with rings.attach(dst).consumer(start="oldest") as c:
        got = [c.pop(timeout=10) for _ in objs]
    assert got[0] == b"" and got[1] == b"x" * 100_000 and got[7] == b"ba"
    assert got[2].shape == (0, 3) and np.array_equal(got[3], objs[3]) and got[3].flags.f_contiguous
    assert got[4] == {"k": [1, 2, 3]} and got[5] == "text" and got[6][0] == 1 + 2j


def test_message_ring_overwrite_loss_at_the_sender_is_counted(names, rings, bridges):
    src, dst = names(), names()
    ring = rings.create(src, nbytes=4096, mode="broadcast", overflow="overwrite")
    s = bridges(Sender(ring, LOOP).start())
    rcv = bridges(Receiver(s.bound, dst, capacity=1 << 22).start())
    assert rcv.wait_ready(10)
    reader = MsgReader(dst)
    n = 100_000
    with ring.producer() as p:  # far faster than one Python sender thread forwards
        for i in range(0, n, 1000):
            p.push_many([make_msg(4 * j) for j in range(i, min(n, i + 1000))], timeout=20)
    wait_for(lambda: rcv.counters["records"] + rcv.counters["lost"] == n, timeout=60, what="the stream's end")
    seq = reader.result(30) // 4
    c = rcv.counters
    assert len(seq) == c["records"] and np.all(np.diff(seq) > 0)
    assert c["lost"] == s.counters["dropped_at_source"] == n - len(seq) > 0


def test_message_ring_receiver_gone_gap_counted_exactly(names, rings, bridges):
    """A subscriber that drops out and comes back: what was published meanwhile is
    lost to it and counted exactly, in messages."""
    src, dst = names(), names()
    ring = rings.create(src, nbytes=1 << 20, mode="broadcast")
    s = bridges(Sender(ring, LOOP, hold=0).start())
    prod = ring.producer()
    r1 = Receiver(s.bound, dst, capacity=1 << 23).start()  # keeps all it gets, to be read at the end
    assert r1.wait_ready(10)
    prod.push_many([make_msg(i) for i in range(1000)], timeout=10)
    wait_for(lambda: r1.counters["records"] == 1000, what="first part")
    r1.stop()
    wait_for(lambda: s._subs == 0, what="the sender to see the receiver leave")
    prod.push_many([make_msg(i) for i in range(1000, 1700)], timeout=10)
    wait_for(lambda: s.counters["records"] == 1700, what="the sender to publish to nobody")
    r2 = bridges(Receiver(s.bound, dst).start())
    assert r2.wait_ready(10)
    prod.push_many([make_msg(i) for i in range(1700, 2000)], timeout=10)
    prod.close()
    wait_for(lambda: r2.counters["records"] + r2.counters["lost"] == 2000, what="the end after restart")
    assert r2.counters["lost"] == 700 and read_sidecar(dst)["position"] == 2000
    assert MsgReader(dst).result(20).tolist() == list(range(1000)) + list(range(1700, 2000))


def test_message_ring_sender_restart_oldest_skips_duplicates_latest_counts_the_gap(names, rings, bridges):
    """Positions of a message ring are message sequence numbers: a sender restarted
    with start="oldest" resends what the ring retains and the receiver skips what it
    has (duplicates), one restarted with "latest" leaves a gap counted exactly."""
    src, dst = names(), names()
    ring = rings.create(src, nbytes=1 << 22, mode="broadcast")
    s1 = Sender(ring, LOOP).start()
    ep = s1.bound
    rcv = bridges(Receiver(ep, dst, capacity=1 << 23).start())
    assert rcv.wait_ready(10)
    prod = ring.producer()
    prod.push_many([make_msg(i) for i in range(500)], timeout=10)
    wait_for(lambda: rcv.counters["records"] == 500, what="first 500")
    s1.stop()
    prod.push_many([make_msg(i) for i in range(500, 800)], timeout=10)  # retained by the ring
    s2 = Sender(ring, ep, start="oldest").start()
    wait_for(lambda: rcv.counters["records"] == 800, what="the retained messages")
    assert rcv.counters["duplicates"] == 500 and rcv.counters["lost"] == 0
    s2.stop()
    prod.push_many([make_msg(i) for i in range(800, 1000)], timeout=10)  # nobody forwards these
    bridges(Sender(ring, ep, start="latest").start())
    wait_for(lambda: rcv.counters["streams"] == 3, what="the third sender")
    prod.push_many([make_msg(i) for i in range(1000, 1100)], timeout=10)
    prod.close()
    wait_for(lambda: rcv.counters["records"] == 900, what="messages after the gap")
    c = rcv.counters
    assert c["lost"] == 200 and c["duplicates"] == 500 and c["position"] == 1100
    assert MsgReader(dst).result(20).tolist() == list(range(800)) + list(range(1000, 1100))


def test_message_ring_mismatches_are_clear_errors(names, rings, bridges):
    src = names()
    ring = rings.create(src, nbytes=1 << 16, mode="broadcast")
    s = bridges(Sender(ring, LOOP).start())
    rec_dst, small_dst = names(), names()
    rings.create(rec_dst, REC, 64, mode="broadcast")
    rings.create(small_dst, nbytes=1 << 12, mode="broadcast")
    for dst, want in ((rec_dst, r"is a records ring of dtype .*sender sends a message ring"),
                      (small_dst, r"at most 2016 bytes; the sender's carries up to 32736")):
        rcv = Receiver(s.bound, dst).start()
        with pytest.raises(BridgeError, match=want):
            rcv.wait_ready(10)
        rcv._thread.join(5)
    # a records ring meeting an existing message ring
    src2, dst2 = names(), names()
    ring2 = rings.create(src2, REC, 64, mode="broadcast")
    rings.create(dst2, nbytes=1 << 12, mode="broadcast")
    s2 = bridges(Sender(ring2, LOOP).start())
    rcv = Receiver(s2.bound, dst2).start()
    with pytest.raises(BridgeError, match=r"local ring .* is a messages ring .*sender sends a records ring"):
        rcv.wait_ready(10)
    rcv._thread.join(5)


@pytest.mark.parametrize("table, packed, owns, why", [
    (np.array([3 | 1 << 56], "<u8"), b"ab", [], "packed bodies need more"),
    (np.array([3 | 9 << 56], "<u8"), b"abc", [], "kind 9"),
    (np.array([3 | 1 << 56 | 1 << 55], "<u8"), b"", [], "frame of its own"),
    (np.array([3 | 1 << 56 | 1 << 55], "<u8"), b"", [b"abcd"], "is 3 bytes, its frame 4"),
    (np.array([2 | 1 << 56], "<u8"), b"abc", [], "are 2 bytes, the frame 3"),
])
def test_malformed_message_batches_are_refused_before_anything_is_pushed(table, packed, owns, why):
    assert why in shmring._ring.raw_check(table, len(packed), owns)


# -- handshake errors ------------------------------------------------------------


def test_dtype_mismatch_with_existing_local_ring_is_a_clear_error(names, rings, bridges):
    src, dst = names(), names()
    ring = rings.create(src, REC, 64, mode="broadcast")
    rings.create(dst, np.dtype("<f8"), 64, mode="broadcast")
    s = bridges(Sender(ring, LOOP).start())
    rcv = Receiver(s.bound, dst).start()
    with pytest.raises(BridgeError, match=r"local ring .* dtype float64.*sender sends a records ring of dtype"):
        rcv.wait_ready(10)
    with pytest.raises(BridgeError):
        rcv.stop()


def test_mode_mismatch_with_existing_local_ring_is_a_clear_error(names, rings, bridges):
    src, dst = names(), names()
    ring = rings.create(src, REC, 64, mode="broadcast")
    rings.create(dst, REC, 64, mode="queue")
    s = bridges(Sender(ring, LOOP).start())
    rcv = Receiver(s.bound, dst).start()
    with pytest.raises(BridgeError, match=r"mode 'queue'.*mode 'broadcast'"):
        rcv.wait_ready(10)
    rcv._thread.join(5)


def _fake_pub(desc: dict, kind: int = 0):
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.XPUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    hdr = HEADER.pack(MAGIC, bridge.T_DESC, kind, 0, 1, 2, 0, 0, 0, 0)
    return pub, f"tcp://127.0.0.1:{port}", [hdr, json.dumps(desc).encode()]


def _good_desc(**kw):
    d = {"proto": 1, "kind": "records", "dtype": bridge._encode_dtype(REC), "mode": "broadcast",
         "overflow": "block", "capacity": 64, "layout": shmring._ring.LAYOUT_VERSION, "name": "x"}
    d.update(kw)
    return d


@pytest.mark.parametrize("change, kind, message", [
    ({"kind": "queue", "mode": "queue", "nbytes": 1 << 16, "max_message": 32736, "maxsize": 0,
      "max_producers": 2, "max_consumers": 2, "layout": 999}, 2, "layout version 999"),
    ({"layout": 999}, 0, "layout version 999"),
    ({"proto": 7}, 0, "protocol 7"),
])
def test_kind_layout_protocol_mismatch(names, change, kind, message):
    dst = names()
    pub, ep, desc = _fake_pub(_good_desc(**change), kind)
    try:
        rcv = Receiver(ep, dst).start()
        end = time.monotonic() + 10
        while rcv.error is None and time.monotonic() < end:
            pub.poll(50)
            if pub.poll(0):
                pub.recv()
            pub.send_multipart(desc)
        with pytest.raises(BridgeError, match=message):
            rcv.stop()
        with pytest.raises(FileNotFoundError):
            shmring.Ring.attach(dst)  # nothing was created from a refused handshake
    finally:
        pub.close(0)


def test_a_kind_without_a_codec_is_named():
    with pytest.raises(BridgeError, match=r"cannot bridge rings of kind 'boards' \(it knows: messages, queue, "
                                          r"records\)"):
        bridge._codec_from_handshake("boards", {})


def test_unbindable_endpoints(names, rings):
    ring = rings.create(names(), REC, 64, mode="broadcast")
    with pytest.raises(BridgeError, match="cannot bind tcp://192.0.2.1:5555"):
        Sender(ring, "tcp://192.0.2.1:5555").start()  # not an address of this host
    with pytest.raises(BridgeError, match="cannot bind not-an-endpoint"):
        Sender(ring, "not-an-endpoint").start()
    with Sender(ring, LOOP) as s:
        with pytest.raises(BridgeError, match="Address already in use"):
            Sender(ring, s.bound).start()
    # the failed senders left no consumer behind
    assert sum(c["alive"] for c in ring.stats()["consumers"]) == 0


# -- hostile peers ---------------------------------------------------------------


def test_random_bytes_to_the_sender_port_do_not_hurt(names, rings, bridges):
    src, dst = names(), names()
    ring = rings.create(src, REC, 1024, mode="broadcast")
    s = bridges(Sender(ring, LOOP).start())
    host, port = s.bound.rsplit("/", 1)[1].rsplit(":", 1)
    rnd = random.Random(1234)
    for _ in range(20):
        with socket.create_connection((host, int(port)), timeout=0.5) as sk:
            try:
                sk.sendall(rnd.randbytes(rnd.randint(1, 20000)))
            except OSError:
                pass  # zmq hung up on us: that is the point
    rcv = bridges(Receiver(s.bound, dst).start())
    assert rcv.wait_ready(10)
    # read from the start: 2000 records overrun the receiving ring (1024) if nobody reads yet
    reader = Reader(dst, timeout=30)
    wait_for(lambda: consumers_of(dst) == 1, 10, "the reader")
    push(ring, 0, 2000)  # closing its producer ends the stream, and so the reader
    assert reader.result(30)["seq"].tolist() == list(range(2000))
    assert s.error is None and s._thread.is_alive()


def test_receiver_connected_to_a_random_byte_server_survives(names):
    dst = names()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = threading.Event()
    rnd = random.Random(99)

    def serve():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            try:
                c.sendall(rnd.randbytes(4096))
            except OSError:
                pass
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        rcv = Receiver(f"tcp://127.0.0.1:{srv.getsockname()[1]}", dst).start()
        assert not rcv.wait_ready(1.5)
        assert rcv._thread.is_alive() and rcv.error is None
        rcv.stop()
    finally:
        stop.set()
        t.join(5)
        srv.close()
    with pytest.raises(FileNotFoundError):
        shmring.Ring.attach(dst)


def test_garbage_messages_from_a_zmq_peer_are_counted_not_fatal(names):
    dst = names()
    pub, ep, desc = _fake_pub(_good_desc())
    rnd = random.Random(5)
    garbage = [
        [rnd.randbytes(48)],
        [rnd.randbytes(10), rnd.randbytes(100)],
        [HEADER.pack(MAGIC, bridge.T_DESC, 0, 0, 1, 2, 0, 0, 0, 0), b"{not json"],
        [HEADER.pack(MAGIC, bridge.T_DESC, 0, 0, 1, 2, 0, 0, 0, 0),
         json.dumps(_good_desc(dtype="__import__('os').system('false')")).encode()],
        [HEADER.pack(MAGIC, bridge.T_DESC, 0, 0, 1, 2, 0, 0, 0, 0), json.dumps(_good_desc(dtype="('v1', 'O', ())")).encode()],
        [HEADER.pack(MAGIC, 99, 0, 0, 1, 2, 0, 0, 0, 0)],
    ]
    after = [  # once configured: data that does not add up (short, ragged, too long, in pieces)
        [HEADER.pack(MAGIC, bridge.T_DATA, 0, 0, 1, 2, 0, 0, 5, 0), rnd.randbytes(64 * 4)],
        [HEADER.pack(MAGIC, bridge.T_DATA, 0, 0, 1, 2, 0, 0, 1, 0), rnd.randbytes(63)],
        [HEADER.pack(MAGIC, bridge.T_DATA, 0, 0, 1, 2, 0, 0, 2, 0), rnd.randbytes(64 * 3)],
        [HEADER.pack(MAGIC, bridge.T_DATA, 0, 0, 1, 2, 0, 0, 3, 0), rnd.randbytes(64 * 2),
         rnd.randbytes(64 * 2), rnd.randbytes(64)],
    ]
    try:
        rcv = Receiver(ep, dst).start()
        wait_for(lambda: pub.poll(0), what="the subscription")
        pub.recv()
        for g in garbage:
            pub.send_multipart(g)
        pub.send_multipart(desc)
        assert rcv.wait_ready(10)
        for g in after:
            pub.send_multipart(g)
        good = make_records(0, 13)
        pub.send_multipart([HEADER.pack(MAGIC, bridge.T_DATA, 0, 0, 1, 2, 0, 0, 10, 0), good[:10].tobytes()])
        # a batch in two frames adds up: it lands whole
        pub.send_multipart([HEADER.pack(MAGIC, bridge.T_DATA, 0, 0, 1, 2, 1, 10, 3, 0), good[10:11].tobytes(),
                            good[11:].tobytes()])
        wait_for(lambda: rcv.counters["records"] == 13, what="the good batches")
        assert rcv.counters["bad"] == len(garbage) + len(after)
        assert rcv._thread.is_alive()
        rcv.stop()
        got = pull_all(dst, 14, timeout=2)
        assert got["seq"].tolist() == list(range(13)) and n_bad(got) == 0
    finally:
        pub.close(0)


# -- CURVE -------------------------------------------------------------------------


def test_curve_only_the_authorised_client_receives(names, rings, bridges, tmp_path):
    good, other = str(tmp_path / "keys"), str(tmp_path / "other")
    bridge.keygen(good)
    bridge.keygen(other)
    # a client that knows the server's public key but holds a key the server never authorised
    with open(os.path.join(good, "server.key"), "rb") as f, open(os.path.join(other, "server.key"), "wb") as g:
        g.write(f.read())
    src, d_ok, d_bad, d_plain = names(), names(), names(), names()
    ring = rings.create(src, REC, 4096, mode="broadcast")
    s = bridges(Sender(ring, "tcp://127.0.0.1:0", curve_keys=good).start())
    ok = bridges(Receiver(s.bound, d_ok, curve_keys=good).start())
    bad = bridges(Receiver(s.bound, d_bad, curve_keys=other).start())
    plain = bridges(Receiver(s.bound, d_plain).start())
    assert ok.wait_ready(10)
    push(ring, 0, 3000)
    assert pull_all(d_ok, 3000)["seq"].tolist() == list(range(3000))
    assert not bad.wait_ready(1.0) and not plain.wait_ready(0.1)
    for r, d in ((bad, d_bad), (plain, d_plain)):
        assert r.counters["records"] == 0 and r.error is None
        with pytest.raises(FileNotFoundError):
            shmring.Ring.attach(d)


def test_missing_keys_are_clear_errors(names, rings, tmp_path):
    ring = rings.create(names(), REC, 64, mode="broadcast")
    with pytest.raises(BridgeError, match="server.key_secret does not exist"):
        Sender(ring, LOOP, curve_keys=str(tmp_path)).start()
    assert sum(c["alive"] for c in ring.stats()["consumers"]) == 0


# -- packaging and the command line ------------------------------------------------------


def test_import_does_not_need_zmq_and_use_names_the_extra():
    code = ("import sys; sys.modules['zmq'] = None\n"
            "import shmring, shmring.bridge, shmring.__main__\n"
            "try:\n"
            "    shmring.bridge.Receiver('tcp://127.0.0.1:1', 'x')\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    out = run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'shmring[bridge]'" in out.stdout
    out = run([sys.executable, "-c", "import sys, shmring; print('zmq' in sys.modules)"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_cli_send_recv_info_and_errors(names, rings, tmp_path, popen):
    src, dst, wrong = names(), names(), names()
    ring = rings.create(src, REC, 4096, mode="broadcast")
    rings.create(wrong, np.dtype("<u2"), 64, mode="broadcast")
    py = [sys.executable, "-m", "shmring"]
    out = run(py + ["bridge", "send", src, "tcp://192.0.2.1:5555"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "cannot bind tcp://192.0.2.1:5555" in out.stderr
    assert "Traceback" not in out.stderr
    port = _free_port()
    ep = f"tcp://127.0.0.1:{port}"
    snd = popen(py + ["bridge", "send", src, ep], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    rcv = None
    try:
        wait_for(lambda: sum(c["alive"] for c in ring.stats()["consumers"]) == 1, what="sender")
        bad = run(py + ["bridge", "recv", ep, wrong], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "dtype uint16" in bad.stderr and "Traceback" not in bad.stderr
        rcv = popen(py + ["bridge", "recv", ep, dst, "--once"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        wait_for(lambda: read_sidecar(dst) is not None, what="receiver")
        push(ring, 0, 5000)
        ring.producer().close()
        o, e = rcv.communicate(timeout=30)
        assert rcv.returncode == 0, e
        c = json.loads(o.strip().splitlines()[-1])
        assert c["records"] == 5000 and c["lost"] == 0
        info = run(py + ["info", dst], capture_output=True, text=True, timeout=60)
        assert "bridge" in info.stdout and "records 5000" in info.stdout and "lost 0" in info.stdout
        js = json.loads(run(py + ["info", dst, "--json"], capture_output=True, text=True,
                                       timeout=60).stdout)
        assert js["bridge"]["records"] == 5000
    finally:
        snd.terminate()
        o, e = snd.communicate(timeout=30)
        if rcv is not None and rcv.poll() is None:
            rcv.kill()
            rcv.wait(10)
    assert snd.returncode == 0 and json.loads(o.strip().splitlines()[-1])["records"] == 5000
    run(py + ["rm", dst], check=True, timeout=60)
    assert read_sidecar(dst) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- shmring.Queue -------------------------------------------------------------------


def test_queue_crosses_with_several_producer_processes(names, bridges, procs):
    """A named shmring.Queue fed by three producer processes (fork and spawn)
    crosses to a queue the receiver makes like it: every item once, each
    producer's in its order, intact (bytes, arrays, pickled dicts, 200 KB arrays
    in frames of their own), and the counters of both ends agree."""
    src, dst = names(), names()
    q = shmring.Queue(name=src, nbytes=1 << 20, maxsize=5000, max_producers=8, max_consumers=4)
    s = bridges(Sender(q, LOOP, max_records=128).start())
    rcv = bridges(Receiver(s.bound, dst).start())
    assert rcv.wait_ready(10)
    out = shmring.Queue.attach(dst)
    assert (out.nbytes, out.maxsize, out._queue_mapping.params[:2]) == (1 << 20, 5000, (8, 4))
    n, producers = 1500, 3
    for k in range(producers):
        procs(mp.get_context("spawn" if k == 2 else "fork"), put_items, src, k, n)
    keys = drain_queue(dst, producers * n, timeout=60)
    check_queue_delivery(keys, producers, n)
    wait_for(lambda: rcv.counters["records"] == s.counters["records"] == producers * n, 5, "the counters")
    c, sc = rcv.counters, s.counters
    assert c["records"] == sc["records"] == producers * n and sc["unconfirmed"] == 0 and c["bad"] == 0
    assert c["bytes"] == sc["bytes"] > 200_000 * (n // 61 // 3)
    st = q.stats()
    assert st["items"] == 0 and st["got"] == producers * n
    out.close()
    q.close()


def test_queue_backpressure_through_a_full_receiving_queue(names, bridges):
    """Nobody gets from the receiving queue (maxsize 40): it fills, credit stops,
    the sender stops getting, so the items wait in the sending queue, never in a
    growing buffer; once read, all arrive, exactly once."""
    src, dst = names(), names()
    q = shmring.Queue(name=src, nbytes=4 << 20, max_producers=2, max_consumers=2)
    out = shmring.Queue(name=dst, nbytes=4 << 20, maxsize=40, max_producers=2, max_consumers=2)
    s = bridges(Sender(q, LOOP, max_records=16).start())
    rcv = bridges(Receiver(s.bound, dst, window=2).start())
    assert rcv.wait_ready(10)
    total = 600
    q.put_many([make_qitem(0, i) for i in range(total)], timeout=10)
    wait_for(lambda: out.qsize() == 40, 10, "the receiving queue to fill")
    time.sleep(0.3)
    sent = s.counters["records"]
    # beyond the full queue: at most the two batches of the credit window
    assert 40 < sent <= 40 + 2 * 16, sent
    assert q.qsize() == total - sent and out.qsize() == 40
    keys = drain_queue(dst, total, timeout=60)
    check_queue_delivery(keys, 1, total)
    out.close()
    q.close()


def test_queue_mismatches_are_clear_errors(names, rings, bridges):
    """A queue meeting a local ring, a ring meeting a local queue, and a local
    queue whose items are too small: each a clear error naming both sides."""
    qsrc, rdst = names(), names()
    q = shmring.Queue(name=qsrc, nbytes=1 << 16, max_producers=2, max_consumers=2)
    rings.create(rdst, REC, 64, mode="queue")
    s = bridges(Sender(q, LOOP).start())
    rcv = Receiver(s.bound, rdst).start()
    with pytest.raises(BridgeError, match=r"local .* is a records ring of dtype .*not a shmring.Queue; "
                                          r"the sender sends a shmring.Queue"):
        rcv.wait_ready(10)
    rcv._thread.join(5)
    small = names()
    shmring.Queue(name=small, nbytes=1 << 12, max_producers=2, max_consumers=2).close()
    rcv = Receiver(s.bound, small).start()
    with pytest.raises(BridgeError, match=r"local queue .* items of at most 2016 bytes; the sender's carries up "
                                          r"to 32736"):
        rcv.wait_ready(10)
    rcv._thread.join(5)
    rsrc, qdst = names(), names()
    ring = rings.create(rsrc, REC, 64, mode="queue")
    shmring.Queue(name=qdst, nbytes=1 << 16, max_producers=2, max_consumers=2).close()
    s2 = bridges(Sender(ring, LOOP).start())
    rcv = Receiver(s2.bound, qdst).start()
    with pytest.raises(BridgeError, match=r"local .* is a shmring.Queue; the sender sends a records ring"):
        rcv.wait_ready(10)
    rcv._thread.join(5)
    q.close()


def test_receiver_with_a_full_queue_survives_the_sender_going_away(names, rings, popen):
    """A receiving host that lags (its local consumer stopped, its ZeroMQ queue full)
    while the sending bridge goes away and comes back: the receiving bridge lives
    on (libzmq 4.3.5 aborted it when ZMTP heartbeats were on: a ping or pong
    written on a connection whose input a full queue had stopped when the peer
    closed it), then takes the stream again with its gap counted exactly."""
    src, dst = names(), names()
    big = np.dtype((np.uint8, (1 << 16,)))
    ring = rings.create(src, big, 64, mode="broadcast")
    ep = f"tcp://127.0.0.1:{_free_port()}"
    rcv = popen([sys.executable, "-m", "shmring", "bridge", "recv", ep, dst, "--capacity", "4", "--hwm", "2",
                 "--heartbeat", "0.1", "--peer-timeout", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
    prod = ring.producer()
    s = Sender(ring, ep, hwm=4, max_records=1, max_bytes=1 << 16, heartbeat=0.1, peer_timeout=30).start()
    stopped = False
    try:
        wait_for(lambda: read_sidecar(dst) is not None, what="receiver")
        stuck = rings.attach(dst).consumer(start="oldest")  # reads nothing while the sender goes away
        data = np.zeros((400, 1 << 16), np.uint8)
        data[:, :8] = np.arange(400, dtype="<u8").view(np.uint8).reshape(400, 8)
        prod.push_many(data, timeout=30)  # 25 MiB: the receiver's queue and socket buffers fill
        wait_for(lambda: s.counters["records"] == 400, what="the sender to publish everything")
        time.sleep(0.3)
        s.stop()
        stopped = True
    finally:
        if not stopped:
            s.stop()
    time.sleep(1.0)  # ten of the receiver's heartbeat intervals with its peer gone
    if rcv.poll() is not None:
        raise AssertionError(f"receiving bridge died: {rcv.returncode} {rcv.stderr.read()}")
    s2 = Sender(ring, ep, hwm=4, heartbeat=0.1, peer_timeout=30).start()
    try:
        prod.close()  # the new sender starts at the newest record and ends the stream
        got = []
        end = time.monotonic() + 60
        while True:
            assert time.monotonic() < end, ("the stream's end", read_sidecar(dst))
            try:
                a = stuck.pop_many(64, timeout=0.2)
            except shmring.Empty:
                continue
            except shmring.Closed as exc:
                if rcv.poll() is not None:
                    raise AssertionError(f"receiving bridge died: {rcv.returncode} {rcv.stderr.read()}")
                assert exc.reason == "closed by producer", exc.reason
                break
            got.append(a[:, :8].copy().view("<u8").ravel())
        seq = np.concatenate(got)
        side = read_sidecar(dst)
        assert side["records"] == len(seq) and side["records"] + side["lost"] == 400 and side["duplicates"] == 0
        assert side["lost"] > 0 and np.all(np.diff(seq.astype(np.int64)) > 0)
        assert rcv.poll() is None
    finally:
        stuck.close()
        s2.stop()
