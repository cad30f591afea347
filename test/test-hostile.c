/* test-hostile.c - malformed files in all three formats: each must fail with its
 * specific error code and a message naming the file and the problem, never crash.
 * Files are generated in a temporary directory; a valid file from the same builders is
 * loaded first in each group so that every rejection is caused by the one defect
 * planted. Runs under ASan+UBSan in CI.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sks_test.h"
#include "loaders/formats_internal.h"
#include "loaders/sks_gguf.h"
#include "loaders/sks_model.h"

static char *g_dir;
static int g_seq;

/* ---- small helpers ------------------------------------------------------------------ */

static void pad_to(sks_test_buf *b, size_t align) {
    while (b->n % align) sks_test_put(b, "", 1);
}

/* A fresh sub-directory for one case. */
static const char *case_dir(void) {
    static char d[4200];
    snprintf(d, sizeof d, "%s/c%03d", g_dir, g_seq++);
    assert_int_equal(mkdir(d, 0700), 0);
    return d;
}

static void write_file(const char *dir, const char *name, const void *p, size_t n) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* Open dir/name (or dir itself when name is NULL) and check the outcome. */
static void expect_open(const char *dir, const char *name, int code, const char *substr) {
    char path[4400];
    if (name) snprintf(path, sizeof path, "%s/%s", dir, name);
    else snprintf(path, sizeof path, "%s", dir);
    sks_model *m = NULL;
    int rc = sks_model_open(path, &m);
    if (rc != code || (substr && !strstr(sks_last_error(), substr)))
        fprintf(stderr, "case %s: got %s (%s), want %s containing '%s'\n", path, sks_err_name(rc), sks_last_error(),
                sks_err_name(code), substr ? substr : "");
    assert_int_equal(rc, code);
    if (code) {
        assert_null(m);
        if (substr) assert_non_null(strstr(sks_last_error(), substr));
        /* the message names the file or directory at fault */
        assert_non_null(strstr(sks_last_error(), dir));
    } else {
        assert_non_null(m);
        sks_model_close(m);
    }
}

/* ---- safetensors ---------------------------------------------------------------------- */

/* Tiny Llama: L 1, d 8, f 16, H 2 x 4, V 16, tied. */
static const char *k_config =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,\"intermediate_size\":16,"
    "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":2,\"vocab_size\":16,"
    "\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0,\"tie_word_embeddings\":true}";

static const struct {
    const char *name;
    int r, c; /* c == 0: 1-D */
} k_st_tensors[] = {
    {"model.embed_tokens.weight", 16, 8},
    {"model.norm.weight", 8, 0},
    {"model.layers.0.input_layernorm.weight", 8, 0},
    {"model.layers.0.post_attention_layernorm.weight", 8, 0},
    {"model.layers.0.self_attn.q_proj.weight", 8, 8},
    {"model.layers.0.self_attn.k_proj.weight", 8, 8},
    {"model.layers.0.self_attn.v_proj.weight", 8, 8},
    {"model.layers.0.self_attn.o_proj.weight", 8, 8},
    {"model.layers.0.mlp.gate_proj.weight", 16, 8},
    {"model.layers.0.mlp.up_proj.weight", 16, 8},
    {"model.layers.0.mlp.down_proj.weight", 8, 16},
};
#define N_ST (sizeof k_st_tensors / sizeof k_st_tensors[0])

/* Write a safetensors file: header text padded with spaces to a multiple of 8 (unless
 * raw), then data_len zero bytes. */
static void write_st(const char *dir, const char *name, const char *header, size_t data_len, int raw) {
    sks_test_buf b = {0};
    size_t hl = strlen(header), padded = raw ? hl : (hl + 7) / 8 * 8;
    sks_test_u64(&b, padded);
    sks_test_put(&b, header, hl);
    while (b.n < 8 + padded) sks_test_put(&b, " ", 1);
    for (size_t i = 0; i < data_len; i++) sks_test_put(&b, "", 1);
    write_file(dir, name, b.b, b.n);
    free(b.b);
}

/* Header of the tiny model with optional replacements: tensor `bad` gets shape
 * (br, bc) and renamed to `rename` when given; `dtype` for every tensor. Returns data size. */
static size_t st_model_header(char *out, size_t cap, int bad, int br, int bc, const char *rename, const char *dtype,
                              int skip) {
    size_t n = 0, off = 0;
    n += (size_t)snprintf(out + n, cap - n, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < N_ST; i++) {
        if ((int)i == skip) continue;
        int r = k_st_tensors[i].r, c = k_st_tensors[i].c;
        const char *nm = k_st_tensors[i].name;
        if ((int)i == bad) {
            r = br;
            c = bc;
            if (rename) nm = rename;
        }
        size_t nb = (size_t)r * (size_t)(c ? c : 1) * 4;
        char shape[64];
        if (c) snprintf(shape, sizeof shape, "[%d,%d]", r, c);
        else snprintf(shape, sizeof shape, "[%d]", r);
        n += (size_t)snprintf(out + n, cap - n, ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}", nm,
                              (int)i == bad && dtype ? dtype : "F32", shape, off, off + nb);
        off += nb;
    }
    n += (size_t)snprintf(out + n, cap - n, "}");
    return off;
}

static const char *st_model_dir(int bad, int br, int bc, const char *rename, const char *dtype, const char *config) {
    const char *d = case_dir();
    char h[8192];
    size_t data = st_model_header(h, sizeof h, bad, br, bc, rename, dtype, -1);
    write_st(d, "model.safetensors", h, data, 0);
    if (config) write_file(d, "config.json", config, strlen(config));
    return d;
}

static void test_st_valid_control(void **state) {
    (void)state;
    const char *d = st_model_dir(-1, 0, 0, NULL, NULL, k_config);
    expect_open(d, NULL, 0, NULL);
    expect_open(d, "model.safetensors", 0, NULL); /* single file, config beside it */
}

/* Single-tensor safetensors files, each written by write_st into one fresh case beside a
 * valid config.json, opened, and expected to fail with code and a message holding substr. */
