"""``shmring top``: a live view of every shared-memory segment shmring made on this machine.

Each refresh samples every segment's counters (no locks, nothing written) and turns
the difference from the previous sample into rates: records/s and bytes/s in (what
producers published) and out (what consumers received), each consumer's rate and lag,
fill, producer and consumer liveness.

Another kind of segment plugs in with a :class:`Provider`: an object with a ``kind``,
``names()`` (what exists now) and ``sample(name)`` returning a :class:`Sample` of
cumulative counters; rates, sorting and display are shared. For example::

    class BoardProvider:
        kind = "board"
        def names(self):
            return board_names()
        def sample(self, name):
            st = Board.attach(name).stats()
            return Sample(kind="board", name=name, mode="latest value", capacity=st["keys"],
                          fill=st["used"], items_in=st["writes"], items_out=st["reads"],
                          bytes_in=st["bytes_written"], bytes_out=st["bytes_read"],
                          created=st["created"])

    register_provider(BoardProvider())

The terminal view uses rich (``pip install shmring[cli]``) when it is installed and
stdout is a terminal, and plain text otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Protocol

from ._inspect import age_text, describe, mode_text, overwritten_behind, retained, ring_names, si

# -- what a provider reports ------------------------------------------------------------


@dataclass
class ConsumerSample:
    """One consumer: ``received`` is cumulative (records or messages)."""

    ident: str
    pid: int
    alive: bool
    received: int
    lag: int | None = None
    dropped: int = 0


@dataclass
class Sample:
    """Cumulative counters of one segment at one moment."""

    kind: str
    name: str
    mode: str = ""
    capacity: int = 0           # in the kind's own unit (records, bytes, keys)
    fill: int = 0               # how much of ``capacity`` is held now
    overwritten: int = 0        # what the slowest consumer already lost (overwrite mode)
    lag: int = 0                # what the slowest consumer has still to read (queue: the backlog)
    items_in: int = 0
    items_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    producer_pid: int | None = None
    producer_alive: bool = False
    closed: str | None = None   # why the stream ended, if it did
    consumers: list[ConsumerSample] = field(default_factory=list)
    created: float = 0.0        # epoch seconds; a changed value means a new segment of that name
    error: str | None = None    # the segment could not be read


class Provider(Protocol):
    """What ``shmring top`` asks of one kind of segment (see ``register_provider``)."""

    kind: str
    """The kind's name as shown in the view (``"ring"``, ``"board"``, ...)."""

    def names(self) -> list[str]:
        """The segments of this kind on the machine now."""
        ...

    def sample(self, name: str) -> Sample:
        """The cumulative counters of one segment now (an unreadable one: ``Sample.error``)."""
        ...


class RingProvider:
    """The record rings (``Ring``)."""

    kind = "ring"

    def names(self) -> list[str]:
        return ring_names()

    def sample(self, name: str) -> Sample:
        st = describe(name)
        if "error" in st:
            return Sample(kind=self.kind, name=name, error=st["error"])
        if st.get("kind") == "board":
            return _board_sample(name, st)
        if st.get("kind") == "queue":
            return _queue_sample(name, st)
        size = st["record_size"]
        if st["kind"] == "messages":
            size = st["bytes_pushed"] / st["pushed"] if st["pushed"] else 0  # the mean message size
        consumers = [
            ConsumerSample(ident=f"#{c['index']}", pid=c["pid"], alive=c["alive"], received=c["popped"],
                           lag=c.get("lag"), dropped=c["dropped"])
            for c in st["consumers"]
        ]
        return Sample(
            kind=self.kind, name=name, mode=mode_text(st), capacity=st["nbytes"] if st["kind"] == "messages" else st["capacity"], fill=retained(st),
            overwritten=overwritten_behind(st), lag=st["available"], items_in=st["pushed"], items_out=st["popped"],
            bytes_in=st["pushed"] * size, bytes_out=st["popped"] * size,
            producer_pid=st["producer_pid"], producer_alive=st["producer_alive"],
            closed=st["close_reason"] if st["closed"] else None, consumers=consumers, created=st["created"],
        )


def _board_sample(name: str, st: dict) -> Sample:
    """A board in the ring columns: its keys as the capacity, the keys written so far as
    the fill, writes as what comes in; readers are not recorded, so nothing goes out."""
    written = [k for k in st["keys"] if k["write_time"] is not None]
    last = max(written, key=lambda k: k["write_time"]) if written else None
    return Sample(
        kind="board", name=name, mode="board", capacity=st["n_keys"], fill=len(written),
        items_in=st["writes"], bytes_in=st["writes"] * st["value_size"],
        producer_pid=None if last is None else last["last_writer_pid"],
        producer_alive=bool(last and last["last_writer_alive"]), created=st.get("created", 0.0),
    )


