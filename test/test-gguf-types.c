/* test-gguf-types.c - whole models in every GGUF type: writer, quantizers, loader, trace.
 *
 * A synthetic llama (d 256, f 512, 3 layers, planted spike and sinks) is written by the GGUF writer
 * in each type sinkscope writes and in the llama.cpp-like mixes. For each file:
 *   - the trace of the file equals the trace of the same model dequantized to f32 (an
 *     in-memory model whose f32 weights are the file's weights as the dtype table
 *     decodes them, not the original ones): block max |h| within 1e-4 relative with
 *     both models' products through OpenBLAS's sgemm (the packed kernel of
 *     analysis/matmul_kernel.h off), and within 1e-3 with the file's products through
 *     the packed kernel, as a pass runs them: the last block's max |h| comes out of
 *     sums that cancel, so that another order of f32 summation moves it by up to 2e-4
 *     here (and one ulp of noise on the twin's weights by up to 2e-5); the kernel's
 *     own accuracy is checked against float64 in test-forward;
 *   - the planted spike channels are the spike channels found in the file;
 *   - the quantizer round trip stays within the type's step (per-block error against
 *     the block's largest |x|).
 * Plus the writer's own checks and the type mix of the Q4_K_M file.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "sks_test.h"
#include "analysis/sks_synth.h"
#include "analysis/sks_trace.h"
#include "loaders/sks_gguf.h"
#include "analysis/matmul_kernel.h"

static const char *cfg_json =
    "{\"hidden_size\": 256, \"intermediate_size\": 512, \"num_hidden_layers\": 3, \"num_attention_heads\": 4,"
    " \"num_key_value_heads\": 2, \"vocab_size\": 256, \"tie_word_embeddings\": false}";


/* The dequantized twin: every tensor of m converted to f32 by the dtype table. */
static sks_model *dequantized(const sks_model *m, float ***bufs, size_t *nbuf) {
    sks_model *f = NULL;
    assert_int_equal(sks_model_new_memory(sks_model_arch(m), &f), 0);
    size_t n = sks_model_n_tensors(m);
    *bufs = calloc(n, sizeof **bufs);
    *nbuf = n;
    for (size_t i = 0; i < n; i++) {
        sks_role role;
        int layer;
        const sks_tensor *t = sks_model_tensor_at(m, i, &role, &layer);
        int64_t rows = t->ndim == 2 ? t->shape[0] : 1, cols = sks_tensor_cols(t);
        (*bufs)[i] = malloc((size_t)(rows * cols) * 4);
        assert_int_equal(sks_tensor_rows_f32(t, 0, rows, (*bufs)[i]), 0);
        assert_int_equal(sks_model_set_tensor(f, role, layer, SKS_DT_F32, t->ndim, t->shape, (*bufs)[i], t->name), 0);
    }
    return f;
}

/* Tokens per prompt: enough for the medians the spike rule compares against. */
enum { NTOK = 40 };

static sks_trace_result *run_trace(const sks_model *m, int32_t ids[][NTOK], int np) {
    const int32_t *prompts[4];
    int lens[4];
    for (int k = 0; k < np; k++) prompts[k] = ids[k], lens[k] = NTOK;
    sks_trace_opts o;
    sks_trace_opts_default(&o);
    o.ratio = 100;
    sks_trace_result *r = NULL;
    int rc = sks_trace_run(m, np, prompts, lens, &o, &r);
    if (rc) fail_msg("trace: %s", sks_last_error());
    return r;
}

/* The trace of m equals the trace of its dequantized twin (block max |h| within 1e-4
 * relative on the same GEMM path, 1e-3 through the packed kernel; see the top).
 * Returns the trace of m as a pass runs it (caller frees). */
