"""Rings across users and pid namespaces: a segment made by another user is
never joined by mistake, and a peer whose liveness cannot be judged (another pid
namespace) is never treated as dead. Real uids (a forked child that setuid()s)
and a real pid namespace (unshare --pid); both need root and are skipped,
saying so, without it."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import shmring
from shmring import _ring
from shmring.errors import Closed, Empty, Full
from _procs import run

CTX = mp.get_context("fork")
OTHER_UID = 54321

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user / make a pid namespace")


def _create_as(uid, name, perm, done):
    os.setgid(uid)
    os.setuid(uid)
    shmring.Ring.create(name, np.int64, 8, permissions=perm).close()
    done.set()


@needs_root
def test_exist_ok_refuses_a_segment_of_another_user(ring_name, rings, procs):
    done = CTX.Event()
    child = procs(CTX, _create_as, OTHER_UID, ring_name, 0o666, done)
    child.join(30)
    assert child.exitcode == 0 and done.is_set()
    assert os.stat(f"/dev/shm/shmr-{ring_name}").st_uid == OTHER_UID
    with pytest.raises(PermissionError, match="owned by uid 54321"):
        shmring.Ring.create(ring_name, np.int64, 8, exist_ok=True)
    with pytest.raises(PermissionError, match="owned by uid 54321"):
        shmring.Ring.attach(ring_name, owner_only=True)
    # a plain attach still joins a ring shared on purpose (documented)
    rings.attach(ring_name).close()


def test_exist_ok_refuses_a_segment_more_open_than_asked(ring_name, rings):
    rings.create(ring_name, np.int64, 8, permissions=0o666)
    with pytest.raises(PermissionError, match="0o666"):
        shmring.Ring.create(ring_name, np.int64, 8, exist_ok=True)  # asks for 0o600
    with pytest.raises(PermissionError, match="0o666"):
        shmring.Ring.attach(ring_name, permissions=0o640)
    # as open as asked, or less: fine
    rings.create(ring_name, np.int64, 8, exist_ok=True, permissions=0o666)
    rings.attach(ring_name, owner_only=True, permissions=0o666)


# ---- another pid namespace ------------------------------------------------------

HAVE_UNSHARE = shutil.which("unshare") is not None

NS_CONSUMER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import shmring
    name, flag = sys.argv[1], sys.argv[2]
    ring = shmring.Ring.attach(name)
    c = ring.consumer(liveness_interval=0.02)
    with c.view(8) as a:
        open(flag + ".ready", "w").close()
        while not os.path.exists(flag + ".check"):
            time.sleep(0.005)
        ok = np.array_equal(a, np.arange(8))
    print("pid-in-ns", os.getpid(), "view intact", ok, flush=True)
    sys.exit(0 if ok else 1)
""")

NS_PRODUCER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import shmring
    name, flag = sys.argv[1], sys.argv[2]
    ring = shmring.Ring.attach(name)
    p = ring.producer()
    p.push_many(np.arange(3))
    open(flag + ".ready", "w").close()
    while not os.path.exists(flag + ".check"):
        time.sleep(0.005)
    p.push(3)
    p.close()
""")


def _in_new_pidns(popen, script, *args):
    ok = run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    if ok.returncode != 0:
        pytest.skip(f"cannot make a pid namespace here: {ok.stderr.decode().strip()}")
    return popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", sys.executable, "-c", script,
                  *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_file(path, proc, timeout=30):
    t0 = time.monotonic()
    while not os.path.exists(path):
        assert proc.poll() is None, f"child exited early: {proc.communicate()}"
        assert time.monotonic() - t0 < timeout, "child never got ready"
        time.sleep(0.005)


@needs_root
@pytest.mark.skipif(not HAVE_UNSHARE, reason="unshare(1) is not installed")
def test_consumer_in_another_pid_namespace_is_never_evicted(ring_name, rings, popen, tmp_path):
    """Its pid means another process here: liveness is unknown, so its view is
    left alone and the producer waits for it like for a live consumer."""
    ring = rings.create(ring_name, np.int64, 8)
    p = ring.producer(liveness_interval=0.02)
    p.push_many(np.arange(8))
    flag = str(tmp_path / "c")
    child = _in_new_pidns(popen, NS_CONSUMER, ring_name, flag)
    _wait_file(flag + ".ready", child)
    with pytest.raises(Full):
        p.push_many(np.arange(100, 108), timeout=0.3)  # 15 liveness intervals
    for _ in range(20):  # non-blocking calls run the checks too
        with pytest.raises(Full):
            p.push(200, timeout=0)
        time.sleep(0.02)
    st = ring.stats()
    assert st["evicted"] == 0 and st["abandoned"] == 0
    [c] = st["consumers"]
    assert c["liveness"] == "unknown" and c["alive"] and c["claimed"] == 8
    open(flag + ".check", "w").close()
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, (out, err)
    assert "view intact True" in out
    # released normally: the producer goes on
    p.push_many(np.arange(8, 16), timeout=5)
    assert ring.stats()["evicted"] == 0


@needs_root
@pytest.mark.skipif(not HAVE_UNSHARE, reason="unshare(1) is not installed")
def test_idle_producer_in_another_pid_namespace_is_not_declared_dead(ring_name, rings, popen, tmp_path):
    ring = rings.create(ring_name, np.int64, 8)
    c = ring.consumer(liveness_interval=0.02)
    flag = str(tmp_path / "p")
    child = _in_new_pidns(popen, NS_PRODUCER, ring_name, flag)
    _wait_file(flag + ".ready", child)
    assert list(c.pop_many(8, timeout=5)) == [0, 1, 2]
    with pytest.raises(Empty):
        c.pop(timeout=0.3)
    for _ in range(20):
        with pytest.raises(Empty):
            c.pop(timeout=0)
        time.sleep(0.02)
    st = ring.stats()
    assert not st["closed"] and st["producer_liveness"] == "unknown"
    open(flag + ".check", "w").close()
    assert int(c.pop(timeout=10)) == 3
    with pytest.raises(Closed) as ei:
        c.pop(timeout=10)
    assert ei.value.reason == "closed by producer"
    child.communicate(timeout=30)
    assert child.returncode == 0


def test_liveness_answers():
    assert _ring.liveness(os.getpid(), _ring.start_time_of(os.getpid())) == "alive"
    assert _ring.liveness(os.getpid(), _ring.start_time_of(os.getpid()) + 1) == "dead"  # a reused pid
    assert _ring.liveness(os.getpid(), 0, _ring.self_pidns() + 1) == "unknown"  # another namespace
    assert _ring.self_pidns() != 0
