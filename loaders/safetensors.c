/* safetensors.c - Hugging Face safetensors: single files and sharded directories.
 *
 * File layout (huggingface/safetensors, "Format"):
 *   u64 LE N | N bytes of JSON | data section
 * JSON: {"__metadata__": {str: str}?, "<name>": {"dtype": "BF16", "shape": [r, c],
 *        "data_offsets": [begin, end]}, ...}, offsets relative to the data section.
 * Checked: N <= len - 8 and N <= 100 MB; nesting depth; per tensor end - begin ==
 * prod(shape) * sizeof(dtype) (overflow-checked), end <= data size, no two spans overlap
 * (sorted by begin), element alignment of the mapped data.
 *
 * A model is a directory with config.json and either model.safetensors or
 * model.safetensors.index.json ({"weight_map": {tensor: shard file}}), or a single
 * .safetensors file with config.json beside it. Shards are mapped once each; only their
 * headers are read, so opening touches no weight pages.
 */
#define _POSIX_C_SOURCE 200809L
#include "formats_internal.h"
#include "model_internal.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

static const struct {
    const char *name;
    unsigned size;
    int dtype;
} sks__st_dtypes[] = {
    {"F32", 4, SKS_DT_F32}, {"F16", 2, SKS_DT_F16}, {"BF16", 2, SKS_DT_BF16}, {"F64", 8, -1},
    {"I64", 8, -1},         {"U64", 8, -1},         {"I32", 4, -1},          {"U32", 4, -1},
    {"I16", 2, -1},         {"U16", 2, -1},         {"I8", 1, -1},           {"U8", 1, -1},
    {"BOOL", 1, -1},        {"F8_E4M3", 1, -1},     {"F8_E5M2", 1, -1},
};

void sks__st_header_free(sks__st_header *h) {
    if (!h) return;
    for (size_t i = 0; i < h->n; i++) free(h->e[i].name);
    free(h->e);
    h->e = NULL;
    h->n = 0;
}

