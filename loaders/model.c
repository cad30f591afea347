/* model.c - the model view: tensor table by (role, layer), shape validation,
 * in-memory models, open dispatch by format. */
#define _POSIX_C_SOURCE 200809L
#include "model_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void (*sks__gguf_free_hook)(struct sks_gguf *g);

static const char *const sks__role_names[SKS_ROLE_COUNT] = {
    "embed", "attn_norm", "wq", "wk", "wv", "wo", "bq", "bk", "bv", "q_norm", "k_norm",
    "ffn_norm", "w_gate", "w_up", "w_down", "final_norm", "lm_head", "post_attn_norm", "post_ffn_norm",
    "pos_embed", "attn_norm_b", "ffn_norm_b", "final_norm_b", "bo", "b_up", "b_down",
    "router", "exp_gate", "exp_up", "exp_down", "shexp_gate", "shexp_up", "shexp_down", "shexp_router"};

const char *sks_role_name(sks_role r) {
    return (r >= 0 && r < SKS_ROLE_COUNT) ? sks__role_names[r] : "?";
}

int sks_role_is_per_layer(sks_role r) {
    return !(r == SKS_ROLE_EMBED || r == SKS_ROLE_FINAL_NORM || r == SKS_ROLE_LM_HEAD || r == SKS_ROLE_POS_EMBED ||
             r == SKS_ROLE_FINAL_NORM_B);
}

int sks_role_is_per_expert(sks_role r) {
    return r == SKS_ROLE_EXP_GATE || r == SKS_ROLE_EXP_UP || r == SKS_ROLE_EXP_DOWN;
}

int sks_arch_layer_moe(const sks_arch *a, int l) {
    if (a->n_experts <= 0 || l < 0 || l >= a->n_layers) return 0;
    if (l < SKS_MOE_MAX_LAYERS && (a->moe_dense[l / 8] >> (l % 8) & 1)) return 0;
    return a->moe_sparse_step <= 1 || (l + 1) % a->moe_sparse_step == 0;
}

const char *sks_act_name(sks_act_kind k) { return k == SKS_ACT_GELU_TANH ? "gelu_tanh" : "silu"; }

int sks_arch_layer_sliding(const sks_arch *a, int l) {
    if (a->sliding_window <= 0) return 0;
    return a->swa_full_every <= 0 || (l + 1) % a->swa_full_every != 0;
}

void sks_arch_llama(sks_arch *a, int L, int d, int f, int H, int Hkv, int dh, int V) {
    *a = (sks_arch){.family = "llama", .n_layers = L, .d_model = d, .d_ffn = f, .n_heads = H, .n_kv_heads = Hkv,
                    .head_dim = dh, .vocab_size = V, .norm_eps = 1e-5, .rope_theta = 10000.0, .bos_id = 1, .eos_id = 2};
}

const char *sks_arch_norm_layout(const sks_arch *a) {
    if (a->no_input_norms) return "post";
    return a->has_post_norms ? "sandwich" : "pre";
}

int sks_model_norm_gain(const sks_model *m, sks_role role, int layer, float *out, int64_t n) {
    const sks_tensor *t = sks_model_tensor(m, role, layer);
    if (!t) return sks_fail(SKS_ENOTFOUND, "%s: no %s for layer %d", m->path, sks_role_name(role), layer);
    if (sks_tensor_rows(t) != n || t->ndim != 1)
        return sks_fail(SKS_ESHAPE, "%s: %s has %lld entries, want %lld", m->path, t->name, (long long)sks_tensor_rows(t),
                        (long long)n);
    int rc = sks_tensor_rows_f32(t, 0, 1, out);
    if (rc || !m->arch.norm_unit_offset) return rc;
    for (int64_t c = 0; c < n; c++) out[c] = 1.0f + out[c];
    return 0;
}

float sks_model_embed_scale(const sks_model *m) {
    if (!m->arch.embed_scale) return 1.0f;
    float s = (float)sqrt((double)m->arch.d_model);
    const sks_tensor *e = sks_model_tensor(m, SKS_ROLE_EMBED, -1);
    uint16_t h;
    if (e && e->dtype == SKS_DT_BF16) h = sks_f32_to_bf16(s), sks_bf16_to_f32_ref(&h, &s, 1);
    else if (e && e->dtype == SKS_DT_F16) h = sks_f32_to_f16(s), sks_f16_to_f32_ref(&h, &s, 1);
    return s;
}

