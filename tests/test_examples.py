"""Every program in examples/ runs to completion and passes its own checks.

An example is a script that checks what it received (counts, order, checksums),
prints a last line starting with "ok:" and exits 0, or exits non-zero on a mismatch.
New files in examples/ are picked up here automatically.
"""

from __future__ import annotations

import glob
import os
import sys

import pytest
from _procs import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py")))
TIMEOUT = 120  # seconds each; they take a few on an idle machine


def test_there_are_examples():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p) for p in EXAMPLES])
def test_example_runs_and_checks_itself(path, tmp_path):
    r = run([sys.executable, path], cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, f"{os.path.basename(path)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    lines = r.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("ok:"), r.stdout[-3000:]
    assert "Traceback" not in r.stderr, r.stderr