static int sks__st_cmp_begin(const void *a, const void *b) {
    const sks__st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int sks__st_entry_parse(const char *key, json_t *v, const sks__st_header *h, const char *path,
                               sks__st_entry *e) {
    if (!json_is_object(v)) return sks_fail(SKS_EFORMAT, "%s: tensor %s: entry is not an object", path, key);
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"), *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt)) return sks_fail(SKS_EFORMAT, "%s: tensor %s: dtype missing or not a string", path, key);
    if (!json_is_array(sh)) return sks_fail(SKS_EFORMAT, "%s: tensor %s: shape missing or not a list", path, key);
    if (!json_is_array(off) || json_array_size(off) != 2)
        return sks_fail(SKS_EFORMAT, "%s: tensor %s: data_offsets is not [begin, end]", path, key);
    const char *ds = json_string_value(dt);
    e->dtype = -2;
    for (size_t i = 0; i < sizeof sks__st_dtypes / sizeof sks__st_dtypes[0]; i++) {
        if (!strcmp(ds, sks__st_dtypes[i].name)) {
            e->dtype = sks__st_dtypes[i].dtype;
            e->elem_size = sks__st_dtypes[i].size;
            snprintf(e->st_dtype, sizeof e->st_dtype, "%s", sks__st_dtypes[i].name);
        }
    }
    char pb[40];
    if (e->dtype == -2)
        return sks_fail(SKS_EDTYPE, "%s: tensor %s: unknown dtype '%s'", path, key, sks__printable(ds, pb, sizeof pb));
    size_t nd = json_array_size(sh);
    if (nd > SKS__MAX_DIMS) return sks_fail(SKS_ESHAPE, "%s: tensor %s: %zu dimensions (at most %d)", path, key, nd, SKS__MAX_DIMS);
    e->ndim = (int)nd;
    uint64_t n = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *x = json_array_get(sh, i);
        if (!json_is_integer(x)) return sks_fail(SKS_EFORMAT, "%s: tensor %s: shape[%zu] is not an integer", path, key, i);
        json_int_t s = json_integer_value(x);
        if (s < 0) return sks_fail(SKS_ESHAPE, "%s: tensor %s: shape[%zu] = %lld is negative", path, key, i, (long long)s);
        e->shape[i] = (int64_t)s;
        if (sks_mul_u64(n, (uint64_t)s, &n))
            return sks_fail(SKS_EOVERFLOW, "%s: tensor %s: element count overflows", path, key);
    }
    uint64_t nbytes;
    if (sks_mul_u64(n, e->elem_size, &nbytes))
        return sks_fail(SKS_EOVERFLOW, "%s: tensor %s: byte size overflows", path, key);
    json_t *b = json_array_get(off, 0), *en = json_array_get(off, 1);
    if (!json_is_integer(b) || !json_is_integer(en) || json_integer_value(b) < 0 || json_integer_value(en) < 0)
        return sks_fail(SKS_EFORMAT, "%s: tensor %s: data_offsets are not non-negative integers", path, key);
    e->begin = (uint64_t)json_integer_value(b);
    e->end = (uint64_t)json_integer_value(en);
    if (e->end < e->begin)
        return sks_fail(SKS_EFORMAT, "%s: tensor %s: data_offsets end %llu < begin %llu", path, key,
                        (unsigned long long)e->end, (unsigned long long)e->begin);
    if (e->end > h->data_size)
        return sks_fail(SKS_EBOUNDS, "%s: tensor %s: data_offsets [%llu, %llu) outside the %llu-byte data section", path,
                        key, (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)h->data_size);
    if (e->end - e->begin != nbytes)
        return sks_fail(SKS_EFORMAT, "%s: tensor %s: data_offsets span %llu bytes but shape x %s needs %llu", path, key,
                        (unsigned long long)(e->end - e->begin), e->st_dtype, (unsigned long long)nbytes);
    /* Row kernels read f16/bf16/f32 through typed pointers: the mapped data must be
     * aligned to the element (the format's writer pads N to 8, so real files are). */
    if ((h->data_off + e->begin) % e->elem_size)
        return sks_fail(SKS_EFORMAT, "%s: tensor %s: data at file offset %llu is not aligned to its %u-byte elements",
                        path, key, (unsigned long long)(h->data_off + e->begin), e->elem_size);
    e->name = strdup(key);
    if (!e->name) return sks_fail(SKS_ENOMEM, "%s: out of memory", path);
    return 0;
}

