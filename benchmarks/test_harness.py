"""The comparison harness itself: peers are discovered, unavailable ones are reported, a case
moves exactly what it says it moved, and the report leads with the default figures.

These run real spawned processes over real rings for a fraction of a second each; they are
plain tests (skipped under --benchmark-only, which selects only the timed micro-benchmarks)."""

from __future__ import annotations

import multiprocessing as mp

import pytest

import peers
from harness.cases import CASES, CONFIGS, bench_scaling, bench_throughput
from harness.peer import Peer
from harness.processes import Resources
from harness.report import report
from harness.runner import RUNS, median_run

CFG = dict(RUNS["quick"], tp_s=0.1, frame_s=0.1, scale_s=0.1)


@pytest.fixture
def res():
    r = Resources()
    yield r
    r.cleanup()


@pytest.fixture(scope="module")
def ctx():
    return mp.get_context("spawn")


def test_every_peer_module_is_discovered():
    reg = peers.registry()
    assert list(reg)[0] == "shmring"
    assert set(reg) >= {"shmring", "mp.Queue", "mp.Pipe", "faster-fifo", "pyzmq", "iceoryx2"}
    assert len({p.color for p in reg.values()}) == len(reg)
    for case in CASES:  # every case runs for shmring, the reference every gain is taken against
        assert case.applies(reg["shmring"]), case.variant


def test_missing_peer_is_reported_not_raised():
    class Absent(Peer):
        name = "absent"
        requires = "no_such_module_for_shmring_bench"

    why = Absent().available()
    assert why.startswith("not installed (ModuleNotFoundError")


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("what", ["rec", "batch"])
def test_throughput_case_counts_every_record(ctx, res, config, what):
    r = bench_throughput(ctx, res, "shmring", CFG, what, config=config)
    per_call = 1024 if what == "batch" else 1
    chunk = {"rec": 512, "batch": 8}[what] * per_call
    assert r["records"] > 0 and r["records"] % chunk == 0
    assert r["received"] == r["records"]
    assert r["records_per_s"] == pytest.approx(r["records"] / r["seconds"])


def test_producer_alone_needs_no_consumer(ctx, res):
    r = bench_throughput(ctx, res, "shmring", CFG, "rec", config="default", alone=True)
    assert r["received"] is None and r["records"] > 0


@pytest.mark.parametrize("mode", ["queue", "broadcast"])
def test_scaling_case_is_lossless(ctx, res, mode):
    r = bench_scaling(ctx, res, "shmring", CFG, mode, 2, False)
    assert r["lossless"], r
    assert r["records_delivered"] == r["records_pushed"] * (2 if mode == "broadcast" else 1)


def test_report_leads_with_default_figures():
    def row(variant, config, vals):
        runs = [{"impl": "shmring", "variant": variant, "config": config, "status": "ok", "records_per_s": v,
                 "GB_per_s": v * 64 / 1e9, "records": 1, "received": 1} for v in vals]
        return median_run(runs, "records_per_s")

    results = {"latency": [], "frames": [], "scaling": [], "cbench": None, "throughput": [
        row("rec", "default", [2.0e6, 3.0e6, 2.5e6]), row("rec", "tuned", [5e6, 6e6, 7e6]),
        row("rec-alone", "default", [4.0e6, 4.0e6, 4.0e6]), row("rec-alone", "tuned", [8e6, 8e6, 8e6]),
        row("batch", "default", [100e6, 200e6, 180e6]), row("batch", "tuned", [150e6, 160e6, 170e6])]}
    machine = {"cpu": "cpu", "cores": 2, "cpus_available": 2, "kernel": "k", "python": "3", "versions": {"numpy": "2"}}
    text, targets = report(results, machine, "test")
    lines = text.splitlines()
    head = next(i for i, s in enumerate(lines) if s.startswith("Default configuration"))
    table = next(i for i, s in enumerate(lines) if s.startswith("(b)"))
    assert head < table
    assert "producer alone = 0.62" in text  # median 2.5 M / 4.0 M
    assert "slowest run / median = 0.56" in text  # 100 M / 180 M
    verdicts = {t["target"]: t["verdict"] for t in targets}
    assert verdicts["default, 1/call: delivered >= 0.85x the producer alone"] == "MISS"
    assert verdicts["default, 1024/call: slowest run >= 0.7x the median"] == "MISS"
    assert verdicts["default, 1024/call: >= 175 M records/s (median of 3)"] == "MET"
