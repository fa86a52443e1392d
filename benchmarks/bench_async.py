#!/usr/bin/env python3
"""shmring under an event loop, against its own blocking calls and zmq.asyncio.

    python benchmarks/bench_async.py [--quick] [--kind records|messages|both] [--markdown]

(a) one-way latency: a producer process stamps each 64-byte record with
    CLOCK_MONOTONIC just before sending, at a pace that lets the receiver fall
    asleep between records; the receiver takes the difference on arrival.
    Receivers: shmring blocking pop() with spin=0 (it sleeps in the futex),
    shmring apop() on asyncio and on uvloop, zmq.asyncio PULL over ipc://,
    and each loop's floor: the sender writes the record to a pipe, one
    add_reader callback reads it and sets the future the task awaits (the
    least an event loop costs a receiver it wakes; apop's p50 is printed
    against it).
(b) throughput with data waiting: a producer process publishes every record
    before the clock starts (zmq: the sender floods the socket); the receiver
    takes records one per call and 1024 per call: shmring pop()/pop_many() vs
    apop()/apop_many() (`async for` for one per call) vs zmq.asyncio recv().
    A record ring's batches are copied into one reused array (out=), zmq's
    arrive as one message per batch; both drain n records published before
    the clock starts (a ring of n records: 32 MiB, larger than the caches).
    Each shmring figure is the best of --rounds runs, taken in turns.

--kind messages runs the same on a message ring: every record travels as one
64-byte bytes message (push(bytes) / pop() -> bytes); zmq then sends one
64-byte message per record in both throughput cases.

Processes are started with "spawn" and not pinned. Ratios are taken between
figures measured in the same run; the targets are printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import shmring  # noqa: E402

REC = np.dtype([("seq", "<u8"), ("ts", "<u8"), ("px", "<f8", (6,))])
BATCH = 1024
STOP = (1 << 64) - 1


def _ring_name(tag: str) -> str:
    return f"ba{os.getpid() % 100000}-{tag}"


# ---- senders (child processes) -----------------------------------------------

def _create(name: str, ring_kind: str, n: int) -> shmring.Ring:
    """A ring holding n records, or n 64-byte messages (96-byte frames)."""
    if ring_kind == "records":
        return shmring.Ring.create(name, capacity=1 << max(10, (n - 1).bit_length()), dtype=REC)
    return shmring.Ring.create(name, nbytes=1 << max(16, (96 * n - 1).bit_length()))


def _ts(item) -> int:
    """The send time stamped in a record, or in the same bytes sent as a message."""
    if isinstance(item, bytes):
        return int.from_bytes(item[8:16], sys.byteorder)
    return int(item["ts"])


def shm_latency_sender(name: str, n: int, gap: float, ready) -> None:
    r = shmring.Ring.attach(name)
    p = r.producer()
    as_bytes = r.kind == "messages"
    ready.wait(30)
    rec = np.zeros((), REC)
    for i in range(n):
        time.sleep(gap)
        rec["seq"] = i
        rec["ts"] = time.monotonic_ns()
        p.push(rec.tobytes() if as_bytes else rec[()], timeout=30)
    p.close()


def zmq_latency_sender(addr: str, n: int, gap: float, ready) -> None:
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.connect(addr)
    ready.wait(30)
    time.sleep(0.2)  # the connection is up
    rec = np.zeros((), REC)
    for i in range(n):
        time.sleep(gap)
        rec["seq"] = i
        rec["ts"] = time.monotonic_ns()
        s.send(rec.tobytes(), copy=True)
    s.send(b"")
    s.close(linger=5000)
    ctx.term()


def pipe_latency_sender(w, n: int, gap: float, ready) -> None:
    """The floor's sender: the same stamped 64 bytes, each one write to a pipe."""
    ready.wait(30)
    fd = w.fileno()
    rec = np.zeros((), REC)
    for i in range(n):
        time.sleep(gap)
        rec["seq"] = i
        rec["ts"] = time.monotonic_ns()
        os.write(fd, rec.tobytes())
    w.close()


