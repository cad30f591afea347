/* test-loaders.c - the three formats on the real fixtures.
 *
 * References are independent of the loaders: the llama2.c tokenizer file and a small
 * GGUF/safetensors walker written here from the format specs, with scalar bf16/f16/Q8_0
 * decodes. Equalities between formats are exact: the fixtures hold the same f32 (or
 * bf16-exact) numbers, so any difference is a loader bug, not rounding.
 */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sks_test.h"
#include "loaders/sks_gguf.h"
#include "loaders/sks_model.h"

/* Whole tensor as f32 (caller frees). */
static float *tensor_f32(const sks_tensor *t) {
    int64_t rows = t->ndim == 2 ? t->shape[0] : 1, cols = sks_tensor_cols(t);
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    assert_non_null(x);
    assert_int_equal(sks_tensor_rows_f32(t, 0, rows, x), 0);
    return x;
}

static void assert_same_arch(const sks_arch *a, const sks_arch *b) {
    assert_string_equal(a->family, b->family);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->d_model, b->d_model);
    assert_int_equal(a->d_ffn, b->d_ffn);
    assert_int_equal(a->n_heads, b->n_heads);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->tied_embeddings, b->tied_embeddings);
    assert_true(fabs(a->norm_eps - b->norm_eps) <= 1e-12);
    assert_true(a->rope_theta == b->rope_theta);
    assert_int_equal(a->bos_id, b->bos_id);
    assert_int_equal(a->eos_id, b->eos_id);
}

/* A row of a tensor named in its file, decoded there straight from the file's bytes and
 * compared with what the model view returns for (role, layer). */
typedef struct {
    sks_role role;
    int layer;
    const char *name;
    int64_t row;
} probe;

/* A fixture's Llama architecture as its README gives it (eps 1e-5 and theta 10000 in all
 * of them); the fields a README leaves open are -1 and not checked. */
typedef struct {
    int d, L, H, Hkv, dh, f, V, tied, interleaved, max_seq, bos, eos;
} readme_arch;

static void check_readme_arch(const sks_arch *a, const readme_arch *w) {
    assert_string_equal(a->family, "llama");
    assert_int_equal(a->d_model, w->d);
    assert_int_equal(a->n_layers, w->L);
    assert_int_equal(a->n_heads, w->H);
    assert_int_equal(a->n_kv_heads, w->Hkv);
    assert_int_equal(a->head_dim, w->dh);
    assert_int_equal(a->d_ffn, w->f);
    assert_int_equal(a->vocab_size, w->V);
    assert_int_equal(a->tied_embeddings, w->tied);
    if (w->interleaved >= 0) assert_int_equal(a->rope_interleaved, w->interleaved);
    if (w->max_seq >= 0) assert_int_equal(a->max_seq, w->max_seq);
    assert_true(a->rope_theta == 10000.0);
    assert_true(fabs(a->norm_eps - 1e-5) < 1e-12);
    if (w->bos >= 0) assert_int_equal(a->bos_id, w->bos);
    if (w->eos >= 0) assert_int_equal(a->eos_id, w->eos);
}

/* stories260K as README says: dim 64, 5 layers, 8 heads, 4 KV heads, FFN 172, vocab
 * 512, tied. */
static void check_stories_arch(const sks_arch *a) {
    check_readme_arch(a, &(readme_arch){64, 5, 8, 4, 8, 172, 512, 1, -1, -1, -1, -1});
}

/* The HF row of interleaved row r within a head of size dh: interleaved pairs
 * (2i, 2i+1) are rotate-half pairs (i, i + dh/2). */
static int64_t hf_row_of_interleaved(int64_t r, int64_t dh) {
    int64_t head = r / dh, j = r % dh;
    return head * dh + (j % 2 == 0 ? j / 2 : dh / 2 + j / 2);
}

