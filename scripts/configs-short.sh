#!/bin/sh
# A short run of every config in configs/, for checking that a change to the
# code leaves training numerically as it was.
#
#   scripts/configs-short.sh OUT [BUILD] [CONFIGS]
#
# makes the arithmetic task, a short SFT model for the configs that start
# from one, then runs each CONFIGS/*.yaml (default configs/) for a few steps
# with a small eval, each in its own run folder under OUT. For each config it
# writes OUT/NAME.metrics: the run's metrics.jsonl without the perf/* keys
# (timings, which differ from run to run). Two trees compare with
#   diff -r OUT_A OUT_B   (or: cmp OUT_A/NAME.metrics OUT_B/NAME.metrics)
# STEPS (default 6) sets the steps of each run; warmup is 2 steps in all.
# SFT=DIR starts the configs from that SFT export instead of training one
# (the sft-arith run is then skipped), and EXTRA="key=value ..." is added to
# every run (scripts/gpu-check.sh: SFT=the CPU's export EXTRA=launch.device=cuda).
set -e
OUT=${1:?usage: scripts/configs-short.sh OUT [BUILD] [CONFIGS]}
BUILD=${2:-build}
CONFIGS=${3:-configs}
STEPS=${STEPS:-6}
PLUMB="$BUILD/plumb"
mkdir -p "$OUT"

"$PLUMB" data arith --out "$OUT/arith" > /dev/null

# without perf/*: {"step": 1, "a": 1, "perf/x": 2} -> {"step": 1, "a": 1}
strip() { sed -E 's/, "perf\/[^"]*": [^,}]*//g' "$1"; }

run() { # name config overrides...
    name=$1 cfg=$2
    shift 2
    # shellcheck disable=SC2086 # EXTRA is a list of overrides
    "$PLUMB" train "$cfg" --quiet run.dir="$OUT/$name" run.steps="$STEPS" run.log_every=1 \
        eval.every=3 eval.n=16 optim.warmup_steps=2 data.train="$OUT/arith/$TRAIN" "$@" \
        ${EXTRA:-} > "$OUT/$name.log" 2>&1 || {
        echo "configs-short: $cfg failed; see $OUT/$name.log" >&2
        tail -n 5 "$OUT/$name.log" >&2
        exit 1
    }
    strip "$OUT/$name/metrics.jsonl" > "$OUT/$name.metrics"
    echo "configs-short: $name: $(wc -l < "$OUT/$name.metrics") lines"
}

# the SFT start: every other config loads its export
START="${SFT:-$OUT/sft-arith/final}"
if [ -z "${SFT:-}" ]; then
    TRAIN=sft.jsonl run sft-arith "$CONFIGS/sft-arith.yaml" model.tokenizer="$OUT/arith" \
        data.eval="$OUT/arith/eval.jsonl" run.steps=200 eval.every=100
fi
for cfg in "$CONFIGS"/*.yaml; do
    name=$(basename "$cfg" .yaml)
    [ "$name" = sft-arith ] && continue
    if grep -q '^  train: redis://' "$cfg"; then # test_stream runs these against a redis-server
        echo "configs-short: $name reads a Redis stream; skipped"
        continue
    fi
    # each config's own training file, from the arith folder
    TRAIN=$(sed -n 's/^  train: runs\/arith\///p' "$cfg" | sed 's/ .*//')
    set -- model.path="$START"
    grep -q '^  eval: ' "$cfg" && set -- "$@" data.eval="$OUT/arith/eval.jsonl"
    grep -q '^  eval_pref: ' "$cfg" && set -- "$@" data.eval_pref="$OUT/arith/eval_pref.jsonl"
    run "$name" "$cfg" "$@"
done
