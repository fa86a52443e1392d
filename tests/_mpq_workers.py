"""Worker functions for the shmring.Queue tests (importable under spawn and forkserver).

An item is (producer id, sequence number, payload, CRC-32 of the payload); the
payload is derived from the first two, so a consumer checks every item it gets
byte for byte, and reports (producer, sequence) pairs so the test can check
exactly-once delivery and per-producer order.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import zlib

import numpy as np


def payload(pid: int, seq: int) -> bytes:
    n = (pid * 7 + seq * 13) % 61
    return bytes((pid + seq + k) & 0xFF for k in range(n))


def item(pid: int, seq: int):
    p = payload(pid, seq)
    return (pid, seq, p, zlib.crc32(p))


def check(it) -> tuple:
    pid, seq, p, crc = it
    if zlib.crc32(p) != crc or p != payload(pid, seq):
        raise AssertionError(f"corrupt item {pid}/{seq}")
    return pid, seq


def produce(q, pid: int, n: int, first: int = 0) -> None:
    for seq in range(first, first + n):
        q.put(item(pid, seq))


def produce_threads(q, pids, n: int) -> None:
    """One thread per producer id, all putting through this process's one lane."""
    ts = [threading.Thread(target=produce, args=(q, pid, n)) for pid in pids]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)


def consume(q, conn, log_path: str | None = None) -> None:
    """Gets items until a None sentinel; sends back the (producer, seq) pairs in
    the order got. With log_path, writes each pair to a file as it arrives (for
    a consumer that may be killed)."""
    got = []
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if log_path else -1
    while True:
        it = q.get(timeout=60)
        if it is None:
            break
        pid, seq = check(it)
        got.append((pid, seq))
        if fd >= 0:
            os.write(fd, np.array([pid, seq], dtype=np.int64).tobytes())
    conn.send(np.array(got, dtype=np.int64).reshape(-1, 2))
    conn.close()


def consume_n(q, n: int, conn) -> None:
    got = [check(q.get(timeout=60)) for _ in range(n)]
    conn.send(np.array(got, dtype=np.int64).reshape(-1, 2))


def put_range(q, start: int, n: int) -> None:
    for i in range(start, start + n):
        q.put(i)


def get_sum(q, n: int, conn) -> None:
    conn.send(sum(q.get(timeout=60) for _ in range(n)))


def hold_lane(q, ready, stop) -> None:
    """Takes a lane (one put) and keeps it until stop is set."""
    q.put(("held", os.getpid()))
    ready.set()
    stop.wait(60)


def put_then_report(q, n: int, conn) -> None:
    """Puts n items, measuring how long the puts blocked."""
    t0 = time.monotonic()
    for i in range(n):
        q.put(i)
    conn.send(time.monotonic() - t0)


def joinable_worker(q, n: int) -> None:
    for _ in range(n):
        q.get(timeout=60)
        q.task_done()


def via_queue(outer, conn) -> None:
    """Gets a queue from a queue, then uses it: puts, waits for the parent to have
    taken that item (else this get could take it back), then gets the reply."""
    inner = outer.get(timeout=60)
    inner.put(("inner", os.getpid()))
    if conn.poll(60) and conn.recv() == "go":
        conn.send(inner.get(timeout=60))


# ---- pools --------------------------------------------------------------------

_pool_q = None


def pool_init(q) -> None:
    global _pool_q
    _pool_q = q


def pool_task(i: int) -> int:
    _pool_q.put((i, i * i))
    return i


def pool_task_with_queue(q, i: int) -> int:
    q.put((i, -i))
    return i


def pool_results(q, n: int) -> dict:
    return dict(q.get(timeout=60) for _ in range(n))


def report_inode(q, conn) -> None:
    conn.send(os.fstat(q._queue_mapping.fd).st_ino)


def busy_forever(q, role: str) -> None:
    """A producer or consumer that never stops (killed by its test)."""
    if role == "put":
        i = 0
        while True:
            q.put(i)
            i += 1
    while True:
        try:
            q.get(timeout=1)
        except queue.Empty:
            pass


