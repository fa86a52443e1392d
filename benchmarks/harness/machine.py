"""Facts about the machine, and how busy other processes kept it while a case ran."""

from __future__ import annotations

import os
import platform
import subprocess
import time

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # benchmarks/
ROOT = os.path.dirname(HERE)


def machine_info(peers) -> dict:
    cpu = platform.processor() or "unknown"
    hyper = None
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        hyper = "hypervisor" in text
    except OSError:
        pass
    versions = {"numpy": np.__version__}
    for p in peers:
        if p.dist is not None or p.name == "shmring":
            versions[p.name] = p.version()
    commit = None
    try:
        commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except Exception:
        pass
    return {
        "cpu": cpu,
        "commit": commit,
        "cores": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "virtualized": hyper,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": versions,
        "loadavg": list(os.getloadavg()),
    }


def _cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    steal = v[7] if len(v) > 7 else 0
    return sum(v[:8]), idle, steal


class OtherLoad:
    """How much of the machine other processes used while a case ran: CPU time the kernel
    counted as busy minus the CPU time of this process and of its (waited-for) children, as a
    fraction of elapsed time x CPUs; plus steal."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.s0 = self._busy()
        self.o0 = self._ours()

    @staticmethod
    def _busy():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except OSError:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = v[0] + v[1] + v[2] + (v[5] + v[6] if len(v) > 6 else 0)
        steal = v[7] if len(v) > 7 else 0
        return busy / hz, steal / hz

    @staticmethod
    def _ours():
        import resource

        a = resource.getrusage(resource.RUSAGE_SELF)
        b = resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    def stop(self) -> dict:
        s1 = self._busy()
        if s1 is None or self.s0 is None:
            return {"other_load": 0.0, "steal": 0.0}
        wall = max(time.monotonic() - self.t0, 1e-3) * (os.cpu_count() or 1)
        other = (s1[0] - self.s0[0]) - (self._ours() - self.o0)
        return {"other_load": round(max(0.0, other) / wall, 3), "steal": round((s1[1] - self.s0[1]) / wall, 3)}


def background_load(interval: float = 0.25) -> dict:
    """CPU use by other processes while this one sleeps: busy fraction of all CPUs (1.0 = every
    CPU busy) and hypervisor steal, over `interval`."""
    try:
        t0, i0, s0 = _cpu_times()
        time.sleep(interval)
        t1, i1, s1 = _cpu_times()
    except OSError:
        return {"busy": None, "steal": None}
    dt = max(t1 - t0, 1)
    return {"busy": round(1 - (i1 - i0) / dt, 3), "steal": round((s1 - s0) / dt, 3)}
