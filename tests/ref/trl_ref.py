#!/usr/bin/env python3
"""TRL's own loss code on the inputs of tests/data/algo/ref.json, written to
tests/data/algo/trl.json for tests/test_algo_trl.c.

What is called (TRL version recorded in the output):
- DPO: trl.DPOTrainer._compute_loss, the real method, bound to a minimal
  stand-in `self` (beta, loss_types, accelerator with identity gathers...)
  and a stand-in model whose output carries the per-token log-probs of the
  completion (0 elsewhere, as TRL's fused head gives for labels -100), with
  precomputed reference log-probs. loss_type sigmoid, hinge, ipo.
- GRPO: trl.GRPOTrainer._compute_loss, the real method, with a stand-in
  `self` whose _get_per_token_logps_and_entropies returns our log-probs;
  loss_type grpo, bnpo, dr_grpo with beta (kl coef) 0.04, asymmetric eps,
  each with importance_sampling_level token and sequence (GSPO).
  Group advantages: the lines of GRPOTrainer._generate_and_score_completions
  that turn rewards into advantages (scale_rewards group / none / batch)
  are replicated here with TRL's own nanstd (that method needs a model and a
  generation backend).
- ORPO: trl.experimental.orpo.ORPOTrainer.odds_ratio_loss, the real method
  (stand-in self with beta = lambda); the total loss is TRL's
  `policy_nll_loss - losses.mean()` with the NLL written as the token mean
  of -log p over the chosen completion tokens (TRL takes it from
  nn.CrossEntropyLoss over logits, which we do not have here).
- SimPO: trl.experimental.cpo.CPOTrainer.cpo_loss (loss_type simpo), the
  real method, on mean completion log-probs.
- KTO: trl.experimental.kto.KTOTrainer._compute_loss, the real method, with
  a stand-in model, precomputed reference log-probs and a stand-in
  _compute_kl_logps for the KL completions (reference point z0 = 0.3).
- Reward model: trl.RewardTrainer.compute_loss, the real method, with a
  stand-in model returning the rewards as logits, margin and
  center_rewards_coefficient.
Gradients come from autograd through TRL's code.

Usage: python3 tests/ref/trl_ref.py [ref.json] [out.json]
"""
import json
import sys
import types
import warnings
from collections import defaultdict

import torch

warnings.filterwarnings("ignore")
import trl  # noqa: E402
from trl import DPOTrainer, GRPOTrainer, RewardTrainer  # noqa: E402
from trl.experimental.cpo import CPOTrainer  # noqa: E402
from trl.experimental.kto import KTOTrainer  # noqa: E402
from trl.experimental.orpo import ORPOTrainer  # noqa: E402
from trl.trainer.utils import nanstd  # noqa: E402

torch.set_default_dtype(torch.float64)
src = sys.argv[1] if len(sys.argv) > 1 else "tests/data/algo/ref.json"
dst = sys.argv[2] if len(sys.argv) > 2 else "tests/data/algo/trl.json"
ref = json.load(open(src))


def L(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def accel():
    return types.SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x,
                                 gather_for_metrics=lambda x: x, num_processes=1,
                                 reduce=lambda x, reduction="sum": x, sync_gradients=True)


def pad(flat, off, mask):
    """Packed (offsets, mask) -> padded (B, Lmax) values and mask."""
    B = len(off) - 1
    Lm = max(off[i + 1] - off[i] for i in range(B))
    v, m = torch.zeros(B, Lm), torch.zeros(B, Lm)
    for i in range(B):
        n = off[i + 1] - off[i]
        v[i, :n] = torch.tensor(flat[off[i]:off[i + 1]])
        m[i, :n] = torch.tensor(mask[off[i]:off[i + 1]])
    return v, m


def unpad(g, off):
    out = []
    for i in range(len(off) - 1):
        out += [float(x) for x in g[i, :off[i + 1] - off[i]].tolist()]
    return out


out = {"trl_version": trl.__version__}

