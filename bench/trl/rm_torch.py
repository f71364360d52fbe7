#!/usr/bin/env python3
"""An independent Bradley-Terry reward model in plain PyTorch, for comparing
with plumb's configs/rm-arith.yaml (see README.md in this folder).

transformers' LlamaForSequenceClassification (the model TRL's RewardTrainer
trains: a bias-free linear score head on the last non-pad token) loaded from
the SFT checkpoint plumb made, all weights trained, with the settings of
configs/rm-arith.yaml: 64 pairs a step drawn without replacement from a
shuffled pass over the training pairs, loss -log sigmoid(r_chosen -
r_rejected), AdamW (betas 0.9/0.999, eps 1e-8, no weight decay), gradient
norm clipped to 1, lr 3e-4 with 50 warmup steps then a cosine decay to 10%
over --steps. The training pairs are --train in --data: pref.jsonl and 2000
steps by default (the first rm-arith config), pref_dense.jsonl and 16000
steps for the config as it is now. Sequences are BOS + prompt bytes +
answer bytes + EOS, as plumb packs them; padding is on the right.

Every --eval-every steps it scores all held-out pairs (pairwise accuracy:
r_chosen > r_rejected), also split by how the rejected answer was made: off
by one, off by ten, or two digits swapped.

  rm_torch.py --model runs/sft-arith/final --data runs/arith --out rm.json
"""

import argparse
import json
import math
import platform
import random
import time

import torch

BOS, EOS, PAD = 256, 257, 258


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def kind(rec):
    d = int(rec["rejected"]) - int(rec["chosen"])
    return {1: "off_by_one", -1: "off_by_one", 10: "off_by_ten", -10: "off_by_ten"}.get(d, "swap")


def encode(rec, key):
    return [BOS] + list(rec["prompt"].encode()) + list(rec[key].encode()) + [EOS]


def scores(model, recs, key):
    seqs = [encode(r, key) for r in recs]
    n = max(map(len, seqs))
    ids = torch.full((len(seqs), n), PAD)
    att = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        att[i, : len(s)] = 1
    return model(input_ids=ids, attention_mask=att).logits[:, 0]


@torch.no_grad()
def evaluate(model, recs):
    model.eval()
    right = (scores(model, recs, "chosen") > scores(model, recs, "rejected")).tolist()
    model.train()
    out = {"accuracy": sum(right) / len(right)}
    for k in ("off_by_one", "off_by_ten", "swap"):
        sub = [ok for ok, r in zip(right, recs) if kind(r) == k]
        out[k] = sum(sub) / len(sub) if sub else None
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="runs/sft-arith/final")
    ap.add_argument("--data", default="runs/arith")
    ap.add_argument("--train", default="pref.jsonl", help="training pairs in --data")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    from transformers import LlamaForSequenceClassification

    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    torch.set_num_threads(a.threads)
    train = read_jsonl(f"{a.data}/{a.train}")
    held = read_jsonl(f"{a.data}/eval_pref.jsonl")
    model = LlamaForSequenceClassification.from_pretrained(a.model, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = PAD
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0)

    def lr_factor(s):
        if s < a.warmup:
            return (s + 1) / a.warmup
        p = (s - a.warmup) / max(1, a.steps - a.warmup)
        return a.min_lr_ratio + (1 - a.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    curve = [{"step": 0, **evaluate(model, held)}]
    print(json.dumps(curve[-1]), flush=True)
    order, t0, train_s = [], time.time(), 0.0
    for step in range(1, a.steps + 1):
        while len(order) < a.batch:
            order += rng.sample(range(len(train)), len(train))
        batch, order = [train[i] for i in order[: a.batch]], order[a.batch :]
        ts = time.time()
        margin = scores(model, batch, "chosen") - scores(model, batch, "rejected")
        loss = -torch.nn.functional.logsigmoid(margin).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        train_s += time.time() - ts
        if step % a.eval_every == 0 or step == a.steps:
            e = {"step": step, **evaluate(model, held), "train_batch_accuracy":
                 (margin > 0).float().mean().item(), "loss": loss.item()}
            curve.append(e)
            print(json.dumps(e), flush=True)
    out = {"settings": vars(a), "curve": curve, "train_s_per_step": train_s / a.steps,
           "wall_s": time.time() - t0, "torch": torch.__version__, "machine": platform.machine(),
           "threads": a.threads}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