static void test_stories_three_formats(void **state) {
    (void)state;
    sks_model *bin = sks_test_open_fixture("stories260K/stories260K.bin");
    sks_model *gg = sks_test_open_fixture("stories260K/stories260K.gguf");
    sks_model *st = sks_test_open_fixture("stories260K/stories260K.safetensors");
    const sks_arch *ab = sks_model_arch(bin), *ag = sks_model_arch(gg), *as = sks_model_arch(st);
    check_stories_arch(ab);
    assert_same_arch(ab, ag);
    assert_same_arch(ab, as);
    assert_int_equal(ab->rope_interleaved, 1);
    assert_int_equal(ag->rope_interleaved, 1);
    assert_int_equal(as->rope_interleaved, 0);
    assert_int_equal(sks_model_format(bin), SKS_FMT_LLAMA2C);
    assert_int_equal(sks_model_format(gg), SKS_FMT_GGUF);
    assert_int_equal(sks_model_format(st), SKS_FMT_SAFETENSORS);
    /* 47 tensors = embed + final norm + 9 per layer x 5 */
    assert_int_equal(sks_model_n_tensors(bin), 47);
    assert_int_equal(sks_model_n_tensors(gg), 47);
    assert_int_equal(sks_model_n_tensors(st), 47);
    assert_true(sks_model_n_params(bin) == sks_model_n_params(gg));
    assert_true(sks_model_n_params(bin) == sks_model_n_params(st));
    assert_null(sks_model_tensor(bin, SKS_ROLE_LM_HEAD, -1));
    assert_ptr_equal(sks_model_classifier(st), sks_model_tensor(st, SKS_ROLE_EMBED, -1));

    int64_t dh = ab->head_dim;
    int checked = 0, qk_identity_differs = 0;
    for (size_t i = 0; i < sks_model_n_tensors(bin); i++) {
        sks_role role;
        int layer;
        const sks_tensor *tb = sks_model_tensor_at(bin, i, &role, &layer);
        const sks_tensor *tg = sks_model_tensor(gg, role, layer), *ts = sks_model_tensor(st, role, layer);
        assert_non_null(tg);
        assert_non_null(ts);
        assert_int_equal(tb->shape[0], tg->shape[0]);
        assert_int_equal(tb->shape[1], tg->shape[1]);
        assert_int_equal(tb->shape[0], ts->shape[0]);
        assert_int_equal(tb->shape[1], ts->shape[1]);
        int64_t rows = tb->ndim == 2 ? tb->shape[0] : 1, cols = sks_tensor_cols(tb);
        float *xb = tensor_f32(tb), *xg = tensor_f32(tg), *xs = tensor_f32(ts);
        /* .bin and .gguf: both interleaved, identical */
        assert_memory_equal(xb, xg, (size_t)(rows * cols) * sizeof(float));
        if (role == SKS_ROLE_WQ || role == SKS_ROLE_WK) {
            assert_int_equal(rows % dh, 0);
            for (int64_t r = 0; r < rows; r++) {
                int64_t h = hf_row_of_interleaved(r, dh);
                assert_memory_equal(xb + r * cols, xs + h * cols, (size_t)cols * sizeof(float));
                if (memcmp(xb + r * cols, xs + r * cols, (size_t)cols * sizeof(float))) qk_identity_differs++;
            }
        } else {
            assert_memory_equal(xb, xs, (size_t)(rows * cols) * sizeof(float));
        }
        free(xb);
        free(xg);
        free(xs);
        checked++;
    }
    assert_int_equal(checked, 47);
    /* the permutation is real: without it most Q/K rows differ */
    assert_true(qk_identity_differs > 5 * 2 * 32);
    sks_model_close(bin);
    sks_model_close(gg);
    sks_model_close(st);
}

/* GGUF metadata against the llama2.c tokenizer file tok512.bin (int32 max_token_length,
 * then per token f32 score, int32 len, bytes). */
