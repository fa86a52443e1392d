"""shmring.Queue / JoinableQueue / SimpleQueue: multiprocessing's queue API with
many producer and consumer processes, real shared memory, real processes."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import shmring
import _mpq_workers as W

ALL_METHODS = ["fork", "spawn", "forkserver"]


def ctx_of(method):
    return multiprocessing.get_context(method)


def join_all(ps, timeout=60):
    for p in ps:
        p.join(timeout)
        assert p.exitcode == 0, f"worker {p.pid} exited with {p.exitcode}"


def check_exactly_once(parts, n_producers, n_each):
    """parts: arrays of (producer, seq) pairs, each in the order one consumer got
    them. Every item exactly once; each producer's items in order per consumer."""
    allp = np.concatenate([p for p in parts if len(p)]) if any(len(p) for p in parts) else np.zeros((0, 2))
    assert len(allp) == n_producers * n_each
    keys = allp[:, 0] * (n_each + 1) + allp[:, 1]
    assert len(np.unique(keys)) == len(keys), "an item arrived twice"
    want = np.array([[p, s] for p in range(n_producers) for s in range(n_each)])
    assert set(map(tuple, allp.tolist())) == set(map(tuple, want.tolist()))
    for part in parts:
        for pid in np.unique(part[:, 0]) if len(part) else []:
            seqs = part[part[:, 0] == pid][:, 1]
            assert np.all(np.diff(seqs) > 0), f"producer {pid}'s items out of order"


# ---- semantics in one process ------------------------------------------------

def test_objects_round_trip():
    q = shmring.Queue()
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    objs = [b"bytes", bytearray(b"ba"), "text", 7, 2.5, None, (1, "a", 2.0), {"k": arr},
            arr, np.zeros(0, np.int8), b""]
    for o in objs:
        q.put(o)
    assert q.qsize() == len(objs)
    got = [q.get() for _ in objs]
    for o, g in zip(objs, got):
        if isinstance(o, np.ndarray):
            assert g.dtype == o.dtype and g.shape == o.shape and np.array_equal(g, o)
        elif isinstance(o, dict):
            assert np.array_equal(g["k"], o["k"])
        elif isinstance(o, bytearray):
            assert g == bytes(o)
        else:
            assert g == o
    assert q.qsize() == 0 and q.empty()


def test_nowait_and_timeouts():
    q = shmring.Queue(maxsize=2)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False, timeout=30)  # block=False ignores timeout
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    took = time.monotonic() - t0
    assert 0.2 <= took < 3.0
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2 and not q.empty()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, block=False, timeout=30)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.2)
    took = time.monotonic() - t0
    assert 0.2 <= took < 3.0
    assert [q.get(), q.get_nowait()] == [1, 2]
    assert not q.full() and q.empty()
    with pytest.raises(ValueError, match="timeout"):
        q.get(timeout=-1)


def test_exceptions_are_the_stdlib_ones():
    assert issubclass(shmring.Full, queue.Full) and issubclass(shmring.Empty, queue.Empty)


def test_use_after_close():
    q = shmring.Queue()
    q.put(1)
    with pytest.raises(ValueError, match="not closed"):
        q.join_thread()
    q.close()
    q.join_thread()
    q.cancel_join_thread()
    for call in (lambda: q.put(2), lambda: q.get(), lambda: q.get_nowait(), lambda: q.put_nowait(1),
                 lambda: q.put_many([1]), lambda: q.get_many(1)):
        with pytest.raises(ValueError, match="closed"):
            call()
    assert "closed" in repr(q)


def test_close_from_another_thread_wakes_blocked_calls():
    q = shmring.Queue(maxsize=1)
    q.put(0)
    errors = []

    def blocked(call):
        try:
            call()
        except Exception as exc:  # what the blocked call ended with
            errors.append(exc)

    g = shmring.Queue()
    ts = [threading.Thread(target=blocked, args=(lambda: g.get(),)),
          threading.Thread(target=blocked, args=(lambda: q.put(1),))]
    for t in ts:
        t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    g.close()
    q.close()
    for t in ts:
        t.join(10)
        assert not t.is_alive()
    assert time.monotonic() - t0 < 5
    assert len(errors) == 2 and all(isinstance(e, ValueError) and "closed" in str(e) for e in errors)


