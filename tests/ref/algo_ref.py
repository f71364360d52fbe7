#!/usr/bin/env python3
"""Independent reference for algo/: every loss and estimator of
/work/shared/ALGORITHMS.md written again in torch (float64, autograd for the
gradients), on seeded random inputs, written to tests/data/algo/ref.json.

Nothing here is translated from the C code: the formulas are the ones in
ALGORITHMS.md, the gradients come from torch.autograd, and the packed batch
(offsets + response mask) is unpacked into per-sequence tensors. Inputs are
rounded to float32 first, so the C side sees exactly the same numbers.
tests/test_algo_ref.c replays the inputs and compares.

Usage: python3 tests/ref/algo_ref.py [out.json]
"""
import json
import math
import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(1234)


def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def T(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def L(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


# ------------------------------------------------------------- the batch
# 5 sequences of varied length; prompt tokens masked at the start, one
# truncated sequence (mask ends with 1), one with a masked hole, one fully
# masked and one single-token response.
lens = [7, 5, 9, 3, 6]
masks = [
    [0, 0, 1, 1, 1, 1, 1],
    [0, 1, 1, 1, 1],
    [0, 0, 0, 1, 1, 0, 1, 1, 1],
    [0, 0, 0],
    [0, 0, 0, 0, 0, 1],
]
offsets = [0]
for n in lens:
    offsets.append(offsets[-1] + n)
N, B = offsets[-1], len(lens)
mask = np.array(sum(masks, []), dtype=np.float64)
MAX_NEW = 8

lp_old = f32(-0.3 - 2.0 * rng.random(N))
lp = f32(lp_old + np.log(rng.uniform(0.5, 1.7, N)))
lp_ref = f32(lp + 0.6 * rng.standard_normal(N))
lp_ref[3] = lp[3] + 50.0  # an extreme log-ratio: k clamps at -20
lp_ref[4] = lp[4] - 50.0
lp_ref = f32(lp_ref)
adv = f32(rng.standard_normal(N))
ent = f32(rng.uniform(0.5, 3.0, N))
values = f32(rng.standard_normal(N))
values_old = f32(values + 0.3 * rng.standard_normal(N))
returns = f32(rng.standard_normal(N))
scores = f32([2.5, -0.7, 14.0, 3.0, -12.0])
rewards_tok = f32(rng.standard_normal(N))


def seqs(x):
    """Split a flat tensor into per-sequence (values, mask) pairs."""
    return [(x[offsets[b]:offsets[b + 1]], T(mask[offsets[b]:offsets[b + 1]])) for b in range(B)]


def agg(x, kind):
    """loss_agg over the batch (ALGORITHMS.md, Loss aggregation)."""
    parts = seqs(x)
    if kind == "token_mean":
        tot = sum(m.sum() for _, m in parts)
        return sum((v * m).sum() for v, m in parts) / tot if tot > 0 else x.sum() * 0
    if kind == "seq_mean_token_mean":
        means = [(v * m).sum() / m.sum() for v, m in parts if m.sum() > 0]
        return sum(means) / len(means)
    return sum((v * m).sum() for v, m in parts) / (B * MAX_NEW)


def MM(x):
    m = T(mask)
    return float((x * m).sum() / m.sum())


def kl_est(kind, a, b):
    d = torch.clamp(a - b, -20, 20)
    if kind == "k1":
        return d
    if kind == "k2":
        return d * d / 2
    return torch.clamp(torch.exp(-d) + d - 1, -10, 10)


out = {"offsets": offsets, "mask": L(T(mask)), "max_new_tokens": MAX_NEW,
       "lp": L(T(lp)), "lp_old": L(T(lp_old)), "lp_ref": L(T(lp_ref)), "adv": L(T(adv)),
       "ent": L(T(ent)), "values": L(T(values)), "values_old": L(T(values_old)),
       "returns": L(T(returns)), "scores": L(T(scores)), "rewards_tok": L(T(rewards_tok))}
AGGS = ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]

# ------------------------------------------------------------------ KL
out["kl"] = {}
for k in ["k1", "k2", "k3"]:
    x = T(lp, True)
    v = kl_est(k, x, T(lp_ref))
    v.sum().backward()
    out["kl"][k] = {"kl": L(v), "grad": L(x.grad)}

# ---------------------------------------------------- agg and whitening
out["agg"] = {}
for a in AGGS:
    x = T(adv, True)
    v = agg(x, a)
    v.backward()
    out["agg"][a] = {"value": float(v.detach()), "grad": L(x.grad)}
m = T(mask)
A = T(adv)
mu = (A * m).sum() / m.sum()
var = (((A - mu) ** 2) * m).sum() / (m.sum() - 1)
out["whiten"] = L(((A - mu) / torch.sqrt(var + 1e-8)) * m)

# ------------------------------------------------------- PPO rewards, GAE
KL_COEF, CLIP = 0.05, 10.0
r = -KL_COEF * kl_est("k1", T(lp), T(lp_ref)) * m
for b in range(B):
    idx = [t for t in range(offsets[b], offsets[b + 1]) if mask[t] > 0]
    if idx:
        r[idx[-1]] += float(np.clip(scores[b], -CLIP, CLIP))
out["ppo_rewards"] = {"kl_coef": KL_COEF, "reward_clip": CLIP, "rewards": L(r)}

GAMMA, LAM = 0.99, 0.95
advg, retg = np.zeros(N), np.zeros(N)
for b in range(B):
    idx = [t for t in range(offsets[b], offsets[b + 1]) if mask[t] > 0]
    nv, na = 0.0, 0.0
    for t in reversed(idx):
        delta = rewards_tok[t] + GAMMA * nv - values[t]
        na = delta + GAMMA * LAM * na
        advg[t], retg[t] = na, na + values[t]
        nv = values[t]
out["gae"] = {"gamma": GAMMA, "lambda": LAM, "adv": advg.tolist(), "ret": retg.tolist()}

# --------------------------------------------------------- policy loss
out["policy"] = []
for a in AGGS:
    for variant in [dict(clip_low=0.2, clip_high=0.2, dual_clip=0.0, kl_coef=0.0),
                    dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0, kl_coef=0.0),
                    dict(clip_low=0.1, clip_high=0.3, dual_clip=0.0, kl_coef=0.04)]:
        x = T(lp, True)
        A = T(adv)
        rho = torch.exp(torch.clamp(x - T(lp_old), -20, 20))
        l1 = -A * rho
        l2 = -A * torch.clamp(rho, 1 - variant["clip_low"], 1 + variant["clip_high"])
        pg = torch.maximum(l1, l2)
        if variant["dual_clip"]:
            pg = torch.where(A < 0, torch.minimum(pg, -variant["dual_clip"] * A), pg)
        tok = pg + variant["kl_coef"] * kl_est("k3", x, T(lp_ref))
        loss = agg(tok, a)
        loss.backward()
        rec = dict(variant, agg=a, loss=float(loss), grad=L(x.grad),
                   clipfrac=MM((l2 > l1).double()),
                   approx_kl=MM(T(lp_old) - T(lp)), entropy=MM(T(ent)))
        out["policy"].append(rec)

