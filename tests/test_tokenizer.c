/* test_tokenizer.c: plumb's tokenizer against Hugging Face `tokenizers`
 * and `sentencepiece` (ids in tests/data/tok/expected.json, made by
 * tests/ref/make_tok_ref.py), plus the tokenize/detokenize commands.
 *
 * The tokenizers are committed in tests/data/tok: GPT-2's tokenizer.json
 * in gpt2/, the Llama 2 SentencePiece one in llama2-sp/ (their sources and
 * licences: tests/data/tok/README.md). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "model/tokenizer.h"
#include "testutil.h"

static json_t *g_exp;

static const char *gpt2_dir(void) {
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s/tok/gpt2", tu_data_dir());
    struct stat st;
    if (stat(tu_path("%s/tokenizer.json", dir), &st) != 0)
        fail_msg("GPT-2 fixture missing: %s/tokenizer.json", dir);
    return dir;
}

static const char *llama_dir(void) { return tu_path("%s/tok/llama2-sp", tu_data_dir()); }

static int setup(void **state) {
    json_error_t je;
    g_exp = json_load_file(tu_path("%s/tok/expected.json", tu_data_dir()), 0, &je);
    if (!g_exp) {
        fprintf(stderr, "tests/data/tok/expected.json: %s\n", je.text);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    json_decref(g_exp);
    return 0;
}

static Tokenizer *load_ok(const char *dir) {
    Tokenizer *t = NULL;
    int rc = tok_load(&t, dir);
    if (rc < 0) fail_msg("tok_load %s: %s", dir, pl_error());
    return t;
}

/* Number of mismatches of ids against the JSON list want (prints the first). */
static int ids_differ(const char *what, int i, const int *ids, int n, json_t *want) {
    int bad = (size_t)n != json_array_size(want);
    for (int k = 0; !bad && k < n; k++)
        bad = ids[k] != json_integer_value(json_array_get(want, k));
    if (bad) {
        fprintf(stderr, "%s: corpus[%d]: got %d ids, want %zu:\n  got :", what, i, n,
                json_array_size(want));
        for (int k = 0; k < n && k < 40; k++)
            fprintf(stderr, " %d", ids[k]);
        fprintf(stderr, "\n  want:");
        for (size_t k = 0; k < json_array_size(want) && k < 40; k++)
            fprintf(stderr, " %lld", (long long)json_integer_value(json_array_get(want, k)));
        fprintf(stderr, "\n");
    }
    return bad;
}

/* Encodes and decodes every text of corpus with t and compares ids (with
 * and without special tokens) and decoded text with the HF section. */
static void check_against_hf(Tokenizer *t, const char *section, const char *corpus_key) {
    json_t *corpus = json_object_get(g_exp, corpus_key), *sec = json_object_get(g_exp, section);
    assert_non_null(corpus);
    assert_non_null(sec);
    int bad = 0;
    for (size_t i = 0; i < json_array_size(corpus); i++) {
        json_t *tx = json_array_get(corpus, i);
        const char *s = json_string_value(tx);
        size_t len = json_string_length(tx);
        for (int sp = 0; sp < 2; sp++) {
            int *ids, n;
            assert_int_equal(tok_encode(t, s, len, sp, &ids, &n), 0);
            char what[128];
            snprintf(what, sizeof what, "%s %s", section, sp ? "add_special" : "ids");
            bad += ids_differ(what, (int)i, ids, n,
                              json_array_get(json_object_get(sec, sp ? "ids_special" : "ids"), i));
            char *text;
            assert_int_equal(tok_decode(t, ids, n, sp, &text), 0);
            const char *want = json_string_value(
                json_array_get(json_object_get(sec, sp ? "decoded_skip" : "decoded"), i));
            if (strcmp(text, want)) {
                fprintf(stderr, "%s decode%s: corpus[%zu]: got '%.80s' want '%.80s'\n", section,
                        sp ? " (skip special)" : "", i, text, want);
                bad++;
            }
            free(text);
            free(ids);
        }
    }
    if (bad) fail_msg("%s: %d mismatches with Hugging Face tokenizers", section, bad);
}

