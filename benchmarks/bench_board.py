#!/usr/bin/env python3
"""shmring.Board against the usual ways of sharing "the latest value per key".

    python benchmarks/bench_board.py [--quick] [--table-mb N] [--json out.json]

(1) Rates from Python, per process, for 64-byte and 6 MB values, 1 key and
    1,000 keys (keys written and read round-robin):
      write alone       one process writing flat out
      read alone        one process reading flat out (the value written once)
      write + 4 readers the writer's rate while 4 reader processes read flat
                        out, and the readers' combined rate
    Peers, measured in the same run with the same values:
      Manager().dict()          d[k] = v / d[k] (a server process, a socket round trip)
      mp.Array + its lock       one byte array, one slot per key, copied under the lock
      pyzmq PUB/SUB CONFLATE    send = write; a subscriber receiving = read. CONFLATE
                                keeps one message per socket, not per key, so only the
                                1-key cases are measured
      iceoryx2 blackboard       its Python binding's blackboard (64-byte values, ctypes)
    A peer that is not installed is reported as skipped, with the reason.

(2) The big table: 8 worker processes each compute column sums over one table
    of rows x 10 float64 (--table-mb, default 400 MB; 100 MB with --quick),
    shared through a Board view, sent to each worker through
    multiprocessing.Queue, or placed in multiprocessing.shared_memory. Wall time
    from "go" to the 8th result; total PSS (parent + workers, from
    /proc/PID/smaps_rollup) while every worker still holds the table.

Workers start with the "spawn" method (fork would share the parent's pages and
hide the copies). Figures are unpinned; on a 2-core machine 4 readers and a
writer share two CPUs, so "write + 4 readers" measures CPU sharing as much as
interference between the processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
sys.path.insert(0, HERE)  # the harness package

import shmring  # noqa: E402
from harness.report import fmt_gain, fmt_rate  # noqa: E402 - the comparison's own figure and ratio formats

SMALL = 64
FRAME = 6 * 1000 * 1000
NREADERS = 4
# the board's 64-byte value is a record, as a user would store it (np.void in and out)
TICK = np.dtype([("seq", "<u8"), ("ts", "<u8"), ("px", "<f8", (6,))])
assert TICK.itemsize == SMALL
CTX = mp.get_context("spawn")


def _name(tag: str) -> str:
    return f"bb{os.getpid()}{tag}"[:25]


def _timed(fn, seconds: float) -> float:
    """Calls fn(i) until seconds have passed; returns calls per second."""
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(64):
            fn(n)
            n += 1
        if time.perf_counter() >= end:
            break
    return n / (time.perf_counter() - t0)


# ---- peers: each gives a setup in the parent and writer / reader bodies ------------


def _fill(store, v, nkeys):
    for k in range(nkeys):
        store[k] = v


def _store_round_robin(store, v, nkeys):
    """A writer body: call i stores v under key i mod nkeys."""
    def w(i):
        store[i % nkeys] = v
    return w


def _load_round_robin(store, nkeys):
    """A reader body: call i reads key i mod nkeys."""
    return lambda i: store[i % nkeys]


class BoardPeer:
    name = "shmring.Board"

    def __init__(self, size, nkeys):
        self.size, self.nkeys = size, nkeys
        self.board = shmring.Board.create(_name("b"), TICK if size == SMALL else ("u1", (size,)), nkeys)
        _fill(self.board, np.zeros((), TICK)[()] if size == SMALL else np.zeros(size, np.uint8), nkeys)

    def handle(self):
        return self.board

    @staticmethod
    def writer(board, size, nkeys):
        return _store_round_robin(board, np.ones((), TICK)[()] if size == SMALL else np.ones(size, np.uint8), nkeys)

    @staticmethod
    def reader(board, size, nkeys):
        out = np.empty(size, np.uint8)
        if size > 1024:  # read into a reused buffer: no allocation per read
            return lambda i: board.read(i % nkeys, out=out)
        return _load_round_robin(board, nkeys)

    def close(self):
        self.board.close()
        self.board.unlink()


class ManagerPeer:
    name = "Manager().dict()"

    def __init__(self, size, nkeys):
        self.mgr = CTX.Manager()
        self.d = self.mgr.dict()
        _fill(self.d, bytes(size), nkeys)

    def handle(self):
        return self.d

    @staticmethod
    def writer(d, size, nkeys):
        return _store_round_robin(d, b"\x01" * size, nkeys)

    @staticmethod
    def reader(d, size, nkeys):
        return _load_round_robin(d, nkeys)

    def close(self):
        self.mgr.shutdown()


class ArrayPeer:
    name = "mp.Array + lock"

    def __init__(self, size, nkeys):
        self.arr = CTX.Array("B", size * nkeys, lock=True)

    def handle(self):
        return self.arr

    @staticmethod
    def _slots(arr, size, nkeys):
        """A row of the shared byte array per key, and the array's lock."""
        return np.frombuffer(arr.get_obj(), np.uint8).reshape(nkeys, size), arr.get_lock()

    @staticmethod
    def writer(arr, size, nkeys):
        view, lock = ArrayPeer._slots(arr, size, nkeys)
        v = np.ones(size, np.uint8)

        def w(i):
            with lock:
                view[i % nkeys] = v
        return w

    @staticmethod
    def reader(arr, size, nkeys):
        view, lock = ArrayPeer._slots(arr, size, nkeys)
        out = np.empty(size, np.uint8)

        def r(i):
            with lock:
                out[:] = view[i % nkeys]
            return out
        return r

    def close(self):
        pass


