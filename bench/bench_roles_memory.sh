#!/usr/bin/env bash
# bench_roles_memory.sh: resident memory of the four PPO roles (actor, critic,
# reward, reference) hosted in ONE worker process against four SEPARATE
# worker processes on one host, for a model whose weights dominate.
#
# It makes a random Hugging Face model (F32 safetensors, mapped read-only by
# every worker), the arith tokenizer and prompts, a one-step reward-model run
# (so the reward role is base + its own adapter + score head, not a rule),
# then runs the same PPO config twice:
#   launch.workers="actor,critic,reward,reference"   (one process)
#   launch.workers="auto"                            (one process per role)
# While each run is in its steps it samples every worker (the children of
# the `plumb train` process) from /proc/PID/status and /proc/PID/smaps_rollup,
# and the model file's own mapping from /proc/PID/smaps, keeping the peak of
# the sum over workers. PSS splits shared pages between their sharers, so the
# summed PSS is the honest total; summed RSS counts a shared page once per
# process that maps it.
#
# usage: bench/bench_roles_memory.sh        (from anywhere; writes
#        bench/results-roles-memory.txt)
# env:   PLUMB (build/plumb), WORK (a fresh /tmp folder), DIM 768, HIDDEN 2048,
#        LAYERS 14, HEADS 12, VOCAB 259, SEQ 128 (about 100M parameters),
#        BATCH 4, THREADS 1 (launch.threads of every worker), SAMPLE_SECS 25,
#        INTERVAL 0.5, REWARD model|rule, KEEP 1 to keep WORK, OUT (the
#        results file).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PLUMB=${PLUMB:-$ROOT/build/plumb}
WORK=${WORK:-$(mktemp -d /tmp/plumb-rolesmem.XXXXXX)}
DIM=${DIM:-768}
HIDDEN=${HIDDEN:-2048}
LAYERS=${LAYERS:-14}
HEADS=${HEADS:-12}
VOCAB=${VOCAB:-259}
SEQ=${SEQ:-128}
BATCH=${BATCH:-4}
THREADS=${THREADS:-1}
SAMPLE_SECS=${SAMPLE_SECS:-25}
INTERVAL=${INTERVAL:-0.5}
REWARD=${REWARD:-model}
KEEP=${KEEP:-0}
OUT=${OUT:-$ROOT/bench/results-roles-memory.txt}
NICE="nice -n 10"

[ -x "$PLUMB" ] || { echo "no $PLUMB (build first)" >&2; exit 1; }
[ -r /proc/self/smaps_rollup ] || { echo "needs /proc/PID/smaps_rollup (Linux >= 4.14)" >&2; exit 1; }
mkdir -p "$WORK"
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

# ---------------------------------------------------------------- the model
MODEL=$WORK/model
echo "== data and model in $WORK"
"$PLUMB" data arith --out "$WORK/arith" >/dev/null
INIT_LOG=$($NICE "$PLUMB" init --out "$MODEL" --format hf --vocab "$VOCAB" --dim "$DIM" \
    --hidden "$HIDDEN" --layers "$LAYERS" --heads "$HEADS" --kv-heads "$HEADS" \
    --seq-len "$SEQ" 2>&1)
echo "$INIT_LOG"
cp "$WORK/arith/tokenizer.json" "$WORK/arith/tokenizer_config.json" "$MODEL/"
PARAMS=$(printf '%s\n' "$INIT_LOG" | sed -n 's/.*(hf, \([0-9.]*M\) parameters).*/\1/p')
ST=$MODEL/model.safetensors
# Write the new file back now: a dirty page-cache page mapped by one process
# counts as Private_Dirty, which would blur private memory with the weights.
sync "$ST" 2>/dev/null || sync
ST_BYTES=$(stat -c %s "$ST")
ST_MIB=$(awk -v b="$ST_BYTES" 'BEGIN { printf "%.1f", b / 1048576 }')

# ------------------------------------------------- the reward model (1 step)
REWARD_ARGS=
if [ "$REWARD" = model ]; then
    echo "== one-step reward-model run (the reward role's adapter and head)"
    cat >"$WORK/rm.yaml" <<EOF
run:
  dir: $WORK/rm
  seed: 1
  steps: 1
algo:
  name: rm
model:
  path: $MODEL
lora:
  rank: 8
  alpha: 16
data:
  train: $WORK/arith/pref.jsonl
train:
  batch_size: 2
launch:
  threads: $THREADS
EOF
    $NICE "$PLUMB" train "$WORK/rm.yaml" --quiet >"$WORK/rm.log" 2>&1 ||
        { cat "$WORK/rm.log" >&2; exit 1; }
    RM_CKPT=$(find "$WORK/rm/checkpoints" -mindepth 1 -maxdepth 1 -type d | sort | tail -n 1)
    [ -d "$RM_CKPT/reward" ] || { echo "no reward checkpoint in $RM_CKPT" >&2; exit 1; }
    REWARD_ARGS="reward.type=model reward.model=$RM_CKPT"
fi

# ---------------------------------------------------------------- PPO config
cat >"$WORK/ppo.yaml" <<EOF
run:
  dir: $WORK/ppo
  seed: 1
  steps: 100000
  log_every: 1
