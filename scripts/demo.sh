#!/bin/sh
# The main job, `make demo`: plumb makes a small model of its own and
# generates text with it.
#   1. writes a synthetic corpus of sums ("23+19=42"), one per line;
#   2. trains a byte-level Llama model on it from scratch (plumb pretrain:
#      forward, backward and AdamW on the CPU), about a minute on 2 cores;
#   3. asks it to complete unseen-format prompts greedily and by sampling
#      (plumb generate), and scores the greedy sums.
# Token ids are bytes, so the shell converts text <-> ids with od and awk.
set -e
BUILD=${1:-build}
PLUMB="$BUILD/plumb"
OUT=${DEMO_OUT:-demo-out}
mkdir -p "$OUT"

echo "== 1. corpus: $OUT/sums.txt"
awk 'BEGIN { srand(7); for (i = 0; i < 20000; i++) { a = int(rand() * 50); b = int(rand() * 50);
     printf "%d+%d=%d\n", a, b, a + b } }' > "$OUT/sums.txt"
head -n 3 "$OUT/sums.txt"

echo "== 2. training a byte-level model from scratch: $OUT/model"
"$PLUMB" pretrain --text "$OUT/sums.txt" --out "$OUT/model" --steps 1000 --log-every 100 \
    --dim 96 --hidden 256 --layers 3 --heads 4 --kv-heads 2 --lr 3e-3 --seed 1

ids_of() { printf '%s' "$1" | od -An -tu1 | tr -s ' \n' '  '; }
# JSON {"ids": [...], ...} -> the text of the ids, without the newline (EOS)
text_of() { sed 's/.*"ids": \[\([^]]*\)\].*/\1/' | tr ',' '\n' |
            awk '{ if ($1 != "" && $1 != 10) printf "%c", $1 + 0 }'; }

echo "== 3. greedy completions (temperature 0)"
right=0; total=0
for p in "12+7=" "23+19=" "40+45=" "8+8=" "31+26=" "4+33=" "17+17=" "49+1=" "25+24=" "9+30="; do
    got=$("$PLUMB" generate --model "$OUT/model" --prompt-ids "$(ids_of "$p")" \
          --temperature 0 --max-new-tokens 8 --json | text_of)
    want=$(echo "$p" | awk -F'[+=]' '{ print $1 + $2 }')
    total=$((total + 1))
    if [ "$got" = "$want" ]; then right=$((right + 1)); mark="right"; else mark="wrong, $want"; fi
    printf '  %-7s %-4s (%s)\n' "$p" "$got" "$mark"
done
echo "  $right of $total sums right"

echo "== 4. sampled completions (temperature 0.8, top-k 10, seed 3)"
for p in "3" "27+" "1"; do
    got=$("$PLUMB" generate --model "$OUT/model" --prompt-ids "$(ids_of "$p")" \
          --temperature 0.8 --top-k 10 --seed 3 --max-new-tokens 12 --json | text_of)
    printf '  %-4s -> %s%s\n' "$p" "$p" "$got"
done
echo "== the model is in $OUT/model (config.json + model.safetensors); try:"
echo "   $PLUMB generate --model $OUT/model --prompt-ids \"$(ids_of "20+20=")\" --temperature 0 --json"
