#!/usr/bin/env python3
"""DAPO's overlong shaping and group filter as verl and TRL compute them,
written to tests/data/algo/dapo.json for tests/test_algo_dapo.c.

What is called (versions recorded in the output):
- verl.workers.reward_manager.dapo.DAPORewardManager.__call__, the real
  method, on a DataProto of left-padded prompts and right-padded responses
  with a stand-in tokenizer (decode only) and a compute_score that returns
  each sample's base score; overlong_buffer len 4, max_resp_len 16,
  penalty_factor 1 and 0.5. The score it writes at each response's last
  token is read back.
- trl.rewards.get_soft_overlong_punishment(16, 4), the real function, on
  the same responses (TRL has no factor: it is 1).
- The group filter: verl keeps a group unless it has more than one sample
  and np.std of its metric is exactly 0 (the line of
  verl/trainer/ppo/v1/replay_buffer.py that classifies finished groups,
  replicated here: that class needs a transfer queue and a Ray trainer).

Usage: python3 tests/ref/dapo_ref.py [out.json]
"""
import json
import sys
import types
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
import trl  # noqa: E402
import verl  # noqa: E402
from trl.rewards import get_soft_overlong_punishment  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.workers.reward_manager.dapo import DAPORewardManager  # noqa: E402

dst = sys.argv[1] if len(sys.argv) > 1 else "tests/data/algo/dapo.json"
MAX, BUF = 16, 4
# response lengths (EOS included) from well inside to the end of the
# buffer, and the base scores the reward gave them
lens = [1, 5, 11, 12, 13, 14, 15, 16, 16, 12]
base = [float(np.float32(v)) for v in [1.0, 0.0, 1.0, 0.5, -0.25, 1.0, 0.0, 1.0, 0.0, 0.75]]
prompt_len = [3, 2, 4, 1, 3, 2, 4, 1, 3, 2]
B, P = len(lens), max(prompt_len)

prompts = torch.zeros(B, P, dtype=torch.long)
responses = torch.zeros(B, MAX, dtype=torch.long)
attn = torch.zeros(B, P + MAX, dtype=torch.long)
for i in range(B):
    prompts[i, P - prompt_len[i]:] = 7
    attn[i, P - prompt_len[i]:P] = 1
    responses[i, :lens[i]] = 9
    attn[i, P:P + lens[i]] = 1
data = DataProto.from_dict(
    tensors={"prompts": prompts, "responses": responses, "attention_mask": attn},
    non_tensors={"data_source": np.array(["arith"] * B, dtype=object),
                 "reward_model": np.array([{"ground_truth": ""} for _ in range(B)], dtype=object),
                 "extra_info": np.array([{"i": i} for i in range(B)], dtype=object)})
tok = types.SimpleNamespace(decode=lambda ids, skip_special_tokens=True: "x" * len(ids),
                            eos_token="</s>")

out = {"verl": verl.__version__, "trl": trl.__version__, "max_len": MAX, "buffer": BUF,
       "lens": lens, "prompt_len": prompt_len, "scores": base, "overlong": []}
for factor in [1.0, 0.5]:
    cfg = types.SimpleNamespace(enable=True, len=BUF, penalty_factor=factor, log=True)
    rm = DAPORewardManager(tok, num_examine=0,
                           compute_score=lambda **k: base[k["extra_info"]["i"]],
                           max_resp_len=MAX, overlong_buffer_cfg=cfg)
    res = rm(data, return_dict=True)
    rt = res["reward_tensor"]
    shaped = [float(rt[i, lens[i] - 1]) for i in range(B)]
    pen = [float(v) for v in res["reward_extra_info"]["overlong_reward"]]
    out["overlong"].append({"factor": factor, "shaped": shaped, "penalty": pen})
trl_fn = get_soft_overlong_punishment(max_completion_len=MAX, soft_punish_cache=BUF)
out["trl_penalty"] = [float(v) for v in trl_fn([[9] * n for n in lens])]

# groups of G = 4 (binary, graded, all equal at several values, one apart)
G = 4
groups = [[1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0], [0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1],
          [0.3, 0.3, 0.3, 0.3000001], [-1, -1, -1, -1], [0.25, 0.75, 0.25, 0.25]]
groups = [[float(np.float32(v)) for v in g] for g in groups]
keep = [not (len(g) > 1 and float(np.std(g)) == 0.0) for g in groups]
out["groups"] = {"G": G, "scores": [v for g in groups for v in g], "keep": keep}

with open(dst, "w") as f:
    json.dump(out, f, indent=1)
print("wrote", dst, "with verl", verl.__version__, "and TRL", trl.__version__)
