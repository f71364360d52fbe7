/* test_safetensors.c: the safetensors reader and writer.
 *
 * Round trips (F32 exact and mapped, BF16 rounded to nearest even), the
 * hand-written F16 conversion against known bit patterns, and one test per
 * kind of corrupt file, each checking the status code and that the message
 * names the file or the tensor. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/safetensors.h"

/* Writes a safetensors file from a literal header and raw data bytes. */
static void write_raw(const char *path, const char *header, const void *data, size_t len) {
    size_t hl = strlen(header);
    size_t total = 8 + hl + len;
    unsigned char *buf = malloc(total);
    uint64_t n = hl;
    memcpy(buf, &n, 8);
    memcpy(buf + 8, header, hl);
    if (len) memcpy(buf + 8 + hl, data, len);
    assert_int_equal(tu_write_file(path, buf, total), 0);
    free(buf);
}

static void expect_error(const char *path, int code, const char *must_contain) {
    StFile f;
    pl_clear_error();
    int rc = st_open(&f, path);
    assert_int_equal(rc, code);
    if (!strstr(pl_error(), must_contain))
        fail_msg("error \"%s\" does not mention \"%s\"", pl_error(), must_contain);
    assert_null(f.map); /* a failed open leaves nothing behind */
}

/* F32 round trip: names, shapes and bytes come back exactly, the data
 * section is 8-byte aligned, and st_read_f32 points into the mapping. */
static void test_roundtrip_f32(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 1);
    float a[6 * 5], b[7], c[2 * 3 * 4];
    tu_randn(a, 30, &rng, 1.0f);
    tu_randn(b, 7, &rng, 1.0f);
    tu_randn(c, 24, &rng, 1.0f);
    StWrite ts[3] = {{"layer.a", a, 2, {6, 5}}, {"b", b, 1, {7}}, {"c.odd-name", c, 3, {2, 3, 4}}};
    const char *path = tu_path("%s/rt32.safetensors", tu_tmp_dir());
    assert_int_equal(st_write(path, ts, 3, ST_F32, "{\"format\": \"pt\"}"), 0);

    StFile f;
    assert_int_equal(st_open(&f, path), 0);
    assert_int_equal(f.n, 3); /* __metadata__ is not a tensor */
    assert_int_equal(f.data_start % 8, 0);
    for (int i = 0; i < 3; i++) {
        const StTensor *t = st_find(&f, ts[i].name);
        assert_non_null(t);
        assert_int_equal(t->dtype, ST_F32);
        assert_int_equal(t->ndim, ts[i].ndim);
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            assert_int_equal(t->shape[d], ts[i].shape[d]);
            numel *= ts[i].shape[d];
        }
        assert_int_equal(t->numel, numel);
        float *x;
        int copied = -1;
        assert_int_equal(st_read_f32(&f, t, &x, &copied), 0);
        assert_int_equal(copied, 0);
        assert_true((char *)x >= (char *)f.map && (char *)(x + numel) <= (char *)f.map + f.size);
        assert_memory_equal(x, ts[i].data, numel * sizeof(float));
        float *y = malloc(numel * sizeof(float));
        assert_int_equal(st_copy_f32(&f, t, y), 0);
        assert_memory_equal(y, ts[i].data, numel * sizeof(float));
        free(y);
    }
    assert_null(st_find(&f, "__metadata__"));
    assert_null(st_find(&f, "missing"));
    st_close(&f);
    assert_null(f.map);
}

/* BF16 round trip: values come back within bf16 precision, and rounding is
 * to nearest with ties to even (1 + 2^-8 -> 1, 1 + 3*2^-8 -> 1 + 2^-6). */