def test_item_too_large_names_nbytes():
    q = shmring.Queue(nbytes=4096)
    assert q.nbytes == 4096
    with pytest.raises(ValueError, match="nbytes=4096"):
        q.put(b"x" * 4096)
    q.put(b"y" * 2000)  # half the lane less the frame header fits
    assert q.get() == b"y" * 2000
    assert shmring.Queue(nbytes=3000).nbytes == 4096  # rounded up to a power of two


def test_bad_arguments():
    with pytest.raises(TypeError):
        shmring.Queue("3")
    with pytest.raises(ValueError, match="max_producers"):
        shmring.Queue(max_producers=0)
    with pytest.raises(ValueError, match="max_consumers"):
        shmring.Queue(max_consumers=0)
    with pytest.raises(ValueError, match="nbytes"):
        shmring.Queue(nbytes=0)
    with pytest.raises(ValueError, match="name"):
        shmring.Queue(name="a/b")
    q = shmring.Queue()
    with pytest.raises(ValueError, match="max_items"):
        q.get_many(0)
    with pytest.raises(TypeError, match="iterable"):
        q.put_many(b"abc")


def test_put_many_get_many_and_fairness():
    q = shmring.Queue()
    assert q.put_many(range(1000)) == 1000
    got = []
    while len(got) < 1000:
        got += q.get_many(300, timeout=5)
    assert got == list(range(1000))
    with pytest.raises(queue.Empty):
        q.get_many(5, block=False)


def test_repr_and_stats():
    q = shmring.Queue(maxsize=5)
    q.put(b"abc")
    r = repr(q)
    assert "items=1" in r and "producers=1" in r and "bytes=" in r and "consumers=0" in r
    s = q.stats()
    assert s["items"] == 1 and s["put"] == 1 and s["got"] == 0 and s["lanes_used"] == 1
    assert q.get() == b"abc"
    assert "consumers=1" in repr(q) and q.stats()["got"] == 1


def test_threads_share_the_lane():
    q = shmring.Queue()
    W.produce_threads(q, [0, 1, 2, 3], 500)
    got = [W.check(q.get(timeout=5)) for _ in range(2000)]
    check_exactly_once([np.array(got)], 4, 500)
    assert q.stats()["lanes_used"] == 1


def test_simple_queue():
    q = shmring.SimpleQueue()
    assert q.empty()
    q.put([1, 2])
    assert not q.empty()
    assert q.get() == [1, 2]
    q.close()
    with pytest.raises(ValueError):
        q.put(1)


def test_joinable_in_one_process():
    q = shmring.JoinableQueue()
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    q.put(1)
    q.put(2)
    assert q.join(timeout=0.1) is False
    q.get()
    q.task_done()
    assert q.join(timeout=0.1) is False
    q.get()
    q.task_done()
    assert q.join(timeout=5) is True
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()


# ---- across processes ----------------------------------------------------------

@pytest.mark.parametrize("method", ALL_METHODS)
def test_process_hand_over(method, procs):
    ctx = ctx_of(method)
    q = shmring.Queue()
    a, b = ctx.Pipe()
    p1 = procs(ctx, W.produce, q, 0, 300)
    p2 = procs(ctx, W.produce, q, 1, 300)
    c = procs(ctx, W.consume_n, q, 600, b)
    join_all([p1, p2])
    assert a.poll(60)
    got = a.recv()
    join_all([c])
    check_exactly_once([got], 2, 300)
    assert q.qsize() == 0 and q.stats()["put"] == 600


def test_forked_child_uses_inherited_queue_without_parent_lanes(procs):
    ctx = ctx_of("fork")
    q = shmring.Queue()
    q.put(W.item(0, 0))  # the parent holds lane 0 and a consumer slot nowhere yet
    assert q.get() == W.item(0, 0)
    c = procs(ctx, W.produce, q, 1, 50)
    join_all([c])
    got = [W.check(q.get(timeout=5)) for _ in range(50)]
    assert got == [(1, s) for s in range(50)]
    assert q.stats()["lanes_used"] == 2  # the child took its own lane


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_parent_drops_queue_while_children_use_it(method, procs):
    ctx = ctx_of(method)
    q = shmring.Queue()
    a, b = ctx.Pipe()
    c = procs(ctx, W.get_sum, q, 200, b)
    p = procs(ctx, W.put_range, q, 0, 200)
    del q
    gc.collect()
    assert a.poll(60)
    assert a.recv() == sum(range(200))
    join_all([p, c])


