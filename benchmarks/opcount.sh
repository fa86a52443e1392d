#!/usr/bin/env bash
# Instructions per round of each hot path of the C core, counted by callgrind
# (see benchmarks/opcount.c). Builds the core the way the extension is built.
#   benchmarks/opcount.sh [CORE_DIR]   (default: csrc of this tree)
# Prints "scenario instructions_per_round".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
core=${1:-$here/../csrc}
cc=${CC:-gcc}
flags=${OPCOUNT_CFLAGS:--O2}
work=$(mktemp -d "${TMPDIR:-/tmp}/shmr-opcount.XXXXXX")
trap 'rm -rf "$work"' EXIT
grep -q "int exist_ok" "$core/shmring.h" && flags="$flags -DOPCOUNT_CREATE_EXIST_OK"
# shellcheck disable=SC2086
$cc $flags -std=c11 -D_GNU_SOURCE= -I"$core" -o "$work/opcount" "$here/opcount.c" "$core"/*.c -lrt -pthread
n=20000
for sc in q1 q1one qbatch qzc b1 ow1 bzc; do
    m=$n
    [ "$sc" = qbatch ] && m=200
    ir() {
        valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$work/opcount" "$sc" "$1" >/dev/null 2>"$work/vg.log"
        awk '/^summary:/ {print $2}' "$work/cg.out"
    }
    a=$(ir "$m")
    b=$(ir $((2 * m)))
    echo "$sc $(( (b - a) / m ))"
done
