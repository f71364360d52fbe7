#!/usr/bin/env bash
# async_grpo.sh: asynchronous GRPO (algo.max_staleness) against synchronous
# GRPO on the arithmetic task, with one training actor and one rollout
# actor in processes of their own (train.replicas 1, launch.workers
# "actor actor reward").
#
#   1. the task and the SFT start (configs/sft-arith.yaml, as make demo);
#   2. configs/grpo-arith.yaml for STEPS steps, eval every EVERY, with
#      algo.max_staleness 0 (synchronous), 1 and 2.
# Prints, for each: the median step time (perf/step_s), the run's wall
# time, and held-out accuracy at each eval with the minutes since the
# run's first step.
#
# usage: bash bench/async_grpo.sh
# env:   PLUMB (build/plumb), WORK (runs/async-bench), STEPS 300, EVERY 50,
#        KS "0 1 2", THREADS (per worker, default: plumb's).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PLUMB=${PLUMB:-$ROOT/build/plumb}
WORK=${WORK:-$ROOT/runs/async-bench}
STEPS=${STEPS:-300}
EVERY=${EVERY:-50}
KS=${KS:-0 1 2}
[ -x "$PLUMB" ] || { echo "no $PLUMB (build first)" >&2; exit 1; }
mkdir -p "$WORK"

"$PLUMB" data arith --out "$WORK/arith" >/dev/null
if [ ! -e "$WORK/sft/final" ]; then
    echo "== sft"
    "$PLUMB" train configs/sft-arith.yaml run.dir="$WORK/sft" model.tokenizer="$WORK/arith" \
        data.train="$WORK/arith/sft.jsonl" data.eval="$WORK/arith/eval.jsonl" \
        >"$WORK/sft.log" 2>&1 || { tail -n 20 "$WORK/sft.log" >&2; exit 1; }
fi
for k in $KS; do
    echo "== GRPO, algo.max_staleness $k"
    rm -rf "${WORK:?}/k$k"
    start=$(date +%s.%N)
    "$PLUMB" train configs/grpo-arith.yaml run.dir="$WORK/k$k" model.path="$WORK/sft/final" \
        data.train="$WORK/arith/prompts.jsonl" data.eval="$WORK/arith/eval.jsonl" \
        run.steps="$STEPS" eval.every="$EVERY" algo.max_staleness="$k" train.replicas=1 \
        'launch.workers=actor actor reward' >"$WORK/k$k.log" 2>&1 ||
        { tail -n 20 "$WORK/k$k.log" >&2; exit 1; }
    echo "   wall $(echo "$(date +%s.%N) - $start" | bc) s"
done
echo "== per run: median step s, held-out accuracy at each eval (minutes since step 1: percent)"
for k in $KS; do
    python3 - "$WORK/k$k/metrics.jsonl" "$k" <<'EOF'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
steps = [l for l in lines if l["step"] > 0]
t0 = steps[0]["perf/time"] - steps[0]["perf/step_s"]
acc = " ".join("%.1f:%.1f" % ((l.get("perf/time", t0) - t0) / 60 if l["step"] else 0,
                               100 * l["eval/accuracy"]) for l in lines if "eval/accuracy" in l)
print("K %s: step %.3f s; %s" % (sys.argv[2], statistics.median(l["perf/step_s"] for l in steps), acc))
EOF
done