@pytest.mark.parametrize("method", ALL_METHODS)
def test_pool_initargs(method):
    ctx = ctx_of(method)
    q = shmring.Queue()
    with ctx.Pool(2, initializer=W.pool_init, initargs=(q,)) as pool:
        assert sorted(pool.map(W.pool_task, range(40), chunksize=4)) == list(range(40))
    got = W.pool_results(q, 40)
    assert got == {i: i * i for i in range(40)}


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_process_pool_executor_initargs(method):
    q = shmring.Queue()
    with ProcessPoolExecutor(2, mp_context=ctx_of(method), initializer=W.pool_init, initargs=(q,)) as ex:
        assert sorted(ex.map(W.pool_task, range(30))) == list(range(30))
    assert W.pool_results(q, 30) == {i: i * i for i in range(30)}


def test_pool_task_argument():
    q = shmring.Queue()
    with ctx_of("spawn").Pool(2) as pool:
        res = [pool.apply_async(W.pool_task_with_queue, (q, i)) for i in range(20)]
        assert sorted(r.get(60) for r in res) == list(range(20))
    assert W.pool_results(q, 20) == {i: -i for i in range(20)}


def test_queue_through_a_queue(procs):
    ctx = ctx_of("spawn")
    outer, inner = shmring.Queue(), shmring.Queue()
    a, b = ctx.Pipe()
    c = procs(ctx, W.via_queue, outer, b)
    outer.put(inner)
    kind, pid = inner.get(timeout=60)
    assert kind == "inner" and pid == c.pid
    inner.put("back")
    a.send("go")
    assert a.poll(60) and a.recv() == "back"
    join_all([c])


def test_maxsize_blocks_producers_across_processes(procs):
    ctx = ctx_of("fork")
    q = shmring.Queue(maxsize=3)
    a, b = ctx.Pipe()
    p = procs(ctx, W.put_then_report, q, 10, b)
    time.sleep(0.3)
    assert q.qsize() == 3 and q.full()
    got = [q.get(timeout=10) for _ in range(10)]
    assert got == list(range(10))
    assert a.poll(30) and a.recv() > 0.2  # it waited for room
    join_all([p])


def test_joinable_across_processes(procs):
    ctx = ctx_of("spawn")
    q = shmring.JoinableQueue()
    ws = [procs(ctx, W.joinable_worker, q, 25) for _ in range(2)]
    for i in range(50):
        q.put(i)
    assert q.join(timeout=60) is True
    assert q.stats()["done"] == 50
    join_all(ws)
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()


def test_max_producers_error(procs):
    ctx = ctx_of("fork")
    q = shmring.Queue(max_producers=2)
    stop = ctx.Event()
    readies = [ctx.Event() for _ in range(2)]
    hs = [procs(ctx, W.hold_lane, q, r, stop) for r in readies]
    for r in readies:
        assert r.wait(30)
    with pytest.raises(shmring.RingError, match="max_producers=2"):
        q.put(1)
    stop.set()
    join_all(hs)
    q.put(1)  # a lane given back is taken again
    got = sorted(map(repr, [q.get(timeout=5) for _ in range(3)]))
    assert "1" in got


def test_named_queue_attach(ring_name, procs):
    q = shmring.Queue(name=ring_name)
    assert os.path.exists(f"/dev/shm/shmr-{ring_name}")
    assert q.name == ring_name
    with pytest.raises(FileExistsError):
        shmring.Queue(name=ring_name)
    q2 = shmring.Queue.attach(ring_name)
    q2.put("hello")
    assert q.get(timeout=5) == "hello"
    with pytest.raises(shmring.NotARingError, match="not a queue"):
        shmring.Ring.create(ring_name + "r", dtype=np.int32, capacity=8)
        shmring.Queue.attach(ring_name + "r")
    shmring.unlink(ring_name + "r")


# ---- many producers and consumers ---------------------------------------------

