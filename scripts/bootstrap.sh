#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the build and test
# dependencies, and the extension built in place. Needs only python3 and a C compiler.
# A second run with nothing changed does nothing: the dependencies and the build each
# carry a stamp (a hash of what they depend on) in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1

# pip -q still says "Location ... is ignored" for every configured index or
# find-links location that lacks a package; that is a remark about the machine's
# pip configuration, not about this project, so only that line is dropped.
pipq() {
    .venv/bin/python -m pip -q "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

# The build tools and what the test suite uses (the `top` view with and without rich,
# the demo's chart, a real terminal for the CLI tests, the peers the quick queue
# benchmark runs against).
DEPS=("setuptools>=77" wheel "Cython>=3.1" "numpy>=2" "pytest>=7" pytest-benchmark pytest-timeout hypothesis
      "mypy>=1.18" "typing_extensions>=4.15" "pyzmq>=26.4" "faster-fifo>=1.4"
      "pexpect>=4.8" "pyte>=0.8" "rich>=13" "matplotlib>=3.5" "uvloop>=0.19")

deps_stamp=.venv/.deps-installed
deps_key=$(printf '%s\n' "${DEPS[@]}" | cat - pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$deps_stamp" 2>/dev/null)" != "$deps_key" ]; then
    pipq install -U pip
    pipq install "${DEPS[@]}"
    echo "$deps_key" > "$deps_stamp"
fi

# The editable install points .venv at src/ (Python files need no reinstall); only the
# compiled module depends on these. Its stamp also names the interpreter and the .so,
# so a deleted module or a different Python rebuilds.
build_stamp=.venv/.build-installed
build_key() {
    local so
    so=$(ls src/shmring/_ring.cpython-*.so 2>/dev/null || true)
    [ -n "$so" ] || return 0   # no module: an empty key never matches
    (.venv/bin/python -VV; echo "$so"; echo "${SHMRING_DEBUG:-}/${SHMRING_SANITIZE:-}"
     cat pyproject.toml setup.py csrc/*.c csrc/*.h src/shmring/*.pyx src/shmring/*.pxi src/shmring/*.pxd) \
        | sha256sum | cut -d' ' -f1
}
key=$(build_key)
if [ -z "$key" ] || [ "$(cat "$build_stamp" 2>/dev/null)" != "$key" ]; then
    # --no-build-isolation reuses the tools installed above.
    pipq install --no-build-isolation --no-deps -e .
    build_key > "$build_stamp"
fi
