#!/usr/bin/env bash
# Live demo: one producer streams ticks to several consumer processes through
# shmring, then through multiprocessing.Queue, and prints rates and speed-ups.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
exec .venv/bin/python -m shmring.demo "$@"
