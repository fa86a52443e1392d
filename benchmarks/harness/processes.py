"""Child processes of a case: started with "spawn", pinned and tuned or left as a user leaves
them, synchronised at a start line, killed on error or timeout."""

from __future__ import annotations

import gc
import os
import queue
import shutil
import signal
import sys
import tempfile
import time
import traceback

CASE_TIMEOUT = 120.0  # seconds a case may take before its processes are killed


class CaseFailed(Exception):
    pass


class Resources:
    """Everything the parent created for one run: ring names, socket files."""

    def __init__(self) -> None:
        self.rings: list[str] = []
        self.tmp = tempfile.mkdtemp(prefix="shmring-bench-")
        self.seq = 0
        self.tag = f"{os.getpid() % 100000}"

    def next_id(self) -> int:
        self.seq += 1
        return self.seq

    def unlink_rings(self) -> None:
        if not self.rings:
            return
        import shmring

        for name in self.rings:
            try:
                shmring.unlink(name)
            except FileNotFoundError:
                pass
            except Exception as exc:
                print(f"warning: could not unlink ring {name!r}: {exc}", file=sys.stderr)
        self.rings.clear()

    def cleanup(self) -> None:
        self.unlink_rings()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _pin(cpu):
    if cpu is None:
        return
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})
    except OSError:
        pass


def _child(fn, idx, kwargs, barrier, resq):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    try:
        _pin(kwargs.pop("cpu", None))
        # "tuned": the collector cannot pause a timed loop; "default" leaves it on, as a user does
        if kwargs.pop("gc_off", True):
            gc.disable()
        out = fn(barrier=barrier, **kwargs)
        resq.put((idx, "ok", out))
    except BaseException:
        try:
            barrier.abort()
        except Exception:
            pass
        resq.put((idx, "error", traceback.format_exc(limit=6)))


def run_procs(ctx, specs: list[tuple], timeout: float = CASE_TIMEOUT) -> list:
    """specs: (function, kwargs); kwargs may hold `cpu` (pin to that CPU index; None = not
    pinned) and `gc_off`. Returns each function's result, in order. Kills every process of the
    case on error or timeout."""
    barrier = ctx.Barrier(len(specs))
    resq = ctx.Queue()
    procs = []
    try:
        for idx, (fn, kw) in enumerate(specs):
            p = ctx.Process(target=_child, args=(fn, idx, kw, barrier, resq), daemon=True)
            p.start()
            procs.append(p)
        results = [None] * len(specs)
        pending = len(specs)
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CaseFailed(f"timed out after {timeout:.0f} s")
            try:
                idx, status, out = resq.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    # give its traceback a moment to arrive
                    try:
                        idx, status, out = resq.get(timeout=2.0)
                    except queue.Empty:
                        raise CaseFailed(f"a worker died with exit code {dead[0].exitcode}") from None
                else:
                    continue
            if status != "ok":
                raise CaseFailed(out.strip().splitlines()[-1] + "\n" + out)
            results[idx] = out
            pending -= 1
        for p in procs:
            p.join(5)
        return results
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(2)
            if p.is_alive():
                p.kill()
                p.join(1)
        resq.close()
        resq.join_thread()


def sync(barrier, peer, *eps):
    """Start line: everything opened, the peer's connections proven, then go."""
    barrier.wait(60)
    peer.start_line(eps)
    barrier.wait(60)
