/* arith.c: the synthetic arithmetic task and its byte-level tokenizer. */
#include "data/arith.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "common/fs.h"

void arith_config_default(ArithConfig *c) {
    c->seed = 1;
    c->max_operand = 99;
    c->n_train = 4000;
    c->n_eval = 500;
    c->ops = "+";
}

/* ------------------------------------------------------------ tokenizer */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * other 68 to U+0100.. in byte order. Writes the UTF-8 of byte b's char. */
static void byte_char(int b, char out[4]) {
    int cp;
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    if (printable) {
        cp = b;
    } else {
        int k = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) k++;
        cp = 256 + k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

static const char *SPECIAL[3] = {"<|bos|>", "<|eos|>", "<|pad|>"};

static json_t *added_token(int id, const char *s) {
    return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", s, "single_word",
                     0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
}

static int dump(json_t *o, const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = o ? json_dump_file(o, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : -1;
    json_decref(o);
    if (rc) return pl_fail(PL_EIO, "writing %s failed", path);
    return 0;
}

int arith_write_tokenizer(const char *dir) {
    json_t *vocab = json_object(), *added = json_array();
    for (int b = 0; b < 256; b++) {
        char s[4];
        byte_char(b, s);
        json_object_set_new(vocab, s, json_integer(b));
    }
    for (int i = 0; i < 3; i++) {
        json_object_set_new(vocab, SPECIAL[i], json_integer(256 + i));
        json_array_append_new(added, added_token(256 + i, SPECIAL[i]));
    }
    json_t *bytelevel = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space",
                                  0, "trim_offsets", 1, "use_regex", 1);
    json_t *post = json_pack(
        "{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, "
        "{s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}",
        "type", "TemplateProcessing", "single", "SpecialToken", "id", "<|bos|>", "type_id", 0,
        "Sequence", "id", "A", "type_id", 0, "pair", "SpecialToken", "id", "<|bos|>", "type_id", 0,
        "Sequence", "id", "A", "type_id", 0, "Sequence", "id", "B", "type_id", 1, "special_tokens",
        "<|bos|>", "id", "<|bos|>", "ids", ARITH_BOS, "tokens", "<|bos|>");
    json_t *model =
        json_pack("{s:s, s:n, s:n, s:s, s:s, s:b, s:b, s:b, s:o, s:[]}", "type", "BPE", "dropout",
                  "unk_token", "continuing_subword_prefix", "", "end_of_word_suffix", "",
                  "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges");
    json_t *root = json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:o, s:O, s:o}", "version", "1.0",
                             "truncation", "padding", "added_tokens", added, "normalizer",
                             "pre_tokenizer", json_deep_copy(bytelevel), "post_processor", post,
                             "decoder", bytelevel, "model", model);
    json_decref(bytelevel);
    PL_TRY(dump(root, dir, "tokenizer.json"));
    json_t *cfg = json_pack("{s:b, s:b, s:s, s:s, s:s, s:i, s:s, s:b}", "add_bos_token", 1,
                            "add_eos_token", 0, "bos_token", "<|bos|>", "eos_token", "<|eos|>",
                            "pad_token", "<|pad|>", "model_max_length", 64, "tokenizer_class",
                            "PreTrainedTokenizerFast", "clean_up_tokenization_spaces", 0);
    return dump(cfg, dir, "tokenizer_config.json");
}

/* ----------------------------------------------------------------- task */

typedef struct {
    int a, b;
    char op;
} Problem;

static long answer(const Problem *p) {
    return p->op == '+' ? (long)p->a + p->b : (long)p->a - p->b;
}

long arith_wrong_answer(long correct, Rng *r) {
    long cand[5];
    int n = 0;
    long deltas[4] = {1, -1, 10, -10};
    for (int i = 0; i < 4; i++) {
        long w = correct + deltas[i];
        if (correct >= 0 && w < 0) continue;
        cand[n++] = w;
    }
    long m = correct < 0 ? -correct : correct;
    if (m >= 10) {
        long d0 = m % 10, d1 = (m / 10) % 10;
        long sw = m - d0 - d1 * 10 + d1 + d0 * 10;
        if (sw != m) cand[n++] = correct < 0 ? -sw : sw;
    }
    return cand[rng_u64(r) % (uint64_t)n];
}

/* Adds magnitude w, with correct's sign, to out[0..*n) unless it is
 * correct or already there. */
static void put_wrong(long *out, int *n, int cap, long correct, long w) {
    w = correct < 0 ? -w : w;
    if (w == correct || *n == cap) return;
    for (int k = 0; k < *n; k++)
        if (out[k] == w) return;
    out[(*n)++] = w;
}

