/* llama2c.c - karpathy/llama2.c v0 checkpoints (.bin).
 *
 * Layout (run.c, memory_map_weights): 7 int32
 *   dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 * (vocab_size < 0: an untied classifier follows the weights), then fp32:
 *   token_embedding (V, d) | rms_att (L, d) | wq (L, H*dh, d) | wk (L, Hkv*dh, d)
 *   wv (L, Hkv*dh, d) | wo (L, d, H*dh) | rms_ffn (L, d) | w1 = gate (L, f, d)
 *   w2 = down (L, d, f) | w3 = up (L, f, d) | rms_final (d)
 *   freq_cis_real, freq_cis_imag (seq_len * dh / 2 each; unused, RoPE is recomputed)
 *   [wcls (V, d) if untied]
 * dh = d / H. Q/K rows are in Meta's interleaved RoPE order. Nothing in the header says
 * theta or eps: llama2.c uses 10000 and 1e-5, BOS 1, EOS 2.
 */
#include "formats_internal.h"
#include "model_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define SKS__L2C_HEADER 28

int sks__llama2c_parse(const void *buf, size_t len, const char *path, sks_arch *a, int *untied) {
    int32_t h[7];
    if (len < SKS__L2C_HEADER)
        return sks_fail(SKS_EFORMAT, "%s: %zu bytes: too short for a llama2.c header", path, len);
    memcpy(h, buf, sizeof h);
    if (!memcmp(buf, "PK\x03\x04", 4) || ((const unsigned char *)buf)[0] == 0x80)
        return sks_fail(SKS_EUNSUPPORTED,
                        "%s: a PyTorch (zip/pickle) checkpoint, not llama2.c: convert it to safetensors first", path);
    if (h[0] == 0x616b3432) /* "ak42": the later llama2.c export versions */
        return sks_fail(SKS_EUNSUPPORTED, "%s: llama2.c export version %d is not supported (legacy v0 only)", path, h[1]);
    static const char *const field[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) {
        /* vocab_size may be negative (untied classifier), but not 0 or INT32_MIN */
        int64_t v = i == 5 ? (h[i] < 0 ? -(int64_t)h[i] : h[i]) : h[i];
        if (v <= 0 || v > INT32_MAX)
            return sks_fail(SKS_EFORMAT, "%s: header field %s = %d is not positive (not a llama2.c v0 checkpoint?)", path,
                            field[i], h[i]);
    }
    memset(a, 0, sizeof *a);
    snprintf(a->family, sizeof a->family, "llama");
    a->d_model = h[0];
    a->d_ffn = h[1];
    a->n_layers = h[2];
    a->n_heads = h[3];
    a->n_kv_heads = h[4];
    a->vocab_size = h[5] < 0 ? -h[5] : h[5];
    a->max_seq = h[6];
    *untied = h[5] < 0;
    a->tied_embeddings = !*untied;
    a->norm_eps = 1e-5;
    a->rope_theta = 10000.0;
    a->rope_interleaved = 1;
    a->rope_factor = 1;
    a->bos_id = 1;
    a->eos_id = 2;
    if (a->d_model % a->n_heads)
        return sks_fail(SKS_ECONFIG, "%s: dim %d is not a multiple of n_heads %d", path, a->d_model, a->n_heads);
    a->head_dim = a->d_model / a->n_heads;
    int rc = sks_arch_validate(a);
    if (rc) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", sks_last_error());
        return sks_fail(rc, "%s: %s", path, msg);
    }
    /* total floats, all in u64 with checks: the fields are < 2^27 after validation but
     * their products are not bounded by anything but the file size. */
    uint64_t d = (uint64_t)a->d_model, f = (uint64_t)a->d_ffn, L = (uint64_t)a->n_layers, V = (uint64_t)a->vocab_size;
    uint64_t qd = (uint64_t)a->n_heads * (uint64_t)a->head_dim, kd = (uint64_t)a->n_kv_heads * (uint64_t)a->head_dim;
    uint64_t per_layer = 0, t, total = 0;
    int bad = 0;
    bad |= sks_mul_u64(qd, d, &t) || sks_add_u64(per_layer, t, &per_layer);     /* wq */
    bad |= sks_mul_u64(kd, d, &t) || sks_add_u64(per_layer, 2 * t, &per_layer); /* wk, wv */
    bad |= sks_mul_u64(d, qd, &t) || sks_add_u64(per_layer, t, &per_layer);     /* wo */
    bad |= sks_mul_u64(f, d, &t) || sks_add_u64(per_layer, 3 * t, &per_layer);  /* w1, w2, w3 */
    bad |= sks_add_u64(per_layer, 2 * d, &per_layer);                           /* rms_att, rms_ffn */
    bad |= sks_mul_u64(per_layer, L, &total);
    bad |= sks_mul_u64(V, d, &t) || sks_add_u64(total, *untied ? 2 * t : t, &total);
    bad |= sks_add_u64(total, d, &total);
    bad |= sks_mul_u64((uint64_t)a->max_seq, (uint64_t)a->head_dim, &t) || sks_add_u64(total, t, &total); /* freq_cis */
    bad |= sks_mul_u64(total, 4, &total) || sks_add_u64(total, SKS__L2C_HEADER, &total);
    if (bad) return sks_fail(SKS_EOVERFLOW, "%s: header sizes overflow", path);
    if (total > len)
        return sks_fail(SKS_EBOUNDS, "%s: the header implies %llu bytes but the file has %zu (truncated?)", path,
                        (unsigned long long)total, len);
    if (total < len)
        sks_log(SKS_LOG_WARN, "%s: %llu trailing bytes after the weights ignored", path,
                (unsigned long long)(len - total));
    return 0;
}