# ---------------------------------------------------------- value loss
out["value"] = []
for a in AGGS:
    v = T(values, True)
    vo, R = T(values_old), T(returns)
    vc = torch.clamp(v, vo - 0.2, vo + 0.2)
    e1, e2 = (v - R) ** 2, (vc - R) ** 2
    loss = 0.5 * agg(torch.maximum(e1, e2), a)
    loss.backward()
    out["value"].append({"agg": a, "clip": 0.2, "loss": float(loss), "grad": L(v.grad),
                         "clipfrac": MM((e2 > e1).double())})

# ------------------------------------------------------ GRPO advantages
gs = f32(rng.integers(0, 3, 12).astype(np.float64) + 0.25 * rng.standard_normal(12))
gs[8:12] = 1.5  # a constant group
G = 4
S = T(gs).reshape(-1, G)
mean_g = S.mean(1, keepdim=True)
std_g = S.std(1, unbiased=True, keepdim=True)
grp = {"scores": L(T(gs)), "group_size": G,
       "group": L((S - mean_g) / (std_g + 1e-6)),
       "none": L(S - mean_g),
       "rloo": L(S - (S.sum(1, keepdim=True) - S) / (G - 1)),
       "batch": L((S - mean_g) / (T(gs).std(unbiased=True) + 1e-6))}
