"""The base class of a peer: everything one implementation knows lives in its module under
`peers/`, as a subclass of `Peer` bound to the module-level name `PEER`."""

from __future__ import annotations

from .records import STOP64, ZEROS64, Endpoint


class Peer:
    name = "?"  # as printed in the report and accepted by --peers
    order = 50  # position in the tables (shmring first)
    color = "#333333"  # plot colour
    requires: str | None = None  # module that must import for the peer to run
    dist: str | None = None  # distribution whose version the report names

    # What the peer can do beyond one record / 1024 records / a copied frame. Cases name the
    # features they need (see harness/cases.py):
    #   "spin"       a busy-polling receive (latency "spin")
    #   "own_dtype"  attaching with or without the sender's dtype object (shmring's "-nodt" rows)
    #   "zero_copy"  frames written and read in place
    #   "spin_budget" a receiver that can be told how long to spin before it sleeps
    #   "alone"      a producer that can run with no consumer attached without blocking
    features: frozenset = frozenset()
    # modes the 1-record scaling case runs for this peer ("queue": each record to one
    # consumer, "broadcast": every record to every consumer)
    scaling_modes: tuple = ()
    scaling_batch = False  # also run the scaling case with 1024 records per call
    # (section, variant) -> note printed next to the row; a case's own note is the fallback
    notes: dict = {}

    # ---- availability --------------------------------------------------------------------

    def available(self) -> str | None:
        """None if usable, else why not (printed as "skipped: ...")."""
        if self.requires:
            try:
                __import__(self.requires)
            except Exception as exc:
                return f"not installed ({type(exc).__name__}: {exc})"
        return None

    def version(self) -> str | None:
        try:
            from importlib.metadata import version

            return version(self.dist or self.name)
        except Exception:
            return None

    def note(self, section: str, variant: str) -> str | None:
        return self.notes.get((section, variant))

    # ---- channels and endpoints ------------------------------------------------------------

    def channel(self, res, ctx, kind: str, *, mode: str = "queue", capacity: int | None = None,
                consumers: int = 1, wait: str | None = None, own_dtype: bool = True) -> dict:
        """Made in the parent, handed to the children (so it must pickle). kind: 'rec' (single
        records), 'batch' (1024-record messages), 'frame' (6 MB). `res` (harness.processes.
        Resources) owns names and files to clean up."""
        raise NotImplementedError

    def tx(self, chan: dict, spin: float) -> Endpoint:
        raise NotImplementedError

    def rx(self, chan: dict, spin: float) -> Endpoint:
        raise NotImplementedError

    def item(self):
        """The single record as this peer's users would send it."""
        return ZEROS64

    # ---- stream ends (latency echo, scaling consumers) ---------------------------------------

    def start_line(self, eps) -> None:
        """Runs in every process of a case between the two start barriers, after all endpoints
        are open: a peer that needs its connections proven first does it here."""

    def stop_echo(self, tx: Endpoint) -> None:
        tx.send1(STOP64)

    def echo(self, tx: Endpoint, rx: Endpoint) -> None:
        """Send back every record until the driver's stop."""
        send, recv = tx.send1, rx.recv1
        while True:
            m = recv()
            if m == STOP64:
                break
            send(m)

    def consume(self, rx: Endpoint, batch: bool, done) -> int:
        """Scaling consumer: receive until the end of the stream, return the records received.
        `done` holds the producer's record count once it has sent everything. Default: end of
        stream is None or an empty message (what Endpoint.end sends)."""
        from .records import REC

        n = 0
        fn = rx.recv1
        while True:
            x = fn()
            if x is None or (type(x) is bytes and not x):
                break
            n += len(x) // REC.itemsize if batch else 1
        return n
