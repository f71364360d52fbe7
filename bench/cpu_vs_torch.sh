#!/usr/bin/env bash
# cpu_vs_torch.sh: plumb's CPU engine against PyTorch eager (and llama2.c's
# run.c) on the same weights and tokens, interleaved, RUNS rounds.
#
#   train:  forward + backward with a log-prob loss, LoRA rank 8 on q, v and
#           every weight, at 8 x 256 and 2 x 1024 tokens, 2 threads
#           (plumb bench train against bench/gpu_torch.py --what train);
#   decode: batch 64 on 2 threads against transformers' generate with its
#           KV cache (plumb bench decode, gpu_torch.py --what decode);
#           batch 1 on 1 thread against run.c built -Ofast -march=native
#           (when RUNC names llama2.c's run.c source, with its
#           tokenizer.bin beside it).
# The model is the 15M preset (stories15M's shape) with a context of 1024,
# written once by plumb init in both formats. Prints each run's figures,
# then the medians and the ratios.
#
# usage: bash bench/cpu_vs_torch.sh
# env:   PLUMB (build/plumb), PYTHON (python3 with torch, transformers,
#        peft), RUNS (5), WORK (/tmp/plumb-cpu-bench), RUNC (unset: no
#        run.c comparison), STEPS (5), WHAT (train,decode), BASE (unset;
#        another build's plumb, measured the same way under "base_": the
#        commit before a change, say)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PLUMB=${PLUMB:-$ROOT/build/plumb}
PYTHON=${PYTHON:-python3}
RUNS=${RUNS:-5}
STEPS=${STEPS:-5}
WORK=${WORK:-/tmp/plumb-cpu-bench}
WHAT=${WHAT:-train,decode}
[ -x "$PLUMB" ] || { echo "cpu_vs_torch: no $PLUMB (build first)" >&2; exit 1; }
"$PYTHON" -c "import torch, transformers, peft" 2>/dev/null ||
    { echo "cpu_vs_torch: $PYTHON lacks torch, transformers or peft" >&2; exit 1; }
mkdir -p "$WORK"
HF=$WORK/m15hf L2C=$WORK/m15.bin
[ -e "$HF/config.json" ] || "$PLUMB" init --preset 15m --seq-len 1024 --format hf --out "$HF" >/dev/null
[ -e "$L2C" ] || "$PLUMB" init --preset 15m --format llama2c --out "$L2C" >/dev/null
if [ -n "${RUNC:-}" ]; then
    gcc -Ofast -march=native -o "$WORK/runfast" "$RUNC" -lm
    TOKBIN=$(dirname "$RUNC")/tokenizer.bin
    [ -e "$TOKBIN" ] || { echo "cpu_vs_torch: no $TOKBIN beside $RUNC" >&2; exit 1; }
fi
OUT=$WORK/figures.txt
: >"$OUT"

rec() { echo "$1 $2" | tee -a "$OUT"; } # KEY VALUE

plumb_train() { # B T [--full] -> ms/step
    "${BIN:-$PLUMB}" bench train --model "$HF" --threads 2 --batch "$1" --seq-len "$2" --steps "$STEPS" ${3:-} |
        sed -n 's/.*: \([0-9.]*\) ms\/step.*/\1/p'
}
torch_train() { # B T -> "lora_ms full_ms"
    OMP_NUM_THREADS=2 "$PYTHON" "$ROOT/bench/gpu_torch.py" --model "$HF" --device cpu --what train \
        --train-batch "$1" --seq-len "$2" --steps "$STEPS" 2>/dev/null |
        sed -n 's/.*"ms_per_step": \([0-9.]*\).*/\1/p' | tr '\n' ' '
}