int arith_wrong_answers(long correct, long *out, int cap) {
    char d[24], t[24];
    long m = correct < 0 ? -correct : correct;
    int n = 0, len = snprintf(d, sizeof d, "%ld", m);
    for (int i = 0; i < len; i++)
        for (char c = '0'; c <= '9'; c++) {
            if (c == d[i] || (i == 0 && c == '0' && len > 1)) continue;
            memcpy(t, d, (size_t)len + 1);
            t[i] = c;
            put_wrong(out, &n, cap, correct, strtol(t, NULL, 10));
        }
    if (len == 1)
        for (long c = 1; c <= 9; c++) put_wrong(out, &n, cap, correct, c * 10 + m);
    if (len >= 2 && d[len - 1] != d[len - 2] && (len > 2 || d[len - 1] != '0')) {
        memcpy(t, d, (size_t)len + 1);
        t[len - 1] = d[len - 2], t[len - 2] = d[len - 1];
        put_wrong(out, &n, cap, correct, strtol(t, NULL, 10));
    }
    return n;
}

static int parse_ops(const char *ops, int *plus, int *minus) {
    *plus = *minus = 0;
    for (const char *s = ops; *s; s++) {
        if (*s == '+')
            *plus = 1;
        else if (*s == '-')
            *minus = 1;
        else if (*s != ',' && *s != ' ')
            return pl_fail(PL_EINVAL, "--ops: unknown operator '%c' in \"%s\" (use +, - or +,-)",
                           *s, ops);
    }
    if (!*plus && !*minus) return pl_fail(PL_EINVAL, "--ops: no operator in \"%s\"", ops);
    return 0;
}

static FILE *open_out(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) pl_fail(PL_EIO, "open %s: %s", path, strerror(errno));
    return f;
}

/* Writes prompts (with answers) and preference pairs for probs[0..n), and
 * with dense (when not NULL) a pair for every answer arith_wrong_answers
 * gives. */
static int write_set(const char *dir, const char *prompts, const char *sft, const char *pref,
                     const char *dense, const Problem *probs, int n, Rng *r, long *n_dense) {
    FILE *fp = open_out(dir, prompts), *fs = sft ? open_out(dir, sft) : NULL,
         *fr = open_out(dir, pref), *fd = dense ? open_out(dir, dense) : NULL;
    int rc = (!fp || (sft && !fs) || !fr || (dense && !fd)) ? PL_EIO : 0;
    for (int i = 0; !rc && i < n; i++) {
        const Problem *p = &probs[i];
        long c = answer(p), w = arith_wrong_answer(c, r);
        fprintf(fp, "{\"prompt\": \"%d%c%d=\", \"answer\": \"%ld\"}\n", p->a, p->op, p->b, c);
        if (fs)
            fprintf(fs, "{\"prompt\": \"%d%c%d=\", \"completion\": \"%ld\"}\n", p->a, p->op, p->b,
                    c);
        fprintf(fr, "{\"prompt\": \"%d%c%d=\", \"chosen\": \"%ld\", \"rejected\": \"%ld\"}\n", p->a,
                p->op, p->b, c, w);
        long ws[ARITH_MAX_WRONG];
        int nw = fd ? arith_wrong_answers(c, ws, ARITH_MAX_WRONG) : 0;
        if (n_dense) *n_dense += nw;
        for (int k = 0; k < nw; k++)
            fprintf(fd, "{\"prompt\": \"%d%c%d=\", \"chosen\": \"%ld\", \"rejected\": \"%ld\"}\n",
                    p->a, p->op, p->b, c, ws[k]);
    }
    FILE *fs_[4] = {fp, fs, fr, fd};
    for (int i = 0; i < 4; i++)
        if (fs_[i] && (ferror(fs_[i]) | fclose(fs_[i])) && !rc)
            rc = pl_fail(PL_EIO, "writing %s: %s", dir, strerror(errno));
    return rc;
}

