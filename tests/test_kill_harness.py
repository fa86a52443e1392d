"""Kill harness: random SIGKILLs of producers and consumers while every call is
used (push, push_many, reserve; pop, pop_many, view), in every mode, rings of
records and message rings alike, with checksummed records (messages) and exact
accounting; and random SIGKILLs of board writers under checking readers.

The default suite runs a short version (a few seconds per mode). The standing
stress test is opt-in:

    SHMRING_SOAK=1 ./test.sh tests/test_kill_harness.py -s      (SHMRING_KILL_SECONDS per mode, default 60)

What must hold, whatever was killed when:
  * nothing torn: every record any consumer returned passes its checksum;
  * queue: no record delivered twice (across survivors and victims); once the
    last producer closes and the survivors drain, popped + abandoned == pushed
    exactly and nothing is left; what no one logged is at most what was counted
    abandoned plus what victims took but died before logging;
  * broadcast block: every survivor gets every record once, in order;
  * broadcast overwrite: every survivor's records are strictly increasing and
    received + dropped == pushed exactly.
A killed producer is replaced by a new one that takes over the role and goes on
from the published head, so sequence numbers always equal ring positions (message
rings: message counts; their accounting counts messages).
Board: writers of one 64 KiB value killed at random moments, each replaced; the
readers never see a torn value or a version going back, and a write after the
last kill goes through.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time

import numpy as np
import pytest

import shmring
import _board_workers as BW
from _msg_workers import check, message
from _records import REC, fill, make_records, n_bad

SOAK = bool(os.environ.get("SHMRING_SOAK"))
SECONDS = float(os.environ.get("SHMRING_KILL_SECONDS", "60" if SOAK else "3"))
CTX = mp.get_context("fork")
LOG_N = 1 << 22  # per victim: records it may log before its log is full
MODES = [("queue", "block"), ("broadcast", "block"), ("broadcast", "overwrite")]
MSG_NBYTES = 1 << 14
MSG_MAXP = 1500  # payload bytes of the largest message (sizes 0..MSG_MAXP)

pytestmark = pytest.mark.timeout(int(SECONDS) * 3 * 4 + 240)


def _take_producer(ring):
    while True:
        try:
            return ring.producer(liveness_interval=0.01)
        except shmring.ProducerBusyError:  # the one killed is not reaped yet
            time.sleep(0.001)


def msg_producer_main(ring, stop, seed):
    """producer_main for a message ring: messages of 0..MSG_MAXP payload bytes,
    each carrying its sequence number and a CRC of its payload."""
    rng = random.Random(seed)
    p = _take_producer(ring)
    seq = ring.stats()["pushed"]  # messages published
    while not stop.value:
        op = rng.randrange(3)
        try:
            if op == 0:
                p.push(message(seq, rng.randint(0, MSG_MAXP), MSG_MAXP), timeout=0.02)
                seq += 1
            elif op == 1:
                batch = [message(seq + i, rng.randint(0, MSG_MAXP), MSG_MAXP) for i in range(rng.randint(1, 12))]
                try:
                    seq += p.push_many(batch, timeout=0.02)
                except shmring.Full as exc:
                    seq += exc.pushed
            else:
                m = message(seq, rng.randint(1, MSG_MAXP), MSG_MAXP)
                with p.reserve(len(m), timeout=0.02) as buf:
                    buf[:] = np.frombuffer(m, np.uint8)
                seq += 1
        except shmring.Full:
            pass
    p.close()


def _msg_seq(m) -> int:
    """The message's sequence number, or -1 if it is damaged."""
    try:
        return check(m, MSG_MAXP)
    except AssertionError:
        return -1