def test_8_producers_4_consumers_exactly_once(procs):
    ctx = ctx_of("fork")
    n_prod, n_cons, each = 8, 4, 12_500
    q = shmring.Queue()
    pipes = [ctx.Pipe() for _ in range(n_cons)]
    cs = [procs(ctx, W.consume, q, b) for _, b in pipes]
    # producers 0..5 are processes; 6 and 7 are threads of one more process
    ps = [procs(ctx, W.produce, q, pid, each) for pid in range(6)]
    ps.append(procs(ctx, W.produce_threads, q, [6, 7], each))
    join_all(ps, 120)
    for _ in cs:
        q.put(None)
    parts = []
    for a, _ in pipes:
        assert a.poll(120)
        parts.append(a.recv())
    join_all(cs)
    check_exactly_once(parts, n_prod, each)
    s = q.stats()
    assert s["put"] == n_prod * each + n_cons and s["got"] == s["put"] and s["items"] == 0
    # a lane whose producer exited is taken by the next one to start: at most one
    # lane per producer process and the parent, however they overlapped in time
    assert 1 <= s["lanes_used"] <= 8 and s["lost"] == 0 and s["abandoned"] == 0


# ---- crashes --------------------------------------------------------------------

def _logged(path: str) -> np.ndarray:
    """The (producer, seq) pairs a consumer has logged so far (whole pairs only)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        data = b""
    return np.frombuffer(data[: len(data) // 16 * 16], dtype=np.int64).reshape(-1, 2)


def test_sigkill_producers_and_consumers(procs, tmp_path):
    ctx = ctx_of("fork")
    q = shmring.Queue()
    n_prod, each = 4, 20_000
    pipes = [ctx.Pipe() for _ in range(3)]
    logs = [str(tmp_path / f"c{i}.log") for i in range(3)]
    cs = [procs(ctx, W.consume, q, b, log) for (_, b), log in zip(pipes, logs)]
    ps = [procs(ctx, W.produce, q, pid, each) for pid in range(n_prod)]
    # mid-stream: once the consumer to be killed has got something and an item of
    # the producer to be killed has arrived (on a loaded machine a fixed pause can
    # end before either process has started)
    deadline = time.monotonic() + 60
    while not (len(_logged(logs[0])) and any((_logged(log)[:, 0] == 0).any() for log in logs)):
        assert time.monotonic() < deadline, "no item of producer 0 got by the consumers in 60 s"
        time.sleep(0.002)
    os.kill(ps[0].pid, signal.SIGKILL)   # a producer mid-stream
    os.kill(cs[0].pid, signal.SIGKILL)   # a consumer mid-stream
    ps[0].join(10)
    cs[0].join(10)
    join_all(ps[1:], 120)
    for _ in cs[1:]:
        q.put(None)
    parts = []
    for a, _ in pipes[1:]:
        assert a.poll(120)
        parts.append(a.recv())
    join_all(cs[1:])
    q._queue_mapping.recover()  # the dead consumer's slot and claim, if nobody swept yet
    killed_log = np.fromfile(logs[0], dtype=np.int64).reshape(-1, 2)
    allp = np.concatenate(parts + [killed_log])
    keys = allp[:, 0] * (each + 1) + allp[:, 1]
    assert len(np.unique(keys)) == len(keys), "an item arrived twice"
    s = q.stats()
    # the counters balance exactly: everything published was got or abandoned,
    # and nothing admitted is left dangling by the dead producer
    assert s["items"] == 0 and s["put"] == s["got"] + s["abandoned"]
    assert s["admitted"] == s["put"] and s["lost"] in (0, 1)
    assert s["abandoned"] in (0, 1)  # a get claims one item at a time
    # the dead producer's items are a prefix of its sequence, each at most once
    published0 = s["put"] - (n_prod - 1) * each - 2  # less the two sentinels
    seqs0 = np.sort(allp[allp[:, 0] == 0][:, 1])
    assert published0 > 0 and len(seqs0) <= published0 and (len(seqs0) == 0 or seqs0[-1] < published0)
    # what no one logged is what the killed consumer held when it died: the
    # abandoned claim, and at most one item got but not yet logged
    missing = (n_prod - 1) * each + published0 - len(allp)
    assert 0 <= missing - s["abandoned"] <= 1


def test_nothing_left_after_sigkill_of_every_process(popen, tmp_path):
    """A process tree using an anonymous queue is SIGKILLed whole: no /dev/shm
    entry appears and no process maps or holds the memfd any more."""
    before = set(os.listdir("/dev/shm"))
    script = textwrap.dedent("""
        import multiprocessing as mp, os, sys, time
        sys.path.insert(0, %r)
        import shmring, _mpq_workers as W
        if __name__ == "__main__":
            ctx = mp.get_context("fork")
            q = shmring.Queue()
            for i in range(2):
                ctx.Process(target=W.busy_forever, args=(q, "put")).start()
                ctx.Process(target=W.busy_forever, args=(q, "get")).start()
            print(os.fstat(q._queue_mapping.fd).st_ino, flush=True)
            time.sleep(60)
    """ % os.path.dirname(os.path.abspath(__file__)))
    p = popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    ino = int(p.stdout.readline())
    time.sleep(0.5)
    holders = _memfd_holders(ino)
    assert len(holders) >= 5, holders  # the parent and its four children map it
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)
    deadline = time.monotonic() + 10
    while _memfd_holders(ino) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _memfd_holders(ino) == set()
    new = {n for n in set(os.listdir("/dev/shm")) - before if str(p.pid) in n}
    assert new == set()


def _memfd_holders(ino):
    """Pids that map the memfd with this inode or hold a descriptor on it."""
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 6 and parts[5].startswith("/memfd:shmring") and parts[4] == str(ino):
                        out.add(int(pid))
                        break
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:shmring") and \
                            os.stat(f"/proc/{pid}/fd/{fd}").st_ino == ino:
                        out.add(int(pid))
                except OSError:
                    pass
        except (OSError, PermissionError):
            continue
    return out


# ---- command line ---------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "shmring", *args], capture_output=True, text=True, timeout=60)


def test_cli_lists_and_describes_a_named_queue(ring_name, procs):
    q = shmring.Queue(name=ring_name, maxsize=100)
    q.put_many(range(5))
    assert q.get() == 0
    ls = _cli("ls")
    assert ls.returncode == 0, ls.stderr
    row = next(line for line in ls.stdout.splitlines() if line.startswith(ring_name + " "))
    assert " queue " in row and "4 items" in row
    info = _cli("info", ring_name)
    assert info.returncode == 0, info.stderr
    fields = dict(line.split(None, 1) for line in info.stdout.splitlines() if not line.startswith(" ")
                  and len(line.split(None, 1)) == 2)
    assert fields["kind"] == "queue" and fields["items"] == "4" and fields["put"] == "5"
    assert fields["got"] == "1" and fields["maxsize"] == "100"
    assert f"pid {os.getpid()} (alive)" in info.stdout
    gc_run = _cli("gc", "--dry-run")
    assert ring_name not in gc_run.stdout  # its producer and consumer are alive


# ---- soak (opt-in) ----------------------------------------------------------------

@pytest.mark.skipif(not os.environ.get("SHMRING_SOAK"), reason="soak: set SHMRING_SOAK=1 (long by design)")
@pytest.mark.timeout(3600)
def test_soak_many_producers_and_consumers_with_kills(procs, tmp_path):
    """Rounds of 8 producers x 4 consumers (SHMRING_SOAK_ITEMS each round, default
    10^6), one producer and one consumer SIGKILLed at a random moment per round, on
    one queue: exactly-once, per-producer order and balanced counts every round."""
    import random
    total = int(os.environ.get("SHMRING_SOAK_ITEMS", 1_000_000))
    seed = int(os.environ.get("SHMRING_SOAK_SEED", time.time()))
    print(f"soak seed {seed}")
    rnd = random.Random(seed)
    ctx = ctx_of("fork")
    q = shmring.Queue(nbytes=1 << 16)
    base = 0
    for rnd_no in range(int(os.environ.get("SHMRING_SOAK_ROUNDS", 5))):
        n_prod, each = 8, total // 8
        pipes = [ctx.Pipe() for _ in range(4)]
        logs = [str(tmp_path / f"r{rnd_no}c{i}.log") for i in range(4)]
        cs = [procs(ctx, W.consume, q, b, log) for (_, b), log in zip(pipes, logs)]
        ps = [procs(ctx, W.produce, q, base + pid, each) for pid in range(n_prod)]
        time.sleep(rnd.uniform(0.1, 2.0))
        os.kill(ps[0].pid, signal.SIGKILL)
        os.kill(cs[0].pid, signal.SIGKILL)
        join_all(ps[1:], 1800)
        ps[0].join(10)
        cs[0].join(10)
        for _ in cs[1:]:
            q.put(None)
        parts = []
        for a, _ in pipes[1:]:
            assert a.poll(1800)
            parts.append(a.recv())
        join_all(cs[1:])
        q._queue_mapping.recover()
        allp = np.concatenate(parts + [np.fromfile(logs[0], dtype=np.int64).reshape(-1, 2)])
        keys = allp[:, 0] * (each + 1) + allp[:, 1]
        assert len(np.unique(keys)) == len(keys), "an item arrived twice"
        for part in parts:
            for pid in np.unique(part[:, 0]):
                assert np.all(np.diff(part[part[:, 0] == pid][:, 1]) > 0)
        s = q.stats()
        assert s["items"] == 0 and s["put"] == s["got"] + s["abandoned"] and s["admitted"] == s["put"]
        print(f"round {rnd_no}: put {s['put']} got {s['got']} abandoned {s['abandoned']} lost {s['lost']}")
        base += n_prod


# ---- corrupt queue headers ---------------------------------------------------------

_MUTATE_CHILD = r"""
import json, os, sys, queue
import shmring
from shmring import errors
base, target, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
data = open(base, "rb").read()
for i, (off, size, value) in enumerate(cases):
    buf = bytearray(data)
    buf[off:off + size] = (value % (1 << (8 * size))).to_bytes(size, "little")
    with open("/dev/shm/shmr-" + target, "wb") as f:
        f.write(buf)
    try:
        q = shmring.Queue.attach(target)
        q.put(("probe", i), timeout=0.05)
        q.get(timeout=0.05)
        q.qsize(); q.stats(); repr(q)
        outcome = "worked"
    except (errors.RingError, OSError, ValueError, queue.Empty, queue.Full) as exc:
        outcome = type(exc).__name__
    finally:
        q = None
    print(i, outcome, flush=True)
