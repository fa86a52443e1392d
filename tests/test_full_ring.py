"""A producer that finds the ring full spins until a chunk of it is free (an eighth of the
capacity, at most 64 slots: csrc/shmr_internal.h, shmr_wait_chunk) rather than taking
each slot as the consumer frees it, and looks only once a microsecond while it waits
(csrc/eventcount.c, shmr_ec_wait_more): each look reads the line the consumer is
writing. It waits for the chunk for at most 20 us, then takes what is free; a push with
a timeout still raises Full only if no slot is free at its deadline. Checked with real
processes on each handle's counted waits and on what arrived, never on timing."""

from __future__ import annotations

import multiprocessing

import pytest

import shmring
from _cpus import pinned, two_cpus
from _records import REC, make_records
from _workers import join_all, one_then_drain_consumer, pinned_pop_consumer

CAP = 64
CHUNK = CAP // 8


@pytest.mark.parametrize("mode", ["queue", "broadcast"])
def test_full_ring_producer_waits_for_a_chunk(rings, ring_name, procs, mode):
    # The consumer spends ~1 us per record, a bare push loop much less, so the ring stays
    # full. Taking each slot as it frees, the producer waits about once per record;
    # waiting for a chunk (8 records, ~8 us here), once per CHUNK records, plus one for
    # each time the consumer was held up for 20 us (preempted) and a wait took less. The
    # two sides run on two CPUs, so the waits spin.
    cpus = two_cpus("a spin on a CPU shared with the consumer cannot end")
    n = 4096
    ring = rings.create(ring_name, REC, CAP, mode=mode)
    ctx = multiprocessing.get_context("fork")
    ready, go, results = ctx.Event(), ctx.Event(), ctx.Queue()
    c = procs(ctx, pinned_pop_consumer, ring, cpus[1], CAP + n, 1e-6, ready, go, results)
    assert ready.wait(30)
    with pinned(cpus[0]):
        prod = ring.producer(spin=0.1)
        prod.push_many(make_records(0, CAP), timeout=0)  # full
        recs = list(make_records(CAP, n))
        push = prod.push
        go.set()
        for r in recs:
            push(r)
    got, out_of_order, bad = results.get(timeout=60)
    join_all([c])
    assert (got, out_of_order, bad) == (CAP + n, 0, 0)
    st = prod._wait_stats()
    # whether each wait ended in its spin depends on how often the consumer was
    # preempted (the machine's load): the count of waits is what the chunk sets
    assert st["waits"] <= n // 4, st
    prod.close()


@pytest.mark.parametrize("spin", [1e-3, 5.0])
@pytest.mark.parametrize("mode", ["queue", "broadcast"])
def test_one_free_slot_is_taken_without_waiting_for_a_chunk(rings, ring_name, procs, mode, spin):
    # The consumer frees exactly one slot, then stops. A push waits for a chunk only
    # briefly (20 us), whether its spin budget is shorter than its timeout or longer,
    # and then takes the one slot: never Full while a slot is free at the deadline.
    ring = rings.create(ring_name, REC, CAP, mode=mode)
    ctx = multiprocessing.get_context("fork")
    ready, go, popped, drain, results = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    c = procs(ctx, one_then_drain_consumer, ring, ready, go, popped, drain, results)
    assert ready.wait(30)
    prod = ring.producer(spin=spin)
    prod.push_many(make_records(0, CAP), timeout=0)
    go.set()
    assert popped.wait(30)
    extra = make_records(CAP, 2)
    prod.push(extra[0], timeout=2.0)
    with pytest.raises(shmring.Full):
        prod.push(extra[1], timeout=0.05)  # nothing free now: the timeout still ends the wait
    drain.set()
    prod.close()
    got, out_of_order, bad = results.get(timeout=60)
    join_all([c])
    assert (got, out_of_order, bad) == (CAP + 1, 0, 0)
