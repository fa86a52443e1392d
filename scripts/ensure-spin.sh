#!/usr/bin/env bash
# Installs the SPIN model checker (used by tests/test_verify.py) where it can,
# quietly; where it cannot, says why in one line and the SPIN checks are skipped.
# Never fails: the rest of the suite runs either way.
command -v spin >/dev/null 2>&1 && exit 0
why=
if ! command -v apt-get >/dev/null 2>&1; then
    why="no apt-get on this system"
elif [ "$(id -u)" -ne 0 ] && ! sudo -n true >/dev/null 2>&1; then
    why="apt-get needs root or password-less sudo"
else
    SUDO=; [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
    export DEBIAN_FRONTEND=noninteractive
    # the package lists are refreshed only when the first attempt does not find spin
    $SUDO apt-get install -y -qq spin >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq spin >/dev/null 2>&1; } \
        || why="apt-get install spin failed (no package or no network)"
fi
if [ -n "$why" ]; then
    echo "note: spin is not installed ($why); the SPIN model checks will be skipped"
fi
exit 0