int sks__st_parse(const void *buf, size_t len, const char *path, sks__st_header *h) {
    memset(h, 0, sizeof *h);
    const unsigned char *p = buf;
    if (len < 8) return sks_fail(SKS_EFORMAT, "%s: %zu bytes: too short for a safetensors header length", path, len);
    uint64_t N = 0;
    for (int i = 7; i >= 0; i--) N = (N << 8) | p[i];
    if (N > (uint64_t)len - 8)
        return sks_fail(SKS_EBOUNDS, "%s: header length %llu runs past the end of the %zu-byte file", path,
                        (unsigned long long)N, len);
    if (N > SKS__ST_MAX_HEADER)
        return sks_fail(SKS_EFORMAT, "%s: header length %llu exceeds the %llu-byte limit", path, (unsigned long long)N,
                        (unsigned long long)SKS__ST_MAX_HEADER);
    if (N < 2 || p[8] != '{') return sks_fail(SKS_EFORMAT, "%s: header does not start with a JSON object", path);
    h->header_len = N;
    h->data_off = 8 + N;
    h->data_size = (uint64_t)len - 8 - N;
    const char *js = (const char *)p + 8;
    if (sks__json_depth(js, (size_t)N, SKS__JSON_MAX_DEPTH) < 0)
        return sks_fail(SKS_EFORMAT, "%s: header JSON nested deeper than %d levels", path, SKS__JSON_MAX_DEPTH);
    json_error_t jerr;
    json_t *root = json_loadb(js, (size_t)N, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root) return sks_fail(SKS_EFORMAT, "%s: header is not valid JSON (at byte %d: %s)", path, jerr.position, jerr.text);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = sks_fail(SKS_EFORMAT, "%s: header is not a JSON object", path);
        goto out;
    }
    size_t cap = json_object_size(root);
    h->e = sks_calloc_n(cap ? cap : 1, sizeof *h->e);
    if (!h->e) {
        rc = sks_fail(SKS_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v)) {
                rc = sks_fail(SKS_EFORMAT, "%s: __metadata__ is not an object", path);
                goto out;
            }
            continue;
        }
        if (strlen(key) == 0 || strlen(key) > 1024) {
            rc = sks_fail(SKS_EFORMAT, "%s: tensor name of %zu bytes", path, strlen(key));
            goto out;
        }
        if (sks__has_control(key, strlen(key))) {
            rc = sks_fail(SKS_EFORMAT, "%s: a tensor name contains control characters", path);
            goto out;
        }
        if ((rc = sks__st_entry_parse(key, v, h, path, &h->e[h->n]))) goto out;
        h->n++;
    }
    qsort(h->e, h->n, sizeof *h->e, sks__st_cmp_begin);
    /* Sorted by begin, spans are disjoint iff each non-empty one starts at or after the
     * largest end seen so far (empty spans hold no bytes and cannot overlap). */
    for (size_t i = 1, far = 0; i < h->n; i++) {
        if (h->e[i - 1].end > h->e[far].end) far = i - 1;
        if (h->e[i].end > h->e[i].begin && h->e[i].begin < h->e[far].end) {
            rc = sks_fail(SKS_EFORMAT, "%s: tensors %s and %s overlap (bytes [%llu, %llu) and [%llu, %llu))", path,
                          h->e[far].name, h->e[i].name, (unsigned long long)h->e[far].begin,
                          (unsigned long long)h->e[far].end, (unsigned long long)h->e[i].begin,
                          (unsigned long long)h->e[i].end);
            goto out;
        }
    }
out:
    json_decref(root);
    if (rc) sks__st_header_free(h);
    return rc;
}

/* ---- opening -------------------------------------------------------------------------- */

static char *sks__join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s) return NULL;
    memcpy(s, dir, a);
    s[a] = '/';
    memcpy(s + a + 1, name, b + 1);
    return s;
}

static char *sks__dirname(const char *path) {
    const char *sl = strrchr(path, '/');
    if (!sl) return strdup(".");
    if (sl == path) return strdup("/");
    return strndup(path, (size_t)(sl - path));
}

static int sks__exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Map one shard, parse its header and attach its known tensors to m. Entries that are
 * also named in the weight map are checked against it by the caller via *hdr. */
