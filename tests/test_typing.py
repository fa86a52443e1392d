"""The type stubs are checked: mypy --strict over a typed use of the public API
(tests/typing/usage.py), and stubtest of src/shmring/_ring.pyi against the built
extension (every name, signature and class in the stub exists at runtime and
the other way round)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _procs import run

HERE = Path(__file__).resolve().parent
TYPING = HERE / "typing"


@pytest.fixture(autouse=True, scope="module")
def _mypy_installed():
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.fail("mypy is a test dependency (scripts/bootstrap.sh, or pip install -e .[test])")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", *args], cwd=HERE.parent, capture_output=True,
                          text=True, timeout=300)


def test_usage_type_checks_strictly():
    proc = _run("mypy", "--strict", str(TYPING / "usage.py"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout, proc.stdout


def test_stubs_match_the_compiled_module():
    proc = _run("mypy.stubtest", "shmring._ring", "--concise",
                "--allowlist", str(TYPING / "stubtest-allowlist.txt"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", ["queue", "broadcast"])
def test_stats_have_the_typed_shape(mode, ring_name, rings):
    """stats() has exactly the keys of RingStats, each consumer exactly those of
    ConsumerStats, and the C struct's fields (Mapping.info) are all among them."""
    import numpy as np

    import shmring
    from shmring import ConsumerStats, RingStats

    ring = rings.create(ring_name, np.uint64, 8, mode=mode)
    cons = ring.consumer(start="oldest")
    prod = ring.producer()
    prod.push_many(np.arange(3, dtype=np.uint64))
    assert int(cons.pop(timeout=1)) == 0
    st = ring.stats()
    assert set(st) == set(RingStats.__annotations__)
    assert set(ring._mapping().info()) <= set(st)
    assert (st["pushed"], st["popped"], st["available"], st["n_consumers"]) == (3, 1, 2, 1)
    want = set(ConsumerStats.__annotations__) - ({"lag"} if mode == "queue" else set())
    assert [set(c) for c in st["consumers"]] == [want]
    assert st["waiters"] == {"consumers": 0, "producer": 0}
    assert isinstance(st["producer_alive"], bool) and st["producer_alive"]
    assert st["mode"] == mode and st["close_reason"] is None and not st["closed"]
    prod.close()
    st = ring.stats()
    assert st["closed"] and st["close_reason"] == "closed by producer"
    assert shmring.RingStats is RingStats