static sks_trace_result *trace_vs_twin(const sks_model *m, const char *label) {
    float **bufs;
    size_t nbuf;
    sks_model *f = dequantized(m, &bufs, &nbuf);
    int32_t ids[2][NTOK];
    for (int k = 0; k < 2; k++) sks_trace_default_tokens(m, NTOK, 1000 + (uint64_t)k, ids[k]);
    sks_trace_result *rq = run_trace(m, ids, 2), *rf = run_trace(f, ids, 2);
    sks__mmk_set_enabled(0);
    sks_trace_result *rs = run_trace(m, ids, 2);
    sks__mmk_set_enabled(1);
    assert_int_equal(rq->n_blocks, rf->n_blocks);
    assert_int_equal(rs->n_blocks, rf->n_blocks);
    for (int b = 0; b < rq->n_blocks; b++) {
        double es = sks_test_reldiff(rs->blocks[b].max_abs, rf->blocks[b].max_abs, 1e-30);
        double eq = sks_test_reldiff(rq->blocks[b].max_abs, rf->blocks[b].max_abs, 1e-30);
        if (es > 1e-4 || eq > 1e-3)
            fail_msg("%s block %d: max |h| %.9g in the file (%.9g with sgemm), %.9g dequantized to f32 (rel %.2g, "
                     "%.2g)", label, b, rq->blocks[b].max_abs, rs->blocks[b].max_abs, rf->blocks[b].max_abs, eq, es);
    }
    sks_trace_result_free(rs);
    sks_trace_result_free(rf);
    sks_model_close(f);
    for (size_t i = 0; i < nbuf; i++) free(bufs[i]);
    free(bufs);
    return rq;
}

static void check_scheme(const sks_synth *s, const char *scheme) {
    char *dir = sks_test_tmpdir();
    assert_int_equal(sks_synth_write_gguf(s, dir, scheme), 0);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.gguf", dir);
    sks_model *m = NULL;
    if (sks_model_open(path, &m)) fail_msg("%s: %s", scheme, sks_last_error());
    assert_int_equal(sks_model_arch(m)->rope_interleaved, 1);
    sks_trace_result *rq = trace_vs_twin(m, scheme);
    const sks_synth_planted *p = sks_synth_get_planted(s);
    if (rq->n_spike_channels != p->n_spike) fail_msg("%s: %d spike channels found, %d planted", scheme, rq->n_spike_channels, p->n_spike);
    for (int c = 0; c < p->n_spike; c++) {
        int found = 0;
        for (int k = 0; k < rq->n_spike_channels; k++) found += rq->spike_channels[k] == p->channels[c];
        if (found != 1) fail_msg("%s: planted channel %d not found", scheme, p->channels[c]);
    }
    sks_trace_result_free(rq);
    sks_model_close(m);
    sks_test_rm_tree(dir);
    free(dir);
}

static sks_synth *make_synth(void) {
    sks_synth_config c;
    assert_int_equal(sks_synth_config_from_json(cfg_json, "test.json", &c), 0);
    sks_synth *s = NULL;
    assert_int_equal(sks_synth_new(&c, 5, &s), 0);
    return s;
}

/* Every type sinkscope writes: trace equal to the dequantized twin, planted channels found. */
static void test_every_type(void **state) {
    (void)state;
    sks_synth *s = make_synth();
    for (int d = 0; d < SKS_DT_COUNT; d++) {
        const sks_dtype_info *t = sks_dtype_get((sks_dtype)d);
        if (!t->from_f32) continue;
        char name[16];
        snprintf(name, sizeof name, "%s", t->name);
        check_scheme(s, name);
    }
    sks_synth_free(s);
}

static void test_mixes(void **state) {
    (void)state;
    sks_synth *s = make_synth();
    const char *mixes[] = {"q4_k_m", "q3_k_m", "q4_k_s", "q5_k_m"};
    for (size_t k = 0; k < 4; k++) check_scheme(s, mixes[k]);
    sks_synth_free(s);
}

/* Q4_K_M: the mix llama.cpp would choose: Q6_K output and the more-bits layers' attn_v /
 * ffn_down, F32 vectors, Q4_K elsewhere; with d 96 (not a multiple of 256) the fallbacks. */
