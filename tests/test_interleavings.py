"""Forced-interleaving regression tests of the C core (verify/interleavings/).

Each scenario is a C program linked with the C core (csrc/*.c) built with
-DSHMR_TEST_HOOKS; it parks threads or kills processes at exact points of the
protocol and asserts the correct outcome. verify/run_interleavings.sh builds and
runs them; here every scenario is its own test so failures are reported by name.
Needs a C compiler (the project requires one), so a missing compiler fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _procs import run

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "verify" / "run_interleavings.sh"
SCENARIOS = sorted(p.stem for p in (ROOT / "verify" / "interleavings").glob("*.c"))


def test_scenarios_present():
    assert SCRIPT.is_file(), f"missing {SCRIPT}"
    assert SCENARIOS, "no scenarios in verify/interleavings/"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_interleaving(scenario: str) -> None:
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        pytest.fail(f"C compiler {cc!r} not found: the interleaving tests need one (set CC)")
    if shutil.which("bash") is None:
        pytest.fail("bash not found: needed to run verify/run_interleavings.sh")
    proc = run(
        ["bash", str(SCRIPT), scenario],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{scenario} failed (exit {proc.returncode}):\n{proc.stdout}"
    assert f"PASS {scenario}:" in proc.stdout, f"{scenario}: no PASS line:\n{proc.stdout}"
