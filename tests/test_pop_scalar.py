"""pop() and try_pop() hand a record out as a numpy void scalar, and reuse the one they
returned last once the caller has let go of it (src/shmring/_ring.pyx, SHMR_REUSE_SCALARS):
a record the caller still holds is never written again. Checked on the records' contents
(sequence numbers and checksums) and, for the reuse itself, on object identity."""

from __future__ import annotations

import numpy as np

from _records import REC, as_records, make_records, n_bad


def test_records_the_caller_keeps_are_never_overwritten(rings, ring_name):
    ring = rings.create(ring_name, REC, 64)
    prod, cons = ring.producer(), ring.consumer()
    n = 1000
    kept = []
    for start in range(0, n, 50):
        prod.push_many(make_records(start, 50))
        for i in range(start, start + 50):
            rec = cons.pop(timeout=0) if i % 3 else cons.try_pop()
            assert int(rec["seq"]) == i
            if i % 2 == 0:
                kept.append(rec)  # the odd ones are dropped, and their scalar reused
            del rec
    a = as_records(np.array(kept, dtype=REC))
    assert a["seq"].tolist() == list(range(0, n, 2))
    assert n_bad(a) == 0
    assert len({id(r) for r in kept}) == len(kept)


def test_a_dropped_record_scalar_takes_the_next_record(rings, ring_name):
    ring = rings.create(ring_name, REC, 64)
    prod, cons = ring.producer(), ring.consumer()
    prod.push_many(make_records(0, 4))
    first = cons.pop(timeout=0)
    ident = id(first)
    del first
    second = cons.pop(timeout=0)
    assert id(second) == ident and int(second["seq"]) == 1 and n_bad(second) == 0
    view = memoryview(second)  # a buffer export holds the scalar too
    third = cons.pop(timeout=0)
    assert third is not second and int(third["seq"]) == 2 and int(second["seq"]) == 1
    view.release()
    second["seq"] = 99  # a caller's own change stays its own
    assert int(third["seq"]) == 2
    del third
    assert int(cons.try_pop()["seq"]) == 3
    assert cons.try_pop() is None


def test_a_loop_that_keeps_the_last_record_still_reuses(rings, ring_name):
    # `for rec in cons` (or `rec = cons.pop()`) still holds the previous record when it asks
    # for the next: the consumer keeps two scalars, and reuses the one let go of.
    ring = rings.create(ring_name, REC, 64)
    prod = ring.producer()
    cons = ring.consumer()
    prod.push_many(make_records(0, 40))
    prod.close()
    seen, ids = [], set()
    for rec in cons:
        seen.append(int(rec["seq"]))
        assert n_bad(rec) == 0
        ids.add(id(rec))
    assert seen == list(range(40))
    assert len(ids) <= 3
