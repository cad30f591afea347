/* moe.c - mixture-of-experts tensors in the model view (SPEC section 6).
 *
 * Names read (HF: after "model.layers.<l>."; GGUF: after "blk.<l>."):
 *   router         HF block_sparse_moe.gate.weight (Mixtral), mlp.gate.weight (Qwen, and
 *                  Mixtral under transformers 5); GGUF ffn_gate_inp.weight      (E, d)
 *   expert e       HF block_sparse_moe.experts.<e>.w1 / w3 / w2 .weight (gate / up / down),
 *                  mlp.experts.<e>.gate_proj / up_proj / down_proj .weight
 *   all experts    GGUF ffn_gate_exps / ffn_up_exps / ffn_down_exps .weight (3-D, ne =
 *                  (d, f_e, E) and (f_e, d, E)), ffn_gate_up_exps (gate rows first);
 *                  transformers 5: mlp.experts.gate_up_proj (E, 2 f_e, d), gate rows first,
 *                  and mlp.experts.down_proj (E, d, f_e), with or without ".weight"
 *   shared expert  HF mlp.shared_expert.gate_proj / up_proj / down_proj .weight and
 *                  mlp.shared_expert_gate.weight (1, d); GGUF ffn_gate_shexp, ffn_up_shexp,
 *                  ffn_down_shexp, ffn_gate_inp_shexp (d)
 * A stacked tensor becomes one view per expert into the mapping (expert e's rows are
 * contiguous in every layout above): nothing is copied or converted at open time.
 */
#include "model_internal.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int kind;
    sks_role role;
} sks__moe_entry;

static const sks__moe_entry sks__moe_hf[] = {
    {"block_sparse_moe.gate.weight", SKS__MOE_ROLE, SKS_ROLE_ROUTER},
    {"mlp.gate.weight", SKS__MOE_ROLE, SKS_ROLE_ROUTER},
    {"mlp.shared_expert.gate_proj.weight", SKS__MOE_ROLE, SKS_ROLE_SHEXP_GATE},
    {"mlp.shared_expert.up_proj.weight", SKS__MOE_ROLE, SKS_ROLE_SHEXP_UP},
    {"mlp.shared_expert.down_proj.weight", SKS__MOE_ROLE, SKS_ROLE_SHEXP_DOWN},
    {"mlp.shared_expert_gate.weight", SKS__MOE_ROLE, SKS_ROLE_SHEXP_ROUTER},
    {"mlp.experts.gate_up_proj", SKS__MOE_STACK_GATE_UP, SKS_ROLE_EXP_GATE},
    {"mlp.experts.gate_up_proj.weight", SKS__MOE_STACK_GATE_UP, SKS_ROLE_EXP_GATE},
    {"mlp.experts.down_proj", SKS__MOE_STACK, SKS_ROLE_EXP_DOWN},
    {"mlp.experts.down_proj.weight", SKS__MOE_STACK, SKS_ROLE_EXP_DOWN},
    {"block_sparse_moe.experts.gate_up_proj", SKS__MOE_STACK_GATE_UP, SKS_ROLE_EXP_GATE},
    {"block_sparse_moe.experts.down_proj", SKS__MOE_STACK, SKS_ROLE_EXP_DOWN},
};

static const sks__moe_entry sks__moe_gguf[] = {
    {"ffn_gate_inp.weight", SKS__MOE_ROLE, SKS_ROLE_ROUTER},
    {"ffn_gate_exps.weight", SKS__MOE_STACK, SKS_ROLE_EXP_GATE},
    {"ffn_up_exps.weight", SKS__MOE_STACK, SKS_ROLE_EXP_UP},
    {"ffn_down_exps.weight", SKS__MOE_STACK, SKS_ROLE_EXP_DOWN},
    {"ffn_gate_up_exps.weight", SKS__MOE_STACK_GATE_UP, SKS_ROLE_EXP_GATE},
    {"ffn_gate_shexp.weight", SKS__MOE_ROLE, SKS_ROLE_SHEXP_GATE},
    {"ffn_up_shexp.weight", SKS__MOE_ROLE, SKS_ROLE_SHEXP_UP},
    {"ffn_down_shexp.weight", SKS__MOE_ROLE, SKS_ROLE_SHEXP_DOWN},
    {"ffn_gate_inp_shexp.weight", SKS__MOE_ROLE, SKS_ROLE_SHEXP_ROUTER},
};

/* Per-expert HF names: <dir>.experts.<e>.<part>.weight */
static const struct {
    const char *dir, *part;
    sks_role role;
} sks__moe_hf_expert[] = {
    {"block_sparse_moe.", "w1", SKS_ROLE_EXP_GATE}, {"block_sparse_moe.", "w3", SKS_ROLE_EXP_UP},
    {"block_sparse_moe.", "w2", SKS_ROLE_EXP_DOWN}, {"mlp.", "gate_proj", SKS_ROLE_EXP_GATE},
    {"mlp.", "up_proj", SKS_ROLE_EXP_UP},           {"mlp.", "down_proj", SKS_ROLE_EXP_DOWN},
};

/* A decimal number at *p (at most 8 digits) followed by '.'; advances *p past the dot. */
static int sks__moe_index(const char **p, long *out) {
    const char *q = *p;
    long v = 0;
    int n = 0;
    while (*q >= '0' && *q <= '9' && n < 9) v = v * 10 + (*q++ - '0'), n++;
    if (!n || n > 8 || *q != '.') return 0;
    *out = v;
    *p = q + 1;
    return 1;
}