/* Writes a variant of src_dir's tokenizer.json, edited by fn, to a new dir. */
static const char *write_variant(const char *src_dir, const char *name, void (*fn)(json_t *)) {
    json_error_t je;
    json_t *d = json_load_file(tu_path("%s/tokenizer.json", src_dir), 0, &je);
    assert_non_null(d);
    fn(d);
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", tu_tmp_dir(), name);
    mkdir(dir, 0755);
    assert_int_equal(json_dump_file(d, tu_path("%s/tokenizer.json", dir), JSON_COMPACT), 0);
    json_decref(d);
    return dir;
}

/* As variant_llama2_legacy in make_tok_ref.py. */
static void edit_legacy(json_t *d) {
    json_object_set_new(d, "normalizer",
                        json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]}", "type", "Sequence",
                                  "normalizers", "type", "Prepend", "prepend", "\xE2\x96\x81",
                                  "type", "Replace", "pattern", "String", " ", "content",
                                  "\xE2\x96\x81"));
    json_object_set_new(d, "pre_tokenizer", json_null());
    json_t *merges = json_object_get(json_object_get(d, "model"), "merges"), *m;
    size_t i;
    json_array_foreach(merges, i, m) {
        if (!json_is_array(m)) continue;
        char buf[512];
        snprintf(buf, sizeof buf, "%s %s", json_string_value(json_array_get(m, 0)),
                 json_string_value(json_array_get(m, 1)));
        json_array_set_new(merges, i, json_string(buf));
    }
}

/* As variant_llama2_metaspace_decoder in make_tok_ref.py. */
static void edit_metaspace_dec(json_t *d) {
    json_object_set_new(d, "decoder",
                        json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement",
                                  "\xE2\x96\x81", "prepend_scheme", "first", "split", 0));
}

static void edit_added(json_t *d) {
    json_array_extend(json_object_get(d, "added_tokens"),
                      json_object_get(g_exp, "gpt2_added_tokens"));
}

/* As variant_gpt2_llama3 in make_tok_ref.py. */
static void edit_llama3(json_t *d) {
    json_object_set_new(d, "pre_tokenizer",
                        json_pack("{s:s, s:[{s:s, s:{s:O}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}",
                                  "type", "Sequence", "pretokenizers", "type", "Split", "pattern",
                                  "Regex", json_object_get(g_exp, "llama3_pattern"), "behavior",
                                  "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space",
                                  0, "trim_offsets", 1, "use_regex", 0));
    json_object_set_new(json_object_get(d, "model"), "ignore_merges", json_true());
}

/* ------------------------------------------------------------------ tests */

/* Byte-level BPE: GPT-2 ids and decoded text equal HF's on the corpus. */
static void test_gpt2_parity(void **state) {
    Tokenizer *t = load_ok(gpt2_dir());
    assert_int_equal(tok_vocab_size(t), 50257);
    assert_int_equal(tok_bos(t), 50256);
    assert_int_equal(tok_eos(t), 50256);
    check_against_hf(t, "gpt2", "corpus");
    tok_free(&t);
    assert_null(t);
}

/* SentencePiece BPE (Metaspace pre-tokenizer, merges as pairs, byte
 * fallback): ids equal HF's, and sentencepiece's where those two agree. */