# ------------------------------------------------------------------ DPO
p = ref["pref"]
lc, mc = pad(p["lp_c"], p["offsets_c"], p["mask_c"])
rc, _ = pad(p["ref_c"], p["offsets_c"], p["mask_c"])
lr, mr = pad(p["lp_r"], p["offsets_r"], p["mask_r"])
rr, _ = pad(p["ref_r"], p["offsets_r"], p["mask_r"])
W = max(lc.shape[1], lr.shape[1])


def widen(x):
    return torch.nn.functional.pad(x, (0, W - x.shape[1]))


lc, mc, rc, lr, mr, rr = map(widen, (lc, mc, rc, lr, mr, rr))
P = lc.shape[0]
out["dpo"] = []
for lt, beta in [("sigmoid", 0.1), ("hinge", 0.3), ("ipo", 0.1)]:
    tok = torch.cat([lc * mc, lr * mr]).clone().requires_grad_(True)
    cmask = torch.cat([mc, mr])
    # TRL shifts: completion_mask[..., 1:] aligns with the log-probs.
    completion_mask = torch.cat([torch.zeros(2 * P, 1), cmask], 1).long()

    def model(**kw):
        return types.SimpleNamespace(log_probs=tok, entropy=torch.zeros_like(tok),
                                     mean_logits=torch.zeros_like(tok),
                                     is_top1=torch.zeros_like(tok, dtype=torch.bool))

    me = types.SimpleNamespace(
        model=types.SimpleNamespace(training=True), accelerator=accel(), aux_loss_enabled=False,
        ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[lt],
        loss_weights=[1.0], beta=beta, label_smoothing=0.0, use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0,
        _tp_size=1)
    inputs = {"input_ids": torch.zeros(2 * P, W + 1, dtype=torch.long),
              "attention_mask": torch.ones(2 * P, W + 1, dtype=torch.long),
              "completion_mask": completion_mask,
              "ref_chosen_logps": (rc * mc).sum(1), "ref_rejected_logps": (rr * mr).sum(1)}
    loss = DPOTrainer._compute_loss(me, model, inputs, False)
    loss.backward()
    g = tok.grad * cmask  # d/d lp of the fed lp * mask
    mt = me._metrics["train"]
    out["dpo"].append({"loss_type": lt, "beta": beta, "loss": float(loss),
                       "grad_c": unpad(g[:P], p["offsets_c"]), "grad_r": unpad(g[P:], p["offsets_r"]),
                       "reward_chosen": mt["rewards/chosen"][0],
                       "reward_rejected": mt["rewards/rejected"][0],
                       "margin": mt["rewards/margins"][0], "accuracy": mt["rewards/accuracies"][0]})

# ----------------------------------------------------------------- ORPO
lam = 0.1
xc = lc.clone().requires_grad_(True)
xr = lr.clone().requires_grad_(True)
c = (xc * mc).sum(1) / mc.sum(1)
q = (xr * mr).sum(1) / mr.sum(1)
me = types.SimpleNamespace(beta=lam, accelerator=accel())
losses, cr, rj, ratio, log_odds = ORPOTrainer.odds_ratio_loss(me, c, q)
nll = -(xc * mc).sum() / mc.sum()
loss = nll - losses.mean()
loss.backward()
out["orpo"] = {"lambda": lam, "loss": float(loss), "nll": float(nll),
               "log_odds": float(log_odds), "grad_c": unpad(xc.grad, p["offsets_c"]),
               "grad_r": unpad(xr.grad, p["offsets_r"]), "reward_chosen": float(cr.mean()),
               "reward_rejected": float(rj.mean())}

# ---------------------------------------------------------------- SimPO
# CPOTrainer.cpo_loss with loss_type simpo on mean completion log-probs (the
# CPO trainer averages for simpo); plumb's SimPO is that term alone (TRL's
# cpo_alpha NLL term is 0 for pure SimPO).
xc = lc.clone().requires_grad_(True)
xr = lr.clone().requires_grad_(True)
c = (xc * mc).sum(1) / mc.sum(1)
q = (xr * mr).sum(1) / mr.sum(1)
me = types.SimpleNamespace(alpha=0.0, beta=2.0, simpo_gamma=0.5, label_smoothing=0.1,
                           loss_type="simpo", accelerator=accel())
