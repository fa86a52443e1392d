#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the build and test
# dependencies, and the extension built in place. Needs only python3 and a C compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=.venv/.deps-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q -U pip "setuptools>=68" wheel
    .venv/bin/python -m pip install -q "Cython>=3.1" "numpy>=2" pytest pytest-benchmark pytest-timeout hypothesis "mypy>=1.18" "typing_extensions>=4.15"
    touch "$stamp"
fi
# Rebuilds only what changed; --no-build-isolation reuses the tools installed above.
.venv/bin/python -m pip install -q --no-build-isolation --no-deps -e . 
