"""Live demo: one producer streams market ticks to several consumer processes.

Runs the same work-sharing job through shmring and through multiprocessing.Queue,
checks that every tick arrived exactly once (sequence numbers and checksums), and
prints the rates and the speed-up.

    python -m shmring.demo [--consumers 3] [--records 2000000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import queue as stdqueue
import sys
import time

import numpy as np

import shmring

TICK = np.dtype(
    [("seq", "<u8"), ("ts_ns", "<u8"), ("symbol", "S8"), ("bid", "<f8"), ("ask", "<f8"),
     ("bid_size", "<u4"), ("ask_size", "<u4"), ("check", "<u8")]
)  # 64 bytes: one cache line
BATCH = 1024
SYMBOLS = np.array([b"AAPL", b"MSFT", b"NVDA", b"AMZN", b"GOOG", b"META", b"TSLA", b"AMD"], dtype="S8")
MIX = np.uint64(0x9E3779B97F4A7C15)


def make_ticks(start: int, n: int) -> np.ndarray:
    t = np.zeros(n, TICK)
    seq = np.arange(start, start + n, dtype=np.uint64)
    t["seq"] = seq
    t["ts_ns"] = time.monotonic_ns()
    t["symbol"] = SYMBOLS[seq % len(SYMBOLS)]
    t["bid"] = 100.0 + (seq % 1000) * 0.01
    t["ask"] = t["bid"] + 0.01
    t["bid_size"] = (seq % 500).astype(np.uint32)
    t["ask_size"] = (seq % 700).astype(np.uint32)
    t["check"] = checksum(t)
    return t


def checksum(t: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (t["seq"] * MIX) ^ t["bid_size"].astype(np.uint64) ^ (t["ask_size"].astype(np.uint64) << np.uint64(32))


class Tally:
    """What one consumer received: count, sum and xor of sequence numbers, bad checksums."""

    def __init__(self) -> None:
        self.count = self.seq_sum = self.seq_xor = self.bad = 0
        self._buf = np.empty(BATCH, TICK)  # single records, checked in blocks (cheaper)
        self._k = 0

    def add_one(self, rec) -> None:
        self._buf[self._k] = rec
        self._k += 1
        if self._k == BATCH:
            self.flush()

    def flush(self) -> None:
        self.add(self._buf[: self._k])
        self._k = 0

    def add(self, t: np.ndarray) -> None:
        self.count += len(t)
        seq = t["seq"]
        self.seq_sum += int(seq.sum(dtype=np.uint64))
        self.seq_xor ^= int(np.bitwise_xor.reduce(seq)) if len(seq) else 0
        self.bad += int(np.count_nonzero(t["check"] != checksum(t)))

    def as_tuple(self):
        self.flush()
        return (self.count, self.seq_sum, self.seq_xor, self.bad)


# -- shmring ----------------------------------------------------------------------

def shm_consumer(ring: shmring.Ring, batched: bool, ready, results) -> None:
    tally = Tally()
    with ring.consumer() as c:
        ready.set()
        if batched:
            while True:
                try:
                    tally.add(c.pop_many(BATCH))
                except shmring.Closed:
                    break
        else:
            for rec in c:  # one record per call
                tally.add_one(rec)
    results.put(tally.as_tuple())
    ring.close()


def run_shmring(n: int, consumers: int, batched: bool, name: str, live) -> float:
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    ring = shmring.Ring.create(name, TICK, 1 << 14, exist_ok=False)
    try:
        results = ctx.Queue()
        ready = [ctx.Event() for _ in range(consumers)]
        procs = [ctx.Process(target=shm_consumer, args=(ring, batched, ev, results)) for ev in ready]
        for p in procs:
            p.start()
        for ev in ready:
            ev.wait(30)
        ticks = make_ticks(0, n)
        with ring.producer() as prod:
            t0 = time.perf_counter()
            if batched:
                for i in range(0, n, BATCH):
                    prod.push_many(ticks[i:i + BATCH])
                    live(i + BATCH, t0)
            else:
                push = prod.push
                step = max(n // 50, 1)
                for i in range(n):
                    push(ticks[i])
                    if i % step == 0:
                        live(i, t0)
        tallies = [results.get(timeout=120) for _ in procs]
        elapsed = time.perf_counter() - t0
        for p in procs:
            p.join(30)
        verify(tallies, n, "shmring")
        return n / elapsed
    finally:
        ring.close()
        ring.unlink()


# -- multiprocessing.Queue -----------------------------------------------------------

def mpq_consumer(q, batched: bool, results) -> None:
    tally = Tally()
    while True:
        item = q.get()
        if item is None:
            break
        if batched:
            tally.add(item)
        else:
            tally.add_one(item)
    results.put(tally.as_tuple())


def run_mpqueue(n: int, consumers: int, batched: bool, live) -> float:
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    q = ctx.Queue(maxsize=1 << 14 if not batched else 16)
    results = ctx.Queue()
    procs = [ctx.Process(target=mpq_consumer, args=(q, batched, results)) for _ in range(consumers)]
    for p in procs:
        p.start()
    ticks = make_ticks(0, n)
    t0 = time.perf_counter()
    if batched:
        for i in range(0, n, BATCH):
            q.put(ticks[i:i + BATCH])
            live(i + BATCH, t0)
    else:
        step = max(n // 50, 1)
        for i in range(n):
            q.put(ticks[i])
            if i % step == 0:
                live(i, t0)
    for _ in procs:
        q.put(None)
    tallies = [results.get(timeout=300) for _ in procs]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join(30)
    verify(tallies, n, "multiprocessing.Queue")
    return n / elapsed


def verify(tallies, n: int, label: str) -> None:
    count = sum(t[0] for t in tallies)
    seq_sum = sum(t[1] for t in tallies)
    seq_xor = 0
    for t in tallies:
        seq_xor ^= t[2]
    bad = sum(t[3] for t in tallies)
    want_xor = [n - 1, 1, n, 0][(n - 1) % 4] if n else 0  # xor of 0..n-1
    ok = count == n and seq_sum == n * (n - 1) // 2 and seq_xor == want_xor and bad == 0
    shares = ", ".join(str(t[0]) for t in tallies)
    status = "ok" if ok else "MISMATCH"
    print(f"    {label}: {count} ticks received ({shares} per consumer), "
          f"{bad} bad checksums, exactly-once {status}")
    if not ok:
        raise SystemExit(f"{label}: delivery check failed")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--consumers", type=int, default=3)
    ap.add_argument("--records", type=int, default=2_000_000, help="ticks per shmring run")
    ap.add_argument("--queue-records", type=int, default=200_000,
                    help="ticks per multiprocessing.Queue run (it is much slower)")
    args = ap.parse_args(argv)
    tty = sys.stdout.isatty()

    def live_for(label, total):
        last = [0.0]

        def live(done, t0):
            now = time.perf_counter()
            if now - last[0] < 0.25:
                return
            last[0] = now
            rate = done / max(now - t0, 1e-9)
            line = f"  {label:<34} {min(done, total):>10,}/{total:,} ticks  {rate / 1e6:7.2f} M ticks/s"
            if tty:
                print("\r" + line, end="", flush=True)
        return live

    def done_line(label, rate):
        if tty:
            print("\r" + " " * 100 + "\r", end="")
        print(f"  {label:<34} {rate / 1e6:9.3f} M ticks/s")

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"shmring demo: 1 producer -> {args.consumers} consumer processes, 64-byte ticks, work-sharing")
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}\n")

    name = f"demo-{os.getpid()}"
    rows = []
    for batched in (False, True):
        how = f"batches of {BATCH}" if batched else "one tick per call"
        label = f"shmring ({how})"
        rate = run_shmring(args.records, args.consumers, batched, name, live_for(label, args.records))
        done_line(label, rate)
        rows.append((how, rate))
        label = f"multiprocessing.Queue ({how})"
        qn = args.queue_records if not batched else args.records
        qrate = run_mpqueue(qn, args.consumers, batched, live_for(label, qn))
        done_line(label, qrate)
        rows[-1] = (how, rate, qrate)
        print()

    print("summary (ticks/s, higher is better)")
    print(f"  {'':<20} {'shmring':>14} {'mp.Queue':>14} {'speed-up':>10}")
    for how, rate, qrate in rows:
        print(f"  {how:<20} {rate / 1e6:>12.2f} M {qrate / 1e6:>12.3f} M {rate / qrate:>9.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
