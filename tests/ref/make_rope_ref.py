#!/usr/bin/env python3
"""Tiny Llama checkpoints with scaled RoPE, and transformers' values on them.

Run from the repository root (needs torch, transformers):

    python3 tests/ref/make_rope_ref.py

Writes tests/data/hf/llama-rope-{llama3,linear,yarn}/: the llama fixture's
shape (make_hf_ref.py) with head_dim 16, max_position_embeddings 256 and an
original context of 32, so the scaling bites: the sequences reach 200
tokens, and the greedy prompts 40. Each holds expected.json in the layout
make_hf_ref.py writes (log-probs, entropies, greedy ids and log-probs, fp32
on the CPU). Rerun only when the fixtures change."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_hf_ref as H  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

SCALINGS = {
    "llama3": dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0,
                   high_freq_factor=4.0, original_max_position_embeddings=32),
    "linear": dict(rope_type="linear", factor=4.0),
    "yarn": dict(rope_type="yarn", factor=8.0, original_max_position_embeddings=32),
}


def main():
    H.start()
    H.SEQ_LENS = [5, 60, 200]
    g = torch.Generator().manual_seed(77)
    H.PROMPTS = [[1] + torch.randint(3, H.VOCAB, (39,), generator=g).tolist(), [1, 5, 9]]
    seqs = H.make_sequences(4321)
    common = dict(H.COMMON, max_position_embeddings=256)
    for i, (name, rp) in enumerate(sorted(SCALINGS.items())):
        d = H.out("llama-rope-" + name)
        cfg = LlamaConfig(rope_parameters=dict(rp, rope_theta=10000.0), rms_norm_eps=1e-5,
                          tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                          **common)
        H.first_fixture(LlamaForCausalLM, cfg, d, seqs, range(10 + 10 * i, 20 + 10 * i))
        H.finish(d)


if __name__ == "__main__":
    main()
