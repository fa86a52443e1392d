"""Live demo: one producer streams market ticks to several consumer processes.

Runs the same work-sharing job through shmring and through multiprocessing.Queue,
one tick per call and then in batches, checks that every tick arrived exactly once
(sequence numbers and checksums), shows each phase's rate while it runs, and ends
with a table of rates and speed-ups (and, with --plot, a bar chart).

    shmring demo [--consumers N] [--records N] [--queue-records N] [--plot FILE.png]

Short tours of the other features, a couple of seconds each:

    shmring demo --messages   dicts holding camera frames through a message ring
                              (pop and zero-copy view), against multiprocessing.Queue
    shmring demo --board      the latest tick of 8 symbols on a Board, written by one
                              process and read flat out by the consumer processes
    shmring demo --queue      shmring.Queue, 4 producers -> the consumer processes,
                              against multiprocessing.Queue
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
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


def run_shmring(n: int, consumers: int, batched: bool, name: str, live) -> tuple[float, str]:
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
        return n / elapsed, verify(tallies, n, "shmring")
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


def run_mpqueue(n: int, consumers: int, batched: bool, live) -> tuple[float, str]:
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
    return n / elapsed, verify(tallies, n, "multiprocessing.Queue")


def verify(tallies, n: int, label: str) -> str:
    """tallies: (count, seq_sum, seq_xor, bad) per consumer; n items 0..n-1 were sent."""
    count = sum(t[0] for t in tallies)
    seq_sum = sum(t[1] for t in tallies)
    seq_xor = 0
    for t in tallies:
        seq_xor ^= t[2]
    bad = sum(t[3] for t in tallies)
    want_xor = [n - 1, 1, n, 0][(n - 1) % 4] if n else 0  # xor of 0..n-1
    ok = count == n and seq_sum == n * (n - 1) // 2 and seq_xor == want_xor and bad == 0
    shares = "+".join(str(t[0]) for t in tallies)
    if not ok:
        raise SystemExit(f"{label}: delivery check failed: {n} sent, {count} received ({shares} per consumer), "
                         f"{bad} bad checksums, sum/xor of sequence numbers {'ok' if seq_sum == n * (n - 1) // 2 and seq_xor == want_xor else 'wrong'}")
    return f"exactly once ({shares})"


class Progress:
    """One line per phase: on a terminal it is rewritten in place with the live rate
    (what the producer has handed over so far), then replaced by the final figures."""

    WIDTH = 44  # phase label column

    def __init__(self, label: str, total: int, out=None) -> None:
        self.label, self.total = label, total
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self._last = 0.0

    def __call__(self, done: int, t0: float) -> None:
        now = time.perf_counter()
        if not self.tty or now - self._last < 0.2:
            return
        self._last = now
        rate = done / max(now - t0, 1e-9)
        line = (f"  {self.label:<{self.WIDTH}} {min(done, self.total):>11,} / {self.total:,} ticks"
                f"  {rate / 1e6:8.3f} M ticks/s ...")
        self.out.write("\r" + line[:150] + "\x1b[K")  # \x1b[K: erase the rest of the line
        self.out.flush()

    def done(self, rate: float, check: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[K")
        self.out.write(f"  {self.label:<{self.WIDTH}} {self.total:>11,} ticks  {rate / 1e6:8.3f} M ticks/s  {check}\n")
        self.out.flush()


def summary_table(rows) -> list[str]:
    """Rows of (how, shmring rate, mp.Queue rate) as aligned text lines."""
    cells = [("", "shmring", "mp.Queue", "speed-up")]
    cells += [(how, f"{rate / 1e6:.2f} M", f"{qrate / 1e6:.3f} M", f"{rate / qrate:.1f}x")
              for how, rate, qrate in rows]
    w = [max(len(r[i]) for r in cells) for i in range(4)]
    return ["  " + "  ".join([r[0].ljust(w[0])] + [c.rjust(w[i + 1]) for i, c in enumerate(r[1:])])
            for r in cells]


def save_plot(path: str, rows, consumers: int, machine: str) -> None:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'shmring[plot]'") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    x = np.arange(len(rows))
    shm = [r[1] / 1e6 for r in rows]
    mpq = [r[2] / 1e6 for r in rows]
    b1 = ax.bar(x - 0.2, shm, 0.4, label="shmring", color="#2a7ab9")
    b2 = ax.bar(x + 0.2, mpq, 0.4, label="multiprocessing.Queue", color="#c9772b")
    ax.set_yscale("log")
    ax.set_xticks(x, [r[0] for r in rows])
    ax.set_ylabel("M ticks/s (log scale, higher is better)")
    ax.set_title(f"1 producer -> {consumers} consumer processes, 64-byte ticks", fontsize=10)
    for bar, v in zip(list(b1) + list(b2), shm + mpq):
        ax.annotate(f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    for xi, r in zip(x, rows):
        ax.annotate(f"{r[1] / r[2]:.1f}x", (xi, max(r[1], r[2]) / 1e6 * 2.2), ha="center", fontsize=10,
                    fontweight="bold")
    ax.set_ylim(top=max(shm + mpq) * 6)
    ax.legend(loc="upper left", fontsize=8)
    fig.text(0.99, 0.01, machine, ha="right", fontsize=6, color="gray")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--consumers", type=_positive, default=3, metavar="N",
                    help="consumer processes (default 3)")
    ap.add_argument("--records", type=_positive, default=2_000_000, metavar="N",
                    help="ticks per shmring run and per batched multiprocessing.Queue run (default 2000000)")
    ap.add_argument("--queue-records", type=_positive, default=100_000, metavar="N",
                    help="ticks for multiprocessing.Queue one tick per call (it is much slower; default 100000)")
    ap.add_argument("--plot", metavar="FILE.png",
                    help="also save a bar chart of the rates (needs matplotlib: pip install 'shmring[plot]')")
    tour = ap.add_mutually_exclusive_group()
    tour.add_argument("--messages", action="store_true",
                      help="instead: dicts holding camera frames through a message ring (pop, zero-copy view)")
    tour.add_argument("--board", action="store_true",
                      help="instead: one process writes the latest tick per symbol to a Board, the consumers read")
    tour.add_argument("--queue", action="store_true",
                      help="instead: shmring.Queue with 4 producer and N consumer processes")
    ap.add_argument("--seconds", type=_seconds, default=1.5, metavar="S",
                    help="how long each phase of --messages, --board and --queue runs (default 1.5)")
    return ap


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.05 <= v <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0.05 and 3600 seconds, got {text}")
    return v


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def main(argv=None, prog: str | None = None) -> int:
    ap = build_parser(prog)
    args = ap.parse_args(argv)
    tour = "messages" if args.messages else "board" if args.board else "queue" if args.queue else None
    if tour:
        if args.plot:
            ap.error(f"--plot draws the record demo's chart; it does not go with --{tour}")
        from . import _demo_features

        return getattr(_demo_features, f"run_{tour}")(args.consumers, args.seconds)
    if args.plot:  # fail before the run, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("--plot needs matplotlib: pip install 'shmring[plot]'") from None

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    machine = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"
    print(f"shmring demo: 1 producer -> {args.consumers} consumer processes, 64-byte ticks, work-sharing")
    print(f"machine: {machine}\n")

    name = f"demo-{os.getpid()}"
    rows = []
    for batched in (False, True):
        how = f"batches of {BATCH}" if batched else "one tick per call"
        progress = Progress(f"shmring, {how}", args.records)
        rate, check = run_shmring(args.records, args.consumers, batched, name, progress)
        progress.done(rate, check)
        qn = args.queue_records if not batched else args.records
        progress = Progress(f"multiprocessing.Queue, {how}", qn)
        qrate, check = run_mpqueue(qn, args.consumers, batched, progress)
        progress.done(qrate, check)
        rows.append((how, rate, qrate))

    print("\nsummary (ticks/s, higher is better)")
    print("\n".join(summary_table(rows)))
    if args.plot:
        save_plot(args.plot, rows, args.consumers, machine)
        print(f"\nchart saved to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
