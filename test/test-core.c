/* test-core.c - errors, checked arithmetic, dtype conversion, in-memory model view. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sks_test.h"
#include "loaders/sks_model.h"
#include "analysis/sks_out.h"
#include "linalg/sks_linalg.h"

#include <jansson.h>

static void test_checked_math(void **state) {
    (void)state;
    size_t r;
    assert_int_equal(sks_mul_size(SIZE_MAX / 2 + 1, 2, &r), SKS_EOVERFLOW);
    assert_int_equal(sks_mul_size(1u << 20, 1u << 20, &r), 0);
    assert_true(r == (size_t)1 << 40);
    uint64_t u;
    assert_int_equal(sks_add_u64(UINT64_MAX, 1, &u), SKS_EOVERFLOW);
    assert_null(sks_malloc_n(SIZE_MAX / 4, 8));
}

/* sks_grow: capacity first, then doubled, only when full; the contents survive a move;
 * an overflowing size leaves the array and its capacity as they were. SKS_FREE_ALL
 * frees each of its arguments (the ASan build of the suite reports a leak otherwise). */
static void test_grow_free_all(void **state) {
    (void)state;
    int *v = NULL;
    size_t cap = 0;
    for (size_t n = 0; n < 100; n++) {
        int *g = sks_grow(v, n, &cap, sizeof *v, 4);
        assert_non_null(g);
        v = g;
        assert_true(cap > n && (cap == 4 || (cap >= 8 && (cap & (cap - 1)) == 0)));
        v[n] = (int)(7 * n + 1);
    }
    assert_int_equal(cap, 128);
    for (size_t n = 0; n < 100; n++) assert_int_equal(v[n], (int)(7 * n + 1));
    assert_true(sks_grow(v, 5, &cap, sizeof *v, 4) == v);
    size_t big = SIZE_MAX / 2;
    assert_null(sks_grow(v, big, &big, 8, 4));
    assert_true(big == SIZE_MAX / 2);
    char *a = malloc(3), *b = NULL, *c = malloc(5);
    assert_non_null(a);
    assert_non_null(c);
    SKS_FREE_ALL(a, b, c, v);
}

static void test_errors(void **state) {
    (void)state;
    int rc = sks_fail(SKS_EFORMAT, "%s: bad %s", "x.gguf", "magic");
    assert_int_equal(rc, SKS_EFORMAT);
    assert_string_equal(sks_last_error(), "x.gguf: bad magic");
    assert_string_equal(sks_err_name(SKS_EBOUNDS), "SKS_EBOUNDS");
    assert_string_equal(sks_strerror(SKS_EDTYPE), "unsupported tensor type");
}

/* Every one of the 65536 bf16 and f16 bit patterns: fast path equals the scalar
 * reference bit for bit (NaN payloads compared as NaN). */
static void test_half_conversions_exhaustive(void **state) {
    (void)state;
    uint16_t *in = malloc(65536 * 2);
    float *a = malloc(65536 * 4), *b = malloc(65536 * 4);
    for (int i = 0; i < 65536; i++) in[i] = (uint16_t)i;
    sks_bf16_to_f32(in, a, 65536);
    sks_bf16_to_f32_ref(in, b, 65536);
    for (int i = 0; i < 65536; i++) assert_true((isnan(a[i]) && isnan(b[i])) || memcmp(&a[i], &b[i], 4) == 0);
    sks_f16_to_f32(in, a, 65536);
    sks_f16_to_f32_ref(in, b, 65536);
    for (int i = 0; i < 65536; i++) assert_true((isnan(a[i]) && isnan(b[i])) || memcmp(&a[i], &b[i], 4) == 0);
    /* round trips: every finite f16 / bf16 value converts back to itself */
    for (int i = 0; i < 65536; i++) {
        if (!isnan(a[i])) assert_int_equal(sks_f32_to_f16(a[i]), in[i]);
        sks_bf16_to_f32_ref(&in[i], &b[i], 1);
        if (!isnan(b[i])) assert_int_equal(sks_f32_to_bf16(b[i]), in[i]);
    }
    /* known values */
    uint16_t one = 0x3c00, bf_one = 0x3f80;
    float f;
    sks_f16_to_f32(&one, &f, 1);
    assert_true(f == 1.0f);
    sks_bf16_to_f32(&bf_one, &f, 1);
    assert_true(f == 1.0f);
    assert_int_equal(sks_f32_to_bf16(1.00390625f), 0x3f80); /* tie to even */
    free(in);
    free(a);
    free(b);
}