def _queue_sample(name: str, st: dict) -> Sample:
    """A named queue in the ring columns: the items queued are its fill and lag;
    its consumers are the processes taking from it."""
    consumers = [ConsumerSample(ident=f"pid {c['pid']}", pid=c["pid"], alive=c["alive"], received=c["popped"])
                 for c in st["consumer_stats"]]
    live = [ln for ln in st["lane_stats"] if ln["producer_alive"]]
    return Sample(
        kind="queue", name=name, mode=f"{st['producers']} producers", capacity=st["maxsize"] or st["items"],
        fill=st["items"], lag=st["items"], items_in=st["put"], items_out=st["got"],
        producer_pid=live[0]["producer_pid"] if live else None, producer_alive=bool(live),
        consumers=consumers, created=st["created"],
    )


PROVIDERS: list[Provider] = [RingProvider()]


def register_provider(provider: Provider) -> None:
    """Show another kind of segment in ``shmring top`` (one provider per kind)."""
    PROVIDERS[:] = [p for p in PROVIDERS if p.kind != provider.kind] + [provider]


# -- rates --------------------------------------------------------------------------------


@dataclass
class Row:
    sample: Sample
    age: float
    in_per_s: float | None = None     # items
    out_per_s: float | None = None
    in_bytes_per_s: float | None = None
    out_bytes_per_s: float | None = None
    consumer_per_s: dict[str, float | None] = field(default_factory=dict)

    @property
    def fill_fraction(self) -> float:
        s = self.sample
        return s.fill / s.capacity if s.capacity else 0.0

    def as_json(self) -> dict[str, Any]:
        s = self.sample
        d: dict[str, Any] = {k: v for k, v in asdict(s).items() if k not in ("consumers",)}
        d["age"] = round(self.age, 3)
        d["in"] = {"items": s.items_in, "bytes": s.bytes_in,
                   "items_per_s": self.in_per_s, "bytes_per_s": self.in_bytes_per_s}
        d["out"] = {"items": s.items_out, "bytes": s.bytes_out,
                    "items_per_s": self.out_per_s, "bytes_per_s": self.out_bytes_per_s}
        for k in ("items_in", "items_out", "bytes_in", "bytes_out"):
            del d[k]
        d["consumers"] = [dict(asdict(c), per_s=self.consumer_per_s.get(_ckey(c))) for c in s.consumers]
        return d


def _ckey(c: ConsumerSample) -> str:
    return f"{c.ident}/{c.pid}"  # a slot reused by another process is another consumer


@dataclass
class Frame:
    time: float                 # epoch seconds
    interval: float | None      # seconds since the previous frame (None: the first)
    rows: list[Row]

    def as_json(self) -> dict[str, Any]:
        return {"time": round(self.time, 3),
                "interval": None if self.interval is None else round(self.interval, 4),
                "segments": [r.as_json() for r in self.rows]}


class Monitor:
    """Samples every provider's segments; rates come from the previous sample."""

    def __init__(self, providers: list[Provider] | None = None) -> None:
        self.providers = PROVIDERS if providers is None else providers
        self._prev: dict[tuple[str, str], tuple[float, Sample]] = {}
        self._prev_t: float | None = None

    def poll(self) -> Frame:
        """One frame: a row per segment, with rates over the time since the previous poll
        (none on the first poll, or for a segment recreated under the same name)."""
        t = time.monotonic()
        now = time.time()
        rows = []
        seen = {}
        for prov in self.providers:
            for name in prov.names():
                try:
                    s = prov.sample(name)
                except Exception as exc:  # one unreadable segment must not end the view
                    s = Sample(kind=prov.kind, name=name, error=f"{type(exc).__name__}: {exc}")
                key = (s.kind, name)
                seen[key] = (t, s)
                row = Row(sample=s, age=max(0.0, now - s.created) if s.created else 0.0)
                prev = self._prev.get(key)
                if prev is not None and s.error is None and prev[1].error is None \
                        and prev[1].created == s.created and t > prev[0]:
                    _rates(row, prev[1], s, t - prev[0])
                rows.append(row)
        interval = None if self._prev_t is None else t - self._prev_t
        self._prev, self._prev_t = seen, t
        return Frame(time=now, interval=interval, rows=rows)


