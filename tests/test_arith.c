/* test_arith.c: the synthetic arithmetic task (data/arith.h) and
 * `plumb data arith`: deterministic for a seed, correct answers, eval held
 * out, wrong preference answers, and a tokenizer that tok_load reads and
 * that round-trips every text of the task. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "data/arith.h"
#include "model/tokenizer.h"
#include "testutil.h"

static const char *FILES[] = {"prompts.jsonl",
                              "sft.jsonl",
                              "pref.jsonl",
                              "pref_dense.jsonl",
                              "eval.jsonl",
                              "eval_pref.jsonl",
                              "tokenizer.json",
                              "tokenizer_config.json",
                              "manifest.json",
                              "README.md"};
#define NFILES (sizeof FILES / sizeof FILES[0])

static const char *make(const char *name, uint64_t seed, const char *ops) {
    static char dirs[4][1024];
    static int k;
    char *dir = dirs[k++ % 4];
    snprintf(dir, sizeof dirs[0], "%s/%s", tu_tmp_dir(), name);
    ArithConfig c;
    arith_config_default(&c);
    c.seed = seed;
    c.n_train = 600;
    c.n_eval = 100;
    c.ops = ops;
    if (arith_write(dir, &c) < 0) fail_msg("arith_write: %s", pl_error());
    return dir;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = tu_read_file(a, &na), *y = tu_read_file(b, &nb);
    assert_non_null(x);
    assert_non_null(y);
    int same = na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

/* The same seed writes byte-identical files; another seed other problems. */
static void test_deterministic(void **state) {
    const char *a = make("s7a", 7, "+"), *b = make("s7b", 7, "+"), *c = make("s8", 8, "+");
    for (size_t i = 0; i < NFILES; i++) {
        if (!strcmp(FILES[i], "README.md") || !strcmp(FILES[i], "manifest.json")) continue;
        if (!same_file(tu_path("%s/%s", a, FILES[i]), tu_path("%s/%s", b, FILES[i])))
            fail_msg("%s differs between two runs with seed 7", FILES[i]);
    }
    assert_true(same_file(tu_path("%s/README.md", a), tu_path("%s/README.md", b)));
    assert_false(same_file(tu_path("%s/prompts.jsonl", a), tu_path("%s/prompts.jsonl", c)));
    assert_false(same_file(tu_path("%s/pref.jsonl", a), tu_path("%s/pref.jsonl", c)));
    assert_true(same_file(tu_path("%s/tokenizer.json", a), tu_path("%s/tokenizer.json", c)));
}

/* Parses "a+b=" or "a-b=" and returns the true answer. */
static long solve(const char *p) {
    long a, b;
    char op;
    if (sscanf(p, "%ld%c%ld=", &a, &op, &b) != 3 || (op != '+' && op != '-'))
        fail_msg("bad prompt '%s'", p);
    return op == '+' ? a + b : a - b;
}

static json_t *load_lines(const char *path, size_t *n) {
    size_t len;
    char *s = tu_read_file(path, &len);
    if (!s) fail_msg("cannot read %s", path);
    json_t *arr = json_array();
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!o) fail_msg("%s: %s", path, je.text);
        json_array_append_new(arr, o);
    }
    free(s);
    *n = json_array_size(arr);
    return arr;
}

static const char *sget(json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    if (!s) fail_msg("missing string \"%s\"", k);
    return s;
}

/* Every answer is right, every rejected answer wrong, and no eval problem is
 * in a train file; with "+,-" both operators appear and a >= b for '-'. */
