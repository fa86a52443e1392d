"""Child-process bodies for the board tests (importable by spawn children)."""

from __future__ import annotations

import os
import time

import numpy as np

import shmring


def words_dtype(nbytes: int) -> np.dtype:
    """A value of nbytes made of uint64 words; every word of a write holds the same tag."""
    return np.dtype(("<u8", (nbytes // 8,)))


def fill(arr: np.ndarray, tag: int) -> np.ndarray:
    arr.fill(tag)
    return arr


def torn(arr: np.ndarray) -> bool:
    """True if the words of a value do not all hold the same tag (a mix of writes)."""
    flat = arr.reshape(-1)
    return bool(flat.min() != flat.max())


def hunt_reader(board, key, n_reads, out_q, use_view=False, writer_tag=True):
    """Reads key n_reads times; reports reads, torn values, versions going
    backwards, tags that disagree with the version, and views that changed."""
    torn_n = backwards = mismatch = changed = views_ok = 0
    last = 0
    out = np.empty(board.dtype.subdtype[1], dtype=board.dtype.subdtype[0])
    for i in range(n_reads):
        if use_view and i % 8 == 7:
            v = board.view(key)
            try:
                with v as arr:
                    bad = torn(arr)
                    tag = int(arr[0])
                views_ok += 1
                if bad:
                    torn_n += 1  # a view that passed its check must be whole
                if writer_tag and tag != v.version:
                    mismatch += 1
            except shmring.BoardChanged:
                changed += 1
            continue
        val, ver = board.read(key, with_version=True, out=out)
        if torn(val):
            torn_n += 1
        if ver < last:
            backwards += 1
        last = ver
        if writer_tag and int(val[0]) != ver:
            mismatch += 1
    out_q.put({"pid": os.getpid(), "reads": n_reads, "torn": torn_n, "backwards": backwards,
               "mismatch": mismatch, "changed": changed, "views_ok": views_ok, "last": last,
               "retries": board.retries})


def tagged_writer(board, key, stop_version, nbytes):
    """Writes tag = the version the write will get (single writer), until stop_version."""
    arr = np.empty(nbytes // 8, dtype="<u8")
    v = board.version(key)
    while v < stop_version:
        fill(arr, v + 1)
        got = board.write(key, arr)
        assert got == v + 1, (got, v + 1)
        v = got


def endless_writer(board, key, nbytes, ready):
    """Writes forever (until killed); each write's words all hold a fresh tag."""
    arr = np.empty(nbytes // 8, dtype="<u8")
    tag = (os.getpid() << 32)
    ready.set()
    while True:
        tag += 1
        arr.fill(tag)
        board.write(key, arr)


def checking_reader(board, key, stop, out_q):
    """Reads until stop is set: torn values and backwards versions."""
    torn_n = backwards = reads = 0
    last = 0
    out = np.empty(board.dtype.subdtype[1], dtype=board.dtype.subdtype[0])
    while not stop.is_set():
        try:
            val, ver = board.read(key, with_version=True, out=out)
        except KeyError:
            continue
        reads += 1
        torn_n += torn(val)
        backwards += ver < last
        last = ver
    out_q.put({"reads": reads, "torn": torn_n, "backwards": backwards, "last": last})


def counted_writer(board, key, wid, n, nbytes, out_q):
    """n writes of (wid, i) in every word pair; reports the versions it got."""
    arr = np.empty(nbytes // 8, dtype="<u8")
    versions = []
    for i in range(n):
        arr.fill((wid << 32) | i)
        versions.append(board.write(key, arr, timeout=30))
    out_q.put((wid, key, versions))


def delayed_write(board, key, value, delay):
    time.sleep(delay)
    board[key] = value


def write_sequence(board, items, gap):
    for key, value in items:
        time.sleep(gap)
        board[key] = value


def write_once_and_exit(board, key, nbytes, tag):
    arr = np.full(nbytes, tag, dtype=np.uint8)
    board[key] = arr


def pss_viewer(board, key, ready, go, done, out_q):
    """Views the value in place, touches every page, then holds the view until done."""
    ready.set()
    go.wait(60)
    with board.view(key) as arr:
        total = int(arr[::4096].sum(dtype=np.uint64))
        out_q.put((os.getpid(), total))
        done.wait(60)
