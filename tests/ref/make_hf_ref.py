#!/usr/bin/env python3
"""Generate plumb's Hugging Face reference checkpoints and expected values.

Run from the repository root:

    python3 tests/ref/make_hf_ref.py

Writes tests/data/hf/{llama,llama-bf16,llama-sharded,qwen2,llama/peft}/ with
a tiny random checkpoint each and an expected.json holding transformers' (and
peft's) log-probs, entropies and greedy generations, all computed in float32
on the CPU. The outputs are committed so `make test` needs no Python; this
script only has to be rerun when the fixtures change.

Needs torch, transformers, peft, safetensors (pip).
"""

import json
import os
import shutil
import sys

import torch
import torch.nn.functional as F

import peft
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (GenerationConfig, LlamaConfig, LlamaForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

ROOT = os.path.join("tests", "data", "hf")
VOCAB = 96
MAX_NEW = 12
PROMPTS = [[1, 5, 9], [1, 40, 41, 42, 43]]
SEQ_LENS = [1, 5, 17, 40]
ATTN = "eager"  # the plain reference path; sdpa agrees to ~1e-7 anyway

PRODUCED_BY = ("tests/ref/make_hf_ref.py; torch %s, transformers %s, peft %s"
               % (torch.__version__, transformers.__version__,
                  peft.__version__))

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    bos_token_id=1,
    eos_token_id=2,
    hidden_act="silu",
)


def out(*parts):
    return os.path.join(ROOT, *parts)