out["group_adv"] = grp

# REINFORCE++: discounted returns over the masked tokens, whitened.
ret = np.zeros(N)
for b in range(B):
    g = 0.0
    for t in reversed([t for t in range(offsets[b], offsets[b + 1]) if mask[t] > 0]):
        g = rewards_tok[t] + GAMMA * g
        ret[t] = g
Rt = T(ret)
mu = (Rt * m).sum() / m.sum()
var = (((Rt - mu) ** 2) * m).sum() / (m.sum() - 1)
out["reinforce_pp"] = {"gamma": GAMMA, "adv": L(((Rt - mu) / torch.sqrt(var + 1e-8)) * m)}

# ------------------------------------------------- preference losses
# Pairs: chosen = sequences 0, 1, 2 (their masks), rejected = a second batch
# of 3 sequences; ref log-probs for both.
PC = [0, 1, 2]
offc = [0, lens[0], lens[0] + lens[1], lens[0] + lens[1] + lens[2]]
NC = offc[-1]
mc = mask[:NC]
lens_r = [4, 6, 2]
mr = np.array([0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1], dtype=np.float64)
offr = [0, 4, 10, 12]
NR = offr[-1]
lc, rc = f32(lp[:NC]), f32(lp_ref[:NC])
rc[3:5] = f32(lc[3:5] - 0.3)  # keep the pairs away from the +-50 tokens
lr_ = f32(-0.3 - 2.0 * rng.random(NR))
rr = f32(lr_ + 0.6 * rng.standard_normal(NR))
P = 3
out["pref"] = {"offsets_c": offc, "mask_c": L(T(mc)), "offsets_r": offr, "mask_r": L(T(mr)),
               "lp_c": L(T(lc)), "ref_c": L(T(rc)), "lp_r": L(T(lr_)), "ref_r": L(T(rr))}


def seq_sums(x, off, mk):
    return torch.stack([(x[off[i]:off[i + 1]] * T(mk[off[i]:off[i + 1]])).sum() for i in range(P)])


def counts(off, mk):
    return T([mk[off[i]:off[i + 1]].sum() for i in range(P)])


def logsig(x):
    return torch.nn.functional.logsigmoid(x)


def pref_rec(loss, xc, xr, rwc, rwr, **extra):
    loss.backward()
    d = {"loss": float(loss), "grad_c": L(xc.grad), "grad_r": L(xr.grad),
         "reward_chosen": float(rwc.mean()), "reward_rejected": float(rwr.mean()),
         "margin": float((rwc - rwr).mean()), "accuracy": float((rwc > rwr).double().mean())}
    d.update(extra)
    return d


out["dpo"] = []
for lt, beta, eps in [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.15), ("ipo", 0.1, 0.0),
                      ("hinge", 0.3, 0.0)]:
    xc, xr = T(lc, True), T(lr_, True)
    lrc = seq_sums(xc, offc, mc) - seq_sums(T(rc), offc, mc)
    lrr = seq_sums(xr, offr, mr) - seq_sums(T(rr), offr, mr)
    rwc, rwr = beta * lrc.detach(), beta * lrr.detach()  # rewards on sums
    if lt == "ipo":
        lrc, lrr = lrc / counts(offc, mc), lrr / counts(offr, mr)
    D = lrc - lrr
    if lt == "sigmoid":
        losses = -(1 - eps) * logsig(beta * D) - eps * logsig(-beta * D)
    elif lt == "ipo":
        losses = (D - 1 / (2 * beta)) ** 2
    else:
        losses = torch.relu(1 - beta * D)
    rec = pref_rec(losses.mean(), xc, xr, rwc, rwr)
    rec.update(loss_type=lt, beta=beta, label_smoothing=eps)
    out["dpo"].append(rec)

