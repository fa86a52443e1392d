"""Command line: inspect and clean up the rings on this machine.

    shmring ls [--json]             rings: name, dtype, capacity, mode, producer, consumers, fill
    shmring info NAME [--json]      full stats, per-consumer lag
    shmring rm NAME [NAME ...]      remove rings
    shmring gc [--dry-run] [--json] remove rings whose every participant is dead
    shmring demo [...]              the live demo (see python -m shmring.demo --help)

Liveness is judged by (pid, process start time) on this machine; containers that
share /dev/shm but not a pid namespace cannot see each other's processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import _ring
from ._api import SEGMENT_PREFIX, SHM_DIR, Ring, unlink
from .errors import CreatorDiedError, RingError


def ring_names() -> list[str]:
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return []
    return sorted(e[len(SEGMENT_PREFIX):] for e in entries if e.startswith(SEGMENT_PREFIX))


INIT_PREFIX = ".shmr-init-"  # a segment being built: ".shmr-init-PID-START-NAME"


def unfinished() -> list[tuple[str, int, int]]:
    """(file, pid, start) of segments still being built, or left by a creator that died."""
    out = []
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return out
    for e in entries:
        if not e.startswith(INIT_PREFIX):
            continue
        parts = e[len(INIT_PREFIX):].split("-", 2)
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            out.append((e, int(parts[0]), int(parts[1])))
    return out


def describe(name: str) -> dict[str, Any]:
    """stats() of a ring, or an 'error' entry for a segment that is not a valid ring."""
    try:
        ring = Ring.attach(name)
    except CreatorDiedError as exc:
        return {"name": name, "error": str(exc), "creator_died": True}
    except (RingError, OSError, TypeError, ValueError) as exc:
        return {"name": name, "error": str(exc)}
    try:
        st = ring.stats()
    finally:
        ring.close()
    return st


def all_dead(st: dict[str, Any]) -> bool:
    """Every participant is known dead. One in another pid namespace, or one we
    may not inspect, is "unknown" and keeps the ring."""
    if "error" in st:
        return bool(st.get("creator_died"))  # others are not ours to judge: `rm` them explicitly
    if st["producer_alive"] or any(c["alive"] for c in st["consumers"]):
        return False
    return st["creator_liveness"] == "dead"


def _fill(st: dict[str, Any]) -> str:
    return f"{st['available']}/{st['capacity']}"


def cmd_ls(args) -> int:
    rows = [describe(n) for n in ring_names()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no rings")
        return 0
    print(f"{'NAME':<26} {'MODE':<19} {'CAP':>9} {'FILL':>17} {'PRODUCER':>9} {'CONS':>4}  DTYPE")
    for st in rows:
        if "error" in st:
            print(f"{st['name']:<26} ?  {st['error']}")
            continue
        mode = st["mode"] if st["mode"] == "queue" else f"broadcast/{st['overflow']}"
        prod = "closed" if st["closed"] else (str(st["producer_pid"]) if st["producer_alive"] else "-")
        live = sum(1 for c in st["consumers"] if c["alive"])
        dtype = st["dtype"] if len(st["dtype"]) <= 40 else st["dtype"][:37] + "..."
        print(f"{st['name']:<26} {mode:<19} {st['capacity']:>9} {_fill(st):>17} {prod:>9} {live:>4}  {dtype}")
    return 0


def cmd_info(args) -> int:
    st = describe(args.name)
    if args.json:
        print(json.dumps(st, indent=2))
        return 1 if "error" in st else 0
    if "error" in st:
        print(f"{args.name}: {st['error']}", file=sys.stderr)
        return 1
    for key in ("name", "dtype", "mode", "overflow", "capacity", "record_size", "segment_size", "pushed",
                "popped", "available", "producer_pid", "producer_alive", "closed", "close_reason",
                "abandoned", "evicted", "waiters", "creator_pid", "layout_version"):
        print(f"{key:<15} {st[key]}")
    print(f"consumers       {st['n_consumers']} of {st['max_consumers']}")
    for c in st["consumers"]:
        lag = c.get("lag", c["claimed"])
        print(f"  #{c['index']:<3} pid {c['pid']:<8} {'alive' if c['alive'] else 'dead':<5} "
              f"popped {c['popped']:<12} dropped {c['dropped']:<10} lag {lag}")
    return 0


def cmd_rm(args) -> int:
    rc = 0
    for name in args.names:
        try:
            unlink(name)
        except FileNotFoundError:
            print(f"{name}: no such ring", file=sys.stderr)
            rc = 1
        except (ValueError, OSError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            rc = 1
    return rc


def cmd_gc(args) -> int:
    removed = []
    for entry, pid, start in unfinished():
        if _ring.liveness(pid, start) == "dead":
            if not args.dry_run:
                try:
                    os.unlink(os.path.join(SHM_DIR, entry))
                except FileNotFoundError:
                    continue
            removed.append(entry)
    for name in ring_names():
        st = describe(name)
        if all_dead(st):
            if not args.dry_run:
                try:
                    unlink(name)
                except FileNotFoundError:
                    continue
            removed.append(name)
    if args.json:
        print(json.dumps({"removed": removed, "dry_run": args.dry_run}))
    else:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {len(removed)} ring(s)" + (": " + ", ".join(removed) if removed else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from .demo import main as demo_main
        return demo_main(argv[1:])
    ap = argparse.ArgumentParser(prog="shmring", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ls", help="list rings")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_ls)
    p = sub.add_parser("info", help="stats of one ring")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("rm", help="remove rings")
    p.add_argument("names", nargs="+")
    p.set_defaults(fn=cmd_rm)
    p = sub.add_parser("gc", help="remove rings whose every participant is dead")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_gc)
    sub.add_parser("demo", help="run the live demo")
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
