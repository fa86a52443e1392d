#!/usr/bin/env bash
# Build verify/stress.c (and verify/stress_mpq.c, shmring.Queue's C side) against
# the C core with ThreadSanitizer and run them.
#
#   verify/run_tsan.sh             modes queue block overwrite joinrace solo mpq
#   verify/run_tsan.sh MODE...     just those (queue, block, overwrite, joinrace, solo, mpq)
#
# queue, block, joinrace (broadcast-block) and solo (queue, one consumer slot) run with NO suppressions. The
# overwrite run alone gets verify/tsan.supp, which names the two readers of the
# deliberate seqlock race on slot bytes (copy_out, stress_copy_claimed); see
# verify/README.md. A mode fails on a nonzero exit (a check in stress.c failed)
# or on any "WARNING: ThreadSanitizer" in its output. Prints one RESULT line per
# mode; exits non-zero if any mode failed.
#
# Environment: STRESS_RECORDS (records per mode, default 300000),
# STRESS_TIMEOUT (seconds per mode, default 120), CC (default gcc).
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
N=${STRESS_RECORDS:-300000}
TMO=${STRESS_TIMEOUT:-120}
CC=${CC:-gcc}

if [ $# -gt 0 ]; then
    modes=("$@")
else
    modes=(queue block overwrite joinrace solo mpq)
fi
for m in "${modes[@]}"; do
    case "$m" in
    queue | block | overwrite | joinrace | solo | mpq) ;;
    *) echo "run_tsan.sh: unknown mode $m" >&2; exit 2 ;;
    esac
done

if ! command -v "$CC" >/dev/null 2>&1; then
    echo "run_tsan.sh: $CC not found" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmr-tsan.XXXXXX")
BIN="$WORK/stress"
t0=$SECONDS
# -Wtsan notes that TSan does not model atomic_thread_fence (see README); the
# build log is shown only if the build fails.
if ! (cd "$ROOT" && $CC -O1 -g -fsanitize=thread -std=c11 -D_GNU_SOURCE -Icsrc csrc/*.c verify/stress.c \
    -lpthread -lrt -o "$BIN" && $CC -O1 -g -fsanitize=thread -std=c11 -D_GNU_SOURCE -Icsrc csrc/*.c \
    verify/stress_mpq.c -lpthread -lrt -o "$BIN-mpq") >"$WORK/build.log" 2>&1; then
    cat "$WORK/build.log"
    echo "run_tsan.sh: build FAILED (work dir $WORK)"
    exit 1
fi
echo "built $BIN in $((SECONDS - t0)) s; $N records per mode"

bad=0
for m in "${modes[@]}"; do
    opts="halt_on_error=0 exitcode=66 history_size=4"
    if [ "$m" = overwrite ]; then
        opts="$opts suppressions=$HERE/tsan.supp print_suppressions=1"
    fi
    log="$WORK/$m.log"
    t1=$SECONDS
    if [ "$m" = mpq ]; then  # items, not records: a tenth as many (each is a put and a get)
        TSAN_OPTIONS="$opts" timeout "$TMO" "$BIN-mpq" "$((N / 10))" >"$log" 2>&1
    else
        TSAN_OPTIONS="$opts" timeout "$TMO" "$BIN" "$m" "$N" >"$log" 2>&1
    fi
    rc=$?
    warnings=$(grep -c "WARNING: ThreadSanitizer" "$log")
    fails=$(grep -c "^FAIL" "$log")
    matched=$(awk '/^[0-9]+ race:/ {s += $1} END {print s + 0}' "$log")
    status=ok
    if [ "$rc" -ne 0 ] || [ "$warnings" -ne 0 ]; then
        status=FAIL
        bad=1
    fi
    grep -E "^$m(:| +records=)" "$log" | sed 's/^/  /'
    echo "RESULT $m $status rc=$rc tsan_reports=$warnings check_failures=$fails suppressed=$matched secs=$((SECONDS - t1))"
    if [ "$status" != ok ]; then
        [ "$rc" -eq 124 ] && echo "  timed out after ${TMO}s"
        grep -E "^FAIL" "$log" | head -10 | sed 's/^/  /'
        if [ "$warnings" -ne 0 ]; then
            echo "  ---- first ThreadSanitizer report ($log) ----"
            sed -n '/WARNING: ThreadSanitizer/,/^SUMMARY/p' "$log" | head -60 | sed 's/^/  /'
            grep "^SUMMARY: ThreadSanitizer" "$log" | sort | uniq -c | sed 's/^/  /'
        fi
    fi
done

echo "total $((SECONDS - t0)) s"
if [ "$bad" != 0 ]; then
    echo "work dir kept: $WORK"
    echo "run_tsan.sh: FAILED"
    exit 1
fi
rm -rf "$WORK"
echo "run_tsan.sh: all modes passed, no ThreadSanitizer reports"