static void check_task(const char *dir, int want_minus) {
    size_t np, ns, nr, ne, nep;
    json_t *P = load_lines(tu_path("%s/prompts.jsonl", dir), &np),
           *S = load_lines(tu_path("%s/sft.jsonl", dir), &ns),
           *R = load_lines(tu_path("%s/pref.jsonl", dir), &nr),
           *E = load_lines(tu_path("%s/eval.jsonl", dir), &ne),
           *EP = load_lines(tu_path("%s/eval_pref.jsonl", dir), &nep);
    assert_int_equal(np, 600);
    assert_int_equal(ns, 600);
    assert_int_equal(nr, 600);
    assert_int_equal(ne, 100);
    assert_int_equal(nep, 100);
    json_t *train = json_object();
    int minus = 0;
    for (size_t i = 0; i < np; i++) {
        json_t *p = json_array_get(P, i), *s = json_array_get(S, i), *r = json_array_get(R, i);
        const char *q = sget(p, "prompt");
        char want[32];
        snprintf(want, sizeof want, "%ld", solve(q));
        assert_string_equal(sget(p, "answer"), want);
        assert_string_equal(sget(s, "prompt"), q);
        assert_string_equal(sget(s, "completion"), want);
        assert_string_equal(sget(r, "prompt"), q);
        assert_string_equal(sget(r, "chosen"), want);
        assert_string_not_equal(sget(r, "rejected"), want);
        if (sget(r, "rejected")[0] == '-' && want[0] != '-') fail_msg("negative wrong answer");
        if (json_object_get(train, q)) fail_msg("train problem %s twice", q);
        json_object_set_new(train, q, json_true());
        if (strchr(q, '-')) {
            long a, b;
            sscanf(q, "%ld-%ld", &a, &b);
            assert_true(a >= b);
            minus = 1;
        }
    }
    for (size_t i = 0; i < ne; i++) {
        const char *q = sget(json_array_get(E, i), "prompt");
        char want[32];
        snprintf(want, sizeof want, "%ld", solve(q));
        assert_string_equal(sget(json_array_get(E, i), "answer"), want);
        assert_string_equal(sget(json_array_get(EP, i), "chosen"), want);
        assert_string_not_equal(sget(json_array_get(EP, i), "rejected"), want);
        if (json_object_get(train, q)) fail_msg("eval problem %s is also in train", q);
    }
    assert_int_equal(minus, want_minus);
    /* pref_dense: train problems only, the right answer chosen, each wrong
     * answer of arith_wrong_answers once */
    size_t nd;
    json_t *D = load_lines(tu_path("%s/pref_dense.jsonl", dir), &nd);
    size_t want_nd = 0;
    for (size_t i = 0; i < np; i++) {
        long w[ARITH_MAX_WRONG];
        want_nd += (size_t)arith_wrong_answers(solve(sget(json_array_get(P, i), "prompt")), w,
                                               ARITH_MAX_WRONG);
    }
    assert_int_equal(nd, want_nd);
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(D, i);
        const char *q = sget(d, "prompt");
        char want[32];
        snprintf(want, sizeof want, "%ld", solve(q));
        if (!json_object_get(train, q)) fail_msg("pref_dense: %s is no train problem", q);
        assert_string_equal(sget(d, "chosen"), want);
        assert_string_not_equal(sget(d, "rejected"), want);
    }
    json_decref(D);
    json_decref(train);
    json_decref(P);
    json_decref(S);
    json_decref(R);
    json_decref(E);
    json_decref(EP);
}

static void test_answers_and_split(void **state) {
    check_task(make("plus", 11, "+"), 0);
    check_task(make("both", 12, "+,-"), 1);
}

/* Wrong answers are never right and never negative for a non-negative answer. */
static void test_wrong_answer(void **state) {
    Rng r;
    rng_seed(&r, 5);
    for (long c = 0; c < 300; c++)
        for (int k = 0; k < 20; k++) {
            long w = arith_wrong_answer(c, &r);
            assert_true(w != c);
            assert_true(w >= 0);
            long d = labs(w - c);
            assert_true(d == 1 || d == 10 || (c >= 10 && c % 100 / 10 != c % 10));
        }
    assert_int_equal(arith_wrong_answer(-7, &r) != -7, 1);
}

/* The dense wrong answers: the counts of arith_wrong_answers' rule, each
 * one digit (or the last two swapped) away, distinct, never the answer,
 * no leading zero, the sign kept; cap respected. */
static void test_wrong_answers(void **state) {
    (void)state;
    long w[ARITH_MAX_WRONG];
    struct {
        long c;
        int n;
    } cases[] = {{7, 18}, {0, 18}, {48, 18}, {40, 17}, {44, 17}, {115, 27}, {120, 27}, {-48, 18}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long c = cases[i].c;
        int n = arith_wrong_answers(c, w, ARITH_MAX_WRONG);
        if (n != cases[i].n) fail_msg("%ld: %d wrong answers, expected %d", c, n, cases[i].n);
        char a[24], b[24];
        int la = snprintf(a, sizeof a, "%ld", labs(c));
        for (int k = 0; k < n; k++) {
            if (w[k] == c || (c >= 0) != (w[k] >= 0)) fail_msg("%ld: bad wrong answer %ld", c, w[k]);
            for (int j = 0; j < k; j++)
                if (w[j] == w[k]) fail_msg("%ld: %ld twice", c, w[k]);
            int lb = snprintf(b, sizeof b, "%ld", labs(w[k])), diff = 0;
            if (lb == la) {
                for (int x = 0; x < la; x++) diff += a[x] != b[x];
                int swapped = la >= 2 && a[la - 1] == b[la - 2] && a[la - 2] == b[la - 1];
                if (diff != 1 && !(diff == 2 && swapped))
                    fail_msg("%ld: %ld is not one digit away", c, w[k]);
            } else if (!(la == 1 && lb == 2 && b[1] == a[0])) {
                fail_msg("%ld: %ld has another length", c, w[k]);
            }
        }
    }
    assert_int_equal(arith_wrong_answers(48, w, 5), 5);
}

/* --out's missing parents are made; a parent that is a file fails with
 * PL_EIO naming it. */
static void test_out_parents(void **state) {
    (void)state;
    ArithConfig c;
    arith_config_default(&c);
    c.n_train = 10, c.n_eval = 5;
    assert_int_equal(arith_write(tu_path("%s/deep/er/arith", tu_tmp_dir()), &c), 0);
    struct stat st;
    assert_int_equal(stat(tu_path("%s/deep/er/arith/pref_dense.jsonl", tu_tmp_dir()), &st), 0);
    const char *file = tu_path("%s/deep/er/arith/sft.jsonl", tu_tmp_dir());
    char out[1024];
    snprintf(out, sizeof out, "%s/sub", file);
    assert_int_equal(arith_write(out, &c), PL_EIO);
    if (!strstr(pl_error(), "sft.jsonl")) fail_msg("the error does not name the file: %s", pl_error());
}