for r in $(seq 1 "$RUNS"); do
    echo "== round $r of $RUNS"
    case ,$WHAT, in *,train,*)
        for shape in "8 256" "2 1024"; do
            set -- $shape
            key=${1}x$2
            rec "plumb_lora_$key" "$(plumb_train "$1" "$2")"
            rec "plumb_full_$key" "$(plumb_train "$1" "$2" --full)"
            if [ -n "${BASE:-}" ]; then
                rec "base_lora_$key" "$(BIN=$BASE plumb_train "$1" "$2")"
                rec "base_full_$key" "$(BIN=$BASE plumb_train "$1" "$2" --full)"
            fi
            read -r tl tf <<<"$(torch_train "$1" "$2")"
            rec "torch_lora_$key" "$tl"
            rec "torch_full_$key" "$tf"
        done ;;
    esac
    case ,$WHAT, in *,decode,*)
        for who in plumb ${BASE:+base}; do
            bin=$PLUMB
            [ "$who" = base ] && bin=$BASE
            rec ${who}_decode_b64 "$("$bin" bench decode --model "$HF" --threads 2 --batch 64 \
                --prompt-len 8 --tokens 128 --repeat 1 | sed -n 's/.*: \([0-9.]*\) tokens\/s.*/\1/p')"
            rec ${who}_decode_b1 "$("$bin" bench decode --model "$L2C" --threads 1 --prompt-len 1 \
                --tokens 255 --repeat 1 | sed -n 's/.*: \([0-9.]*\) tokens\/s.*/\1/p')"
        done
        rec torch_decode_b64 "$(OMP_NUM_THREADS=2 "$PYTHON" "$ROOT/bench/gpu_torch.py" --model "$HF" \
            --device cpu --what decode --batch 64 --prompt-len 8 --tokens 128 2>/dev/null |
            sed -n 's/.*"tokens_per_s": \([0-9.]*\).*/\1/p')"
        if [ -n "${RUNC:-}" ]; then
            rec runc_decode_b1 "$(cd "$WORK" && OMP_NUM_THREADS=1 ./runfast "$L2C" -z "$TOKBIN" -t 0 \
                -n 256 2>&1 >/dev/null | sed -n 's/achieved tok\/s: \([0-9.]*\).*/\1/p')"
        fi ;;
    esac
done

echo "== medians of $RUNS rounds (ms/step for train, tokens/s for decode)"
"$PYTHON" - "$OUT" <<'EOF'
import statistics, sys
v = {}
for line in open(sys.argv[1]):
    k, x = line.split()
    v.setdefault(k, []).append(float(x))
med = {k: statistics.median(x) for k, x in v.items()}
for k in sorted(med):
    print(f"{k:22s} {med[k]:9.1f}   ({', '.join(f'{x:.1f}' for x in v[k])})")
def ratio(name, a, b):  # how many times faster plumb is: b / a
    if a in med and b in med:
        print(f"{name:40s} {med[b] / med[a]:.2f}")
print("== plumb's speed over the reference (higher is faster)")
for key in ("8x256", "2x1024"):
    for mode in ("lora", "full"):
        ratio(f"train {mode} {key} vs PyTorch", f"plumb_{mode}_{key}", f"torch_{mode}_{key}")
for key in ("8x256", "2x1024"):
    for mode in ("lora", "full"):
        ratio(f"train {mode} {key} vs the BASE build", f"plumb_{mode}_{key}", f"base_{mode}_{key}")
for b in ("b64", "b1"):
    if f"plumb_decode_{b}" in med and f"base_decode_{b}" in med:
        print(f"{'decode ' + b + ' vs the BASE build':40s} {med[f'plumb_decode_{b}'] / med[f'base_decode_{b}']:.2f}")
if "plumb_decode_b64" in med and "torch_decode_b64" in med:
    print(f"{'decode batch 64, 2 threads vs generate':40s} {med['plumb_decode_b64'] / med['torch_decode_b64']:.2f}")
if "plumb_decode_b1" in med and "runc_decode_b1" in med:
    print(f"{'decode batch 1, 1 thread vs run.c':40s} {med['plumb_decode_b1'] / med['runc_decode_b1']:.2f}")
EOF
