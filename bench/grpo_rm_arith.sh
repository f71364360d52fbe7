#!/usr/bin/env bash
# grpo_rm_arith.sh: GRPO on the arithmetic task scored by a learned reward
# model on a base of its own, against the same run scored by the rule.
#
#   1. the task (plumb data arith);
#   2. the actor: configs/sft-arith.yaml as make demo runs it (3 layers, dim 96);
#   3. the reward model's start: the same config with 4 layers, dim 128,
#      hidden 352, 1200 steps;
#   4. the reward model: configs/rm-arith.yaml from that model, all weights
#      trained, on pref_dense.jsonl, RM_STEPS (8000) steps;
#   5. GRPO (configs/grpo-arith.yaml) from the actor, scored by the rule
#      (reward.type=exact_match) and by the reward model
#      (reward.type=model reward.model=its last checkpoint, whose model is
#      not the actor's: the reward role loads it as its own base).
# Prints the held-out accuracy of each, every eval.
#
# usage: bash bench/grpo_rm_arith.sh
# env:   PLUMB (build/plumb), WORK (runs/grpo-rm-bench), RM_STEPS 8000,
#        GRPO_STEPS 800, SKIP_DONE 1 (a stage whose run folder has "final"
#        or a last checkpoint is not run again).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PLUMB=${PLUMB:-$ROOT/build/plumb}
WORK=${WORK:-$ROOT/runs/grpo-rm-bench}
RM_STEPS=${RM_STEPS:-8000}
GRPO_STEPS=${GRPO_STEPS:-800}
SKIP_DONE=${SKIP_DONE:-1}
[ -x "$PLUMB" ] || { echo "no $PLUMB (build first)" >&2; exit 1; }
mkdir -p "$WORK"

stage() { # NAME DONE_PATH CONFIG ARGS...: one run, its log in WORK/NAME.log
    name=$1 done=$2 cfg=$3
    shift 3
    if [ "$SKIP_DONE" = 1 ] && [ -e "$done" ]; then echo "== $name: done ($done)"; return; fi
    rm -rf "${WORK:?}/$name"
    echo "== $name: $cfg $*"
    start=$(date +%s)
    "$PLUMB" train "$cfg" run.dir="$WORK/$name" "$@" >"$WORK/$name.log" 2>&1 ||
        { tail -n 20 "$WORK/$name.log" >&2; exit 1; }
    echo "   $(( $(date +%s) - start )) s"
}
acc() { # METRICS: every eval/accuracy as step:percent
    awk '{ s = ""; a = ""
           if (match($0, /"step": [0-9]+/)) s = substr($0, RSTART + 8, RLENGTH - 8)
           if (match($0, /"eval\/(pref_)?accuracy": [0-9.e-]+/)) {
               a = substr($0, RSTART, RLENGTH); sub(/.*: /, "", a)
               printf "%s:%.1f ", s, a * 100 } }' "$1"
    echo
}

"$PLUMB" data arith --out "$WORK/arith" >/dev/null
A="model.tokenizer=$WORK/arith data.train=$WORK/arith/sft.jsonl data.eval=$WORK/arith/eval.jsonl"
# shellcheck disable=SC2086
stage sft "$WORK/sft/final" configs/sft-arith.yaml $A
# shellcheck disable=SC2086
stage sft4 "$WORK/sft4/final" configs/sft-arith.yaml $A run.steps=1200 \
    model.init.layers=4 model.init.dim=128 model.init.hidden=352
RM_CKPT=$WORK/rm4/checkpoints/$(printf 'step-%06d' "$RM_STEPS")
stage rm4 "$RM_CKPT" configs/rm-arith.yaml model.path="$WORK/sft4/final" run.steps="$RM_STEPS" \
    data.train="$WORK/arith/pref_dense.jsonl" data.eval_pref="$WORK/arith/eval_pref.jsonl"
G="model.path=$WORK/sft/final data.train=$WORK/arith/prompts.jsonl data.eval=$WORK/arith/eval.jsonl run.steps=$GRPO_STEPS"
# shellcheck disable=SC2086
stage grpo-rule "$WORK/grpo-rule/final" configs/grpo-arith.yaml $G launch.workers="actor reward"
# shellcheck disable=SC2086
stage grpo-rm "$WORK/grpo-rm/final" configs/grpo-arith.yaml $G launch.workers="actor reward" \
    reward.type=model reward.model="$RM_CKPT"

echo "== held-out accuracy (step:percent)"
printf 'actor SFT (3 layers, dim 96):   '; acc "$WORK/sft/metrics.jsonl"
printf 'RM start SFT (4 layers, 128):   '; acc "$WORK/sft4/metrics.jsonl"
printf 'reward model, pairwise:         '; acc "$WORK/rm4/metrics.jsonl"
printf 'GRPO, rule reward:              '; acc "$WORK/grpo-rule/metrics.jsonl"
printf 'GRPO, reward model:             '; acc "$WORK/grpo-rm/metrics.jsonl"
