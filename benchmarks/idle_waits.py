#!/usr/bin/env python3
"""What an idle awaited wait costs the event loop's thread, beside a bare sleep.

    python benchmarks/idle_waits.py [--seconds 2] [--rounds 3]

Each wait runs --seconds with nothing arriving, in one asyncio loop, with the
peers it would watch alive and idle in other processes:

    aget             shmring.Queue.aget(timeout) on a queue whose other process
                     holds a lane and a consumer slot
    Queue.fileno()   selectors.select(timeout) on that queue's descriptor
                     (beside: the same select on a pipe nobody writes)
    apop, no producer  a ring consumer's apop(timeout) before any producer exists
    apush, full ring   a producer's apush(timeout) on a full queue-mode ring whose
                     consumer lives in another process

and the loop thread's CPU time and voluntary context switches (its sleeps) are
taken around it (tests/_idle.py's window). On a virtual machine every wake-up
of a sleeping thread is charged CPU time by itself, so the sleeps are the
repeatable figure (a wall below --seconds: the wait ended early, as a
descriptor a recovery tick turned readable); "beyond bare" is the CPU time above the bare sleep (or bare
select) of the same round, as a share of one core. Figures are the median over
the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import queue
import selectors
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import shmring  # noqa: E402
from _idle import window  # noqa: E402


def _queue_peer(q, ready, stop) -> None:
    q.put(("peer", os.getpid()))
    q.get(timeout=30)
    ready.set()
    stop.wait(600)


def _ring_peer(ring, ready, stop) -> None:
    c = ring.consumer()
    ready.set()
    stop.wait(600)
    c.close()


def _select_for(fd: int, secs: float):
    async def sel() -> None:
        with selectors.DefaultSelector() as s:
            s.register(fd, selectors.EVENT_READ)
            s.select(secs)
    return sel


async def _rounds(secs: float, rounds: int, q, cons, prod) -> dict[str, list]:
    out: dict[str, list] = {k: [] for k in ("bare sleep", "aget", "bare select", "Queue.fileno()",
                                             "apop, no producer", "apush, full ring")}
    rfd, wfd = os.pipe()
    try:
        # the loop's reactor and each descriptor are set up before the windows
        for make, exc in ((lambda: q.aget(timeout=0.05), queue.Empty),
                          (lambda: cons.apop(timeout=0.05), shmring.Empty),
                          (lambda: prod.apush(1, timeout=0.05), shmring.Full)):
            try:
                await make()
            except exc:
                pass
        fd = q.fileno()
        for _ in range(rounds):
            out["bare sleep"].append(await window(lambda: asyncio.sleep(secs)))
            out["aget"].append(await window(lambda: q.aget(timeout=secs), expect=queue.Empty))
            out["bare select"].append(await window(_select_for(rfd, secs)))
            try:
                q.get_nowait()  # the fileno() protocol: a get that finds nothing re-arms
            except queue.Empty:
                pass
            out["Queue.fileno()"].append(await window(_select_for(fd, secs)))
            out["apop, no producer"].append(await window(lambda: cons.apop(timeout=secs), expect=shmring.Empty))
            out["apush, full ring"].append(await window(lambda: prod.apush(1, timeout=secs), expect=shmring.Full))
    finally:
        os.close(rfd)
        os.close(wfd)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ctx = multiprocessing.get_context("fork")
    tag = f"{os.getpid()}"
    q = shmring.Queue()
    lonely = shmring.Ring.create(f"idle-a{tag}", capacity=8, dtype=np.int64, unlink_on_close=True)
    full = shmring.Ring.create(f"idle-b{tag}", capacity=8, dtype=np.int64, mode="queue",
                               unlink_on_close=True)
    stop = ctx.Event()
    kids = []
    try:
        for target, arg in ((_queue_peer, q), (_ring_peer, full)):
            ready = ctx.Event()
            p = ctx.Process(target=target, args=(arg, ready, stop), daemon=True)
            p.start()
            kids.append(p)
            if not ready.wait(30):
                raise SystemExit("a peer process did not start")
        cons = lonely.consumer()
        prod = full.producer()
        prod.push_many(np.arange(8, dtype=np.int64))
        res = asyncio.run(_rounds(args.seconds, args.rounds, q, cons, prod))
    finally:
        stop.set()
        for p in kids:
            p.join(10)
            if p.is_alive():
                p.kill()
        lonely.close()
        full.close()
        q.close()
    load = os.getloadavg()
    print(f"{platform.node() or 'this machine'}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}, "
          f"aio backend {shmring.aio.backend()}; load average {load[0]:.1f}; "
          f"{args.rounds} rounds of {args.seconds:g} s, medians")
    print()
    print("| wait | wall | loop thread CPU | sleeps | beyond bare, % of a core |")
    print("| --- | --- | --- | --- | --- |")
    for name, ws in res.items():
        base = res["bare select" if name == "Queue.fileno()" else "bare sleep"]
        wall = statistics.median(w.wall for w in ws)
        cpu = statistics.median(w.cpu for w in ws)
        sleeps = statistics.median(w.sleeps for w in ws)
        beyond = statistics.median((w.cpu - b.cpu) / w.wall for w, b in zip(ws, base)) * 100
        extra = "" if name.startswith("bare") else f"{beyond:+.2f}%"
        print(f"| {name} | {wall:.2f} s | {cpu * 1e3:.1f} ms | {sleeps:g} | {extra} |")


if __name__ == "__main__":
    main()