static int sks__st_add_shard(sks_model *m, const char *file, sks__st_header *hdr) {
    const sks__family *fam = sks__family_named(m->arch.family);
    if (!fam) return sks_fail(SKS_EUNSUPPORTED, "%s: family %s has no tensor-name map", file, m->arch.family);
    void *addr;
    size_t size;
    memset(hdr, 0, sizeof *hdr);
    int rc = sks__map_weights(file, &addr, &size);
    if (rc) return rc;
    int idx = sks__model_add_map(m, addr, size, file);
    if (idx < 0) {
        munmap(addr, size);
        return idx;
    }
    if ((rc = sks__st_parse(addr, size, file, hdr))) return rc;
    const uint8_t *data = (const uint8_t *)addr + hdr->data_off;
    for (size_t i = 0; i < hdr->n; i++) {
        const sks__st_entry *e = &hdr->e[i];
        sks_role role = SKS_ROLE_COUNT;
        long layer;
        const sks__fused_name *fu = NULL;
        sks__moe_name mn;
        if (sks__moe_match(fam, SKS_FMT_SAFETENSORS, e->name, &mn)) {
            if (e->dtype < 0)
                return sks_fail(SKS_EDTYPE, "%s: tensor %s has dtype %s (sinkscope reads F32, F16, BF16)", file,
                                e->name, e->st_dtype);
            if ((rc = sks__moe_attach(m, &mn, (sks_dtype)e->dtype, e->ndim, e->shape, data + e->begin, e->name, idx)))
                return rc;
            continue;
        }
        if (!sks__family_hf_role(fam, e->name, &role, &layer) &&
            !sks__family_fused(fam, SKS_FMT_SAFETENSORS, e->name, &fu, &layer)) {
            sks_log(SKS_LOG_DEBUG, "%s: ignoring tensor %s", file, e->name);
            continue;
        }
        if (role == SKS_ROLE_LM_HEAD && m->arch.tied_embeddings) {
            sks_log(SKS_LOG_DEBUG, "%s: tie_word_embeddings is true: ignoring %s", file, e->name);
            continue;
        }
        if (layer >= m->arch.n_layers)
            return sks_fail(SKS_ECONFIG, "%s: tensor %s is for layer %ld but config.json says num_hidden_layers = %d", file,
                            e->name, layer, m->arch.n_layers);
        if (e->dtype < 0)
            return sks_fail(SKS_EDTYPE, "%s: tensor %s has dtype %s (sinkscope reads F32, F16, BF16)", file, e->name,
                            e->st_dtype);
        if (e->ndim < 1 || e->ndim > 2)
            return sks_fail(SKS_ESHAPE, "%s: tensor %s has %d dimensions (want 1 or 2)", file, e->name, e->ndim);
        int64_t shape[2] = {e->shape[0], e->ndim == 2 ? e->shape[1] : 1};
        if ((fam->flags & SKS__FAM_HF_CONV1D) && e->ndim == 2 && role != SKS_ROLE_EMBED && role != SKS_ROLE_POS_EMBED &&
            role != SKS_ROLE_LM_HEAD) {
            /* GPT-2's Conv1D keeps W^T (in, out): transposed views, c_attn split by columns */
            size_t n0 = m->n_order;
            if ((rc = sks__model_set_conv1d(m, fu, role, (int)layer, (sks_dtype)e->dtype, shape, data + e->begin,
                                            e->name)))
                return rc == SKS_ESHAPE ? sks_fail(SKS_ECONFIG, "%s: %s", file, sks_last_error()) : rc;
            for (size_t k = n0; k < m->n_order; k++)
                ((sks_tensor *)sks_model_tensor(m, m->order[k].role, m->order[k].layer))->shard = idx;
            continue;
        }
        if (fu) {
            /* the parts of a fused projection (Phi-3 qkv_proj, gate_up_proj) */
            size_t n0 = m->n_order;
            if ((rc = sks__model_set_fused(m, fu, (int)layer, (sks_dtype)e->dtype, e->ndim, shape, data + e->begin,
                                           e->name)))
                return rc == SKS_ESHAPE ? sks_fail(SKS_ECONFIG, "%s: %s", file, sks_last_error()) : rc;
            for (size_t k = n0; k < m->n_order; k++) ((sks_tensor *)sks__model_order_tensor(m, k))->shard = idx;
            continue;
        }
        if ((rc = sks_model_set_tensor(m, role, (int)layer, (sks_dtype)e->dtype, e->ndim, shape, data + e->begin, e->name)))
            return rc;
        ((sks_tensor *)sks_model_tensor(m, role, (int)layer))->shard = idx;
    }
    return 0;
}

static int sks__st_name_cmp(const void *a, const void *b) {
    return strcmp(((const sks__st_entry *)a)->name, ((const sks__st_entry *)b)->name);
}

/* Shard file names must be plain names inside the model directory. */
static int sks__plain_name(const char *s) {
    return s[0] && !strchr(s, '/') && !strchr(s, '\\') && !strstr(s, "..") && strlen(s) < 1024 &&
           !sks__has_control(s, strlen(s));
}