static void test_q8_q4_blocks(void **state) {
    (void)state;
    uint8_t blk[34];
    uint16_t s = sks_f32_to_f16(0.5f);
    memcpy(blk, &s, 2);
    for (int j = 0; j < 32; j++) blk[2 + j] = (uint8_t)(int8_t)(j - 16);
    float out[32];
    sks_q8_0_to_f32(blk, out, 32);
    for (int j = 0; j < 32; j++) assert_true(out[j] == 0.5f * (float)(j - 16));
    uint8_t b4[18];
    memcpy(b4, &s, 2);
    for (int j = 0; j < 16; j++) b4[2 + j] = (uint8_t)((j & 15) | ((15 - j) << 4));
    sks_q4_0_to_f32(b4, out, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(out[j] == 0.5f * (float)(j - 8));
        assert_true(out[j + 16] == 0.5f * (float)(15 - j - 8));
    }
    uint64_t nb;
    assert_int_equal(sks_dtype_nbytes(SKS_DT_Q8_0, 31, &nb), SKS_ESHAPE);
    assert_int_equal(sks_dtype_nbytes(SKS_DT_Q4_0, 64, &nb), 0);
    assert_true(nb == 36);
}

static void test_memory_model_validate(void **state) {
    (void)state;
    sks_arch a;
    sks_test_llama_arch(&a, 1, 4, 6, 2, 1, 2, 5);
    sks_model *m;
    assert_int_equal(sks_model_new_memory(&a, &m), 0);
    static float buf[1024];
    int64_t s[2];
#define SET(role, layer, r, c) (s[0] = (r), s[1] = (c), sks_model_set_tensor(m, role, layer, SKS_DT_F32, (c) ? 2 : 1, s, buf, NULL))
    assert_int_equal(SET(SKS_ROLE_EMBED, -1, 5, 4), 0);
    assert_int_equal(SET(SKS_ROLE_FINAL_NORM, -1, 4, 0), 0);
    assert_int_equal(SET(SKS_ROLE_ATTN_NORM, 0, 4, 0), 0);
    assert_int_equal(SET(SKS_ROLE_WQ, 0, 4, 4), 0);
    assert_int_equal(SET(SKS_ROLE_WK, 0, 2, 4), 0);
    assert_int_equal(SET(SKS_ROLE_WV, 0, 2, 4), 0);
    assert_int_equal(SET(SKS_ROLE_WO, 0, 4, 4), 0);
    assert_int_equal(SET(SKS_ROLE_FFN_NORM, 0, 4, 0), 0);
    assert_int_equal(SET(SKS_ROLE_W_GATE, 0, 6, 4), 0);
    assert_int_equal(SET(SKS_ROLE_W_UP, 0, 6, 4), 0);
    /* W_down missing: validation names it */
    assert_int_equal(sks_model_validate(m), SKS_ENOTFOUND);
    assert_non_null(strstr(sks_last_error(), "w_down"));
    /* wrong shape is rejected by validate with both shapes in the message */
    assert_int_equal(SET(SKS_ROLE_W_DOWN, 0, 6, 4), 0);
    assert_int_equal(sks_model_validate(m), SKS_ESHAPE);
    assert_non_null(strstr(sks_last_error(), "[6, 4]"));
    assert_int_equal(SET(SKS_ROLE_W_DOWN, 0, 4, 6), SKS_EFORMAT); /* duplicate */
    sks_model_close(m);

    assert_int_equal(sks_model_new_memory(&a, &m), 0);
    assert_int_equal(SET(SKS_ROLE_EMBED, -1, 5, 4), 0);
    assert_non_null(sks_model_classifier(m));
    assert_int_equal(SET(SKS_ROLE_WQ, 3, 4, 4), SKS_ESHAPE); /* layer out of range */
    sks_model_close(m);
    a.n_kv_heads = 3;
    assert_int_equal(sks_model_new_memory(&a, &m), SKS_ECONFIG);
#undef SET
}

static int sks__cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Selection and median against a full sort, on seeded random arrays with many ties,
 * odd and even lengths. */
