#!/bin/bash
# Runs every harness built by fuzz/build.sh for FUZZ_SECONDS seconds each,
# FUZZ_JOBS at a time (default: the number of cores), from the repository
# root. Each one starts from its seeds in fuzz/corpus/<name>/ and keeps
# what it learns in fuzz-build/corpus/<name>/ (reused by the next run).
# Crashes, leaks, timeouts and out-of-memory inputs go to
# fuzz-build/crashes/<name>-*; the script fails when any harness failed
# (inputs left there by earlier runs are not counted again).
# FUZZ_TARGETS="tokenizer config" runs a subset; FUZZ_ARGS adds libFuzzer
# flags. Replay one input: fuzz-build/fuzz_<name> <file>.
set -u
OUT=${FUZZ_BUILD:-fuzz-build}
SECONDS_EACH=${FUZZ_SECONDS:-60}
JOBS=${FUZZ_JOBS:-$(nproc)}
TARGETS=${FUZZ_TARGETS:-$(ls fuzz/fuzz_*.c | sed 's|fuzz/fuzz_||; s|\.c$||' | grep -v '^util$')}

# The longest input each harness may make: a tokenizer.json seed is ~6 KB.
max_len() {
    case $1 in
        tokenizer) echo 16384 ;;
        tok_encode) echo 4096 ;;
        *) echo 8192 ;;
    esac
}

mkdir -p "$OUT/crashes" "$OUT/logs"
# Only what this run finds counts: older inputs in crashes/ stay for replay.
START="$OUT/.run-start.$$"
touch "$START"
run_one() {
    local name=$1 bin="$OUT/fuzz_$1"
    local dict=""
    [ -f "fuzz/dict/$name.dict" ] && dict="-dict=fuzz/dict/$name.dict"
    [ -z "$dict" ] && [ -f fuzz/dict/json.dict ] && dict="-dict=fuzz/dict/json.dict"
    mkdir -p "$OUT/corpus/$name"
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    PLUMB_ROOT=$(pwd) "$bin" "$OUT/corpus/$name" "fuzz/corpus/$name" $dict \
        -max_total_time="$SECONDS_EACH" -max_len="$(max_len "$name")" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$OUT/crashes/$name-" ${FUZZ_ARGS:-} > "$OUT/logs/$name.log" 2>&1
    local rc=$?
    local execs
    execs=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$OUT/logs/$name.log" | grep -o '[0-9]*$')
    if [ $rc -eq 0 ]; then
        echo "fuzz $name: ok, ${execs:-?} runs in ${SECONDS_EACH}s"
    else
        echo "fuzz $name: FAILED (exit $rc), see $OUT/logs/$name.log:"
        grep -a -m1 -E 'ERROR:|runtime error|==ERROR|Test unit written' -A0 "$OUT/logs/$name.log" | sed 's/^/  /'
        grep -a -E 'Test unit written' "$OUT/logs/$name.log" | sed 's/^/  /'
    fi
    return $rc
}

# A harness whose FUZZ_REQUIRES source is missing is not built: say so, skip it.
ready=""
for name in $TARGETS; do
    if [ -x "$OUT/fuzz_$name" ]; then
        ready="$ready $name"
    elif grep -q '^ \* FUZZ_REQUIRES:' "fuzz/fuzz_$name.c" 2>/dev/null; then
        echo "fuzz $name: skipped ($(sed -n 's/^ \* FUZZ_REQUIRES: *//p' "fuzz/fuzz_$name.c") missing)"
    else
        echo "fuzz: $OUT/fuzz_$name missing; run make fuzz-build" >&2
        exit 2
    fi
done
TARGETS=$ready
fail=0
running=0
for name in $TARGETS; do
    if [ $running -ge "$JOBS" ]; then
        wait -n || fail=1
        running=$((running - 1))
    fi
    run_one "$name" &
    running=$((running + 1))
done
while [ $running -gt 0 ]; do
    wait -n || fail=1
    running=$((running - 1))
done
crashes=$(find "$OUT/crashes" -type f -newer "$START" | wc -l)
rm -f "$START"
if [ $fail -ne 0 ] || [ "$crashes" -ne 0 ]; then
    echo "fuzz: $crashes new input(s) in $OUT/crashes/ (replay: $OUT/fuzz_<name> <file>)"
    exit 1
fi
echo "fuzz: all harnesses ran ${SECONDS_EACH}s without a crash"