def _rates(row: Row, a: Sample, b: Sample, dt: float) -> None:
    row.in_per_s = (b.items_in - a.items_in) / dt
    row.out_per_s = (b.items_out - a.items_out) / dt
    row.in_bytes_per_s = (b.bytes_in - a.bytes_in) / dt
    row.out_bytes_per_s = (b.bytes_out - a.bytes_out) / dt
    before = {_ckey(c): c.received for c in a.consumers}
    for c in b.consumers:
        k = _ckey(c)
        row.consumer_per_s[k] = (c.received - before[k]) / dt if k in before else None


SORTS: dict[str, tuple[str, Callable[[Row], Any], bool]] = {
    # key: (name, sort key, descending by default)
    "n": ("name", lambda r: (r.sample.kind, r.sample.name), False),
    "i": ("in", lambda r: r.in_per_s or 0.0, True),
    "o": ("out", lambda r: r.out_per_s or 0.0, True),
    "f": ("fill", lambda r: r.fill_fraction, True),
    "l": ("lag", lambda r: r.sample.lag, True),
    "a": ("age", lambda r: r.age, False),
}
SORT_NAMES = {v[0]: k for k, v in SORTS.items()}


def sort_rows(rows: list[Row], key: str, reverse: bool = False) -> list[Row]:
    _, fn, desc = SORTS[key]
    return sorted(rows, key=fn, reverse=desc != reverse)


# -- rendering ----------------------------------------------------------------------------

HEADER = ("NAME", "KIND", "MODE", "IN/s", "OUT/s", "IN B/s", "OUT B/s", "FILL", "PRODUCER", "CONSUMERS",
          "LAG", "AGE")
RIGHT = {3, 4, 5, 6, 7, 10, 11}


def _rate(v: float | None, unit: str = "") -> str:
    return "..." if v is None else si(v, unit)


def table_rows(frame: Frame) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(style, cells) per line: a segment, then one line per consumer."""
    for r in frame.rows:
        s = r.sample
        if s.error is not None:
            yield "error", (s.name, s.kind, "unreadable") + ("",) * (len(HEADER) - 3)
            continue
        fill = f"{s.fill}/{s.capacity}" + (f" -{s.overwritten}" if s.overwritten else "")
        if s.closed:
            prod = f"closed ({s.closed})" if s.closed != "closed by producer" else "closed"
        elif s.producer_pid:
            prod = f"{s.producer_pid}" + ("" if s.producer_alive else " dead")
        else:
            prod = "-"
        alive = sum(1 for c in s.consumers if c.alive)
        cons = f"{alive} alive" if alive == len(s.consumers) else f"{alive}/{len(s.consumers)} alive"
        style = "dead" if (s.producer_pid and not s.producer_alive and not s.closed) else "ring"
        yield style, (s.name, s.kind, s.mode, _rate(r.in_per_s), _rate(r.out_per_s),
                      _rate(r.in_bytes_per_s, "B"), _rate(r.out_bytes_per_s, "B"), fill, prod, cons,
                      si(s.lag), age_text(r.age))
        for c in s.consumers:
            state = "alive" if c.alive else "dead"
            extra = f" dropped {si(c.dropped)}" if c.dropped else ""
            yield ("consumer" if c.alive else "dead"), (
                f"  {c.ident}", "", "", "", _rate(r.consumer_per_s.get(_ckey(c))), "", "", "", "",
                f"pid {c.pid} {state}{extra}", "-" if c.lag is None else si(c.lag), "")


def title(frame: Frame, sort: str, reverse: bool) -> str:
    kinds = sorted({r.sample.kind for r in frame.rows}) or ["ring"]
    what = ", ".join(f"{sum(1 for r in frame.rows if r.sample.kind == k)} {k}(s)" for k in kinds)
    stamp = time.strftime("%H:%M:%S", time.localtime(frame.time))
    order = SORTS[sort][0] + (" reversed" if reverse else "")
    return f"shmring top  {stamp}  {what}  sorted by {order}"


KEYS_HELP = "keys: n name  i in  o out  f fill  l lag  a age (again: reverse)  q quit"


def plain_text(frame: Frame, sort: str, reverse: bool) -> str:
    lines = [title(frame, sort, reverse)]
    if not frame.rows:
        return lines[0] + "\nno rings"
    rows = [HEADER] + [cells for _, cells in table_rows(frame)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    for cells in rows:
        lines.append("  ".join(c.rjust(w) if i in RIGHT else c.ljust(w)
                               for i, (c, w) in enumerate(zip(cells, widths))).rstrip())
    return "\n".join(lines + errors_text(frame))


def errors_text(frame: Frame) -> list[str]:
    return [f"{r.sample.name}: {r.sample.error}" for r in frame.rows if r.sample.error is not None]


def rich_table(frame: Frame, sort: str, reverse: bool):
    from rich.table import Table

    table = Table(title=title(frame, sort, reverse),
                  caption="\n".join(errors_text(frame) + [KEYS_HELP]),
                  title_justify="left", caption_justify="left", expand=False, box=None, padding=(0, 1))
    for i, h in enumerate(HEADER):
        table.add_column(h, justify="right" if i in RIGHT else "left", no_wrap=True,
                         overflow="ellipsis", style="bold" if h == "NAME" else None)
    styles = {"ring": None, "consumer": "dim", "dead": "red", "error": "red"}
    for style, cells in table_rows(frame):
        table.add_row(*cells, style=styles[style])
    if not frame.rows:
        table.add_row("no rings", *[""] * (len(HEADER) - 1))
    return table


def have_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


# -- running ------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--once", action="store_true",
                   help="print one frame (rates over one interval) and exit")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per refresh (one line each) instead of the view")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between refreshes (default 1)")
    p.add_argument("--count", type=int, default=None, metavar="N",
                   help="stop after N frames (default: until q or Ctrl-C; 1 with --once)")
    p.add_argument("--sort", choices=sorted(SORT_NAMES), default="name",
                   help="initial sort column (keys n/i/o/f/l/a change it while running)")
    p.add_argument("--reverse", action="store_true", help="reverse the sort order")
    p.add_argument("--plain", action="store_true",
                   help="plain text even when rich is installed (it is used on a terminal otherwise)")


class _Keys:
    """Single key presses from a terminal on stdin (cbreak mode, restored on exit)."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self._saved: Any = None

    def __enter__(self) -> _Keys:
        if sys.stdin.isatty():
            import termios
            import tty

            self.fd = sys.stdin.fileno()
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def wait(self, timeout: float) -> str:
        """Keys pressed within ``timeout`` seconds ('' if none); returns at the first press."""
        if self.fd is None:
            time.sleep(timeout)
            return ""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        return os.read(self.fd, 64).decode(errors="replace") if ready else ""