static void test_q4_k_m_mix(void **state) {
    (void)state;
    sks_gguf_scheme sc;
    assert_int_equal(sks_gguf_scheme_parse("Q4_K_M", &sc), 0);
    assert_int_equal(sks_gguf_scheme_type(&sc, SKS_ROLE_LM_HEAD, -1, 32, 2, 4096), SKS_DT_Q6_K);
    assert_int_equal(sks_gguf_scheme_type(&sc, SKS_ROLE_WQ, 5, 32, 2, 4096), SKS_DT_Q4_K);
    assert_int_equal(sks_gguf_scheme_type(&sc, SKS_ROLE_W_DOWN, 0, 32, 2, 704), SKS_DT_Q8_0); /* Q6_K layer, 704 % 256 != 0 */
    assert_int_equal(sks_gguf_scheme_type(&sc, SKS_ROLE_W_DOWN, 5, 32, 2, 14336), SKS_DT_Q4_K);
    assert_int_equal(sks_gguf_scheme_type(&sc, SKS_ROLE_W_DOWN, 6, 32, 2, 14336), SKS_DT_Q6_K); /* (6-4) % 3 == 2 */
    assert_int_equal(sks_gguf_scheme_type(&sc, SKS_ROLE_WV, 31, 32, 2, 4096), SKS_DT_Q6_K);
    assert_int_equal(sks_gguf_scheme_type(&sc, SKS_ROLE_WQ, 5, 32, 2, 96), SKS_DT_Q5_0);
    assert_int_equal(sks_gguf_scheme_type(&sc, SKS_ROLE_WQ, 5, 32, 2, 40), SKS_DT_F16);
    assert_int_equal(sks_gguf_scheme_type(&sc, SKS_ROLE_ATTN_NORM, 5, 32, 1, 4096), SKS_DT_F32);
    assert_int_not_equal(sks_gguf_scheme_parse("q4_k_x", &sc), 0);
    assert_non_null(strstr(sks_last_error(), "q4_k_x"));
    assert_int_not_equal(sks_gguf_scheme_parse("iq2_xxs_unknown", &sc), 0);
}

/* Quantizer round trip: per block, max |x - dequant(quant(x))| <= tol * max |x| with tol
 * a little above half the type's quantization step, or the whole step for the symmetric
 * types whose positive side is one level short (Q4_0, Q5_0, Q3_K, IQ4: x = -xmax is
 * exact, +xmax is clamped one step below); sub-block scales are quantized too.
 * Rows mix scales over 4 decades, so sub-block scales differ within a super-block. */
static void test_quantizer_roundtrip(void **state) {
    (void)state;
    static const struct { sks_dtype dt; double tol; } want[] = {
        {SKS_DT_F32, 0},       {SKS_DT_F16, 1e-3},    {SKS_DT_BF16, 8e-3},   {SKS_DT_Q8_0, 0.006},
        {SKS_DT_Q8_1, 0.006},  {SKS_DT_Q8_K, 0.006},  {SKS_DT_Q6_K, 0.04},   {SKS_DT_Q5_0, 0.07},
        {SKS_DT_Q5_1, 0.04},   {SKS_DT_Q5_K, 0.05},   {SKS_DT_Q4_0, 0.13},    {SKS_DT_Q4_1, 0.075},
        {SKS_DT_Q4_K, 0.1},    {SKS_DT_IQ4_NL, 0.12}, {SKS_DT_IQ4_XS, 0.15}, {SKS_DT_Q3_K, 0.3},
        {SKS_DT_Q2_K, 0.4},
    };
    enum { N = 4096 };
    float *x = malloc(N * 4), *y = malloc(N * 4);
    uint8_t *q = malloc(N * 4);
    uint64_t st = 7;
    for (int i = 0; i < N; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(st >> 11) / 9007199254740992.0;
        x[i] = (float)((u - 0.5) * pow(10.0, (i / 16) % 4 - 2));
    }
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        const sks_dtype_info *t = sks_dtype_get(want[k].dt);
        t->from_f32(x, q, N);
        t->to_f32(q, y, N);
        uint32_t blk = t->block > 1 ? t->block : 32;
        for (int b = 0; b < N / (int)blk; b++) {
            double amax = 0, err = 0;
            for (uint32_t i = 0; i < blk; i++) {
                amax = fmax(amax, fabs(x[b * blk + i]));
                err = fmax(err, fabs((double)x[b * blk + i] - (double)y[b * blk + i]));
            }
            if (err > want[k].tol * amax) fail_msg("%s block %d: error %.3g of max |x| %.3g", t->name, b, err, amax);
        }
    }
    /* tiny and subnormal inputs (found by fuzz-dequant: MXFP4's exponent of a subnormal
     * block maximum was log2(0) = -inf converted to int) */
    for (int i = 0; i < N; i++) x[i] = (i % 3 ? 1e-44f : -3e-39f) * (float)(i % 7);
    for (int d = 0; d < SKS_DT_COUNT; d++) {
        const sks_dtype_info *t = sks_dtype_get((sks_dtype)d);
        if (!t->from_f32) continue;
        t->from_f32(x, q, N);
        t->to_f32(q, y, N);
        for (int i = 0; i < N; i++)
            if (!(fabsf(y[i]) < 1e-30f)) fail_msg("%s element %d: %g back as %g", t->name, i, (double)x[i], (double)y[i]);
    }
    /* ternary types reproduce ternary data exactly */
    for (int i = 0; i < N; i++) x[i] = (float)((i * 7) % 3 - 1) * 0.25f;
    sks_dtype tern[] = {SKS_DT_TQ1_0, SKS_DT_TQ2_0};
    for (int k = 0; k < 2; k++) {
        const sks_dtype_info *t = sks_dtype_get(tern[k]);
        t->from_f32(x, q, N);
        t->to_f32(q, y, N);
        for (int i = 0; i < N; i++)
            if (x[i] != y[i]) fail_msg("%s element %d: %g back as %g", t->name, i, (double)x[i], (double)y[i]);
    }
    free(x);
    free(y);
    free(q);
}

