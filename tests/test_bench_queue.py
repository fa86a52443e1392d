"""benchmarks/bench_queue.py in quick mode: it completes with every queue that is
installed, each row carries a figure that passed the delivery check, and the ratios
are printed. No timing is asserted: the figures are the benchmark's business."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import faster_fifo  # noqa: F401  the peer must be there: scripts/bootstrap.sh installs it

import shmring

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = ["1 -> 1", "10 -> 1", "20 -> 20", "4 -> 4"]
HAS_QUEUE = hasattr(shmring, "Queue")


def test_bench_queue_quick_completes_and_prints_ratios(popen, tmp_path):
    out = tmp_path / "q.json"
    p = popen([sys.executable, os.path.join(ROOT, "benchmarks", "bench_queue.py"), "--quick",
               "--seconds", "0.15", "--silent", "--markdown", "--json", str(out)],
              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = p.communicate(timeout=240)
    assert p.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr

    # every row of both tables, with a figure for the peers (never FAILED or skipped)
    for title in ("small tuple (int, float, str)", "dict holding a 64 KiB array"):
        table = stdout.split(title, 1)[1].split("\n\n", 1)[0].splitlines()
        assert "shmring/mp.Queue" in table[1] and "shmring/faster-fifo" in table[1]
        for scen in SCENARIOS:
            row = next(ln for ln in table if ln.strip().startswith(scen + " "))
            cells = re.split(r"\s{2,}", row.strip())  # scenario, one rate per queue, 3 ratios
            assert len(cells) == 7, row
            rates, ratios = cells[1:4], cells[4:]
            for rate in rates[0 if HAS_QUEUE else 1:]:
                assert re.fullmatch(r"\d+\.\d+( [kM])?\*?", rate), row
            assert HAS_QUEUE or rates[0] == "skipped"
            assert ratios[2].startswith("x")  # faster-fifo / mp.Queue, measured in this run
            assert all(r.startswith("x") for r in ratios) if HAS_QUEUE else ratios[:2] == ["n/a", "n/a"]

    if HAS_QUEUE:
        verdicts = re.findall(r"^\s+\[(MET |MISS)\] >= (10x mp\.Queue|3x faster-fifo)", stdout, re.M)
        assert len(verdicts) == 2 * 2 * len(SCENARIOS)
    else:
        assert "shmring.Queue: skipped: this shmring has no Queue" in stdout
        assert stdout.count("not measured: this shmring has no Queue") == 2

    # the README's table, ready to paste: every row, every peer's rate
    md = [ln for ln in stdout.splitlines() if ln.startswith("| small tuple") or ln.startswith("| 64 KiB")]
    assert len(md) == 2 * len(SCENARIOS)
    for ln in md:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert len(cells) == 6 and all(re.fullmatch(r"\d+\.\d+( [kM])?", c) for c in cells[2:4]), ln
        assert (cells[1] != "-") == HAS_QUEUE and (cells[4] != "-") == HAS_QUEUE, ln

    # the saved figures agree with themselves: what the producers sent is what the
    # consumers received, per run, and the rate is that count over the measured time
    saved = json.loads(out.read_text())
    rows = [r for r in saved["results"]["rows"] if r["status"] == "ok"]
    assert {r["queue"] for r in rows} == ({"shmring.Queue"} if HAS_QUEUE else set()) | {"mp.Queue", "faster-fifo"}
    assert len(rows) == (3 if HAS_QUEUE else 2) * 2 * len(SCENARIOS)
    for r in rows:
        assert r["items"] > 0 and sum(r["per_consumer"]) == r["items"]
        assert len(r["per_consumer"]) == int(r["scenario"].split("->")[1])
        assert abs(r["items_per_s"] * r["seconds"] - r["items"]) < 1e-6 * r["items"]

    # and print the same report again
    again = popen([sys.executable, os.path.join(ROOT, "benchmarks", "bench_queue.py"), "--from-json", str(out)],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    text, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert text.strip() == stdout.split("\n\n| items/s")[0].strip()