typedef struct {
    const char *header;
    size_t data_len;
    int raw, code;
    const char *substr;
} st_case;

static void st_cases(const st_case *k, size_t n) {
    const char *d = case_dir();
    write_file(d, "config.json", k_config, strlen(k_config));
    for (size_t i = 0; i < n; i++) {
        char name[48];
        snprintf(name, sizeof name, "c%02zu.safetensors", i);
        write_st(d, name, k[i].header, k[i].data_len, k[i].raw);
        expect_open(d, name, k[i].code, k[i].substr);
    }
}

static void test_st_header_structure(void **state) {
    (void)state;
    const char *d = case_dir();
    write_file(d, "config.json", k_config, strlen(k_config));
    /* 1. truncated: fewer than 8 bytes */
    write_file(d, "a.safetensors", "\x10\0\0", 3);
    expect_open(d, "a.safetensors", SKS_EFORMAT, "too short");
    /* 2. header length past the end */
    sks_test_buf b = {0};
    sks_test_u64(&b, 1000);
    sks_test_put(&b, "{}", 2);
    write_file(d, "b.safetensors", b.b, b.n);
    expect_open(d, "b.safetensors", SKS_EBOUNDS, "runs past the end");
    /* 3. header length near 2^64 (no wrap-around in 8 + N) */
    b.n = 0;
    sks_test_u64(&b, UINT64_MAX - 3);
    sks_test_put(&b, "{}", 2);
    write_file(d, "c.safetensors", b.b, b.n);
    expect_open(d, "c.safetensors", SKS_EBOUNDS, "header length");
    free(b.b);
    /* 5. deeply nested JSON: rejected by the depth guard before jansson sees it */
    char *deep = malloc(20002);
    deep[0] = '{';
    memcpy(deep + 1, "\"a\":", 4);
    for (int i = 5; i < 20000; i++) deep[i] = '[';
    deep[20000] = 0;
    write_st(d, "e.safetensors", deep, 0, 0);
    free(deep);
    expect_open(d, "e.safetensors", SKS_EFORMAT, "nested deeper");
    static const st_case k[] = {
        /* 4. invalid JSON */
        {"{\"x\": {\"dtype\": \"F32\", ", 0, 0, SKS_EFORMAT, "not valid JSON"},
        /* 6. header that is JSON but not an object */
        {"[1, 2, 3]", 0, 0, SKS_EFORMAT, "JSON object"},
        /* 7. tensor entry without data_offsets */
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, 0, SKS_EFORMAT, "data_offsets"},
    };
    st_cases(k, sizeof k / sizeof k[0]);
}

static void test_st_spans_and_shapes(void **state) {
    (void)state;
    static const st_case k[] = {
        /* 8. offsets outside the data section */
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4,4],\"data_offsets\":[0,64]}}", 16, 0, SKS_EBOUNDS,
         "outside the 16-byte data section"},
        /* 9. overlapping tensors */
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
         "\"u\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
         24, 0, SKS_EFORMAT, "overlap"},
        /* 9b. overlap hidden behind an empty tensor between the two */
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]},"
         "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
         "\"u\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
         32, 0, SKS_EFORMAT, "overlap"},
        /* 10. byte span does not match shape x dtype */
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 16, 0, SKS_EFORMAT, "needs 16"},
        /* 11. negative dimension */
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,16]}}", 16, 0, SKS_ESHAPE, "negative"},
        /* 12. huge dimensions whose product overflows 64 bits */
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,16]}}", 16, 0,
         SKS_EOVERFLOW, "overflows"},
        /* 13. byte size overflows after the element count fits */
        {"{\"t\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,16]}}", 16, 0, SKS_EOVERFLOW,
         "overflows"},
        /* 14. unknown dtype */
        {"{\"t\":{\"dtype\":\"F7\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, 0, SKS_EDTYPE, "unknown dtype 'F7'"},
        /* 15. data misaligned for its element size (raw odd header length) */
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 1, SKS_EFORMAT, "not aligned"},
        /* 16. end before begin */
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 16, 0, SKS_EFORMAT, "end 4 < begin 8"},
        /* 16b. a tensor name with a newline (messages must stay one line) */
        {"{\"t\\nx\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, SKS_EFORMAT, "control characters"},
        /* 17. more dimensions than any tensor has */
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, 0, SKS_ESHAPE,
         "dimensions"},
    };
    st_cases(k, sizeof k / sizeof k[0]);
}

static void test_st_model_level(void **state) {
    (void)state;
    /* 18. a weight of a dtype the model view cannot convert */
    const char *d = st_model_dir(4, 8, 8, NULL, "I32", k_config);
    expect_open(d, NULL, SKS_EDTYPE, "dtype I32");
    /* 19. config.json contradicts the tensors: q_proj is 8 x 4 */
    d = st_model_dir(4, 8, 4, NULL, NULL, k_config);
    expect_open(d, NULL, SKS_ECONFIG, "disagrees with the tensors");
    /* 20. a layer the config does not have */
    d = st_model_dir(9, 16, 8, "model.layers.3.mlp.up_proj.weight", NULL, k_config);
    expect_open(d, NULL, SKS_ECONFIG, "layer 3");
    /* 21. missing config.json */
    d = st_model_dir(-1, 0, 0, NULL, NULL, NULL);
    expect_open(d, NULL, SKS_ENOTFOUND, "config.json");
    /* 22. config.json that is not JSON */
    d = st_model_dir(-1, 0, 0, NULL, NULL, "{\"hidden_size\": 8,,}");
    expect_open(d, NULL, SKS_EFORMAT, "invalid JSON");
    /* 23. unsupported architecture: named in the message */
    d = st_model_dir(-1, 0, 0, NULL, NULL, "{\"architectures\":[\"BloomForCausalLM\"],\"hidden_size\":8}");
    expect_open(d, NULL, SKS_EUNSUPPORTED, "BloomForCausalLM");
    /* 24. required key missing */
    d = st_model_dir(-1, 0, 0, NULL, NULL,
                     "{\"architectures\":[\"LlamaForCausalLM\"],\"intermediate_size\":16,\"num_hidden_layers\":1,"
                     "\"num_attention_heads\":2,\"vocab_size\":16}");
    expect_open(d, NULL, SKS_ENOTFOUND, "'hidden_size'");
    /* 25. config value out of range / inconsistent: H not a multiple of H_kv */
    d = st_model_dir(-1, 0, 0, NULL, NULL,
                     "{\"model_type\":\"llama\",\"hidden_size\":8,\"intermediate_size\":16,\"num_hidden_layers\":1,"
                     "\"num_attention_heads\":2,\"num_key_value_heads\":3,\"vocab_size\":16}");
    expect_open(d, NULL, SKS_ECONFIG, "multiple");
    /* 26. a required tensor missing entirely (config says more than the file has) */
    d = case_dir();
    char h[8192];
    size_t data = st_model_header(h, sizeof h, -1, 0, 0, NULL, NULL, 10 /* no down_proj */);
    write_st(d, "model.safetensors", h, data, 0);
    write_file(d, "config.json", k_config, strlen(k_config));
    expect_open(d, NULL, SKS_ECONFIG, "w_down");
    /* 27. unsupported rope type */
    d = st_model_dir(-1, 0, 0, NULL, NULL,
                     "{\"model_type\":\"llama\",\"hidden_size\":8,\"intermediate_size\":16,\"num_hidden_layers\":1,"
                     "\"num_attention_heads\":2,\"vocab_size\":16,\"rope_parameters\":{\"rope_theta\":1e4,"
                     "\"rope_type\":\"yarn\",\"factor\":4}}");
    expect_open(d, NULL, SKS_EUNSUPPORTED, "yarn");
}