int sks__moe_match(const sks__family *fam, sks_format fmt, const char *name, sks__moe_name *out) {
    if (!(fam->flags & SKS__FAM_MOE)) return 0;
    const char *prefix = fmt == SKS_FMT_GGUF ? "blk." : fam->hf_prefix;
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl)) return 0;
    const char *p = name + pl;
    long layer;
    if (!sks__moe_index(&p, &layer)) return 0;
    const sks__moe_entry *tab = fmt == SKS_FMT_GGUF ? sks__moe_gguf : sks__moe_hf;
    size_t n = fmt == SKS_FMT_GGUF ? sizeof sks__moe_gguf / sizeof *sks__moe_gguf : sizeof sks__moe_hf / sizeof *sks__moe_hf;
    memset(out, 0, sizeof *out);
    out->layer = layer;
    out->expert = -1;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(p, tab[i].name)) {
            out->kind = tab[i].kind;
            out->role = tab[i].role;
            return 1;
        }
    if (fmt == SKS_FMT_GGUF) return 0;
    for (size_t i = 0; i < sizeof sks__moe_hf_expert / sizeof *sks__moe_hf_expert; i++) {
        size_t dl = strlen(sks__moe_hf_expert[i].dir);
        const char *q = p;
        long e;
        if (strncmp(q, sks__moe_hf_expert[i].dir, dl) || strncmp(q + dl, "experts.", 8)) continue;
        q += dl + 8;
        if (!sks__moe_index(&q, &e)) return 0;
        size_t tl = strlen(sks__moe_hf_expert[i].part);
        if (strncmp(q, sks__moe_hf_expert[i].part, tl) || strcmp(q + tl, ".weight")) continue;
        out->kind = SKS__MOE_EXPERT;
        out->role = sks__moe_hf_expert[i].role;
        out->expert = e;
        return 1;
    }
    return 0;
}

int sks__moe_attach(sks_model *m, const sks__moe_name *nm, sks_dtype dt, int ndim, const int64_t *shape,
                    const uint8_t *data, const char *name, int shard) {
    const sks_arch *a = sks_model_arch(m);
    if (nm->layer < 0 || nm->layer >= a->n_layers)
        return sks_fail(SKS_ECONFIG, "%s: layer %ld, but the model has %d layers", name, nm->layer, a->n_layers);
    if (!sks_arch_layer_moe(a, (int)nm->layer))
        return sks_fail(SKS_ECONFIG, "%s: an expert tensor in layer %ld, which the configuration makes dense", name,
                        nm->layer);
    int rc;
    size_t n0 = m->n_order;
    if (nm->kind == SKS__MOE_ROLE) {
        int64_t sh[2] = {shape[0], ndim == 2 ? shape[1] : 1};
        int nd = ndim;
        if (nm->role == SKS_ROLE_SHEXP_ROUTER && ndim == 2 && shape[0] == 1) sh[0] = shape[1], sh[1] = 1, nd = 1;
        if (nd != 1 && nd != 2) return sks_fail(SKS_ESHAPE, "%s: %d dimensions (want 1 or 2)", name, ndim);
        rc = sks_model_set_tensor(m, nm->role, (int)nm->layer, dt, nd, sh, data, name);
    } else if (nm->kind == SKS__MOE_EXPERT) {
        if (ndim != 2) return sks_fail(SKS_ESHAPE, "%s: %d dimensions (an expert's matrix has 2)", name, ndim);
        rc = sks_model_set_expert(m, nm->role, (int)nm->layer, (int)nm->expert, dt, shape, data, name);
    } else {
        /* (E, rows, cols): expert e's rows [e rows, (e + 1) rows); gate_up: gate first */
        if (ndim != 3) return sks_fail(SKS_ESHAPE, "%s: %d dimensions (stacked experts have 3)", name, ndim);
        if (shape[0] != a->n_experts)
            return sks_fail(SKS_ESHAPE, "%s: %lld experts stacked, the configuration says %d", name, (long long)shape[0],
                            a->n_experts);
        int parts = nm->kind == SKS__MOE_STACK_GATE_UP ? 2 : 1;
        if (shape[1] % parts)
            return sks_fail(SKS_ESHAPE, "%s: %lld rows do not split into gate and up halves", name, (long long)shape[1]);
        uint64_t rb;
        if ((rc = sks_dtype_nbytes(dt, (uint64_t)shape[2], &rb)))
            return sks_fail(SKS_ESHAPE, "%s: rows of %lld %s values are not whole blocks", name, (long long)shape[2],
                            sks_dtype_name(dt));
        int64_t rows = shape[1] / parts, sh[2] = {rows, shape[2]};
        rc = 0;
        for (int64_t e = 0; e < shape[0] && !rc; e++)
            for (int k = 0; k < parts && !rc; k++) {
                char buf[320];
                snprintf(buf, sizeof buf, "%s[%lld]%s", name, (long long)e,
                         parts == 2 ? (k ? "[up]" : "[gate]") : "");
                sks_role role = parts == 2 ? (k ? SKS_ROLE_EXP_UP : SKS_ROLE_EXP_GATE) : nm->role;
                const uint8_t *p = data + ((uint64_t)e * (uint64_t)shape[1] + (uint64_t)k * (uint64_t)rows) * rb;
                rc = sks_model_set_expert(m, role, (int)nm->layer, (int)e, dt, sh, p, buf);
            }
    }
    if (rc) return rc;
    for (size_t k = n0; k < m->n_order; k++) ((sks_tensor *)sks__model_order_tensor(m, k))->shard = shard;
    return 0;
}