def shm_flood_sender(name: str, n: int) -> None:
    r = shmring.Ring.attach(name)
    p = r.producer()
    block = np.zeros(BATCH, REC)
    block["seq"] = np.arange(BATCH)
    if r.kind == "messages":
        block = [rec.tobytes() for rec in block]
    k = 0
    while k < n:
        m = min(BATCH, n - k)
        p.push_many(block[:m], timeout=60)
        k += m
    p.close()


def zmq_flood_sender(addr: str, n: int, per_msg: int) -> None:
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.connect(addr)
    payload = np.zeros(per_msg, REC).tobytes()
    for _ in range(n // per_msg):
        s.send(payload)
    s.send(b"")
    time.sleep(3)  # let the receiver drain before the socket goes
    s.close(linger=10000)
    ctx.term()


# ---- receivers (this process) ------------------------------------------------

def _run(coro, loop_kind: str):
    if loop_kind == "uvloop":
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


def latency_shm(kind: str, n: int, gap: float, ring_kind: str) -> np.ndarray:
    ctx = mp.get_context("spawn")
    name = _ring_name("lat")
    r = _create(name, ring_kind, 1024)
    try:
        c = r.consumer(spin=0)
        ready = ctx.Event()
        p = ctx.Process(target=shm_latency_sender, args=(name, n, gap, ready), daemon=True)
        p.start()
        lat = np.empty(n, np.int64)
        if kind == "blocking":
            ready.set()
            for i in range(n):
                rec = c.pop(timeout=30)
                lat[i] = time.monotonic_ns() - _ts(rec)
        else:
            async def main():
                ready.set()
                for i in range(n):
                    rec = await c.apop(timeout=30)
                    lat[i] = time.monotonic_ns() - _ts(rec)
            _run(main(), kind)
        p.join(60)
        c.close()
        return lat
    finally:
        r.close()
        shmring.unlink(name)


def latency_floor(kind: str, n: int, gap: float) -> np.ndarray:
    """What the event loop itself costs a receiver woken from its sleep: the
    least an asyncio program can do to await data another process sends. The
    sender writes each stamped record to a pipe; one add_reader callback (kept
    for the whole run) reads it and sets the result of the future the task
    awaits. No ring, no liveness, no re-arm: the floor under any awaited wait."""
    ctx = mp.get_context("spawn")
    r, w = ctx.Pipe(duplex=False)
    ready = ctx.Event()
    p = ctx.Process(target=pipe_latency_sender, args=(w, n, gap, ready), daemon=True)
    p.start()
    w.close()
    fd = r.fileno()
    size = REC.itemsize
    lat = np.empty(n, np.int64)

    async def main():
        loop = asyncio.get_running_loop()
        waiting: list = [None]
        early: list = []

        def on_readable() -> None:
            data = os.read(fd, size)  # one write of 64 bytes is one read (< PIPE_BUF)
            f = waiting[0]
            if f is not None and not f.done():
                waiting[0] = None
                f.set_result(data)
            else:
                early.append(data)

        async def recv() -> bytes:
            if early:
                return early.pop(0)
            f = waiting[0] = loop.create_future()
            return await f

        loop.add_reader(fd, on_readable)
        try:
            ready.set()
            for i in range(n):
                data = await recv()
                lat[i] = time.monotonic_ns() - int.from_bytes(data[8:16], sys.byteorder)
        finally:
            loop.remove_reader(fd)

    _run(main(), kind)
    p.join(60)
    r.close()
    return lat


def latency_zmq(n: int, gap: float) -> np.ndarray:
    import zmq
    import zmq.asyncio
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as d:
        addr = f"ipc://{d}/lat"
        zctx = zmq.asyncio.Context()
        s = zctx.socket(zmq.PULL)
        s.bind(addr)
        ready = ctx.Event()
        p = ctx.Process(target=zmq_latency_sender, args=(addr, n, gap, ready), daemon=True)
        p.start()
        lat = np.empty(n, np.int64)

        async def main():
            ready.set()
            for i in range(n):
                msg = await s.recv()
                lat[i] = time.monotonic_ns() - int(np.frombuffer(msg, REC)[0]["ts"])
            await s.recv()

        asyncio.run(main())
        p.join(60)
        s.close(linger=0)
        zctx.term()
        return lat


def throughput_shm(kind: str, per_call: int, n: int, ring_kind: str) -> float:
    """Records/s draining n records (messages) that a producer process published
    before the clock started (the ring holds them all: data is waiting)."""
    ctx = mp.get_context("spawn")
    name = _ring_name("thr")
    r = _create(name, ring_kind, n)
    try:
        c = r.consumer()
        p = ctx.Process(target=shm_flood_sender, args=(name, n), daemon=True)
        p.start()
        p.join(120)
        got = 0
        # a record ring's batches land in one reused array (pop_many(out=)), as a
        # consumer that drains at speed would take them: no allocation per call
        buf = np.empty(per_call, REC) if ring_kind == "records" and per_call > 1 else None
        if kind == "blocking":
            t0 = time.perf_counter()
            if per_call == 1:
                for _ in c:
                    got += 1
            elif buf is not None:
                try:
                    while True:
                        got += c.pop_many(timeout=30, out=buf)
                except shmring.Closed:
                    pass
            else:
                try:
                    while True:
                        got += len(c.pop_many(per_call, timeout=30))
                except shmring.Closed:
                    pass
            dt = time.perf_counter() - t0
        else:
            async def main():
                nonlocal got
                t0 = time.perf_counter()
                if per_call == 1:
                    async for _ in c:
                        got += 1
                elif buf is not None:
                    try:
                        while True:
                            got += await c.apop_many(timeout=30, out=buf)
                    except shmring.Closed:
                        pass
                else:
                    try:
                        while True:
                            got += len(await c.apop_many(per_call, timeout=30))
                    except shmring.Closed:
                        pass
                return time.perf_counter() - t0
            dt = _run(main(), kind)
        assert got == n, (got, n)
        c.close()
        return n / dt
    finally:
        r.close()
        shmring.unlink(name)


def throughput_zmq(per_call: int, n: int) -> float:
    import zmq
    import zmq.asyncio
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as d:
        addr = f"ipc://{d}/thr"
        zctx = zmq.asyncio.Context()
        s = zctx.socket(zmq.PULL)
        s.bind(addr)
        p = ctx.Process(target=zmq_flood_sender, args=(addr, n, per_call), daemon=True)
        p.start()

        async def main():
            got = 0
            msg = await s.recv()  # the first message: the sender is up
            t0 = time.perf_counter()
            while msg:
                got += len(np.frombuffer(msg, REC))
                msg = await s.recv()
            return got, time.perf_counter() - t0

        got, dt = asyncio.run(main())
        p.join(60)
        s.close(linger=0)
        zctx.term()
        return got / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer samples")
    ap.add_argument("--rounds", type=int, default=3, help="throughput runs per receiver (best is kept)")
    ap.add_argument("--kind", choices=["records", "messages", "both"], default="both", help="ring kind(s) to measure")
    ap.add_argument("--markdown", action="store_true",
                    help="end with the README's table of these figures (ratios from this run)")
    args = ap.parse_args()
    n_lat = 500 if args.quick else 3000
    n_thr = 1 << (17 if args.quick else 19)
    gap = 0.0005

    try:
        import uvloop  # noqa: F401
        loops = ["asyncio", "uvloop"]
    except ImportError:
        loops = ["asyncio"]
    try:
        import zmq  # noqa: F401
        have_zmq = True
    except ImportError:
        have_zmq = False

    from compare import machine_info
    m = machine_info([])
    load0 = os.getloadavg()
    print(f"# bench_async: {m.get('cpu')} x{os.cpu_count()}, Linux {m.get('kernel')}, Python {m.get('python')}, "
          f"shmring aio backend {shmring.aio.backend()}; load avg {load0[0]:.1f}")

    results = {}
    for ring_kind in (["records", "messages"] if args.kind == "both" else [args.kind]):
        results[ring_kind] = run_kind(ring_kind, args, loops, have_zmq, n_lat, n_thr, gap)
    if args.markdown:
        print()
        print(markdown_table(results, loops, have_zmq, m, (load0[0], os.getloadavg()[0])))


def _ratio_note(ratio: float, limit: float, what: str) -> str:
    return f"{what}: x{ratio:.2f}, " + ("met" if ratio <= limit else "**not met**")


def markdown_table(results: dict, loops: list[str], have_zmq: bool, m: dict, loads: tuple[float, float]) -> str:
    """The README's event-loop table, from one run's figures."""
    import platform
    try:
        import zmq
        zv = f", pyzmq {zmq.__version__}"
    except ImportError:
        zv = ""
    try:
        import uvloop
        uv = f", uvloop {uvloop.__version__}"
    except ImportError:
        uv = ""
    cols = ["blocking shmring"] + [f"`apop` {lk}" for lk in loops] + (["zmq.asyncio (ipc)"] if have_zmq else [])
    out = [f"`.venv/bin/python benchmarks/bench_async.py --markdown`: {m.get('cpu')} x{os.cpu_count()}, Linux "
           f"{m.get('kernel')}, Python {platform.python_version()}{zv}{uv}; load average "
           f"{loads[0]:.1f} at the start, {loads[1]:.1f} at the end; ratios within this run.", "",
           "| | " + " | ".join(cols) + " | targets |", "|" + " --- |" * (len(cols) + 2)]
    for rk, res in results.items():
        unit = "records" if rk == "records" else "messages"
        lat = res["lat"]
        keys = ["blocking pop (spin=0)"] + [f"apop on {lk}" for lk in loops] + (["zmq.asyncio PULL ipc"] if have_zmq else [])
        base = lat[keys[0]][0]
        cells = []
        for k in keys:
            p50, p99 = lat[k]
            cells.append(f"{p50:.1f} / {p99:.0f} us" + (f" (x{p50 / base:.2f})" if k.startswith("apop") else ""))
        a50 = lat["apop on asyncio"][0]
        notes = [_ratio_note(a50 / base, 1.5, "asyncio p50 within x1.5 of blocking")]
        if have_zmq:
            better = lat["zmq.asyncio PULL ipc"][0] / a50
            notes.append(f"2x better than zmq: {better:.2f}x, " + ("met" if better >= 2 else "**not met**"))
        out.append(f"| {unit}: one-way latency p50 / p99 | " + " | ".join(cells) + " | " + "; ".join(notes) + " |")
        fcells = ["(pipe write)"]
        for lk in loops:
            f50, f99 = lat[f"{lk} floor (pipe)"]
            fcells.append(f"{f50:.1f} / {f99:.0f} us (x{f50 / base:.2f}; apop x{lat[f'apop on {lk}'][0] / f50:.2f} of it)")
        if have_zmq:
            fcells.append("")
        f_as = lat["asyncio floor (pipe)"][0]
        out.append(f"| {unit} run: the loop's floor, pipe + `add_reader` + future, p50 / p99 | " + " | ".join(fcells)
                   + f" | floor within x1.5 of blocking: x{f_as / base:.2f}"
                   + (" (the target is below asyncio's own floor)" if f_as / base > 1.5 else "") + " |")
        for per_call, thr in res["thr"].items():
            b = thr["blocking"]
            cells = [_fmt_rate(b)] + [_fmt_rate(thr[f"async on {lk}"]) + f" (x{b / thr[f'async on {lk}']:.2f})"
                                      for lk in loops]
            if have_zmq:
                cells.append(_fmt_rate(thr["zmq.asyncio"]))
            a = thr["async on asyncio"]
            notes = [_ratio_note(b / a, 1.2, "asyncio within x1.2 of blocking")]
            if have_zmq:
                notes.append(f"10x zmq: {a / thr['zmq.asyncio']:.0f}x, " + ("met" if a >= 10 * thr["zmq.asyncio"] else "**not met**"))
            out.append(f"| {unit}/s, {per_call} per call, data waiting | " + " | ".join(cells) + " | "
                       + "; ".join(notes) + " |")
    out.append("")
    out.append("(x: blocking figure / async figure for throughput, async / blocking for latency: lower is better.)")
    return "\n".join(out)


def _fmt_rate(v: float) -> str:
    return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.1f} k"