algo:
  name: ppo
model:
  path: $MODEL
lora:
  rank: 8
  alpha: 16
data:
  train: $WORK/arith/prompts.jsonl
train:
  batch_size: $BATCH
  epochs: 1
  minibatches: 1
rollout:
  max_new_tokens: 4
checkpoint:
  every: 0
launch:
  threads: $THREADS
EOF

# One line per worker per sample:
#   sample pid vmrss vmhwm rss pss pss_anon pss_file sh_clean sh_dirty
#   pr_clean pr_dirty anon map_rss map_pss            (kB)
# map_* are the model.safetensors mapping's own Rss and Pss.
sample_pid() { # $1 sample $2 pid
    awk -v s="$1" -v p="$2" -v st="$ST" '
        FILENAME ~ /status$/ && /^VmRSS:/ { vmrss = $2 }
        FILENAME ~ /status$/ && /^VmHWM:/ { vmhwm = $2 }
        FILENAME ~ /smaps_rollup$/ {
            if ($1 == "Rss:") rss = $2;           else if ($1 == "Pss:") pss = $2
            else if ($1 == "Pss_Anon:") pa = $2;  else if ($1 == "Pss_File:") pf = $2
            else if ($1 == "Shared_Clean:") sc = $2; else if ($1 == "Shared_Dirty:") sd = $2
            else if ($1 == "Private_Clean:") pc = $2; else if ($1 == "Private_Dirty:") pd = $2
            else if ($1 == "Anonymous:") an = $2
        }
        FILENAME ~ /smaps$/ {
            if ($0 ~ /^[0-9a-f]+-[0-9a-f]+ /) inmap = (index($0, st) > 0)
            else if (inmap && $1 == "Rss:") mr += $2
            else if (inmap && $1 == "Pss:") mp += $2
        }
        END { if (rss != "") printf "%s %s %d %d %d %d %d %d %d %d %d %d %d %d %d\n",
              s, p, vmrss, vmhwm, rss, pss, pa, pf, sc, sd, pc, pd, an, mr, mp }
    ' "/proc/$2/status" "/proc/$2/smaps_rollup" "/proc/$2/smaps" 2>/dev/null || true
}

# run_layout NAME WORKERS: runs PPO, samples the workers, stops the run.
run_layout() {
    name=$1 workers=$2
    log=$WORK/train-$name.log samples=$WORK/samples-$name.txt
    : >"$samples"
    rm -rf "$WORK/ppo"
    echo "== $name: launch.workers=\"$workers\""
    # shellcheck disable=SC2086
    $NICE "$PLUMB" train "$WORK/ppo.yaml" "launch.workers=$workers" $REWARD_ARGS >"$log" 2>&1 &
    TRAIN_PID=$!
    # Wait for the first finished step: weights mapped, every role has run.
    t=0
    while ! grep -q '^step 1/' "$log"; do
        kill -0 "$TRAIN_PID" 2>/dev/null || { echo "$name: run ended early:" >&2; tail -n 30 "$log" >&2; exit 1; }
        sleep 0.5
        t=$((t + 1))
        [ "$t" -lt 1200 ] || { echo "$name: no step after 600 s" >&2; tail -n 30 "$log" >&2; exit 1; }
    done
    first=$(grep -c '^step ' "$log")
    n=$(awk -v s="$SAMPLE_SECS" -v i="$INTERVAL" 'BEGIN { printf "%d", s / i }')
    k=0
    while [ "$k" -lt "$n" ]; do
        kill -0 "$TRAIN_PID" 2>/dev/null || { echo "$name: run ended while sampling:" >&2; tail -n 30 "$log" >&2; exit 1; }
        for p in $(pgrep -P "$TRAIN_PID"); do sample_pid "$k" "$p" >>"$samples"; done
        sample_pid "$k" "$TRAIN_PID" | sed 's/^/C /' >>"$samples"
        k=$((k + 1))
        sleep "$INTERVAL"
    done
    steps=$(grep -c '^step ' "$log")
    kill -INT "$TRAIN_PID"
    wait "$TRAIN_PID" 2>/dev/null || true
    TRAIN_PID=
    case $name in
    one) STEPS_one=$((steps - first + 1)) ;;
    *) STEPS_four=$((steps - first + 1)) ;;
    esac
    # pid -> roles, from "worker N (roles) pid P, log ..."
    sed -n 's/^plumb train: worker [0-9]* (\([^)]*\)) pid \([0-9]*\),.*/\2 \1/p' "$log" >"$WORK/roles-$name.txt"
}

run_layout one "actor,critic,reward,reference"
run_layout four "auto"

