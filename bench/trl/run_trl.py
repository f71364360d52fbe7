#!/usr/bin/env python3
"""TRL side of the plumb vs TRL comparison (see README.md in this folder).

Runs TRL's own GRPOTrainer or DPOTrainer on CPU with the settings of
configs/grpo-arith.yaml / configs/dpo-arith.yaml as first written (or those
of any plumb config given with --config, with --set overrides), on the data
and SFT model that plumb made, and evaluates before and after the way plumb
does:

  eval/accuracy       greedy decoding (max_new_tokens 5) of the first 200
                      prompts of eval.jsonl; exact match of the stripped
                      completion (up to EOS) to the answer
  eval/pref_accuracy  (dpo) fraction of the first 200 pairs of
                      eval_pref.jsonl where the policy's summed completion
                      log-prob (completion + EOS) of chosen > rejected
  eval/reward_accuracy (dpo) the same with the implicit reward
                      (policy - reference log-prob)

Usage (from the repository root):
  run_trl.py grpo --model runs/sft-arith/final --data runs/arith --steps 100
      --out bench/trl/results-grpo.json
  run_trl.py dpo  --model runs/sft-arith/final --data runs/arith --steps 100
      --out bench/trl/results-dpo.json
  run_trl.py grpo --config configs/grpo-arith.yaml --set optim.lr=1e-3
      --out /tmp/grpo.json
"""

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

# The settings of configs/grpo-arith.yaml and configs/dpo-arith.yaml, plus
# the plumb defaults they rely on (build/plumb train --help-config).
PLUMB = {
    "common": {
        "seed": 1,
        "lora_rank": 16,
        "lora_alpha": 32,
        "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "lr": 1.0e-3,
        "weight_decay": 0.0,
        "grad_clip": 1.0,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "schedule": "constant",
        "warmup_steps": 0,
        "eval_n": 200,
        "eval_max_new_tokens": 5,
    },
    "grpo": {
        "batch_size": 16,          # prompts per step
        "group_size": 8,           # completions per prompt
        "kl_coef": 0.04,           # k3 estimator, in the loss
        "clip_low": 0.2,
        "clip_high": 0.2,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "max_new_tokens": 5,
        "reward_type": "exact_match",
        "loss_agg": "token_mean",
        "advantage": "group",
        "epochs": 1,
        "minibatches": 1,
    },
    "dpo": {
        "batch_size": 32,          # pairs per step
        "beta": 0.1,
        "loss_type": "sigmoid",
        "label_smoothing": 0.0,
    },
}

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"

