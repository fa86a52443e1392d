#!/usr/bin/env bash
# The test suite, from a fresh clone: sets itself up, then runs pytest.
# Long soak variants run with SHMRING_SOAK=1.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
scripts/ensure-spin.sh
# `./test.sh tests/test_x.py ...` runs just what it names; otherwise the whole of tests/
for arg in "$@"; do
    case "$arg" in
        tests/*) exec .venv/bin/python -m pytest "$@" ;;
    esac
done
exec .venv/bin/python -m pytest tests "$@"
