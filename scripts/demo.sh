#!/bin/sh
# The main job, `make demo`: an alignment run end to end on this machine.
#   1. makes the synthetic arithmetic task (plumb data arith): train and
#      held-out prompts with answers, preference pairs, a byte tokenizer;
#   2. SFT: trains a tiny Llama from scratch to a partly-correct starting
#      point (configs/sft-arith.yaml), exported as a Hugging Face folder;
#   3. GRPO from that model (configs/grpo-arith.yaml): the coordinator
#      drives an actor and a reward worker, each its own process, over
#      ZeroMQ; the exact-match reward is a rule;
#   4. prints held-out accuracy before and after, and where the metrics are.
# RUNS (default runs/) holds the data and the run folders.
set -e
BUILD=${1:-build}
PLUMB="$BUILD/plumb"
RUNS=${RUNS:-runs}

echo "== 1. the arithmetic task: $RUNS/arith"
"$PLUMB" data arith --out "$RUNS/arith" > /dev/null
head -n 2 "$RUNS/arith/prompts.jsonl"

echo "== 2. SFT from scratch: $RUNS/sft-arith"
"$PLUMB" train configs/sft-arith.yaml run.dir="$RUNS/sft-arith" \
    model.tokenizer="$RUNS/arith" data.train="$RUNS/arith/sft.jsonl" \
    data.eval="$RUNS/arith/eval.jsonl"

echo "== 3. GRPO from the SFT model, actor and reward in separate processes: $RUNS/grpo-arith"
"$PLUMB" train configs/grpo-arith.yaml run.dir="$RUNS/grpo-arith" \
    model.path="$RUNS/sft-arith/final" data.train="$RUNS/arith/prompts.jsonl" \
    data.eval="$RUNS/arith/eval.jsonl" launch.workers="actor reward"

# the first and last eval/accuracy of a metrics.jsonl
acc() { grep -o '"eval/accuracy": [0-9.e-]*' "$1" | sed -n "$2" | awk '{ printf "%.1f%%", $2 * 100 }'; }
echo "== 4. held-out exact-match accuracy (greedy, $RUNS/arith/eval.jsonl)"
echo "   random init:      $(acc "$RUNS/sft-arith/metrics.jsonl" 1p)"
echo "   after SFT:        $(acc "$RUNS/sft-arith/metrics.jsonl" '$p')"
echo "   after GRPO:       $(acc "$RUNS/grpo-arith/metrics.jsonl" '$p')"
echo "   metrics (one JSON object per step): $RUNS/sft-arith/metrics.jsonl, $RUNS/grpo-arith/metrics.jsonl"
echo "   models (Hugging Face folders):      $RUNS/sft-arith/final, $RUNS/grpo-arith/final"
echo "   worker logs:                        $RUNS/grpo-arith/logs/"