"""


def test_queue_header_mutations(ring_name, popen, tmp_path):
    """Every queue header and lane block field the layout exports, set to edge
    values in a named queue that holds items: attaching, putting and getting raise
    only shmring's or the stdlib's exceptions, never crash or hang."""
    q = shmring.Queue(name=ring_name, nbytes=4096, max_producers=3, max_consumers=2)
    q.put_many([1, 2, 3])
    assert q.get() == 1
    q.close()
    del q
    base = tmp_path / "base"
    base.write_bytes(open(f"/dev/shm/shmr-{ring_name}", "rb").read())
    fields = {k: v for k, v in shmring._ring.LAYOUT.items() if k.startswith(("qheader.", "lane."))}
    lane0 = shmring._ring.LAYOUT["lane"][0]
    cases = []
    for name, (off, size) in sorted(fields.items()):
        at = off + (lane0 if name.startswith("lane.") else 0)
        for value in (0, 1, 2, 255, 1 << 31, (1 << 63) + 1, -1):
            for sz in ([8] if size > 8 else [size]):  # an eventcount: its first word
                cases.append((at, sz, value))
    target = ring_name + "f"
    try:
        p = popen([sys.executable, "-c", _MUTATE_CHILD, str(base), target, __import__("json").dumps(cases)],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=120)
    finally:
        try:
            shmring.unlink(target)
        except FileNotFoundError:
            pass
    lines = out.splitlines()
    assert p.returncode == 0, f"crashed after case {lines[-1] if lines else None}: {err[-2000:]}"
    assert len(lines) == len(cases)
    outcomes = {line.split()[1] for line in lines}
    assert "worked" in outcomes and outcomes - {"worked"}, outcomes  # both kinds were met


# ---- wake-ups: one sleeper per item, a lane's producer only ---------------------

def ctx_switches(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    raise AssertionError(f"no context switch count for {pid}")


def wait_asleep(pids, timeout=10.0):
    """Until every process is in an interruptible sleep (state S) twice in a row."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        states = []
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        streak = streak + 1 if all(s == "S" for s in states) else 0
        if streak >= 2:
            return
        time.sleep(0.02)
    raise AssertionError(f"processes not asleep: {states}")


