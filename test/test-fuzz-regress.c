/* test-fuzz-regress.c - the inputs the fuzzers of test/fuzz/ found, replayed, and the
 * properties those fuzzers check, on inputs made here:
 *   - fuzz-tokenizer: a llama2.c tokenizer.bin of empty pieces (encoding must give ids
 *     whose piece maps back to an id);
 *   - fuzz-msgpack: five bytes declaring a 2^32-element array (msgpack-c allocated
 *     64 GiB from the count before reading; the pre-check must refuse it), and a layer
 *     part whose n_channels disagrees with its channel list (the cleanup freed through a
 *     NULL channel array);
 *   - the part format itself: pack -> unpack is bitwise, every truncation and every
 *     single-byte change of a valid part is a clean SKS_EFORMAT or a valid layer.
 */
#include "sks_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../analysis/sks_out.h"
#include "../analysis/sks_spikes.h"
#include "../loaders/tokenizer_internal.h"

/* The crash file of fuzz-tokenizer, without its selector byte: max_token_length
 * 0x60055, then records (score, len, bytes) of mostly empty pieces. */
static const uint8_t sks__tok_crash[] = {
    0x55, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};

static void sks__check_tokenizer(const sks_tokenizer *t, const char *text) {
    int32_t *ids = NULL;
    int n = 0;
    if (sks_tokenizer_encode(t, text, 1, &ids, &n)) return; /* refusing is fine; crashing is not */
    for (int i = 0; i < n; i++) {
        assert_true(ids[i] >= 0 && ids[i] < sks_tokenizer_vocab_size(t));
        const char *p = sks_tokenizer_piece(t, ids[i]);
        assert_non_null(p);
        assert_true(sks_tokenizer_piece_id(t, p) >= 0);
        char buf[64];
        sks_tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], buf, sizeof buf);
        assert_non_null(memchr(buf, 0, sizeof buf));
    }
    free(ids);
}

static void test_tokenizer_empty_pieces(void **state) {
    (void)state;
    sks_log_set_level(-1);
    sks_tokenizer *t = NULL;
    int rc = sks__tok_read_llama2c(sks__tok_crash, sizeof sks__tok_crash, "crash/tokenizer.bin", &t);
    if (rc == 0) {
        assert_non_null(t);
        sks__check_tokenizer(t, "Hello world, the 2026 caf\xc3\xa9 \xe2\x96\x81 <s>\n\tend.");
        sks__check_tokenizer(t, " ");
        sks__check_tokenizer(t, "");
        sks_tokenizer_free(t);
    } else {
        assert_null(t);
        assert_true(strlen(sks_last_error()) > 0);
    }
    /* the same file through the public entry point (content detection) */
    char *dir = sks_test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.bin", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(sks__tok_crash, 1, sizeof sks__tok_crash, f), sizeof sks__tok_crash);
    fclose(f);
    if (sks_tokenizer_open(path, &t) == 0) {
        sks__check_tokenizer(t, "abc def");
        sks_tokenizer_free(t);
    }
    remove(path);
    remove(dir);
    free(dir);
}

/* A layer result with every field set from a seeded generator. */
static uint64_t sks__rs = 12345;
static double sks__rnd(void) {
    sks__rs = sks__rs * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(sks__rs >> 11) / 9007199254740992.0 * 2 - 1;
}

static void sks__make_layer(sks_spikes_layer_result *r, int layer, int d, int nch, int rank) {
    memset(r, 0, sizeof *r);
    r->layer = layer, r->d = d, r->precision = 2, r->matvecs = 321, r->restarts = 4;
    r->seconds_screen = 0.25, r->seconds_eigs = 1.5, r->flops_screen = 1e9, r->flops_eigs = 3e9;
    r->frobenius = malloc((size_t)d * sizeof(double));
    r->trace = malloc((size_t)d * sizeof(double));
    for (int i = 0; i < d; i++) r->frobenius[i] = fabs(sks__rnd()) * 1e3, r->trace[i] = sks__rnd();
    r->n_top = 3;
    r->top_frob = malloc(3 * sizeof(int));
    for (int i = 0; i < 3; i++) r->top_frob[i] = (i * 7) % d;
    r->n_channels = nch;
    r->channels = calloc((size_t)nch, sizeof *r->channels);
    for (int c = 0; c < nch; c++) {
        sks_spike_channel *h = &r->channels[c];
        h->channel = (c * 5 + 1) % d, h->source = 1 + (c % 4), h->rank = rank, h->converged = c % 2;
        h->sign_from_input = 1, h->token = c - 1, h->n_wvo = layer + 1;
        h->eigenvalues = malloc((size_t)rank * sizeof(double));
        h->residuals = malloc((size_t)rank * sizeof(double));
        h->s_star = malloc((size_t)d * sizeof(double));
        h->cos_wvo = malloc((size_t)(layer + 1) * sizeof(double));
        for (int k = 0; k < rank; k++) h->eigenvalues[k] = sks__rnd() * 100, h->residuals[k] = 1e-12 * (k + 1);
        for (int k = 0; k < d; k++) h->s_star[k] = sks__rnd();
        for (int k = 0; k <= layer; k++) h->cos_wvo[k] = sks__rnd();
        h->frobenius = 1, h->trace = -2, h->dominance = 3.5, h->energy_fraction = 0.75;
        h->x_norm = NAN, h->cos_x_s = 0.5, h->quad_pred = -INFINITY, h->rank1_pred = 1e300;
        h->true_out = 4, h->true_out_fwd = 4.25, h->silu_regime = 0.9, h->cos_x0_s = -0.1;
    }
}