/* The tokenizer loads, maps bytes to ids 0..255 and the specials to
 * 256..258, adds BOS, and round-trips all task text. */
static void test_tokenizer(void **state) {
    const char *dir = make("tok", 3, "+,-");
    Tokenizer *t = NULL;
    if (tok_load(&t, dir) < 0) fail_msg("tok_load: %s", pl_error());
    assert_int_equal(tok_vocab_size(t), ARITH_VOCAB);
    assert_int_equal(tok_bos(t), ARITH_BOS);
    assert_int_equal(tok_eos(t), ARITH_EOS);
    assert_int_equal(tok_token_id(t, "<|pad|>"), ARITH_PAD);
    int *ids, n;
    assert_int_equal(tok_encode(t, "37+48=", 6, 1, &ids, &n), 0);
    int want[] = {ARITH_BOS, '3', '7', '+', '4', '8', '='};
    assert_int_equal(n, 7);
    assert_memory_equal(ids, want, sizeof want);
    free(ids);
    const char *files[] = {"prompts.jsonl", "sft.jsonl", "pref.jsonl", "eval.jsonl"};
    for (int f = 0; f < 4; f++) {
        size_t len;
        char *s = tu_read_file(tu_path("%s/%s", dir, files[f]), &len);
        assert_non_null(s);
        assert_int_equal(tok_encode(t, s, len, 0, &ids, &n), 0);
        assert_int_equal((size_t)n, len); /* one token per byte: no merges */
        for (int i = 0; i < n; i++)
            assert_int_equal(ids[i], (unsigned char)s[i]);
        char *back;
        assert_int_equal(tok_decode(t, ids, n, 0, &back), 0);
        assert_string_equal(back, s);
        free(back);
        free(ids);
        free(s);
    }
    /* all 256 bytes round-trip as single tokens (valid UTF-8 text of them) */
    const char *u = "\t\n \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80~";
    assert_int_equal(tok_encode(t, u, strlen(u), 0, &ids, &n), 0);
    assert_int_equal((size_t)n, strlen(u));
    char *back;
    assert_int_equal(tok_decode(t, ids, n, 0, &back), 0);
    assert_string_equal(back, u);
    free(back);
    free(ids);
    int sp[] = {ARITH_BOS, '1', ARITH_EOS};
    assert_int_equal(tok_decode(t, sp, 3, 1, &back), 0);
    assert_string_equal(back, "1");
    free(back);
    tok_free(&t);
}

/* Bad options fail with a message; nothing is written on a bad --ops. */
static void test_bad_options(void **state) {
    ArithConfig c;
    arith_config_default(&c);
    c.ops = "*";
    assert_int_equal(arith_write(tu_path("%s/bad", tu_tmp_dir()), &c), PL_EINVAL);
    arith_config_default(&c);
    c.max_operand = 9;
    c.n_train = 100;
    c.n_eval = 1;
    assert_int_equal(arith_write(tu_path("%s/bad2", tu_tmp_dir()), &c), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "100 distinct problems"));
}

/* The command writes the same files as the library and reports them. */
static void test_cli(void **state) {
    char *out = NULL;
    const char *d1 = tu_path("%s/cli1", tu_tmp_dir());
    int rc = tu_run(tu_path("%s data arith --out %s --seed 9 --n-train 300 --n-eval 50 --ops +,-",
                            tu_plumb_bin(), d1),
                    &out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "\"seed\": 9"));
    free(out);
    const char *d2 = tu_path("%s/cli2", tu_tmp_dir());
    rc = tu_run(tu_path("%s data arith --out %s --seed 9 --n-train 300 --n-eval 50 --ops +,-",
                        tu_plumb_bin(), d2),
                &out);
    assert_int_equal(rc, 0);
    free(out);
    assert_true(same_file(tu_path("%s/cli1/pref.jsonl", tu_tmp_dir()),
                          tu_path("%s/cli2/pref.jsonl", tu_tmp_dir())));
    rc = tu_run(tu_path("%s data check %s/cli1/pref.jsonl --tokenizer %s/cli1", tu_plumb_bin(),
                        tu_tmp_dir(), tu_tmp_dir()),
                &out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "\"kept\": 300"));
    free(out);
    rc = tu_run(tu_path("%s data arith --seed 9 2>/dev/null", tu_plumb_bin()), &out);
    assert_int_equal(rc, 2);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic), cmocka_unit_test(test_answers_and_split),
        cmocka_unit_test(test_wrong_answer),  cmocka_unit_test(test_wrong_answers),
        cmocka_unit_test(test_out_parents),  cmocka_unit_test(test_tokenizer),
        cmocka_unit_test(test_bad_options),   cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