static void test_st_sharded(void **state) {
    (void)state;
    /* valid control: the tiny model split over two shards */
    const char *d = case_dir();
    write_file(d, "config.json", k_config, strlen(k_config));
    char h1[8192], h2[8192], idx[8192];
    size_t n1 = 0, n2 = 0, o1 = 0, o2 = 0, ni = 0;
    n1 += (size_t)snprintf(h1, sizeof h1, "{");
    n2 += (size_t)snprintf(h2, sizeof h2, "{");
    ni += (size_t)snprintf(idx, sizeof idx, "{\"metadata\":{},\"weight_map\":{");
    for (size_t i = 0; i < N_ST; i++) {
        int r = k_st_tensors[i].r, c = k_st_tensors[i].c;
        size_t nb = (size_t)r * (size_t)(c ? c : 1) * 4;
        char shape[64];
        if (c) snprintf(shape, sizeof shape, "[%d,%d]", r, c);
        else snprintf(shape, sizeof shape, "[%d]", r);
        int second = i >= N_ST / 2;
        char *h = second ? h2 : h1;
        size_t *n = second ? &n2 : &n1, *o = second ? &o2 : &o1;
        *n += (size_t)snprintf(h + *n, 8192 - *n, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}",
                               *o ? "," : "", k_st_tensors[i].name, shape, *o, *o + nb);
        *o += nb;
        ni += (size_t)snprintf(idx + ni, sizeof idx - ni, "%s\"%s\":\"%s\"", i ? "," : "", k_st_tensors[i].name,
                               second ? "s2.safetensors" : "s1.safetensors");
    }
    snprintf(h1 + n1, sizeof h1 - n1, "}");
    snprintf(h2 + n2, sizeof h2 - n2, "}");
    snprintf(idx + ni, sizeof idx - ni, "}}");
    write_st(d, "s1.safetensors", h1, o1, 0);
    write_st(d, "s2.safetensors", h2, o2, 0);
    write_file(d, "model.safetensors.index.json", idx, strlen(idx));
    sks_model *m = sks_test_open(d);
    assert_int_equal(sks_model_n_shards(m), 2);
    assert_int_equal(sks_model_tensor(m, SKS_ROLE_W_DOWN, 0)->shard, 1);
    assert_int_equal(sks_model_tensor(m, SKS_ROLE_EMBED, -1)->shard, 0);
    sks_model_close(m);

    /* 28. index pointing to a missing shard */
    char *bad = strdup(idx);
    char *p = strstr(bad, "s2.safetensors");
    p[1] = '9'; /* s9.safetensors */
    const char *d2 = case_dir();
    write_file(d2, "config.json", k_config, strlen(k_config));
    write_st(d2, "s1.safetensors", h1, o1, 0);
    write_file(d2, "model.safetensors.index.json", bad, strlen(bad));
    expect_open(d2, NULL, SKS_ENOTFOUND, "s9.safetensors");
    free(bad);
    /* 29. path traversal in a shard name */
    const char *d3 = case_dir();
    write_file(d3, "config.json", k_config, strlen(k_config));
    const char *trav = "{\"weight_map\":{\"model.norm.weight\":\"../c000/model.safetensors\"}}";
    write_file(d3, "model.safetensors.index.json", trav, strlen(trav));
    expect_open(d3, NULL, SKS_EFORMAT, "not a plain file name");
    /* 30. absolute path as a shard name */
    const char *d4 = case_dir();
    write_file(d4, "config.json", k_config, strlen(k_config));
    const char *abs = "{\"weight_map\":{\"model.norm.weight\":\"/etc/passwd\"}}";
    write_file(d4, "model.safetensors.index.json", abs, strlen(abs));
    expect_open(d4, NULL, SKS_EFORMAT, "not a plain file name");
    /* 31. index promising a tensor its shard lacks */
    const char *d5 = case_dir();
    write_file(d5, "config.json", k_config, strlen(k_config));
    write_st(d5, "s1.safetensors", h1, o1, 0);
    write_st(d5, "s2.safetensors", h2, o2, 0);
    char *extra = malloc(strlen(idx) + 64);
    snprintf(extra, strlen(idx) + 64, "{\"weight_map\":{\"ghost.weight\":\"s1.safetensors\",%s", idx + strlen("{\"metadata\":{},\"weight_map\":{"));
    write_file(d5, "model.safetensors.index.json", extra, strlen(extra));
    free(extra);
    expect_open(d5, NULL, SKS_ENOTFOUND, "ghost.weight");
    /* 32. neither model.safetensors nor an index */
    const char *d6 = case_dir();
    write_file(d6, "config.json", k_config, strlen(k_config));
    expect_open(d6, NULL, SKS_ENOTFOUND, "model.safetensors");
}