# plumb config key -> (section of PLUMB, field, type, allowed values or None)
KEYS = {
    "run.seed": ("common", "seed", int, None),
    "run.steps": ("run", "steps", int, None),
    "lora.rank": ("common", "lora_rank", int, None),
    "lora.alpha": ("common", "lora_alpha", float, None),
    "optim.lr": ("common", "lr", float, None),
    "optim.weight_decay": ("common", "weight_decay", float, None),
    "optim.grad_clip": ("common", "grad_clip", float, None),
    "optim.beta1": ("common", "beta1", float, None),
    "optim.beta2": ("common", "beta2", float, None),
    "optim.eps": ("common", "eps", float, None),
    "optim.schedule": ("common", "schedule", str, ("constant", "linear", "cosine")),
    "optim.warmup_steps": ("common", "warmup_steps", int, None),
    "optim.min_lr_ratio": ("common", "min_lr_ratio", float, None),  # checked in common_args
    "eval.n": ("common", "eval_n", int, None),
    "eval.max_new_tokens": ("common", "eval_max_new_tokens", int, None),
    "lora.targets": ("common", "lora_targets_str", str, ("q,k,v,o,gate,up,down",)),
    "actor.full_finetune": ("common", "full_finetune", lambda v: str(v).lower() in ("1", "true", "yes"), (False,)),
    "rollout.max_new_tokens": ("common", "rollout_max_new_tokens", int, None),
    "train.batch_size": ("algo", "batch_size", int, None),
    "train.epochs": ("grpo", "epochs", int, None),
    "train.minibatches": ("grpo", "minibatches", int, (1,)),
    "algo.group_size": ("grpo", "group_size", int, None),
    "algo.kl_coef": ("grpo", "kl_coef", float, None),
    "algo.kl_estimator": ("grpo", "kl_estimator", str, ("auto", "k3")),
    "algo.clip_low": ("grpo", "clip_low", float, None),
    "algo.clip_high": ("grpo", "clip_high", float, None),
    "algo.dual_clip": ("grpo", "dual_clip", float, (0.0,)),
    "algo.entropy_coef": ("grpo", "entropy_coef", float, (0.0,)),
    "algo.loss_agg": ("grpo", "loss_agg", str, ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")),
    "algo.advantage": ("grpo", "advantage", str, ("group", "none", "batch")),
    "rollout.temperature": ("grpo", "temperature", float, None),
    "rollout.top_k": ("grpo", "top_k", int, None),
    "rollout.top_p": ("grpo", "top_p", float, None),
    "reward.type": ("grpo", "reward_type", str, ("exact_match",)),
    "algo.beta": ("dpo", "beta", float, None),
    "algo.loss_type": ("dpo", "loss_type", str, ("sigmoid", "ipo", "hinge")),
    "algo.label_smoothing": ("dpo", "label_smoothing", float, None),
}
LOSS_AGG = {"token_mean": "dapo", "seq_mean_token_mean": "grpo", "seq_mean_token_sum_norm": "dr_grpo"}
ADVANTAGE = {"group": "group", "none": "none", "batch": "batch"}


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def apply_settings(algo, items, steps):
    """Applies plumb config keys (from --config, then --set) to PLUMB and
    returns (steps, applied, not_used). A value this script cannot map to
    TRL stops the run; keys with no bearing on the TRL side (paths, logging,
    transport, launch, eval period, ...) are returned as not used."""
    applied, not_used = {}, {}
    rollout_new, eval_new, cfg_steps = None, None, None
    for key, val in items:
        if key == "algo.name":
            if str(val) != algo:
                raise SystemExit(f"the config is for algo.name={val}, not {algo}")
            continue
        if key not in KEYS:
            not_used[key] = val
            continue
        sec, field, typ, allowed = KEYS[key]
        if (sec in ("grpo", "dpo") and sec != algo) or str(val) == "auto":
            not_used[key] = val  # other algorithm's key, or plumb's default (= ours)
            continue
        val = typ(float(val)) if typ is int else typ(val)
        if allowed is not None and val not in allowed:
            raise SystemExit(f"{key}={val!r}: this script maps only {allowed}")
        applied[key] = val
        if sec == "run":
            cfg_steps = val
        elif key == "rollout.max_new_tokens":
            rollout_new = val
        elif key == "eval.max_new_tokens":
            eval_new = val
        elif key == "train.batch_size":
            PLUMB[algo]["batch_size"] = val
        else:
            PLUMB[sec][field] = val
    if rollout_new is not None:
        PLUMB["grpo"]["max_new_tokens"] = rollout_new
    if eval_new:
        PLUMB["common"]["eval_max_new_tokens"] = eval_new
    elif rollout_new is not None:
        PLUMB["common"]["eval_max_new_tokens"] = rollout_new
    if steps is None:
        steps = 100 if cfg_steps is None else cfg_steps
    return steps, applied, not_used


def read_jsonl(path, n=None):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
                if n is not None and len(out) >= n:
                    break
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_tokenizer(model_dir):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(model_dir, "tokenizer.json"),
        bos_token=BOS, eos_token=EOS, pad_token=PAD,
        model_max_length=64, clean_up_tokenization_spaces=False,
    )
    # plumb: prompt = [BOS] + bytes, completion = bytes + [EOS]. tokenizer.json
    # carries a TemplateProcessing post-processor that prepends BOS; check it.
    probe = "36+5="
    ids = tok(probe)["input_ids"]
    want = [tok.bos_token_id] + list(probe.encode())
    if ids != want:
        raise SystemExit(f"tokenizer mismatch: {probe!r} -> {ids}, plumb gives {want}")
    ids = tok(probe + "41" + EOS)["input_ids"]
    if ids != want + list(b"41") + [tok.eos_token_id]:
        raise SystemExit(f"tokenizer mismatch on prompt+completion+EOS: {ids}")
    if (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) != (256, 257, 258):
        raise SystemExit("unexpected special token ids")
    return tok


def load_model(model_dir, tok):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    model.config.bos_token_id = tok.bos_token_id
    model.config.eos_token_id = tok.eos_token_id
    g = model.generation_config
    g.pad_token_id, g.bos_token_id, g.eos_token_id = tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
    return model


