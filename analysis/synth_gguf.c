/* synth_gguf.c - a synthetic model as one GGUF file in any tensor type (sks_synth.h).
 *
 * Rows are generated a chunk at a time (whole heads for W_Q / W_K), permuted for `llama`
 * (GGUF row h dh + 2 i + s holds Hugging Face row h dh + s dh/2 + i, the interleaved RoPE
 * pair order that convert_hf_to_gguf writes), quantized row by row and streamed to the
 * writer: memory stays at a few MB whatever the model size.
 */
#include "sks_synth.h"
#include "sks_out.h"
#include "../loaders/sks_gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SKS__GGUF_CHUNK_FLOATS ((size_t)1 << 20)

static int sks__gguf_meta(sks_gguf_writer *w, const sks_synth *s, const char *scheme) {
    const sks_arch *a = sks_synth_arch(s);
    const char *ar = a->n_experts > 0 ? "llama" : a->family; /* convert_hf_to_gguf writes Mixtral as llama */
    char key[96], name[96];
#define K(suffix) (snprintf(key, sizeof key, "%s.%s", ar, suffix), key)
    snprintf(name, sizeof name, "sinkscope synth %s", scheme);
    sks_gguf_writer_set_str(w, "general.architecture", ar);
    sks_gguf_writer_set_str(w, "general.name", name);
    sks_gguf_writer_set_u32(w, "general.alignment", 32);
    sks_gguf_writer_set_u32(w, K("context_length"), (uint32_t)a->max_seq);
    sks_gguf_writer_set_u32(w, K("embedding_length"), (uint32_t)a->d_model);
    sks_gguf_writer_set_u32(w, K("block_count"), (uint32_t)a->n_layers);
    sks_gguf_writer_set_u32(w, K("feed_forward_length"), (uint32_t)a->d_ffn);
    sks_gguf_writer_set_u32(w, K("attention.head_count"), (uint32_t)a->n_heads);
    sks_gguf_writer_set_u32(w, K("attention.head_count_kv"), (uint32_t)a->n_kv_heads);
    sks_gguf_writer_set_u32(w, K("attention.key_length"), (uint32_t)a->head_dim);
    sks_gguf_writer_set_u32(w, K("attention.value_length"), (uint32_t)a->head_dim);
    sks_gguf_writer_set_u32(w, K("rope.dimension_count"), (uint32_t)a->head_dim);
    sks_gguf_writer_set_f32(w, K("attention.layer_norm_rms_epsilon"), (float)a->norm_eps);
    sks_gguf_writer_set_f32(w, K("rope.freq_base"), (float)a->rope_theta);
    sks_gguf_writer_set_u32(w, K("vocab_size"), (uint32_t)a->vocab_size);
    if (a->n_experts > 0) {
        sks_gguf_writer_set_u32(w, K("expert_count"), (uint32_t)a->n_experts);
        sks_gguf_writer_set_u32(w, K("expert_used_count"), (uint32_t)a->n_experts_used);
    }
    if (a->rope_scaling == SKS_ROPE_SCALING_LINEAR) {
        sks_gguf_writer_set_str(w, K("rope.scaling.type"), "linear");
        sks_gguf_writer_set_f32(w, K("rope.scaling.factor"), (float)a->rope_factor);
    }
#undef K
    if (a->bos_id >= 0) sks_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)a->bos_id);
    if (a->eos_id >= 0) sks_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)a->eos_id);
    return 0;
}

/* Rows r0 .. r0+nr of HF tensor i, in the file's row order (perm: whole heads of dh rows,
 * permuted to the interleaved order). */
static int sks__gguf_rows(const sks_synth *s, size_t i, int64_t r0, int64_t nr, int64_t cols, int perm, int64_t dh,
                          float *buf, float *tmp) {
    if (!perm) return sks_synth_rows(s, i, r0, nr, buf);
    int rc = sks_synth_rows(s, i, r0, nr, tmp);
    if (rc) return rc;
    for (int64_t h = 0; h < nr / dh; h++)
        for (int64_t k = 0; k < dh / 2; k++)
            for (int sgn = 0; sgn < 2; sgn++)
                memcpy(buf + (h * dh + 2 * k + sgn) * cols, tmp + (h * dh + sgn * dh / 2 + k) * cols, (size_t)cols * 4);
    return 0;
}