/* The writer: sticky errors, data accounting, and a file the parser reads back. */
static void test_writer(void **state) {
    (void)state;
    char *dir = sks_test_tmpdir(), path[4096];
    snprintf(path, sizeof path, "%s/w.gguf", dir);
    sks_gguf_writer *w;
    assert_int_equal(sks_gguf_writer_new(&w), 0);
    sks_gguf_writer_set_str(w, "general.architecture", "llama");
    sks_gguf_writer_set_f32(w, "x.eps", 1e-5f);
    const char *toks[] = {"a", "bc"};
    sks_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 2);
    uint64_t ne[2] = {64, 3};
    assert_int_equal(sks_gguf_writer_add_tensor(w, "t1", SKS_DT_Q8_0, 2, ne), 0);
    uint64_t ne2[1] = {5};
    assert_int_equal(sks_gguf_writer_add_tensor(w, "t2", SKS_DT_F32, 1, ne2), 0);
    assert_int_equal(sks_gguf_writer_begin(w, path), 0);
    uint8_t blk[3 * 2 * 34];
    memset(blk, 1, sizeof blk);
    assert_int_equal(sks_gguf_writer_data(w, blk, 100), 0);
    assert_int_equal(sks_gguf_writer_data(w, blk + 100, sizeof blk - 100), 0);
    assert_int_equal(sks_gguf_writer_finish(w), SKS_EARG); /* t2 has no data */
    assert_non_null(strstr(sks_last_error(), "t2"));
    sks_gguf_writer_free(w);
    /* a bad tensor sticks: every later call returns the first error */
    assert_int_equal(sks_gguf_writer_new(&w), 0);
    uint64_t bad[2] = {100, 2};
    assert_int_equal(sks_gguf_writer_add_tensor(w, "q", SKS_DT_Q4_K, 2, bad), SKS_ESHAPE);
    assert_int_equal(sks_gguf_writer_set_u32(w, "k", 1), SKS_ESHAPE);
    assert_int_equal(sks_gguf_writer_finish(w), SKS_ESHAPE);
    sks_gguf_writer_free(w);
    sks_test_rm_tree(dir);
    free(dir);
}

/* A truncated quantized file: the last tensor runs past the end; one line names the
 * tensor and its type. */
static void test_truncated(void **state) {
    (void)state;
    sks_synth *s = make_synth();
    char *dir = sks_test_tmpdir(), path[4096];
    assert_int_equal(sks_synth_write_gguf(s, dir, "q4_k_m"), 0);
    snprintf(path, sizeof path, "%s/model.gguf", dir);
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    assert_int_equal(truncate(path, size - 1000), 0);
    sks_model *m = NULL;
    assert_int_equal(sks_model_open(path, &m), SKS_EBOUNDS);
    assert_null(m);
    const char *e = sks_last_error();
    assert_non_null(strstr(e, "tensor output.weight: type Q6_K: bytes ["));
    assert_non_null(strstr(e, "truncated file?"));
    assert_null(strchr(e, '\n'));
    sks_test_rm_tree(dir);
    free(dir);
    sks_synth_free(s);
}