/* ---- GGUF ------------------------------------------------------------------------------- */

typedef struct {
    uint32_t version;
    const char *arch;
    int omit_block_count;
    int alignment;          /* 0: key absent (default 32) */
    uint32_t q_type;        /* ggml type of blk.0.attn_q.weight */
    uint64_t q_offset_add;  /* added to the q tensor's offset */
    uint64_t q_offset_abs;  /* when nonzero: the q tensor's offset */
    int overlap;            /* k starts where q starts */
    uint64_t q_ne1;         /* 0: normal */
    size_t cut;             /* drop this many bytes from the end */
    int rope_linear;        /* add rope.scaling.type = linear, factor 4 */
    int extra;              /* 1: q/k/v biases (qwen2); 2: q/k norms (qwen3) */
} gguf_opts;

/* One tensor-info entry: name, n_dims, the dimensions, ggml type, data offset. */
static void tensor_info(sks_test_buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off) {
    sks_test_gguf_str(b, name);
    sks_test_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) sks_test_u64(b, ne[i]);
    sks_test_u32(b, type);
    sks_test_u64(b, off);
}

/* Tiny Llama GGUF: L 1, d 32, f 32, H 2 x 16, V 8, tied; all F32 except q_type. */
static void gguf_build(sks_test_buf *b, const gguf_opts *o) {
    struct {
        const char *name;
        uint64_t ne0, ne1; /* ne1 == 0: 1-D */
    } ts[] = {{"token_embd.weight", 32, 8},      {"output_norm.weight", 32, 0},  {"blk.0.attn_norm.weight", 32, 0},
              {"blk.0.attn_q.weight", 32, 32},   {"blk.0.attn_k.weight", 32, 32}, {"blk.0.attn_v.weight", 32, 32},
              {"blk.0.attn_output.weight", 32, 32}, {"blk.0.ffn_norm.weight", 32, 0}, {"blk.0.ffn_gate.weight", 32, 32},
              {"blk.0.ffn_up.weight", 32, 32},   {"blk.0.ffn_down.weight", 32, 32},
              /* optional extras, taken when o->extra asks */
              {"blk.0.attn_q.bias", 32, 0},      {"blk.0.attn_k.bias", 32, 0},    {"blk.0.attn_v.bias", 32, 0},
              {"blk.0.attn_q_norm.weight", 16, 0}, {"blk.0.attn_k_norm.weight", 16, 0}};
    size_t nt = 11;
    size_t first_extra = o->extra == 1 ? 11 : 14, n_extra = o->extra == 1 ? 3 : o->extra == 2 ? 2 : 0;
    const char *arch = o->arch ? o->arch : "llama";
    char key[128];
    uint64_t nkv = 7 + (o->alignment != 0) - (o->omit_block_count != 0) + 2 * (o->rope_linear != 0);
    sks_test_gguf_head(b, o->version ? o->version : 3, nt + n_extra, nkv);
    sks_test_gguf_kv_str(b, "general.architecture", arch);
    if (o->alignment) sks_test_gguf_kv_u32(b, "general.alignment", (uint32_t)o->alignment);
    static const char *ints[] = {"block_count", "embedding_length", "feed_forward_length", "attention.head_count",
                                 "attention.head_count_kv"};
    static const uint32_t vals[] = {1, 32, 32, 2, 2};
    for (int i = 0; i < 5; i++) {
        if (i == 0 && o->omit_block_count) continue;
        snprintf(key, sizeof key, "%s.%s", arch, ints[i]);
        sks_test_gguf_kv_u32(b, key, vals[i]);
    }
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    sks_test_gguf_kv_f32(b, key, 1e-5f);
    if (o->rope_linear) {
        snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
        sks_test_gguf_kv_str(b, key, "linear");
        snprintf(key, sizeof key, "%s.rope.scaling.factor", arch);
        sks_test_gguf_kv_f32(b, key, 4.0f);
    }
    size_t align = o->alignment > 0 ? (size_t)o->alignment : 32; /* layout; the key may lie */
    uint64_t off = 0, q_off = 0;
    for (size_t k = 0; k < nt + n_extra; k++) {
        size_t i = k < nt ? k : first_extra + (k - nt);
        int is_q = i == 3;
        uint32_t type = is_q ? o->q_type : 0;
        uint64_t ne[2] = {ts[i].ne0, is_q && o->q_ne1 ? o->q_ne1 : ts[i].ne1};
        uint64_t my = off;
        if (is_q) {
            q_off = off;
            my += o->q_offset_add;
            if (o->q_offset_abs) my = o->q_offset_abs;
        }
        if (i == 4 && o->overlap) my = q_off;
        tensor_info(b, ts[i].name, ts[i].ne1 ? 2 : 1, ne, type, my);
        uint64_t nb = ts[i].ne0 * (ts[i].ne1 ? ts[i].ne1 : 1) * 4; /* F32 span reserved for every type */
        off += (nb + align - 1) / align * align;
    }
    pad_to(b, align);
    for (uint64_t i = 0; i < off; i++) sks_test_put(b, "", 1);
    b->n -= o->cut;
}

static void gguf_case(const gguf_opts *o, int code, const char *substr) {
    const char *d = case_dir();
    sks_test_buf b = {0};
    gguf_build(&b, o);
    write_file(d, "m.gguf", b.b, b.n);
    free(b.b);
    expect_open(d, "m.gguf", code, substr);
}

static void test_gguf_valid_control(void **state) {
    (void)state;
    /* every weight type whose blocks tile 32 columns fits in the reserved F32 span:
     * F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, BF16, IQ4_NL, MXFP4 */
    static const gguf_opts ok[] = {
        {0},
        {.alignment = 64},
        {.q_type = 8},
        {.q_type = 2},
        {.q_type = 30},
        {.q_type = 1},
        {.q_type = 3},
        {.q_type = 6},
        {.q_type = 7},
        {.q_type = 9},
        {.q_type = 20},
        {.q_type = 39},
        {.q_type = 8, .version = 2},
    };
    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++) gguf_case(&ok[k], 0, NULL);
}