def run_kind(ring_kind: str, args, loops: list[str], have_zmq: bool, n_lat: int, n_thr: int, gap: float) -> dict:
    what = "64-byte records" if ring_kind == "records" else "64-byte messages (bytes)"
    print(f"\n# {ring_kind} ring: {what}")
    print("\n## one-way latency (us), sender paced every 0.5 ms, receiver asleep between records")
    lats = {"blocking pop (spin=0)": latency_shm("blocking", n_lat, gap, ring_kind)}
    for lk in loops:
        lats[f"apop on {lk}"] = latency_shm(lk, n_lat, gap, ring_kind)
    for lk in loops:
        lats[f"{lk} floor (pipe)"] = latency_floor(lk, n_lat, gap)
    if have_zmq:
        lats["zmq.asyncio PULL ipc"] = latency_zmq(n_lat, gap)
    base = np.percentile(lats["blocking pop (spin=0)"], 50)
    p50 = {k: np.percentile(v, 50) for k, v in lats.items()}
    print(f"{'receiver':<26}{'p50':>9}{'p99':>9}{'p50 / blocking':>16}{'p50 / floor':>13}")
    for k, v in lats.items():
        lk = k.split()[-1] if k.startswith("apop on") else None
        fl = f"{p50[k] / p50[f'{lk} floor (pipe)']:13.2f}" if lk else ""
        print(f"{k:<26}{p50[k] / 1e3:9.1f}{np.percentile(v, 99) / 1e3:9.1f}{p50[k] / base:16.2f}{fl}")
    a50 = p50["apop on asyncio"]
    print(f"target: apop p50 <= 1.5x blocking p50 -> {a50 / base:.2f}x "
          f"(the loop's own floor is {p50['asyncio floor (pipe)'] / base:.2f}x blocking; apop is "
          f"{a50 / p50['asyncio floor (pipe)']:.2f}x the floor)")
    if have_zmq:
        print(f"target: apop p50 >= 2x better than zmq.asyncio -> {p50['zmq.asyncio PULL ipc'] / a50:.2f}x better")
    out = {"lat": {k: (p50[k] / 1e3, np.percentile(v, 99) / 1e3) for k, v in lats.items()}, "thr": {}}

    for per_call in (1, BATCH):
        print(f"\n## throughput with data waiting, {per_call} per call ({ring_kind}/s)")
        kinds = {"blocking": "blocking", **{f"async on {lk}": lk for lk in loops}}
        thr = {k: 0.0 for k in kinds}
        for _ in range(args.rounds):
            for label, kind in kinds.items():
                thr[label] = max(thr[label], throughput_shm(kind, per_call, n_thr, ring_kind))
        if have_zmq:
            # a message ring is compared with one zmq message per 64-byte message,
            # whatever the batch; a record ring with zmq messages of per_call records
            zmq_per = per_call if ring_kind == "records" else 1
            thr["zmq.asyncio"] = throughput_zmq(zmq_per, n_thr if zmq_per > 1 else n_thr // 5)
        print(f"{'receiver':<22}{'per second':>14}{'/ blocking':>12}")
        for k, v in thr.items():
            print(f"{k:<22}{v:14,.0f}{v / thr['blocking']:12.2f}")
        a = thr["async on asyncio"]
        print(f"target: async within 1.2x of blocking -> blocking/async = {thr['blocking'] / a:.2f}x")
        if have_zmq:
            print(f"target: async >= 10x zmq.asyncio -> {a / thr['zmq.asyncio']:.1f}x")
        out["thr"][per_call] = thr
    return out


if __name__ == "__main__":
    main()
