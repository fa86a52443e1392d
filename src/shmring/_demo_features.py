"""The demo's short feature tours (``shmring demo --messages / --board / --queue``).

Each runs for a couple of seconds, prints a line as soon as it starts, checks what
arrived (sequence numbers and checksums, as the record demo does) and ends with
figures that add up: per-consumer shares sum to what was sent, board versions sum
to the writes made.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
import time

import numpy as np

import shmring

from .demo import SYMBOLS, TICK, checksum, make_ticks, verify

WIDTH = 40  # phase label column


def _ctx():
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


class _Live:
    """A phase line: rewritten in place on a terminal while the phase runs, then final."""

    def __init__(self, label: str, out=None) -> None:
        self.label = label
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self._last = 0.0

    def update(self, text: str) -> None:
        now = time.perf_counter()
        if not self.tty or now - self._last < 0.2:
            return
        self._last = now
        self.out.write("\r" + f"  {self.label:<{WIDTH}} {text} ..."[:150] + "\x1b[K")
        self.out.flush()

    def done(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[K")
        self.out.write(f"  {self.label:<{WIDTH}} {text}\n")
        self.out.flush()


def _join(procs, timeout: float = 30) -> None:
    for p in procs:
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join(5)


def _collect(results, procs, n: int, label: str, timeout: float = 120) -> list:
    """n results from the worker processes; a worker that died instead ends the demo at
    once with its exit code (its traceback is already on stderr)."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        try:
            out.append(results.get(timeout=0.25))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise SystemExit(f"{label}: a worker process failed (exit code {dead[0]})") from None
            if time.monotonic() > deadline:
                raise SystemExit(f"{label}: the workers did not finish within {timeout:.0f} s") from None
    return out


# ---- messages: dicts holding camera frames ---------------------------------------------

FRAME_SHAPE = (240, 320, 4)  # RGBA, 300 KiB
POOL = 16  # distinct frames, reused round-robin so the producer's own work stays small


def _frames():
    rng = np.random.default_rng(16)
    frames = [rng.integers(0, 256, FRAME_SHAPE, dtype=np.uint8) for _ in range(POOL)]
    return frames, [_frame_sum(f) for f in frames]


def _frame_sum(frame) -> int:
    # a wrapping uint64 sum: ~20 us for 300 KiB, where crc32 takes ~150 us
    return int(np.asarray(frame).reshape(-1).view(np.uint64).sum(dtype=np.uint64))


def _message(seq: int, frames) -> dict:
    return {"seq": seq, "camera": f"cam-{seq % 4}", "ts": time.time(), "frame": frames[seq % POOL]}


class _MsgTally:
    def __init__(self, sums) -> None:
        self.sums = sums
        self.count = self.seq_sum = self.seq_xor = self.bad = 0

    def add(self, m) -> None:
        seq = m["seq"]
        f = m["frame"]
        if (f.shape != FRAME_SHAPE or m["camera"] != f"cam-{seq % 4}"
                or _frame_sum(f) != self.sums[seq % POOL]):
            self.bad += 1
        self.count += 1
        self.seq_sum += seq
        self.seq_xor ^= seq

    def result(self):
        return (self.count, self.seq_sum, self.seq_xor, self.bad)


def _msg_consumer_shm(ring, zero_copy: bool, sums, ready, results) -> None:
    t = _MsgTally(sums)
    with ring.consumer() as c:
        ready.set()
        try:
            while True:
                if zero_copy:
                    with c.view(timeout=60) as m:  # the frame is a read-only view of the ring
                        t.add(m)
                else:
                    t.add(c.pop(timeout=60))
        except shmring.Closed:
            pass
    results.put(t.result())
    ring.close()


def _msg_consumer_mpq(q, sums, ready, results) -> None:
    t = _MsgTally(sums)
    ready.set()
    while True:
        m = q.get(timeout=60)
        if m is None:
            break
        t.add(m)
    results.put(t.result())