# ------------------------------------------------------------------ report
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# summary NAME: peak summed RSS/PSS and the per-process lines of the sample
# with the peak summed PSS, plus each process's own peak (VmHWM).
summary() {
    name=$1
    awk -v roles="$WORK/roles-$name.txt" '
        BEGIN { while ((getline l < roles) > 0) { split(l, a, " "); role[a[1]] = a[2] } }
        $1 == "C" { if ($6 > crss) crss = $6; if ($7 > cpss) cpss = $7; if ($5 > chwm) chwm = $5; next }
        {
            s = $1; p = $2; pids[p] = 1
            rss[s] += $5; pss[s] += $6; mrss[s] += $14; mpss[s] += $15
            an[s] += $13; pd[s] += $12; nproc[s]++
            line[s, p] = $0
            if ($4 > hwm[p]) hwm[p] = $4
            if ($5 > prss[p]) prss[p] = $5
            if ($6 > ppss[p]) ppss[p] = $6
            if ($13 > panon[p]) panon[p] = $13
            ns = s + 1 > ns ? s + 1 : ns
        }
        END {
            for (s = 0; s < ns; s++) {
                if (rss[s] > brss) { brss = rss[s]; srss = s }
                if (pss[s] > bpss) { bpss = pss[s]; spss = s }
            }
            m = 1024
            printf "  samples %d, worker processes %d\n", ns, nproc[spss]
            printf "  peak summed RSS %8.1f MiB   peak summed PSS %8.1f MiB\n", brss / m, bpss / m
            printf "  at the PSS peak: model-file mapping RSS %.1f MiB (summed), PSS %.1f MiB;" \
                   " anonymous %.1f MiB; private dirty %.1f MiB\n", mrss[spss] / m, mpss[spss] / m,
                   an[spss] / m, pd[spss] / m
            printf "  coordinator (plumb train itself, not summed): peak RSS %.1f MiB, PSS %.1f MiB" \
                   " while sampled; VmHWM %.1f MiB (it maps the model once at startup)\n",
                   crss / m, cpss / m, chwm / m
            printf "  %-7s %-30s %8s %8s %8s %8s %8s %8s %8s %8s\n", "pid", "roles", "RSS", "PSS",
                   "mapRSS", "mapPSS", "anon", "privDrt", "peakRSS", "VmHWM"
            for (p in pids) {
                split(line[spss, p], f, " ")
                printf "  %-7s %-30s %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f\n", p,
                       (p in role ? role[p] : "?"), f[5] / m, f[6] / m, f[14] / m, f[15] / m,
                       f[13] / m, f[12] / m, prss[p] / m, hwm[p] / m
            }
            printf "PEAK %d %d\n", brss, bpss > "/dev/stderr"
        }
    ' "$WORK/samples-$name.txt"
}

{
    echo "plumb: resident memory of 4 PPO roles, one worker process vs four"
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')  commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory, $(uname -sr)"
    echo "model: random llama, vocab $VOCAB, dim $DIM, hidden $HIDDEN, layers $LAYERS, heads $HEADS/$HEADS, seq $SEQ;" \
         "$PARAMS parameters; model.safetensors $ST_BYTES bytes ($ST_MIB MiB, F32, mapped read-only)"
    echo "run: ppo, batch $BATCH, rollout.max_new_tokens 4, lora.rank 8, launch.threads $THREADS, reward $REWARD" \
         "$( [ "$REWARD" = model ] && echo '(base + rm adapter + score head)')"
    [ -z "${MALLOC_MMAP_THRESHOLD_:-}" ] || echo "env: MALLOC_MMAP_THRESHOLD_=$MALLOC_MMAP_THRESHOLD_ (inherited by the workers)"
    echo "sampling: every ${INTERVAL}s for ${SAMPLE_SECS}s after the first step; sums over the worker processes"
    echo "columns (MiB): RSS, PSS from smaps_rollup; mapRSS/mapPSS = the model.safetensors mapping;"
    echo "  anon = anonymous (private heap: adapters, heads, optimizer, activations, KV cache);"
    echo "  privDrt = Private_Dirty; peakRSS = the highest sampled RSS; VmHWM = the kernel's RSS high-water mark"
    echo
    echo "[one process: launch.workers=\"actor,critic,reward,reference\"]  ($STEPS_one steps while sampled)"
    summary one 2>"$WORK/peak-one"
    echo
    echo "[four processes: launch.workers=\"auto\"]  ($STEPS_four steps while sampled)"
    summary four 2>"$WORK/peak-four"
    echo
    read -r _ r1 p1 <"$WORK/peak-one"
    read -r _ r4 p4 <"$WORK/peak-four"
    awk -v r1="$r1" -v p1="$p1" -v r4="$r4" -v p4="$p4" -v f="$ST_BYTES" 'BEGIN {
        m = 1024; fm = f / 1048576
        printf "%-34s %12s %12s\n", "layout", "sum RSS MiB", "sum PSS MiB"
        printf "%-34s %12.1f %12.1f\n", "1 process (4 roles)", r1 / m, p1 / m
        printf "%-34s %12.1f %12.1f\n", "4 processes (1 role each)", r4 / m, p4 / m
        printf "%-34s %12.1f %12.1f\n", "4 processes - 1 process", (r4 - r1) / m, (p4 - p1) / m
        printf "%-34s %12.2f %12.2f\n", "ratio 4 / 1", r4 / r1, p4 / p1
        printf "model file: %.1f MiB; one unshared copy per process would be %.1f MiB of weights\n", fm, 4 * fm
    }'
} | tee "$OUT"
echo "wrote $OUT"