/* qwen2 / qwen3 GGUF: rotate-half order, biases or q/k norms required; linear scaling. */
static void test_gguf_families(void **state) {
    (void)state;
    gguf_opts o = {0};
    o.arch = "qwen2";
    o.extra = 1;
    o.rope_linear = 1;
    const char *d = case_dir();
    sks_test_buf b = {0};
    gguf_build(&b, &o);
    write_file(d, "q2.gguf", b.b, b.n);
    char path[4400];
    snprintf(path, sizeof path, "%s/q2.gguf", d);
    sks_model *m = sks_test_open(path);
    const sks_arch *a = sks_model_arch(m);
    assert_string_equal(a->family, "qwen2");
    assert_int_equal(a->rope_interleaved, 0);
    assert_int_equal(a->has_qkv_bias, 1);
    assert_int_equal(a->rope_scaling, SKS_ROPE_SCALING_LINEAR);
    assert_true(a->rope_factor == 4.0);
    assert_int_equal(a->head_dim, 16);
    assert_int_equal(a->vocab_size, 8); /* no token list: token_embd rows */
    assert_non_null(sks_model_tensor(m, SKS_ROLE_BV, 0));
    sks_model_close(m);
    free(b.b);
    o.extra = 0; /* qwen2 without its biases */
    gguf_case(&o, SKS_ENOTFOUND, "bq");
    o.arch = "qwen3";
    o.extra = 2;
    o.rope_linear = 0;
    gguf_case(&o, 0, NULL);
    o.extra = 1; /* qwen3 with biases but no norms */
    gguf_case(&o, SKS_ENOTFOUND, "q_norm");
}

static void test_gguf_tensors(void **state) {
    (void)state;
    /* each case: the valid model with one defect */
    static const struct {
        gguf_opts o;
        int code;
        const char *substr;
    } k[] = {
        /* 33. a type GGUF knows but that is not a weight type: the message names type and tensor */
        {{.q_type = 26}, SKS_EDTYPE, "tensor blk.0.attn_q.weight: type I32 is not a weight type"},
        /* 33b. a K-quant: its 256-wide blocks do not tile 32 columns */
        {{.q_type = 12},
         SKS_ESHAPE,
         "tensor blk.0.attn_q.weight: type Q4_K: row of 32 elements is not a whole number of 256-element blocks"},
        {{.q_type = 29}, SKS_ESHAPE, "type IQ1_M: row of 32 elements"},
        /* 34. a type id no ggml version has */
        {{.q_type = 200}, SKS_EDTYPE, "tensor blk.0.attn_q.weight: unknown ggml tensor type id 200"},
        /* 35. misaligned tensor data */
        {{.q_offset_add = 4}, SKS_EFORMAT, "not a multiple of the alignment 32"},
        /* 35b. alignment 1 is legal GGUF, but f32 data at an odd file offset cannot be read
         * (this header ends at an odd byte, so the data section starts there) */
        {{.alignment = 1}, SKS_EFORMAT, "not aligned to its 4-byte elements"},
        /* 36. tensor offset outside the data section */
        {{.q_offset_add = (uint64_t)1 << 40}, SKS_EBOUNDS, "outside"},
        /* 37. offset near 2^64: offset + size must not wrap */
        {{.q_offset_abs = UINT64_MAX - 31}, SKS_EBOUNDS, "outside"},
        /* 38. overlapping tensors */
        {{.overlap = 1}, SKS_EFORMAT, "overlap"},
        /* 39. bad alignment values */
        {{.alignment = 24}, SKS_EFORMAT, "general.alignment"},
        {{.alignment = -1}, SKS_EFORMAT, "general.alignment"}, /* 0xffffffff as u32 */
        /* 40. huge dimension: element count overflows */
        {{.q_ne1 = (uint64_t)1 << 62}, SKS_EOVERFLOW, "overflows"},
        /* 41. huge dimension that fits: bytes outside the file */
        {{.q_ne1 = (uint64_t)1 << 40}, SKS_EBOUNDS, "outside"},
        /* 42. truncated data section */
        {{.cut = 100}, SKS_EBOUNDS, "outside"},
        /* 43. unsupported architecture */
        {{.arch = "bloom"}, SKS_EUNSUPPORTED, "bloom"},
        /* 44. required metadata missing */
        {{.omit_block_count = 1}, SKS_ENOTFOUND, "llama.block_count"},
        /* 45. GGUF v1 */
        {{.version = 1}, SKS_EUNSUPPORTED, "version 1"},
        /* 46. big-endian file */
        {{.version = 0x03000000u}, SKS_EUNSUPPORTED, "big-endian"},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) gguf_case(&k[i].o, k[i].code, k[i].substr);
}

/* Header-level attacks, built byte by byte: b is written to a fresh case, opened, and
 * emptied for the next case. */
static void gguf_raw(sks_test_buf *b, int code, const char *substr) {
    const char *d = case_dir();
    write_file(d, "r.gguf", b->b, b->n);
    expect_open(d, "r.gguf", code, substr);
    b->n = 0;
}