def producer_main(ring, stop, seed):
    rng = random.Random(seed)
    p = _take_producer(ring)
    seq = ring.stats()["pushed"]  # a successor goes on from the published head
    buf = make_records(0, 64)
    while not stop.value:
        op = rng.randrange(3)
        n = rng.randint(1, 40)
        try:
            if op == 0:
                fill(buf[:1], seq)
                p.push(buf[0], timeout=0.02)
                seq += 1
            elif op == 1:
                fill(buf[:n], seq)
                try:
                    seq += p.push_many(buf[:n], timeout=0.02)
                except shmring.Full as exc:
                    seq += exc.pushed
            else:
                with p.reserve(n, timeout=0.02) as a:
                    fill(a, seq)
                    k = len(a)
                seq += k
        except shmring.Full:
            pass
    p.close()


class _Log:
    """What a consumer returned: a victim logs into a memmap the parent reads after
    the kill (path ending in .log.npy), a survivor keeps a list and saves it at the end."""

    def __init__(self, path):
        self.path = path
        self.mm = np.lib.format.open_memmap(path, mode="r+") if path.endswith(".log.npy") else None
        self.got, self.bad, self.n = [], 0, 0

    def add(self, seqs):
        if self.mm is None:
            self.got.append(np.array(seqs, dtype=np.uint64))
            return
        k = min(len(seqs), LOG_N - self.n)
        self.mm[self.n:self.n + k] = seqs[:k]
        self.mm[LOG_N] = self.n + k
        self.n += len(seqs)

    def add_bad(self, k):
        self.bad += k
        if self.mm is not None:
            self.mm[LOG_N + 1] = self.bad

    def save(self, dropped):
        if self.mm is None:
            np.save(self.path, np.concatenate(self.got) if self.got else np.zeros(0, np.uint64))
            np.save(self.path + ".meta.npy", np.array([self.bad, dropped], dtype=np.uint64))


def _consume(ring, log_path, ready, seed, start, take):
    """Logs every record (message) it returns; queue mode logs inside a view,
    before the release, so a kill after the release loses nothing unseen.
    take(c, rng, timeout, view_log) makes one call: (sequence numbers, damaged, logged)."""
    rng = random.Random(seed)
    c = ring.consumer(start=start, liveness_interval=0.01)
    ready.set()
    log = _Log(log_path)
    view_log = log if ring.mode == "queue" and log.mm is not None else None
    while True:
        try:
            seqs, bad, logged = take(c, rng, rng.choice((0, 0.01, 0.05)), view_log)
            log.add_bad(bad)
            if not logged:
                log.add(seqs)
        except shmring.Empty:
            pass
        except shmring.Closed as exc:
            if exc.reason == "closed by producer":
                break
            time.sleep(0.002)  # the producer died: a successor reopens the stream
    log.save(c.dropped)
    os._exit(0)


def _take_records(c, rng, to, view_log):
    op, m, logged = rng.randrange(3), rng.randint(1, 48), False
    if op == 0:
        a = np.array([c.pop(timeout=to)], dtype=REC)
    elif op == 1:
        a = c.pop_many(m, timeout=to)
    else:
        try:
            with c.view(m, timeout=to) as v:
                a = np.array(v)
                if view_log is not None:
                    view_log.add(a["seq"])
                    logged = True
        except shmring.Lagged as exc:
            # overwrite mode: the producer lapped the view while it was held;
            # its first exc.count records are invalid (and counted as dropped)
            a = a[exc.count:]
    return a["seq"].copy(), n_bad(a), logged


def _take_messages(c, rng, to, view_log):
    op, logged = rng.randrange(3), False
    if op == 0:
        seqs = [_msg_seq(c.pop(timeout=to))]
    elif op == 1:
        seqs = [_msg_seq(m) for m in c.pop_many(rng.randint(1, 16), timeout=to)]
    else:
        seqs = []
        try:
            with c.view(timeout=to) as mv:
                seqs = [_msg_seq(bytes(mv))]
                if view_log is not None and seqs[0] >= 0:
                    view_log.add(np.array(seqs, np.uint64))
                    logged = True
        except shmring.Lagged:
            seqs = []  # overwrite mode: the view was lapped while held, counted in dropped
    good = np.array([s for s in seqs if s >= 0], dtype=np.uint64)
    return good, len(seqs) - len(good), logged


