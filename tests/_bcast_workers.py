"""Helpers and top-level worker functions for test_broadcast.py / test_zerocopy.py.

Everything a child process runs lives here (importable as ``_bcast_workers``
under both fork and spawn: the test modules put this directory on sys.path,
and spawn children copy the parent's sys.path).

Workers never raise: they report a dict through a multiprocessing queue, with
``error`` set to a traceback if anything unexpected happened, so the parent
can assert on what actually arrived.
"""

from __future__ import annotations

import gc
import itertools
import os
import queue
import time
import traceback

import numpy as np

import shmring
from _records import REC, as_records, fill, make_records, n_bad  # noqa: F401 - REC re-exported for the tests


# ---- large frames -------------------------------------------------------------

FRAME = np.dtype((np.uint8, (1080, 1920, 3)))
FRAME_BYTES = 1080 * 1920 * 3
_frame_base = None


def frame_base() -> np.ndarray:
    global _frame_base
    if _frame_base is None:
        _frame_base = np.random.default_rng(20240601).integers(0, 256, FRAME_BYTES, dtype=np.uint8)
    return _frame_base


def fill_frame(out: np.ndarray, seq: int) -> None:
    """Per-frame seeded content: base pattern + seq (mod 256), seq stamped at both ends."""
    assert out.flags.c_contiguous and out.flags.writeable
    flat = out.reshape(-1)  # a view: the frame is written in place
    np.add(frame_base(), np.uint8(seq & 0xFF), out=flat)
    flat[:8] = np.frombuffer(np.uint64(seq).tobytes(), np.uint8)
    flat[-8:] = np.frombuffer(np.uint64(seq).tobytes(), np.uint8)


def make_frames(start: int, n: int) -> np.ndarray:
    a = np.empty((n,) + FRAME.shape, np.uint8)
    for j in range(n):
        fill_frame(a[j], start + j)
    return a


def frame_seq(frame: np.ndarray) -> int:
    """The frame's sequence number, or -1 if the frame is not intact."""
    flat = np.ascontiguousarray(frame).reshape(-1)
    if flat.size != FRAME_BYTES:
        return -1
    head = int(flat[:8].copy().view("<u8")[0])
    tail = int(flat[-8:].copy().view("<u8")[0])
    if head != tail:
        return -1
    want = frame_base()[8:-8] + np.uint8(head & 0xFF)
    if not np.array_equal(flat[8:-8], want):
        return -1
    return head


# ---- small process / naming helpers -------------------------------------------

_counter = itertools.count()


def new_name(prefix: str) -> str:
    name = f"{prefix}{os.getpid()}-{next(_counter)}"
    assert len(name) <= 25, name
    return name


def unlink_quietly(name: str) -> None:
    try:
        shmring.unlink(name)
    except FileNotFoundError:
        pass


def get(q, what: str, timeout: float = 60.0):
    """q.get with a readable failure when a child never answers."""
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no {what} from the child process within {timeout} s") from None


