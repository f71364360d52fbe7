/* test_matmul_packed.c: the few-row weight layout of the CPU kernels
 * (kernels.h: matmul_pack, matmul_forward_packed).
 *
 * Proves: the packed layout is the documented one (blocks of 16 rows,
 * column by column, rows past OC zero); a product from it has the bits of
 * matmul_forward's, for every row count up to MATMUL_PACKED_ROWS and past
 * it, with bias and accumulation, at sizes with tails in both dimensions;
 * outputs past what it writes are left alone. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "kernels/kernels.h"
#include "testutil.h"

static float *randn(Rng *r, size_t n) {
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(r);
    return x;
}

static void test_layout(void **state) {
    (void)state;
    const int IC = 5, OC = 19; /* two blocks, the second with 3 rows */
    float w[19 * 5];
    for (int i = 0; i < OC * IC; i++) w[i] = (float)(i + 1);
    assert_int_equal(matmul_packed_floats(IC, OC), 2 * 16 * IC);
    float *wp = malloc(sizeof(float) * matmul_packed_floats(IC, OC));
    matmul_pack(wp, w, IC, OC);
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < IC; i++)
            for (int r = 0; r < 16; r++) {
                int o = 16 * b + r;
                float want = o < OC ? w[o * IC + i] : 0.0f;
                if (wp[(b * IC + i) * 16 + r] != want)
                    fail_msg("block %d column %d row %d: %g, not %g", b, i, r,
                             wp[(b * IC + i) * 16 + r], want);
            }
    free(wp);
}

/* out from the packed weights equals matmul_forward's, bit for bit. */
static void same_bits(int N, int IC, int OC, int with_bias, int accumulate, Rng *r) {
    float *x = randn(r, (size_t)N * IC), *w = randn(r, (size_t)OC * IC), *b = randn(r, OC);
    float *wp = malloc(sizeof(float) * matmul_packed_floats(IC, OC));
    float *o1 = randn(r, (size_t)N * OC + 1), *o2 = malloc(sizeof(float) * ((size_t)N * OC + 1));
    memcpy(o2, o1, sizeof(float) * ((size_t)N * OC + 1)); /* the same start, and a guard past the end */
    matmul_pack(wp, w, IC, OC);
    matmul_forward(o1, x, w, with_bias ? b : NULL, N, IC, OC, accumulate);
    matmul_forward_packed(o2, x, wp, w, with_bias ? b : NULL, N, IC, OC, accumulate);
    if (memcmp(o1, o2, sizeof(float) * ((size_t)N * OC + 1)))
        for (int i = 0; i <= N * OC; i++)
            if (memcmp(&o1[i], &o2[i], sizeof(float)))
                fail_msg("N %d IC %d OC %d bias %d acc %d: out[%d] %.9g, not %.9g", N, IC, OC,
                         with_bias, accumulate, i, o2[i], o1[i]);
    free(x), free(w), free(b), free(wp), free(o1), free(o2);
}

static void test_same_bits(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 7);
    const int shapes[][2] = {{37, 45}, {288, 288}, {16, 16}, {1, 3}, {100, 768}, {288, 1000}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int N = 1; N <= MATMUL_PACKED_ROWS + 2; N++)
            for (int v = 0; v < 4; v++) same_bits(N, shapes[s][0], shapes[s][1], v & 1, v >> 1, &r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_same_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