static int sks__st_open_index(sks_model *m, const char *dir, const char *index_path) {
    json_error_t jerr;
    size_t len = 0;
    FILE *f = fopen(index_path, "rb");
    if (!f) return sks_fail(SKS_EIO, "%s: cannot open: %s", index_path, strerror(errno));
    fclose(f);
    char *text = NULL;
    {
        void *addr;
        size_t size;
        int rc = sks__map_file(index_path, &addr, &size);
        if (rc) return rc;
        if (size > ((size_t)64 << 20)) {
            munmap(addr, size);
            return sks_fail(SKS_EFORMAT, "%s: larger than 64 MiB, not an index", index_path);
        }
        text = malloc(size);
        if (!text) {
            munmap(addr, size);
            return sks_fail(SKS_ENOMEM, "%s: out of memory", index_path);
        }
        memcpy(text, addr, size);
        len = size;
        munmap(addr, size);
    }
    if (sks__json_depth(text, len, SKS__JSON_MAX_DEPTH) < 0) {
        free(text);
        return sks_fail(SKS_EFORMAT, "%s: JSON nested deeper than %d levels", index_path, SKS__JSON_MAX_DEPTH);
    }
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) return sks_fail(SKS_EFORMAT, "%s: invalid JSON at line %d: %s", index_path, jerr.line, jerr.text);
    int rc = 0;
    char **shards = NULL;
    sks__st_header *hdrs = NULL;
    size_t n_shards = 0;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        rc = sks_fail(SKS_EFORMAT, "%s: no 'weight_map' object", index_path);
        goto out;
    }
    size_t nw = json_object_size(wm);
    shards = sks_calloc_n(nw ? nw : 1, sizeof *shards);
    if (!shards) {
        rc = sks_fail(SKS_ENOMEM, "%s: out of memory", index_path);
        goto out;
    }
    const char *key;
    json_t *v;
    /* Unique shard names in order of first mention (the number of shards is small). */
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v)) {
            char pk[128];
            rc = sks_fail(SKS_EFORMAT, "%s: weight_map[%s] is not a file name", index_path,
                          sks__printable(key, pk, sizeof pk));
            goto out;
        }
        const char *s = json_string_value(v);
        if (!sks__plain_name(s)) {
            char pk[128], ps[128];
            rc = sks_fail(SKS_EFORMAT, "%s: weight_map[%s] = '%s' is not a plain file name in the model directory",
                          index_path, sks__printable(key, pk, sizeof pk), sks__printable(s, ps, sizeof ps));
            goto out;
        }
        size_t j = 0;
        while (j < n_shards && strcmp(shards[j], s)) j++;
        if (j == n_shards) shards[n_shards++] = (char *)s;
    }
    if (n_shards == 0) {
        rc = sks_fail(SKS_EFORMAT, "%s: weight_map is empty", index_path);
        goto out;
    }
    hdrs = sks_calloc_n(n_shards, sizeof *hdrs);
    if (!hdrs) {
        rc = sks_fail(SKS_ENOMEM, "%s: out of memory", index_path);
        goto out;
    }
    for (size_t j = 0; j < n_shards; j++) {
        char *file = sks__join(dir, shards[j]);
        if (!file) {
            rc = sks_fail(SKS_ENOMEM, "out of memory");
            goto out;
        }
        if (!sks__exists(file)) {
            rc = sks_fail(SKS_ENOTFOUND, "%s: shard '%s' named in weight_map does not exist", index_path, shards[j]);
            free(file);
            goto out;
        }
        rc = sks__st_add_shard(m, file, &hdrs[j]);
        free(file);
        if (rc) goto out;
        qsort(hdrs[j].e, hdrs[j].n, sizeof *hdrs[j].e, sks__st_name_cmp);
        sks_progress("open shards", (int64_t)j + 1, (int64_t)n_shards);
    }
    /* Every tensor the index promises must be in the shard it names. */
    json_object_foreach(wm, key, v) {
        const char *s = json_string_value(v);
        size_t j = 0;
        while (strcmp(shards[j], s)) j++;
        sks__st_entry probe = {0};
        probe.name = (char *)key;
        if (!bsearch(&probe, hdrs[j].e, hdrs[j].n, sizeof probe, sks__st_name_cmp)) {
            char pk[128];
            rc = sks_fail(SKS_ENOTFOUND, "%s: weight_map puts %s in %s, which has no such tensor", index_path,
                          sks__printable(key, pk, sizeof pk), s);
            goto out;
        }
    }
