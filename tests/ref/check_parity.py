#!/usr/bin/env python3
"""Live parity checks of plumb against transformers and peft.

    python3 tests/ref/check_parity.py --plumb build/plumb --data tests/data
    python3 tests/ref/check_parity.py --plumb build/plumb --data tests/data \
        --write-plumb-peft

The first form (ctest label `parity`, `make parity`) recomputes, with the
installed torch/transformers/peft, the log-probs of every committed
checkpoint under tests/data/hf and compares them with `plumb logprobs`;
then it makes a fresh adapter with `plumb lora init`, loads it with peft
onto the transformers model and compares again, also after `plumb lora
merge`. Everything must agree to 1e-4.

--write-plumb-peft regenerates tests/data/hf/llama/plumb-peft: the adapter
as `plumb lora init` writes it, and expected.json with peft's log-probs on
it, which the default test suite (test_hf_reference) checks without Python.

Needs torch, transformers, peft (pip).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

import peft
import transformers
from peft import PeftModel
from transformers import AutoModelForCausalLM

TOL = 1e-4
LORA_ARGS = ["--rank", "4", "--alpha", "8", "--targets", "all", "--seed", "7",
             "--b-std", "0.1"]


def ref_logprobs(model, ids):
    """log p(ids[t+1] | ids[..t]) and entropies, float32, one sequence."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = F.log_softmax(logits, dim=-1)
    lp = logp[:-1].gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
    ent = -(logp.exp() * logp).sum(-1)[:-1]
    return lp.tolist(), ent.tolist()


def plumb_logprobs(plumb, model_dir, ids, adapter=None):
    cmd = [plumb, "logprobs", "--model", model_dir, "--ids",
           " ".join(map(str, ids)), "--entropy", "--json"]
    if adapter:
        cmd += ["--adapter", adapter]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    j = json.loads(out.stdout)
    return j["logprobs"], j["entropies"]


def worst(a, b):
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


def load_hf(path):
    m = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32,
                                             attn_implementation="eager")
    return m.float().eval()


def sequences(data):
    with open(os.path.join(data, "hf", "llama", "expected.json")) as f:
        return [s for s in json.load(f)["sequences"] if len(s) > 1]


def compare(plumb, model, model_dir, seqs, adapter, label):
    bad = 0
    for ids in seqs:
        lp, ent = ref_logprobs(model, ids)
        plp, pent = plumb_logprobs(plumb, model_dir, ids, adapter)
        d = max(worst(lp, plp), worst(ent, pent))
        status = "ok" if d <= TOL else "FAIL"
        bad += d > TOL
        print("%-28s len %3d  max |diff| %.2e  %s" % (label, len(ids), d, status))
    return bad


def write_plumb_peft(plumb, data):
    base_dir = os.path.join(data, "hf", "llama")
    out = os.path.join(base_dir, "plumb-peft")
    subprocess.run([plumb, "lora", "init", "--model", base_dir, "--out", out]
                   + LORA_ARGS, check=True)
    model = PeftModel.from_pretrained(load_hf(base_dir), out).eval()
    seqs = sequences(data)
    res = [ref_logprobs(model, ids) for ids in seqs]
    exp = {
        "sequences": seqs,
        "logprobs": [r[0] for r in res],
        "entropies": [r[1] for r in res],
        "plumb_lora_init": ["--model", "tests/data/hf/llama"] + LORA_ARGS,
        "produced_by": "tests/ref/check_parity.py --write-plumb-peft; torch %s, "
                       "transformers %s, peft %s" % (torch.__version__,
                                                     transformers.__version__,
                                                     peft.__version__),
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
        f.write("\n")
    print("wrote", out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plumb", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--write-plumb-peft", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if a.write_plumb_peft:
        write_plumb_peft(a.plumb, a.data)
        return 0
    seqs = sequences(a.data)
    bad = 0
    for name in ["llama", "llama-bf16", "llama-sharded", "qwen2"]:
        d = os.path.join(a.data, "hf", name)
        bad += compare(a.plumb, load_hf(d), d, seqs, None, name)
    base_dir = os.path.join(a.data, "hf", "llama")
    with tempfile.TemporaryDirectory() as tmp:
        ad = os.path.join(tmp, "adapter")
        subprocess.run([a.plumb, "lora", "init", "--model", base_dir, "--out", ad]
                       + LORA_ARGS, check=True)
        pm = PeftModel.from_pretrained(load_hf(base_dir), ad).eval()
        bad += compare(a.plumb, pm, base_dir, seqs, ad, "plumb adapter in peft")
        md = os.path.join(tmp, "merged")
        subprocess.run([a.plumb, "lora", "merge", "--model", base_dir, "--adapter", ad,
                        "--out", md], check=True)
        bad += compare(a.plumb, load_hf(md), md, seqs, None, "plumb merge in transformers")
    print("%d passed, %d failed" % (0 if bad else 1, 1 if bad else 0))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
