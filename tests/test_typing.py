"""The type stubs are checked: mypy --strict over a typed use of the public API
(tests/typing/usage.py), and stubtest of src/shmring/_ring.pyi against the built
extension (every name, signature and class in the stub exists at runtime and
the other way round)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TYPING = HERE / "typing"


@pytest.fixture(autouse=True, scope="module")
def _mypy_installed():
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.fail("mypy is a test dependency (scripts/bootstrap.sh, or pip install -e .[test])")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=HERE.parent, capture_output=True,
                          text=True, timeout=300)


def test_usage_type_checks_strictly():
    proc = _run("mypy", "--strict", str(TYPING / "usage.py"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout, proc.stdout


def test_stubs_match_the_compiled_module():
    proc = _run("mypy.stubtest", "shmring._ring", "--concise",
                "--allowlist", str(TYPING / "stubtest-allowlist.txt"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