def consumer_main(ring, log_path, ready, seed, start):
    _consume(ring, log_path, ready, seed, start, _take_records)


def msg_consumer_main(ring, log_path, ready, seed, start):
    _consume(ring, log_path, ready, seed, start, _take_messages)


def run_harness(name, mode, overflow, seconds, seed, tmp_path, procs, kind="records"):
    rng = random.Random(seed)
    cap = 256
    if kind == "records":
        ring = shmring.Ring.create(name, REC, cap, mode=mode, overflow=overflow, max_consumers=16)
        producer_main_, consumer_main_ = producer_main, consumer_main
    else:
        ring = shmring.Ring.create(name, nbytes=MSG_NBYTES, mode=mode, overflow=overflow, max_consumers=16)
        producer_main_, consumer_main_ = msg_producer_main, msg_consumer_main
    try:
        # lock-free: a producer killed inside an Event's lock would wedge its successors
        stop = CTX.RawValue("b", 0)
        readies = [CTX.Event() for _ in range(2)]
        surv_paths = [str(tmp_path / f"{name}-s{i}.npy") for i in range(2)]
        survivors = [procs(CTX, consumer_main_, ring, surv_paths[i], readies[i], seed * 10 + i, "oldest")
                     for i in range(2)]
        for r in readies:
            assert r.wait(30)
        logs = []

        def new_victim():
            path = str(tmp_path / f"{name}-v{len(logs)}.log.npy")
            log = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint64, shape=(LOG_N + 2,))
            log[LOG_N] = 0
            log[LOG_N + 1] = 0
            del log
            logs.append(path)
            return procs(CTX, consumer_main_, ring, path, CTX.Event(), rng.randrange(1 << 30), "oldest")

        victims = [new_victim() for _ in range(3)]
        prod = procs(CTX, producer_main_, ring, stop, rng.randrange(1 << 30))
        kills = {"consumer": 0, "producer": 0}
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            time.sleep(rng.uniform(0.002, 0.03))
            if rng.random() < 0.15:
                os.kill(prod.pid, signal.SIGKILL)
                prod.join(10)
                kills["producer"] += 1
                prod = procs(CTX, producer_main_, ring, stop, rng.randrange(1 << 30))
            else:
                i = rng.randrange(len(victims))
                assert victims[i].exitcode is None, f"a victim died by itself (exit {victims[i].exitcode})"
                os.kill(victims[i].pid, signal.SIGKILL)
                victims[i].join(10)
                kills["consumer"] += 1
                victims[i] = new_victim()
        stop.value = 1
        prod.join(60)
        assert prod.exitcode == 0, f"the last producer did not finish (exit {prod.exitcode})"
        for p in survivors + victims:
            p.join(60)
            assert p.exitcode == 0, f"a consumer wedged or failed (exit {p.exitcode})"
        st = ring.stats()
        pushed = st["pushed"]
        surv, surv_bad, surv_dropped = [], 0, []
        for path in surv_paths:
            surv.append(np.load(path))
            bad, dropped = np.load(path + ".meta.npy")
            surv_bad += int(bad)
            surv_dropped.append(int(dropped))
        vict, vict_bad = [], 0
        for path in logs:
            log = np.load(path, mmap_mode="r")
            k = int(log[LOG_N])
            assert k < LOG_N, "a victim's log filled up"  # (a victim lives well under a second)
            vict.append(np.array(log[:k]))
            vict_bad += int(log[LOG_N + 1])
        torn = surv_bad + vict_bad
        report = {"mode": f"{kind} {mode}/{overflow}", "pushed": pushed, "kills": kills, "torn": torn,
                  "popped": st["popped"], "abandoned": st["abandoned"], "evicted": st["evicted"]}
        assert torn == 0, report
        if mode == "queue":
            everyone = np.concatenate(surv + vict)
            dup = len(everyone) - len(np.unique(everyone))
            report["duplicates"] = dup
            report["logged"] = len(everyone)
            print("kill harness:", report)
            assert dup == 0, report
            assert everyone.max(initial=0) < pushed
            assert st["available"] == 0, report
            assert st["popped"] + st["abandoned"] == pushed, report
            # what nobody logged was abandoned, or taken by a victim killed between
            # taking it and logging it (at most one batch of 48 per kill)
            missing = pushed - len(everyone)
            assert missing <= st["abandoned"] + 48 * kills["consumer"], report
        else:
            dups = 0
            for s in surv + vict:
                dups += int(np.count_nonzero(np.diff(s.astype(np.int64)) <= 0))
            report["duplicates"] = dups
            report["dropped"] = surv_dropped
            print("kill harness:", report)
            assert dups == 0, report
            for s, dropped in zip(surv, surv_dropped):
                if overflow == "block":
                    assert np.array_equal(s, np.arange(pushed, dtype=np.uint64)), report
                    assert dropped == 0
                else:
                    assert len(s) + dropped == pushed, report
        return report
    finally:
        ring.close()


