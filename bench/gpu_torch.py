#!/usr/bin/env python3
"""PyTorch + transformers (+ peft) on the same checkpoint and the same
measures as `plumb bench`, for scripts/gpu-check.sh's benchmark stage.

    python3 bench/gpu_torch.py --model DIR [--device cuda] [--dtype float32]
        [--batch 1,64] [--prompt-len 64] [--tokens 128]
        [--train-batch 4] [--seq-len 512] [--steps 3] [--lora-rank 8]
        [--what decode,train,dpo]

Prints one JSON object per line:
  decode: greedy generate() with its KV cache, B random prompts of P ids,
          N new tokens each, EOS ignored; tokens/s of the new tokens of all
          sequences together, prefill excluded (a 1-token run is subtracted),
          best of 2 (plumb bench decode's measure);
  train:  forward + backward of B sequences of T random ids with a log-prob
          loss, LoRA rank R on q and v (peft) or every weight; ms per step,
          median of S after a warm-up (plumb bench train's measure);
  dpo:    one DPO step's compute: policy forward + backward on B chosen and
          B rejected sequences, and a reference forward on both (with LoRA
          the reference is the adapter switched off), in tokens/s.
--what picks which of the three run (all by default).
Runs on the CPU too (tiny checkpoints), which is how the script is tested
where there is no GPU."""
import argparse
import json
import statistics
import time

import torch


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def now(dev):
    sync(dev)
    return time.perf_counter()


def decode(model, dev, B, P, N, V):
    g = torch.Generator(device="cpu").manual_seed(1234)
    ids = torch.randint(0, V, (B, P), generator=g).to(dev)
    mask = torch.ones_like(ids)
    kw = dict(do_sample=False, attention_mask=mask, pad_token_id=0, eos_token_id=None)
    best = 0.0
    with torch.no_grad():
        for _ in range(2):
            t0 = now(dev)
            model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
            t_prefill = now(dev) - t0
            t0 = now(dev)
            out = model.generate(ids, max_new_tokens=N, min_new_tokens=N, **kw)
            t = now(dev) - t0 - t_prefill
            toks = B * (out.shape[1] - P - 1)
            if t <= 0:
                t += t_prefill
            best = max(best, toks / t)
    return best


def logprob_loss(model, ids):
    logits = model(input_ids=ids).logits[:, :-1].float()
    lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    return lp, -lp.mean()


def train(model, dev, B, T, steps, V):
    g = torch.Generator(device="cpu").manual_seed(99)
    ids = torch.randint(0, V, (B, T), generator=g).to(dev)
    ms = []
    for s in range(steps + 1):
        t0 = now(dev)
        model.zero_grad(set_to_none=True)
        _, loss = logprob_loss(model, ids)
        loss.backward()
        t = (now(dev) - t0) * 1e3
        if s:
            ms.append(t)
    return statistics.median(ms)


def dpo(model, dev, B, T, steps, V, lora):
    g = torch.Generator(device="cpu").manual_seed(7)
    chosen = torch.randint(0, V, (B, T), generator=g).to(dev)
    rejected = torch.randint(0, V, (B, T), generator=g).to(dev)
    both = torch.cat([chosen, rejected])
    ms = []
    for s in range(steps + 1):
        t0 = now(dev)
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            if lora:
                with model.disable_adapter():
                    ref, _ = logprob_loss(model, both)
            else:
                ref, _ = logprob_loss(model, both)  # a frozen copy costs the same forward
        lp, _ = logprob_loss(model, both)
        r = (lp - ref).sum(-1)
        loss = -torch.nn.functional.logsigmoid(0.1 * (r[:B] - r[B:])).mean()
        loss.backward()
        t = (now(dev) - t0) * 1e3
        if s:
            ms.append(t)
    return 2 * B * T / (statistics.median(ms) / 1e3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch", default="1,64")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--what", default="decode,train,dpo")
    a = ap.parse_args()
    what_run = set(a.what.split(","))
    if not what_run <= {"decode", "train", "dpo"}:
        ap.error(f"--what: one or more of decode, train, dpo, got {a.what!r}")
    from transformers import AutoModelForCausalLM

    dev = torch.device(a.device)
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype).to(dev)
    model.eval()
    V = model.config.vocab_size
    base = {"system": "torch", "torch": torch.__version__, "device": str(dev), "dtype": a.dtype}
    for B in (int(x) for x in a.batch.split(",")) if "decode" in what_run else ():
        tps = decode(model, dev, B, a.prompt_len, a.tokens, V)
        print(json.dumps(dict(base, what="decode", batch=B, prompt_len=a.prompt_len,
                              tokens=a.tokens, tokens_per_s=round(tps, 1))), flush=True)
    for full in (False, True) if what_run & {"train", "dpo"} else ():
        if full:
            m = model
            for p in m.parameters():
                p.requires_grad_(True)
        else:
            from peft import LoraConfig, get_peft_model

            for p in model.parameters():
                p.requires_grad_(False)
            m = get_peft_model(model, LoraConfig(r=a.lora_rank, lora_alpha=2 * a.lora_rank,
                                                 target_modules=["q_proj", "v_proj"],
                                                 lora_dropout=0.0))
        m.train()
        what = "full" if full else f"lora{a.lora_rank}"
        if "train" in what_run:
            t = train(m, dev, a.train_batch, a.seq_len, a.steps, V)
            toks = a.train_batch * a.seq_len
            print(json.dumps(dict(base, what="train", mode=what, batch=a.train_batch,
                                  seq_len=a.seq_len, ms_per_step=round(t, 2),
                                  tokens_per_s=round(toks / (t / 1e3), 1))), flush=True)
        if "dpo" in what_run:
            tps = dpo(m, dev, a.train_batch, a.seq_len, a.steps, V, lora=not full)
            print(json.dumps(dict(base, what="dpo", mode=what, pairs=a.train_batch,
                                  seq_len=a.seq_len, tokens_per_s=round(tps, 1))), flush=True)
        if not full:
            model = m.unload()  # the bare model again, for full fine-tuning
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