losses, cr, rj = CPOTrainer.cpo_loss(me, c, q)
loss = losses.mean()
loss.backward()
out["simpo"] = {"beta": 2.0, "gamma": 0.5, "label_smoothing": 0.1, "loss": float(loss),
                "grad_c": unpad(xc.grad, p["offsets_c"]), "grad_r": unpad(xr.grad, p["offsets_r"]),
                "reward_chosen": float(cr.mean()), "reward_rejected": float(rj.mean())}

# ------------------------------------------------------------------ KTO
# KTOTrainer._compute_loss on the chosen batch with labels [1, 0, 1], a
# stand-in model (completion log-probs), precomputed reference log-probs and
# KL completions whose mean log-ratio is 0.3 (the reference point z0).
des = [1, 0, 1]
tok = (lc * mc).clone().requires_grad_(True)
KL_logps = torch.tensor([0.4, 0.3, 0.2])


def kto_model(**kw):
    return types.SimpleNamespace(log_probs=tok, entropy=torch.zeros_like(tok),
                                 mean_logits=torch.zeros_like(tok))


me = types.SimpleNamespace(
    model=types.SimpleNamespace(training=True), accelerator=accel(), aux_loss_enabled=False,
    precompute_ref_logps=True, calculate_KL=True, loss_type="kto", beta=0.1,
    desirable_weight=1.3, undesirable_weight=0.7, _total_train_tokens=0, _tp_size=1,
    _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    _compute_kl_logps=lambda model, batch: KL_logps)
inputs = {"input_ids": torch.zeros(P, W + 1, dtype=torch.long),
          "attention_mask": torch.ones(P, W + 1, dtype=torch.long),
          "completion_mask": torch.cat([torch.zeros(P, 1), mc], 1).long(),
          "label": torch.tensor(des), "ref_logps": (rc * mc).sum(1),
          "ref_KL_logps": torch.zeros(P)}
loss = KTOTrainer._compute_loss(me, kto_model, inputs, False)
loss.backward()
mt = me._metrics["train"]
out["kto"] = {"desirable": des, "beta": 0.1, "desirable_weight": 1.3, "undesirable_weight": 0.7,
              "kl": mt["kl"][0], "loss": float(loss), "grad": unpad(tok.grad * mc, p["offsets_c"]),
              "reward_chosen": mt["rewards/chosen"][0], "reward_rejected": mt["rewards/rejected"][0]}

# ------------------------------------------------------------------ RM
b = ref["bt"]
rcw, rrw, mg = torch.tensor(b["r_c"]), torch.tensor(b["r_r"]), torch.tensor(b["margin"])
logits = torch.cat([rcw, rrw]).unsqueeze(-1).clone().requires_grad_(True)
out["rm"] = []
for cc in [None, 0.01]:
    if logits.grad is not None:
        logits.grad = None
    me = types.SimpleNamespace(
        model=types.SimpleNamespace(training=True), accelerator=accel(),
        args=types.SimpleNamespace(center_rewards_coefficient=cc), _total_train_tokens=0,
        _tp_size=1, _metrics={"train": defaultdict(list), "eval": defaultdict(list)})
    inputs = {"margin": mg, "attention_mask": torch.ones(2 * len(b["r_c"]), 3, dtype=torch.long)}
    loss = RewardTrainer.compute_loss(me, lambda **kw: types.SimpleNamespace(logits=logits), inputs)
    loss.backward()
    n = len(b["r_c"])
    out["rm"].append({"center_coef": cc or 0.0, "loss": float(loss),
                      "grad_c": L(logits.grad[:n]), "grad_r": L(logits.grad[n:]),
                      "accuracy": me._metrics["train"]["accuracy"][0],
                      "margin": me._metrics["train"]["margin"][0]})

