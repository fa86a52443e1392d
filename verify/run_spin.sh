#!/usr/bin/env bash
# Model-check verify/ring.pml (the ring), verify/board.pml (the board) and
# verify/messages.pml (message rings) with SPIN, one configuration at a time.
#
#   verify/run_spin.sh            the default set (under a minute on 2 idle cores)
#   EXTENDED=1 verify/run_spin.sh the default set plus the larger "ext" ones
#   verify/run_spin.sh NAME...    just those (any set)
#   verify/run_spin.sh --list     names, one per line (--list-all: with ext)
#
# For each configuration: spin -a (with its -D switches), gcc pan.c, ./pan in
# safety mode (assertions + invalid end states; exhaustive, -DCOLLAPSE), in
# non-progress mode (mode np: -DNP, ./pan -l -f, weak fairness), or in bitstate
# mode (mode bs: -DBITSTATE -w33, a partial search, extended set only). A "check"
# configuration must report "errors: 0" with a complete search; a "mutant" (a
# seeded bug, see ring.pml) must report an error, which shows the property
# would catch it. Prints one RESULT line per configuration and exits non-zero
# if any configuration did not behave as expected. For a failed check it
# re-runs pan breadth-first (-DBFS) to get a shortest counterexample and
# replays it (spin -t -p); the work dir is kept.
#
# Environment: JOBS (parallel pans, default min(nproc, 4)), KEEP=1 keeps the
# work dirs, PAN_TIMEOUT (seconds per pan, default 600), PAN_MEMLIM_MB (pan
# memory bound, default 6000; a search that hits it is an ERROR).
set -u

HERE=$(cd "$(dirname "$0")" && pwd)