static int write_manifest(const char *dir, const ArithConfig *c, int n_total, long n_dense) {
    json_t *m = json_pack(
        "{s:s, s:I, s:i, s:s, s:i, s:i, s:i, s:{s:s, s:s, s:s, s:s, s:s, s:s}}", "task", "arith",
        "seed", (json_int_t)c->seed, "max_operand", c->max_operand, "ops", c->ops, "n_problems",
        n_total, "n_train", c->n_train, "n_eval", c->n_eval, "files", "prompts", "prompts.jsonl",
        "sft", "sft.jsonl", "pref", "pref.jsonl", "pref_dense", "pref_dense.jsonl", "eval",
        "eval.jsonl", "eval_pref", "eval_pref.jsonl");
    PL_TRY(dump(m, dir, "manifest.json"));
    FILE *f = open_out(dir, "README.md");
    if (!f) return PL_EIO;
    fprintf(f,
            "# arith: a synthetic arithmetic task\n\n"
            "Made by `plumb data arith --seed %llu --max-operand %d --n-train %d --n-eval %d "
            "--ops \"%s\"`; the same options always give the same files.\n\n"
            "Problems \"a+b=\" (and \"a-b=\" with a >= b) with operands in [0, %d]: %d distinct, "
            "shuffled and split by problem, so that no eval problem is in a train file.\n\n"
            "| file | records | shape |\n|---|---|---|\n"
            "| prompts.jsonl | %d | {\"prompt\", \"answer\"} (train) |\n"
            "| sft.jsonl | %d | {\"prompt\", \"completion\"} (train) |\n"
            "| pref.jsonl | %d | {\"prompt\", \"chosen\", \"rejected\"} (train; rejected is "
            "off by one, off by ten or two digits swapped) |\n"
            "| pref_dense.jsonl | %ld | {\"prompt\", \"chosen\", \"rejected\"} (train; a pair "
            "for every wrong answer one digit away, and the last two digits swapped) |\n"
            "| eval.jsonl | %d | {\"prompt\", \"answer\"} (held out) |\n"
            "| eval_pref.jsonl | %d | {\"prompt\", \"chosen\", \"rejected\"} (held out) |\n\n"
            "tokenizer.json is a byte-level BPE without merges: ids 0-255 are bytes, 256 "
            "<|bos|>, 257 <|eos|>, 258 <|pad|>.\n",
            (unsigned long long)c->seed, c->max_operand, c->n_train, c->n_eval, c->ops,
            c->max_operand, n_total, c->n_train, c->n_train, c->n_train, n_dense, c->n_eval,
            c->n_eval);
    if (ferror(f) | fclose(f)) return pl_fail(PL_EIO, "writing %s/README.md", dir);
    return 0;
}

int arith_write(const char *dir, const ArithConfig *c) {
    int plus, minus;
    PL_TRY(parse_ops(c->ops, &plus, &minus));
    if (c->max_operand < 1 || c->max_operand > 100000)
        return pl_fail(PL_EINVAL, "--max-operand %d outside [1, 100000]", c->max_operand);
    if (c->n_train < 1 || c->n_eval < 0)
        return pl_fail(PL_EINVAL, "--n-train must be >= 1 and --n-eval >= 0");
    long m = c->max_operand + 1;
    long total = (plus ? m * m : 0) + (minus ? m * (m + 1) / 2 : 0);
    if ((long)c->n_train + c->n_eval > total)
        return pl_fail(PL_EINVAL,
                       "--n-train %d + --n-eval %d is more than the %ld distinct problems with "
                       "--max-operand %d (raise --max-operand)",
                       c->n_train, c->n_eval, total, c->max_operand);
    PL_TRY(pl_mkdirs(dir));
    Problem *probs = malloc(sizeof(Problem) * (size_t)total);
    PL_CHECK_ALLOC(probs);
    long n = 0;
    for (int a = 0; a < m; a++)
        for (int b = 0; b < m; b++) {
            if (plus) probs[n++] = (Problem){a, b, '+'};
            if (minus && a >= b) probs[n++] = (Problem){a, b, '-'};
        }
    Rng r;
    rng_seed(&r, c->seed);
    for (long i = n - 1; i > 0; i--) { /* Fisher-Yates */
        long j = (long)(rng_u64(&r) % (uint64_t)(i + 1));
        Problem t = probs[i];
        probs[i] = probs[j];
        probs[j] = t;
    }
    Rng wr;
    rng_seed2(&wr, c->seed, 1);
    long n_dense = 0;
    int rc = write_set(dir, "eval.jsonl", NULL, "eval_pref.jsonl", NULL, probs, c->n_eval, &wr,
                       NULL);
    if (!rc)
        rc = write_set(dir, "prompts.jsonl", "sft.jsonl", "pref.jsonl", "pref_dense.jsonl",
                       probs + c->n_eval, c->n_train, &wr, &n_dense);
    free(probs);
    if (!rc) rc = arith_write_tokenizer(dir);
    if (!rc) rc = write_manifest(dir, c, (int)total, n_dense);
    return rc;
}