# ---------------------------------------------------------------- GRPO
# The policy batch of ref.json without its fully masked sequence (TRL's
# "grpo" mean counts such a sequence as a 0; plumb leaves it out).
keep = [0, 1, 2, 4]
offs, msk = ref["offsets"], ref["mask"]
sub_off, sub = [0], {k: [] for k in ["lp", "lp_old", "lp_ref", "adv", "mask"]}
for s in keep:
    for k in sub:
        src_ = msk if k == "mask" else ref[k]
        sub[k] += src_[offs[s]:offs[s + 1]]
    sub_off.append(sub_off[-1] + offs[s + 1] - offs[s])
# one advantage per sequence (GRPO broadcasts), and no +-50 log-ratios:
# TRL clamps neither the ratio nor k3. The sequence ratios (GSPO) are 1.13,
# 0.95, 0.88 and 1.53: with these advantages the first two pass, the third
# clips below (1 - 0.1) and the fourth above (1 + 0.28).
seq_adv = [0.8, -1.1, -0.3, 0.4]
for i in range(len(keep)):
    for t in range(sub_off[i], sub_off[i + 1]):
        sub["adv"][t] = seq_adv[i]
        sub["lp_ref"][t] = sub["lp"][t] + 0.5 * ((t * 7919) % 13 - 6) / 6.0
lp_p, m_p = pad(sub["lp"], sub_off, sub["mask"])
old_p, _ = pad(sub["lp_old"], sub_off, sub["mask"])
ref_p, _ = pad(sub["lp_ref"], sub_off, sub["mask"])
Bg, Lg = lp_p.shape
MAXC = 9
out["grpo"] = {"offsets": sub_off, "mask": sub["mask"], "lp": sub["lp"], "lp_old": sub["lp_old"],
               "lp_ref": sub["lp_ref"], "seq_adv": seq_adv, "max_completion_length": MAXC,
               "cases": []}
for lt, level in [(lt, lv) for lv in ["token", "sequence"] for lt in ["grpo", "bnpo", "dr_grpo"]]:
    x = lp_p.clone().requires_grad_(True)
    me = types.SimpleNamespace(
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level=level,
        beta=0.04, args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None),
        loss_type=lt, epsilon_low=0.1, epsilon_high=0.28, use_vllm=False,
        vllm_importance_sampling_correction=False, model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=MAXC,
        _entropy_bonus_enabled=False, aux_loss_enabled=False, accelerator=accel(),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _get_per_token_logps_and_entropies=lambda *a, **k: (x, torch.ones_like(x), None))
    inputs = {"prompt_ids": torch.zeros(Bg, 1, dtype=torch.long),
              "prompt_mask": torch.ones(Bg, 1, dtype=torch.long),
              "completion_ids": torch.zeros(Bg, Lg, dtype=torch.long), "completion_mask": m_p,
              "advantages": torch.tensor(seq_adv), "old_per_token_logps": old_p,
              "ref_per_token_logps": ref_p}
    loss = GRPOTrainer._compute_loss(me, None, inputs)
    loss.backward()
    out["grpo"]["cases"].append({"loss_type": lt, "importance_sampling_level": level, "beta": 0.04, "epsilon_low": 0.1,
                                 "epsilon_high": 0.28, "loss": float(loss),
                                 "grad": unpad(x.grad, sub_off),
                                 "kl": me._metrics["train"]["kl"][0]})

# Advantages, as GRPOTrainer._generate_and_score_completions computes them.
ga = ref["group_adv"]
rewards = torch.tensor(ga["scores"])
G = ga["group_size"]
out["grpo_adv"] = {"scores": ga["scores"], "group_size": G}
for scale in ["group", "none", "batch"]:
    mean_grouped = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    if scale in ["group", "none"]:
        std = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    else:
        std = nanstd(rewards).expand_as(rewards)
    a = rewards - mean_grouped
    if scale != "none":
        a = a / (std + 1e-4)
    out["grpo_adv"][scale] = {"adv": L(a), "std": L(std)}

with open(dst, "w") as f:
    json.dump(out, f, indent=1)
print("wrote", dst, "with TRL", trl.__version__)