static void test_gguf_header(void **state) {
    (void)state;
    sks_test_buf b = {0};
    /* 47. bad magic (named .gguf, so the GGUF reader is asked) */
    sks_test_gguf_head(&b, 3, 0, 0);
    memcpy(b.b, "GGUG", 4);
    gguf_raw(&b, SKS_EFORMAT, "bad magic");
    /* 48. truncated header: the metadata count cut off */
    sks_test_gguf_head(&b, 3, 0, 0);
    b.n -= 8;
    gguf_raw(&b, SKS_EFORMAT, "too short");
    /* 49. n_kv near 2^63 */
    sks_test_gguf_head(&b, 3, 0, (uint64_t)1 << 63);
    sks_test_u64(&b, 0);
    gguf_raw(&b, SKS_EBOUNDS, "metadata count");
    /* 50. n_tensors near 2^63 */
    sks_test_gguf_head(&b, 3, ((uint64_t)1 << 63) - 1, 0);
    sks_test_u64(&b, 0);
    gguf_raw(&b, SKS_EBOUNDS, "tensor count");
    /* 51. key string length past the end */
    sks_test_gguf_head(&b, 3, 0, 1);
    sks_test_u64(&b, (uint64_t)1 << 62);
    sks_test_put(&b, "general.architecture", 20);
    gguf_raw(&b, SKS_EBOUNDS, "string of");
    /* 52. string value length past the end */
    sks_test_gguf_head(&b, 3, 0, 1);
    sks_test_gguf_str(&b, "general.architecture");
    sks_test_u32(&b, SKS_GGUF_STRING);
    sks_test_u64(&b, 1000);
    sks_test_put(&b, "llama", 5);
    gguf_raw(&b, SKS_EBOUNDS, "string of 1000 bytes");
    /* 53. array count near 2^63 */
    sks_test_gguf_head(&b, 3, 0, 1);
    sks_test_gguf_arr(&b, "tokenizer.ggml.tokens", SKS_GGUF_STRING, (uint64_t)1 << 62);
    sks_test_gguf_str(&b, "a");
    gguf_raw(&b, SKS_EBOUNDS, "array of");
    /* 54. nested arrays deeper than the bound */
    sks_test_gguf_head(&b, 3, 0, 1);
    sks_test_gguf_str(&b, "k");
    sks_test_u32(&b, SKS_GGUF_ARRAY);
    for (int i = 0; i < 40; i++) {
        sks_test_u32(&b, SKS_GGUF_ARRAY);
        sks_test_u64(&b, 1);
    }
    sks_test_u32(&b, SKS_GGUF_UINT8);
    sks_test_u64(&b, 1);
    sks_test_put(&b, "x", 1);
    gguf_raw(&b, SKS_EFORMAT, "nested deeper");
    /* 54b. a key with a newline */
    sks_test_gguf_head(&b, 3, 0, 1);
    sks_test_gguf_str(&b, "general.\narchitecture");
    sks_test_u32(&b, SKS_GGUF_UINT8);
    sks_test_put(&b, "x", 1);
    gguf_raw(&b, SKS_EFORMAT, "control characters");
    /* 55. unknown value type */
    sks_test_gguf_head(&b, 3, 0, 1);
    sks_test_gguf_str(&b, "k");
    sks_test_u32(&b, 99);
    sks_test_u64(&b, 0);
    gguf_raw(&b, SKS_EFORMAT, "unknown value type 99");
    /* 56. tensor with 5 dimensions */
    static const uint64_t ones5[5] = {1, 1, 1, 1, 1}, zero[1] = {0}, n33[1] = {33};
    sks_test_gguf_head(&b, 3, 1, 0);
    tensor_info(&b, "t", 5, ones5, 0, 0);
    pad_to(&b, 32);
    sks_test_put(&b, "\0\0\0\0", 4);
    gguf_raw(&b, SKS_ESHAPE, "5 dimensions");
    /* 57. a dimension of 0 */
    sks_test_gguf_head(&b, 3, 1, 0);
    tensor_info(&b, "t", 1, zero, 0, 0);
    gguf_raw(&b, SKS_ESHAPE, "dimension 0 is 0");
    /* 58. Q8_0 row not a whole number of blocks */
    sks_test_gguf_head(&b, 3, 1, 0);
    tensor_info(&b, "t", 1, n33, 8, 0);
    gguf_raw(&b, SKS_ESHAPE, "type Q8_0: row of 33 elements is not a whole number of 32-element blocks");
    free(b.b);
}

/* Fuzzer findings are replayed here (see docs/fuzzing.md): every input must be
 * rejected or accepted cleanly, never crash. */