@pytest.mark.parametrize("mode,overflow", MODES)
def test_kill_harness(mode, overflow, ring_name, tmp_path, procs):
    seed = int(os.environ.get("SHMRING_SEED", "4242"))
    run_harness(ring_name, mode, overflow, SECONDS, seed, tmp_path, procs)


@pytest.mark.parametrize("mode,overflow", MODES)
def test_kill_harness_messages(mode, overflow, ring_name, tmp_path, procs):
    seed = int(os.environ.get("SHMRING_SEED", "4242"))
    run_harness(ring_name, mode, overflow, SECONDS, seed, tmp_path, procs, kind="messages")


def test_kill_harness_board(ring_name, procs):
    """Board writers SIGKILLed at random moments (mostly mid-copy of a 64 KiB
    value) for SECONDS: readers never see a torn value or a version going back,
    killed writers' claims are taken over, and a last write goes through."""
    seed = int(os.environ.get("SHMRING_SEED", "4242"))
    rng = random.Random(seed)
    nbytes = 1 << 16
    b = shmring.Board.create(ring_name, BW.words_dtype(nbytes), 1, liveness_interval=0.01)
    try:
        b[0] = np.full(nbytes // 8, 1, "<u8")
        stop, q = CTX.Event(), CTX.Queue()
        readers = [procs(CTX, BW.checking_reader, b, 0, stop, q) for _ in range(2)]
        kills = 0
        t_end = time.monotonic() + SECONDS
        while time.monotonic() < t_end:
            ready = CTX.Event()
            w = procs(CTX, BW.endless_writer, b, 0, nbytes, ready)
            assert ready.wait(30)
            time.sleep(rng.uniform(0, 0.02))
            os.kill(w.pid, signal.SIGKILL)
            w.join(30)
            assert w.exitcode == -signal.SIGKILL
            kills += 1
        before = b.version(0)
        assert b.write(0, np.full(nbytes // 8, 7, "<u8"), timeout=10) == before + 1
        stop.set()
        res = [q.get(timeout=60) for _ in readers]
        for r in readers:
            r.join(30)
        st = b.stats()["keys"][0]
        report = {"kind": "board", "kills": kills, "writes": st["version"], "takeovers": st["takeovers"],
                  "reads": [r["reads"] for r in res], "torn": sum(r["torn"] for r in res),
                  "backwards": sum(r["backwards"] for r in res)}
        print("kill harness:", report)
        assert report["torn"] == 0 and report["backwards"] == 0 and min(report["reads"]) > 0, report
        assert st["owner_pid"] is None
    finally:
        b.close()