int sks__open_llama2c(const char *path, void *addr, size_t size, sks_model **out) {
    sks_arch a;
    int untied = 0;
    sks_model *m = NULL;
    int rc;
    if ((rc = sks__llama2c_parse(addr, size, path, &a, &untied)) || (rc = sks__model_alloc(&a, SKS_FMT_LLAMA2C, path, &m))) {
        munmap(addr, size);
        return rc;
    }
    if ((rc = sks__model_add_map(m, addr, size, path)) < 0) {
        munmap(addr, size);
        sks_model_close(m);
        return rc;
    }
    int64_t d = a.d_model, f = a.d_ffn, V = a.vocab_size, qd = (int64_t)a.n_heads * a.head_dim,
            kd = (int64_t)a.n_kv_heads * a.head_dim;
    const float *p = (const float *)((const uint8_t *)addr + SKS__L2C_HEADER);
    char name[64];
    /* one stacked (L, rows, cols) block per role: layer l starts at l * rows * cols */
    struct {
        sks_role role;
        int64_t rows, cols;
        const char *name;
    } blocks[] = {
        {SKS_ROLE_ATTN_NORM, d, 1, "rms_att_weight"}, {SKS_ROLE_WQ, qd, d, "wq"},   {SKS_ROLE_WK, kd, d, "wk"},
        {SKS_ROLE_WV, kd, d, "wv"},                   {SKS_ROLE_WO, d, qd, "wo"},   {SKS_ROLE_FFN_NORM, d, 1, "rms_ffn_weight"},
        {SKS_ROLE_W_GATE, f, d, "w1"},                {SKS_ROLE_W_DOWN, d, f, "w2"}, {SKS_ROLE_W_UP, f, d, "w3"},
    };
    int64_t sh[2] = {V, d};
    if ((rc = sks_model_set_tensor(m, SKS_ROLE_EMBED, -1, SKS_DT_F32, 2, sh, p, "token_embedding_table"))) goto fail;
    p += V * d;
    for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++) {
        int ndim = blocks[b].cols == 1 ? 1 : 2;
        int64_t shape[2] = {blocks[b].rows, blocks[b].cols};
        for (int l = 0; l < a.n_layers; l++) {
            snprintf(name, sizeof name, "%s[%d]", blocks[b].name, l);
            if ((rc = sks_model_set_tensor(m, blocks[b].role, l, SKS_DT_F32, ndim, shape, p, name))) goto fail;
            p += blocks[b].rows * blocks[b].cols;
        }
    }
    int64_t shd[2] = {d, 1};
    if ((rc = sks_model_set_tensor(m, SKS_ROLE_FINAL_NORM, -1, SKS_DT_F32, 1, shd, p, "rms_final_weight"))) goto fail;
    p += d;
    p += (int64_t)a.max_seq * a.head_dim; /* freq_cis_real + freq_cis_imag */
    if (untied) {
        if ((rc = sks_model_set_tensor(m, SKS_ROLE_LM_HEAD, -1, SKS_DT_F32, 2, sh, p, "wcls"))) goto fail;
    }
    if ((rc = sks_model_validate(m))) goto fail;
    *out = m;
    return 0;
fail:
    sks_model_close(m);
    return rc;
}
