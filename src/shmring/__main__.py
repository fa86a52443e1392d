"""Command line: inspect, watch and clean up the rings and boards on this machine.

    shmring ls [--json]             rings: name, kind, mode, size, fill, producer, consumers, age, dtype;
                                    queues: name, producers, lane size x lanes, items, consumers, age;
                                    boards: name, keys, writes, last writer, dtype
    shmring info NAME [--json]      full stats: per-consumer lag; per-key version and last writer
    shmring top [--once] [--json]   live view: rates in and out, fill, each consumer's lag and rate
    shmring rm NAME [NAME ...]      remove rings or boards
    shmring gc [--dry-run] [--json] remove rings and boards whose every participant is dead
                                    (a board's readers are not recorded: only its creator,
                                    writers and claim holders count)
    shmring demo [...]              the live demo (shmring demo --help)
    shmring bridge send|recv|keygen bridge rings across hosts over ZeroMQ (needs pyzmq)

Liveness is judged by (pid, process start time) on this machine; containers that
share /dev/shm but not a pid namespace cannot see each other's processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import _api
from ._api import SHM_DIR, segment_state, unlink
from ._inspect import (
    age_text,
    all_dead,
    describe,
    fill_text,
    last_writer,
    mode_text,
    producer_text,
    ring_names,
    size_text,
)


def _print_json(obj: Any, indent: int | None = 2) -> None:
    print(json.dumps(obj, indent=indent))


def cmd_ls(args: argparse.Namespace) -> int:
    rows = [describe(n) for n in ring_names()]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no rings")
        return 0
    table = [("NAME", "KIND", "MODE", "SIZE", "FILL", "PRODUCER", "CONS", "AGE", "DTYPE")]
    errors = []
    for st in rows:
        if "error" in st:
            errors.append(st)
            continue
        dtype = st["dtype"] or "-"
        dtype = dtype if len(dtype) <= 40 else dtype[:37] + "..."
        if st.get("kind") == "board":
            last = last_writer(st)
            who = "-" if last is None else str(last["last_writer_pid"])
            table.append((st["name"], "board", "-", f"{st['n_keys']} keys", f"{st['writes']} writes", who,
                          "-", "-", dtype))
            continue
        if st.get("kind") == "queue":
            live = sum(1 for c in st["consumer_stats"] if c["alive"])
            table.append((st["name"], "queue", f"{st['producers']} producers", f"{st['nbytes']}B x{st['lanes']}",
                          f"{st['items']} items", str(st["producers"]), str(live), age_text(st["age"]),
                          dtype))
            continue
        live = sum(1 for c in st["consumers"] if c["alive"])
        table.append((st["name"], st["kind"], mode_text(st), size_text(st), fill_text(st), producer_text(st),
                      str(live), age_text(st["age"]), dtype))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    right = {3, 4, 5, 6, 7}  # numbers right-aligned
    for row in table:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells + [row[-1]]))
    for st in errors:
        print(f"{st['name']}: not readable: {st['error']}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    st = describe(args.name)
    if args.json:
        _print_json(st)
        return 1 if "error" in st else 0
    if "error" in st:
        print(f"{args.name}: {st['error']}", file=sys.stderr)
        return 1
    if st.get("kind") == "board":
        return _board_info(st)
    if st.get("kind") == "queue":
        return _queue_info(st)
    keys = ["name", "kind", "dtype", "mode", "overflow", "capacity", "record_size", "segment_size", "pushed",
            "popped", "available", "retained", "producer_pid", "producer_alive", "closed", "close_reason",
            "abandoned", "evicted", "evicted_stalled", "evict_after_ms", "waiters", "creator_pid", "layout_version"]
    if st["kind"] == "messages":
        keys[keys.index("capacity"):keys.index("segment_size")] = ["nbytes", "max_message"]
        keys[keys.index("abandoned") + 1:keys.index("abandoned") + 1] = ["abandoned_bytes", "bytes_pushed"]
    for key in keys:
        print(f"{key:<15} {st[key]}")
    print(f"{'age':<15} {age_text(st['age'])}")
    print(f"consumers       {st['n_consumers']} of {st['max_consumers']}")
    for c in st["consumers"]:
        lag = c.get("lag", c["claimed"])
        dropped = f"{c['dropped']} ({c['dropped_bytes']} B)" if st["kind"] == "messages" else c["dropped"]
        state = "evicted" if c.get("evicted") else "alive" if c["alive"] else "dead"
        print(f"  #{c['index']:<3} pid {c['pid']:<8} {state:<7} "
              f"popped {c['popped']:<12} dropped {dropped!s:<10} lag {lag}")
    if "bridge" in st:
        b = st["bridge"]
        print(f"bridge          fed by pid {b['pid']}: records {b['records']}, batches {b['batches']}, "
              f"lost {b['lost']}, duplicates skipped {b['duplicates']}, bad messages {b['bad']}, "
              f"streams {b['streams']}, source resets {b['resets']}")
    return 0


def _queue_info(st: dict[str, Any]) -> int:
    for key in ("name", "kind", "items", "bytes", "maxsize", "nbytes", "lanes", "lanes_used", "max_consumers",
                "put", "got", "abandoned", "lost", "admitted", "done", "producers", "consumers", "segment_size",
                "creator_pid", "layout_version"):
        print(f"{key:<15} {st[key]}")
    print(f"{'age':<15} {age_text(st['age'])}")
    print("lanes")
    for ln in st["lane_stats"]:
        who = f"pid {ln['producer_pid']} ({'alive' if ln['producer_alive'] else 'dead'})" \
            if ln["producer_pid"] else "free"
        print(f"  #{ln['lane']:<3} {who:<22} put {ln['put']:<12} got {ln['got']:<12} "
              f"abandoned {ln['abandoned']:<6} bytes {ln['bytes']}")
    print("consumers")
    for c in st["consumer_stats"]:
        print(f"  pid {c['pid']:<8} {'alive' if c['alive'] else 'dead':<5} got {c['popped']}")
    return 0


def _board_info(st: dict[str, Any]) -> int:
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


def cmd_rm(args: argparse.Namespace) -> int:
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


def cmd_gc(args: argparse.Namespace) -> int:
    removed = []
    # a segment this version cannot read (another layout version, not a ring at all)
    # cannot be judged: named, never removed
    unreadable = {}
    for name in ring_names():
        # describe/all_dead judge rings and boards; segment_state also judges a
        # segment whose creator died before finishing it
        d = describe(name)
        st = segment_state(name)
        if all_dead(d) or st["all_dead"]:
            if not args.dry_run:
                try:
                    unlink(name)
                except FileNotFoundError:
                    continue
            removed.append(name)
        elif "error" in d and st["state"] == "invalid" and st["age"] is not None:  # age: it still exists
            unreadable[name] = d["error"]
    for seg in _api.unfinished_segments():  # creators killed during create
        if seg["all_dead"]:
            if not args.dry_run:
                try:
                    os.unlink(os.path.join(SHM_DIR, seg["file"]))
                except FileNotFoundError:
                    continue
            removed.append(seg["file"])
    sidecars = _orphan_sidecars()
    if not args.dry_run:
        for f in sidecars:
            try:
                os.unlink(os.path.join(SHM_DIR, f))
            except FileNotFoundError:
                pass
    if args.json:
        _print_json({"removed": removed, "sidecars": sidecars, "unreadable": unreadable,
                     "dry_run": args.dry_run}, indent=None)
    else:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {len(removed)} ring(s)/board(s)" + (": " + ", ".join(removed) if removed else ""))
        if sidecars:
            print(f"{verb} {len(sidecars)} bridge sidecar(s) whose ring is gone and whose bridge is dead: "
                  + ", ".join(sidecars))
        if unreadable:
            print(f"left {len(unreadable)} segment(s) this version cannot read (`shmring rm NAME` removes one):")
            for name, why in unreadable.items():
                print(f"  {name}: {why}")
    return 0


def _orphan_sidecars() -> list[str]:
    """Receiving-bridge sidecars (/dev/shm/shmrb-NAME) whose ring NAME no longer exists
    and whose bridge process is dead: left behind when the ring was unlinked by other
    means than `shmring rm`."""
    from ._ring import liveness
    from .bridge import SIDECAR_PREFIX, read_sidecar
    out = []
    for f in _api.shm_files(SIDECAR_PREFIX):
        name = f[len(SIDECAR_PREFIX):]
        if os.path.exists(os.path.join(SHM_DIR, _api.SEGMENT_PREFIX + name)):
            continue  # its ring is there: judged (and removed) with it by `rm`
        side = read_sidecar(name)
        pid = side["pid"] if side else 0
        if pid and liveness(pid) != "dead":
            continue  # a bridge still runs (or may: another pid namespace)
        out.append(f)
    return out


def cmd_top(args: argparse.Namespace) -> int:
    from .top import run
    return run(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="shmring", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", help="one of these (shmring COMMAND --help for its options):")
    p = sub.add_parser("ls", help="list the rings on this machine",
                       description="List the rings in /dev/shm with their mode, capacity, fill "
                                   "(records still in the ring), producer, live consumers, age and dtype.")
    p.add_argument("--json", action="store_true", help="print every ring's full stats as a JSON list")
    p.set_defaults(fn=cmd_ls)
    p = sub.add_parser("info", help="full stats of one ring",
                       description="Every counter of one ring, and each consumer's pid, liveness, "
                                   "records received, records dropped and lag.")
    p.add_argument("name", metavar="NAME", help="the ring's name (as given to Ring.create)")
    p.add_argument("--json", action="store_true", help="print the stats as one JSON object")
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("top", help="live view of every ring: rates, fill, lag",
                       description="A live view of every ring on this machine: records/s and bytes/s in "
                                   "and out, fill, each consumer's lag and rate, producer and consumer "
                                   "liveness. Keys: n/i/o/f/l/a sort by name, rate in, rate out, fill, "
                                   "lag, age (again: reverse); q quits.")
    from .top import add_arguments
    add_arguments(p)
    p.set_defaults(fn=cmd_top)
    p = sub.add_parser("rm", help="remove rings",
                       description="Remove the rings' names; processes that have them mapped keep working.")
    p.add_argument("names", nargs="+", metavar="NAME", help="a ring to remove")
    p.set_defaults(fn=cmd_rm)
    p = sub.add_parser("gc", help="remove rings whose every participant is dead",
                       description="Remove every ring whose creator, producer and consumers are all dead, "
                                   "and every receiving bridge's sidecar whose ring is gone and whose bridge "
                                   "is dead; name each segment this version cannot read (never removed: "
                                   "`shmring rm NAME` does that).")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.add_argument("--json", action="store_true",
                   help='print {"removed": [...], "sidecars": [...], "unreadable": {name: why}, "dry_run": ...}')
    p.set_defaults(fn=cmd_gc)
    sub.add_parser("demo", help="run the live demo (shmring demo --help for its options)", add_help=False)
    sub.add_parser("bridge", help="bridge rings across hosts over ZeroMQ (shmring bridge --help)", add_help=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["demo"]:
            from .demo import main as demo_main
            return demo_main(argv[1:], prog="shmring demo")
        if argv[:1] == ["bridge"]:
            from .bridge import cli_main
            return cli_main(argv[1:])
        ap = build_parser()
        args = ap.parse_args(argv)
        if args.cmd is None:
            ap.print_help()
            return 0
        rc = args.fn(args)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handler below
        return rc
    except BrokenPipeError:
        # The reader went away (`shmring ls --json | head`): stop quietly. stdout is
        # pointed at /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13  # what a shell reports for a command ended by SIGPIPE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