def wait_for(pred, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


# ---- producer side --------------------------------------------------------------


def produce(ring, n: int, chunk: int, timeout: float = 60.0, close: bool = True) -> int:
    """Push records 0..n-1 with push_many in chunks; returns records pushed."""
    p = ring.producer()
    buf = np.empty(chunk, REC)
    s = 0
    while s < n:
        k = min(chunk, n - s)
        fill(buf[:k], s)
        p.push_many(buf[:k], timeout=timeout)
        s += k
    if close:
        p.close()
    return s


def producer_server(ring, cmd_q, reply_q) -> None:
    """Holds the producer role and pushes on command, numbering records from 0.

    Commands: ("push", n[, timeout]) -> ("ok", next_seq) or ("full", pushed);
    ("close",) -> ("closed", next_seq) and exit.
    """
    try:
        p = ring.producer()
        reply_q.put(("ready", 0))
        nxt = 0
        while True:
            cmd = cmd_q.get(timeout=120)
            if cmd[0] == "push":
                n = cmd[1]
                timeout = cmd[2] if len(cmd) > 2 else 20.0
                try:
                    p.push_many(make_records(nxt, n), timeout=timeout)
                    nxt += n
                    reply_q.put(("ok", nxt))
                except shmring.Full as exc:
                    nxt += exc.pushed
                    reply_q.put(("full", exc.pushed))
            elif cmd[0] == "close":
                p.close()
                reply_q.put(("closed", nxt))
                return
    except BaseException:
        reply_q.put(("error", traceback.format_exc()))


def reserve_producer(ring, n: int, reserve_n: int, go_evt, result_q, timeout: float = 60.0) -> None:
    """Publishes records 0..n-1 through reserve() blocks of up to reserve_n records."""
    res = dict(role="producer", total=0, calls=0, short_at_wrap=0, bad_len=0, not_writable=0, error=None)
    try:
        p = ring.producer()
        result_q.put(("producer-ready", None))
        if not go_evt.wait(60):
            raise RuntimeError("never told to start")
        cap = ring.capacity
        s = 0
        while s < n:
            want = min(reserve_n, n - s)
            with p.reserve(want, timeout=timeout) as arr:
                k = len(arr)
                if not 1 <= k <= want or arr.shape != (k,) or arr.dtype != REC:
                    res["bad_len"] += 1
                if not arr.flags.writeable:
                    res["not_writable"] += 1
                if k < want and (s + k) % cap == 0:
                    res["short_at_wrap"] += 1
                fill(arr, s)
            s += k
            res["calls"] += 1
        res["total"] = s
        p.close()
    except BaseException:
        res["error"] = traceback.format_exc()
    result_q.put(("producer", res))


# ---- consumer side ----------------------------------------------------------------


def stream_consumer(ring, idx, start="latest", on_lag="skip", batch=1024, sleep_s=0.0, ready_q=None,
                    result_q=None, expect_first=0, keep=False, stop_after=None, linger_evt=None,
                    join_evt=None, timeout=60.0, iterate=False) -> None:
    """Reads a stream of REC until Closed (or stop_after records), verifying as it goes.

    Reports: count, first, last, bad (checksum failures), nonincreasing, gaps/missing
    (holes in the sequence, counted from expect_first if given), and for on_lag="raise"
    lag_total / lag_events / lag_mismatch (the first record after Lagged(count) must be
    last + 1 + count) / unannounced (a hole not announced by Lagged).
    """
    res = dict(idx=idx, pid=os.getpid(), count=0, first=None, last=None, bad=0, nonincreasing=0,
               inbatch_holes=0, gaps=0, missing=0, lag_total=0, lag_events=0, lag_mismatch=0,
               unannounced=0, closed=False, popped=None, dropped=None, seqs=None, error=None,
               stats_dropped=None)
    kept = []
    try:
        if join_evt is not None and not join_evt.wait(60):
            raise RuntimeError("never told to join")
        c = ring.consumer(start=start, on_lag=on_lag)
        if ready_q is not None:
            ready_q.put(idx)
        last = None if expect_first is None else expect_first - 1
        pending_lag = None
        it = iter(c) if iterate else None
        while stop_after is None or res["count"] < stop_after:
            try:
                if iterate:
                    arr = as_records(next(it))
                elif batch == 1:
                    arr = as_records(c.pop(timeout=timeout))
                else:
                    want = batch if stop_after is None else min(batch, stop_after - res["count"])
                    arr = c.pop_many(want, timeout=timeout)
            except StopIteration:
                res["closed"] = True
                break
            except shmring.Closed:
                res["closed"] = True
                break
            except shmring.Lagged as exc:
                res["lag_events"] += 1
                res["lag_total"] += exc.count
                pending_lag = (pending_lag or 0) + exc.count
                continue
            n = len(arr)
            if n == 0:
                res["error"] = "empty batch"
                break
            seq = arr["seq"].astype(np.int64)
            res["bad"] += n_bad(arr)
            if n > 1:
                d = np.diff(seq)
                res["nonincreasing"] += int(np.count_nonzero(d <= 0))
                res["inbatch_holes"] += int(np.count_nonzero(d > 1))
            if res["first"] is None:
                res["first"] = int(seq[0])
            if last is not None:
                gap = int(seq[0]) - last - 1
                if gap < 0:
                    res["nonincreasing"] += 1
                elif gap > 0:
                    res["gaps"] += 1
                    res["missing"] += gap
                if on_lag == "raise":
                    if pending_lag is not None:
                        if gap != pending_lag:
                            res["lag_mismatch"] += 1
                    elif gap != 0:
                        res["unannounced"] += 1
            pending_lag = None
            last = int(seq[-1])
            res["count"] += n
            if keep:
                kept.append(seq.copy())
            if sleep_s:
                time.sleep(sleep_s)
        res["last"] = last if res["count"] else None
        res["popped"] = c.popped
        res["dropped"] = c.dropped
        for ci in ring.stats()["consumers"]:
            if ci["pid"] == os.getpid() and ci["index"] == c.index:
                res["stats_dropped"] = ci["dropped"]
        c.close()
        if keep:
            res["seqs"] = np.concatenate(kept) if kept else np.zeros(0, np.int64)
        if linger_evt is not None:
            result_q.put(("result", res))
            res = None
            linger_evt.wait(60)
    except BaseException:
        if res is None:
            return
        res["error"] = traceback.format_exc()
    if res is not None:
        result_q.put(("result", res))


def holding_consumer(ring, idx, ready_q, go_evt, result_q, timeout=30.0) -> None:
    """Registers, then does not read until go_evt; then reads everything until Closed."""
    res = dict(idx=idx, seqs=None, bad=0, error=None)
    try:
        c = ring.consumer(start="oldest")
        ready_q.put(idx)
        if not go_evt.wait(60):
            raise RuntimeError("never told to read")
        got = []
        while True:
            try:
                a = c.pop_many(64, timeout=timeout)
            except shmring.Closed:
                break
            res["bad"] += n_bad(a)
            got.append(a["seq"].astype(np.int64))
        res["seqs"] = np.concatenate(got) if got else np.zeros(0, np.int64)
        c.close()
    except BaseException:
        res["error"] = traceback.format_exc()
    result_q.put(("result", res))


def join_and_leave(ring, ready_q, done_evt) -> None:
    """Joins as a consumer, leaves at once without reading, stays alive until done_evt."""
    try:
        c = ring.consumer()
        registered = ring.stats()["n_consumers"]
        c.close()
        ready_q.put(("left", registered, ring.stats()["n_consumers"]))
    except BaseException:
        ready_q.put(("error", traceback.format_exc()))
        return
    done_evt.wait(60)


def view_consumer(ring, idx, start, max_view, ready_q, result_q, timeout=60.0) -> None:
    """Reads the stream through view() blocks, copying each view inside the block.

    Records of a view that the producer overwrote while it was held (Lagged on exit,
    count leading records) are discarded; everything kept must be intact.
    """
    res = dict(idx=idx, seqs=None, bad=0, views=0, max_len=0, short_at_wrap=0, writable=0,
               write_refused=0, lag_exits=0, lag_count=0, popped=None, dropped=None, error=None)
    try:
        c = ring.consumer(start=start)
        ready_q.put(idx)
        cap = ring.capacity
        chunks = []
        while True:
            got = None
            try:
                with c.view(max_view, timeout=timeout) as arr:
                    res["views"] += 1
                    k = len(arr)
                    res["max_len"] = max(res["max_len"], k)
                    if arr.flags.writeable:
                        res["writable"] += 1
                    if res["views"] == 1:
                        try:
                            arr["seq"][0] = 0
                        except ValueError:
                            res["write_refused"] += 1
                    got = arr.copy()
                    if k < max_view and (int(got["seq"][-1]) + 1) % cap == 0:
                        res["short_at_wrap"] += 1
            except shmring.Closed:
                break
            except shmring.Lagged as exc:
                res["lag_exits"] += 1
                res["lag_count"] += exc.count
                got = got[exc.count:] if got is not None else None
            if got is not None and len(got):
                res["bad"] += n_bad(got)
                chunks.append(got["seq"].astype(np.int64))
        res["seqs"] = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
        res["popped"] = c.popped
        res["dropped"] = c.dropped
        c.close()
    except BaseException:
        res["error"] = traceback.format_exc()
    result_q.put(("result", res))


def frame_consumer(ring, method, batch, ready_q, result_q, timeout=60.0) -> None:
    """Reads frames by pop / pop_many / view until Closed; checks each frame's content."""
    res = dict(method=method, seqs=[], bad=0, bad_shape=0, lens=[], error=None)
    try:
        c = ring.consumer(start="oldest")
        ready_q.put(0)
        while True:
            try:
                if method == "pop":
                    f = c.pop(timeout=timeout)
                    if f.shape != FRAME.shape or f.dtype != np.uint8:
                        res["bad_shape"] += 1
                    frames = [f]
                    res["lens"].append(1)
                elif method == "pop_many":
                    a = c.pop_many(batch, timeout=timeout)
                    if a.shape[1:] != FRAME.shape or a.dtype != np.uint8:
                        res["bad_shape"] += 1
                    frames = list(a)
                    res["lens"].append(len(a))
                else:
                    frames = []
                    with c.view(batch, timeout=timeout) as a:
                        if a.shape[1:] != FRAME.shape or a.dtype != np.uint8 or a.flags.writeable:
                            res["bad_shape"] += 1
                        res["lens"].append(len(a))
                        for j in range(len(a)):  # checked in place, inside the block
                            s = frame_seq(a[j])
                            if s < 0:
                                res["bad"] += 1
                            res["seqs"].append(s)
            except shmring.Closed:
                break
            for f in frames:
                s = frame_seq(f)
                if s < 0:
                    res["bad"] += 1
                res["seqs"].append(s)
        c.close()
    except BaseException:
        res["error"] = traceback.format_exc()
    result_q.put(("result", res))


def view_holder(ring, cmd_q, reply_q) -> None:
    """A queue-mode consumer that opens a view on command and holds it until told."""
    try:
        c = ring.consumer()
        reply_q.put(("ready", None))
        v = arr = None
        while True:
            cmd = cmd_q.get(timeout=60)
            if cmd[0] == "view":
                v = c.view(cmd[1], timeout=10)
                arr = v.__enter__()
                reply_q.put(("viewing", arr["seq"].astype(np.int64).tolist(), n_bad(arr)))
            elif cmd[0] == "check":
                reply_q.put(("checked", arr["seq"].astype(np.int64).tolist(), n_bad(arr)))
            elif cmd[0] == "release":
                v.__exit__(None, None, None)
                v = arr = None
                reply_q.put(("released", c.popped))
            elif cmd[0] == "quit":
                c.close()
                reply_q.put(("bye", None))
                return
    except BaseException:
        reply_q.put(("error", traceback.format_exc()))


def kept_arrays_child(name, mode, overflow, result_q) -> None:
    """Keeps arrays from view() and reserve() past their blocks, past the handles'
    close, ring.close(), gc and unlink; reads them at every step (a reservation's
    array is read-only once its block is left)."""
    out = dict(steps=[], view_seqs=None, error=None)
    try:
        ring = shmring.Ring.create(name, REC, 16, mode=mode, overflow=overflow)
        cons = ring.consumer(start="oldest")
        prod = ring.producer()
        prod.push_many(make_records(0, 8))
        with cons.view(4) as v:
            kept_view = v
            out["view_seqs"] = v["seq"].astype(np.int64).tolist()
            out["view_bad"] = n_bad(v)
        with prod.reserve(4) as w:
            fill(w, 8)
            kept_res = w
        _ = int(kept_view["seq"].sum())
        assert not kept_res.flags.writeable
        out["steps"].append("after-block")
        prod.close()
        cons.close()
        _ = int(kept_view["seq"].sum()) + int(kept_view["check"].sum())
        _ = int(kept_res["seq"].sum())
        out["steps"].append("after-handle-close")
        ring.close()
        _ = int(kept_view["payload"].sum())
        _ = int(kept_res["payload"].sum())
        out["steps"].append("after-ring-close")
        del prod, cons, v, w, ring
        gc.collect()
        _ = int(kept_view["seq"].sum())
        _ = int(kept_res["check"].sum())
        out["steps"].append("after-gc")
        shmring.unlink(name)
        gc.collect()
        _ = bytes(kept_view.tobytes())
        _ = bytes(kept_res.tobytes())
        out["steps"].append("after-unlink")
        sub = kept_view[1:3]
        del kept_view
        gc.collect()
        _ = int(sub["seq"].sum())
        out["steps"].append("slice-outlives-array")
        del sub, kept_res
        gc.collect()
        out["steps"].append("all-freed")
    except BaseException:
        out["error"] = traceback.format_exc()
    result_q.put(("result", out))


def close_inside_reserve_child(name, out) -> None:
    """ring.close() while a reserve() block is open; the array is read afterwards."""
    try:
        ring = shmring.Ring.create(name, REC, 8, mode="queue")
        p = ring.producer()
        with p.reserve(4) as a:
            ring.close()  # closes the producer under the open block
            fill(a, 0)  # writing must not crash
        del p, ring
        gc.collect()
        assert not a.flags.writeable
        _ = int(a["seq"].sum()) + len(bytes(a.tobytes()))
        out.put(("result", "ok"))
    except BaseException:
        out.put(("result", traceback.format_exc()))


def drain(c, batch: int = 1000) -> np.ndarray:
    """Everything a consumer can pop right now (pop_many may return fewer than are
    available, e.g. up to the head it last saw, so loop until Empty)."""
    out = []
    while True:
        try:
            out.append(c.pop_many(batch, timeout=0))
        except shmring.Empty:
            break
    return np.concatenate(out) if out else np.empty(0, REC)


def churn_consumer(ring, idx, start, per_session, result_q, max_sessions=1_000_000, timeout=30.0,
                   nice=0) -> None:
    """Joins, reads per_session records, leaves; again and again until the stream ends.

    Block mode delivers without loss, so every session must be one contiguous run of
    intact records, with dropped == 0."""
    res = dict(idx=idx, sessions=0, records=0, bad=0, holes=0, dropped=0, first_seen=[],
               closed=False, error=None)
    try:
        if nice:
            os.nice(nice)  # preempted often: joins get interrupted at arbitrary points
        while res["sessions"] < max_sessions and not res["closed"]:
            c = ring.consumer(start=start)
            res["sessions"] += 1
            last = None
            got = 0
            while got < per_session:
                try:
                    a = c.pop_many(min(64, per_session - got), timeout=timeout)
                except shmring.Closed:
                    res["closed"] = True
                    break
                seq = a["seq"].astype(np.int64)
                res["bad"] += n_bad(a)
                res["holes"] += int(np.count_nonzero(np.diff(seq) != 1))
                if last is not None and seq[0] != last + 1:
                    res["holes"] += 1
                if last is None:
                    res["first_seen"].append(int(seq[0]))
                last = int(seq[-1])
                got += len(a)
            res["records"] += got
            res["dropped"] += c.dropped
            c.close()
    except BaseException:
        res["error"] = traceback.format_exc()
    result_q.put(("result", res))