/* ---- files written by llama.cpp's own llama-quantize ----------------------------------
 * test/data/llama-quant: a synthetic llama (d 256, 3 layers, attn_output / ffn_down rows
 * of 64 for the fallback types) written in F16 by sinkscope synth and quantized by
 * llama-quantize to each type; expected.json holds what llama.cpp's numpy dequantizer
 * (gguf-py) makes of each file (scripts/make-llama-quant.sh, llama-quant-reference.py).
 * Per file: the model opens; the type mix equals gguf-py's (tensors, elements, bytes
 * per type; bits per weight); every tensor's dequantized values equal gguf-py's bit for
 * bit (FNV-1a of all f32 values, the first 32 values of the first and last rows); the
 * trace equals that of the file dequantized to f32. `inspect` on the Q4_K_M file prints
 * the mix with bits per weight. */
static uint64_t fnv1a64(const float *x, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    const unsigned char *b = (const unsigned char *)x;
    for (size_t i = 0; i < 4 * n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static void check_row(const char *file, const char *tname, const char *which, const float *got, json_t *want) {
    for (size_t j = 0; j < json_array_size(want); j++) {
        uint32_t w = (uint32_t)strtoul(json_string_value(json_array_get(want, j)), NULL, 16), g;
        memcpy(&g, &got[j], 4);
        if (g != w) {
            float wf;
            memcpy(&wf, &w, 4);
            fail_msg("%s: %s %s[%zu]: sinkscope %.9g (%08x), gguf-py %.9g (%08x)", file, tname, which, j, (double)got[j],
                     g, (double)wf, w);
        }
    }
}

static void check_llama_file(json_t *fe, const char *dir) {
    const char *file = json_string_value(json_object_get(fe, "file"));
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    sks_model *m = NULL;
    if (sks_model_open(path, &m)) fail_msg("%s: %s", file, sks_last_error());
    /* the type mix */
    sks_dtype_mix mix;
    sks_model_dtype_mix(m, &mix);
    json_t *wm = json_object_get(fe, "mix");
    const char *tn;
    json_t *tv;
    int ntypes = 0;
    json_object_foreach(wm, tn, tv) {
        int d = sks_dtype_from_name(tn);
        if (d < 0) fail_msg("%s: type %s unknown to the dtype table", file, tn);
        if (mix.tensors[d] != (uint64_t)json_integer_value(json_array_get(tv, 0)) ||
            mix.elements[d] != (uint64_t)json_integer_value(json_array_get(tv, 1)) ||
            mix.bytes[d] != (uint64_t)json_integer_value(json_array_get(tv, 2)))
            fail_msg("%s: %s: %llu tensors, %llu elements, %llu bytes; gguf-py: %lld, %lld, %lld", file, tn,
                     (unsigned long long)mix.tensors[d], (unsigned long long)mix.elements[d],
                     (unsigned long long)mix.bytes[d], (long long)json_integer_value(json_array_get(tv, 0)),
                     (long long)json_integer_value(json_array_get(tv, 1)), (long long)json_integer_value(json_array_get(tv, 2)));
        ntypes++;
    }
    for (int d = 0; d < SKS_DT_COUNT; d++) ntypes -= mix.tensors[d] != 0;
    if (ntypes) fail_msg("%s: the mix has other types than gguf-py's", file);
    double wbpw = json_real_value(json_object_get(fe, "bpw"));
    if (sks_test_reldiff(mix.bpw, wbpw, 1e-30) > 1e-12) fail_msg("%s: %.6f bits per weight, gguf-py %.6f", file, mix.bpw, wbpw);
    /* every tensor against gguf-py's dequantization */
    json_t *wt = json_object_get(fe, "tensors");
    assert_int_equal(sks_model_n_tensors(m), json_array_size(wt));
    for (size_t i = 0; i < json_array_size(wt); i++) {
        json_t *e = json_array_get(wt, i);
        const char *tname = json_string_value(json_object_get(e, "name"));
        const sks_tensor *t = NULL;
        for (size_t k = 0; k < sks_model_n_tensors(m) && !t; k++) {
            const sks_tensor *c = sks_model_tensor_at(m, k, NULL, NULL);
            if (!strcmp(c->name, tname)) t = c;
        }
        if (!t) fail_msg("%s: tensor %s not in the model view", file, tname);
        assert_string_equal(sks_dtype_name(t->dtype), json_string_value(json_object_get(e, "type")));
        int64_t rows = t->ndim == 2 ? t->shape[0] : 1, cols = sks_tensor_cols(t);
        json_t *sh = json_object_get(e, "shape");
        assert_int_equal(rows, json_integer_value(json_array_get(sh, 0)));
        assert_int_equal(cols, json_integer_value(json_array_get(sh, 1)));
        float *x = malloc((size_t)(rows * cols) * sizeof *x);
        assert_int_equal(sks_tensor_rows_f32(t, 0, rows, x), 0);
        check_row(file, tname, "row 0", x, json_object_get(e, "row0"));
        check_row(file, tname, "last row", x + (size_t)((rows - 1) * cols), json_object_get(e, "row_last"));
        char h[24];
        snprintf(h, sizeof h, "%016llx", (unsigned long long)fnv1a64(x, (size_t)(rows * cols)));
        if (strcmp(h, json_string_value(json_object_get(e, "fnv1a64")))) {
            double sum = 0;
            for (int64_t k = 0; k < rows * cols; k++) sum += x[k];
            fail_msg("%s: %s: values differ from gguf-py's (hash %s, want %s; sum %.17g, want %.17g)", file, tname, h,
                     json_string_value(json_object_get(e, "fnv1a64")), sum, json_real_value(json_object_get(e, "sum")));
        }
        free(x);
    }
    sks_trace_result_free(trace_vs_twin(m, file));
    sks_model_close(m);
}

static void test_llama_quantize_files(void **state) {
    (void)state;
    const char *dir = SKS_SOURCE_DIR "/test/data/llama-quant";
    char p[4096];
    snprintf(p, sizeof p, "%s/expected.json", dir);
    json_error_t err;
    json_t *root = json_load_file(p, 0, &err);
    if (!root) fail_msg("%s: %s", p, err.text);
    json_t *files = json_object_get(root, "files");
    assert_true(json_array_size(files) >= 11);
    int q4km = 0;
    for (size_t i = 0; i < json_array_size(files); i++) {
        json_t *fe = json_array_get(files, i);
        check_llama_file(fe, dir);
        const char *file = json_string_value(json_object_get(fe, "file"));
        if (strcmp(file, "model-Q4_K_M.gguf")) continue;
        /* inspect: one line per type with its tensors, elements and bits per weight */
        q4km = 1;
        char cmd[8192];
        snprintf(cmd, sizeof cmd, "'%s' inspect '%s/%s' 2>&1", SKS_BINARY, dir, file);
        FILE *f = popen(cmd, "r");
        assert_non_null(f);
        char line[1024];
        int rows = 0, overall = 0;
        double bpw_line = 0;
        json_t *wm = json_object_get(fe, "mix");
        while (fgets(line, sizeof line, f)) {
            char tname[32];
            unsigned long long nt, ne;
            double b;
            if (sscanf(line, " %31s %llu %llu %lf", tname, &nt, &ne, &b) == 4) {
                json_t *tv = json_object_get(wm, tname);
                if (!tv) continue;
                assert_int_equal(nt, json_integer_value(json_array_get(tv, 0)));
                assert_int_equal(ne, json_integer_value(json_array_get(tv, 1)));
                assert_true(fabs(b - sks_dtype_get((sks_dtype)sks_dtype_from_name(tname))->bpw) < 1e-3);
                rows++;
            }
            if (sscanf(line, "bpw %lf bits per weight overall", &bpw_line) == 1) overall = 1;
        }
        assert_int_equal(pclose(f), 0);
        assert_int_equal(rows, (int)json_object_size(wm));
        assert_true(json_object_get(wm, "Q4_K") && json_object_get(wm, "Q6_K"));
        assert_true(overall);
        assert_true(fabs(bpw_line - json_real_value(json_object_get(fe, "bpw"))) < 1e-3);
    }
    assert_true(q4km);
    json_decref(root);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer),      cmocka_unit_test(test_quantizer_roundtrip), cmocka_unit_test(test_q4_k_m_mix),
        cmocka_unit_test(test_truncated),   cmocka_unit_test(test_every_type),  cmocka_unit_test(test_mixes),
        cmocka_unit_test(test_llama_quantize_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