int sks_synth_write_gguf(const sks_synth *s, const char *dir, const char *scheme_name) {
    const sks_arch *a = sks_synth_arch(s);
    sks_gguf_scheme scheme;
    int rc = sks_gguf_scheme_parse(scheme_name, &scheme);
    if (rc) return rc;
    if (a->rope_scaling == SKS_ROPE_SCALING_LLAMA3)
        return sks_fail(SKS_EUNSUPPORTED, "synth: Llama 3 RoPE scaling cannot be written to GGUF (use safetensors)");
    if (a->has_post_norms || a->norm_unit_offset)
        return sks_fail(SKS_EUNSUPPORTED, "synth: a %s model is written as safetensors only (GGUF stores its norms as 1 + w "
                                          "under other keys)", a->family);
    if ((rc = sks__synth_mkdirs(dir))) return rc;
    const int perm_llama = !strcmp(a->family, "llama") || !strcmp(a->family, "mixtral");
    const int64_t dh = a->head_dim;
    size_t nt = sks_synth_n_tensors(s), plen = strlen(dir) + 32;
    sks_dtype *types = calloc(nt ? nt : 1, sizeof *types);
    char *path = malloc(plen), *text = NULL;
    float *buf = NULL, *tmp = NULL;
    void *q = NULL;
    sks_gguf_writer *w = NULL;
    if (!types || !path || (rc = sks_gguf_writer_new(&w))) {
        rc = rc ? rc : sks_fail(SKS_ENOMEM, "synth: out of memory");
        goto out;
    }
    sks__gguf_meta(w, s, scheme.name);
    int64_t maxcols = 1;
    uint64_t total = 0;
    for (size_t i = 0; i < nt; i++) {
        sks_role role;
        int layer, ndim;
        int64_t sh[2];
        sks_synth_tensor_info(s, i, NULL, &role, &layer, &ndim, sh);
        int64_t cols = ndim == 2 ? sh[1] : sh[0];
        if (cols > maxcols) maxcols = cols;
        types[i] = sks_gguf_scheme_type(&scheme, role, layer, a->n_layers, ndim, cols);
        char name[96];
        uint64_t ne[3] = {(uint64_t)cols, (uint64_t)sh[0], (uint64_t)a->n_experts};
        if (!sks_gguf_tensor_name(role, layer, name, sizeof name)) {
            rc = sks_fail(SKS_EINTERNAL, "synth: no GGUF name for %s", sks_role_name(role));
            goto out;
        }
        /* experts: one 3-D tensor per part, announced with expert 0, whose rows the
         * following experts' rows continue */
        int ex = sks_synth_tensor_expert(s, i);
        if (ex < 0) sks_gguf_writer_add_tensor(w, name, types[i], ndim == 2 ? 2 : 1, ne);
        else if (ex == 0) sks_gguf_writer_add_tensor(w, name, types[i], 3, ne);
        total += (uint64_t)sh[0] * (uint64_t)(ndim == 2 ? sh[1] : 1);
    }
    snprintf(path, plen, "%s/model.gguf", dir);
    if ((rc = sks_gguf_writer_begin(w, path))) goto out;
    /* chunk: whole heads of dh rows, at least one head */
    int64_t chunk_rows = (int64_t)(SKS__GGUF_CHUNK_FLOATS / (size_t)maxcols);
    chunk_rows = chunk_rows < dh ? dh : chunk_rows / dh * dh;
    buf = sks_malloc_n((size_t)(chunk_rows * maxcols), 4);
    tmp = sks_malloc_n((size_t)(chunk_rows * maxcols), 4);
    q = sks_malloc_n((size_t)(chunk_rows * maxcols), 4);
    if (!buf || !tmp || !q) {
        rc = sks_fail(SKS_ENOMEM, "synth: out of memory");
        goto out;
    }
    uint64_t done = 0;
    sks_progress("synth", 0, (int64_t)total);
    for (size_t i = 0; i < nt; i++) {
        sks_role role;
        int ndim;
        int64_t sh[2];
        sks_synth_tensor_info(s, i, NULL, &role, NULL, &ndim, sh);
        const int64_t rows = ndim == 2 ? sh[0] : 1, cols = ndim == 2 ? sh[1] : sh[0];
        const int perm = perm_llama && ndim == 2 && (role == SKS_ROLE_WQ || role == SKS_ROLE_WK);
        const sks_dtype_info *info = sks_dtype_get(types[i]);
        uint64_t row_bytes;
        sks_dtype_nbytes(types[i], (uint64_t)cols, &row_bytes);
        for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
            int64_t nr = rows - r0 < chunk_rows ? rows - r0 : chunk_rows;
            if ((rc = sks__gguf_rows(s, i, r0, nr, cols, perm, dh, buf, tmp))) goto out;
            for (int64_t r = 0; r < nr; r++)
                info->from_f32(buf + r * cols, (uint8_t *)q + (size_t)r * row_bytes, (size_t)cols);
            if ((rc = sks_gguf_writer_data(w, q, (size_t)nr * row_bytes))) goto out;
            done += (uint64_t)(nr * cols);
            sks_progress("synth", (int64_t)done, (int64_t)total);
        }
    }
    if ((rc = sks_gguf_writer_finish(w))) goto out;
    if ((rc = sks_synth_planted_json(s, SKS_DT_F32, &text))) goto out;
    snprintf(path, plen, "%s/planted.json", dir);
    rc = sks_write_file_atomic(path, text, strlen(text));
out:
    sks_gguf_writer_free(w);
    free(types);
    free(path);
    free(text);
    free(buf);
    free(tmp);
    free(q);
    return rc;
}