static void test_llama2_parity(void **state) {
    Tokenizer *t = load_ok(llama_dir());
    assert_int_equal(tok_vocab_size(t), 32000);
    assert_int_equal(tok_bos(t), 1);
    assert_int_equal(tok_eos(t), 2);
    assert_int_equal(tok_token_id(t, "<0x0A>"), 13);
    check_against_hf(t, "llama2", "corpus");
    json_t *corpus = json_object_get(g_exp, "corpus"), *sec = json_object_get(g_exp, "llama2");
    int bad = 0, checked = 0;
    for (size_t i = 0; i < json_array_size(corpus); i++) {
        if (!json_integer_value(json_array_get(json_object_get(sec, "sp_same"), i))) continue;
        json_t *tx = json_array_get(corpus, i);
        int *ids, n;
        assert_int_equal(tok_encode(t, json_string_value(tx), json_string_length(tx), 0, &ids, &n),
                         0);
        bad += ids_differ("llama2 vs sentencepiece", (int)i, ids, n,
                          json_array_get(json_object_get(sec, "sp_ids"), i));
        checked++;
        free(ids);
    }
    assert_true(checked >= 15);
    assert_int_equal(bad, 0);
    tok_free(&t);
}

/* The older Llama layout: Prepend/Replace normalizer and "a b" merges. */
static void test_llama2_legacy_parity(void **state) {
    const char *dir = write_variant(llama_dir(), "legacy", edit_legacy);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cp %s/tokenizer_config.json %s/", llama_dir(), dir);
    assert_int_equal(system(cmd), 0);
    Tokenizer *t = load_ok(dir);
    check_against_hf(t, "llama2_legacy", "corpus");
    tok_free(&t);
}

/* The Metaspace decoder (Mistral-style tokenizer.json files). */
static void test_metaspace_decoder_parity(void **state) {
    const char *dir = write_variant(llama_dir(), "metadec", edit_metaspace_dec);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cp %s/tokenizer_config.json %s/", llama_dir(), dir);
    assert_int_equal(system(cmd), 0);
    Tokenizer *t = load_ok(dir);
    check_against_hf(t, "llama2_metaspace_dec", "corpus");
    tok_free(&t);
}

/* Llama 3 / Qwen2 layout: Sequence [Split(regex), ByteLevel(use_regex
 * false)] and ignore_merges, on GPT-2's vocab. */
static void test_llama3_pretok_parity(void **state) {
    const char *dir = write_variant(gpt2_dir(), "llama3", edit_llama3);
    Tokenizer *t = load_ok(dir);
    check_against_hf(t, "gpt2_llama3", "corpus");
    tok_free(&t);
}

/* Added tokens with lstrip, rstrip, single_word and normalized flags. */
static void test_added_token_flags(void **state) {
    const char *dir = write_variant(gpt2_dir(), "added", edit_added);
    Tokenizer *t = load_ok(dir);
    assert_int_equal(tok_vocab_size(t), 50261);
    assert_int_equal(tok_token_id(t, "<mask>"), 50257);
    check_against_hf(t, "gpt2_added", "added_corpus");
    tok_free(&t);
}

/* add_special: Llama 2 prepends BOS; GPT-2 adds nothing. */
static void test_add_special(void **state) {
    Tokenizer *l = load_ok(llama_dir()), *g = load_ok(gpt2_dir());
    int *ids, n;
    assert_int_equal(tok_encode(l, "hi", 2, 1, &ids, &n), 0);
    assert_true(n >= 2);
    assert_int_equal(ids[0], 1);
    free(ids);
    assert_int_equal(tok_encode(l, "", 0, 1, &ids, &n), 0);
    assert_int_equal(n, 1);
    free(ids);
    assert_int_equal(tok_encode(g, "hi", 2, 1, &ids, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 5303);
    free(ids);
    tok_free(&l);
    tok_free(&g);
}

/* Invalid UTF-8 is rejected with the byte offset; bad ids in decode fail. */
static void test_invalid_input(void **state) {
    Tokenizer *t = load_ok(gpt2_dir());
    int *ids = (int *)1, n = 7;
    assert_int_equal(tok_encode(t, "abc\xff", 4, 0, &ids, &n), PL_EINVAL);
    assert_null(ids);
    assert_non_null(strstr(pl_error(), "offset 3"));
    assert_int_equal(tok_encode(t, "ab\xe2\x82", 4, 0, &ids, &n), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "offset 2"));
    int bad[2] = {15496, 99999};
    char *text;
    assert_int_equal(tok_decode(t, bad, 2, 0, &text), PL_ERANGE);
    /* lone bytes decode to U+FFFD as HF's from_utf8_lossy */
    int half[1] = {19526}; /* first byte of a CJK character */
    assert_int_equal(tok_decode(t, half, 1, 0, &text), 0);
    assert_string_equal(text, "\xEF\xBF\xBD");
    free(text);
    tok_free(&t);
}

