"""The supported Python versions: the core of the test suite on each CPython 3.9-3.13.

    .venv/bin/python -m nox              # every version found on this machine
    .venv/bin/python -m nox -s core-3.9  # one version

Each session builds and installs the package (a regular install, not editable) into
its own environment and runs the *core subset* (CORE below) against it: the record
ring in both modes, zero copy, every bad input, crash recovery, message rings and
their codec, the newcomer checks, event loops, the command line and the examples (less
the demo's chart, DESELECT). Left to the main interpreter's full run (`./test.sh`): the Hypothesis
state machines and the attach fuzzer (long, and they exercise the same binding), and
the C-only checks (SPIN, ThreadSanitizer, forced interleavings), which do not depend
on the Python version.

Interpreters are found on PATH as pythonX.Y, and also under pyenv's versions
directory when there is one (used directly, whatever version pyenv has selected).
A version that is not installed is reported by nox as *skipped*, never as passed.
"""

from __future__ import annotations

import glob
import os
import re

import nox

PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]  # pyproject's classifiers say the same
CORE = [
    "tests/test_queue.py",
    "tests/test_broadcast.py",
    "tests/test_zerocopy.py",
    "tests/test_errors.py",
    "tests/test_crash.py",
    "tests/test_cli.py",
    "tests/test_top.py",
    "tests/test_examples.py",
    "tests/test_codec.py",
    "tests/test_messages.py",
    "tests/test_usability.py",
    "tests/test_aio.py",
    "tests/test_mpqueue.py",
]
BUILD_DEPS = ["setuptools>=77", "wheel", "Cython>=3.1", "numpy>=2"]
TEST_DEPS = ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6", "pexpect>=4.8", "pyte>=0.8", "rich>=13", "uvloop>=0.19", "pyzmq>=26.4"]
# matplotlib (a large install) only draws the demo's chart, which does not depend on
# the Python version: that one test runs with the full suite only.
DESELECT = ["tests/test_cli.py::test_demo_chart"]

nox.options.sessions = ["core"]
nox.options.error_on_missing_interpreters = False  # absent: "skipped" (nox defaults to an error on CI)
nox.options.reuse_existing_virtualenvs = False
if hasattr(nox.options, "download_python"):  # test the interpreters that are there, fetch none
    nox.options.download_python = "never"


def _pyenv_bins() -> list[str]:
    """bin directories of pyenv's installed CPythons, newest patch release first."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found: dict[str, tuple[tuple[int, ...], str]] = {}
    for path in glob.glob(os.path.join(root, "versions", "*", "bin")):
        m = re.fullmatch(r"(3\.\d+)\.(\d+)", os.path.basename(os.path.dirname(path)))
        if not m or not os.access(os.path.join(path, f"python{m.group(1)}"), os.X_OK):
            continue
        key = tuple(int(x) for x in os.path.basename(os.path.dirname(path)).split("."))
        if m.group(1) not in found or key > found[m.group(1)][0]:
            found[m.group(1)] = (key, path)
    return [p for _, p in found.values()]


# pyenv's shims only answer for the selected version: its real bin directories go first.
os.environ["PATH"] = os.pathsep.join(_pyenv_bins() + [os.environ.get("PATH", "")])


@nox.session(python=PYTHONS)
def core(session: nox.Session) -> None:
    """The core subset of the tests against an installed build, on one CPython."""
    session.install(*BUILD_DEPS, *TEST_DEPS)
    session.install("--no-build-isolation", "--no-deps", ".")
    session.run("python", "-c", "import shmring, sys; print('shmring', shmring.__version__, "
                "'from', shmring.__file__, 'on', sys.version.split()[0])")
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *CORE,
                *[f"--deselect={t}" for t in DESELECT], *session.posargs)
