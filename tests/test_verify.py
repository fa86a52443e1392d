"""Protocol verification: SPIN model checking (verify/run_spin.sh) and the
ThreadSanitizer stress test of the C core (verify/run_tsan.sh).

Each script runs once per session (SPIN configurations in parallel); every
configuration / stress mode is its own test case, judged from the script's
RESULT lines. The SPIN tests are skipped only when `spin` is not installed;
the TSan tests need gcc (with libtsan). See verify/README.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from _procs import run

# model checking and the sanitizer stress run long by design
pytestmark = pytest.mark.timeout(1800)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERIFY = os.path.join(ROOT, "verify")
RUN_SPIN = os.path.join(VERIFY, "run_spin.sh")
RUN_TSAN = os.path.join(VERIFY, "run_tsan.sh")
TSAN_MODES = ["queue", "block", "overwrite", "joinrace", "solo", "mpq"]

SPIN_MISSING = shutil.which("spin") is None
SPIN_SKIP_REASON = "spin is not installed (apt-get install spin): SPIN model checking of verify/ring.pml skipped"


def _spin_configs() -> list[str]:
    out = run(["bash", RUN_SPIN, "--list"], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


SPIN_CONFIGS = _spin_configs()


def _results(output: str) -> dict[str, str]:
    """name -> RESULT line"""
    res = {}
    for line in output.splitlines():
        m = re.match(r"RESULT (\S+) (\S+)", line)
        if m:
            res[m.group(1)] = line
    return res


def _detail(output: str, name: str, names: list[str]) -> str:
    """The script's lines about one configuration / mode (its row, RESULT line
    and any counterexample or report printed after it)."""
    lines = output.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith(f"RESULT {name} ")), None)
    if start is None:
        return output[-4000:]
    end = len(lines)
    others = [n for n in names if n != name]
    for j in range(start + 1, len(lines)):
        l = lines[j]
        if l.startswith("RESULT ") or l.startswith("total ") or any(re.match(rf"(  )?{re.escape(n)}\s", l) for n in others):
            end = j
            break
    head = [l for l in lines[:start] if re.match(rf"(  )?{re.escape(name)}\s", l)]
    return "\n".join(head + lines[start:end])


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    return run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def spin_run():
    if SPIN_MISSING:
        pytest.skip(SPIN_SKIP_REASON)
    proc = _run(["bash", RUN_SPIN], timeout=1800)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def tsan_run():
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        pytest.fail("gcc is needed to build verify/stress.c with -fsanitize=thread")
    proc = _run(["bash", RUN_TSAN], timeout=1800)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("config", SPIN_CONFIGS)
def test_spin(spin_run, config):
    """One SPIN configuration: a check must end with errors: 0 (complete
    search), a seeded-bug mutant must be caught."""
    results = _results(spin_run)
    assert config in results, f"run_spin.sh printed no result for {config}:\n{spin_run[-4000:]}"
    line = results[config]
    assert line.split()[2] == "ok", _detail(spin_run, config, SPIN_CONFIGS)
    if "mutant_" not in config:  # mutant_*, msg_mutant_*: a seeded bug that must be caught
        assert "errors=0" in line, line


@pytest.mark.parametrize("mode", TSAN_MODES)
def test_tsan_stress(tsan_run, mode):
    """verify/stress.c under ThreadSanitizer: protocol checks pass and TSan
    reports nothing (overwrite mode: only the documented seqlock copy is
    suppressed, see verify/tsan.supp)."""
    results = _results(tsan_run)
    assert mode in results, f"run_tsan.sh printed no result for {mode}:\n{tsan_run[-4000:]}"
    assert results[mode].split()[2] == "ok", _detail(tsan_run, mode, TSAN_MODES)