def _run_msg_phase(label: str, kind: str, consumers: int, seconds: float, frames, sums) -> float:
    ctx = _ctx()
    live = _Live(label)
    results = ctx.Queue()
    ready = [ctx.Event() for _ in range(consumers)]
    ring = q = None
    if kind == "mpq":
        q = ctx.Queue(maxsize=64)  # bounded, as the ring is: a producer cannot run ahead
        procs = [ctx.Process(target=_msg_consumer_mpq, args=(q, sums, ev, results)) for ev in ready]
    else:
        ring = shmring.Ring.create(f"demo-m{os.getpid()}", nbytes=32 << 20, exist_ok=False)
        procs = [ctx.Process(target=_msg_consumer_shm, args=(ring, kind == "view", sums, ev, results))
                 for ev in ready]
    try:
        for p in procs:
            p.start()
        for ev in ready:
            if not ev.wait(30):
                raise SystemExit(f"{label}: a consumer process did not start")
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        if ring is not None:
            with ring.producer() as prod:
                while time.perf_counter() < end:
                    for _ in range(16):
                        prod.push(_message(n, frames))
                        n += 1
                    live.update(f"{n:>9,} messages  {n / (time.perf_counter() - t0):>9,.0f} msg/s")
        else:
            while time.perf_counter() < end:
                for _ in range(16):
                    q.put(_message(n, frames))
                    n += 1
                live.update(f"{n:>9,} messages  {n / (time.perf_counter() - t0):>9,.0f} msg/s")
            for _ in procs:
                q.put(None)
        tallies = _collect(results, procs, len(procs), label)
        elapsed = time.perf_counter() - t0
        check = verify(tallies, n, label)
        rate = n / elapsed
        mb = rate * frames[0].nbytes / 1e6
        live.done(f"{n:>9,} messages  {rate:>9,.0f} msg/s  {mb:>8,.1f} MB/s  {check}")
        return rate
    finally:
        _join(procs)
        if ring is not None:
            ring.close()
            ring.unlink()


def run_messages(consumers: int, seconds: float) -> int:
    frames, sums = _frames()
    kib = frames[0].nbytes // 1024
    print(f"shmring demo --messages: 1 producer -> {consumers} consumer processes, work-sharing message ring")
    print(f"each message: a dict {{'seq', 'camera', 'ts', 'frame'}} holding a {'x'.join(map(str, FRAME_SHAPE))} "
          f"uint8 array ({kib} KiB); every frame's checksum is checked on arrival\n", flush=True)
    pop = _run_msg_phase("shmring, pop() (one copy out)", "pop", consumers, seconds, frames, sums)
    view = _run_msg_phase("shmring, view() (zero-copy)", "view", consumers, seconds, frames, sums)
    mpq = _run_msg_phase("multiprocessing.Queue, get()", "mpq", consumers, seconds, frames, sums)
    print(f"\nspeed-up over multiprocessing.Queue: pop() {pop / mpq:.1f}x, view() {view / mpq:.1f}x")
    print("the arrays travel out of band (pickle protocol 5): the dict is pickled, the frame is copied "
          "once into the ring and, with view(), read in place")
    return 0


# ---- the board: latest tick per symbol -------------------------------------------------

def _board_reader(board, stop, ready, results) -> None:
    """Reads every key at once with snapshot() (each value whole, never torn) and
    checks each value's checksum and symbol, and that no version went back."""
    seen = np.zeros(len(board), np.uint64)
    reads = torn = backwards = 0
    ready.set()
    while not stop.is_set():
        for _ in range(16):
            values, versions = board.snapshot()
            reads += len(values)
            torn += int(np.count_nonzero((values["check"] != checksum(values)) | (values["symbol"] != SYMBOLS)))
            backwards += int(np.count_nonzero(versions < seen))
            seen = versions
    results.put((reads, torn, backwards, [int(v) for v in seen]))
    board.close()


def run_board(consumers: int, seconds: float) -> int:
    ctx = _ctx()
    keys = [s.decode() for s in SYMBOLS]
    print(f"shmring demo --board: this process writes the latest tick of {len(keys)} symbols, "
          f"{consumers} reader processes read all of them at once (snapshot()) flat out")
    print("every value read is checked (checksum, symbol): a torn or mixed-up read would be counted\n", flush=True)
    board = shmring.Board.create(f"demo-b{os.getpid()}", TICK, keys)
    ticks = make_ticks(0, len(keys) * 4096)  # tick i belongs to SYMBOLS[i % 8]
    stop = ctx.Event()
    results = ctx.Queue()
    ready = [ctx.Event() for _ in range(consumers)]
    procs = [ctx.Process(target=_board_reader, args=(board, stop, ev, results)) for ev in ready]
    live = _Live("board writes")
    for i, k in enumerate(keys):  # every key has a value before anyone reads
        board[k] = ticks[i]
    try:
        for p in procs:
            p.start()
        for ev in ready:
            if not ev.wait(30):
                raise SystemExit("--board: a reader process did not start")
        writes = len(keys)
        nk, nt = len(keys), len(ticks)
        t0 = time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            for _ in range(256):
                board[keys[writes % nk]] = ticks[writes % nt]
                writes += 1
            last = board[keys[0]]
            live.update(f"{writes:>10,} writes  {writes / (time.perf_counter() - t0):>11,.0f} /s  "
                        f"{keys[0]} bid {last['bid']:.2f}")
        elapsed = time.perf_counter() - t0
        stop.set()
        out = _collect(results, procs, len(procs), "--board")
        versions = board.versions()
        live.done(f"{writes:>10,} writes  {writes / elapsed:>11,.0f} /s")
        reads = sum(r[0] for r in out)
        torn = sum(r[1] for r in out)
        backwards = sum(r[2] for r in out)
        ahead = sum(1 for r in out for i, v in enumerate(r[3]) if v > versions[i])
        shares = "+".join(str(r[0]) for r in out)
        print(f"  {'board reads (all readers)':<{WIDTH}} {reads:>10,} reads   {reads / elapsed:>11,.0f} /s  "
              f"({shares})")
        print(f"  {'versions on the board':<{WIDTH}} {int(versions.sum()):>10,} in all "
              f"({' '.join(f'{k}:{int(v)}' for k, v in zip(keys, versions))})")
        if torn or backwards or ahead or int(versions.sum()) != writes:
            raise SystemExit(f"--board: check failed: {torn} torn reads, {backwards} versions went back, "
                             f"{ahead} versions ahead of the board, versions {int(versions.sum())} "
                             f"for {writes} writes")
        print(f"\nchecked: {reads:,} reads, 0 torn, versions never went back, "
              f"versions add up to the {writes:,} writes")
        print("latest: " + ", ".join(f"{k} {board[k]['bid']:.2f}" for k in keys[:4]) + ", ...")
        return 0
    finally:
        stop.set()
        _join(procs)
        board.close()
        board.unlink()