static int load_rc(const char *name, const char *json) {
    const char *dir = tu_path("%s/%s", tu_tmp_dir(), name);
    mkdir(dir, 0755);
    if (json)
        assert_int_equal(tu_write_file(tu_path("%s/tokenizer.json", dir), json, strlen(json)), 0);
    Tokenizer *t = (Tokenizer *)1;
    int rc = tok_load(&t, dir);
    assert_null(t);
    return rc;
}

/* Characters outside a vocabulary with no unk_token and no byte_fallback
 * are dropped, as Hugging Face's BPE drops them, without touching memory
 * that was never allocated (found by fuzz/fuzz_tokenizer under UBSan). */
static void test_unknown_chars_dropped(void **state) {
    const char *dir = tu_path("%s/tiny-vocab", tu_tmp_dir());
    mkdir(dir, 0755);
    const char *json = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}";
    assert_int_equal(tu_write_file(tu_path("%s/tokenizer.json", dir), json, strlen(json)), 0);
    Tokenizer *t;
    assert_int_equal(tok_load(&t, dir), 0);
    for (int rep = 0; rep < 2; rep++) { /* the second time through the piece cache */
        int *ids = NULL, n = -1;
        assert_int_equal(tok_encode(t, "b", 1, 0, &ids, &n), 0);
        assert_int_equal(n, 0);
        free(ids);
        assert_int_equal(tok_encode(t, "aba", 3, 0, &ids, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(ids[0], 0);
        assert_int_equal(ids[1], 0);
        free(ids);
    }
    tok_free(&t);
}

static const char *g_form;
static void edit_unicode_form(json_t *d) {
    json_object_set_new(d, "normalizer", json_pack("{s:s}", "type", g_form));
}

/* Unicode normalizers (Qwen2's tokenizer.json has NFC): GPT-2 with each of
 * NFC, NFKC, NFD, NFKD gives Hugging Face's ids on composed, decomposed,
 * compatibility and Hangul text. The expected ids were produced with
 * tokenizers 0.23.3: Tokenizer.from_str(<GPT-2 tokenizer.json with
 * "normalizer": {"type": FORM}>).encode(text).ids. */
static void test_unicode_normalizers(void **state) {
    static const char *texts[4] = {"cafe\xCC\x81 A\xCC\x8Angstro\xCC\x88m",
                                   "\xEF\xAC\x81ne \xE2\x91\xA0 \xEF\xBC\xA1\xEF\xBC\xA2 x\xC2\xB2",
                                   "Hangul \xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8 \xEA\xB0\x81",
                                   "plain ascii"};
    static const char *forms[4] = {"NFC", "NFKC", "NFD", "NFKD"};
    static const char *want =
        "{\"NFC\": [[66, 1878, 2634, 6184, 227, 782, 2536, 9101, 76], [171, 105, 223, 710, 2343, 239, 254, 27332, 120, 94, 171, 120, 95, 2124, 31185], [39, 648, 377, 220, 166, 108, 223, 220, 166, 108, 223], [25638, 355, 979, 72]],"
        " \"NFKC\": [[66, 1878, 2634, 6184, 227, 782, 2536, 9101, 76], [38125, 352, 9564, 2124, 17], [39, 648, 377, 220, 166, 108, 223, 220, 166, 108, 223], [25638, 355, 979, 72]],"
        " \"NFD\": [[66, 8635, 136, 223, 317, 136, 232, 782, 20661, 136, 230, 76], [171, 105, 223, 710, 2343, 239, 254, 27332, 120, 94, 171, 120, 95, 2124, 31185], [39, 648, 377, 28053, 226, 222, 157, 227, 94, 157, 228, 101, 28053, 226, 222, 157, 227, 94, 157, 228, 101], [25638, 355, 979, 72]],"
        " \"NFKD\": [[66, 8635, 136, 223, 317, 136, 232, 782, 20661, 136, 230, 76], [38125, 352, 9564, 2124, 17], [39, 648, 377, 28053, 226, 222, 157, 227, 94, 157, 228, 101, 28053, 226, 222, 157, 227, 94, 157, 228, 101], [25638, 355, 979, 72]]}";
    json_t *w = json_loads(want, 0, NULL);
    assert_non_null(w);
    for (int f = 0; f < 4; f++) {
        g_form = forms[f];
        Tokenizer *t = load_ok(write_variant(gpt2_dir(), forms[f], edit_unicode_form));
        for (int i = 0; i < 4; i++) {
            int *ids = NULL, n = 0;
            assert_int_equal(tok_encode(t, texts[i], strlen(texts[i]), 0, &ids, &n), 0);
            const json_t *e = json_array_get(json_object_get(w, forms[f]), i);
            if ((size_t)n != json_array_size(e)) fail_msg("%s text %d: %d ids, want %zu", forms[f], i, n, json_array_size(e));
            for (int k = 0; k < n; k++)
                if (ids[k] != json_integer_value(json_array_get(e, k)))
                    fail_msg("%s text %d: id %d is %d, want %lld", forms[f], i, k, ids[k],
                             (long long)json_integer_value(json_array_get(e, k)));
            free(ids);
        }
        tok_free(&t);
    }
    json_decref(w);
}

/* Load errors: missing file, bad JSON, unsupported models and parts. */
static void test_load_errors(void **state) {
    assert_int_equal(load_rc("missing", NULL), PL_EIO);
    assert_non_null(strstr(pl_error(), "tokenizer.json"));
    assert_int_equal(load_rc("badjson", "{\"model\": [1, 2"), PL_EFORMAT);
    assert_non_null(strstr(pl_error(), "tokenizer.json"));
    assert_int_equal(
        load_rc("wordpiece", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}"),
        PL_ENOTSUP);
    assert_non_null(strstr(pl_error(), "WordPiece"));
    assert_int_equal(
        load_rc("unigram", "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}"),
        PL_ENOTSUP);
    assert_non_null(strstr(pl_error(), "Unigram"));
    assert_int_equal(load_rc("badmerge",
                             "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1},"
                             " \"merges\": [\"a b\"]}}"),
                     PL_EFORMAT);
    assert_non_null(strstr(pl_error(), "merges[0]"));
    assert_int_equal(load_rc("bertnorm",
                             "{\"normalizer\": {\"type\": \"BertNormalizer\"}, \"model\": {\"type\": \"BPE\","
                             " \"vocab\": {\"a\": 0}, \"merges\": []}}"),
                     PL_ENOTSUP);
    assert_non_null(strstr(pl_error(), "BertNormalizer"));
}

/* A large mixed text encodes to the same ids in one call as piecewise at
 * whitespace-free boundaries (exercises the cache and long pieces). */
static void test_long_text(void **state) {
    Tokenizer *t = load_ok(gpt2_dir());
    const char *unit = "Hello, world! It's 2024 and 日本語 text.\n";
    size_t ul = strlen(unit), reps = 20000;
    char *big = malloc(ul * reps + 1);
    for (size_t i = 0; i < reps; i++)
        memcpy(big + i * ul, unit, ul);
    int *ids, n, *one, m;
    assert_int_equal(tok_encode(t, big, ul * reps, 0, &ids, &n), 0);
    assert_int_equal(tok_encode(t, unit, ul, 0, &one, &m), 0);
    /* "\n" followed by "Hello" splits the same way every time */
    assert_int_equal(n, m * (int)reps);
    for (int i = 0; i < n; i++)
        assert_int_equal(ids[i], one[i % m]);
    char *text;
    assert_int_equal(tok_decode(t, ids, n, 0, &text), 0);
    assert_int_equal(strlen(text), ul * reps);
    assert_memory_equal(text, big, ul * reps);
    free(text);
    free(ids);
    free(one);
    free(big);
    tok_free(&t);
}

/* ---------------------------------------------------------------- the CLI */

static char *run_ok(const char *cmd) {
    char *out = NULL;
    int rc = tu_run(cmd, &out);
    if (rc != 0) fail_msg("'%s' exited %d: %s", cmd, rc, out ? out : "");
    return out;
}

/* plumb tokenize --text / --input and plumb detokenize. */
static void test_cli(void **state) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "%s tokenize --tokenizer %s --text \"Hello world\" --json",
             tu_plumb_bin(), gpt2_dir());
    char *out = run_ok(cmd);
    assert_string_equal(out, "{\"ids\": [15496, 995]}\n");
    free(out);
    snprintf(cmd, sizeof cmd, "%s tokenize --tokenizer %s --text \"Hello world\" --add-special",
             tu_plumb_bin(), llama_dir());
    out = run_ok(cmd);
    assert_string_equal(out, "{\"ids\": [1, 15043, 3186]}\n");
    free(out);
    snprintf(cmd, sizeof cmd, "%s detokenize --tokenizer %s --ids \"15496, 995\"", tu_plumb_bin(),
             gpt2_dir());
    out = run_ok(cmd);
    assert_string_equal(out, "Hello world\n");
    free(out);
    snprintf(cmd, sizeof cmd,
             "%s detokenize --tokenizer %s --ids \"[1, 15043, 3186]\" --skip-special",
             tu_plumb_bin(), llama_dir());
    out = run_ok(cmd);
    assert_string_equal(out, "Hello world\n");
    free(out);

    const char *jl = tu_path("%s/in.jsonl", tu_tmp_dir());
    const char *lines = "{\"text\": \"Hello world\"}\n{\"text\": \"\"}\n{\"text\": \" it's\"}\n";
    assert_int_equal(tu_write_file(jl, lines, strlen(lines)), 0);
    snprintf(cmd, sizeof cmd, "%s tokenize --tokenizer %s --input %s", tu_plumb_bin(), gpt2_dir(),
             jl);
    out = run_ok(cmd);
    assert_string_equal(out, "{\"ids\": [15496, 995]}\n{\"ids\": []}\n{\"ids\": [340, 338]}\n");
    free(out);

    const char *bad = "{\"text\": \"ok\"}\n{\"txt\": 1}\n";
    assert_int_equal(tu_write_file(jl, bad, strlen(bad)), 0);
    snprintf(cmd, sizeof cmd, "%s tokenize --tokenizer %s --input %s 2>&1", tu_plumb_bin(),
             gpt2_dir(), jl);
    out = NULL;
    assert_int_not_equal(tu_run(cmd, &out), 0);
    assert_non_null(strstr(out, "in.jsonl:2"));
    free(out);

    snprintf(cmd, sizeof cmd, "%s tokenize --tokenizer %s/nope --text x 2>&1", tu_plumb_bin(),
             tu_tmp_dir());
    out = NULL;
    assert_int_not_equal(tu_run(cmd, &out), 0);
    assert_non_null(strstr(out, "tokenizer.json"));
    free(out);
}