def run(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise SystemExit("shmring top: --interval must be > 0 seconds")
    if args.count is not None and args.count < 1:
        raise SystemExit("shmring top: --count must be at least 1")
    count = 1 if args.once and args.count is None else args.count
    monitor = Monitor()
    sort, reverse = SORT_NAMES[args.sort], args.reverse

    if args.json or args.once:
        # Every frame printed carries rates: one sample first, then one per interval.
        monitor.poll()
        n = 0
        while count is None or n < count:
            time.sleep(args.interval)
            frame = monitor.poll()
            frame.rows = sort_rows(frame.rows, sort, reverse)
            if args.json:
                print(json.dumps(frame.as_json()), flush=True)
            else:
                _print_once(frame, sort, reverse, args.plain)
            n += 1
        return 0
    return _interactive(monitor, args, count, sort, reverse)


def _print_once(frame: Frame, sort: str, reverse: bool, plain: bool) -> None:
    if not plain and sys.stdout.isatty() and have_rich():
        from rich.console import Console

        Console().print(rich_table(frame, sort, reverse))
    else:
        print(plain_text(frame, sort, reverse), flush=True)


def _interactive(monitor: Monitor, args: argparse.Namespace, count: int | None, sort: str,
                 reverse: bool) -> int:
    use_rich = not args.plain and sys.stdout.isatty() and have_rich()
    n = 0
    with _Keys() as keys, _screen(use_rich) as show:
        while True:
            frame = monitor.poll()
            n += 1
            deadline = time.monotonic() + args.interval
            while True:  # show this frame until the next is due; a key press redraws at once
                frame.rows = sort_rows(frame.rows, sort, reverse)
                show(frame, sort, reverse)
                if count is not None and n >= count:
                    return 0
                pressed = keys.wait(deadline - time.monotonic())
                if any(ch in "qQ" for ch in pressed):
                    return 0
                for ch in pressed:
                    if ch in SORTS:  # the same key again reverses
                        sort, reverse = (sort, not reverse) if ch == sort else (ch, False)
                if time.monotonic() >= deadline:
                    break


@contextmanager
def _screen(use_rich: bool) -> Iterator[Callable[[Frame, str, bool], None]]:
    """A function that shows one frame: rich's full-screen live view, or plain text
    printed frame after frame."""
    if not use_rich:
        def show(frame: Frame, sort: str, reverse: bool) -> None:
            print(plain_text(frame, sort, reverse) + "\n" + KEYS_HELP + "\n", flush=True)
        yield show
        return
    from rich.console import Console
    from rich.live import Live

    with Live(console=Console(), screen=True, auto_refresh=False) as live:
        def show_rich(frame: Frame, sort: str, reverse: bool) -> None:
            live.update(rich_table(frame, sort, reverse), refresh=True)
        yield show_rich
