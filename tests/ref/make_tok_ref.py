#!/usr/bin/env python3
"""Expected token ids for tests/test_tokenizer.c, from independent
implementations: Hugging Face `tokenizers` (which loads tokenizer.json
offline) and Google's `sentencepiece` (which loads tokenizer.model).

    pip install tokenizers sentencepiece transformers protobuf
    python3 tests/ref/make_tok_ref.py --out tests/data/tok
    python3 tests/ref/make_tok_ref.py --bench DIR/tokenizer.json TEXT   # HF's speed

Writes:
  llama2-sp/tokenizer.json, tokenizer_config.json: the Llama 2 SentencePiece
      model converted by transformers' LlamaTokenizerFast (from the local
      tokenizer.model, offline), with the post-processor and config of the
      meta-llama repositories (BOS added by add_special_tokens);
  expected.json: the corpus and, for each tokenizer, HF ids without and with
      special tokens, decoded text (with and without skipping specials), and
      for Llama 2 the ids sentencepiece gives.
The "llama2_legacy" variant (Prepend/Replace normalizer, no pre-tokenizer,
merges as "a b" strings) and "gpt2_added" (extra added tokens with
lstrip/rstrip/single_word/normalized flags) are built from the two
tokenizer.json files by the same edits the C test makes (see variant_*).
"""
import argparse
import copy
import json
import os
import sys

import sentencepiece
import tokenizers
import transformers
from tokenizers import Tokenizer

CORPUS = [
    "",
    "Hello world",
    "Hello",
    " Hello",
    "Hello ",
    "  leading spaces and   runs of     spaces  ",
    "tabs\tand\nnewlines\n\n\r\n end\n",
    "I'm can't we'll they're you've he'd she's I'M DON'T",
    "digits 1234567890 3.14159 1,000,000 007 x2 42nd",
    "def f(x):\n    return x**2  # square\n\tif (a && b) { c[i] = d->e; }\n",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 1 << 3); return 0; }",
    "日本語のテキストと中文字符，한국어 텍스트。",
    "emoji 🙂👍🏽 👨‍👩‍👧‍👦 🇫🇷!",
    "e\u0301 cafe\u0301 n\u0303 A\u030a a\u0325\u0336",
    "Ünïcödé naïve façade Ελληνικά русский العربية हिन्दी",
    "\u00a0nbsp\u2009thin\u3000ideographic\u2028line",
    "https://example.com/path?q=1&x=y mail@example.org",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ☃ ꙮ \U0001F9EC",
    "Hello<|endoftext|>world <|endoftext|> end<|endoftext|>",
    "<s>hi</s> <s> x</s>",
    "a" * 2000,
    "ab " * 500,
    " " * 300,
    "!!!" * 200,
    "\n" * 100,
    "The quick brown fox jumps over the lazy dog. " * 20,
]

# Extra added tokens for the flag tests (on the GPT-2 tokenizer).
GPT2_ADDED = [
    {"id": 50257, "content": "<mask>", "single_word": False, "lstrip": True, "rstrip": False,
     "normalized": False, "special": True},
    {"id": 50258, "content": "[SEP]", "single_word": False, "lstrip": False, "rstrip": True,
     "normalized": False, "special": True},
    {"id": 50259, "content": "kitty9", "single_word": True, "lstrip": False, "rstrip": False,
     "normalized": True, "special": False},
    {"id": 50260, "content": "<tool>", "single_word": False, "lstrip": True, "rstrip": True,
     "normalized": False, "special": False},
]
ADDED_CORPUS = [
    "a <mask> b",
    "a   <mask>   b",
    "x [SEP]   y",
    "[SEP][SEP] z",
    "kitty9 akitty9 kitty9s the kitty9, kitty9",
    "  <tool>  call <tool>",
    "<mask><tool>kitty9<|endoftext|>",
    "nothing special here",
    "a\u00a0<mask>\u3000[SEP]\u2003b",
    "ékitty9 kitty9é кkitty9 日kitty9 kitty9\u00a0x 1kitty9 _kitty9 -kitty9 e\u0301kitty9 ٣kitty9",
]