def randomize(model, seed):
    """Weights ~N(0, 0.2), biases ~N(0, 0.2), norm weights ~1 + 0.1 N(0, 1).

    The default init (std 0.02, norms = 1) gives near-uniform log-probs and
    hides norm bugs; this one does not.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * noise)
            else:  # linear/embedding weights and q/k/v biases
                p.copy_(0.2 * noise)


def make_sequences(seed):
    g = torch.Generator().manual_seed(seed)
    seqs = []
    for n in SEQ_LENS:
        ids = torch.randint(0, VOCAB, (n,), generator=g).tolist()
        ids[0] = 1  # start with BOS like real data
        seqs.append(ids)
    return seqs


def floats(t):
    return [float(x) for x in t.to(torch.float32).reshape(-1).tolist()]


@torch.no_grad()
def score(model, seqs):
    """Per sequence, unpadded, no attention mask: log p(ids[t+1] | ids[..t])
    and the entropy of the next-token distribution, t = 0..n-2."""
    lps, ents = [], []
    for ids in seqs:
        x = torch.tensor([ids], dtype=torch.long)
        logits = model(input_ids=x).logits[0].to(torch.float32)  # [n, V]
        logp = F.log_softmax(logits, dim=-1)[:-1]                  # [n-1, V]
        tgt = x[0, 1:]
        lp = logp.gather(-1, tgt[:, None])[:, 0]
        ent = -(logp.exp() * logp).sum(-1)
        lps.append(floats(lp))
        ents.append(floats(ent))
    return lps, ents


@torch.no_grad()
def greedy(model):
    gc = GenerationConfig(do_sample=False, max_new_tokens=MAX_NEW,
                          min_new_tokens=0, eos_token_id=None,
                          pad_token_id=0, bos_token_id=1,
                          temperature=None, top_k=None, top_p=None,
                          return_dict_in_generate=True, output_logits=True,
                          output_scores=True)
    res = []
    for prompt in PROMPTS:
        x = torch.tensor([prompt], dtype=torch.long)
        o = model.generate(input_ids=x, attention_mask=torch.ones_like(x),
                           generation_config=gc)
        gen = o.sequences[0, len(prompt):].tolist()
        assert len(gen) == MAX_NEW, gen
        lps = []
        for step, tok in enumerate(gen):
            raw = o.logits[step][0].to(torch.float32)
            # No logits processor may have touched the scores (temperature 1).
            assert torch.equal(raw, o.scores[step][0].to(torch.float32))
            assert int(raw.argmax()) == tok
            # No near-tie, so a 1e-5 logit error cannot flip the choice.
            top2 = raw.topk(2).values
            assert float(top2[0] - top2[1]) > 1e-3, (step, top2)
            lps.append(float(F.log_softmax(raw, dim=-1)[tok]))
        # Cross-check the KV-cache path against one full forward pass.
        full = torch.tensor([prompt + gen], dtype=torch.long)
        logits = model(input_ids=full).logits[0].to(torch.float32)
        logp = F.log_softmax(logits, dim=-1)
        tf = [float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(gen)]
        d = max(abs(a - b) for a, b in zip(lps, tf))
        assert d < 1e-5, d
        res.append({"prompt": prompt, "max_new_tokens": MAX_NEW,
                    "ids": gen, "logprobs": lps})
    return res


def expected(model, seqs, extra=None):
    lps, ents = score(model, seqs)
    e = {"sequences": seqs, "logprobs": lps, "entropies": ents,
         "greedy": greedy(model)}
    if extra:
        e.update(extra)
    e["produced_by"] = PRODUCED_BY
    return e


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def load(cls, path, dtype=torch.float32):
    m = cls.from_pretrained(path, dtype=dtype, attn_implementation=ATTN)
    return m.float().eval()


def first_fixture(cls, cfg, d, seqs, seeds):
    """Saves a random cls(cfg) into d with the first of seeds whose greedy
    runs have no near-tie (expected()'s check), and writes its
    expected.json (with the seed); returns the model loaded from d."""
    for seed in seeds:
        m = cls(cfg).float().eval()
        randomize(m, seed)
        shutil.rmtree(d, ignore_errors=True)
        m.save_pretrained(d, safe_serialization=True)
        m = load(cls, d)
        try:
            e = expected(m, seqs)
        except AssertionError:
            continue
        e["seed"] = seed
        write_json(os.path.join(d, "expected.json"), e)
        return m
    sys.exit(f"{d}: every seed has a near-tie")


def finish(*dirs):
    """Files readable by all, as the other fixtures; says what was written."""
    for d in dirs:
        for f in os.listdir(d):
            os.chmod(os.path.join(d, f), 0o644)
        print("wrote", d)


def start():
    """What every fixture script does first: check it runs from the
    repository root, and make torch deterministic (one thread)."""
    if not os.path.isdir("tests") or not os.path.isfile("Makefile"):
        sys.exit("run from the repository root")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def main():
    start()
    if os.path.isdir(ROOT):
        for d in ("llama", "llama-bf16", "llama-sharded", "qwen2"):
            shutil.rmtree(out(d), ignore_errors=True)
    os.makedirs(ROOT, exist_ok=True)
    seqs = make_sequences(1234)

    # 1. llama, fp32
    lcfg = LlamaConfig(rope_theta=10000.0, rms_norm_eps=1e-5,
                       tie_word_embeddings=False, attention_bias=False,
                       mlp_bias=False, **COMMON)
    llama = LlamaForCausalLM(lcfg).float().eval()
    randomize(llama, 1)
    llama.save_pretrained(out("llama"), safe_serialization=True)

    # 2. llama-bf16
    bf = LlamaForCausalLM(lcfg).eval()
    bf.load_state_dict(llama.state_dict())
    bf.to(torch.bfloat16).save_pretrained(out("llama-bf16"),
                                          safe_serialization=True)
    del bf

    # 3. llama-sharded: ~345 KB of fp32 weights in 150 KB shards
    llama.save_pretrained(out("llama-sharded"), safe_serialization=True,
                          max_shard_size="150KB")

    # 4. qwen2, tied embeddings, q/k/v biases
    qcfg = Qwen2Config(rope_theta=1000000.0, rms_norm_eps=1e-6,
                       tie_word_embeddings=True, use_sliding_window=False,
                       **COMMON)
    qwen = Qwen2ForCausalLM(qcfg).float().eval()
    randomize(qwen, 2)
    assert qwen.lm_head.weight.data_ptr() == \
        qwen.model.embed_tokens.weight.data_ptr()
    qwen.save_pretrained(out("qwen2"), safe_serialization=True)
    del qwen

    # 5. llama/peft: LoRA r=4, alpha=8 on every projection, random lora_B
    base = LlamaForCausalLM(lcfg).float().eval()
    base.load_state_dict(llama.state_dict())
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, bias="none",
                      init_lora_weights=True, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                      "gate_proj", "up_proj", "down_proj"])
    pm = get_peft_model(base, lora)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in sorted(pm.named_parameters()):
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    pm.peft_config["default"].base_model_name_or_path = "tests/data/hf/llama"
    pm.save_pretrained(out("llama", "peft"), safe_serialization=True)
    # peft also writes a boilerplate model card, and target_modules in set
    # order (which depends on PYTHONHASHSEED): drop the one, sort the other
    # so reruns are byte-identical.
    os.remove(out("llama", "peft", "README.md"))
    acfg = out("llama", "peft", "adapter_config.json")
    with open(acfg) as f:
        ac = json.load(f)
    ac["target_modules"] = sorted(ac["target_modules"])
    write_json(acfg, ac)
    del pm, base, llama

    # Expected values: always from what was written to disk.
    m = load(LlamaForCausalLM, out("llama"))
    ref_llama = expected(m, seqs)
    write_json(out("llama", "expected.json"), ref_llama)

    m = load(LlamaForCausalLM, out("llama-sharded"))
    e = expected(m, seqs)
    assert e["logprobs"] == ref_llama["logprobs"]
    write_json(out("llama-sharded", "expected.json"), e)

    m = load(LlamaForCausalLM, out("llama-bf16"), dtype=torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in m.parameters())
    write_json(out("llama-bf16", "expected.json"), expected(m, seqs))

    m = load(Qwen2ForCausalLM, out("qwen2"))
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    write_json(out("qwen2", "expected.json"), expected(m, seqs))

    base = load(LlamaForCausalLM, out("llama"))
    pm = PeftModel.from_pretrained(base, out("llama", "peft")).eval()
    e = expected(pm, seqs)
    merged = pm.merge_and_unload().eval()
    mlp, ment = score(merged, seqs)
    diff = max([abs(a - b) for x, y in zip(mlp, e["logprobs"])
                for a, b in zip(x, y)] + [0.0])
    assert diff < 1e-4, diff
    dbase = max([abs(a - b) for x, y in zip(ref_llama["logprobs"],
                                            e["logprobs"])
                 for a, b in zip(x, y)] + [0.0])
    assert dbase > 1e-2, dbase  # the adapter really changes outputs
    e.pop("produced_by")
    e["merged"] = {"logprobs": mlp, "entropies": ment,
                   "max_abs_diff_vs_adapter": diff}
    e["produced_by"] = PRODUCED_BY
    write_json(out("llama", "peft", "expected.json"), e)
    for dirpath, _, files in os.walk(ROOT):
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)
    print("adapter vs base max |dlogp| %.4f, merged vs adapter %.3g"
          % (dbase, diff))
    print("wrote", ROOT)


if __name__ == "__main__":
    main()