def lora_config():
    from peft import LoraConfig

    c = PLUMB["common"]
    return LoraConfig(
        r=c["lora_rank"], lora_alpha=c["lora_alpha"], target_modules=c["lora_targets"],
        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
    )


# ------------------------------------------------------------------ eval

@torch.no_grad()
def eval_accuracy(model, tok, recs, max_new_tokens):
    """Greedy decoding, exact match of the stripped completion up to EOS.
    Prompts are grouped by token length so nothing is padded (exact)."""
    was_training = model.training
    model.eval()
    by_len = {}
    for i, r in enumerate(recs):
        ids = tok(r["prompt"])["input_ids"]
        by_len.setdefault(len(ids), []).append((i, ids))
    right = 0
    for n, items in sorted(by_len.items()):
        x = torch.tensor([ids for _, ids in items], dtype=torch.long)
        out = model.generate(
            input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
            max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, top_k=None, top_p=None, temperature=None,
        )
        for (i, _), row in zip(items, out[:, n:].tolist()):
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id)]
            text = tok.decode(row, skip_special_tokens=True)
            right += text.strip() == recs[i]["answer"].strip()
    model.train(was_training)
    return right / max(len(recs), 1)


@torch.no_grad()
def completion_logps(model, tok, recs, key):
    """Summed log-prob (temperature 1) of completion + EOS given the prompt."""
    seqs, starts = [], []
    for r in recs:
        p = tok(r["prompt"])["input_ids"]
        c = tok(r[key], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append(p + c)
        starts.append(len(p))
    L = max(len(s) for s in seqs)
    x = torch.full((len(seqs), L), tok.pad_token_id, dtype=torch.long)
    am = torch.zeros_like(x)
    cm = torch.zeros((len(seqs), L), dtype=torch.float32)
    for b, (s, st) in enumerate(zip(seqs, starts)):
        x[b, : len(s)] = torch.tensor(s)
        am[b, : len(s)] = 1
        cm[b, st: len(s)] = 1
    logits = model(input_ids=x, attention_mask=am).logits.float()
    lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, x[:, 1:, None]).squeeze(-1)
    return (lp * cm[:, 1:]).sum(-1)


@torch.no_grad()
def eval_pref(model, tok, recs):
    """Preference accuracy of the policy; reward accuracy against the
    adapter-disabled model (the reference) when the model is a PEFT model."""
    was_training = model.training
    model.eval()
    pc = completion_logps(model, tok, recs, "chosen")
    pr = completion_logps(model, tok, recs, "rejected")
    res = {"pref_accuracy": float((pc > pr).float().mean())}
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            rc = completion_logps(model, tok, recs, "chosen")
            rr = completion_logps(model, tok, recs, "rejected")
        res["reward_accuracy"] = float(((pc - rc) > (pr - rr)).float().mean())
    model.train(was_training)
    return res


# ------------------------------------------------------------- timing