static void test_roundtrip_bf16(void **state) {
    (void)state;
    enum { N = 1000 };
    float x[N];
    Rng rng;
    rng_seed(&rng, 2);
    tu_randn(x, N, &rng, 3.0f);
    x[0] = 1.0f + ldexpf(1, -8);
    x[1] = 1.0f + 3 * ldexpf(1, -8);
    x[2] = -0.0f;
    x[3] = INFINITY;
    x[4] = 1.0f + ldexpf(1, -8) + ldexpf(1, -20); /* just above the tie: rounds up */
    StWrite ts[1] = {{"x", x, 2, {10, 100}}};
    const char *path = tu_path("%s/rt16.safetensors", tu_tmp_dir());
    assert_int_equal(st_write(path, ts, 1, ST_BF16, NULL), 0);

    StFile f;
    assert_int_equal(st_open(&f, path), 0);
    assert_int_equal(f.data_start % 8, 0);
    const StTensor *t = st_find(&f, "x");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_BF16);
    assert_int_equal(t->end - t->begin, 2 * N);
    float *y;
    int copied;
    assert_int_equal(st_read_f32(&f, t, &y, &copied), 0);
    assert_int_equal(copied, 1);
    assert_true(y[0] == 1.0f);
    assert_true(y[1] == 1.0f + ldexpf(1, -6));
    assert_true(y[2] == 0.0f && signbit(y[2]));
    assert_true(isinf(y[3]) && y[3] > 0);
    assert_true(y[4] == 1.0f + ldexpf(1, -7));
    tu_assert_close(y + 5, x + 5, N - 5, 0.0f, 1.0f / 256, "bf16 round trip");
    free(y);
    st_close(&f);
}

/* F16 conversion by hand: normals, subnormals (down to 2^-24), signed
 * zero, infinities and nan, against values computed independently. */
static void test_f16_conversion(void **state) {
    (void)state;
    const uint16_t h[] = {0x3C00, 0xC000, 0x0001, 0x03FF, 0x0400, 0x7BFF,
                          0x7C00, 0xFC00, 0x7E00, 0x8000, 0x3555, 0x8200};
    const float want[] = {1.0f, -2.0f, ldexpf(1, -24), ldexpf(1023, -24), ldexpf(1, -14),
                          65504.0f, INFINITY, -INFINITY, NAN, -0.0f,
                          ldexpf(1024 + 0x155, -12), -ldexpf(512, -24)};
    enum { N = sizeof h / sizeof *h };
    char header[256];
    snprintf(header, sizeof header,
             "{\"h\":{\"dtype\":\"F16\",\"shape\":[%d],\"data_offsets\":[0,%d]}}", N, 2 * N);
    const char *path = tu_path("%s/f16.safetensors", tu_tmp_dir());
    write_raw(path, header, h, sizeof h);
    StFile f;
    assert_int_equal(st_open(&f, path), 0);
    float y[N];
    assert_int_equal(st_copy_f32(&f, st_find(&f, "h"), y), 0);
    for (int i = 0; i < N; i++) {
        if (isnan(want[i])) {
            assert_true(isnan(y[i]));
        } else if (!(y[i] == want[i] && signbit(y[i]) == signbit(want[i]))) {
            fail_msg("f16 0x%04x: got %g want %g", h[i], y[i], want[i]);
        }
    }
    st_close(&f);
}

/* An F32 tensor at an offset that is not 4-byte aligned in the mapping is
 * returned as a converted copy with the right values. */
static void test_unaligned_f32_copied(void **state) {
    (void)state;
    unsigned char data[2 + 3 * 4] = {0};
    const float v[3] = {1.5f, -2.25f, 3.0f};
    memcpy(data + 2, v, sizeof v);
    /* header of 72 bytes + 8: data starts 8-aligned, tensor at +2 */
    char header[128];
    snprintf(header, sizeof header, "%-72s",
             "{\"u\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[2,14]}}");
    const char *path = tu_path("%s/unaligned.safetensors", tu_tmp_dir());
    write_raw(path, header, data, sizeof data);
    StFile f;
    assert_int_equal(st_open(&f, path), 0);
    float *y;
    int copied;
    assert_int_equal(st_read_f32(&f, st_find(&f, "u"), &y, &copied), 0);
    assert_int_equal(copied, 1);
    assert_memory_equal(y, v, sizeof v);
    free(y);
    st_close(&f);
}

/* A valid file cut short: the tensor whose bytes are gone is named. */
static void test_truncated_file(void **state) {
    (void)state;
    float x[64] = {0};
    StWrite ts[2] = {{"first", x, 1, {32}}, {"second", x + 32, 1, {32}}};
    const char *path = tu_path("%s/trunc.safetensors", tu_tmp_dir());
    assert_int_equal(st_write(path, ts, 2, ST_F32, NULL), 0);
    size_t len;
    char *buf = tu_read_file(path, &len);
    assert_int_equal(tu_write_file(path, buf, len - 4), 0);
    expect_error(path, PL_EFORMAT, "second");
    /* shorter than the 8-byte length prefix */
    assert_int_equal(tu_write_file(path, buf, 5), 0);
    expect_error(path, PL_EFORMAT, path);
    free(buf);
    expect_error(tu_path("%s/nonexistent.safetensors", tu_tmp_dir()), PL_EIO, "nonexistent");
}