# name | set (default/ext) | kind (check/mutant) | spin -D switches | mode (safety/np/bs) [| model, default ring.pml]
# (largest first, so parallel jobs end together; output keeps this order)
ALL_CONFIGS=$(cat <<'EOF2'
block_ec|default|check|-DBLOCK -DEC -DSIMPLE -DLEAVE|safety
block_join|default|check|-DBLOCK -DJOIN -DSIMPLE -DRESERVE -DNREC=4|safety
overwrite|default|check|-DOVERWRITE -DRESERVE|safety
queue_ec|default|check|-DQUEUE -DEC -DSIMPLE|safety
overwrite_ec|default|check|-DOVERWRITE -DEC -DSIMPLE|safety
queue_ec_sb|default|check|-DQUEUE -DEC -DSB -DNRUN=1|safety
queue_ec_sb_fence|default|check|-DQUEUE -DEC -DSB -DNRUN=1 -DSYM_FENCE|safety
queue|default|check|-DQUEUE -DNREC=4|safety
queue_np|default|check|-DQUEUE|np
block|default|check|-DBLOCK -DRESERVE|safety
overwrite_join|default|check|-DOVERWRITE -DJOIN -DRESERVE -DSIMPLE|safety
mutant_ec_no_recheck|default|mutant|-DQUEUE -DEC -DSIMPLE -DBUG_EC_NO_RECHECK|safety
mutant_ec_seen_late|default|mutant|-DBLOCK -DEC -DSIMPLE -DBUG_EC_SEEN_LATE|safety
mutant_ec_no_fence|default|mutant|-DQUEUE -DEC -DSB -DNRUN=1 -DBUG_NO_FENCE|safety
mutant_ec_barrier_early|default|mutant|-DQUEUE -DEC -DSB -DNRUN=1 -DBUG_BARRIER_EARLY|safety
mutant_no_torn_check|default|mutant|-DOVERWRITE -DBUG_NO_TORN_CHECK|safety
mutant_no_join_dekker|default|mutant|-DBLOCK -DJOIN -DSIMPLE -DBUG_NO_JOIN_DEKKER|safety
mutant_unclamped_min|default|mutant|-DBLOCK -DJOIN -DSIMPLE -DNREC=4 -DBUG_UNCLAMPED_MIN|safety
mutant_shared_claim|default|mutant|-DBLOCK -DJOIN -DSIMPLE -DBUG_SHARED_CLAIM|safety
mutant_done_early|default|mutant|-DQUEUE -DBUG_DONE_EARLY|safety
queue_evict|default|check|-DQUEUE -DEVICT|safety
queue_solo|default|check|-DQUEUE -DSOLO -DNRUN=1 -DNREC=4|safety
queue_solo_ec_sb|default|check|-DQUEUE -DSOLO -DNRUN=1 -DEC -DSB|safety
mutant_solo_two_consumers|default|mutant|-DQUEUE -DSOLO|safety
queue_evict_nrec4|ext|check|-DQUEUE -DEVICT -DNREC=4|safety
mutant_evict_plain_release|default|mutant|-DQUEUE -DEVICT -DBUG_EVICT_PLAIN_RELEASE|safety
board|default|check|-DCRASHY|safety|board.pml
board_nread3|default|check|-DCRASHY -DNREAD=3|safety|board.pml
board_3copies|default|check|-DCRASHY -DNCOPY=3 -DWA=3|safety|board.pml
mutant_board_no_recheck|default|mutant|-DCRASHY -DBUG_NO_RECHECK|safety|board.pml
mutant_board_no_odd_mark|default|mutant|-DCRASHY -DBUG_NO_ODD_MARK|safety|board.pml
mutant_board_no_takeover|default|mutant|-DCRASHY -DBUG_NO_TAKEOVER|safety|board.pml
mutant_board_one_copy|default|mutant|-DCRASHY -DBUG_ONE_COPY|safety|board.pml
msg_queue|default|check|-DNMSG=3|safety|messages.pml
msg_queue_rewind|default|check|-DNMSG=3 -DREWIND|safety|messages.pml
msg_mutant_release_early|default|mutant|-DBUG_RELEASE_EARLY|safety|messages.pml
msg_mutant_no_cas|default|mutant|-DBUG_NO_CAS|safety|messages.pml
msg_mutant_no_pad|default|mutant|-DBUG_NO_PAD|safety|messages.pml
queue_ec_sb_2c|ext|check|-DQUEUE -DEC -DSIMPLE -DSB|safety
block_ec_sb|ext|check|-DBLOCK -DEC -DSIMPLE -DLEAVE -DSB -DSB_CURSOR|safety
queue_cap4|ext|check|-DQUEUE -DCAP=4 -DNREC=6|safety
msg_queue_nmsg4|ext|check|-DNMSG=4|safety|messages.pml
msg_queue_rewind_nmsg4|ext|check|-DNMSG=4 -DREWIND|safety|messages.pml
overwrite_nrec4|ext|check|-DOVERWRITE -DRESERVE -DNREC=4|safety
overwrite_join_full|ext|check|-DOVERWRITE -DJOIN -DRESERVE|safety
block_join_nrec4_full|ext|check|-DBLOCK -DJOIN -DNREC=4|safety
block_ec_join_bs|ext|check|-DBLOCK -DJOIN -DEC -DSIMPLE -DRESERVE|bs
queue_ec_full_bs|ext|check|-DQUEUE -DEC|bs
board_2readers|ext|check|-DCRASHY -DNREADER=2|safety|board.pml
qpick_sb|default|check|-DSB -DNZ=2|safety|qpick.pml
qpick|default|check|-DNZ=2|safety|qpick.pml
mutant_pick_one_pass|default|mutant|-DBUG_ONE_PASS|safety|qpick.pml
mutant_pick_counter_late|default|mutant|-DBUG_COUNTER_LATE|safety|qpick.pml
mutant_pick_used_once|default|mutant|-DBUG_USED_ONCE|safety|qpick.pml
mutant_pick_one_lane|default|mutant|-DBUG_ONE_LANE|safety|qpick.pml
qwake_2p|default|check|-DNPROD=2 -DITEMS=1|safety|qwake.pml
qwake|default|check|-DNTO=2|safety|qwake.pml
qwake_no_leave_pass|default|check|-DBUG_NO_LEAVE_PASS|safety|qwake.pml
mutant_qwake_no_taken_pass|default|mutant|-DBUG_NO_TAKEN_PASS|safety|qwake.pml
mutant_qwake_no_taken_pass_3g|default|mutant|-DITEMS=3 -DNGET=3 -DBUG_NO_TAKEN_PASS|safety|qwake.pml
mutant_qwake_owed_clear_late|default|mutant|-DBUG_OWED_CLEAR_LATE|safety|qwake.pml
mutant_qwake_owed_kept|default|mutant|-DBUG_OWED_KEPT|safety|qwake.pml
qwake_3g|ext|check|-DITEMS=3 -DNGET=3|safety|qwake.pml
qwake_2p_want2|ext|check|-DNPROD=2 -DITEMS=2 -DBATCH=1 -DWANT=2 -DNTO=0|safety|qwake.pml
EOF2
)

