#!/usr/bin/env python3
"""Independent reference for model/optim.c: torch.optim.AdamW + clip_grad_norm_
+ transformers' warmup schedules, written to tests/data/optim_ref.json.

Each case builds two parameter tensors (sizes 12 and 7, so clipping is
checked across buffers), feeds seeded gradients whose scale changes per step
(some steps clip, some do not), and records for every step the raw gradients,
the pre-clip global norm, the learning rate used by that step and the
parameters after it. tests/test_optim.c replays the gradients through
grad_clip + adamw_step and compares.

Usage: python3 tests/ref/optim_ref.py [out.json]
"""
import json
import math
import sys

import numpy as np
import torch

try:
    from transformers import (get_cosine_schedule_with_warmup,
                              get_cosine_with_min_lr_schedule_with_warmup,
                              get_linear_schedule_with_warmup,
                              get_constant_schedule_with_warmup)
    HAVE_HF = True
except ImportError:  # same lambdas as transformers.optimization
    HAVE_HF = False


def f32(x):
    """A Python float that is exactly the float32 the C side will hold."""
    return float(np.float32(x))


def hf_lambda(kind, warmup, total, min_lr_rate):
    def lam(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        if kind == "constant":
            return 1.0
        progress = float(step - warmup) / float(max(1, total - warmup))
        if kind == "linear":
            return max(0.0, float(total - step) / float(max(1, total - warmup)))
        f = 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))
        return max(0.0, f * (1 - min_lr_rate) + min_lr_rate)
    return lam


def make_scheduler(opt, kind, warmup, total, min_lr_rate):
    if HAVE_HF:
        if kind == "cosine" and min_lr_rate > 0:
            return get_cosine_with_min_lr_schedule_with_warmup(
                opt, warmup, total, min_lr_rate=min_lr_rate)
        if kind == "cosine":
            return get_cosine_schedule_with_warmup(opt, warmup, total)
        if kind == "linear":
            assert min_lr_rate == 0
            return get_linear_schedule_with_warmup(opt, warmup, total)
        return get_constant_schedule_with_warmup(opt, warmup)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, hf_lambda(kind, warmup, total, min_lr_rate))


CASES = [
    # name, schedule, warmup, total, min_lr_ratio, betas, wd, clip, steps, seed
    ("cosine_warmup", "cosine", 2, 6, 0.0, (0.9, 0.999), 0.1, 1.0, 6, 1),
    ("cosine_min_lr", "cosine", 1, 5, 0.1, (0.9, 0.95), 0.1, 1.0, 5, 2),
    ("linear_past_total", "linear", 1, 4, 0.0, (0.8, 0.99), 0.1, 0.5, 6, 3),
    ("constant_noclip", "constant", 0, 0, 0.0, (0.9, 0.999), 0.0, 0.0, 4, 4),
]
GRAD_SCALES = [3.0, 0.05, 1.5, 0.2, 0.8, 2.5]
SIZES = [(3, 4), (7,)]


def run_case(name, kind, warmup, total, min_lr, betas, wd, clip, nsteps, seed):
    gen = torch.Generator().manual_seed(seed)
    lr = f32(1e-3)
    b1, b2 = f32(betas[0]), f32(betas[1])
    eps = f32(1e-8)
    wd = f32(wd)
    params = [torch.nn.Parameter(torch.randn(*s, generator=gen, dtype=torch.float32))
              for s in SIZES]
    opt = torch.optim.AdamW(params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd,
                            foreach=False, fused=False)
    sched = make_scheduler(opt, kind, warmup, total, min_lr)
    flat = lambda ts: [float(x) for t in ts for x in t.detach().reshape(-1).tolist()]
    case = {
        "name": name,
        "config": {"lr": lr, "beta1": b1, "beta2": b2, "eps": eps, "weight_decay": wd,
                   "grad_clip": clip, "schedule": kind, "warmup_steps": warmup,
                   "total_steps": total, "min_lr_ratio": f32(min_lr)},
        "sizes": [int(np.prod(s)) for s in SIZES],
        "params0": flat(params),
        "steps": [],
    }
    for step in range(nsteps):
        scale = GRAD_SCALES[step % len(GRAD_SCALES)]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float32) * scale
        raw = flat(p.grad for p in params)
        if clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        else:
            norm = float(torch.linalg.vector_norm(
                torch.cat([p.grad.reshape(-1) for p in params]).double()))
        used_lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        case["steps"].append({"grads": raw, "grad_norm": norm, "lr": used_lr,
                              "params": flat(params)})
    return case


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/optim_ref.json"
    torch.set_num_threads(1)
    doc = {
        "generator": "tests/ref/optim_ref.py",
        "torch": torch.__version__,
        "schedules": "transformers" if HAVE_HF else "LambdaLR copy of transformers lambdas",
        "cases": [run_case(*c) for c in CASES],
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {out}: {len(doc['cases'])} cases ({doc['schedules']})")


if __name__ == "__main__":
    main()