/* A header length that points past the end of the file is rejected. */
static void test_header_too_long(void **state) {
    (void)state;
    const char *path = tu_path("%s/hlen.safetensors", tu_tmp_dir());
    unsigned char buf[8 + 16];
    uint64_t n = 1000;
    memcpy(buf, &n, 8);
    memset(buf + 8, ' ', 16);
    assert_int_equal(tu_write_file(path, buf, sizeof buf), 0);
    expect_error(path, PL_EFORMAT, path);
    expect_error(path, PL_EFORMAT, "header length 1000");
}

/* data_offsets beyond the data section, or begin > end, name the tensor. */
static void test_offsets_overrun(void **state) {
    (void)state;
    const char *path = tu_path("%s/overrun.safetensors", tu_tmp_dir());
    float d[4] = {0};
    write_raw(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]}}", d,
              sizeof d);
    expect_error(path, PL_EFORMAT, "\"w\"");
    write_raw(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", d,
              sizeof d);
    expect_error(path, PL_EFORMAT, "begin 8 > end 4");
}

/* A shape whose size disagrees with its byte range names the tensor. */
static void test_shape_size_mismatch(void **state) {
    (void)state;
    const char *path = tu_path("%s/shape.safetensors", tu_tmp_dir());
    float d[6] = {0};
    write_raw(path,
              "{\"ok\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"bad.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,20]}}",
              d, sizeof d);
    expect_error(path, PL_EFORMAT, "bad.weight");
    expect_error(path, PL_EFORMAT, "16 bytes");
}

/* An unknown dtype is "not supported", naming tensor and dtype. */
static void test_unknown_dtype(void **state) {
    (void)state;
    const char *path = tu_path("%s/dtype.safetensors", tu_tmp_dir());
    unsigned char d[4] = {0};
    write_raw(path, "{\"q8\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}",
              d, sizeof d);
    expect_error(path, PL_ENOTSUP, "F8_E4M3");
    expect_error(path, PL_ENOTSUP, "q8");
}

/* A header that is not JSON, or not an object, is a format error naming
 * the file. */
static void test_invalid_json(void **state) {
    (void)state;
    const char *path = tu_path("%s/json.safetensors", tu_tmp_dir());
    write_raw(path, "{\"w\":{\"dtype\":\"F32\",", NULL, 0);
    expect_error(path, PL_EFORMAT, path);
    expect_error(path, PL_EFORMAT, "invalid JSON");
    write_raw(path, "[1, 2]", NULL, 0);
    expect_error(path, PL_EFORMAT, "not a JSON object");
    write_raw(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", NULL, 0);
    expect_error(path, PL_EFORMAT, "\"w\"");
}

/* st_write refuses dtypes it cannot write and leaves no file behind. */
static void test_write_rejects(void **state) {
    (void)state;
    float x[2] = {1, 2};
    StWrite ts[2] = {{"a", x, 1, {2}}, {"a", x, 1, {2}}};
    const char *path = tu_path("%s/rej.safetensors", tu_tmp_dir());
    assert_int_equal(st_write(path, ts, 1, ST_F16, NULL), PL_ENOTSUP);
    assert_int_equal(st_write(path, ts, 2, ST_F32, NULL), PL_EINVAL); /* duplicate */
    assert_int_equal(st_write(path, ts, 1, ST_F32, "[1]"), PL_EINVAL);
    assert_null(tu_read_file(path, NULL));
    assert_null(tu_read_file(tu_path("%s.tmp", path), NULL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_f32),      cmocka_unit_test(test_roundtrip_bf16),
        cmocka_unit_test(test_f16_conversion),     cmocka_unit_test(test_unaligned_f32_copied),
        cmocka_unit_test(test_truncated_file),     cmocka_unit_test(test_header_too_long),
        cmocka_unit_test(test_offsets_overrun),    cmocka_unit_test(test_shape_size_mismatch),
        cmocka_unit_test(test_unknown_dtype),      cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_write_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