@pytest.fixture
def long_liveness(monkeypatch):
    # sleepers otherwise wake once per liveness interval to look for dead peers
    monkeypatch.setattr(shmring.queues, "_LIVENESS", 30.0)


def test_a_put_wakes_one_sleeping_getter_not_all(procs, long_liveness):
    ctx = ctx_of("fork")
    q = shmring.Queue()
    n = 6
    a, b = ctx.Pipe(duplex=False)
    getters = []
    for _ in range(n):
        ev = ctx.Event()
        getters.append(procs(ctx, W.get_one_report, q, 20.0, ev, b))
        assert ev.wait(10)
    pids = [p.pid for p in getters]
    wait_asleep(pids)
    before = {pid: ctx_switches(pid) for pid in pids}
    q.put("one")
    assert a.poll(10)
    winner, item = a.recv()
    assert item == "one"
    time.sleep(0.2)
    assert not a.poll(0), "a second getter returned"
    woken = [pid for pid in pids if pid != winner and ctx_switches(pid) != before[pid]]
    # with every sleeper woken per put this is n - 1; a getter's spin may yield once
    assert len(woken) <= 1, f"{len(woken)} of {n - 1} other getters woke for one item"
    q.put_many(list(range(n - 1)))  # one publish of n - 1 items: the wake is passed on
    got = sorted(a.recv()[1] for _ in range(n - 1) if a.poll(10))
    assert got == list(range(n - 1))
    join_all(getters)