# ---- shmring.Queue: many producers, many consumers ------------------------------------------

def _queue_producer(q, p: int, consumers: int, seconds: float, ready, go, results) -> None:
    ready.set()
    go.wait(30)
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(64):
            q.put((n, n / 4, f"worker-{p}"))
            n += 1
    for _ in range(consumers):
        q.put(None)  # behind every item of this producer
    results.put(("p", p, n))


def _queue_consumer(q, producers: int, ready, go, results) -> None:
    last = [-1] * producers
    count = [0] * producers
    ssum = [0] * producers
    sxor = [0] * producers
    bad = ends = 0
    ids = {f"worker-{p}": p for p in range(producers)}
    ready.set()
    go.wait(30)
    while ends < producers:  # one end marker per producer reaches each consumer in all
        m = q.get(timeout=60)
        if m is None:
            ends += 1
            continue
        seq, x, name = m
        p = ids[name]
        if seq <= last[p] or x != seq / 4:
            bad += 1
        last[p] = seq
        count[p] += 1
        ssum[p] += seq
        sxor[p] ^= seq
    results.put(("c", count, ssum, sxor, bad))


def _run_queue_phase(label: str, q, producers: int, consumers: int, seconds: float) -> float:
    ctx = _ctx()
    live = _Live(label)
    results = ctx.Queue()
    go = ctx.Event()
    ready = [ctx.Event() for _ in range(producers + consumers)]
    procs = [ctx.Process(target=_queue_producer, args=(q, p, consumers, seconds, ready[p], go, results))
             for p in range(producers)]
    procs += [ctx.Process(target=_queue_consumer, args=(q, producers, ready[producers + c], go, results))
              for c in range(consumers)]
    try:
        for p in procs:
            p.start()
        for ev in ready:
            if not ev.wait(30):
                raise SystemExit(f"{label}: a worker process did not start")
        t0 = time.perf_counter()
        go.set()
        out = _collect(results, procs, len(procs), label, timeout=seconds + 120)
        elapsed = time.perf_counter() - t0
        sent = {r[1]: r[2] for r in out if r[0] == "p"}
        cons = [r for r in out if r[0] == "c"]
        for p, n in sent.items():
            tallies = [(c[1][p], c[2][p], c[3][p], 0) for c in cons]
            verify(tallies, n, f"{label}, worker-{p}")
        if sum(c[4] for c in cons):
            raise SystemExit(f"{label}: {sum(c[4] for c in cons)} items out of order or corrupt")
        total = sum(sent.values())
        shares = "+".join(str(sum(c[1])) for c in cons)
        live.done(f"{total:>9,} items  {total / elapsed:>11,.0f} items/s  exactly once, in order ({shares})")
        return total / elapsed
    finally:
        _join(procs)


def run_queue(consumers: int, seconds: float) -> int:
    if not hasattr(shmring, "Queue"):
        raise SystemExit("--queue: this version of shmring has no Queue")
    producers = 4
    print(f"shmring demo --queue: {producers} producer processes -> {consumers} consumer processes, "
          f"small tuples (seq, float, str), shmring.Queue as a drop-in for multiprocessing.Queue")
    print("each consumer checks every producer's order; the counts are checked against what was sent\n",
          flush=True)
    q = shmring.Queue()
    try:
        shm = _run_queue_phase("shmring.Queue", q, producers, consumers, seconds)
    finally:
        q.close()
    ctx = _ctx()
    mq = ctx.Queue(maxsize=1 << 14)
    mpq = _run_queue_phase("multiprocessing.Queue", mq, producers, consumers, seconds)
    print(f"\nspeed-up over multiprocessing.Queue: {shm / mpq:.1f}x")
    return 0
