#!/usr/bin/env bash
# bench/recovery.sh: what a failure costs, by the source of the new
# process's state. DPO on the arithmetic task (plumb data arith), a random
# 3-layer model (dim 128) with LoRA rank 16, 300 steps, one kill at step 20
# of each run, against the same run without a kill:
#   reference  no state needed (a new process, nothing to load)
#   actor      the copy of its state its last update saved (launch.keep_state)
#   replica    one of two data-parallel actor replicas: a survivor's state
#   coordinator  the newest checkpoint (checkpoint.every 10), the steps since done again
#   replay     the actor with no kept copy (launch.keep_state=false): every
#              role back to the newest checkpoint, the steps since again
# Prints, for each: the median step, the step of the kill, perf/recovery_s
# there, and the run's wall time against the uninterrupted run's (for the
# replica, two replicas uninterrupted; for replay, keep_state=false).
# usage: bash bench/recovery.sh [BUILD]   (BUILD: build)
set -euo pipefail
B=${1:-build}
P=$B/plumb
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
$P data arith --out "$T/arith" --n-train 2000 --n-eval 40 --seed 3 > /dev/null
printf '%s\n' "run.seed: 1" "model.path:" "model.tokenizer: $T/arith" "model.init.dim: 128" \
    "model.init.hidden: 384" "model.init.layers: 3" "model.init.heads: 4" "model.init.kv_heads: 2" \
    "model.init.max_seq: 64" "lora.rank: 16" "lora.alpha: 32" "algo.name: dpo" \
    "data.train: $T/arith/pref.jsonl" "train.batch_size: 16" > "$T/dpo.yaml"
base="$T/dpo.yaml run.steps=300 eval.every=0 checkpoint.every=10 --quiet"

# run NAME WHO [overrides...]: WHO is a worker's roles, "coordinator" or "-"
run() {
    local name=$1 who=$2
    shift 2
    local t0 t1 pid
    t0=$(date +%s.%N)
    $P train $base run.dir="$T/$name" "$@" > "$T/$name.log" 2>&1 &
    local tr=$!
    if [ "$who" != "-" ]; then
        while [ ! -f "$T/$name/metrics.jsonl" ] || [ "$(wc -l < "$T/$name/metrics.jsonl")" -lt 21 ]; do
            sleep 0.01
        done
        if [ "$who" = coordinator ]; then
            pid=$(grep -o "coordinator pid [0-9]*" "$T/$name.log" | tail -1 | awk '{print $3}')
        else
            pid=$(grep "plumb train: worker [0-9]* ($who) pid" "$T/$name.log" | tail -1 |
                  sed 's/.* pid \([0-9]*\),.*/\1/')
        fi
        kill -9 "$pid"
    fi
    wait $tr
    t1=$(date +%s.%N)
    echo "$t0 $t1" > "$T/$name.wall"
}

report() {
    python3 - "$T" "$@" <<'EOF'
import json, statistics, sys
T = sys.argv[1]
def load(n):
    return [json.loads(l) for l in open(f"{T}/{n}/metrics.jsonl")]
def wall(n):
    a, b = map(float, open(f"{T}/{n}.wall").read().split())
    return b - a
print("| killed | state from | median step | the kill's step | perf/recovery_s | run wall | uninterrupted | ratio |")
print("|---|---|---|---|---|---|---|---|")
for name, src, ref in [("reference", "none needed", "plain"), ("actor", "its last update's copy", "plain"),
                       ("replica", "a surviving replica", "dp"), ("coordinator", "checkpoint + replay", "plain"),
                       ("replay", "checkpoint + replay, in the coordinator", "plainnk")]:
    m = load(name)
    steps = [l["perf/step_s"] for l in m if "perf/step_s" in l]
    rec = [l for l in m if l.get("perf/recovery_s", 0) > 0]
    k = max(rec, key=lambda l: l["perf/recovery_s"]) if rec else None
    print(f"| {name} | {src} | {statistics.median(steps)*1e3:.0f} ms | "
          f"{k['perf/step_s']*1e3:.0f} ms (step {k['step']}) | {k['perf/recovery_s']*1e3:.0f} ms | "
          f"{wall(name):.2f} s | {wall(ref):.2f} s | {wall(name) / wall(ref):.2f} |"
          if k else f"| {name} | {src} | no recovery logged |")
EOF
}

run plain -
run plainnk - launch.keep_state=false
run dp - 'launch.workers=actor actor,reference'
run reference reference
run actor actor
run replica actor 'launch.workers=actor actor,reference'
run coordinator coordinator
run replay actor launch.keep_state=false
report
