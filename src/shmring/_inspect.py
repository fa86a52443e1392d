"""What the command line shows about the segments on this machine: listing,
stats with the derived figures (retained records, age), and their formatting.
Shared by ``shmring ls/info/gc`` and ``shmring top``."""

from __future__ import annotations

import time
from typing import Any

from . import _ring
from ._api import SEGMENT_PREFIX, Ring, shm_files
from .board import Board
from .errors import CreatorDiedError, NotARingError, RingError


def ring_names() -> list[str]:
    """Names of the rings and boards in /dev/shm (sorted)."""
    return [e[len(SEGMENT_PREFIX):] for e in shm_files(SEGMENT_PREFIX)]


def describe(name: str) -> dict[str, Any]:
    """stats() of a ring plus the derived figures, or an 'error' entry for a segment
    that is not a valid ring or board (or vanished meanwhile). A ring fed by a bridge
    receiver carries the receiver's counters under "bridge"."""
    try:
        ring = Ring.attach(name)
    except NotARingError:
        queue = _describe_queue(name)
        return queue if queue is not None else _describe_board(name)
    except CreatorDiedError as exc:
        return {"name": name, "error": str(exc), "creator_died": True}
    except (RingError, OSError, TypeError, ValueError) as exc:
        return {"name": name, "error": str(exc)}
    try:
        st = ring.stats()
    finally:
        ring.close()
    st["retained"] = retained(st)
    st["age"] = max(0.0, time.time() - st["created"])
    from .bridge import read_sidecar  # imports no zmq
    side = read_sidecar(name)
    if side is not None:
        st["bridge"] = side
    return st


def _describe_queue(name: str) -> dict[str, Any] | None:
    """A named shmring.Queue: its counts, and its producers and consumers lane by
    lane; None if the segment is not a queue."""
    try:
        qm = _ring.QueueMapping.attach(name)
    except NotARingError:
        return None
    except (RingError, OSError) as exc:
        return {"name": name, "error": str(exc)}
    st: dict[str, Any] = dict(qm.stats())
    st.update(name=name, kind="queue", dtype="objects", nbytes=st["lane_bytes"], created=st["create_time_ns"] / 1e9)
    st["age"] = max(0.0, time.time() - st["created"])
    st["creator_liveness"] = _ring.liveness(st["creator_pid"])
    lanes, consumers = [], {}
    for i in range(st["lanes_used"]):
        lane = qm.lane(i)
        if lane is None:
            continue
        info = lane.info()
        lanes.append({"lane": i, "producer_pid": info["producer_pid"],
                      "producer_alive": info["producer_alive"] != _ring.LIVENESS_DEAD,
                      "put": info["pushed"], "got": info["popped"], "abandoned": info["abandoned"],
                      "bytes": info["available"]})
        for c in lane.consumer_infos():
            seen = consumers.setdefault(c["pid"], {"pid": c["pid"], "alive": c["alive"] != _ring.LIVENESS_DEAD,
                                                   "popped": 0})
            seen["popped"] += c["popped"]
    st["lane_stats"] = lanes
    st["consumer_stats"] = sorted(consumers.values(), key=lambda c: c["pid"])
    return st


def _describe_board(name: str) -> dict[str, Any]:
    try:
        board = Board.attach(name)
    except (RingError, OSError, TypeError, ValueError) as exc:
        return {"name": name, "error": str(exc)}
    try:
        return board.stats()
    finally:
        board.close()


def last_writer(st: dict[str, Any]) -> dict[str, Any] | None:
    """The key of a board written most recently, or None before the first write."""
    written = [k for k in st["keys"] if k["write_time"] is not None]
    return max(written, key=lambda k: k["write_time"]) if written else None


def retained(st: dict[str, Any]) -> int:
    """Records still readable in the ring. In broadcast-overwrite mode the slowest
    consumer may be more than a ring behind ("available" then exceeds the capacity):
    only the newest ``capacity`` records are still there, the rest were overwritten.
    A message ring counts bytes."""
    if st.get("kind") == "messages":
        return min(st["available"], st["nbytes"])
    return min(st["available"], st["capacity"])


def overwritten_behind(st: dict[str, Any]) -> int:
    """Records the slowest consumer of a broadcast-overwrite ring has already lost."""
    if st.get("kind") == "messages":
        return 0  # counted per consumer (dropped, dropped_bytes), not derivable here
    return max(0, st["available"] - st["capacity"])


def size_text(st: dict[str, Any]) -> str:
    """A record ring's capacity in records, a message ring's in bytes."""
    return f"{st['nbytes']}B" if st.get("kind") == "messages" else str(st["capacity"])


def fill_text(st: dict[str, Any]) -> str:
    if st.get("kind") == "messages":
        return f"{st['available']}B"
    text = f"{retained(st)}/{st['capacity']}"
    lost = overwritten_behind(st)
    return f"{text} ({lost} overwritten)" if lost else text


def mode_text(st: dict[str, Any]) -> str:
    return st["mode"] if st["mode"] == "queue" else f"broadcast/{st['overflow']}"


def producer_text(st: dict[str, Any]) -> str:
    if st["closed"]:
        return "closed"
    if st["producer_alive"]:
        return str(st["producer_pid"])
    return "dead" if st["producer_pid"] else "-"


def all_dead(st: dict[str, Any]) -> bool:
    """True when the ring's creator, producer and every consumer are gone (a board:
    its creator, writers and claim holders; its readers are not recorded)."""
    if "error" in st:
        return bool(st.get("creator_died"))  # others are not ours to judge: `rm` them explicitly
    if st.get("kind") == "board":
        if any(k["owner_alive"] or k["last_writer_alive"] for k in st["keys"]):
            return False
        return not _ring.process_alive(st["creator_pid"])
    if st.get("kind") == "queue":
        if any(ln["producer_alive"] for ln in st["lane_stats"]) or any(c["alive"] for c in st["consumer_stats"]):
            return False
        return st["creator_liveness"] == "dead"
    if st["producer_alive"] or any(c["alive"] for c in st["consumers"]):
        return False
    # one in another pid namespace, or one we may not inspect, is "unknown" and keeps the ring
    return st["creator_liveness"] == "dead"


def age_text(seconds: float) -> str:
    """3s, 4m12s, 2h05m, 3d04h: two units at most, like ps/top."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def si(value: float, unit: str = "") -> str:
    """1234567 -> '1.23M' (decimal prefixes, three significant digits)."""
    v = float(value)
    for prefix in ("", "k", "M", "G", "T"):
        if abs(v) < 999.5 or prefix == "T":
            if prefix == "":
                return f"{v:.0f}{unit}"
            return f"{v:.3g}{prefix}{unit}"
        v /= 1000.0
    raise AssertionError("unreachable")
