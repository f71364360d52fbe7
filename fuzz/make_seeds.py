#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/ (run from the repository root).

Small, hand-made, valid inputs: libFuzzer mutates from them, so each one
reaches deep into its parser. Rerun only when the seeds should change; the
output is checked in and deterministic."""
import json, os, struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def put(harness, name, data):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def bytes_to_unicode():
    """GPT-2's byte -> printable code point table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def added(i, content, **kw):
    a = {"id": i, "content": content, "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True}
    a.update(kw)
    return a


# --------------------------------------------------- byte-level (GPT-2 style)
b2u = bytes_to_unicode()
vocab = {b2u[b]: i for i, b in enumerate(range(256))}
merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"),
          ("o", "n"), ("Ġ", "w"), ("r", "e"), ("Ġthe", "r"), ("l", "l"), ("Ġ", "Ġ")]
for a, b in merges:
    vocab.setdefault(a + b, len(vocab))
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
added_bl = [added(len(vocab) + k, s) for k, s in enumerate(SPECIAL)]
added_bl.append(added(len(vocab) + 3, "<|mask|>", lstrip=True, rstrip=True, special=False))
added_bl.append(added(len(vocab) + 4, "<|word|>", single_word=True, normalized=True, special=False))
LLAMA3_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?"
             "[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def bytelevel(pre, merges_as_pairs=True, ignore_merges=False, post=None):
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": added_bl,
        "normalizer": None,
        "pre_tokenizer": pre,
        "post_processor": post or {"type": "ByteLevel", "add_prefix_space": False,
                                   "trim_offsets": True, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges,
                  "vocab": vocab,
                  "merges": [[a, b] for a, b in merges] if merges_as_pairs
                  else ["%s %s" % (a, b) for a, b in merges]},
    }


gpt2 = bytelevel({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}, merges_as_pairs=False)
llama3 = bytelevel({"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": LLAMA3_RE}, "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
    ignore_merges=True,
    post={"type": "TemplateProcessing",
          "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}}],
          "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
          "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [vocab_len := len(vocab) + 1],
                                               "tokens": ["<|im_start|>"]}}})
qwen_digits = bytelevel({"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithNext", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]})

# -------------------------------------------- SentencePiece style (Llama 2)
sp_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    sp_vocab["<0x%02X>" % b] = len(sp_vocab)
sp_merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("i", "n"), ("▁", "a"), ("e", "r"),
             ("l", "l"), ("▁", "▁"), ("o", "r"), ("▁", "w"), ("▁w", "or"), ("l", "d")]
for ch in "▁abcdefghijklmnopqrstuvwxyz":
    sp_vocab.setdefault(ch, len(sp_vocab))
for a, b in sp_merges:
    sp_vocab.setdefault(a + b, len(sp_vocab))