static void test_stories_gguf_metadata(void **state) {
    (void)state;
    sks_model *gg = sks_test_open_fixture("stories260K/stories260K.gguf");
    const struct sks_gguf *g = sks_model_gguf(gg);
    assert_non_null(g);
    assert_int_equal(sks_gguf_version(g), 3);
    int64_t ki = sks_gguf_find_key(g, "general.architecture");
    assert_true(ki >= 0);
    const char *s;
    size_t n;
    assert_int_equal(sks_gguf_get_str(g, ki, &s, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(s, "llama", 5);
    assert_int_equal(sks_gguf_get_i64(g, ki, &(int64_t){0}), SKS_EFORMAT);
    assert_int_equal(sks_gguf_find_key(g, "no.such.key"), -1);
    int64_t bc = sks_gguf_find_key(g, "llama.block_count"), v;
    assert_int_equal(sks_gguf_get_i64(g, bc, &v), 0);
    assert_int_equal(v, 5);

    size_t len;
    char *tok = sks_test_read_file(sks_test_fixture("stories260K/tok512.bin"), &len);
    assert_non_null(tok);
    int64_t ti = sks_gguf_find_key(g, "tokenizer.ggml.tokens"), si = sks_gguf_find_key(g, "tokenizer.ggml.scores");
    assert_true(ti >= 0 && si >= 0);
    sks_gguf_type et;
    uint64_t cnt;
    assert_int_equal(sks_gguf_arr_info(g, ti, &et, &cnt), 0);
    assert_int_equal(et, SKS_GGUF_STRING);
    assert_int_equal(cnt, 512);
    size_t p = 4;
    int same_text = 0;
    for (uint64_t i = 0; i < cnt; i++) {
        float score;
        int32_t l;
        assert_true(p + 8 <= len);
        memcpy(&score, tok + p, 4);
        memcpy(&l, tok + p + 4, 4);
        p += 8;
        assert_true(l >= 0 && p + (size_t)l <= len);
        double gs;
        assert_int_equal(sks_gguf_arr_f64(g, si, i, &gs), 0);
        assert_true(gs == (double)score);
        assert_int_equal(sks_gguf_arr_str(g, ti, i, &s, &n), 0);
        /* llama2.c stores byte tokens as "<0x0A>" like GGUF; the text of the others may
         * differ only in the SentencePiece space marker, so compare those that have none */
        if (n == (size_t)l && memcmp(s, tok + p, n) == 0) same_text++;
        p += (size_t)l;
    }
    assert_true(same_text > 256);
    assert_int_equal(sks_gguf_arr_str(g, ti, cnt, &s, &n), SKS_EBOUNDS);
    assert_int_equal(sks_gguf_arr_i64(g, ti, 0, &v), SKS_EFORMAT);
    free(tok);
    sks_model_close(gg);
}

/* ---- independent readers ------------------------------------------------------------ */

static float bf16_scalar(uint16_t h) { /* bf16 is the top half of an f32 */
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float f16_scalar(uint16_t h) { /* (-1)^s 2^(e-15) (1 + m/1024); subnormal 2^-14 m/1024 */
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m / 1024.0, -14) : ldexp(1.0 + m / 1024.0, e - 15);
    assert_true(e != 31);
    return (float)(s ? -v : v);
}

/* Locate tensor name in a safetensors file: file offset of its data. */
static long st_offset(const char *file, const char *name, char *dtype_out) {
    size_t len;
    char *buf = sks_test_read_file(file, &len);
    assert_non_null(buf);
    uint64_t N;
    memcpy(&N, buf, 8);
    json_t *root = json_loadb(buf + 8, (size_t)N, 0, NULL);
    assert_non_null(root);
    json_t *e = json_object_get(root, name);
    long off = -1;
    if (e) {
        off = (long)(8 + N + (uint64_t)json_integer_value(json_array_get(json_object_get(e, "data_offsets"), 0)));
        strcpy(dtype_out, json_string_value(json_object_get(e, "dtype")));
    }
    json_decref(root);
    free(buf);
    return off;
}

static void test_trained_llama_sharded_bf16(void **state) {
    (void)state;
    sks_model *m = sks_test_open_fixture("trained-llama/model");
    const sks_arch *a = sks_model_arch(m);
    /* README: hidden 384, 8 layers, 6 heads x 64 (no GQA), FFN 1024, vocab 4096, untied,
     * eps 1e-5, theta 10000 (from rope_parameters), rotate-half, context 256 */
    check_readme_arch(a, &(readme_arch){384, 8, 6, 6, 64, 1024, 4096, 0, 0, 256, 1, 2});
    assert_int_equal(sks_model_n_shards(m), 3);
    assert_int_equal(sks_model_format(m), SKS_FMT_SAFETENSORS);
    /* 17.3M parameters */
    assert_true(sks_model_n_params(m) > 17250000 && sks_model_n_params(m) < 17350000);
    const sks_tensor *lm = sks_model_tensor(m, SKS_ROLE_LM_HEAD, -1);
    assert_non_null(lm);
    assert_ptr_not_equal(sks_model_classifier(m), sks_model_tensor(m, SKS_ROLE_EMBED, -1));

    /* a few rows, decoded here straight from the shard bytes */
    const probe probes[] = {{SKS_ROLE_W_DOWN, 1, "model.layers.1.mlp.down_proj.weight", 356},
                  {SKS_ROLE_WQ, 7, "model.layers.7.self_attn.q_proj.weight", 383},
                  {SKS_ROLE_EMBED, -1, "model.embed_tokens.weight", 4095},
                  {SKS_ROLE_FINAL_NORM, -1, "model.norm.weight", 0},
                  {SKS_ROLE_LM_HEAD, -1, "lm_head.weight", 17}};
    for (size_t k = 0; k < sizeof probes / sizeof probes[0]; k++) {
        const sks_tensor *t = sks_model_tensor(m, probes[k].role, probes[k].layer);
        assert_non_null(t);
        assert_int_equal(t->dtype, SKS_DT_BF16);
        assert_string_equal(t->name, probes[k].name);
        const char *shard = sks_model_shard_path(m, t->shard);
        char dt[16];
        long off = st_offset(shard, probes[k].name, dt);
        assert_true(off > 0);
        assert_string_equal(dt, "BF16");
        int64_t cols = sks_tensor_cols(t);
        size_t len;
        char *file = sks_test_read_file(shard, &len);
        float *row = malloc((size_t)cols * sizeof *row);
        assert_int_equal(sks_tensor_rows_f32(t, probes[k].row, 1, row), 0);
        int nonzero = 0;
        for (int64_t j = 0; j < cols; j++) {
            uint16_t h;
            memcpy(&h, file + off + 2 * (probes[k].row * cols + j), 2);
            assert_true(bf16_scalar(h) == row[j]);
            nonzero += row[j] != 0;
        }
        assert_true(nonzero > cols / 2);
        free(row);
        free(file);
    }
    sks_model_close(m);
}

/* Minimal GGUF walk (spec ggml docs/gguf.md) to find a tensor's type and file offset. */
typedef struct {
    const uint8_t *p;
    size_t pos;
} walk;
static uint64_t w64(walk *w) {
    uint64_t v;
    memcpy(&v, w->p + w->pos, 8);
    w->pos += 8;
    return v;
}
static uint32_t w32(walk *w) {
    uint32_t v;
    memcpy(&v, w->p + w->pos, 4);
    w->pos += 4;
    return v;
}
static void wskip(walk *w, uint32_t t) {
    static const int sz[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    assert_true(t <= 12);
    if (t == 8) {
        w->pos += w64(w);
    } else if (t == 9) {
        uint32_t et = w32(w);
        uint64_t n = w64(w);
        for (uint64_t i = 0; i < n; i++) wskip(w, et);
    } else {
        w->pos += (size_t)sz[t];
    }
}
static long gguf_find(const uint8_t *buf, const char *name, uint32_t *type, uint64_t *ne0, uint64_t *ne1) {
    walk w = {buf, 4};
    w32(&w);
    uint64_t nt = w64(&w), nkv = w64(&w);
    uint64_t align = 32;
    for (uint64_t i = 0; i < nkv; i++) {
        uint64_t kl = w64(&w);
        int is_align = kl == 17 && !memcmp(buf + w.pos, "general.alignment", 17);
        w.pos += kl;
        uint32_t t = w32(&w);
        if (is_align) {
            align = w32(&w);
            continue;
        }
        wskip(&w, t);
    }
    long found = -1;
    for (uint64_t i = 0; i < nt; i++) {
        uint64_t nl = w64(&w);
        int hit = nl == strlen(name) && !memcmp(buf + w.pos, name, nl);
        w.pos += nl;
        uint32_t nd = w32(&w);
        uint64_t ne[4] = {1, 1, 1, 1};
        for (uint32_t d = 0; d < nd; d++) ne[d] = w64(&w);
        uint32_t t = w32(&w);
        uint64_t off = w64(&w);
        if (hit) {
            *type = t;
            *ne0 = ne[0];
            *ne1 = ne[1];
            found = (long)off;
        }
    }
    size_t data = (w.pos + align - 1) / align * align;
    return found < 0 ? -1 : (long)data + found;
}

static void test_trained_packed_gguf_q8(void **state) {
    (void)state;
    sks_model *m = sks_test_open_fixture("trained-packed/model.gguf");
    const sks_arch *a = sks_model_arch(m);
    /* README: hidden 256, 6 layers, 4 heads x 64, FFN 688, vocab 4096, tied, theta 1e4;
     * interleaved RoPE (GGUF order) */
    check_readme_arch(a, &(readme_arch){256, 6, 4, 4, 64, 688, 4096, 1, 1, -1, -1, -1});
    assert_null(sks_model_tensor(m, SKS_ROLE_LM_HEAD, -1));
    assert_ptr_equal(sks_model_classifier(m), sks_model_tensor(m, SKS_ROLE_EMBED, -1));
    /* dtypes: Q8_0 matrices, F16 ffn_down, F32 norms */
    for (int l = 0; l < a->n_layers; l++) {
        assert_int_equal(sks_model_tensor(m, SKS_ROLE_WQ, l)->dtype, SKS_DT_Q8_0);
        assert_int_equal(sks_model_tensor(m, SKS_ROLE_W_GATE, l)->dtype, SKS_DT_Q8_0);
        assert_int_equal(sks_model_tensor(m, SKS_ROLE_W_DOWN, l)->dtype, SKS_DT_F16);
        assert_int_equal(sks_model_tensor(m, SKS_ROLE_ATTN_NORM, l)->dtype, SKS_DT_F32);
    }
    size_t len;
    uint8_t *file = (uint8_t *)sks_test_read_file(sks_test_fixture("trained-packed/model.gguf"), &len);
    assert_non_null(file);
    const probe probes[] = {{SKS_ROLE_W_UP, 2, "blk.2.ffn_up.weight", 154},
                  {SKS_ROLE_W_DOWN, 2, "blk.2.ffn_down.weight", 154},
                  {SKS_ROLE_EMBED, -1, "token_embd.weight", 1},
                  {SKS_ROLE_WK, 5, "blk.5.attn_k.weight", 255},
                  {SKS_ROLE_FFN_NORM, 0, "blk.0.ffn_norm.weight", 0}};
    for (size_t k = 0; k < sizeof probes / sizeof probes[0]; k++) {
        const sks_tensor *t = sks_model_tensor(m, probes[k].role, probes[k].layer);
        assert_non_null(t);
        uint32_t type;
        uint64_t ne0, ne1;
        long off = gguf_find(file, probes[k].name, &type, &ne0, &ne1);
        assert_true(off > 0);
        int64_t cols = sks_tensor_cols(t);
        assert_int_equal(cols, (int64_t)ne0);
        if (t->ndim == 2) assert_int_equal(t->shape[0], (int64_t)ne1);
        float *row = malloc((size_t)cols * sizeof *row);
        assert_int_equal(sks_tensor_rows_f32(t, probes[k].row, 1, row), 0);
        for (int64_t j = 0; j < cols; j++) {
            float ref;
            if (type == 8) { /* Q8_0: per 32: f16 d, int8 q[32]; x = d q */
                assert_int_equal(t->dtype, SKS_DT_Q8_0);
                const uint8_t *blk = file + off + (size_t)(probes[k].row * (cols / 32) + j / 32) * 34;
                uint16_t d;
                memcpy(&d, blk, 2);
                ref = f16_scalar(d) * (float)(int8_t)blk[2 + j % 32];
            } else if (type == 1) {
                assert_int_equal(t->dtype, SKS_DT_F16);
                uint16_t h;
                memcpy(&h, file + off + 2 * (probes[k].row * cols + j), 2);
                ref = f16_scalar(h);
            } else {
                assert_int_equal(type, 0);
                memcpy(&ref, file + off + 4 * (probes[k].row * cols + j), 4);
            }
            assert_true(ref == row[j]);
        }
        free(row);
    }
    free(file);
    sks_model_close(m);
}

/* Opening a checkpoint whose weights are holes in a sparse file reads only headers:
 * resident memory grows by far less than the 1 GiB of weights. */
static void test_open_reads_headers_only(void **state) {
    (void)state;
    char *dir = sks_test_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    /* d 4096, V 65536: the embedding alone is 1 GiB of F32 */
    fprintf(f, "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":4096,\"intermediate_size\":32,"
               "\"num_hidden_layers\":1,\"num_attention_heads\":32,\"vocab_size\":65536,\"rms_norm_eps\":1e-5,"
               "\"tie_word_embeddings\":true}");
    fclose(f);
    struct {
        const char *name;
        int64_t r, c;
    } ts[] = {{"model.embed_tokens.weight", 65536, 4096},
              {"model.norm.weight", 4096, 0},
              {"model.layers.0.input_layernorm.weight", 4096, 0},
              {"model.layers.0.post_attention_layernorm.weight", 4096, 0},
              {"model.layers.0.self_attn.q_proj.weight", 4096, 4096},
              {"model.layers.0.self_attn.k_proj.weight", 4096, 4096},
              {"model.layers.0.self_attn.v_proj.weight", 4096, 4096},
              {"model.layers.0.self_attn.o_proj.weight", 4096, 4096},
              {"model.layers.0.mlp.gate_proj.weight", 32, 4096},
              {"model.layers.0.mlp.up_proj.weight", 32, 4096},
              {"model.layers.0.mlp.down_proj.weight", 4096, 32}};
    char hdr[8192];
    size_t hl = 0;
    uint64_t off = 0;
    hl += (size_t)snprintf(hdr + hl, sizeof hdr - hl, "{");
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        uint64_t nb = (uint64_t)ts[i].r * (uint64_t)(ts[i].c ? ts[i].c : 1) * 4;
        if (ts[i].c)
            hl += (size_t)snprintf(hdr + hl, sizeof hdr - hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}",
                                   i ? "," : "", ts[i].name, (long long)ts[i].r, (long long)ts[i].c,
                                   (unsigned long long)off, (unsigned long long)(off + nb));
        else
            hl += (size_t)snprintf(hdr + hl, sizeof hdr - hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],\"data_offsets\":[%llu,%llu]}",
                                   i ? "," : "", ts[i].name, (long long)ts[i].r, (unsigned long long)off,
                                   (unsigned long long)(off + nb));
        off += nb;
    }
    hl += (size_t)snprintf(hdr + hl, sizeof hdr - hl, "}");
    while (hl % 8) hdr[hl++] = ' ';
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    f = fopen(path, "wb");
    uint64_t N = hl;
    fwrite(&N, 8, 1, f);
    fwrite(hdr, 1, hl, f);
    fclose(f);
    assert_int_equal(truncate(path, (off_t)(8 + hl + off)), 0); /* a hole, no disk blocks */
    size_t rss0 = sks_peak_rss();
    double t0 = sks_now();
    sks_model *m = NULL;
    int rc = sks_model_open(dir, &m);
    if (rc) fprintf(stderr, "%s\n", sks_last_error());
    assert_int_equal(rc, 0);
    double dt = sks_now() - t0;
    size_t rss1 = sks_peak_rss();
    assert_true(sks_model_file_bytes(m) > ((uint64_t)1 << 30));
    assert_int_equal(sks_model_arch(m)->vocab_size, 65536);
    /* tolerance: 64 MiB of growth (the allocator, ASan shadow) against > 1.2 GiB of weights */
    if (rss0 && rss1) assert_true(rss1 - rss0 < ((size_t)64 << 20));
    assert_true(dt < 2.0);
    sks_model_close(m);
    sks_test_rm_tree(dir);
    free(dir);
}

int main(void) {
    SKS_REQUIRE_FIXTURES();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_three_formats),
        cmocka_unit_test(test_stories_gguf_metadata),
        cmocka_unit_test(test_trained_llama_sharded_bf16),
        cmocka_unit_test(test_trained_packed_gguf_q8),
        cmocka_unit_test(test_open_reads_headers_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