static void test_select_median(void **state) {
    (void)state;
    uint64_t x = 88172645463325252ull;
    for (int trial = 0; trial < 200; trial++) {
        size_t n = 1 + (size_t)(trial * 7 % 97);
        float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            a[i] = (float)((x >> 40) % (trial % 3 ? 1000u : 5u)) - 2.0f;
            b[i] = a[i];
        }
        qsort(b, n, sizeof *b, sks__cmpf);
        double want = n % 2 ? b[n / 2] : 0.5 * ((double)b[n / 2 - 1] + b[n / 2]);
        float *c = malloc(n * sizeof *c);
        memcpy(c, a, n * sizeof *c);
        assert_true(sks_median_f32(c, n) == want);
        size_t k = (size_t)trial % n;
        memcpy(c, a, n * sizeof *c);
        assert_true(sks_select_f32(c, n, k) == b[k]);
        for (size_t i = 0; i < k; i++) assert_true(c[i] <= c[k]);
        for (size_t i = k + 1; i < n; i++) assert_true(c[i] >= c[k]);
        free(a); free(b); free(c);
    }
    assert_true(isnan(sks_median_f32(NULL, 0)));
}

/* A bf16 NaN (0xFFFF, what a run of 0xFF bytes becomes) is caught on conversion with the
 * tensor's name and the count over the whole tensor, not only the converted rows; with
 * the policy relaxed the conversion succeeds and the tensor is recorded once. */
static void test_nonfinite_weights(void **state) {
    (void)state;
    uint16_t w[3 * 4];
    for (int i = 0; i < 12; i++) w[i] = sks_f32_to_bf16(0.25f * (float)(i - 6));
    w[9] = 0xFFFF;  /* row 2: NaN */
    w[11] = 0x7F80; /* row 2: +Inf */
    sks_tensor t = {.name = "layers.0.w", .dtype = SKS_DT_BF16, .ndim = 2, .shape = {3, 4}, .data = w, .nbytes = 24};
    float out[12];
    sks_nonfinite_reset();
    sks_nonfinite_allow(0);
    assert_int_equal(sks_tensor_rows_f32(&t, 0, 2, out), 0); /* rows 0-1 are finite */
    assert_int_equal(sks_tensor_rows_f32(&t, 2, 1, out), SKS_ENONFINITE);
    assert_non_null(strstr(sks_last_error(), "layers.0.w: 2 of 12 weights are NaN or Inf"));
    double d64[12];
    assert_int_equal(sks_tensor_rows_f64(&t, 0, 3, d64), SKS_ENONFINITE);
    assert_int_equal(sks_nonfinite_n_tensors(), 0);
    sks_nonfinite_allow(1);
    assert_int_equal(sks_tensor_rows_f32(&t, 0, 3, out), 0);
    assert_int_equal(sks_tensor_rows_f32(&t, 2, 1, out), 0);
    assert_true(isnan(out[1]) && isinf(out[3]));
    assert_int_equal(sks_nonfinite_n_tensors(), 1);
    uint64_t cnt = 0, tot = 0;
    assert_string_equal(sks_nonfinite_tensor(0, &cnt, &tot), "layers.0.w");
    assert_true(cnt == 2 && tot == 12);
    sks_nonfinite_allow(0);
    sks_nonfinite_reset();
    assert_int_equal(sks_nonfinite_n_tensors(), 0);
}

/* JSON keeps the length of an array with NaN/Inf entries: null in their places. */
static void test_json_null(void **state) {
    (void)state;
    json_t *a = json_array();
    const double v[4] = {1.5, NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 4; i++) json_array_append_new(a, sks_json_num(v[i]));
    assert_int_equal(json_array_size(a), 4);
    char *s = json_dumps(a, JSON_COMPACT);
    assert_string_equal(s, "[1.5,null,null,null]");
    free(s);
    json_decref(a);
}

/* LAPACK never sees NaN: the wrappers answer SKS_ENONFINITE naming the caller, not
 * "argument 5 illegal". */
static void test_lapack_nonfinite(void **state) {
    (void)state;
    double X[6] = {1, 2, 3, 4, NAN, 6}, s[2], ev[2];
    assert_int_equal(sks_svd(2, 3, X, s, NULL, NULL), SKS_ENONFINITE);
    assert_non_null(strstr(sks_last_error(), "sks_svd: NaN or Inf"));
    assert_null(strstr(sks_last_error(), "illegal"));
    double A[4] = {1, INFINITY, INFINITY, 1};
    assert_int_equal(sks_eig_dense(2, A, ev, NULL), SKS_ENONFINITE);
    X[4] = 5;
    assert_int_equal(sks_svd(2, 3, X, s, NULL, NULL), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checked_math),
        cmocka_unit_test(test_grow_free_all),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_half_conversions_exhaustive),
        cmocka_unit_test(test_q8_q4_blocks),
        cmocka_unit_test(test_memory_model_validate),
        cmocka_unit_test(test_select_median),
        cmocka_unit_test(test_nonfinite_weights),
        cmocka_unit_test(test_json_null),
        cmocka_unit_test(test_lapack_nonfinite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
