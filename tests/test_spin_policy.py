"""When a blocked call spins before it sleeps (csrc/spin_policy.h): after a spin that
ran out, the next wait looks where the peer last ran (at most once a millisecond); on
our CPU the waits sleep at once, one in eight spinning (and looking) again, and a spin
that succeeds restores spinning; with the peer on another CPU a failed spin changes
nothing. Checked on each handle's counted waits, never on timing: real futex waits,
real processes pinned to real CPUs."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest

import shmring
from _cpus import pinned, two_cpus
from _records import REC, make_records
from _workers import join_all, pinned_batch_consumer, pinned_batch_producer, pinned_idle_producer

PROBE = 8  # SHMR_SPIN_PROBE


def _empty_pops(cons, n):
    for _ in range(n):
        with pytest.raises(shmring.Empty):
            cons.pop(timeout=0.01)


def _stats(waits, spun, won, looks, shared, at_once, switches):
    return {"waits": waits, "spun": spun, "spin_won": won, "looks": looks, "shared_cpu": shared,
            "slept_at_once": at_once, "switches": switches, "dense": 0, "dense_won": 0}


@pytest.mark.parametrize("kind", ["records", "messages"])
def test_spin_that_runs_out_beside_the_peer_makes_the_next_waits_sleep_at_once(rings, ring_name, kind):
    ring = (rings.create(ring_name, REC, 64) if kind == "records" else rings.create(ring_name, nbytes=4096))
    # The producer is opened in this process (and kept open: closing it ends the
    # stream): where it last ran is where we run.
    prod = ring.producer()
    cons = ring.consumer(spin=20e-6)
    # Nothing is ever pushed: each pop is one wait that its spin cannot end.
    _empty_pops(cons, 1 + 2 * PROBE)
    # waits 1, 9 and 17 spin (the first, then every eighth while sleeping); the rest sleep at
    # once. The waits after a failed spin (2 and 10) look first and find the producer here
    # (the pops are 10 ms apart: no look is skipped for coming too soon after the last).
    assert cons._wait_stats() == _stats(2 * PROBE + 1, 3, 0, 2, 2, 2 * PROBE - 2, 1)
    prod.close()


def test_spin_that_runs_out_with_the_peer_elsewhere_changes_nothing(rings, ring_name, procs):
    cpus = two_cpus("the two sides on different ones")
    ring = rings.create(ring_name, REC, 64)
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    p = procs(ctx, pinned_idle_producer, ring, cpus[1], ready, done)
    try:
        assert ready.wait(60)
        with pinned(cpus[0]):
            cons = ring.consumer(spin=20e-6)
            _empty_pops(cons, PROBE + 1)
            # every wait after the first looks (the pops are 10 ms apart) and finds it elsewhere
            assert cons._wait_stats() == _stats(PROBE + 1, PROBE + 1, 0, PROBE, 0, 0, 0)
    finally:
        done.set()
    join_all([p])
    assert p.exitcode == 0


def test_spin_that_succeeds_restores_spinning(rings, ring_name):
    ring = rings.create(ring_name, REC, 64)
    prod = ring.producer()
    # a budget long enough that the delayed push always lands inside the spin
    cons = ring.consumer(spin=5.0)
    _empty_pops(cons, PROBE)  # wait 1 spins in vain beside the producer; 2..8 sleep at once

    def push_later(seq):
        time.sleep(0.02)
        prod.push(make_records(seq, 1)[0])

    for seq in (0, 1):
        t = threading.Thread(target=push_later, args=(seq,))
        t.start()
        rec = cons.pop(timeout=30)  # the first is the probe; the second spins because it won
        t.join(30)
        assert int(rec["seq"]) == seq
    assert cons._wait_stats() == _stats(PROBE + 2, 3, 2, 1, 1, PROBE - 1, 2)


def test_looks_are_at_most_one_a_millisecond(rings, ring_name):
    ring = rings.create(ring_name, REC, 64)  # no producer: nobody shares our CPU
    cons = ring.consumer(spin=20e-6)
    t0 = time.monotonic()
    for _ in range(40):
        with pytest.raises(shmring.Empty):
            cons.pop(timeout=0.0002)  # each spin runs out: every next wait wants a look
    elapsed_ms = (time.monotonic() - t0) * 1e3
    st = cons._wait_stats()
    assert st["waits"] == st["spun"] == 40 and st["shared_cpu"] == 0, st
    assert 1 <= st["looks"] <= elapsed_ms + 1, (st, elapsed_ms)


def test_spin_zero_never_spins(rings, ring_name):
    ring = rings.create(ring_name, REC, 64)
    prod = ring.producer()
    cons = ring.consumer(spin=0)
    _empty_pops(cons, 3)
    assert cons._wait_stats() == _stats(3, 0, 0, 0, 0, 0, 0)
    prod.close()


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
            assert st["shared_cpu"] >= 1, (side, st)
            # one spin in PROBE waits while they fail, plus, each time a spin won (the
            # peer ran meanwhile, after a preemption), the one that fails next
            assert st["spun"] <= st["waits"] // PROBE + 2 * st["spin_won"] + 2, (side, st)
    # the ring holds 4 of 200 batches: at least one side waited many times
    assert max(out["p"][1]["waits"], cst["waits"]) >= 4 * PROBE, out