def test_a_put_many_reaches_every_sleeping_getter(procs, long_liveness):
    ctx = ctx_of("fork")
    q = shmring.Queue()
    a, b = ctx.Pipe(duplex=False)
    getters = []
    for _ in range(4):
        ev = ctx.Event()
        getters.append(procs(ctx, W.get_one_report, q, 10.0, ev, b))
        assert ev.wait(10)
    wait_asleep([p.pid for p in getters])
    q.put_many(["a", "b", "c", "d"])  # one publish, one wake: each getter passes it on
    got = sorted(a.recv()[1] for _ in range(4) if a.poll(15))
    assert got == ["a", "b", "c", "d"]
    join_all(getters)


def test_bursts_reach_sleeping_getters_while_a_wake_is_in_flight(procs, long_liveness, monkeypatch):
    """A put that finds a wake still in flight (its getter woken but not yet
    running) skips its own wake: that getter re-checks after lowering the flag
    and passes the wake on. Bursts into sleeping getters, with no spin, so every
    burst begins with all of them asleep. The liveness interval (30 s) is far
    above the getters' timeout (4 s), and the bursts come every 10 ms: a get
    answered only by its timeout is an item that waited behind a lost wake-up."""
    ctx = ctx_of("fork")
    n_prod, bursts, each, timeout = 3, 25, 40, 4.0
    monkeypatch.setattr(shmring.queues, "_SPIN", 0.0)
    q = shmring.Queue()
    pipes = [ctx.Pipe() for _ in range(4)]
    cs = [procs(ctx, W.consume_timely, q, b, timeout) for _, b in pipes]
    ps = [procs(ctx, W.produce_bursts, q, pid, bursts, each, 0.01) for pid in range(n_prod)]
    join_all(ps, 60)
    for _ in cs:
        q.put(None)
    parts, late = [], 0
    for a, _ in pipes:
        assert a.poll(30)
        part, n_late = a.recv()
        parts.append(part)
        late += n_late
    join_all(cs)
    assert late == 0, f"{late} gets were answered only by their timeout (a lost wake-up)"
    check_exactly_once(parts, n_prod, bursts * each)
    s = q.stats()
    assert s["got"] == s["put"] == n_prod * bursts * each + len(cs) and s["items"] == 0


