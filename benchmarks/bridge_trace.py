#!/usr/bin/env python3
"""Where one isolated record's time goes on its way through the bridge.

    python benchmarks/bridge_trace.py [--path loopback|veth] [--n 2000] [--interval 0.0005]
                                      [--send-opt=--OPT=V ...] [--recv-opt=--OPT=V ...]

A producer pushes one 64-byte record every ``interval`` seconds (stamped with
CLOCK_MONOTONIC, which every process and network namespace of a host shares);
a sending and a receiving bridge, each its own process, forward it; a consumer
pops it. Each bridge runs with stamps taken at its stage boundaries (the bridge
classes, subclassed here; nothing in the bridge itself changes), and each record
is followed by its position:

  wake     push -> the sending bridge has the record (its wait on the ring ends)
  send     -> the batch is handed to ZeroMQ (the bridge's own Python)
  wire     -> the receiving bridge's poll returns (both ZeroMQ I/O threads, TCP, the wake-up
              of the receiving thread): raw pyzmq's whole path has this shape
  recv     -> the header frame is read (Python between the poll and the first recv)
  publish  -> the batch is in the local ring (reserve, recv_into, sidecar, publish + futex wake)
  pop      -> the consumer has it (its wake-up)

plus cpu-s / cpu-r, the CPU time of each bridge's thread over its own stages (send;
recv + publish), against which the wall time shows how long a thread waited for a CPU.

Printed: the median (p50) of each stage and of the total, then the same for raw
pyzmq PUSH/PULL (one stage: send -> recv) and one local ring hand-off, taken in the
same run (the floor the bridge is held to is raw + hand-off).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shmring  # noqa: E402
from bench_bridge import REC, Path, produce, read_sidecar, release, run_local, run_raw, wait_for  # noqa: E402
from shmring import bridge as B  # noqa: E402

HERE = os.path.abspath(__file__)


class TracedSender(B.Sender):
    """Stamps: the wait on the ring ended (per batch), the batch handed to ZeroMQ."""

    def __init__(self, *a, cap: int = 100_000, **kw) -> None:
        super().__init__(*a, **kw)
        self.t = np.zeros((cap, 4), np.int64)  # first position, taken, sent, CPU ns taken -> sent
        self.k = 0

    def _take(self, timeout):
        out = super()._take(timeout)
        self._t_taken = time.monotonic_ns()
        self._c_taken = time.thread_time_ns()
        return out

    def _send_data(self, ident, seq, first, n, parts):
        pos = int(parts[0]["seq"][0])  # read before ZeroMQ or the ring may reuse it
        super()._send_data(ident, seq, first, n, parts)
        if self.k < len(self.t):
            self.t[self.k] = (pos, self._t_taken, time.monotonic_ns(), time.thread_time_ns() - self._c_taken)
            self.k += 1


class TracedReceiver(B.Receiver):
    """Stamps: the poll returned, the header was read, the batch was published."""

    def __init__(self, *a, cap: int = 100_000, **kw) -> None:
        super().__init__(*a, **kw)
        self.t = np.zeros((cap, 5), np.int64)  # first position, polled, header, published, CPU ns polled -> published
        self.k = 0
        self._t_poll = 0

    def _setup(self) -> None:
        super()._setup()
        poll = self._poller.poll

        def stamped(timeout=None):
            ev = poll(timeout)
            if ev:
                self._t_poll = time.monotonic_ns()
                self._c_poll = time.thread_time_ns()
            return ev

        self._poller.poll = stamped

    def _into_ring(self, sock, hdr, broadcast):
        t0 = time.monotonic_ns()
        head = self._head
        done = super()._into_ring(sock, hdr, broadcast)
        if done and self.k < len(self.t):
            # the local ring starts empty: its head before the batch is the sending
            # ring's position of the batch's first record (one receiver)
            self.t[self.k] = (head, self._t_poll, t0, time.monotonic_ns(), time.thread_time_ns() - self._c_poll)
            self.k += 1
        return done


def run_side(side: str, argv: list[str]) -> None:
    out = argv[-1]
    if side == "send":
        b = TracedSender(argv[0], argv[1], max_records=1024, **_opts(argv[2:-1]))
    else:
        b = TracedReceiver(argv[0], argv[1], **_opts(argv[2:-1]))
    signal.signal(signal.SIGTERM, lambda *_: b._stop.set())
    b.run()
    np.save(out, b.t[:b.k])


def _opts(pairs: list[str]) -> dict:
    kw = {}
    for p in pairs:
        k, v = p.lstrip("-").split("=", 1)
        kw[k.replace("-", "_")] = float(v) if "." in v or "e" in v else int(v)
    return kw


def consume(name: str, n: int) -> np.ndarray:
    ring = shmring.Ring.attach(name)
    out = np.zeros((n, 3), np.int64)  # seq, stamped at push, popped
    got = 0
    with ring.consumer(start="oldest") as c:
        while got < n:
            a = c.pop_many(64, timeout=30)
            now = time.monotonic_ns()
            k = min(len(a), n - got)
            out[got:got + k, 0] = a["seq"][:k]
            out[got:got + k, 1] = a["ts"][:k]
            out[got:got + k, 2] = now
            got += k
    ring.close()
    return out


def trace(path: Path, mode: str, n: int, interval: float, send_opts: list[str], recv_opts: list[str]) -> dict:
    tag = f"bt{os.getpid()}"
    src, dst = tag + "s", tag + "d"
    tmp = tempfile.mkdtemp(prefix="bridge-trace-")
    outs = {s: os.path.join(tmp, s + ".npy") for s in ("send", "recv")}
    ring = shmring.Ring.create(src, REC, 1 << 16, mode=mode)
    procs = []
    try:
        procs.append(path.run("a", [HERE, "_send", src, path.bind, *send_opts, outs["send"]]))
        wait_for(lambda: any(c["alive"] for c in ring.stats()["consumers"]))
        procs.append(path.run("b", [HERE, "_recv", path.connect, dst, *recv_opts, outs["recv"]]))
        wait_for(lambda: read_sidecar(dst) is not None)
        time.sleep(0.5)
        prod = mp.get_context("fork").Process(target=produce, args=(src, n, 1, interval))
        prod.start()
        cons = consume(dst, n)
        prod.join(30)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        release(ring, src, dst)
    snd, rcv = np.load(outs["send"]), np.load(outs["recv"])
    # one row per record that travelled alone (the first record of its batch on both sides)
    s_by = {int(r[0]): r for r in snd}
    r_by = {int(r[0]): r for r in rcv}
    rows = []
    for seq, ts, popped in cons:
        s, r = s_by.get(int(seq)), r_by.get(int(seq))
        if s is None or r is None:
            continue
        rows.append((s[1] - ts, s[2] - s[1], r[1] - s[2], r[2] - r[1], r[3] - r[2], popped - r[3],
                     popped - ts, s[3], r[4]))
    a = np.array(rows, np.float64) / 1e3
    names = ("wake", "send", "wire", "recv", "publish", "pop", "total", "cpu_send", "cpu_recv")
    return {"n": len(a), **{k: float(np.median(a[:, i])) for i, k in enumerate(names)},
            "p99": float(np.percentile(a[:, -1], 99)),
            "all_p50": float(np.median((cons[:, 2] - cons[:, 1]) / 1e3))}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("_send", "_recv"):
        run_side(sys.argv[1][1:], sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", choices=("loopback", "veth"), default="loopback")
    ap.add_argument("--mode", choices=("broadcast", "queue"), default="broadcast")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--interval", type=float, default=0.0005)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--send-opt", action="append", default=[], metavar="--OPT=V",
                    help="a Sender keyword, e.g. --send-opt=--flush-delay=0.0001; may repeat")
    ap.add_argument("--recv-opt", action="append", default=[], metavar="--OPT=V")
    args = ap.parse_args()
    print(f"# load average {os.getloadavg()[0]:.1f}, {args.path}, {args.mode}, "
          f"a record every {args.interval * 1e6:.0f} us, sender {args.send_opt or 'defaults'}, receiver {args.recv_opt or 'defaults'}")
    print(f"{'':8} {'wake':>6} {'send':>6} {'wire':>6} {'recv':>6} {'publ':>6} {'pop':>6} {'total':>6} "
          f"{'p99':>6} {'cpu-s':>5} {'cpu-r':>5} | {'raw':>5} {'local':>5} {'floor':>5} {'ratio':>5}   (p50, us)")
    for _ in range(args.repeat):
        path = Path(args.path)
        try:
            t = trace(path, args.mode, args.n, args.interval, args.send_opt, args.recv_opt)
            raw = run_raw(path, args.n, REC.itemsize, args.interval)
        finally:
            path.close()
        local = run_local(args.n, args.interval)
        floor = raw["p50"] + local["p50"]
        print(f"{'bridge':8} {t['wake']:6.1f} {t['send']:6.1f} {t['wire']:6.1f} {t['recv']:6.1f} "
              f"{t['publish']:6.1f} {t['pop']:6.1f} {t['total']:6.1f} {t['p99']:6.0f} {t['cpu_send']:5.1f} "
              f"{t['cpu_recv']:5.1f} | {raw['p50']:5.0f} "
              f"{local['p50']:5.1f} {floor:5.0f} {t['total'] / floor:5.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
