#!/usr/bin/env bash
# own_base_memory.sh: the resident memory of ONE worker hosting the actor
# and the reference on one base and a reward model on a base of its own,
# against the same worker scoring with a reward model on the shared base.
#
# It makes two random Hugging Face models (F32 safetensors, mapped
# read-only): the base (default about 100M parameters) and a reward model's
# of another size (default about 25M), the arith tokenizer and prompts, and
# two one-step reward-model runs: one fully fine-tuned on the small model
# (its checkpoint holds that model: reward.model loads it as the role's own
# base) and one LoRA adapter on the base (the reference layout: every role
# on one base). Then GRPO with a KL term (actor, reference, reward) runs
# with launch.workers="actor,reference,reward" (one process) scored by
# each, and the worker is sampled from /proc/PID/status, smaps_rollup and
# smaps (the two model files' own mappings), keeping the peaks.
#
# usage: bash bench/own_base_memory.sh     (prints a table)
# env:   PLUMB (build/plumb), WORK (a fresh /tmp folder), DIM 768 LAYERS 14
#        HIDDEN 2048 HEADS 12 (the base), RM_DIM 384 RM_LAYERS 8 RM_HIDDEN
#        1024 RM_HEADS 6 (the reward model's), SAMPLE_SECS 20, KEEP 1 keeps WORK.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PLUMB=${PLUMB:-$ROOT/build/plumb}
WORK=${WORK:-$(mktemp -d /tmp/plumb-ownbase.XXXXXX)}
DIM=${DIM:-768} LAYERS=${LAYERS:-14} HIDDEN=${HIDDEN:-2048} HEADS=${HEADS:-12}
RM_DIM=${RM_DIM:-384} RM_LAYERS=${RM_LAYERS:-8} RM_HIDDEN=${RM_HIDDEN:-1024} RM_HEADS=${RM_HEADS:-6}
SAMPLE_SECS=${SAMPLE_SECS:-20}
KEEP=${KEEP:-0}
TRAIN_PID=
cleanup() {
    if [ -n "$TRAIN_PID" ] && kill -0 "$TRAIN_PID" 2>/dev/null; then
        kill -INT "$TRAIN_PID" 2>/dev/null || true
        wait "$TRAIN_PID" 2>/dev/null || true
    fi
    [ "$KEEP" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[ -x "$PLUMB" ] || { echo "no $PLUMB (build first)" >&2; exit 1; }

"$PLUMB" data arith --out "$WORK/arith" >/dev/null
model() { # DIR DIM HIDDEN LAYERS HEADS
    "$PLUMB" init --out "$1" --format hf --vocab 259 --dim "$2" --hidden "$3" --layers "$4" \
        --heads "$5" --kv-heads "$5" --seq-len 128 2>&1 | tail -n 1
    cp "$WORK/arith/tokenizer.json" "$WORK/arith/tokenizer_config.json" "$1/"
    sync "$1/model.safetensors"
}
echo "== models in $WORK"
model "$WORK/base" "$DIM" "$HIDDEN" "$LAYERS" "$HEADS"
model "$WORK/small" "$RM_DIM" "$RM_HIDDEN" "$RM_LAYERS" "$RM_HEADS"

rm_run() { # NAME MODEL EXTRA...: a one-step reward-model run, prints its checkpoint
    name=$1 m=$2
    shift 2
    "$PLUMB" train /dev/null --quiet run.dir="$WORK/$name" run.steps=1 algo.name=rm \
        model.path="$m" data.train="$WORK/arith/pref.jsonl" train.batch_size=2 \
        launch.threads=1 "$@" >"$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log" >&2; exit 1; }
    find "$WORK/$name/checkpoints" -mindepth 1 -maxdepth 1 -type d | sort | tail -n 1
}
RM_OWN=$(rm_run rm-own "$WORK/small" reward.full_finetune=true)
RM_SHARED=$(rm_run rm-shared "$WORK/base" lora.rank=8 lora.alpha=16)
RM_FILE=$RM_OWN/reward/model/model.safetensors
[ -f "$RM_FILE" ] || { echo "no $RM_FILE" >&2; exit 1; }

# peak of: VmRSS, Pss, Anonymous, and the Rss of the two models' mappings (kB)
sample() { # PID
    awk -v a="$WORK/base/model.safetensors" -v b="$RM_FILE" '
        FILENAME ~ /status$/ && /^VmRSS:/ { vm = $2 }
        FILENAME ~ /smaps_rollup$/ && $1 == "Pss:" { pss = $2 }
        FILENAME ~ /smaps_rollup$/ && $1 == "Anonymous:" { an = $2 }
        FILENAME ~ /smaps$/ {
            if ($0 ~ /^[0-9a-f]+-[0-9a-f]+ /) { ina = index($0, a) > 0; inb = index($0, b) > 0 }
            else if ($1 == "Rss:") { if (ina) ma += $2; if (inb) mb += $2 }
        }
        END { printf "%d %d %d %d %d\n", vm, pss, an, ma, mb }
    ' "/proc/$1/status" "/proc/$1/smaps_rollup" "/proc/$1/smaps" 2>/dev/null || true
}

layout() { # TAG LABEL RM_CKPT
    rm -rf "$WORK/grpo"
    "$PLUMB" train configs/grpo-arith.yaml run.dir="$WORK/grpo" run.steps=100000 run.log_every=1 \
        model.path="$WORK/base" data.train="$WORK/arith/prompts.jsonl" data.eval= eval.every=0 \
        algo.kl_coef=0.04 lora.rank=8 lora.alpha=16 train.batch_size=2 algo.group_size=4 \
        rollout.max_new_tokens=4 reward.type=model reward.model="$3" checkpoint.every=0 \
        launch.workers="actor,reference,reward" launch.threads=1 >"$WORK/$1.log" 2>&1 &
    TRAIN_PID=$!
    while ! grep -q '^step 1/' "$WORK/$1.log"; do
        kill -0 "$TRAIN_PID" 2>/dev/null || { tail -n 20 "$WORK/$1.log" >&2; exit 1; }
        sleep 0.5
    done
    w=$(sed -n 's/^plumb train: worker 0 (actor,reference,reward) pid \([0-9]*\),.*/\1/p' "$WORK/$1.log" | head -n 1)
    [ -n "$w" ] || { echo "no worker pid in $WORK/$1.log" >&2; exit 1; }
    peak="0 0 0 0 0"
    end=$(( $(date +%s) + SAMPLE_SECS ))
    while [ "$(date +%s)" -lt "$end" ]; do
        peak=$(printf '%s\n%s\n' "$peak" "$(sample "$w")" | awk '
            NR == 1 { for (i = 1; i <= 5; i++) m[i] = $i }
            NR == 2 { for (i = 1; i <= 5; i++) if ($i > m[i]) m[i] = $i }
            END { print m[1], m[2], m[3], m[4], m[5] }')
        sleep 0.5
    done
    kill -INT "$TRAIN_PID"; wait "$TRAIN_PID" 2>/dev/null || true; TRAIN_PID=
    echo "$peak" | awk -v n="$2" '{ printf "| %s | %.1f | %.1f | %.1f | %.1f | %.1f |\n", n,
        $1 / 1024, $2 / 1024, $3 / 1024, $4 / 1024, $5 / 1024 }'
}
printf 'base %s MiB, reward model %s MiB (F32 files)\n' \
    "$(du -m "$WORK/base/model.safetensors" | cut -f1)" "$(du -m "$RM_FILE" | cut -f1)"
echo "| reward model | VmRSS MiB | PSS MiB | anonymous MiB | base file RSS MiB | rm file RSS MiB |"
echo "|---|---|---|---|---|---|"
layout shared "on the shared base (a LoRA reward model)" "$RM_SHARED"
layout own "on its own base (a fully fine-tuned reward model of another size)" "$RM_OWN"