/* plumb generate --prompt encodes with the model folder's tokenizer.json
 * (BOS first, as add_special_tokens=True), keeps the JSON contract, prints
 * text otherwise, and says so clearly when there is no tokenizer. */
static void test_generate_prompt(void **state) {
    const char *dir = tu_path("%s/gen", tu_tmp_dir());
    char cmd[16384], *out = NULL, *a, *b;
    snprintf(
        cmd, sizeof cmd,
        "%s init --out %s --format hf --preset tiny --vocab 32000 --dim 32 --hidden 64 --heads 2 "
        "--kv-heads 1 --seed 1 && cp %s/tokenizer.json %s/tokenizer_config.json %s/",
        tu_plumb_bin(), dir, llama_dir(), llama_dir(), dir);
    free(run_ok(cmd));
    Tokenizer *t = load_ok(dir);
    int *ids, n;
    assert_int_equal(tok_encode(t, "Once upon a time", 16, 1, &ids, &n), 0);
    assert_int_equal(ids[0], 1);
    char idstr[256] = "";
    for (int i = 0; i < n; i++)
        snprintf(idstr + strlen(idstr), 16, "%s%d", i ? " " : "", ids[i]);
    free(ids);
    const char *opts = "--max-new-tokens 6 --temperature 0 --ignore-eos --json";
    snprintf(cmd, sizeof cmd, "%s generate --model %s --prompt 'Once upon a time' %s",
             tu_plumb_bin(), dir, opts);
    a = run_ok(cmd);
    snprintf(cmd, sizeof cmd, "%s generate --model %s --prompt-ids '%s' %s", tu_plumb_bin(), dir,
             idstr, opts);
    b = run_ok(cmd);
    assert_string_equal(a, b);
    assert_non_null(strstr(a, "\"logprobs\""));
    /* text mode prints the decoded generated ids */
    json_t *o = json_loads(a, 0, NULL);
    json_t *gen = json_object_get(o, "ids");
    int g[6], ng = (int)json_array_size(gen);
    assert_int_equal(ng, 6);
    for (int i = 0; i < ng; i++)
        g[i] = (int)json_integer_value(json_array_get(gen, i));
    char *want;
    assert_int_equal(tok_decode(t, g, ng, 1, &want), 0);
    snprintf(cmd, sizeof cmd,
             "%s generate --model %s --prompt 'Once upon a time' --max-new-tokens 6 "
             "--temperature 0 --ignore-eos",
             tu_plumb_bin(), dir);
    out = run_ok(cmd);
    assert_int_equal(strlen(out), strlen(want) + 1);
    assert_memory_equal(out, want, strlen(want));
    free(out);
    free(want);
    json_decref(o);
    free(a);
    free(b);
    tok_free(&t);
    /* no tokenizer.json: a clear error */
    remove(tu_path("%s/tokenizer.json", dir));
    snprintf(cmd, sizeof cmd, "%s generate --model %s --prompt hi 2>&1", tu_plumb_bin(), dir);
    out = NULL;
    assert_int_equal(tu_run(cmd, &out), 2);
    assert_non_null(strstr(out, "tokenizer.json"));
    free(out);
    /* --tokenizer DIR names another folder */
    snprintf(cmd, sizeof cmd,
             "%s generate --model %s --tokenizer %s --prompt hi --max-new-tokens 2 --json",
             tu_plumb_bin(), dir, llama_dir());
    free(run_ok(cmd));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt2_parity),
        cmocka_unit_test(test_llama2_parity),
        cmocka_unit_test(test_llama2_legacy_parity),
        cmocka_unit_test(test_metaspace_decoder_parity),
        cmocka_unit_test(test_llama3_pretok_parity),
        cmocka_unit_test(test_added_token_flags),
        cmocka_unit_test(test_add_special),
        cmocka_unit_test(test_invalid_input),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_unicode_normalizers),
        cmocka_unit_test(test_unknown_chars_dropped),
        cmocka_unit_test(test_long_text),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_generate_prompt),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
