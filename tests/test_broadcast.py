"""Broadcast mode across real processes: every consumer sees every record.

Records are 64-byte checksummed structs (tests/_records.py); consumers run
in separate processes (fork and spawn) and report what actually arrived.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

import numpy as np
import pytest

import shmring

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import _bcast_workers as W  # noqa: E402

FORK = multiprocessing.get_context("fork")
SPAWN = multiprocessing.get_context("spawn")


# ---- fixtures -------------------------------------------------------------------


@pytest.fixture
def mkring():
    """Ring factory: unique names, rings closed and unlinked at teardown."""
    made = []

    def make(dtype=W.REC, capacity=16, **kw):
        name = W.new_name("b")
        made.append(name)
        ring = shmring.Ring.create(name, dtype, capacity, **kw)
        made.append(ring)
        return ring

    yield make
    for x in made:
        if isinstance(x, shmring.Ring):
            x.close()
    for x in made:
        if isinstance(x, str):
            W.unlink_quietly(x)


def results(q, n, what="consumer result"):
    out = {}
    for _ in range(n):
        tag, res = W.get(q, what, timeout=120)
        assert tag == "result", (tag, res)
        out[res["idx"]] = res
    return out


def wait_ready(q, n):
    for _ in range(n):
        W.get(q, "ready signal")


def join_all(ps):
    for p in ps:
        p.join(30)
        assert p.exitcode == 0, f"child {p.pid} exit code {p.exitcode}"


# ---- block mode: exactly once, in order, to every consumer ------------------------

N_BIG = 1 << 20  # 1,048,576 records of 64 bytes


@pytest.mark.parametrize("ctx", [FORK, SPAWN], ids=["fork", "spawn"])
def test_block_every_consumer_gets_every_record_once_in_order(mkring, procs, ctx):
    ring = mkring(capacity=8192, mode="broadcast", overflow="block")
    ready, out = ctx.Queue(), ctx.Queue()
    ps = [procs(ctx, W.stream_consumer, ring, i, start="oldest", batch=1024, ready_q=ready, result_q=out)
          for i in range(4)]
    wait_ready(ready, 4)  # all four registered before the first push
    assert ring.stats()["n_consumers"] == 4

    assert W.produce(ring, N_BIG, chunk=4096, timeout=60) == N_BIG

    res = results(out, 4)
    join_all(ps)
    for i in range(4):
        r = res[i]
        assert r["error"] is None, r["error"]
        assert r["closed"], "end of stream did not reach the consumer"
        assert r["bad"] == 0, f"consumer {i}: {r['bad']} torn/corrupt records"
        assert r["nonincreasing"] == 0 and r["inbatch_holes"] == 0 and r["gaps"] == 0, r
        assert (r["count"], r["first"], r["last"]) == (N_BIG, 0, N_BIG - 1), r
        assert (r["popped"], r["dropped"]) == (N_BIG, 0)
    st = ring.stats()
    assert st["pushed"] == N_BIG
    assert st["closed"] and st["close_reason"] == "closed by producer"


# ---- overwrite mode: lapped consumers lose whole records and count them exactly ----


def test_overwrite_slow_and_fast_consumers_account_for_every_record(mkring, procs):
    n, cap = 300_000, 256
    ring = mkring(capacity=cap, mode="broadcast", overflow="overwrite")
    ready, out = FORK.Queue(), FORK.Queue()
    specs = {
        0: dict(batch=1024),                                  # fast, pop_many
        1: dict(batch=1, sleep_s=0.002),                      # slow: sleeps between pops
        2: dict(batch=64, on_lag="raise"),                    # fast, raises Lagged
        3: dict(batch=1, sleep_s=0.002, on_lag="raise"),      # slow, raises Lagged
    }
    ps = [procs(FORK, W.stream_consumer, ring, i, ready_q=ready, result_q=out, expect_first=0, **kw)
          for i, kw in specs.items()]
    wait_ready(ready, len(specs))

    W.produce(ring, n, chunk=64, timeout=5)  # overwrite: never held back

    res = results(out, len(specs))
    join_all(ps)
    for i, r in res.items():
        assert r["error"] is None, r["error"]
        assert r["closed"]
        assert r["bad"] == 0, f"consumer {i} received {r['bad']} torn records"
        assert r["nonincreasing"] == 0, f"consumer {i}: sequence numbers not strictly increasing"
        assert r["inbatch_holes"] == 0, f"consumer {i}: a hole inside one batch"
        assert r["last"] == n - 1, "the newest record is never lost"
        assert r["popped"] == r["count"]
        # every missing sequence number is counted as dropped, and nothing else is
        assert r["dropped"] == r["missing"] == n - r["count"], r
        assert r["stats_dropped"] == r["dropped"]
    for i in (1, 3):
        assert res[i]["dropped"] > 0, "the slow consumer must have been lapped"
    for i in (2, 3):
        r = res[i]
        assert r["lag_total"] == r["dropped"], "Lagged counts must add up to dropped"
        assert r["lag_mismatch"] == 0, "record after Lagged(count) is not last+1+count"
        assert r["unannounced"] == 0, "a hole was not announced by Lagged"
    assert res[3]["lag_events"] > 0


def test_on_lag_raise_exact_count_then_records(mkring, procs):
    cap = 8
    ring = mkring(capacity=cap, mode="broadcast", overflow="overwrite")
    raiser = ring.consumer(on_lag="raise")
    skipper = ring.consumer(on_lag="skip")
    cmd, rep = FORK.Queue(), FORK.Queue()
    procs(FORK, W.producer_server, ring, cmd, rep)
    assert W.get(rep, "producer")[0] == "ready"

    def push(k):
        cmd.put(("push", k))
        assert W.get(rep, "push reply") == ("ok", push.total + k)
        push.total += k
    push.total = 0

    push(20)  # 0..19 into 8 slots: 12 lost for a consumer at 0
    with pytest.raises(shmring.Lagged) as ei:
        raiser.pop()
    assert ei.value.count == 12
    rec = raiser.pop()
    assert isinstance(rec, np.void) and int(rec["seq"]) == 12 and W.n_bad(rec) == 0
    rest = W.drain(raiser)
    assert rest["seq"].tolist() == list(range(13, 20)) and W.n_bad(rest) == 0
    assert (raiser.dropped, raiser.popped) == (12, 8)

    a = W.drain(skipper)  # skip mode: same loss, no exception
    assert a["seq"].tolist() == list(range(12, 20))
    assert skipper.dropped == 12

    push(30)  # 20..49: cursor 20, head 50 -> 22 lost
    with pytest.raises(shmring.Lagged) as ei:
        raiser.pop_many(5)
    assert ei.value.count == 22
    got = raiser.pop_many(5)
    assert got["seq"].tolist() == [42, 43, 44, 45, 46] and W.n_bad(got) == 0
    got = W.drain(raiser)
    assert got["seq"].tolist() == [47, 48, 49]
    assert (raiser.dropped, raiser.popped) == (34, 16)

    push(3)  # no lap: no exception
    assert W.drain(raiser)["seq"].tolist() == [50, 51, 52]
    assert raiser.dropped == 34

    cmd.put(("close",))
    assert W.get(rep, "close reply") == ("closed", 53)
    with pytest.raises(shmring.Closed):
        raiser.pop(timeout=5)
    stats = {c["index"]: c for c in ring.stats()["consumers"]}
    assert stats[raiser.index]["dropped"] == 34 and stats[raiser.index]["popped"] == 19


def test_pop_after_lagged_pop_many_returns_a_record(mkring, procs):
    """After pop_many raised Lagged, the records it fetched come back through the next
    call; a pop() must still return one record (np.void), not a 1-record array."""
    ring = mkring(capacity=8, mode="broadcast", overflow="overwrite")
    c = ring.consumer(on_lag="raise")
    cmd, rep = FORK.Queue(), FORK.Queue()
    procs(FORK, W.producer_server, ring, cmd, rep)
    assert W.get(rep, "producer")[0] == "ready"
    cmd.put(("push", 20))
    assert W.get(rep, "push reply") == ("ok", 20)
    with pytest.raises(shmring.Lagged) as ei:
        c.pop_many(4)
    assert ei.value.count == 12
    rec = c.pop()
    assert isinstance(rec, np.void), f"pop() returned {type(rec).__name__} {getattr(rec, 'shape', '')}"
    assert int(rec["seq"]) == 12
    assert W.drain(c)["seq"].tolist() == list(range(13, 20))
    cmd.put(("close",))
    W.get(rep, "close reply")


# ---- joining late, leaving early -----------------------------------------------------

LATE = [
    (overflow, start, pre, FORK)
    for overflow in ("block", "overwrite")
    for start in ("oldest", "latest")
    for pre in (100, 5)
] + [("block", "oldest", 100, SPAWN), ("overwrite", "latest", 100, SPAWN)]


@pytest.mark.parametrize(
    "overflow,start,pre,ctx", LATE,
    ids=[f"{o}-{s}-{'wrapped' if p > 16 else 'unwrapped'}-{c.get_start_method()}" for o, s, p, c in LATE],
)
def test_late_join(mkring, procs, overflow, start, pre, ctx):
    cap, post = 16, 10
    ring = mkring(capacity=cap, mode="broadcast", overflow=overflow)
    p = ring.producer()
    p.push_many(W.make_records(0, pre), timeout=5)  # nobody registered: never blocks
    ready, out = ctx.Queue(), ctx.Queue()
    child = procs(ctx, W.stream_consumer, ring, 0, start=start, batch=7, ready_q=ready, result_q=out,
                  expect_first=None, keep=True)
    wait_ready(ready, 1)
    history = min(pre, cap) if start == "oldest" else 0
    # let it read the history first, so an overwriting producer cannot lap it
    W.wait_for(lambda: [c["popped"] for c in ring.stats()["consumers"]] == [history],
               what="the late consumer to read the history")
    p.push_many(W.make_records(pre, post), timeout=20)
    p.close()
    r = results(out, 1)[0]
    join_all([child])
    assert r["error"] is None, r["error"]
    assert r["closed"] and r["bad"] == 0
    if start == "oldest":
        want = range(max(0, pre - cap), pre + post)  # exactly the history still in the ring
    else:
        want = range(pre, pre + post)  # only what was pushed after joining
    assert r["seqs"].tolist() == list(want)
    assert r["dropped"] == 0


def test_consumer_that_left_does_not_hold_back_block_producer(mkring, procs):
    ring = mkring(capacity=8, mode="broadcast", overflow="block")
    p = ring.producer()
    ready, done = FORK.Queue(), FORK.Event()
    child = procs(FORK, W.join_and_leave, ring, ready, done)
    msg = W.get(ready, "left signal")
    assert msg[0] == "left", msg
    assert msg[1:] == (1, 0), "registered while joined, gone after close()"
    assert child.is_alive()  # the process lives on: only close() released it
    recs = W.make_records(0, 100)
    for i in range(100):
        p.push(recs[i], timeout=1)
    assert ring.stats()["pushed"] == 100
    assert child.is_alive() and ring.stats()["evicted"] == 0
    done.set()
    join_all([child])


def test_join_and_leave_mid_stream(mkring, procs):
    n, cap, chunk = 40_000, 1024, 256
    ring = mkring(capacity=cap, mode="broadcast", overflow="block")
    ready, out = FORK.Queue(), FORK.Queue()
    b_join, c_join, linger = FORK.Event(), FORK.Event(), FORK.Event()
    pa = procs(FORK, W.stream_consumer, ring, "A", start="oldest", batch=512, ready_q=ready, result_q=out)
    pb = procs(FORK, W.stream_consumer, ring, "B", start="latest", batch=100, ready_q=ready, result_q=out,
               expect_first=None, keep=True, stop_after=3000, linger_evt=linger, join_evt=b_join)
    pc = procs(FORK, W.stream_consumer, ring, "C", start="oldest", batch=300, ready_q=ready, result_q=out,
               expect_first=None, keep=True, join_evt=c_join)
    assert W.get(ready, "A ready") == "A"
    p = ring.producer()
    buf = np.empty(chunk, W.REC)

    def push_to(stop, s):
        while s < stop:
            k = min(chunk, stop - s)
            W.fill(buf[:k], s)
            p.push_many(buf[:k], timeout=20)  # Full here = held back by a consumer that left
            s += k
        return s

    s = push_to(n // 2, 0)
    b_join.set()
    assert W.get(ready, "B ready") == "B"
    s = push_to(3 * n // 4, s)
    c_join.set()
    assert W.get(ready, "C ready") == "C"
    s = push_to(n, s)
    p.close()
    res = results(out, 3)
    linger.set()
    join_all([pa, pb, pc])
    for r in res.values():
        assert r["error"] is None, r["error"]
        assert r["bad"] == 0 and r["nonincreasing"] == 0 and r["inbatch_holes"] == 0
    a, b, c = res["A"], res["B"], res["C"]
    assert (a["count"], a["first"], a["last"], a["gaps"], a["closed"]) == (n, 0, n - 1, 0, True)
    # B joined at head n/2 ("latest"), read 3000 records, left while the stream went on
    assert b["seqs"].tolist() == list(range(n // 2, n // 2 + 3000))
    assert not b["closed"]
    # C joined at head 3n/4 ("oldest"): the last `cap` records, then everything after
    assert c["seqs"].tolist() == list(range(3 * n // 4 - cap, n))
    assert c["closed"]


CHURN_CFG = (("oldest", 160), ("oldest", 160), ("oldest", 160), ("latest", 160))  # (start, records per session)


def test_block_consumers_churning_while_producer_runs(mkring, procs):
    """Consumers join ("oldest" and "latest") and leave over and over while a block-mode
    producer streams: each session is one gap-free run of intact records, nobody drops
    (a join racing the producer must never make it overwrite unread records), and a
    steady consumer still gets everything."""
    n, cap = 300_000, 128
    ring = mkring(capacity=cap, mode="broadcast", overflow="block")
    ready, out = FORK.Queue(), FORK.Queue()
    steady = procs(FORK, W.stream_consumer, ring, "steady", start="oldest", batch=256, ready_q=ready,
                   result_q=out)
    assert W.get(ready, "steady ready") == "steady"
    churners = [procs(FORK, W.churn_consumer, ring, f"churn-{i}-{st}", st, per, out)
                for i, (st, per) in enumerate(CHURN_CFG)]
    seen = set()

    def all_churners_joined():
        seen.update(c["pid"] for c in ring.stats()["consumers"])
        return {p.pid for p in churners} <= seen

    W.wait_for(all_churners_joined, what="every churning consumer to join once")
    W.produce(ring, n, chunk=32, timeout=30)
    res = {}
    for _ in range(1 + len(churners)):
        tag, r = W.get(out, "result", timeout=120)
        res[r["idx"]] = r
    join_all([steady] + churners)
    for r in res.values():
        assert r["error"] is None, r["error"]
        assert r["bad"] == 0, f"{r['idx']}: torn records"
    s = res["steady"]
    assert (s["count"], s["first"], s["last"], s["gaps"], s["dropped"]) == (n, 0, n - 1, 0, 0)
    for name, r in res.items():
        if name == "steady":
            continue
        info = {k: v for k, v in r.items() if k != "first_seen"}
        assert r["closed"], info
        assert r["holes"] == 0, f"{name}: a session skipped records in block mode: {info}"
        assert r["dropped"] == 0, f"{name}: records lost in block mode: {info}"
        assert r["sessions"] >= 2, info
        assert all(0 <= f < n for f in r["first_seen"])


def test_block_producer_blocks_until_registered_consumer_reads(mkring, procs):
    cap = 16
    ring = mkring(capacity=cap, mode="broadcast", overflow="block")
    ready, out, go = FORK.Queue(), FORK.Queue(), FORK.Event()
    holder = procs(FORK, W.holding_consumer, ring, "hold", ready, go, out)
    reader = procs(FORK, W.stream_consumer, ring, "read", start="oldest", batch=4, ready_q=ready,
                   result_q=out, keep=True)
    wait_ready(ready, 2)
    p = ring.producer()
    recs = W.make_records(0, 200)
    p.push_many(recs[:cap], timeout=5)  # fits: the ring is empty

    def reader_popped():
        return [c["popped"] for c in ring.stats()["consumers"] if c["pid"] == reader.pid]

    W.wait_for(lambda: reader_popped() == [cap], what="the reading consumer to read everything")
    with pytest.raises(shmring.Full) as ei:
        p.push(recs[cap], timeout=0)
    assert ei.value.pushed == 0
    with pytest.raises(shmring.Full):
        p.push(recs[cap], timeout=0.3)
    with pytest.raises(shmring.Full) as ei:
        p.push_many(recs[cap:cap + 5], timeout=0.2)
    assert ei.value.pushed == 0
    st = ring.stats()
    assert st["pushed"] == cap
    lags = {c["pid"]: c["lag"] for c in st["consumers"]}
    assert lags == {holder.pid: cap, reader.pid: 0}

    go.set()  # the holder starts reading: the producer resumes
    p.push(recs[cap], timeout=20)
    p.push_many(recs[cap + 1:], timeout=20)
    p.close()
    res = results(out, 2)
    join_all([holder, reader])
    for r in res.values():
        assert r["error"] is None, r["error"]
        assert r["bad"] == 0
        assert r["seqs"].tolist() == list(range(200))


@pytest.mark.parametrize("overflow,n", [("block", 5000), ("overwrite", 5000), ("block", 0)])
def test_end_of_stream_reaches_every_consumer(mkring, procs, overflow, n):
    cap = 64
    ring = mkring(capacity=cap, mode="broadcast", overflow=overflow)
    ready, out = FORK.Queue(), FORK.Queue()
    ps = [procs(FORK, W.stream_consumer, ring, i, batch=1, ready_q=ready, result_q=out, iterate=True)
          for i in range(4)]
    wait_ready(ready, 4)
    W.produce(ring, n, chunk=50, timeout=20)
    res = results(out, 4)
    join_all(ps)
    for r in res.values():
        assert r["error"] is None, r["error"]
        assert r["closed"], "iteration did not stop at end of stream"
        assert r["bad"] == 0 and r["nonincreasing"] == 0
        if n == 0:
            assert r["count"] == 0
            continue
        assert r["last"] == n - 1
        assert r["count"] + r["dropped"] == n and r["missing"] == r["dropped"]
        if overflow == "block":
            assert r["count"] == n and r["dropped"] == 0
    # joining after the end: "latest" sees end-of-stream at once, "oldest" drains the history
    late = ring.consumer(start="latest")
    with pytest.raises(shmring.Closed):
        late.pop(timeout=5)
    old = ring.consumer(start="oldest")
    assert [int(r["seq"]) for r in old] == list(range(max(0, n - cap), n))
