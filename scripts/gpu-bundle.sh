#!/bin/sh
# Builds plumb for the one-shot GPU check and packs, into one folder, what
# scripts/gpu-check.sh needs on a GPU machine that has CUDA but none of the
# Debian libraries plumb links:
#
#   scripts/gpu-bundle.sh [BUNDLE]        (default gpu-bundle/, ignored by git)
#
#   BUNDLE/bin/     plumb and the GPU tests, built here for sm_80 and sm_90
#   BUNDLE/lib.tar.xz  their shared libraries but glibc's and CUDA's (from
#                   ldd), packed (OpenBLAS alone is 36 MiB), which
#                   gpu-check.sh unpacks into lib/
#   BUNDLE/data/    the committed tiny Hugging Face checkpoints
#   BUNDLE/ref/     the CPU's numbers for the check's training steps: the SFT
#                   start they load, and the metrics of short DPO and GRPO runs
#   BUNDLE/configs/ those runs' configs
#   BUNDLE/gpu-check.sh, configs-short.sh, metrics-close.py, gpu_torch.py
#
# Then, on the GPU machine, from BUNDLE: sh gpu-check.sh (see there).
set -e
BUNDLE=${1:-gpu-bundle}
BUILD=${BUILD_GPU:-build-gpu}
JOBS=${JOBS:-$(nproc)}
say() { echo "gpu-bundle: $*"; }

command -v nvcc > /dev/null || { say "nvcc is not on PATH: the CUDA toolkit is needed" >&2; exit 1; }
sh scripts/deps.sh
say "building $BUILD (Release, CUDA)"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPLUMB_CUDA=ON > "$BUILD.log" 2>&1 ||
    { tail -n 20 "$BUILD.log" >&2; exit 1; }
cmake --build "$BUILD" -j "$JOBS" >> "$BUILD.log" 2>&1 || { tail -n 20 "$BUILD.log" >&2; exit 1; }
[ -x "$BUILD/test_model_cuda" ] || { say "$BUILD has no CUDA tests: was nvcc found?" >&2; exit 1; }

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/bin" "$BUNDLE/lib" "$BUNDLE/data/hf" "$BUNDLE/ref" "$BUNDLE/configs"
for b in plumb test_kernels_cuda test_model_cuda test_backend; do cp "$BUILD/$b" "$BUNDLE/bin/"; done
# every library the binaries load, but the C library's own and CUDA's, which
# the GPU machine has in the versions its driver goes with
for b in "$BUNDLE"/bin/*; do ldd "$b"; done | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
    grep -Ev '/(libc|libm|libdl|libpthread|librt|libutil|ld-linux[^/]*|libcuda|libcudart|libcublas|libcublasLt|libnvidia[^/]*)\.so' |
    while read -r lib; do cp -L "$lib" "$BUNDLE/lib/"; done
cp -r tests/data/hf/llama tests/data/hf/qwen2 "$BUNDLE/data/hf/"
cp scripts/gpu-check.sh scripts/configs-short.sh scripts/metrics-close.py bench/gpu_torch.py "$BUNDLE/"

say "the CPU's numbers for the training steps (a few minutes)"
cp configs/sft-arith.yaml configs/dpo-arith.yaml configs/grpo-arith.yaml "$BUNDLE/configs/"
REF=$(mktemp -d)
trap 'rm -rf "$REF"' EXIT
sh scripts/configs-short.sh "$REF" "$BUILD" "$BUNDLE/configs" > "$REF/log" 2>&1 ||
    { cat "$REF/log" >&2; exit 1; }
cp -rL "$REF/sft-arith/final" "$BUNDLE/ref/sft"
cp "$REF/dpo-arith.metrics" "$REF/grpo-arith.metrics" "$BUNDLE/ref/"
rm "$BUNDLE/configs/sft-arith.yaml" # the check starts from ref/sft

say "packing the libraries"
tar -C "$BUNDLE" -cJf "$BUNDLE/lib.tar.xz" lib
NLIB=$(ls "$BUNDLE/lib" | wc -l)
rm -rf "$BUNDLE/lib"
MB=$(du -sm "$BUNDLE" | cut -f1)
say "$BUNDLE: ${MB} MiB ($NLIB libraries)"
[ "$MB" -le 40 ] || { say "over 40 MiB" >&2; exit 1; }