/* a made-up layer result, and its packed bytes in a fresh o */
static void sks__make_packed(sks_spikes_layer_result *r, sks_out *o, int layer, int d, int nch, int rank) {
    sks__make_layer(r, layer, d, nch, rank);
    sks_out_init(o);
    sks_spikes_layer_pack(o, r);
}

static int sks__same_bits(double a, double b) { return !memcmp(&a, &b, sizeof a); }

static void test_part_roundtrip_bitwise(void **state) {
    (void)state;
    const int d = 24;
    sks_spikes_layer_result a, b;
    sks_out o;
    sks__make_packed(&a, &o, 3, d, 4, 5);
    sks_spikes_layer_pack(&o, &a); /* two layers back to back, as in a gather */
    assert_int_equal(sks_out_error(&o), 0);
    size_t off = 0;
    for (int rep = 0; rep < 2; rep++) {
        assert_int_equal(sks_spikes_layer_unpack((const uint8_t *)o.buf.data, o.buf.size, &off, d, "t", &b), 0);
        assert_int_equal(b.layer, 3);
        assert_int_equal(b.n_channels, 4);
        assert_int_equal(b.n_top, 3);
        assert_true(sks__same_bits(b.seconds_eigs, a.seconds_eigs));
        for (int i = 0; i < d; i++) {
            assert_true(sks__same_bits(a.frobenius[i], b.frobenius[i]));
            assert_true(sks__same_bits(a.trace[i], b.trace[i]));
        }
        for (int c = 0; c < 4; c++) {
            const sks_spike_channel *x = &a.channels[c], *y = &b.channels[c];
            assert_int_equal(x->channel, y->channel);
            assert_int_equal(x->token, y->token);
            assert_int_equal(x->source, y->source);
            for (int k = 0; k < 5; k++) assert_true(sks__same_bits(x->eigenvalues[k], y->eigenvalues[k]));
            for (int k = 0; k < d; k++) assert_true(sks__same_bits(x->s_star[k], y->s_star[k]));
            for (int k = 0; k <= 3; k++) assert_true(sks__same_bits(x->cos_wvo[k], y->cos_wvo[k]));
            assert_true(isnan(y->x_norm) && isinf(y->quad_pred) && y->rank1_pred == 1e300);
        }
        sks_spikes_layer_result_free(&b);
    }
    assert_int_equal(off, o.buf.size);
    /* another model width is refused */
    off = 0;
    assert_int_equal(sks_spikes_layer_unpack((const uint8_t *)o.buf.data, o.buf.size, &off, d + 1, "t", &b),
                     SKS_EFORMAT);
    sks_out_free(&o);
    sks_spikes_layer_result_free(&a);
}

