"""When a blocked call spins before it sleeps (csrc/spin_policy.h): three spins in a
row that ran out make the next waits sleep at once, one wait in eight spins again,
and a spin that succeeds restores spinning. Checked on each handle's counted waits, never on
timing: real futex waits, real pinned processes."""

from __future__ import annotations

import os
import threading
import time

import pytest

import shmring
from _records import REC, make_records
from _workers import join_all, pinned_batch_consumer, pinned_batch_producer

FAILS = 3  # SHMR_SPIN_FAILS
PROBE = 8  # SHMR_SPIN_PROBE


def _empty_pops(cons, n):
    for _ in range(n):
        with pytest.raises(shmring.Empty):
            cons.pop(timeout=0.01)


@pytest.mark.parametrize("kind", ["records", "messages"])
def test_spins_that_run_out_make_the_next_waits_sleep_at_once(rings, ring_name, kind):
    ring = (rings.create(ring_name, REC, 64) if kind == "records" else rings.create(ring_name, nbytes=4096))
    cons = ring.consumer(spin=20e-6)
    _empty_pops(cons, FAILS - 1)
    # Nothing is ever pushed: each pop is one wait that its spin cannot end. Fewer
    # than FAILS failures in a row change nothing.
    assert cons._wait_stats() == {"waits": FAILS - 1, "spun": FAILS - 1, "spin_won": 0, "slept_at_once": 0,
                                  "switches": 0}
    _empty_pops(cons, 1 + 2 * PROBE)
    # waits 1..FAILS spin; then every PROBE-th spins again (and fails), the rest sleep at once
    assert cons._wait_stats() == {"waits": FAILS + 2 * PROBE, "spun": FAILS + 2, "spin_won": 0,
                                  "slept_at_once": 2 * PROBE - 2, "switches": 1}


def test_spin_that_succeeds_restores_spinning(rings, ring_name):
    ring = rings.create(ring_name, REC, 64)
    # a budget long enough that the delayed push always lands inside the spin
    cons = ring.consumer(spin=5.0)
    prod = ring.producer()
    # FAILS spins run out (each ends at the pop's timeout); the next PROBE - 1 sleep at once
    _empty_pops(cons, FAILS + PROBE - 1)

    def push_later(seq):
        time.sleep(0.02)
        prod.push(make_records(seq, 1)[0])

    for seq in (0, 1):
        t = threading.Thread(target=push_later, args=(seq,))
        t.start()
        rec = cons.pop(timeout=30)  # the first is the probe; the second spins because it won
        t.join(30)
        assert int(rec["seq"]) == seq
    assert cons._wait_stats() == {"waits": FAILS + PROBE + 1, "spun": FAILS + 2, "spin_won": 2,
                                  "slept_at_once": PROBE - 1, "switches": 2}


def test_spin_zero_never_spins(rings, ring_name):
    ring = rings.create(ring_name, REC, 64)
    cons = ring.consumer(spin=0)
    _empty_pops(cons, 3)
    assert cons._wait_stats() == {"waits": 3, "spun": 0, "spin_won": 0, "slept_at_once": 0, "switches": 0}


def test_sides_sharing_a_cpu_sleep_instead_of_spinning(rings, ring_name, mp_ctx, procs):
    """Producer and consumer pinned to one CPU: a spin can never see the other side
    move, so nearly every wait must go straight to sleep (before the policy, every
    wait spun its budget and then yielded, and the two sides took turns). Every
    record arrives once, in order and intact."""
    cpu = min(os.sched_getaffinity(0))
    n_batches, batch = 200, 1024
    ring = rings.create(ring_name, REC, 4 * batch)
    results, ready = mp_ctx.Queue(), mp_ctx.Event()
    c = procs(mp_ctx, pinned_batch_consumer, ring, cpu, batch, ready, results)
    assert ready.wait(60)
    p = procs(mp_ctx, pinned_batch_producer, ring, cpu, n_batches, batch, results)
    out = {}
    for _ in range(2):
        r = results.get(timeout=120)
        out[r[0]] = r
    join_all([p, c])
    assert p.exitcode == 0 and c.exitcode == 0
    _, cst, got, out_of_order, bad = out["c"]
    assert (got, out_of_order, bad) == (n_batches * batch, 0, 0)
    for side, st in (("producer", out["p"][1]), ("consumer", cst)):
        # (a call's later waits, after its first came to nothing, never spin: counted in waits only)
        assert st["waits"] >= st["spun"] + st["slept_at_once"], (side, st)
        if st["waits"] >= 4 * PROBE:
            # one spin in PROBE waits while they fail, plus, each time a spin won (the peer
            # ran meanwhile, after a preemption) and at the start, the spins until FAILS failed
            assert st["spun"] <= st["waits"] // PROBE + (FAILS + 1) * (st["spin_won"] + 1), (side, st)
    # the ring holds 4 of 200 batches: at least one side waited many times
    assert max(out["p"][1]["waits"], cst["waits"]) >= 4 * PROBE, out