xc, xr = T(lc, True), T(lr_, True)
beta, gamma, eps = 2.0, 0.5, 0.1
c = seq_sums(xc, offc, mc) / counts(offc, mc)
q = seq_sums(xr, offr, mr) / counts(offr, mr)
x = beta * (c - q) - gamma
rec = pref_rec((-(1 - eps) * logsig(x) - eps * logsig(-x)).mean(), xc, xr, beta * c.detach(),
               beta * q.detach())
rec.update(beta=beta, gamma=gamma, label_smoothing=eps)
out["simpo"] = rec

# KTO on the chosen batch: sequences 0 and 2 desirable, 1 undesirable.
des = [1, 0, 1]
xc = T(lc, True)
beta, kl0, wd, wu = 0.1, 0.3, 1.3, 0.7
lrc = seq_sums(xc, offc, mc) - seq_sums(T(rc), offc, mc)
z0 = max(kl0, 0.0)
losses = torch.stack([wd * (1 - torch.sigmoid(beta * (lrc[i] - z0))) if des[i]
                      else wu * (1 - torch.sigmoid(beta * (z0 - lrc[i]))) for i in range(P)])
loss = losses.mean()
loss.backward()
out["kto"] = {"desirable": des, "beta": beta, "kl": kl0, "desirable_weight": wd,
              "undesirable_weight": wu, "loss": float(loss), "grad": L(xc.grad),
              "reward_chosen": float(beta * (lrc[0] + lrc[2]).detach() / 2),
              "reward_rejected": float(beta * lrc[1].detach())}

# ORPO
xc, xr = T(lc, True), T(lr_, True)
lam = 0.1
c = seq_sums(xc, offc, mc) / counts(offc, mc)
q = seq_sums(xr, offr, mr) / counts(offr, mr)


def log1mexp(v):
    return torch.where(v < -math.log(2), torch.log1p(-torch.exp(v)), torch.log(-torch.expm1(v)))


lo = (c - q) - (log1mexp(c) - log1mexp(q))
nll = -seq_sums(xc, offc, mc).sum() / counts(offc, mc).sum()
loss = nll - lam * logsig(lo).mean()
rec = pref_rec(loss, xc, xr, lam * c.detach(), lam * q.detach(), nll=float(nll),
               log_odds=float(lo.mean()))
rec["lambda"] = lam
out["orpo"] = rec

# Bradley-Terry
rcw = f32(1.5 * rng.standard_normal(6))
rrw = f32(1.5 * rng.standard_normal(6))
mg = f32(0.5 * rng.random(6))
a_, b_ = T(rcw, True), T(rrw, True)
cc = 0.01
loss = -logsig(a_ - b_ - T(mg)).mean() + cc * ((a_ + b_) ** 2).mean()
loss.backward()
out["bt"] = {"r_c": L(T(rcw)), "r_r": L(T(rrw)), "margin": L(T(mg)), "center_coef": cc,
             "loss": float(loss), "grad_c": L(a_.grad), "grad_r": L(b_.grad),
             "accuracy": float((T(rcw) > T(rrw)).double().mean())}

# ----------------------------------------------------------- log-probs
NL, V, TEMP = 6, 11, 0.7
logits = f32(2.0 * rng.standard_normal((NL, V)))
targets = [3, 0, 10, -1, 7, 5]
wa = f32(rng.standard_normal(NL))
we = f32(rng.standard_normal(NL))
z = T(logits, True)
zz = z / TEMP
lse = torch.logsumexp(zz, 1)
lps = torch.stack([zz[i, targets[i]] - lse[i] if targets[i] >= 0 else lse[i] * 0
                   for i in range(NL)])
p = torch.softmax(zz, 1)
H = lse - (p * zz).sum(1)
(T(wa) * lps + T(we) * H).sum().backward()
out["logprobs"] = {"V": V, "temperature": TEMP, "logits": L(T(logits)), "targets": targets,
                   "wlp": L(T(wa)), "went": L(T(we)), "lp": L(lps), "ent": L(H),
                   "grad": L(z.grad)}

path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/algo/ref.json"
with open(path, "w") as f:
    json.dump(out, f, indent=1)
print("wrote", path)