sp_added = [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")]
sp_post = {"type": "TemplateProcessing",
           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}


def sp_model(merges_as_pairs=True):
    return {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
            "ignore_merges": False, "vocab": sp_vocab,
            "merges": [[a, b] for a, b in sp_merges] if merges_as_pairs
            else ["%s %s" % (a, b) for a, b in sp_merges]}


llama2 = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": sp_added,
          "normalizer": None,
          "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                            "split": False},
          "post_processor": sp_post,
          "decoder": {"type": "Sequence", "decoders": [
              {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
              {"type": "ByteFallback"}, {"type": "Fuse"},
              {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
          "model": sp_model()}
llama2_legacy = dict(llama2, pre_tokenizer=None, model=sp_model(False),
                     normalizer={"type": "Sequence", "normalizers": [
                         {"type": "Prepend", "prepend": "▁"},
                         {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]})
llama2_meta_dec = dict(llama2, decoder={"type": "Metaspace", "replacement": "▁",
                                        "prepend_scheme": "first", "split": False})

SP_CONFIG = {"add_bos_token": True, "add_eos_token": True, "bos_token": "<s>",
             "eos_token": {"content": "</s>", "lstrip": False}, "unk_token": "<unk>"}
BL_CONFIG = {"bos_token": None, "eos_token": "<|endoftext|>", "add_bos_token": False}

# fuzz_tokenizer input: tokenizer.json NUL tokenizer_config.json NUL text
TEXT = "Hello world, the other one <|im_end|> x <|mask|>  <|word|> 123456 ça\n\n\tend <s> done"
for name, tj, cfg in [("gpt2", gpt2, BL_CONFIG), ("llama3", llama3, None),
                      ("digits", qwen_digits, BL_CONFIG), ("llama2", llama2, SP_CONFIG),
                      ("llama2_legacy", llama2_legacy, SP_CONFIG),
                      ("llama2_metaspace_dec", llama2_meta_dec, None)]:
    parts = [json.dumps(tj, ensure_ascii=False)]
    if cfg is not None or name == "llama3":
        parts.append(json.dumps(cfg) if cfg is not None else "")
        parts.append(TEXT)
    put("tokenizer", name, "\0".join(parts))

# fuzz_tok_encode uses this byte-level tokenizer as a fixed fixture.
os.makedirs(os.path.join(ROOT, "fuzz", "data", "bytelevel"), exist_ok=True)
with open(os.path.join(ROOT, "fuzz", "data", "bytelevel", "tokenizer.json"), "w") as f:
    json.dump(llama3, f, ensure_ascii=False)
with open(os.path.join(ROOT, "fuzz", "data", "bytelevel", "tokenizer_config.json"), "w") as f:
    json.dump(BL_CONFIG, f)

# fuzz_tok_encode input: one selector byte, then text.
for i, t in enumerate(["Hello world", " leading space and  double", "<|im_start|>user\nhi<|im_end|>",
                       "日本語のテキスト 😀 e\u0301", "def f(x):\n    return x**2  # 123456",
                       "<s>[INST] hi [/INST]</s>", "don't we'll I'M", "\x00\x01\x7f"]):
    put("tok_encode", "t%d" % i, bytes([i]) + t.encode())

# ------------------------------------------------------- tokenizer_config.json
TEMPLATES = {
    "chatml": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
              "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
              "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
              "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    "llama3": "{% set loop_messages = messages %}{% for message in loop_messages %}"
              "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
              "+ message['content'] | trim + '<|eot_id|>' %}{{ content }}{% endfor %}",
    "llama2": "{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + "
              "messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}{% endif %}{{ bos_token + '[INST] ' }}",
    "mistral": "{{ bos_token }}{% for message in messages %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
               "{% endfor %}",
    "zephyr": "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\n' + "
              "message['content'] + eos_token }}{% elif message['role'] == 'assistant' %}"
              "{{ '<|assistant|>\n'  + message['content'] + eos_token }}{% endif %}{% endfor %}",
}
for name, tpl in TEMPLATES.items():
    put("chat_config", name, json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                         "chat_template": tpl}))
put("chat_config", "list", json.dumps({
    "bos_token": {"content": "<|begin_of_text|>", "lstrip": False},
    "eos_token": {"content": "<|eot_id|>"},
    "chat_template": [{"name": "tool_use", "template": TEMPLATES["mistral"]},
                      {"name": "default", "template": TEMPLATES["llama3"]}]}))
put("chat_config", "none", json.dumps({"bos_token": None, "eos_token": "<|endoftext|>"}))
put("chat_config", "unknown", json.dumps({"eos_token": "</s>", "chat_template": "{{ messages }}"}))

# ---------------------------------------------------------------- config.json
with open(os.path.join(ROOT, "tests", "data", "hf", "llama", "config.json")) as f:
    put("config", "llama", f.read())
with open(os.path.join(ROOT, "tests", "data", "hf", "qwen2", "config.json")) as f:
    put("config", "qwen2", f.read())
put("config", "eos_list", json.dumps({
    "architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32,
    "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
    "bos_token_id": 1, "eos_token_id": [2, 7, 9]}))
for name in ("qwen3", "llama-rope-llama3", "llama-rope-yarn"):
    with open(os.path.join(ROOT, "tests", "data", "hf", name, "config.json")) as f:
        put("config", name, f.read())
# counts no model has: each must be refused naming its key, before any allocation
for key, val in (("num_hidden_layers", 1000000000), ("vocab_size", 2147483647),
                 ("hidden_size", 1 << 30), ("head_dim", 1 << 20),
                 ("max_position_embeddings", 2147483647)):
    c = {"model_type": "llama", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
         "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
         "max_position_embeddings": 64}
    c[key] = val
    put("config", "huge_" + key, json.dumps(c))


# --------------------------------------------------------------- safetensors
def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


f32 = struct.pack("<6f", 1, -2, 3.5, 0, 1e-3, -7)
bf16 = struct.pack("<4H", 0x3F80, 0xC000, 0x7F80, 0x0001)
f16 = struct.pack("<3H", 0x3C00, 0xC000, 0x7C00)
put("safetensors", "f32", safetensors([("w", "F32", [2, 3], f32)], {"format": "pt"}))
put("safetensors", "mixed", safetensors([
    ("a.weight", "BF16", [2, 2], bf16), ("b", "F16", [3], f16),
    ("c", "F64", [1], struct.pack("<d", 2.5)), ("d", "I64", [2], struct.pack("<2q", 1, -1)),
    ("e", "U8", [3], b"\x01\x02\x03"), ("f", "BOOL", [1], b"\x01"),
    ("g", "I32", [], struct.pack("<i", 5)), ("h", "F32", [0, 4], b"")]))
put("safetensors", "unaligned", safetensors([("x", "U8", [1], b"\x07"),
                                             ("y", "F32", [2], struct.pack("<2f", 1, 2))]))

# ------------------------------------------------------------------ JSONL
# fuzz_dataset input: one selector byte (see fuzz/fuzz_dataset.c), then JSONL.
M = lambda role, content: {"role": role, "content": content}
LINES = [
    {"prompt": "What is 2+2?", "answer": "4"},
    {"prompt": "Add 3 and 5.", "ground_truth": 8},
    {"messages": [M("system", "Be brief."), M("user", "Hi")]},
    {"prompt": "Say hi", "completion": " hi there"},
    {"messages": [M("user", "Hi"), M("assistant", "Hello!"), M("user", "Bye"), M("assistant", "Bye.")]},
    {"prompt": [M("user", "Hi")], "completion": [M("assistant", "Hello")]},
    {"prompt": "Capital of France?", "chosen": " Paris", "rejected": " Lyon", "margin": 0.5},
    {"prompt": [M("user", "2+2?")], "chosen": [M("assistant", "4")], "rejected": [M("assistant", "5")]},
    {"chosen": [M("user", "Hi"), M("assistant", "Hello")], "rejected": [M("user", "Hi"), M("assistant", "Go away")]},
    {"system": "Be kind.", "history": [["Hi", "Hello"]], "question": "How are you?",
     "response_chosen": "Fine, thanks.", "response_rejected": "Whatever."},
]
BAD = [b'{"prompt": 3}', b"not json", b"[1, 2]", b'{"prompt": "", "completion": "x"}',
       b'{"prompt": "p", "chosen": "same", "rejected": "same"}', b'{"prompt": "\xff\xfe"}',
       b'{"messages": [{"role": "bot", "content": "x"}]}', b""]
for i, line in enumerate(LINES):
    put("dataset", "shape%d" % i, bytes([i % 2]) + json.dumps(line, ensure_ascii=False).encode())
allj = "\n".join(json.dumps(l, ensure_ascii=False) for l in LINES)
put("dataset", "all_auto", b"\x00" + allj.encode() + b"\n")
put("dataset", "all_chatml_limits", bytes([1 | 16]) + allj.encode())
put("dataset", "all_pref_drop", bytes([1 | (3 << 1) | 8 | 16]) + allj.encode())
put("dataset", "bad_lines", bytes([32]) + b"\n".join(BAD) +
    b"\n" + ("x" * 100).encode() + b"\n\n  \n" + json.dumps(LINES[3]).encode())