def test_a_release_wakes_only_the_producer_of_that_lane(procs, long_liveness):
    ctx = ctx_of("fork")
    q = shmring.Queue(nbytes=4096)  # a few items fill a lane
    a, b = ctx.Pipe(duplex=False)
    producers = [procs(ctx, W.put_each_then_report, q, tag, 400, b) for tag in range(3)]
    time.sleep(0.3)
    wait_asleep([p.pid for p in producers])  # every lane full, every producer asleep
    before = {p.pid: ctx_switches(p.pid) for p in producers}
    first = q.get()  # the oldest item: from the lane of the producer that put first
    owner = producers[first[0]].pid
    deadline = time.monotonic() + 10
    while ctx_switches(owner) == before[owner] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ctx_switches(owner) != before[owner], "the lane's producer did not wake"
    time.sleep(0.2)
    others = [p.pid for p in producers if p.pid != owner and ctx_switches(p.pid) != before[p.pid]]
    assert others == [], "a release in one lane woke the producers of the others"
    got = [first] + [q.get(timeout=10) for _ in range(3 * 400 - 1)]
    for tag in range(3):
        assert [i for t, i in got if t == tag] == list(range(400))
    assert sorted(a.recv() for _ in range(3)) == [0, 1, 2]
    join_all(producers)


def test_a_put_that_began_after_another_returned_is_got_after_it(procs):
    """The order multiprocessing.Queue gives "join, then put a sentinel": here a
    token passed from producer to producer makes every token put begin after the
    previous one returned, in another process and lane, while two more producers
    put at will; the one getter must see the tokens in order."""
    ctx = ctx_of("fork")
    q = shmring.Queue()
    n, rounds, each_noise = 3, 700, 4000
    pipes = [ctx.Pipe(duplex=False) for _ in range(n)]  # pipes[i]: producer i-1 -> i
    ps = [procs(ctx, W.token_ring, q, i, n, rounds, pipes[i][0], pipes[(i + 1) % n][1]) for i in range(n)]
    ps += [procs(ctx, W.noise, q, t, each_noise) for t in range(2)]
    tokens, noise_seen = [], {0: [], 1: []}
    for _ in range(n * rounds + 2 * each_noise):
        it = q.get(timeout=30)
        if it[0] == "tok":
            tokens.append(it[1])
        else:
            noise_seen[it[1]].append(it[2])
    join_all(ps)
    assert tokens == list(range(n * rounds)), "a token put was got before one that returned earlier"
    assert all(v == list(range(each_noise)) for v in noise_seen.values())


def test_a_getter_reads_a_lane_afresh_once_another_getter_moved_its_tail(procs):
    """A getter's pick remembers the oldest item it found in each lane for as long
    as that lane's tail stays put. Here the parent's pick sees lane A's items and
    takes lane B's older one; another process then takes every item of lane A, and
    more are put in both lanes: the parent must get exactly the items left, in
    each producer's order, and find the queue empty after them, not keep naming
    the emptied lane from what it remembered."""
    ctx = ctx_of("fork")
    q = shmring.Queue()
    conns = [ctx.Pipe() for _ in range(2)]
    ps = [procs(ctx, W.put_on_command, q, pid, conns[pid][1]) for pid in range(2)]
    cmd = [c[0] for c in conns]

    def put(pid, first, n):
        cmd[pid].send((first, n))
        assert cmd[pid].poll(30) and cmd[pid].recv() == "put"

    put(1, 0, 1)   # lane B: the oldest item
    put(0, 0, 50)  # lane A
    assert W.check(q.get(timeout=10)) == (1, 0)  # the pick read lane A, took B's
    a, b = ctx.Pipe(duplex=False)
    taker = procs(ctx, W.consume_n, q, 50, b)
    assert a.poll(60), "the other getter did not get lane A's 50 items"
    assert a.recv().tolist() == [[0, s] for s in range(50)]
    taker.join(10)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    put(1, 1, 30)
    put(0, 50, 20)
    got = [W.check(q.get(timeout=10)) for _ in range(50)]
    assert [s for p, s in got if p == 1] == list(range(1, 31))
    assert [s for p, s in got if p == 0] == list(range(50, 70))
    # oldest first: lane B's 30 were put before lane A's 20 began
    assert got == [(1, s) for s in range(1, 31)] + [(0, s) for s in range(50, 70)]
    with pytest.raises(queue.Empty):
        q.get_nowait()
    for c in cmd:
        c.send(None)
    join_all(ps)
