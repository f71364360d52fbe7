#!/usr/bin/env python3
"""A tiny random Qwen3 checkpoint and transformers' values on it.

Run from the repository root (needs torch, transformers):

    python3 tests/ref/make_qwen3_ref.py

Writes tests/data/hf/qwen3/ (and qwen3-bf16/, the same weights in bf16): Qwen3ForCausalLM in the llama fixture's shape
(make_hf_ref.py) but with an explicit head_dim of 32 (hidden 64 / 4 heads
would give 16), q and k RMSNorm per head, no biases, tied embeddings and
rope_theta 1e6; expected.json in make_hf_ref.py's layout (fp32, CPU)."""
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_hf_ref as H  # noqa: E402
from transformers import Qwen3Config, Qwen3ForCausalLM  # noqa: E402


def main():
    H.start()
    seqs = H.make_sequences(1234)
    d = H.out("qwen3")
    cfg = Qwen3Config(head_dim=32, rope_theta=1000000.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, attention_bias=False,
                      use_sliding_window=False, **H.COMMON)
    m = H.first_fixture(Qwen3ForCausalLM, cfg, d, seqs, range(20, 30))
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    # the same weights stored as bfloat16, as Qwen3 checkpoints ship
    db = H.out("qwen3-bf16")
    shutil.rmtree(db, ignore_errors=True)
    m.to(torch.bfloat16).save_pretrained(db, safe_serialization=True)
    mb = H.load(Qwen3ForCausalLM, db, dtype=torch.bfloat16)
    H.write_json(os.path.join(db, "expected.json"), H.expected(mb, seqs))
    H.finish(d, db)


if __name__ == "__main__":
    main()