class ZmqPeer:
    """PUB/SUB over ipc://, CONFLATE on each subscriber: it holds only the newest message."""
    name = "pyzmq PUB/SUB CONFLATE"

    def __init__(self, size, nkeys):
        import zmq  # noqa: F401  (skip the peer when missing)
        self.addr = f"ipc:///tmp/{_name('z')}.ipc"

    def handle(self):
        return self.addr

    @staticmethod
    def writer(addr, size, nkeys):
        import zmq
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.PUB)  # CONFLATE on the subscribers only (libzmq #3323: not on PUB)
        s.bind(addr)
        time.sleep(0.3)  # let subscribers connect
        v = b"\x01" * size
        return lambda i: s.send(v, copy=size < 65536)

    @staticmethod
    def reader(addr, size, nkeys):
        import zmq
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.CONFLATE, 1)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.setsockopt(zmq.RCVTIMEO, 100)
        s.connect(addr)

        def r(i):
            try:
                return s.recv()
            except zmq.Again:
                return None
        return r

    def close(self):
        try:
            os.unlink(self.addr[len("ipc://"):])
        except OSError:
            pass


class Iox2Peer:
    """iceoryx2's blackboard (Python binding): u64 keys, ctypes values."""
    name = "iceoryx2 blackboard"

    def __init__(self, size, nkeys):
        import ctypes
        import iceoryx2 as iox2
        if size > 4096:
            raise RuntimeError("values are ctypes structures here; 6 MB values not attempted")
        self.service = _name("i")
        self.node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        b = self.node.service_builder(iox2.ServiceName.new(self.service)).blackboard_creator(ctypes.c_uint64)
        value = (ctypes.c_uint8 * size)()
        for k in range(nkeys):
            b = b.add(ctypes.c_uint64(k), value)
        self.bb = b.create()

    def handle(self):
        return self.service

    @staticmethod
    def _open(service, size):
        import ctypes
        import iceoryx2 as iox2
        node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        bb = node.service_builder(iox2.ServiceName.new(service)).blackboard_opener(ctypes.c_uint64).open()
        return node, bb, ctypes.c_uint8 * size

    @staticmethod
    def writer(service, size, nkeys):
        import ctypes
        node, bb, vt = Iox2Peer._open(service, size)
        w = bb.writer_builder().create()
        handles = [w.entry(ctypes.c_uint64(k), vt) for k in range(nkeys)]
        v = vt(*([1] * size))
        keep = (node, bb, w)

        def wr(i, keep=keep):
            handles[i % nkeys].update_with_copy(v)
        return wr

    @staticmethod
    def reader(service, size, nkeys):
        import ctypes
        node, bb, vt = Iox2Peer._open(service, size)
        r = bb.reader_builder().create()
        handles = [r.entry(ctypes.c_uint64(k), vt) for k in range(nkeys)]
        keep = (node, bb, r)

        def rd(i, keep=keep):
            return handles[i % nkeys].get()
        return rd

    def close(self):
        self.bb = None
        self.node = None


PEERS = [BoardPeer, ManagerPeer, ArrayPeer, ZmqPeer, Iox2Peer]


def _worker(peer_cls, role, handle, size, nkeys, seconds, ready, go, out_q):
    try:
        fn = (peer_cls.writer if role == "w" else peer_cls.reader)(handle, size, nkeys)
        ready.set()
        go.wait(60)
        rate = _timed(fn, seconds)
        out_q.put((role, rate, None))
    except Exception as exc:  # reported in the table, never a hang
        ready.set()
        out_q.put((role, 0.0, f"{type(exc).__name__}: {exc}"))