def timing_callback():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time per optimizer step: from one on_step_end to the next
        (the first step from on_train_begin). Includes data loading and, for
        GRPO, generation, reward and reference log-probs."""

        def __init__(self):
            self.last = self.last_cpu = None
            self.steps = []
            self.cpu = []

        def on_train_begin(self, args, state, control, **kw):
            self.last, self.last_cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            now, now_cpu = time.perf_counter(), time.process_time()
            self.steps.append(now - self.last)
            self.cpu.append(now_cpu - self.last_cpu)
            self.last, self.last_cpu = now, now_cpu

    return StepTimer()


def timing_summary(steps, cpu):
    rest = steps[1:] if len(steps) > 1 else steps
    crest = cpu[1:] if len(cpu) > 1 else cpu
    return {
        "median_cpu_s_per_step": statistics.median(crest) if crest else None,
        "mean_cpu_s_per_step": statistics.fmean(crest) if crest else None,
        "n_steps_timed": len(rest),
        "first_step_s": steps[0] if steps else None,
        "median_s_per_step": statistics.median(rest) if rest else None,
        "mean_s_per_step": statistics.fmean(rest) if rest else None,
        "total_train_s": sum(steps),
        "step_s": steps,
        "step_cpu_s": cpu,
    }


def schedule_args(c):
    """TRL's scheduler for plumb's optim.schedule and optim.min_lr_ratio:
    cosine with a floor is transformers' cosine_with_min_lr (the same
    formula as plumb's); constant and linear have no floor there."""
    r = c.get("min_lr_ratio", 0.0)
    if c["schedule"] == "cosine":
        return dict(lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": r})
    if r != 0.0:
        sys.exit(f"run_trl: optim.min_lr_ratio {r} with schedule {c['schedule']}: "
                 "transformers has no such schedule")
    return dict(lr_scheduler_type=c["schedule"])


def common_args(steps, out_dir):
    c = PLUMB["common"]
    return dict(
        output_dir=out_dir,
        max_steps=steps,
        learning_rate=c["lr"],
        **schedule_args(c),
        warmup_steps=c["warmup_steps"],
        optim="adamw_torch",
        adam_beta1=c["beta1"],
        adam_beta2=c["beta2"],
        adam_epsilon=c["eps"],
        weight_decay=c["weight_decay"],
        max_grad_norm=c["grad_clip"],
        gradient_accumulation_steps=1,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        use_cpu=True,
        seed=c["seed"],
        data_seed=c["seed"],
        logging_steps=10,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("algo", choices=["grpo", "dpo"])
    ap.add_argument("--model", default="runs/sft-arith/final")
    ap.add_argument("--data", default="runs/arith")
    ap.add_argument("--steps", type=int, default=None,
                    help="optimizer steps (default: run.steps of --config, else 100)")
    ap.add_argument("--config", help="a plumb run config (YAML) whose settings to use instead of the "
                    "built-in ones (configs/grpo-arith.yaml and configs/dpo-arith.yaml as first written)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="plumb config keys to override, e.g. algo.group_size=16 optim.lr=5e-4")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--note", default="", help="free text stored in the JSON")
    a = ap.parse_args()

    items = []
    if a.config:
        import yaml

        with open(a.config) as f:
            items += list(flatten(yaml.safe_load(f) or {}).items())
    for kv in a.set:
        k, _, v = kv.partition("=")
        items.append((k.strip(), v.strip()))
    a.steps, applied, ignored = apply_settings(a.algo, items, a.steps)

    torch.set_num_threads(a.threads)
    load_start = list(os.getloadavg())
    import transformers
    import trl
    import peft
    from datasets import Dataset
    from transformers import set_seed

    c = PLUMB["common"]
    set_seed(c["seed"])
    tok = load_tokenizer(a.model)
    model = load_model(a.model, tok)

    eval_recs = read_jsonl(os.path.join(a.data, "eval.jsonl"), c["eval_n"])
    eval_pref_recs = read_jsonl(os.path.join(a.data, "eval_pref.jsonl"), c["eval_n"]) if a.algo == "dpo" else None

    t0 = time.perf_counter()
    before = {"accuracy": eval_accuracy(model, tok, eval_recs, c["eval_max_new_tokens"])}
    if a.algo == "dpo":
        before.update(eval_pref(model, tok, eval_pref_recs))
    eval_s = time.perf_counter() - t0
    print(f"[{a.algo}] before: {before} ({eval_s:.1f}s)", flush=True)

    timer = timing_callback()
    tmp = tempfile.mkdtemp(prefix=f"trl-{a.algo}-")
    set_seed(c["seed"])  # the LoRA init (kaiming-uniform A, zero B) draws from this

    if a.algo == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        g = PLUMB["grpo"]
        train = Dataset.from_list(read_jsonl(os.path.join(a.data, "prompts.jsonl")))

        def exact_match(completions, answer, **kw):
            return [1.0 if comp.strip() == ans.strip() else 0.0 for comp, ans in zip(completions, answer)]

        args = GRPOConfig(
            **common_args(a.steps, tmp),
            # one optimizer step = 16 prompts x 8 completions = 128 sequences
            per_device_train_batch_size=g["batch_size"] * g["group_size"],
            steps_per_generation=1,
            num_generations=g["group_size"],
            num_iterations=g["epochs"],
            max_completion_length=g["max_new_tokens"],
            temperature=g["temperature"],
            top_k=g["top_k"],
            top_p=g["top_p"],
            repetition_penalty=1.0,
            beta=g["kl_coef"],
            epsilon=g["clip_low"],
            epsilon_high=g["clip_high"],
            loss_type=LOSS_AGG[g["loss_agg"]],  # token_mean -> dapo: over all tokens of the step
            scale_rewards=ADVANTAGE[g["advantage"]],  # group: (s - mean_g) / (std_g + 1e-4), unbiased
            importance_sampling_level="token",
            mask_truncated_completions=False,
            use_bias_correction_kl=False,  # plumb: + kl_coef * k3, no ratio factor
            top_entropy_quantile=1.0,
            entropy_coef=0.0,
            shuffle_dataset=True,
            remove_unused_columns=False,
            log_completions=False,
            use_vllm=False,
        )
        trainer = GRPOTrainer(
            model=model, reward_funcs=[exact_match], args=args, train_dataset=train,
            processing_class=tok, peft_config=lora_config(), callbacks=[timer],
        )
    else:
        from trl import DPOConfig, DPOTrainer

        d = PLUMB["dpo"]
        train = Dataset.from_list(read_jsonl(os.path.join(a.data, "pref.jsonl")))
        args = DPOConfig(
            **common_args(a.steps, tmp),
            per_device_train_batch_size=d["batch_size"],
            beta=d["beta"],
            loss_type=[d["loss_type"]],  # sigmoid (ipo, hinge also exist in TRL)
            label_smoothing=d["label_smoothing"],
            max_length=None,            # nothing truncated (sequences are <= 11 tokens)
            precompute_ref_log_probs=False,  # reference = adapter-disabled model, per step
        )
        trainer = DPOTrainer(
            model=model, args=args, train_dataset=train, processing_class=tok,
            peft_config=lora_config(), callbacks=[timer],
        )

    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    t0 = time.perf_counter()
    trainer.train()
    train_wall = time.perf_counter() - t0
    policy = trainer.model

    after = {"accuracy": eval_accuracy(policy, tok, eval_recs, c["eval_max_new_tokens"])}
    if a.algo == "dpo":
        after.update(eval_pref(policy, tok, eval_pref_recs))
    print(f"[{a.algo}] after: {after}", flush=True)

    tm = timing_summary(timer.steps, timer.cpu)
    print(f"[{a.algo}] s/step median {tm['median_s_per_step']:.3f} mean {tm['mean_s_per_step']:.3f} "
          f"cpu median {tm['median_cpu_s_per_step']:.3f} (first {tm['first_step_s']:.3f}, {len(timer.steps)} steps, train wall {train_wall:.1f}s)", flush=True)

    model_path = os.path.realpath(a.model)
    result = {
        "framework": "trl",
        "algo": a.algo,
        "steps": a.steps,
        "steps_completed": trainer.state.global_step,
        "note": a.note,
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "model": a.model,
        "model_resolved": os.path.relpath(model_path),
        "model_sha256": sha256(os.path.join(model_path, "model.safetensors")),
        "data": a.data,
        "plumb_config": a.config,
        "plumb_keys_applied": applied,
        "plumb_keys_not_used": ignored,
        "plumb_settings": {**PLUMB["common"], **PLUMB[a.algo]},
        "trl_args": {k: v for k, v in args.to_dict().items()
                     if k in TRL_KEYS_TO_RECORD},
        "trainable_params": n_trainable,
        "eval_before": before,
        "eval_after": after,
        "timing": {**tm, "train_wall_s": train_wall, "eval_before_s": eval_s},
        "log_history": trainer.state.log_history,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "accelerate": __import__("accelerate").__version__,
            "datasets": __import__("datasets").__version__,
            "tokenizers": __import__("tokenizers").__version__,
        },
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "os_cpu_count": os.cpu_count(),
        "loadavg_1_5_15_at_start": load_start,
        "loadavg_1_5_15_at_end": list(os.getloadavg()),
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"[{a.algo}] wrote {a.out}")


TRL_KEYS_TO_RECORD = {
    "max_steps", "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "optim", "adam_beta1", "adam_beta2",
    "adam_epsilon", "weight_decay", "max_grad_norm", "gradient_accumulation_steps", "gradient_checkpointing",
    "bf16", "seed", "data_seed", "per_device_train_batch_size",
    # grpo
    "steps_per_generation", "generation_batch_size", "num_generations", "num_iterations",
    "max_completion_length", "temperature", "top_k", "top_p", "repetition_penalty", "beta", "epsilon",
    "epsilon_high", "loss_type", "scale_rewards", "importance_sampling_level", "mask_truncated_completions",
    "use_bias_correction_kl", "top_entropy_quantile", "entropy_coef", "shuffle_dataset",
    # dpo
    "label_smoothing", "max_length", "precompute_ref_log_probs", "truncation_mode",
}


if __name__ == "__main__":
    main()
