#!/usr/bin/env python3
"""Write a llama2.c legacy-format (version 0) checkpoint with random weights.

Layout (little-endian), as read by llama2.c's run.c:
  header: 7 x int32  dim, hidden_dim, n_layers, n_heads, n_kv_heads,
                     vocab_size, seq_len
          (vocab_size is written negative when the classifier is NOT shared
           with the token embedding)
  then float32 arrays, in this order:
    token_embedding (V, dim)
    rms_att         (L, dim)
    wq              (L, dim, dim)        # rows = n_heads*head_size outputs
    wk              (L, kv_dim, dim)
    wv              (L, kv_dim, dim)
    wo              (L, dim, dim)
    rms_ffn         (L, dim)
    w1              (L, hidden, dim)
    w2              (L, dim, hidden)
    w3              (L, hidden, dim)
    rms_final       (dim)
    freq_cis_real   (seq_len, head_size/2)   # ignored by run.c
    freq_cis_imag   (seq_len, head_size/2)   # ignored by run.c
    wcls            (V, dim)                 # only when --unshared

Weights are N(0, (std/sqrt(fan_in))^2) for the linear layers and
N(0, std^2) for the token embedding (and wcls), RMSNorm weights are
1 + 0.1*N(0,1).  Everything is drawn from numpy's default_rng(seed) in a
fixed order, so the output is a deterministic function of the arguments.

Only numpy is needed.
"""
import argparse
import struct
import sys

import numpy as np


def build(args):
    dim, hidden, L = args.dim, args.hidden, args.layers
    nh, nkv, V, T = args.heads, args.kv_heads, args.vocab, args.seq_len
    if dim % nh != 0:
        sys.exit("dim must be divisible by heads")
    if nh % nkv != 0:
        sys.exit("heads must be divisible by kv-heads")
    hs = dim // nh
    if hs % 2 != 0:
        sys.exit("head_size must be even")
    kv_dim = nkv * hs
    rng = np.random.default_rng(args.seed)
    std = args.std

    def lin(*shape):
        fan_in = shape[-1]
        return (rng.standard_normal(shape) * (std / np.sqrt(fan_in))).astype(np.float32)

    def norm(*shape):
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)

    arrays = []
    arrays.append(("token_embedding", (rng.standard_normal((V, dim)) * std).astype(np.float32)))
    arrays.append(("rms_att", norm(L, dim)))
    arrays.append(("wq", lin(L, dim, dim)))
    arrays.append(("wk", lin(L, kv_dim, dim)))
    arrays.append(("wv", lin(L, kv_dim, dim)))
    arrays.append(("wo", lin(L, dim, dim)))
    arrays.append(("rms_ffn", norm(L, dim)))
    arrays.append(("w1", lin(L, hidden, dim)))
    arrays.append(("w2", lin(L, dim, hidden)))
    arrays.append(("w3", lin(L, hidden, dim)))
    arrays.append(("rms_final", norm(dim)))
    # RoPE tables as the old export wrote them (run.c skips them)
    inv = 1.0 / (10000.0 ** (np.arange(0, hs, 2, dtype=np.float64) / hs))
    ang = np.outer(np.arange(T, dtype=np.float64), inv)
    arrays.append(("freq_cis_real", np.cos(ang).astype(np.float32)))
    arrays.append(("freq_cis_imag", np.sin(ang).astype(np.float32)))
    if args.unshared:
        arrays.append(("wcls", (rng.standard_normal((V, dim)) * std).astype(np.float32)))

    header = struct.pack("<7i", dim, hidden, L, nh, nkv, -V if args.unshared else V, T)
    return header, arrays


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=172)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=None,
                    help="default: same as --heads")
    ap.add_argument("--vocab", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=2.0,
                    help="scale: linear weights ~ N(0,(std/sqrt(fan_in))^2), "
                         "embedding ~ N(0,std^2)")
    ap.add_argument("--unshared", action="store_true",
                    help="write a separate classifier (negative vocab_size)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.kv_heads is None:
        args.kv_heads = args.heads

    header, arrays = build(args)
    n = 0
    with open(args.out, "wb") as f:
        f.write(header)
        for _, a in arrays:
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
            n += a.size
    print(f"wrote {args.out}: {n} floats ({len(header) + 4 * n} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
