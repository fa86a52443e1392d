#!/usr/bin/env bash
# Builds and runs the forced-interleaving regression tests in
# verify/interleavings/: each X.c is linked with the C core built with
# -DSHMR_TEST_HOOKS and must print "PASS X: ..." and exit 0.
#
# usage: verify/run_interleavings.sh [-k] [NAME ...]
#   NAME   scenario(s) to run (file name without .c); default: all
#   -k     keep going after a failure (default: stop at the first one)
# environment:
#   CC                compiler (default gcc)
#   SHMR_CORE         directory of the core sources to test (default csrc), e.g.
#                     an older revision to check that the tests catch its bugs
#   SHMR_IL_TIMEOUT   per-test time limit in seconds (default 120)
#   SHMR_STRESS_RECORDS  records for queue_stress (default 2000000)
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cc="${CC:-gcc}"
core="${SHMR_CORE:-$root/csrc}"
limit="${SHMR_IL_TIMEOUT:-120}"
keep_going=0
if [[ "${1:-}" == "-k" ]]; then
    keep_going=1
    shift
fi

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "run_interleavings: C compiler '$cc' not found" >&2
    exit 2
fi

names=("$@")
if [[ ${#names[@]} -eq 0 ]]; then
    for f in "$root"/verify/interleavings/*.c; do
        n="$(basename "$f" .c)"
        names+=("$n")
    done
fi

build="$(mktemp -d "${TMPDIR:-/tmp}/shmr-il.XXXXXX")"
trap 'rm -rf "$build"' EXIT

run_limited() {
    if command -v timeout >/dev/null 2>&1; then
        timeout -k 5 "$limit" "$@"
    else
        "$@"
    fi
}

flags=(-O2 -g -std=c11 -Wall -Wextra -DSHMR_TEST_HOOKS -pthread -I"$core")
start_all=$SECONDS
# the core once, linked into every scenario
objs=()
for c in "$core"/*.c; do
    o="$build/core-$(basename "$c" .c).o"
    if ! "$cc" "${flags[@]}" -c "$c" -o "$o"; then
        echo "BUILD FAILED: $c" >&2
        exit 1
    fi
    objs+=("$o")
done

passed=()
failed=()
for n in "${names[@]}"; do
    src="$root/verify/interleavings/$n.c"
    if [[ ! -f "$src" ]]; then
        echo "run_interleavings: no such scenario: $n ($src)" >&2
        failed+=("$n")
        [[ $keep_going -eq 1 ]] && continue
        break
    fi
    if ! "$cc" "${flags[@]}" "${objs[@]}" "$src" -o "$build/$n" -lrt; then
        echo "BUILD FAILED: $n" >&2
        failed+=("$n")
        [[ $keep_going -eq 1 ]] && continue
        break
    fi
    t0=$(date +%s%N)
    run_limited "$build/$n"
    rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    if [[ $rc -ne 0 ]]; then
        [[ $rc -eq 124 ]] && echo "TIMEOUT: $n exceeded ${limit}s" >&2
        echo "FAILED: $n (exit $rc, ${ms} ms)" >&2
        failed+=("$n")
        [[ $keep_going -eq 1 ]] && continue
        break
    fi
    echo "  ($n: ${ms} ms)"
    passed+=("$n")
done

total=${#names[@]}
echo "interleavings: ${#passed[@]}/$total passed, ${#failed[@]} failed ($((SECONDS - start_all))s, core $core)"
if [[ ${#failed[@]} -ne 0 ]]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
exit 0