def variant_llama2_legacy(d):
    """The older meta-llama tokenizer.json layout."""
    d = copy.deepcopy(d)
    d["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    d["pre_tokenizer"] = None
    d["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in d["model"]["merges"]]
    return d


def variant_llama2_metaspace_decoder(d):
    """The Metaspace decoder instead of Replace/ByteFallback/Fuse/Strip."""
    d = copy.deepcopy(d)
    d["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    return d


def variant_gpt2_added(d):
    d = copy.deepcopy(d)
    d["added_tokens"] = d["added_tokens"] + GPT2_ADDED
    return d


LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def variant_gpt2_llama3(d):
    """GPT-2's vocab with Llama 3's pre-tokenizer: Sequence [Split(regex),
    ByteLevel(use_regex false)], and ignore_merges."""
    d = copy.deepcopy(d)
    d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    d["model"]["ignore_merges"] = True
    return d


def hf_from_dict(d):
    t = Tokenizer.from_str(json.dumps(d))
    t.no_truncation()
    t.no_padding()
    return t


def run(t, texts):
    out = {"ids": [], "ids_special": [], "decoded": [], "decoded_skip": []}
    for s in texts:
        ids = t.encode(s, add_special_tokens=False).ids
        ids_sp = t.encode(s, add_special_tokens=True).ids
        out["ids"].append(ids)
        out["ids_special"].append(ids_sp)
        out["decoded"].append(t.decode(ids, skip_special_tokens=False))
        out["decoded_skip"].append(t.decode(ids_sp, skip_special_tokens=True))
    return out


def make_llama2_fixture(model_path, out_dir):
    from tokenizers import processors
    from transformers import LlamaTokenizerFast
    import shutil
    import tempfile
    # convert from tokenizer.model alone: beside it lies the tokenizer.json
    # this writes, which from_pretrained would load instead
    with tempfile.TemporaryDirectory() as src:
        shutil.copy(model_path, src)
        tk = LlamaTokenizerFast.from_pretrained(src, local_files_only=True)
    os.makedirs(out_dir, exist_ok=True)
    tk.save_pretrained(out_dir + "/.tmp")
    d = json.load(open(out_dir + "/.tmp/tokenizer.json"))
    # meta-llama/Llama-2-7b-hf: add_special_tokens prepends <s>
    d["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    with open(out_dir + "/tokenizer.json", "w") as f:
        json.dump(d, f, ensure_ascii=False, separators=(",", ":"))
    cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
           "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer", "legacy": False,
           "clean_up_tokenization_spaces": False}
    with open(out_dir + "/tokenizer_config.json", "w") as f:
        json.dump(cfg, f, indent=2)
    for name in os.listdir(out_dir + "/.tmp"):
        os.remove(out_dir + "/.tmp/" + name)
    os.rmdir(out_dir + "/.tmp")
    return d


def bench(tokenizer_json, text_path):
    """HF tokenizers' speed on a text (bench/RESULTS.md): encode on the whole
    text, and encode_batch over its lines (threads: RAYON_NUM_THREADS)."""
    import time
    t = Tokenizer.from_file(tokenizer_json)
    t.no_truncation()
    text = open(text_path, encoding="utf-8").read()
    lines = text.split("\n")
    lines = [ln + "\n" for ln in lines[:-1]] + [lines[-1]]
    nb = len(text.encode())
    for mode in ("encode", "encode_batch"):
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            if mode == "encode":
                n = len(t.encode(text).ids)
            else:
                n = sum(len(e.ids) for e in t.encode_batch(lines))
            ts.append(time.perf_counter() - t0)
        s = sorted(ts)[1]
        print(f"{mode} RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'all')}: "
              f"{nb / 1e6 / s:.2f} MB/s ({n} tokens)")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--bench":
        return bench(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../data/tok"))
    a = ap.parse_args()
    gpt2 = json.load(open(a.out + "/gpt2/tokenizer.json"))
    llama = make_llama2_fixture(a.out + "/llama2-sp/tokenizer.model", a.out + "/llama2-sp")

    exp = {"versions": {"tokenizers": tokenizers.__version__, "sentencepiece": sentencepiece.__version__,
                        "transformers": transformers.__version__},
           "corpus": CORPUS, "added_corpus": ADDED_CORPUS, "gpt2_added_tokens": GPT2_ADDED}
    exp["gpt2"] = run(hf_from_dict(gpt2), CORPUS)
    exp["llama2"] = run(hf_from_dict(llama), CORPUS)
    exp["llama3_pattern"] = LLAMA3_PATTERN
    exp["gpt2_llama3"] = run(hf_from_dict(variant_gpt2_llama3(gpt2)), CORPUS)
    exp["llama2_metaspace_dec"] = run(hf_from_dict(variant_llama2_metaspace_decoder(llama)), CORPUS)
    exp["llama2_legacy"] = run(hf_from_dict(variant_llama2_legacy(llama)), CORPUS)
    added = hf_from_dict(variant_gpt2_added(gpt2))
    for tk in GPT2_ADDED:  # HF keeps an added token's vocab id when it has one
        assert added.token_to_id(tk["content"]) == tk["id"], tk
    exp["gpt2_added"] = run(added, ADDED_CORPUS)

    sp = sentencepiece.SentencePieceProcessor(model_file=a.out + "/llama2-sp/tokenizer.model")
    sp_ids = [sp.encode(s) for s in CORPUS]
    exp["llama2"]["sp_ids"] = sp_ids
    exp["llama2"]["sp_same"] = [int(x == y) for x, y in zip(sp_ids, exp["llama2"]["ids"])]
    for i, (x, y) in enumerate(zip(sp_ids, exp["llama2"]["ids"])):
        if x != y:
            print(f"note: sentencepiece and tokenizers differ on corpus[{i}] {CORPUS[i][:30]!r}", file=sys.stderr)
    with open(a.out + "/expected.json", "w") as f:
        json.dump(exp, f, ensure_ascii=False, indent=0)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