def _run(peer_cls, handle, size, nkeys, roles, seconds):
    """Runs one process per role at once; returns {role: [rates]} and errors."""
    ready = [CTX.Event() for _ in roles]
    go = CTX.Event()
    q = CTX.Queue()
    ps = [CTX.Process(target=_worker, args=(peer_cls, r, handle, size, nkeys, seconds, e, go, q), daemon=True)
          for r, e in zip(roles, ready)]
    for p in ps:
        p.start()
    for e in ready:
        e.wait(60)
    go.set()
    res, errs = {}, []
    got = 0
    limit = time.monotonic() + seconds + 120
    try:
        while got < len(ps):
            try:
                role, rate, err = q.get(timeout=1)
            except Exception:  # queue.Empty: a worker that died never reports
                dead = [p for p in ps if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > limit:
                    errs.append(f"worker died (exit code {dead[0].exitcode})" if dead else "timed out")
                    for r in roles:
                        res.setdefault(r, [])
                    break
                continue
            got += 1
            res.setdefault(role, []).append(rate)
            if err:
                errs.append(err)
    finally:
        for p in ps:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
    return res, errs


def _first(xs):
    return xs[0] if xs else 0.0


def rates(seconds: float, sizes, keysets):
    rows = []
    for size in sizes:
        for nkeys in keysets:
            for peer_cls in PEERS:
                row = {"peer": peer_cls.name, "size": size, "keys": nkeys}
                rows.append(row)
                if peer_cls is ZmqPeer and nkeys > 1:
                    row["skip"] = "CONFLATE keeps one message per socket, not per key"
                    continue
                if peer_cls is ManagerPeer and size == FRAME and nkeys > 1:
                    row["skip"] = "1,000 x 6 MB through the manager process: not attempted (memory)"
                    continue
                if peer_cls is ArrayPeer and size == FRAME and nkeys > 1:
                    row["skip"] = "a 6 GB lock-guarded array: not attempted (memory)"
                    continue
                try:
                    peer = peer_cls(size, nkeys)
                except Exception as exc:
                    row["skip"] = f"{type(exc).__name__}: {exc}"
                    continue
                try:
                    h = peer.handle()
                    if peer_cls is ZmqPeer:
                        # a PUB with no subscriber drops at once, so "alone" has one
                        # subscriber; "read" is what it received while the writer sent
                        res, errs = _run(peer_cls, h, size, nkeys, ["w", "r"], seconds)
                        row["write"] = _first(res["w"])
                        row["read"] = _first(res["r"])
                        res2, errs2 = _run(peer_cls, h, size, nkeys, ["w"] + ["r"] * NREADERS, seconds)
                        row["write_4r"] = _first(res2["w"])
                        row["read_4r"] = sum(res2["r"])
                        errs += errs2
                    else:
                        res, errs = _run(peer_cls, h, size, nkeys, ["w"], seconds)
                        row["write"] = _first(res["w"])
                        res, e2 = _run(peer_cls, h, size, nkeys, ["r"], seconds)
                        row["read"] = _first(res["r"])
                        res, e3 = _run(peer_cls, h, size, nkeys, ["w"] + ["r"] * NREADERS, seconds)
                        row["write_4r"] = _first(res["w"])
                        row["read_4r"] = sum(res["r"])
                        errs += e2 + e3
                    if errs:
                        row["error"] = errs[0]
                finally:
                    peer.close()
                print(".", end="", flush=True)
    print()
    return rows


def _fmt_rate(r):
    return "-" if r is None else fmt_rate(r).strip() + "/s"


def print_rates(rows):
    print("\nRates per process (calls/s). 'w kept' = writer rate with 4 readers / alone; "
          "'board w/peer', 'board r/peer' = board's write / read rate over the peer's.\n"
          "pyzmq: CONFLATE on the subscribers; 'read' = recv() calls per s of one subscriber (each waits up to 100 ms; CONFLATE drops the rest). "
          "6 MB x 1,000 keys: a 12 GB board, so in a short run most writes and reads touch "
          "pages this process has never mapped (page faults), unlike the 1-key case.")
    print(f"\n{'value':>6} {'keys':>5}  {'peer':<24} {'write':>11} {'read':>11} {'write+4r':>11} "
          f"{'4r reads':>11}  {'w kept':>6}  {'board w/peer':>12} {'board r/peer':>12}")
    for size in sorted({r["size"] for r in rows}):
        for nkeys in sorted({r["keys"] for r in rows}):
            group = [r for r in rows if r["size"] == size and r["keys"] == nkeys]
            base = next((r for r in group if r["peer"] == "shmring.Board" and "write" in r), None)
            for r in group:
                label = f"{'64 B' if size == SMALL else '6 MB':>6} {nkeys:>5}  {r['peer']:<24}"
                if "skip" in r:
                    print(f"{label} skipped: {r['skip']}")
                    continue
                kept = r["write_4r"] / r["write"] if r.get("write") else 0
                wr = fmt_gain(base["write"] / r["write"]) if base and r.get("write") else "-"
                rr = fmt_gain(base["read"] / r["read"]) if base and r.get("read") else "-"
                if r["peer"] == "shmring.Board":
                    wr = rr = ""
                print(f"{label} {_fmt_rate(r['write']):>11} {_fmt_rate(r['read']):>11} "
                      f"{_fmt_rate(r['write_4r']):>11} {_fmt_rate(r['read_4r']):>11}  {kept:>5.0%}  "
                      f"{wr:>12} {rr:>12}" + (f"  ({r['error']})" if r.get("error") else ""))


# ---- the big table -------------------------------------------------------------------


def _pss_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def _table_worker(kind, handle, ready, go, done, out_q):
    from multiprocessing import shared_memory
    shm = None
    if kind == "board":
        board = shmring.Board.attach(handle)
    elif kind == "shm":
        # registers with the parent's resource tracker (shared with spawn children): harmless
        shm = shared_memory.SharedMemory(name=handle[0])
    ready.set()
    go.wait(120)
    t = time.perf_counter()
    if kind == "board":
        with board.view(0) as table:
            sums = table.sum(axis=0)
    elif kind == "shm":
        table = np.ndarray(handle[1], dtype=np.float64, buffer=shm.buf)
        sums = table.sum(axis=0)
    else:
        table = handle.get(timeout=600)
        sums = table.sum(axis=0)
    out_q.put((os.getpid(), sums, time.perf_counter() - t))
    done.wait(120)
    table = None
    if shm is not None:
        shm.close()


def big_table(mb: int, nworkers: int = 8):
    from multiprocessing import shared_memory
    rows_n = mb * 1000 * 1000 // 80
    shape = (rows_n, 10)
    table = np.random.default_rng(1).random(shape)
    expect = table.sum(axis=0)
    out = []
    for kind in ("board", "mp.Queue", "shared_memory"):
        ready = [CTX.Event() for _ in range(nworkers)]
        go, done = CTX.Event(), CTX.Event()
        q = CTX.Queue()
        board = shm = None
        if kind == "board":
            board = shmring.Board.create(_name("t"), (np.float64, shape), 1)
            board[0] = table
            handle = board.name
        elif kind == "shared_memory":
            shm = shared_memory.SharedMemory(create=True, size=table.nbytes)
            np.ndarray(shape, np.float64, buffer=shm.buf)[:] = table
            handle = (shm.name, shape)
        else:
            handle = CTX.Queue()
        ps = [CTX.Process(target=_table_worker, args=("board" if kind == "board" else
                                                      "shm" if kind == "shared_memory" else "queue",
                                                      handle, ready[i], go, done, q), daemon=True)
              for i in range(nworkers)]
        for p in ps:
            p.start()
        for e in ready:
            e.wait(120)
        t0 = time.perf_counter()
        go.set()
        if kind == "mp.Queue":
            for _ in range(nworkers):
                handle.put(table)
        results = [q.get(timeout=900) for _ in range(nworkers)]
        wall = time.perf_counter() - t0
        pss = _pss_kb(os.getpid()) + sum(_pss_kb(p.pid) for p in ps)
        done.set()
        for p in ps:
            p.join(60)
        ok = all(np.allclose(r[1], expect) for r in results)
        out.append({"kind": kind, "wall_s": wall, "pss_mb": pss / 1024, "ok": ok})
        if board is not None:
            board.close()
            board.unlink()
        if shm is not None:
            shm.close()
            shm.unlink()
        print(".", end="", flush=True)
    print()
    print(f"\nBig table: {nworkers} workers, column sums over {rows_n:,} x 10 float64 ({table.nbytes / 1e6:.0f} MB); "
          f"parent's own copy of the table included in PSS")
    base = out[0]
    print(f"{'shared through':<16} {'wall':>8} {'total PSS':>10} {'x board wall':>13} {'x board PSS':>12}  sums")
    for r in out:
        print(f"{r['kind']:<16} {r['wall_s']:>7.2f}s {r['pss_mb']:>8.0f}MB {fmt_gain(r['wall_s'] / base['wall_s']):>13} "
              f"{fmt_gain(r['pss_mb'] / base['pss_mb']):>12}  {'ok' if r['ok'] else 'WRONG'}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs, 100 MB table")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per measurement")
    ap.add_argument("--table-mb", type=int, default=None)
    ap.add_argument("--no-table", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--peers", default=None, help="comma-separated subset of: " +
                    ", ".join(p.name for p in PEERS) + " (the board is always run)")
    args = ap.parse_args(argv)
    if args.peers:
        want = [w.strip() for w in args.peers.split(",")]
        PEERS[:] = [p for p in PEERS if p is BoardPeer or any(w in p.name for w in want)]
    seconds = args.seconds or (0.3 if args.quick else 1.0)
    mb = args.table_mb or (100 if args.quick else 400)
    print(f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, numpy {np.__version__}; {seconds} s per figure, unpinned")
    rows = rates(seconds, [SMALL, FRAME], [1, 1000])
    print_rates(rows)
    table = None if args.no_table else big_table(mb)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rates": rows, "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
