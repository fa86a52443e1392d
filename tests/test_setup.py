"""The set-up scripts: bootstrap does nothing when nothing changed, and the SPIN
installer says in one line why it cannot install spin."""

from __future__ import annotations

import glob
import os
import shutil
import sys

import pytest
from _procs import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv")


@pytest.mark.skipif(os.path.realpath(sys.prefix) != os.path.realpath(VENV),
                    reason="runs only from the tree's own .venv (made by scripts/bootstrap.sh)")
def test_bootstrap_skips_everything_when_nothing_changed():
    """Run from ./test.sh, the tree was just bootstrapped: a second run must not
    reinstall (the editable install's metadata and the module are left untouched)."""
    meta = glob.glob(os.path.join(VENV, "lib", "python*", "site-packages", "shmring-*.dist-info"))
    mods = glob.glob(os.path.join(ROOT, "src", "shmring", "_ring.cpython-*.so"))
    assert meta and mods
    before = {p: os.stat(p).st_mtime_ns for p in meta + mods}
    r = run(["bash", os.path.join(ROOT, "scripts", "bootstrap.sh")], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    assert {p: os.stat(p).st_mtime_ns for p in before} == before


def test_spin_installer_says_why_not_in_one_line(tmp_path):
    """No spin and no apt-get on PATH: one line saying so, and success (the suite runs on)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "cat"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    r = run([str(bin_dir / "bash"), os.path.join(ROOT, "scripts", "ensure-spin.sh")],
                       env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.splitlines() == [
        "note: spin is not installed (no apt-get on this system); the SPIN model checks will be skipped"]