const char *sks_format_name(sks_format f) {
    switch (f) {
    case SKS_FMT_MEMORY: return "memory";
    case SKS_FMT_SAFETENSORS: return "safetensors";
    case SKS_FMT_GGUF: return "gguf";
    case SKS_FMT_LLAMA2C: return "llama2c";
    }
    return "?";
}

int sks_arch_validate(const sks_arch *a) {
    if (a->n_layers <= 0 || a->n_layers > 100000) return sks_fail(SKS_ECONFIG, "n_layers %d out of range", a->n_layers);
    if (a->d_model <= 0 || a->d_ffn <= 0 || a->n_heads <= 0 || a->n_kv_heads <= 0 ||
        a->head_dim <= 0 || a->vocab_size <= 0)
        return sks_fail(SKS_ECONFIG, "non-positive dimension (d %d, f %d, H %d, Hkv %d, dh %d, V %d)",
                        a->d_model, a->d_ffn, a->n_heads, a->n_kv_heads, a->head_dim, a->vocab_size);
    if (a->d_model > (1 << 20) || a->d_ffn > (1 << 22) || a->n_heads > 4096 || a->head_dim > 8192 ||
        a->vocab_size > (1 << 26))
        return sks_fail(SKS_ECONFIG, "dimension too large (d %d, f %d, H %d, dh %d, V %d)", a->d_model,
                        a->d_ffn, a->n_heads, a->head_dim, a->vocab_size);
    if (a->n_heads % a->n_kv_heads != 0)
        return sks_fail(SKS_ECONFIG, "n_heads %d is not a multiple of n_kv_heads %d", a->n_heads, a->n_kv_heads);
    if (a->head_dim % 2 != 0 && !a->pos_learned) return sks_fail(SKS_ECONFIG, "head_dim %d is odd (RoPE needs pairs)", a->head_dim);
    if (!(a->norm_eps > 0 && a->norm_eps < 1)) return sks_fail(SKS_ECONFIG, "norm_eps %g out of range", a->norm_eps);
    if (!(a->rope_theta > 0)) return sks_fail(SKS_ECONFIG, "rope_theta %g out of range", a->rope_theta);
    return 0;
}

static size_t sks__slot_index(const sks_model *m, sks_role role, int layer) {
    return (size_t)role * (size_t)(m->arch.n_layers + 1) + (size_t)(layer + 1);
}

int sks__model_alloc(const sks_arch *arch, sks_format fmt, const char *path, sks_model **out) {
    *out = NULL;
    int rc = sks_arch_validate(arch);
    if (rc) return rc;
    sks_model *m = calloc(1, sizeof *m);
    if (!m) return sks_fail(SKS_ENOMEM, "model: out of memory");
    m->arch = *arch;
    m->format = fmt;
    m->path = strdup(path ? path : "(memory)");
    size_t nx = arch->n_experts > 0 ? (size_t)arch->n_layers * (size_t)arch->n_experts * 3 : 0;
    m->slots = sks_calloc_n((size_t)SKS_ROLE_COUNT * (size_t)(arch->n_layers + 1), sizeof *m->slots);
    m->order = sks_calloc_n((size_t)SKS_ROLE_COUNT * (size_t)(arch->n_layers + 1) + nx, sizeof *m->order);
    m->xslots = nx ? sks_calloc_n(nx, sizeof *m->xslots) : NULL;
    if (!m->path || !m->slots || !m->order || (nx && !m->xslots)) {
        sks_model_close(m);
        return sks_fail(SKS_ENOMEM, "model: out of memory");
    }
    *out = m;
    return 0;
}

int sks__model_add_map(sks_model *m, void *addr, size_t size, const char *path) {
    sks__mapping *nm = realloc(m->maps, (size_t)(m->n_maps + 1) * sizeof *nm);
    if (!nm) return sks_fail(SKS_ENOMEM, "model: out of memory");
    m->maps = nm;
    nm[m->n_maps].addr = addr;
    nm[m->n_maps].size = size;
    nm[m->n_maps].path = strdup(path ? path : "");
    m->file_bytes += size;
    return m->n_maps++;
}

