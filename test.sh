#!/usr/bin/env bash
# The test suite, from a fresh clone: sets itself up, then runs pytest.
# Long soak variants run with SHMRING_SOAK=1.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
scripts/ensure-spin.sh
exec .venv/bin/python -m pytest tests "$@"
