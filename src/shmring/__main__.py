"""Command line: inspect and clean up the rings and boards on this machine.

    shmring ls [--json]             rings: name, dtype, capacity, mode, producer, consumers, fill;
                                    boards: name, dtype, keys, writes, last writer
    shmring info NAME [--json]      full stats: per-consumer lag; per-key version and last writer
    shmring rm NAME [NAME ...]      remove rings or boards
    shmring gc [--dry-run] [--json] remove rings and boards whose every participant is dead
                                    (a board's readers are not recorded: only its creator,
                                    writers and claim holders count)
    shmring demo [...]              the live demo (see python -m shmring.demo --help)
    shmring bridge send|recv|keygen  bridge rings across hosts over ZeroMQ (needs pyzmq)

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
from .board import Board
from .errors import NotARingError, RingError


def ring_names() -> list[str]:
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return []
    return sorted(e[len(SEGMENT_PREFIX):] for e in entries if e.startswith(SEGMENT_PREFIX))


def describe(name: str) -> dict[str, Any]:
    """stats() of a ring, or an 'error' entry for a segment that is not a valid ring."""
    try:
        ring = Ring.attach(name)
    except NotARingError:
        return _describe_board(name)
    except (RingError, OSError, TypeError, ValueError) as exc:
        return {"name": name, "error": str(exc)}
    try:
        st = ring.stats()
    finally:
        ring.close()
    from .bridge import read_sidecar  # imports no zmq
    side = read_sidecar(name)
    if side is not None:
        st["bridge"] = side
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


def _last_writer(st: dict[str, Any]) -> dict[str, Any] | None:
    written = [k for k in st["keys"] if k["write_time"] is not None]
    return max(written, key=lambda k: k["write_time"]) if written else None


def all_dead(st: dict[str, Any]) -> bool:
    if "error" in st:
        return False  # not ours to judge: `rm` it explicitly
    if st.get("kind") == "board":
        if any(k["owner_alive"] or k["last_writer_alive"] for k in st["keys"]):
            return False
        return not _ring.process_alive(st["creator_pid"])
    if st["producer_alive"] or any(c["alive"] for c in st["consumers"]):
        return False
    return not _ring.process_alive(st["creator_pid"])


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
    print(f"{'':<26} {'(board)':<19} {'KEYS':>9} {'WRITES':>17} {'WRITER':>9}")
    for st in rows:
        if "error" in st:
            print(f"{st['name']:<26} ?  {st['error']}")
            continue
        if st.get("kind") == "board":
            last = _last_writer(st)
            who = "-" if last is None else str(last["last_writer_pid"])
            dtype = st["dtype"] if len(st["dtype"]) <= 40 else st["dtype"][:37] + "..."
            print(f"{st['name']:<26} {'board':<19} {st['n_keys']:>9} {st['writes']:>17} {who:>9} {'-':>4}  {dtype}")
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
    if st.get("kind") == "board":
        for key in ("name", "kind", "dtype", "value_size", "n_keys", "copies", "segment_size", "writes",
                    "creator_pid", "layout_version"):
            print(f"{key:<15} {st[key]}")
        print("keys")
        for k in st["keys"]:
            writer = "-" if k["last_writer_pid"] is None else \
                f"{k['last_writer_pid']} ({'alive' if k['last_writer_alive'] else 'dead'})"
            claim = "" if k["owner_pid"] is None else \
                f"  claimed by {k['owner_pid']} ({'alive' if k['owner_alive'] else 'dead'})"
            print(f"  {str(k['key']):<20} version {k['version']:<10} last writer {writer:<16} "
                  f"takeovers {k['takeovers']}{claim}")
        return 0
    for key in ("name", "dtype", "mode", "overflow", "capacity", "record_size", "segment_size", "pushed",
                "popped", "available", "producer_pid", "producer_alive", "closed", "close_reason",
                "abandoned", "evicted", "waiters", "creator_pid", "layout_version"):
        print(f"{key:<15} {st[key]}")
    print(f"consumers       {st['n_consumers']} of {st['max_consumers']}")
    for c in st["consumers"]:
        lag = c.get("lag", c["claimed"])
        print(f"  #{c['index']:<3} pid {c['pid']:<8} {'alive' if c['alive'] else 'dead':<5} "
              f"popped {c['popped']:<12} dropped {c['dropped']:<10} lag {lag}")
    if "bridge" in st:
        b = st["bridge"]
        print(f"bridge          fed by pid {b['pid']}: records {b['records']}, batches {b['batches']}, "
              f"lost {b['lost']}, duplicates skipped {b['duplicates']}, bad messages {b['bad']}, "
              f"streams {b['streams']}, source resets {b['resets']}")
    return 0


def cmd_rm(args) -> int:
    rc = 0
    for name in args.names:
        try:
            unlink(name)
            from .bridge import remove_sidecar
            remove_sidecar(name)
        except FileNotFoundError:
            print(f"{name}: no such ring or board", file=sys.stderr)
            rc = 1
        except (ValueError, OSError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            rc = 1
    return rc


def cmd_gc(args) -> int:
    removed = []
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
        print(f"{verb} {len(removed)} ring(s)/board(s)" + (": " + ", ".join(removed) if removed else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from .demo import main as demo_main
        return demo_main(argv[1:])
    if argv[:1] == ["bridge"]:
        from .bridge import cli_main
        return cli_main(argv[1:])
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
    sub.add_parser("bridge", help="bridge rings across hosts over ZeroMQ (send, recv, keygen)")
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