def get_one_report(q, timeout: float, ready, conn) -> None:
    """Announces it is about to wait, then one get; sends (pid, item or 'empty')."""
    ready.set()
    try:
        conn.send((os.getpid(), q.get(timeout=timeout)))
    except Exception as exc:  # queue.Empty: reported, the test names it
        conn.send((os.getpid(), type(exc).__name__))


def put_each_then_report(q, tag: int, n: int, conn) -> None:
    """Puts n items (tag, i) one by one, blocking on a full lane; reports done."""
    for i in range(n):
        q.put((tag, i))
    conn.send(tag)


def token_ring(q, me: int, n: int, rounds: int, recv_conn, send_conn) -> None:
    """Producer `me` of n passing a token: put ("tok", step) only after the put
    before it (by the previous producer) returned, then pass the token on."""
    for r in range(rounds):
        step = r * n + me
        if step:
            got = recv_conn.recv()
            assert got == step - 1, (got, step)
        q.put(("tok", step))
        send_conn.send(step)


def noise(q, tag: int, n: int) -> None:
    for i in range(n):
        q.put(("noise", tag, i))

# ---- event loops (aget / aput) -----------------------------------------------

def _run_loop(coro, use_uvloop: bool):
    import asyncio
    if use_uvloop:
        import uvloop
        loop = uvloop.new_event_loop()
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.close()
    return asyncio.run(coro)


def aconsume(q, conn, use_uvloop: bool) -> None:
    """consume() with await q.aget(): items until a None sentinel, the
    (producer, seq) pairs sent back in the order got."""
    async def main():
        got = []
        while True:
            it = await q.aget(timeout=60)
            if it is None:
                return got
            got.append(check(it))
    got = _run_loop(main(), use_uvloop)
    conn.send(np.array(got, dtype=np.int64).reshape(-1, 2))
    conn.close()


def produce_paced(q, pid: int, n: int, gap: float) -> None:
    """produce() with a pause before every put, so getters fall asleep between items."""
    for seq in range(n):
        time.sleep(gap)
        q.put(item(pid, seq))


def consume_timely(q, conn, timeout: float) -> None:
    """consume(), sending back also how many gets were answered only when their
    timeout ran out (a wait ends at its deadline with a last look at the lanes,
    so an item left behind a lost wake-up arrives late, not never)."""
    got, late = [], 0
    while True:
        t0 = time.monotonic()
        it = q.get(timeout=timeout)
        late += time.monotonic() - t0 >= timeout * 0.9
        if it is None:
            break
        got.append(check(it))
    conn.send((np.array(got, dtype=np.int64).reshape(-1, 2), late))
    conn.close()


def produce_bursts(q, pid: int, bursts: int, each: int, gap: float) -> None:
    """produce() in bursts of `each` items with a pause after every burst, so
    getters fall asleep between bursts and are woken in the middle of one."""
    seq = 0
    for _ in range(bursts):
        for _ in range(each):
            q.put(item(pid, seq))
            seq += 1
        time.sleep(gap)


def get_all_later(q, n: int, delay: float, conn) -> None:
    """After delay, gets n items (blocking) and sends them back in order."""
    time.sleep(delay)
    conn.send([q.get(timeout=60) for _ in range(n)])


def put_until_killed(q, ready) -> None:
    """Puts 0, 1, 2, ... (each after a short pause) until killed."""
    i = 0
    while True:
        q.put(i)
        if i == 20:
            ready.set()
        i += 1
        time.sleep(0.0005)


# ---- 64 KiB items through a rewinding lane (test_queue_rewind.py) ---------------

BIG_WORDS = 8192  # a 64 KiB uint64 array per item


def big_item(pid: int, seq: int) -> dict:
    return {"worker": pid, "seq": seq, "data": np.full(BIG_WORDS, pid * 1_000_003 + seq, np.uint64)}


def big_check(it) -> tuple:
    pid, seq, data = it["worker"], it["seq"], it["data"]
    want = pid * 1_000_003 + seq
    if data.dtype != np.uint64 or data.shape != (BIG_WORDS,) or not (data == want).all():
        raise AssertionError(f"corrupt item {pid}/{seq}")
    return pid, seq


def lap_moves(offsets) -> tuple:
    """(rewinds, largest offset) of a lane producer's frame offsets in put order:
    a rewind is a frame placed nearer the start of the lap than the one before
    while that one did not fill the lap's end."""
    rewinds = sum(1 for a, b in zip(offsets, offsets[1:]) if b < a)
    return rewinds, max(offsets) if offsets else 0