if [ "${1:-}" = "--list" ]; then
    echo "$ALL_CONFIGS" | awk -F'|' '$2 == "default" {print $1}'
    exit 0
fi
if [ "${1:-}" = "--list-all" ]; then
    echo "$ALL_CONFIGS" | cut -d'|' -f1
    exit 0
fi

for tool in spin gcc; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "run_spin.sh: $tool not found" >&2
        exit 2
    fi
done

want=("$@")
selected=""
while IFS= read -r line; do
    IFS='|' read -r name set_ _ <<<"$line"
    if [ ${#want[@]} -eq 0 ]; then
        if [ "$set_" = default ] || [ "${EXTENDED:-0}" = 1 ]; then
            selected+="$line"$'\n'
        fi
    else
        for w in "${want[@]}"; do
            [ "$w" = "$name" ] && selected+="$line"$'\n'
        done
    fi
done <<<"$ALL_CONFIGS"
if [ ${#want[@]} -gt 0 ]; then
    for w in "${want[@]}"; do
        echo "$ALL_CONFIGS" | cut -d'|' -f1 | grep -qx -- "$w" || { echo "run_spin.sh: unknown configuration $w" >&2; exit 2; }
    done
fi

nproc_=$(nproc 2>/dev/null || echo 2)
JOBS=${JOBS:-$((nproc_ < 4 ? nproc_ : 4))}
PAN_TIMEOUT=${PAN_TIMEOUT:-600}
PAN_MEMLIM_MB=${PAN_MEMLIM_MB:-6000}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmr-spin.XXXXXX")

# run_one NAME KIND DEFINES PANMODE MODEL: writes $WORK/NAME/result
run_one() {
    local name=$1 kind=$2 defs=$3 panmode=$4 model=${5:-ring.pml}
    local d="$WORK/$name"
    mkdir -p "$d"
    cp "$HERE/$model" "$d/$model"
    (
        cd "$d" || exit 1
        local t0=$SECONDS status=ok note="" ccflags="-O2 -DSAFETY -DCOLLAPSE" panflags="-m200000"
        case "$panmode" in
        np) ccflags="-O2 -DNP -DCOLLAPSE"; panflags="-m200000 -l -f" ;;
        bs) ccflags="-O2 -DSAFETY -DBITSTATE"; panflags="-m300000 -w33" ;;
        esac
        [ "$kind" = mutant ] && ccflags="${ccflags/-O2/-O0}" # tiny searches: compile fast
        ccflags="$ccflags -DMEMLIM=$PAN_MEMLIM_MB"
        # shellcheck disable=SC2086
        if ! spin $defs -a "$model" >spin.log 2>&1; then
            echo "$name|$kind|ERROR|spin -a failed: $(tail -1 spin.log)|||||$((SECONDS - t0))" >result
            exit 0
        fi
        # shellcheck disable=SC2086
        if ! gcc -w $ccflags -o pan pan.c >gcc.log 2>&1; then
            echo "$name|$kind|ERROR|gcc pan.c failed: $(head -1 gcc.log)|||||$((SECONDS - t0))" >result
            exit 0
        fi
        # shellcheck disable=SC2086
        timeout "$PAN_TIMEOUT" ./pan $panflags >pan.log 2>&1
        local rc=$?
        local errors states trans depth mem
        errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' pan.log | tail -1)
        states=$(awk '/states, stored/ {print $1; exit}' pan.log)
        trans=$(awk '/transitions \(= / {print $1; exit}' pan.log)
        depth=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' pan.log | tail -1)
        mem=$(awk '/total actual memory usage/ {print $1; exit}' pan.log)
        if [ $rc -eq 124 ]; then
            status=ERROR
            note="pan timed out after ${PAN_TIMEOUT}s"
        elif [ -z "$errors" ]; then
            status=ERROR
            note="pan gave no verdict (rc $rc): $(tail -1 pan.log)"
        elif grep -qE "max search depth too small|reached -DMEMLIM bound|out of memory" pan.log; then
            status=ERROR
            note="incomplete search: $(grep -m1 -E 'max search depth too small|MEMLIM|out of memory' pan.log)"
        elif [ "$panmode" = bs ] && [ "$kind" = check ] && [ "$errors" = 0 ]; then
            note="bitstate (partial) search: $(grep -m1 'hash factor' pan.log)"
        elif [ "$kind" = check ]; then
            if [ "$errors" != 0 ]; then
                status=FAIL
                note=$(grep -m1 -E "^pan:[0-9]+: " pan.log | head -1)
                # a shortest counterexample, breadth-first (bounded; the DFS trail stays otherwise)
                # shellcheck disable=SC2086
                if [ "$panmode" = safety ] && mkdir -p bfs && cp "$model" bfs/ &&
                    (cd bfs && spin $defs -a "$model" >/dev/null 2>&1 &&
                        gcc -O2 -w -DSAFETY -DBFS -o pan pan.c >/dev/null 2>&1 &&
                        { timeout 120 ./pan -m200000 >pan.log 2>&1; [ -f "$model.trail" ]; }); then
                    cp "bfs/$model.trail" "$model.trail"
                    note="$(grep -m1 -E '^pan:[0-9]+: ' bfs/pan.log) [shortest trail]"
                fi
            fi
        else
            if [ "$errors" = 0 ]; then
                status=FAIL
                note="seeded bug NOT detected"
            else
                note="detected: $(grep -m1 -E '^pan:[0-9]+: ' pan.log)"
            fi
        fi
        echo "$name|$kind|$status|$note|$errors|$states|$trans|$depth|$mem|$((SECONDS - t0))" >result
    )
}

t_start=$SECONDS
echo "spin: $(spin -V 2>&1 | head -1); work dir $WORK; $JOBS parallel job(s)"
running=0
while IFS='|' read -r name _ kind defs panmode model; do
    [ -z "$name" ] && continue
    run_one "$name" "$kind" "$defs" "$panmode" "$model" </dev/null &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n 2>/dev/null || wait
        running=$((running - 1))
    fi
done <<<"$selected"
wait

bad=0
printf '%-24s %-6s %-6s %12s %12s %7s %9s %5s  %s\n' CONFIG KIND RESULT STATES TRANSITIONS DEPTH MEM_MB SECS NOTE
while IFS='|' read -r name _ kind defs panmode model; do
    [ -z "$name" ] && continue
    model=${model:-ring.pml}
    r="$WORK/$name/result"
    if [ ! -f "$r" ]; then
        echo "RESULT $name ERROR no result"
        bad=1
        continue
    fi
    IFS='|' read -r _ _ status note errors states trans depth mem secs <"$r"
    printf '%-24s %-6s %-6s %12s %12s %7s %9s %5s  %s\n' "$name" "$kind" "$status" "${states:--}" "${trans:--}" \
        "${depth:--}" "${mem:--}" "$secs" "$note"
    echo "RESULT $name $status states=${states:-} transitions=${trans:-} depth=${depth:-} errors=${errors:-} secs=$secs mode=$panmode defines=\"$defs\""
    if [ "$status" != ok ]; then
        bad=1
    fi
    if [ "$status" = FAIL ] && [ "$kind" = check ]; then
        echo "---- $name: pan output ----"
        grep -E "^pan|errors:|assertion|invalid end" "$WORK/$name/pan.log" | head -8
        if [ -f "$WORK/$name/$model.trail" ]; then
            echo "---- $name: counterexample (last 60 steps; trail in $WORK/$name) ----"
            # shellcheck disable=SC2086
            (cd "$WORK/$name" && spin $defs -t -p "$model" 2>&1 | grep -E '^ *[0-9]+:|assert|violated' |
                grep -vE '\[\(1\)\]|\[else\]|\[skip\]|\[goto|\[DO\]|\[IF\]|\[break\]|\.\(goto\)' | tail -60)
        fi
    elif [ "$status" = ERROR ]; then
        tail -5 "$WORK/$name/pan.log" 2>/dev/null
    fi
done <<<"$selected"

echo "total $((SECONDS - t_start)) s"
if [ "$bad" = 0 ] && [ "${KEEP:-0}" != 1 ]; then
    rm -rf "$WORK"
else
    echo "work dir kept: $WORK"
fi
if [ "$bad" != 0 ]; then
    echo "run_spin.sh: FAILED"
    exit 1
fi
echo "run_spin.sh: all configurations as expected (errors: 0 on every check)"
