/* test_algo_dapo: DAPO's overlong shaping and group test (algo/dapo.h), by
 * hand and against verl's DAPORewardManager and TRL's
 * soft_overlong_punishment (tests/data/algo/dapo.json, made by
 * tests/ref/dapo_ref.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "testutil.h"

#include "algo/dapo.h"
#include "common/err.h"

enum { MAXN = 64 };

static json_t *get(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    if (!v) fail_msg("json: missing '%s'", k);
    return v;
}
static int arr(json_t *o, const char *k, float *x) {
    json_t *a = get(o, k);
    assert_true(json_array_size(a) <= MAXN);
    for (size_t i = 0; i < json_array_size(a); i++) x[i] = (float)json_number_value(json_array_get(a, i));
    return (int)json_array_size(a);
}

/* max_len 8, buffer 4: lengths 4 (none), 5 (-1/4), 8 (-1) at factor 1;
 * masked prompt tokens do not count; 2 at factor 0 changes nothing. */
static void test_overlong_hand(void **state) {
    int off[] = {0, 6, 12, 21};
    float m[21] = {0, 0, 1, 1, 1, 1, /**/ 0, 1, 1, 1, 1, 1, /**/ 0, 1, 1, 1, 1, 1, 1, 1, 1};
    AlgoSeqs s = {3, 21, off, m};
    float sc[] = {1, 1, 0}, pen[3];
    assert_int_equal(algo_overlong_penalty(&s, 8, 4, 1.0f, sc, pen), 0);
    float want[] = {1, 0.75f, -1}, wp[] = {0, -0.25f, -1};
    tu_assert_close(sc, want, 3, 0, 0, "scores");
    tu_assert_close(pen, wp, 3, 0, 0, "penalty");
    assert_int_equal(algo_overlong_penalty(&s, 8, 4, 0.0f, sc, NULL), 0);
    tu_assert_close(sc, want, 3, 0, 0, "factor 0");

    assert_int_equal(algo_overlong_penalty(&s, 8, 0, 1.0f, sc, NULL), PL_EINVAL);
    assert_int_equal(algo_overlong_penalty(&s, 8, 9, 1.0f, sc, NULL), PL_EINVAL);
    assert_int_equal(algo_overlong_penalty(&s, 8, 4, -1.0f, sc, NULL), PL_EINVAL);
    assert_int_equal(algo_overlong_penalty(&s, 8, 4, NAN, sc, NULL), PL_EINVAL);
    assert_int_equal(algo_overlong_penalty(&s, 7, 4, 1.0f, sc, NULL), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "sequence 2 has 8 response tokens, over max_len 7"));
    tu_assert_close(sc, want, 3, 0, 0, "a refused batch is left alone");
}

static void test_group_informative(void **state) {
    float a[] = {1, 1, 1, 1}, b[] = {0, 0, 1, 0}, c[] = {0.5f};
    assert_false(algo_group_informative(a, 4));
    assert_true(algo_group_informative(b, 4));
    assert_false(algo_group_informative(b, 2)); /* its first two agree */
    assert_true(algo_group_informative(c, 1));
}

/* verl's shaped scores at factors 1 and 0.5 and TRL's penalty (factor 1)
 * on the same response lengths; verl's verdict on each group. */
static void test_against_verl_trl(void **state) {
    json_error_t e;
    json_t *d = json_load_file(tu_path("%s/algo/dapo.json", tu_data_dir()), 0, &e);
    if (!d) fail_msg("dapo.json: %s", e.text);
    float lens[MAXN], plen[MAXN], base[MAXN], mask[16 * MAXN];
    int B = arr(d, "lens", lens);
    assert_int_equal(arr(d, "prompt_len", plen), B);
    assert_int_equal(arr(d, "scores", base), B);
    int off[MAXN + 1] = {0}, N = 0;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < (int)plen[b] + (int)lens[b]; t++) mask[N++] = t >= (int)plen[b];
        off[b + 1] = N;
    }
    AlgoSeqs s = {B, N, off, mask};
    const int max_len = (int)json_integer_value(get(d, "max_len"));
    const int buffer = (int)json_integer_value(get(d, "buffer"));
    json_t *cases = get(d, "overlong");
    assert_int_equal(json_array_size(cases), 2);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        float sc[MAXN], pen[MAXN], want[MAXN], wp[MAXN];
        memcpy(sc, base, sizeof(float) * B);
        const float factor = (float)json_number_value(get(c, "factor"));
        assert_int_equal(algo_overlong_penalty(&s, max_len, buffer, factor, sc, pen), 0);
        arr(c, "shaped", want), arr(c, "penalty", wp);
        char what[48];
        snprintf(what, sizeof what, "verl factor %g", (double)factor);
        tu_assert_close(sc, want, B, 1e-7f, 0, what);
        tu_assert_close(pen, wp, B, 1e-7f, 0, what);
        if (factor == 1.0f) {
            arr(d, "trl_penalty", wp);
            tu_assert_close(pen, wp, B, 1e-7f, 0, "TRL");
        }
    }
    json_t *g = get(d, "groups");
    float gs[MAXN];
    const int G = (int)json_integer_value(get(g, "G"));
    int n = arr(g, "scores", gs), kept = 0;
    json_t *keep = get(g, "keep");
    assert_int_equal((size_t)(n / G), json_array_size(keep));
    for (int k = 0; k < n / G; k++) {
        int ours = algo_group_informative(gs + k * G, G);
        if (ours != json_is_true(json_array_get(keep, k)))
            fail_msg("group %d: plumb %d, verl %d", k, ours, !ours);
        kept += ours;
    }
    assert_true(kept > 0 && kept < n / G); /* both verdicts are exercised */
    json_decref(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overlong_hand),
        cmocka_unit_test(test_group_informative),
        cmocka_unit_test(test_against_verl_trl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