static void test_part_truncations_and_flips(void **state) {
    (void)state;
    sks_log_set_level(-1);
    const int d = 16;
    sks_spikes_layer_result a, b;
    sks_out o;
    sks__make_packed(&a, &o, 1, d, 2, 3);
    const size_t n = o.buf.size;
    uint8_t *buf = malloc(n);
    for (size_t k = 0; k < n; k++) { /* every truncation: a clean error */
        size_t off = 0;
        memcpy(buf, o.buf.data, k);
        assert_int_equal(sks_spikes_layer_unpack(buf, k, &off, d, "t", &b), SKS_EFORMAT);
    }
    int accepted = 0;
    for (size_t k = 0; k < n; k++) /* every byte changed: an error or a layer that holds together */
        for (int v = 0; v < 256; v += 51) {
            memcpy(buf, o.buf.data, n);
            buf[k] = (uint8_t)(buf[k] ^ (v | 1));
            size_t off = 0;
            int rc = sks_spikes_layer_unpack(buf, n, &off, d, "t", &b);
            if (rc == 0) {
                accepted++;
                assert_true(b.n_top >= 0 && b.n_top <= d);
                for (int c = 0; c < b.n_channels; c++) {
                    assert_true(b.channels[c].channel >= 0 && b.channels[c].channel < d);
                    assert_true(b.channels[c].n_wvo <= b.layer + 1);
                }
                sks_spikes_layer_result_free(&b);
            } else {
                assert_int_equal(rc, SKS_EFORMAT);
            }
        }
    assert_true(accepted > 0); /* flips inside the f64 payload still decode */
    free(buf);
    sks_out_free(&o);
    sks_spikes_layer_result_free(&a);
}

static void test_msgpack_hostile_counts(void **state) {
    (void)state;
    sks_log_set_level(-1);
    /* fuzz-msgpack's first find: an array of 2^32 - 1 elements in five bytes */
    const uint8_t huge_array[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    const uint8_t huge_map[] = {0x81, 0xa1, 'k', 0xdf, 0x7f, 0xff, 0xff, 0xff};
    const uint8_t long_str[] = {0xdb, 0x00, 0x10, 0x00, 0x00, 'a'};
    const uint8_t nested_ok[] = {0x92, 0x91, 0xc0, 0x82, 0xa1, 'a', 0x01, 0xa1, 'b', 0xcb, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f};
    const uint8_t never_used[] = {0xc1};
    size_t end = 0;
    assert_int_equal(sks_msgpack_check(huge_array, sizeof huge_array, 0, NULL), -1);
    assert_int_equal(sks_msgpack_check(huge_map, sizeof huge_map, 0, NULL), -1);
    assert_int_equal(sks_msgpack_check(long_str, sizeof long_str, 0, NULL), -1);
    assert_int_equal(sks_msgpack_check(never_used, sizeof never_used, 0, NULL), -1);
    assert_int_equal(sks_msgpack_check(nested_ok, sizeof nested_ok, 0, &end), 0);
    assert_int_equal(end, sizeof nested_ok);
    /* every proper prefix of a well-formed object is refused */
    for (size_t k = 0; k < sizeof nested_ok; k++) assert_int_equal(sks_msgpack_check(nested_ok, k, 0, NULL), -1);
    sks_spikes_layer_result r;
    size_t off = 0;
    assert_int_equal(sks_spikes_layer_unpack(huge_array, sizeof huge_array, &off, 8, "t", &r), SKS_EFORMAT);
}

/* fuzz-msgpack's second find: n_channels said 5, the frobenius array was short, and
 * the cleanup walked 5 channels of a NULL array. */
static void test_part_bad_count_before_channels(void **state) {
    (void)state;
    sks_log_set_level(-1);
    const int d = 8;
    sks_out o;
    sks_out_init(&o);
    sks_out_array(&o, 15);
    sks_out_str(&o, "sinkscope.spikes-layer/1");
    sks_out_int(&o, 0), sks_out_int(&o, d), sks_out_int(&o, 1), sks_out_int(&o, 0), sks_out_int(&o, 0);
    double tm[4] = {0, 0, 0, 0};
    msgpack_pack_bin(&o.pk, sizeof tm), msgpack_pack_bin_body(&o.pk, tm, sizeof tm);
    msgpack_pack_bin(&o.pk, 3), msgpack_pack_bin_body(&o.pk, "abc", 3); /* frobenius: 3 bytes, not 64 */
    msgpack_pack_bin(&o.pk, 0), msgpack_pack_bin(&o.pk, 0);
    sks_out_int(&o, 0), sks_out_int(&o, 5), sks_out_nil(&o), sks_out_nil(&o);
    sks_out_array(&o, 0);
    size_t off = 0;
    sks_spikes_layer_result r;
    assert_int_equal(sks_spikes_layer_unpack((const uint8_t *)o.buf.data, o.buf.size, &off, d, "t", &r),
                     SKS_EFORMAT);
    assert_non_null(strstr(sks_last_error(), "frobenius"));
    assert_null(r.channels);
    sks_out_free(&o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer_empty_pieces),
        cmocka_unit_test(test_part_roundtrip_bitwise),
        cmocka_unit_test(test_part_truncations_and_flips),
        cmocka_unit_test(test_msgpack_hostile_counts),
        cmocka_unit_test(test_part_bad_count_before_channels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