const char *sks__model_intern(sks_model *m, const char *name) {
    char **nn = realloc(m->names, (m->n_names + 1) * sizeof *nn);
    if (!nn) return NULL;
    m->names = nn;
    nn[m->n_names] = strdup(name ? name : "");
    return nn[m->n_names] ? nn[m->n_names++] : NULL;
}

int sks__map_file(const char *path, void **addr, size_t *size) {
    *addr = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sks_fail(SKS_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return sks_fail(SKS_EIO, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return sks_fail(SKS_EIO, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return sks_fail(SKS_EFORMAT, "%s: file is empty", path);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return sks_fail(SKS_EIO, "%s: mmap failed: %s", path, strerror(errno));
    *addr = p;
    *size = (size_t)st.st_size;
    return 0;
}

void sks_model_freeze(sks_model *m) {
    if (!m) return;
    for (size_t k = 0; k < m->n_order; k++) ((sks_tensor *)sks__model_order_tensor(m, k))->frozen = 1;
}

int sks__map_weights(const char *path, void **addr, size_t *size) {
    int rc = sks__map_file(path, addr, size);
    if (!rc) (void)madvise(*addr, *size, MADV_RANDOM);
    return rc;
}

void sks_model_close(sks_model *m) {
    if (!m) return;
    sks_weights_epoch_bump();
    for (int i = 0; i < m->n_maps; i++) {
        if (m->maps[i].addr) munmap(m->maps[i].addr, m->maps[i].size);
        free(m->maps[i].path);
    }
    free(m->maps);
    for (size_t i = 0; i < m->n_names; i++) free(m->names[i]);
    free(m->names);
    if (m->gguf && sks__gguf_free_hook) sks__gguf_free_hook(m->gguf);
    free(m->slots);
    free(m->xslots);
    free(m->order);
    free(m->path);
    free(m);
}

const sks_arch *sks_model_arch(const sks_model *m) { return &m->arch; }
sks_format sks_model_format(const sks_model *m) { return m->format; }
const char *sks_model_path(const sks_model *m) { return m->path; }
int sks_model_n_shards(const sks_model *m) { return m->n_maps; }
const char *sks_model_shard_path(const sks_model *m, int i) {
    return (i >= 0 && i < m->n_maps) ? m->maps[i].path : NULL;
}
uint64_t sks_model_file_bytes(const sks_model *m) { return m->file_bytes; }
const struct sks_gguf *sks_model_gguf(const sks_model *m) { return m->gguf; }

const sks_tensor *sks_model_tensor(const sks_model *m, sks_role role, int layer) {
    if (role < 0 || role >= SKS_ROLE_COUNT || sks_role_is_per_expert(role)) return NULL;
    if (sks_role_is_per_layer(role)) {
        if (layer < 0 || layer >= m->arch.n_layers) return NULL;
    } else {
        layer = -1;
    }
    const sks__slot *s = &m->slots[sks__slot_index(m, role, layer)];
    return s->present ? &s->t : NULL;
}

const sks_tensor *sks_model_classifier(const sks_model *m) {
    const sks_tensor *t = sks_model_tensor(m, SKS_ROLE_LM_HEAD, -1);
    return t ? t : sks_model_tensor(m, SKS_ROLE_EMBED, -1);
}

static sks__slot *sks__xslot(const sks_model *m, sks_role role, int layer, int expert) {
    if (!m->xslots || !sks_role_is_per_expert(role) || layer < 0 || layer >= m->arch.n_layers || expert < 0 ||
        expert >= m->arch.n_experts)
        return NULL;
    size_t part = role == SKS_ROLE_EXP_GATE ? 0 : role == SKS_ROLE_EXP_UP ? 1 : 2;
    return &m->xslots[((size_t)layer * (size_t)m->arch.n_experts + (size_t)expert) * 3 + part];
}

const sks_tensor *sks_model_expert(const sks_model *m, sks_role role, int layer, int expert) {
    const sks__slot *s = sks__xslot(m, role, layer, expert);
    return s && s->present ? &s->t : NULL;
}

size_t sks_model_n_tensors(const sks_model *m) { return m->n_order; }

const sks_tensor *sks__model_order_tensor(const sks_model *m, size_t i) {
    if (i >= m->n_order) return NULL;
    const sks__slot_key *k = &m->order[i];
    return k->expert >= 0 ? sks_model_expert(m, k->role, k->layer, k->expert) : sks_model_tensor(m, k->role, k->layer);
}

const sks_tensor *sks_model_tensor_at(const sks_model *m, size_t i, sks_role *role, int *layer) {
    if (i >= m->n_order) return NULL;
    if (role) *role = m->order[i].role;
    if (layer) *layer = m->order[i].layer;
    return sks__model_order_tensor(m, i);
}

int sks_model_tensor_expert_at(const sks_model *m, size_t i) { return i < m->n_order ? m->order[i].expert : -1; }

uint64_t sks_model_n_params(const sks_model *m) {
    uint64_t n = 0;
    for (size_t i = 0; i < m->n_order; i++) {
        const sks_tensor *t = sks__model_order_tensor(m, i);
        n += (uint64_t)t->shape[0] * (uint64_t)(t->ndim == 2 ? t->shape[1] : 1);
    }
    return n;
}

void sks_model_dtype_mix(const sks_model *m, sks_dtype_mix *mix) {
    memset(mix, 0, sizeof *mix);
    for (size_t i = 0; i < m->n_order; i++) {
        const sks_tensor *t = sks__model_order_tensor(m, i);
        uint64_t n = (uint64_t)t->shape[0] * (uint64_t)(t->ndim == 2 ? t->shape[1] : 1);
        mix->tensors[t->dtype]++;
        mix->elements[t->dtype] += n;
        mix->bytes[t->dtype] += t->nbytes;
        mix->total_elements += n;
        mix->total_bytes += t->nbytes;
    }
    mix->bpw = mix->total_elements ? 8.0 * (double)mix->total_bytes / (double)mix->total_elements : 0.0;
}

int sks_model_new_memory(const sks_arch *arch, sks_model **out) {
    return sks__model_alloc(arch, SKS_FMT_MEMORY, "(memory)", out);
}

/* Check (dt, ndim, shape) and fill slot s with the view; record it in the order. */
static int sks__fill_slot(sks_model *m, sks__slot *s, sks_role role, int layer, int expert, sks_dtype dt, int ndim,
                          const int64_t shape[2], const void *data, const char *name) {
    if (!sks_dtype_convertible(dt))
        return sks_fail(SKS_EDTYPE, "%s: dtype %s is not converted", name ? name : "?", sks_dtype_name(dt));
    if (ndim != 1 && ndim != 2) return sks_fail(SKS_ESHAPE, "%s: %d dimensions (want 1 or 2)", name ? name : "?", ndim);
    if (shape[0] <= 0 || (ndim == 2 && shape[1] <= 0))
        return sks_fail(SKS_ESHAPE, "%s: non-positive dimension", name ? name : "?");
    uint64_t n, nb;
    if (sks_mul_u64((uint64_t)shape[0], ndim == 2 ? (uint64_t)shape[1] : 1u, &n))
        return sks_fail(SKS_EOVERFLOW, "%s: element count overflows", name ? name : "?");
    int rc = sks_dtype_nbytes(dt, n, &nb);
    if (rc) return sks_fail(rc, "%s: %s size invalid for %llu elements", name ? name : "?", sks_dtype_name(dt),
                            (unsigned long long)n);
    uint32_t blk = sks_dtype_get(dt)->block;
    if (((ndim == 2 ? shape[1] : shape[0]) % blk) != 0)
        return sks_fail(SKS_ESHAPE, "%s: %s rows of %lld columns are not whole blocks of %u", name ? name : "?",
                        sks_dtype_name(dt), (long long)(ndim == 2 ? shape[1] : shape[0]), blk);
    if (s->present)
        return sks_fail(SKS_EFORMAT, "%s: duplicate tensor for %s layer %d%s", name ? name : "?", sks_role_name(role),
                        layer, expert >= 0 ? " (expert)" : "");
    const char *nm = sks__model_intern(m, name ? name : sks_role_name(role));
    if (!nm) return sks_fail(SKS_ENOMEM, "model: out of memory");
    s->present = 1;
    s->t.name = nm;
    s->t.dtype = dt;
    s->t.ndim = ndim;
    s->t.shape[0] = shape[0];
    s->t.shape[1] = ndim == 2 ? shape[1] : 1;
    s->t.data = data;
    s->t.nbytes = nb;
    s->t.shard = 0;
    s->t.frozen = 0;
    m->order[m->n_order].role = role;
    m->order[m->n_order].layer = layer;
    m->order[m->n_order].expert = expert;
    m->n_order++;
    return 0;
}

int sks_model_set_tensor(sks_model *m, sks_role role, int layer, sks_dtype dt, int ndim,
                         const int64_t shape[2], const void *data, const char *name) {
    if (role < 0 || role >= SKS_ROLE_COUNT || sks_role_is_per_expert(role))
        return sks_fail(SKS_EARG, "bad role %d", (int)role);
    if (sks_role_is_per_layer(role)) {
        if (layer < 0 || layer >= m->arch.n_layers)
            return sks_fail(SKS_ESHAPE, "%s: layer %d out of range [0, %d)", name ? name : sks_role_name(role),
                            layer, m->arch.n_layers);
    } else {
        layer = -1;
    }
    return sks__fill_slot(m, &m->slots[sks__slot_index(m, role, layer)], role, layer, -1, dt, ndim, shape, data, name);
}

int sks_model_set_expert(sks_model *m, sks_role role, int layer, int expert, sks_dtype dt, const int64_t shape[2],
                         const void *data, const char *name) {
    sks__slot *s = sks__xslot(m, role, layer, expert);
    if (!s)
        return sks_fail(SKS_ESHAPE, "%s: %s of layer %d, expert %d: not an expert of this model (%d layers, %d experts)",
                        name ? name : "?", sks_role_name(role), layer, expert, m->arch.n_layers, m->arch.n_experts);
    return sks__fill_slot(m, s, role, layer, expert, dt, 2, shape, data, name);
}

int sks__model_set_fused(sks_model *m, const sks__fused_name *fu, int layer, sks_dtype dt, int ndim,
                         const int64_t shape[2], const uint8_t *data, const char *name) {
    const sks_arch *a = &m->arch;
    const int64_t qd = (int64_t)a->n_heads * a->head_dim, kd = (int64_t)a->n_kv_heads * a->head_dim;
    sks_role roles[3];
    int64_t rows[3];
    int n = fu->kind == SKS__FUSE_QKV ? 3 : 2;
    if (fu->kind == SKS__FUSE_QKV) {
        roles[0] = fu->bias ? SKS_ROLE_BQ : SKS_ROLE_WQ, roles[1] = fu->bias ? SKS_ROLE_BK : SKS_ROLE_WK;
        roles[2] = fu->bias ? SKS_ROLE_BV : SKS_ROLE_WV;
        rows[0] = qd, rows[1] = kd, rows[2] = kd;
    } else {
        roles[0] = SKS_ROLE_W_GATE, roles[1] = SKS_ROLE_W_UP;
        rows[0] = rows[1] = a->d_ffn;
    }
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += rows[i];
    if (shape[0] != total)
        return sks_fail(SKS_ESHAPE, "%s: fused tensor has %lld rows, the architecture needs %lld", name,
                        (long long)shape[0], (long long)total);
    /* bytes per row (2-D) or per element (1-D) */
    uint64_t rb;
    int rc = sks_dtype_nbytes(dt, ndim == 2 ? (uint64_t)shape[1] : 1, &rb);
    if (rc || (ndim == 1 && (dt == SKS_DT_Q8_0 || dt == SKS_DT_Q4_0)))
        return sks_fail(SKS_ESHAPE, "%s: fused tensor of this type cannot be split", name);
    int64_t r0 = 0;
    for (int i = 0; i < n; i++) {
        char nm[320];
        snprintf(nm, sizeof nm, "%s[%s]", name, sks_role_name(roles[i]));
        int64_t sh[2] = {rows[i], ndim == 2 ? shape[1] : 1};
        if ((rc = sks_model_set_tensor(m, roles[i], layer, dt, ndim, sh, data + (uint64_t)r0 * rb, nm))) return rc;
        r0 += rows[i];
    }
    return 0;
}

int sks__model_set_conv1d(sks_model *m, const sks__fused_name *fu, sks_role role, int layer, sks_dtype dt,
                          const int64_t shape[2], const uint8_t *data, const char *name) {
    const sks_arch *a = &m->arch;
    const int64_t qd = (int64_t)a->n_heads * a->head_dim, kd = (int64_t)a->n_kv_heads * a->head_dim;
    const sks_dtype_info *info = sks_dtype_get(dt);
    if (!info || info->block != 1 || !info->to_f32)
        return sks_fail(SKS_EDTYPE, "%s: a Conv1D weight of type %s cannot be read transposed", name, sks_dtype_name(dt));
    sks_role roles[3] = {role, role, role};
    int64_t cols[3] = {shape[1], 0, 0};
    int n = 1;
    if (fu) {
        if (fu->kind != SKS__FUSE_QKV) return sks_fail(SKS_ESHAPE, "%s: only a fused q/k/v Conv1D is split", name);
        roles[0] = SKS_ROLE_WQ, roles[1] = SKS_ROLE_WK, roles[2] = SKS_ROLE_WV;
        cols[0] = qd, cols[1] = kd, cols[2] = kd;
        n = 3;
        if (shape[1] != qd + 2 * kd)
            return sks_fail(SKS_ESHAPE, "%s: fused Conv1D has %lld columns, the architecture needs %lld", name,
                            (long long)shape[1], (long long)(qd + 2 * kd));
    }
    /* the file's own (in, out) shape in messages, not the view's */
    int64_t need[2];
    if (!fu && sks__role_need(a, role, need) && (need[0] != shape[1] || need[1] != shape[0]))
        return sks_fail(SKS_ESHAPE, "%s: Conv1D weight stored (in, out) = [%lld, %lld], the architecture needs [%lld, %lld]",
                        name, (long long)shape[0], (long long)shape[1], (long long)need[1], (long long)need[0]);
    if (fu && shape[0] != a->d_model)
        return sks_fail(SKS_ESHAPE, "%s: fused Conv1D has %lld rows (inputs), the architecture needs %d", name,
                        (long long)shape[0], a->d_model);
    int64_t c0 = 0;
    for (int i = 0; i < n; i++) {
        char nm[320];
        if (fu) snprintf(nm, sizeof nm, "%s[%s]", name, sks_role_name(roles[i]));
        else snprintf(nm, sizeof nm, "%s", name);
        /* the view (out, in) = (columns of this part, stored rows) */
        int64_t sh[2] = {cols[i], shape[0]};
        int rc = sks_model_set_tensor(m, roles[i], layer, dt, 2, sh, data + (size_t)c0 * info->block_bytes, nm);
        if (rc) return rc;
        ((sks_tensor *)sks_model_tensor(m, roles[i], layer))->tstride = shape[1];
        c0 += cols[i];
    }
    return 0;
}

/* Every present tensor has the shape the architecture gives its role; a required one
 * (sks__role_need) is present. */
int sks_model_validate(const sks_model *m) {
    const sks_arch *a = &m->arch;
    int rc = sks_arch_validate(a);
    if (rc) return rc;
    sks_role role;
    int layer;
    if (sks__first_missing(m, &role, &layer))
        return sks_fail(SKS_ENOTFOUND, "%s: missing tensor %s (layer %d) for family %s", m->path, sks_role_name(role),
                        layer, a->family);
    for (size_t i = 0; i < m->n_order; i++) {
        const sks_tensor *t = sks__model_order_tensor(m, i);
        int64_t want[2];
        (void)sks__role_need(a, m->order[i].role, want);
        int64_t tr = t->shape[0], tc = t->ndim == 2 ? t->shape[1] : 1;
        if (tr != want[0] || tc != want[1])
            return sks_fail(SKS_ESHAPE, "%s: tensor %s has shape [%lld, %lld], the architecture needs [%lld, %lld]",
                            m->path, t->name, (long long)tr, (long long)tc, (long long)want[0], (long long)want[1]);
    }
    return 0;
}

int sks__match_tensor_name(const char *name, const sks__name_role *globals, size_t ng, const char *prefix,
                           const sks__name_role *per_layer, size_t nl, sks_role *role, long *layer) {
    *layer = -1;
    for (size_t i = 0; i < ng; i++)
        if (!strcmp(name, globals[i].name)) return *role = globals[i].role, 1;
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl)) return 0;
    const char *p = name + pl;
    if (*p < '0' || *p > '9') return 0;
    long l = 0;
    while (*p >= '0' && *p <= '9') {
        if (l > 10000000) return 0; /* no model has that many layers; stops overflow */
        l = l * 10 + (*p++ - '0');
    }
    if (*p++ != '.') return 0;
    for (size_t i = 0; i < nl; i++) {
        if (!strcmp(p, per_layer[i].name)) {
            *role = per_layer[i].role;
            *layer = l;
            return 1;
        }
    }
    return 0;
}