LANE_WINDOW = 512 << 10  # SHMR_MSG_REWIND_BYTES: the rewind window tests turn on


def big_produce(q, pid: int, n: int, conn) -> None:
    """Puts n 64 KiB items; sends back the lane offset each was placed at."""
    prod = q._lane_producer()
    prod._set_rewind(LANE_WINDOW)
    offsets = []
    for seq in range(n):
        offsets.append(prod._lap_offset())
        q.put(big_item(pid, seq), timeout=60)
    conn.send(offsets)
    conn.close()


def big_consume(q, conn) -> None:
    got = []
    while True:
        it = q.get(timeout=60)
        if it is None:
            break
        got.append(big_check(it))
    conn.send(np.array(got, dtype=np.int64).reshape(-1, 2))
    conn.close()


def big_produce_until_killed(q, pid: int, ready, rewinds_wanted: int) -> None:
    """Puts 64 KiB items until killed; sets ready once its lane has rewound
    rewinds_wanted times."""
    prod = q._lane_producer()
    prod._set_rewind(LANE_WINDOW)
    last = -1
    rewinds = 0
    seq = 0
    while True:
        off = prod._lap_offset()
        if off < last:
            rewinds += 1
            if rewinds == rewinds_wanted:
                ready.set()
        last = off
        q.put(big_item(pid, seq), timeout=60)
        seq += 1
def fd_consume(q, conn, kind: str) -> None:
    """consume() through q.fileno(): waits for readiness with selectors or
    select.poll, then get_nowait() until queue.Empty (which re-arms); items
    until a None sentinel, the (producer, seq) pairs sent back in order got."""
    import select
    import selectors
    got = []
    fd = q.fileno()
    if kind == "selectors":
        sel = selectors.DefaultSelector()
        sel.register(q, selectors.EVENT_READ)  # the queue itself is the file object

        def wait() -> bool:
            return bool(sel.select(timeout=60))
    else:
        poller = select.poll()
        poller.register(fd, select.POLLIN)

        def wait() -> bool:
            return bool(poller.poll(60_000))
    while True:
        if not wait():
            raise AssertionError("no readiness within 60 s")
        while True:
            try:
                it = q.get_nowait()
            except queue.Empty:
                break
            if it is None:
                conn.send(np.array(got, dtype=np.int64).reshape(-1, 2))
                conn.close()
                return
            got.append(check(it))


def peer_idle(q, ready, stop) -> None:
    """A peer that takes a lane and a consumer slot (one put, one get), then
    stays alive and idle until stop is set."""
    q.put(("peer", os.getpid()))
    q.get(timeout=30)
    ready.set()
    stop.wait(60)


def _lane_consumer(q, lane: int = 0):
    """A consumer slot of this process on a lane, opened as a get opens one."""
    from shmring import _ring
    return _ring.MessageConsumer._open(q._queue_mapping.lane(lane), None, _ring.STARTS["latest"],
                                       False, True, 0.0, 0.05)


def get_then_hold(q, n_get: int, conn) -> None:
    """Gets n_get items, then claims the next one through a view of its lane
    that it never leaves (a consumer killed between its claim and its release);
    reports ((producer, seq) got, (producer, seq) held) and waits to be killed."""
    got = [check(q.get(timeout=30)) for _ in range(n_get)]
    mc = _lane_consumer(q)
    view = mc.view(timeout=30)
    conn.send((got, check(view.message)))
    time.sleep(120)


def join_lane_then_wait(q, conn) -> None:
    """Takes a consumer slot on lane 0 (nothing to get: the slot alone), reports
    its pid and waits to be killed."""
    mc = _lane_consumer(q)
    conn.send(os.getpid())
    time.sleep(120)
    mc.close()


def put_on_command(q, pid: int, conn) -> None:
    """Holds a lane; on each (first, n) received puts item(pid, first..first+n-1)
    and answers "put"; None ends it."""
    while True:
        cmd = conn.recv()
        if cmd is None:
            return
        produce(q, pid, cmd[1], cmd[0])
        conn.send("put")