out:
    if (hdrs)
        for (size_t j = 0; j < n_shards; j++) sks__st_header_free(&hdrs[j]);
    free(hdrs);
    free(shards);
    json_decref(root);
    return rc;
}

/* The config promises roles and shapes; a missing tensor or one of another shape means
 * the two files disagree. */
static int sks__st_validate(sks_model *m, const char *config) {
    /* Name a missing tensor as the file would (model.layers.3.mlp.up_proj.weight). */
    const sks_arch *a = &m->arch;
    const sks__family *fam = sks__family_named(a->family);
    sks_role role;
    int l;
    if (fam && sks__first_missing(m, &role, &l)) {
        char nm[160];
        sks__family_hf_name(fam, role, l, nm, sizeof nm);
        return sks_fail(SKS_ECONFIG, "%s disagrees with the tensors: %s (%s) is missing for family %s with %d layers",
                        config, nm, sks_role_name(role), a->family, a->n_layers);
    }
    int rc = sks_model_validate(m);
    if (rc == SKS_ESHAPE || rc == SKS_ENOTFOUND) {
        char msg[768];
        snprintf(msg, sizeof msg, "%s", sks_last_error());
        return sks_fail(SKS_ECONFIG, "%s disagrees with the tensors: %s", config, msg);
    }
    return rc;
}

int sks__open_safetensors(const char *path, sks_model **out) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return sks_fail(SKS_EIO, "%s: cannot open: %s", path, strerror(errno));
    int is_dir = S_ISDIR(st.st_mode);
    char *dir = is_dir ? strdup(path) : sks__dirname(path);
    char *config = dir ? sks__join(dir, "config.json") : NULL;
    char *index = dir ? sks__join(dir, "model.safetensors.index.json") : NULL;
    char *single = dir ? (is_dir ? sks__join(dir, "model.safetensors") : strdup(path)) : NULL;
    sks_model *m = NULL;
    int rc = 0;
    if (!dir || !config || !index || !single) {
        rc = sks_fail(SKS_ENOMEM, "out of memory");
        goto out;
    }
    if (!sks__exists(config)) {
        rc = sks_fail(SKS_ENOTFOUND, "%s: no config.json in %s: safetensors files carry no architecture, it is needed",
                      path, dir);
        goto out;
    }
    sks_arch a;
    memset(&a, 0, sizeof a);
    if ((rc = sks__config_load(config, &a))) goto out;
    if ((rc = sks__model_alloc(&a, SKS_FMT_SAFETENSORS, path, &m))) goto out;
    if (is_dir && !sks__exists(single)) {
        if (!sks__exists(index)) {
            rc = sks_fail(SKS_ENOTFOUND, "%s: neither model.safetensors nor model.safetensors.index.json found", path);
            goto out;
        }
        if ((rc = sks__st_open_index(m, dir, index))) goto out;
    } else {
        sks__st_header h;
        rc = sks__st_add_shard(m, single, &h);
        sks__st_header_free(&h);
        if (rc) goto out;
    }
    if (!sks_model_tensor(m, SKS_ROLE_LM_HEAD, -1)) m->arch.tied_embeddings = 1;
    rc = sks__st_validate(m, config);
out:
    if (rc) sks_model_close(m);
    else *out = m;
    free(dir);
    free(config);
    free(index);
    free(single);
    return rc;
}