static void test_gguf_parse_memory(void **state) {
    (void)state;
    /* the accessors on a parsed in-memory image: string arrays and numbers */
    sks_test_buf b = {0};
    sks_test_gguf_head(&b, 3, 0, 3);
    sks_test_gguf_arr(&b, "toks", SKS_GGUF_STRING, 3);
    sks_test_gguf_str(&b, "a");
    sks_test_gguf_str(&b, "");
    sks_test_gguf_str(&b, "ccc");
    sks_test_gguf_str(&b, "big");
    sks_test_u32(&b, SKS_GGUF_UINT64);
    sks_test_u64(&b, UINT64_MAX);
    sks_test_gguf_arr(&b, "f", SKS_GGUF_FLOAT32, 2);
    float fl[2] = {0.5f, -2.0f};
    sks_test_put(&b, fl, 8);
    struct sks_gguf *g = NULL;
    assert_int_equal(sks__gguf_parse(b.b, b.n, "mem", &g), 0);
    const char *s;
    size_t n;
    int64_t t = sks_gguf_find_key(g, "toks");
    assert_int_equal(sks_gguf_arr_str(g, t, 2, &s, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(s, "ccc", 3);
    assert_int_equal(sks_gguf_arr_str(g, t, 1, &s, &n), 0);
    assert_int_equal(n, 0);
    int64_t v;
    assert_int_equal(sks_gguf_get_i64(g, sks_gguf_find_key(g, "big"), &v), SKS_EOVERFLOW);
    double x;
    assert_int_equal(sks_gguf_get_f64(g, sks_gguf_find_key(g, "big"), &x), 0);
    assert_true(x == 18446744073709551615.0);
    assert_int_equal(sks_gguf_arr_f64(g, sks_gguf_find_key(g, "f"), 1, &x), 0);
    assert_true(x == -2.0);
    assert_int_equal(sks_gguf_arr_i64(g, sks_gguf_find_key(g, "f"), 0, &v), SKS_EFORMAT); /* 0.5 is no integer */
    assert_int_equal(sks_gguf_get_i64(g, 99, &v), SKS_EARG);
    sks__gguf_free(g);
    /* every prefix of the image is rejected cleanly (or parses, for the full one) */
    for (size_t cut = 0; cut < b.n; cut++) {
        g = NULL;
        int rc = sks__gguf_parse(b.b, cut, "mem", &g);
        assert_true(rc < 0);
        assert_null(g);
    }
    free(b.b);
}

/* ---- llama2.c ---------------------------------------------------------------------------- */

static void l2c_case(const int32_t h[7], size_t floats, int code, const char *substr) {
    const char *d = case_dir();
    sks_test_buf b = {0};
    sks_test_put(&b, h, 28);
    for (size_t i = 0; i < floats * 4; i++) sks_test_put(&b, "", 1);
    write_file(d, "m.bin", b.b, b.n);
    free(b.b);
    expect_open(d, "m.bin", code, substr);
}

static void test_llama2c(void **state) {
    (void)state;
    /* d 8, f 16, L 1, H 2, Hkv 2, V 16, seq 4: floats = V d + L (2d + 4 d d + 3 f d) + d + seq dh */
    int32_t h[7] = {8, 16, 1, 2, 2, 16, 4};
    size_t need = 16 * 8 + (2 * 8 + 4 * 64 + 3 * 128) + 8 + 4 * 4;
    l2c_case(h, need, 0, NULL);
    /* 59. truncated weights */
    l2c_case(h, need - 1, SKS_EBOUNDS, "truncated");
    /* 60. untied classifier promised (negative vocab) but missing */
    int32_t hu[7] = {8, 16, 1, 2, 2, -16, 4};
    l2c_case(hu, need, SKS_EBOUNDS, "truncated");
    l2c_case(hu, need + 16 * 8, 0, NULL);
    /* 61. non-positive field */
    int32_t hn[7] = {-8, 16, 1, 2, 2, 16, 4};
    l2c_case(hn, need, SKS_EFORMAT, "dim = -8");
    /* 62. INT32_MIN vocabulary (its negation overflows) */
    int32_t hm[7] = {8, 16, 1, 2, 2, INT32_MIN, 4};
    l2c_case(hm, need, SKS_EFORMAT, "vocab_size");
    /* 63. huge dimensions */
    int32_t hh[7] = {1 << 30, 16, 1, 2, 2, 16, 4};
    l2c_case(hh, need, SKS_ECONFIG, "too large");
    /* 64. heads do not divide the width */
    int32_t hd[7] = {8, 16, 1, 3, 3, 16, 4};
    l2c_case(hd, need, SKS_ECONFIG, "multiple");
    /* 65. H not a multiple of H_kv */
    int32_t hk[7] = {8, 16, 1, 2, 3, 16, 4};
    l2c_case(hk, need, SKS_ECONFIG, "multiple");
    /* 66. header alone, shorter than 28 bytes */
    const char *d = case_dir();
    write_file(d, "s.bin", h, 20);
    expect_open(d, "s.bin", SKS_EFORMAT, "too short");
    /* 66b. a PyTorch zip checkpoint named .bin */
    write_file(d, "pytorch_model.bin", "PK\x03\x04\x14\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 30);
    expect_open(d, "pytorch_model.bin", SKS_EUNSUPPORTED, "PyTorch");
    /* 67. large sizes whose product is checked, not wrapped */
    int32_t hb[7] = {1 << 20, 1 << 22, 100000, 4096, 4096, 1 << 26, 1 << 30};
    l2c_case(hb, 0, SKS_EBOUNDS, "truncated");
}

/* cfg (text) parsed as config file name; it must be accepted as the given family */
static sks_arch config_ok(const char *cfg, const char *name, const char *family) {
    sks_arch a;
    memset(&a, 0, sizeof a);
    int rc = sks__config_parse(cfg, strlen(cfg), name, &a);
    if (rc) fail_msg("%s: %s", name, sks_last_error());
    assert_string_equal(a.family, family);
    return a;
}

/* The attention traits a config sets: q/k/v biases, q/k norm, the width of a head. */
static void check_attention(const sks_arch *a, int qkv_bias, int qk_norm, int head_dim) {
    assert_int_equal(a->has_qkv_bias, qkv_bias);
    assert_int_equal(a->has_qk_norm, qk_norm);
    assert_int_equal(a->head_dim, head_dim);
}

/* Both config.json styles and the four families, parsed from text. */
static void test_config_styles(void **state) {
    (void)state;
    /* classic Llama 3: rope_theta at top level, rope_scaling with "rope_type", eos list */
    const char *classic =
        "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":4096,\"intermediate_size\":14336,"
        "\"num_hidden_layers\":32,\"num_attention_heads\":32,\"num_key_value_heads\":8,\"vocab_size\":128256,"
        "\"rms_norm_eps\":1e-05,\"rope_theta\":500000.0,\"torch_dtype\":\"bfloat16\",\"bos_token_id\":128000,"
        "\"eos_token_id\":[128001,128008,128009],\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,"
        "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},"
        "\"max_position_embeddings\":131072,\"tie_word_embeddings\":false}";
    sks_arch a = config_ok(classic, "c.json", "llama");
    assert_int_equal(a.head_dim, 128); /* d / H */
    assert_int_equal(a.n_kv_heads, 8);
    assert_true(a.rope_theta == 500000.0);
    assert_int_equal(a.rope_scaling, SKS_ROPE_SCALING_LLAMA3);
    assert_true(a.rope_factor == 8.0 && a.rope_low_freq_factor == 1.0 && a.rope_high_freq_factor == 4.0);
    assert_int_equal(a.rope_original_max_pos, 8192);
    assert_int_equal(a.bos_id, 128000);
    assert_int_equal(a.eos_id, 128001);
    assert_int_equal(a.rope_interleaved, 0);
    /* the same in the newer style: dtype + rope_parameters */
    const char *newer =
        "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":4096,\"intermediate_size\":14336,"
        "\"num_hidden_layers\":32,\"num_attention_heads\":32,\"num_key_value_heads\":8,\"vocab_size\":128256,"
        "\"rms_norm_eps\":1e-05,\"dtype\":\"bfloat16\",\"head_dim\":null,\"rope_parameters\":{\"rope_theta\":500000.0,"
        "\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192,"
        "\"rope_type\":\"llama3\"}}";
    sks_arch b = config_ok(newer, "n.json", "llama");
    assert_true(b.rope_theta == a.rope_theta && b.rope_factor == a.rope_factor && b.rope_scaling == a.rope_scaling);
    assert_int_equal(b.rope_original_max_pos, 8192);
    assert_int_equal(b.head_dim, 128);
    /* Qwen2: biases; Qwen3: q/k norm and a head_dim that is not d / H; Mistral by model_type */
    const char *q2 = "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":896,\"intermediate_size\":4864,"
                     "\"num_hidden_layers\":24,\"num_attention_heads\":14,\"num_key_value_heads\":2,"
                     "\"vocab_size\":151936,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,\"rope_scaling\":null,"
                     "\"tie_word_embeddings\":true,\"sliding_window\":32768}";
    a = config_ok(q2, "q2.json", "qwen2");
    check_attention(&a, 1, 0, 64);
    assert_int_equal(a.tied_embeddings, 1);
    assert_true(a.rope_theta == 1e6);
    const char *q3 = "{\"architectures\":[\"Qwen3ForCausalLM\"],\"hidden_size\":1024,\"intermediate_size\":3072,"
                     "\"num_hidden_layers\":28,\"num_attention_heads\":16,\"num_key_value_heads\":8,\"head_dim\":128,"
                     "\"vocab_size\":151936,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000,\"attention_bias\":false}";
    a = config_ok(q3, "q3.json", "qwen3");
    check_attention(&a, 0, 1, 128);
    const char *mi = "{\"model_type\":\"mistral\",\"hidden_size\":64,\"intermediate_size\":128,"
                     "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100}";
    a = config_ok(mi, "m.json", "mistral");
    assert_int_equal(a.n_kv_heads, 4);
    /* refusals with their codes */
    static const struct {
        const char *cfg;
        int code;
        const char *substr; /* NULL: the code alone is checked */
    } bad[] = {
        {"{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
         "\"num_attention_heads\":4,\"vocab_size\":100,\"hidden_act\":\"gelu\"}",
         SKS_EUNSUPPORTED, "gelu"},
        {"{\"hidden_size\":64}", SKS_ENOTFOUND, "architectures"},
        {"{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"hidden_size\":\"64\"}", SKS_ECONFIG, "hidden_size"},
        {"{\"model_type\":\"llama\",\"model_type\":\"qwen2\"}", SKS_EFORMAT, NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(sks__config_parse(bad[i].cfg, strlen(bad[i].cfg), "bad.json", &a), bad[i].code);
        if (bad[i].substr) assert_non_null(strstr(sks_last_error(), bad[i].substr));
    }
    /* nesting deeper than the bound, in a buffer with no terminating NUL */
    char deep[256];
    memset(deep, '[', sizeof deep);
    memcpy(deep, "{\"a\":", 5);
    assert_int_equal(sks__config_parse(deep, sizeof deep, "deep.json", &a), SKS_EFORMAT);
    assert_non_null(strstr(sks_last_error(), "nested deeper"));
}

/* A Qwen2 directory needs its q/k/v biases: present -> loads; absent -> the config and
 * the tensors disagree. */
static void test_qwen2_biases(void **state) {
    (void)state;
    const char *cfg = "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":8,\"intermediate_size\":16,"
                      "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"vocab_size\":16,\"tie_word_embeddings\":true}";
    char h[8192];
    size_t data = st_model_header(h, sizeof h, -1, 0, 0, NULL, NULL, -1);
    size_t n = strlen(h) - 1; /* drop the closing brace, append the biases */
    static const char *bias[] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
        n += (size_t)snprintf(h + n, sizeof h - n,
                              ",\"model.layers.0.self_attn.%s_proj.bias\":{\"dtype\":\"F32\",\"shape\":[8],"
                              "\"data_offsets\":[%zu,%zu]}",
                              bias[i], data, data + 32);
        data += 32;
    }
    snprintf(h + n, sizeof h - n, "}");
    const char *d = case_dir();
    write_st(d, "model.safetensors", h, data, 0);
    write_file(d, "config.json", cfg, strlen(cfg));
    sks_model *m = sks_test_open(d);
    assert_non_null(sks_model_tensor(m, SKS_ROLE_BK, 0));
    assert_int_equal(sks_model_tensor(m, SKS_ROLE_BK, 0)->ndim, 1);
    sks_model_close(m);
    d = st_model_dir(-1, 0, 0, NULL, NULL, cfg);
    expect_open(d, NULL, SKS_ECONFIG, "bq");
}

/* JSON depth guard, the building block of the header checks. */
static void test_json_depth(void **state) {
    (void)state;
    assert_int_equal(sks__json_depth("{\"a\":[1,[2]]}", 13, 8), 3);
    assert_int_equal(sks__json_depth("{\"[[[[\":1}", 10, 2), 1); /* brackets in strings do not count */
    assert_int_equal(sks__json_depth("{\"\\\"[[[\":1}", 11, 2), 1);
    assert_int_equal(sks__json_depth("[[[[[", 5, 4), -1);
}

static int setup(void **state) {
    (void)state;
    g_dir = sks_test_tmpdir();
    return g_dir ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    free(g_dir);
    return 0;
}

int main(void) {
    sks_log_set_level(SKS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_depth),          cmocka_unit_test(test_st_valid_control),
        cmocka_unit_test(test_st_header_structure), cmocka_unit_test(test_st_spans_and_shapes),
        cmocka_unit_test(test_st_model_level),      cmocka_unit_test(test_st_sharded),
        cmocka_unit_test(test_gguf_valid_control),  cmocka_unit_test(test_gguf_tensors),
        cmocka_unit_test(test_gguf_header),         cmocka_unit_test(test_gguf_parse_memory),
        cmocka_unit_test(test_llama2c),            cmocka_unit_test(test_config_styles),
        cmocka_unit_test(test_qwen2_biases),        cmocka_unit_test(test_gguf_families),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
