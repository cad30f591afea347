/* test-moe.c - mixture-of-experts families (Mixtral, Qwen2-MoE, Qwen3-MoE) against
 * transformers, and the routing rule.
 *
 * test/data/families/<family>/ holds a tiny random MoE checkpoint made by
 * scripts/make-moe-refs.py with transformers (save_pretrained, bf16), its experts under
 * the per-expert names of published checkpoints (model.safetensors) and as
 * save_pretrained wrote them (fused/), the GGUF from llama.cpp's convert_hf_to_gguf.py,
 * and ref.json: transformers' eager f32 outputs on the bf16 weights for a 24-token
 * prompt (alpha_0 per layer and head, max |h| of the embeddings and every layer's output,
 * the logits at the first and last positions) and, per MoE layer, the experts each
 * token was routed to with their weights. Every way of reading a family must match:
 * alpha_0 within 1e-4, hidden maxima 1e-4 relative, logits 1e-4 of the row's largest,
 * the routed experts exactly and their weights within 1e-5.
 * moe-ties.json (ties.json of the script): torch.topk's choice on router logits with
 * exact ties.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sks_test.h"
#include "analysis/sks_forward.h"
#include "analysis/sks_moe.h"
#include "analysis/sks_quantrisk.h"
#include "analysis/sks_spikes.h"
#include "analysis/sks_synth.h"

#include <lapacke.h>

#define DATA SKS_SOURCE_DIR "/test/data/families/"

typedef struct {
    sks_test_cap b; /* alpha_0 and block maxima (sks_test_on_res / _on_probs) */
    int k, T;
    int *experts;   /* (L, T, k), -1 where the layer is dense */
    float *weights; /* (L, T, k) */
} cap;

static int on_route(void *ud, int layer, const int *ex, const float *w, const float *logits, int T, int k, int E) {
    cap *c = ud;
    (void)logits;
    (void)E;
    assert_int_equal(k, c->k);
    memcpy(c->experts + (size_t)layer * c->T * k, ex, (size_t)T * k * sizeof(int));
    memcpy(c->weights + (size_t)layer * c->T * k, w, (size_t)T * k * sizeof(float));
    return 0;
}

/* A folder with fam's per-expert weights and config.classic.json as config.json. */
static char *classic_dir(const char *fam) {
    static const char *const names[][2] = {{"model.safetensors", "model.safetensors"}, {"config.classic.json", "config.json"}};
    return sks_test_family_links(fam, 2, names);
}


/* how: "hf" (per-expert names), "fused" (save_pretrained's stacked file), "classic", "gguf" */
static sks_model *open_how(const char *fam, const char *how, char **tmp) {
    char p[600];
    *tmp = NULL;
    if (!strcmp(how, "gguf")) snprintf(p, sizeof p, DATA "%s/model.gguf", fam);
    else if (!strcmp(how, "fused")) snprintf(p, sizeof p, DATA "%s/fused", fam);
    else if (!strcmp(how, "classic")) snprintf(p, sizeof p, "%s", (*tmp = classic_dir(fam)));
    else snprintf(p, sizeof p, DATA "%s", fam);
    sks_model *m = NULL;
    if (sks_model_open(p, &m)) fail_msg("%s (%s): %s", fam, how, sks_last_error());
    return m;
}

static double num(json_t *a, size_t i) { return json_number_value(json_array_get(a, i)); }

/* The transformers references are made on a machine with torch (scripts/make-moe-refs.py);
 * until a family's folder is committed its checks are skipped, saying so. */
static int have_refs(const char *fam) {
    char p[512];
    snprintf(p, sizeof p, DATA "%s/ref.json", fam);
    if (access(p, R_OK) == 0) return 1;
    fprintf(stderr, "SKIPPED: %s not made yet (scripts/make-moe-refs.py)\n", p);
    return 0;
}

static void check_moe(const char *fam, const char *want_family, const char *const *hows, int n_hows) {
    if (!have_refs(fam)) skip();
    int T;
    int32_t *tok;
    json_t *ref = sks_test_family_ref(fam, &tok, &T);
    for (int v = 0; v < n_hows; v++) {
        char *tmp;
        sks_model *m = open_how(fam, hows[v], &tmp);
        const sks_arch *a = sks_model_arch(m);
        assert_string_equal(a->family, want_family);
        assert_true(a->n_experts > 0);
        int L = a->n_layers, k = a->n_experts_used;
        cap c = {sks_test_cap_new(a), k, T, malloc((size_t)L * T * k * sizeof(int)), calloc((size_t)L * T * k, sizeof(float))};
        for (size_t i = 0; i < (size_t)L * T * k; i++) c.experts[i] = -1;
        sks_fwd_hooks hk = sks_test_cap_hooks(&c);
        hk.on_route = on_route;
        double w[3], ww = 0;
        sks_test_run_family_ref(ref, m, tok, T, &hk, &c.b, fam, hows[v], w);
        /* routing: the same experts in the same order, weights within 1e-5 */
        json_t *jr = json_object_get(ref, "routes");
        int n_moe = 0;
        for (int l = 0; l < L; l++) {
            char key[16];
            snprintf(key, sizeof key, "%d", l);
            json_t *rl = json_object_get(jr, key);
            assert_int_equal(!!rl, sks_arch_layer_moe(a, l));
            if (!rl) continue;
            n_moe++;
            json_t *je = json_object_get(rl, "experts"), *jw = json_object_get(rl, "weights");
            assert_int_equal((int)json_array_size(je), T);
            for (int t = 0; t < T; t++)
                for (int j = 0; j < k; j++) {
                    int want = (int)json_integer_value(json_array_get(json_array_get(je, (size_t)t), (size_t)j));
                    int got = c.experts[((size_t)l * T + t) * k + j];
                    if (got != want) fail_msg("%s (%s) layer %d token %d: expert %d is %d, want %d", fam, hows[v], l, t, j, got, want);
                    double err = fabs(c.weights[((size_t)l * T + t) * k + j] - num(json_array_get(jw, (size_t)t), (size_t)j));
                    ww = fmax(ww, err);
                    if (!(err <= 1e-5)) fail_msg("%s (%s) layer %d token %d: weight %d off by %.2g", fam, hows[v], l, t, j, err);
                }
        }
        assert_true(n_moe > 0);
        fprintf(stderr, "%-14s %-8s alpha0 %.1e  hidden max %.1e rel  logits %.1e of the row max  route weights %.1e\n",
                fam, hows[v], w[0], w[1], w[2], ww);
        sks_test_cap_free(&c.b);
        free(c.experts);
        free(c.weights);
        sks_model_close(m);
        sks_test_rm_tree(tmp);
        free(tmp);
    }
    free(tok);
    json_decref(ref);
}

static const char *const all_ways[] = {"hf", "fused", "classic", "gguf"};

/* the MoE families against their references, in all four ways */
typedef struct {
    const char *test, *fam;
} moe_case;
static const moe_case k_moe[] = {{"test_mixtral", "mixtral"}, {"test_qwen2moe", "qwen2moe"}, {"test_qwen3moe", "qwen3moe"}};

static void test_moe_family(void **s) {
    const moe_case *k = *s;
    check_moe(k->fam, k->fam, all_ways, 4);
}
/* dense layers by decoder_sparse_step and mlp_only_layers (HF only: llama.cpp's qwen3moe
 * has no dense FFN tensors) */
static void test_qwen3moe_mixed(void **s) {
    (void)s;
    if (!have_refs("qwen3moe-mixed")) skip();
    check_moe("qwen3moe-mixed", "qwen3moe", all_ways, 3);
    char *tmp;
    sks_model *m = open_how("qwen3moe-mixed", "hf", &tmp);
    const sks_arch *a = sks_model_arch(m);
    assert_int_equal(a->n_layers, 4);
    int want[4] = {0, 1, 0, 0};
    for (int l = 0; l < 4; l++) assert_int_equal(sks_arch_layer_moe(a, l), want[l]);
    assert_non_null(sks_model_tensor(m, SKS_ROLE_W_GATE, 0));
    assert_null(sks_model_tensor(m, SKS_ROLE_ROUTER, 0));
    assert_non_null(sks_model_tensor(m, SKS_ROLE_ROUTER, 1));
    sks_model_close(m);
}

/* torch.topk on exact ties (moe-ties.json): every pick has the logit and weight of
 * torch's pick of the same rank. Which of several tied experts torch returns is not
 * specified by torch.topk (on torch 2.11's CPU path it is not the lower index: all 8
 * equal, k = 2 gives 6, 5); sinkscope's rule is the lower index (test_tie_rule), so on
 * an exact tie the two may run different (equally weighted) experts. */
static void test_ties(void **s) {
    (void)s;
    json_error_t e;
    if (access(DATA "moe-ties.json", R_OK) != 0) {
        fprintf(stderr, "SKIPPED: moe-ties.json not made yet (scripts/make-moe-refs.py)\n");
        skip();
    }
    json_t *r = json_load_file(DATA "moe-ties.json", 0, &e);
    if (!r) fail_msg("moe-ties.json: %s", e.text);
    const char *key;
    json_t *c;
    int n_cases = 0, n_other = 0;
    json_object_foreach(r, key, c) {
        if (!json_is_object(c)) continue;
        int k = (int)json_integer_value(json_object_get(c, "k")), E = (int)json_integer_value(json_object_get(c, "n_experts"));
        json_t *jl = json_object_get(c, "logits");
        for (size_t i = 0; i < json_array_size(jl); i++) {
            float z[64];
            int ex[8];
            float w[8], wn[8];
            for (int j = 0; j < E; j++) z[j] = (float)num(json_array_get(jl, i), (size_t)j);
            sks_moe_topk(z, E, k, 0, ex, w);
            sks_moe_topk(z, E, k, 1, ex, wn);
            int same = 1;
            for (int j = 0; j < k; j++) {
                int want = (int)json_integer_value(json_array_get(json_array_get(json_object_get(c, "experts"), i), (size_t)j));
                assert_true(want >= 0 && want < E);
                /* the j-th pick has torch's logit (an expert of the same rank); which of
                 * several tied experts it is, torch.topk leaves unspecified */
                if (z[ex[j]] != z[want]) fail_msg("ties %s row %zu: pick %d is %d (logit %g), torch %d (logit %g)", key, i, j,
                                                  ex[j], z[ex[j]], want, z[want]);
                same &= ex[j] == want;
                assert_true(fabs(w[j] - num(json_array_get(json_object_get(c, "weights_raw"), i), (size_t)j)) < 1e-6);
                assert_true(fabs(wn[j] - num(json_array_get(json_object_get(c, "weights_renorm"), i), (size_t)j)) < 1e-6);
            }
            if (!same) {
                n_other++;
                fprintf(stderr, "ties %s row %zu: sinkscope picks", key, i);
                for (int j = 0; j < k; j++) fprintf(stderr, " %d", ex[j]);
                fprintf(stderr, ", torch.topk");
                for (int j = 0; j < k; j++)
                    fprintf(stderr, " %d",
                            (int)json_integer_value(json_array_get(json_array_get(json_object_get(c, "experts"), i), (size_t)j)));
                fprintf(stderr, " (the same logits and weights)\n");
            }
            n_cases++;
        }
    }
    assert_true(n_cases >= 4);
    fprintf(stderr, "ties: %d rows, %d broken differently by torch.topk (%s)\n", n_cases, n_other,
            json_string_value(json_object_get(r, "torch")) ? json_string_value(json_object_get(r, "torch")) : "?");
    json_decref(r);
}

/* the tie rule on its own: exact ties go to the lower expert index, in order, and tied
 * experts get equal weights */
static void test_tie_rule(void **s) {
    (void)s;
    const float eq[8] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    int ex[3];
    float w[3];
    sks_moe_topk(eq, 8, 2, 0, ex, w);
    assert_int_equal(ex[0], 0);
    assert_int_equal(ex[1], 1);
    assert_true(w[0] == w[1] && fabs(w[0] - 0.125) < 1e-7);
    sks_moe_topk(eq, 8, 2, 1, ex, w);
    assert_true(w[0] == 0.5f && w[1] == 0.5f);
    /* a tie across the top-k boundary: experts 1 and 2 tie for second place */
    const float z[4] = {1.0f, 0.25f, 0.25f, -1.0f};
    sks_moe_topk(z, 4, 2, 1, ex, w);
    assert_int_equal(ex[0], 0);
    assert_int_equal(ex[1], 1);
    /* three-way tie for the last of k = 3 */
    const float z3[8] = {0.0f, 1.0f, 0.5f, 0.5f, 0.5f, -2.0f, 1.0f, 0.25f};
    sks_moe_topk(z3, 8, 3, 0, ex, w);
    assert_int_equal(ex[0], 1);
    assert_int_equal(ex[1], 6);
    assert_int_equal(ex[2], 2);
    assert_true(w[0] == w[1]);
}

/* ---- a memory model: the routed forward against every expert computed densely --------- */

#define MD 16
#define MF 8
#define ME 4
#define MK 2
#define MV 32
#define ML 2
#define MT 7

static float frand(uint64_t *st, double sd) { return (float)(sks_test_rng_gauss(st) * sd); }

/* f64 reference of the MoE FFN on x: all experts evaluated, then the top-k kept. */
static void ref_moe(const float *R, const float *G, const float *U, const float *Dn, const float *x, int norm, double *y) {
    double z[ME], p[ME], mx = -1e300, sum = 0;
    for (int e = 0; e < ME; e++) {
        z[e] = 0;
        for (int j = 0; j < MD; j++) z[e] += (double)R[e * MD + j] * x[j];
        mx = fmax(mx, z[e]);
    }
    for (int e = 0; e < ME; e++) sum += (p[e] = exp(z[e] - mx));
    int sel[MK];
    double sw = 0;
    for (int j = 0; j < MK; j++) {
        int b = -1;
        for (int e = 0; e < ME; e++) {
            int t = 0;
            for (int i = 0; i < j; i++) t |= sel[i] == e;
            if (!t && (b < 0 || z[e] > z[b])) b = e;
        }
        sel[j] = b;
        sw += p[b] / sum;
    }
    for (int c = 0; c < MD; c++) y[c] = 0;
    for (int j = 0; j < MK; j++) {
        int e = sel[j];
        double w = p[e] / sum / (norm ? sw : 1), h[MF];
        for (int i = 0; i < MF; i++) {
            double g = 0, u = 0;
            for (int c = 0; c < MD; c++) g += (double)G[(e * MF + i) * MD + c] * x[c], u += (double)U[(e * MF + i) * MD + c] * x[c];
            h[i] = g / (1 + exp(-g)) * u;
        }
        for (int c = 0; c < MD; c++) {
            double o = 0;
            for (int i = 0; i < MF; i++) o += (double)Dn[(e * MD + c) * MF + i] * h[i];
            y[c] += w * o;
        }
    }
}

/* The memory model's weights (static: the model borrows them); SG.. the shared expert. */
static float emb[MV * MD], head[MV * MD], nrm[MD], wq[ML][MD * MD], wk[ML][MD * MD], wv[ML][MD * MD], wo[ML][MD * MD],
    R[ML * ME * MD], G[ML * ME * MF * MD], U[ML * ME * MF * MD], Dn[ML * ME * MD * MF], SG[ML * MF * MD],
    SU[ML * MF * MD], SD[ML * MD * MF], SW[ML * MD];

typedef struct {
    const float *R, *G, *U, *Dn;
    int norm, shared;
    double maxerr;
    int calls;
} dense_chk;

/* y += g W_down (SiLU(W_gate x) * W_up x) of one (MF, MD) FFN, f64 */
static void add_ffn(const float *Gm, const float *Um, const float *Dm, const float *x, double g, double *y) {
    for (int i = 0; i < MF; i++) {
        double zg = 0, zu = 0;
        for (int c = 0; c < MD; c++) zg += (double)Gm[i * MD + c] * x[c], zu += (double)Um[i * MD + c] * x[c];
        double h = zg / (1 + exp(-zg)) * zu;
        for (int c = 0; c < MD; c++) y[c] += g * Dm[c * MF + i] * h;
    }
}

static const float *g_x;
static int keep_in(void *ud, int layer, const float *x, int T, int d) {
    (void)ud;
    (void)layer;
    (void)T;
    (void)d;
    g_x = x;
    return 0;
}

static int cmp_out(void *ud, int layer, const float *y, int T, int d) {
    dense_chk *c = ud;
    const size_t off = (size_t)layer * ME * MF * MD;
    for (int t = 0; t < T; t++) {
        double yr[MD];
        ref_moe(c->R + (size_t)layer * ME * MD, c->G + off, c->U + off, c->Dn + off, g_x + (size_t)t * d, c->norm, yr);
        if (c->shared) {
            const float *x = g_x + (size_t)t * d;
            double z = 0;
            for (int j = 0; j < MD; j++) z += (double)SW[layer * MD + j] * x[j];
            const size_t so = (size_t)layer * MF * MD;
            add_ffn(SG + so, SU + so, SD + so, x, 1 / (1 + exp(-z)), yr);
        }
        double sc = 0;
        for (int j = 0; j < d; j++) sc = fmax(sc, fabs(yr[j]));
        for (int j = 0; j < d; j++) c->maxerr = fmax(c->maxerr, fabs(y[(size_t)t * d + j] - yr[j]) / sc);
    }
    c->calls++;
    return 0;
}


static sks_model *memory_model_sh(int norm, uint64_t seed, int shared) {
    sks_arch a;
    memset(&a, 0, sizeof a);
    assert_int_equal(sks_arch_set_family(&a, "qwen3moe"), 0);
    a.has_qk_norm = 0;
    a.n_layers = ML, a.d_model = MD, a.d_ffn = MF, a.n_heads = 2, a.n_kv_heads = 2, a.head_dim = MD / 2;
    a.vocab_size = MV, a.norm_eps = 1e-6, a.rope_theta = 10000;
    a.n_experts = ME, a.n_experts_used = MK, a.d_ffn_expert = MF, a.moe_norm_topk = norm;
    a.d_ffn_shared = shared ? MF : 0;
    sks_model *m = NULL;
    assert_int_equal(sks_model_new_memory(&a, &m), 0);
    uint64_t st = seed;
    for (int i = 0; i < MV * MD; i++) emb[i] = frand(&st, 1), head[i] = frand(&st, 0.3);
    for (int i = 0; i < MD; i++) nrm[i] = 1;
    for (size_t i = 0; i < sizeof R / sizeof *R; i++) R[i] = frand(&st, 0.5);
    for (size_t i = 0; i < sizeof G / sizeof *G; i++) G[i] = frand(&st, 0.4), U[i] = frand(&st, 0.4), Dn[i] = frand(&st, 0.4);
    for (size_t i = 0; i < sizeof SG / sizeof *SG; i++) SG[i] = frand(&st, 0.4), SU[i] = frand(&st, 0.4), SD[i] = frand(&st, 0.4);
    for (size_t i = 0; i < sizeof SW / sizeof *SW; i++) SW[i] = frand(&st, 0.3);
    int64_t sv[2] = {MV, MD}, sn[2] = {MD, 1}, sq[2] = {MD, MD}, sr[2] = {ME, MD}, sg[2] = {MF, MD}, sd[2] = {MD, MF};
    assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_EMBED, -1, SKS_DT_F32, 2, sv, emb, NULL), 0);
    assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_LM_HEAD, -1, SKS_DT_F32, 2, sv, head, NULL), 0);
    assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_FINAL_NORM, -1, SKS_DT_F32, 1, sn, nrm, NULL), 0);
    for (int l = 0; l < ML; l++) {
        for (int i = 0; i < MD * MD; i++)
            wq[l][i] = frand(&st, 0.3), wk[l][i] = frand(&st, 0.3), wv[l][i] = frand(&st, 0.3), wo[l][i] = frand(&st, 0.3);
        assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_ATTN_NORM, l, SKS_DT_F32, 1, sn, nrm, NULL), 0);
        assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_FFN_NORM, l, SKS_DT_F32, 1, sn, nrm, NULL), 0);
        assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_WQ, l, SKS_DT_F32, 2, sq, wq[l], NULL), 0);
        assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_WK, l, SKS_DT_F32, 2, sq, wk[l], NULL), 0);
        assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_WV, l, SKS_DT_F32, 2, sq, wv[l], NULL), 0);
        assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_WO, l, SKS_DT_F32, 2, sq, wo[l], NULL), 0);
        assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_ROUTER, l, SKS_DT_F32, 2, sr, R + (size_t)l * ME * MD, NULL), 0);
        if (shared) {
            const size_t so = (size_t)l * MF * MD;
            int64_t sw[2] = {MD, 1};
            assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_SHEXP_GATE, l, SKS_DT_F32, 2, sg, SG + so, NULL), 0);
            assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_SHEXP_UP, l, SKS_DT_F32, 2, sg, SU + so, NULL), 0);
            assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_SHEXP_DOWN, l, SKS_DT_F32, 2, sd, SD + so, NULL), 0);
            assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_SHEXP_ROUTER, l, SKS_DT_F32, 1, sw, SW + (size_t)l * MD, NULL), 0);
        }
        for (int e = 0; e < ME; e++) {
            size_t o = ((size_t)l * ME + e) * MF * MD;
            assert_int_equal(sks_model_set_expert(m, SKS_ROLE_EXP_GATE, l, e, SKS_DT_F32, sg, G + o, NULL), 0);
            assert_int_equal(sks_model_set_expert(m, SKS_ROLE_EXP_UP, l, e, SKS_DT_F32, sg, U + o, NULL), 0);
            assert_int_equal(sks_model_set_expert(m, SKS_ROLE_EXP_DOWN, l, e, SKS_DT_F32, sd, Dn + o, NULL), 0);
        }
    }
    assert_int_equal(sks_model_validate(m), 0);
    return m;
}

static const int32_t mtok[MT] = {1, 5, 9, 3, 30, 17, 2};

static void test_memory_model(void **s) {
    (void)s;
    for (int v = 0; v < 3; v++) {
        const int norm = v == 1, shared = v == 2; /* Qwen (raw weights), Mixtral, Qwen2-MoE's shared expert */
        sks_model *m = memory_model_sh(norm, 5 + (uint64_t)v, shared);
        dense_chk c = {R, G, U, Dn, norm, shared, 0, 0};
        sks_fwd_hooks hk = {0};
        hk.ud = &c;
        hk.on_ffn_in = keep_in;
        hk.on_ffn_out = cmp_out;
        sks_forward *f = NULL;
        assert_int_equal(sks_forward_new(m, MT, &f), 0);
        assert_int_equal(sks_forward_run(f, mtok, MT, SKS_FWD_CAUSAL, &hk, NULL, 0), 0);
        assert_int_equal(c.calls, ML);
        if (!(c.maxerr < 1e-5)) fail_msg("routed MoE FFN vs the dense f64 reference: %.2g", c.maxerr);
        fprintf(stderr, "memory model (norm_topk %d, shared %d): routed FFN vs dense f64 %.1e of the row max\n", norm,
                shared, c.maxerr);
        sks_forward_free(f);
        sks_model_close(m);
    }
}

/* S_k of one expert (or w-weighted sum of several), dense f64 (d, d): 1/2 (G^T diag(D_k) U + U^T diag(D_k) G) */
static void dense_sk(int layer, const int *ex, const double *w, int n, int k, double *S) {
    memset(S, 0, sizeof(double) * MD * MD);
    for (int j = 0; j < n; j++) {
        size_t o = ((size_t)layer * ME + ex[j]) * MF * MD;
        for (int r = 0; r < MF; r++) {
            double dk = w[j] * Dn[o + (size_t)k * MF + r];
            for (int a = 0; a < MD; a++)
                for (int b = 0; b < MD; b++)
                    S[a * MD + b] += 0.5 * dk * ((double)G[o + (size_t)r * MD + a] * U[o + (size_t)r * MD + b] +
                                                 (double)U[o + (size_t)r * MD + a] * G[o + (size_t)r * MD + b]);
        }
    }
}

/* the eigenvalue of largest |.| (LAPACK) */
static double dense_lambda_star(double *S) {
    double w[MD];
    assert_int_equal(LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'N', 'U', MD, S, MD, w), 0);
    double best = 0;
    for (int i = 0; i < MD; i++)
        if (fabs(w[i]) > fabs(best)) best = w[i];
    return best;
}

/* the MoE amplifier: every expert's S_k^(e) and the active form against dense LAPACK,
 * the quadratic prediction against the forward pass, the shares */
static void spikes_moe(int shared);
static void test_spikes_moe(void **s) {
    (void)s;
    spikes_moe(0);
    spikes_moe(1);
}

/* A spikes context on the memory model (Mixtral's normalization) after the forward over
 * mtok: rank 3, the top 2 of the screen, no first-token map. */
static sks_spikes *moe_spikes_ctx(int shared, sks_model **m) {
    *m = memory_model_sh(1, 11, shared);
    sks_spikes_opts o;
    sks_spikes_opts_default(&o);
    o.rank = 3;
    o.top_frob = 2;
    o.first_token_map = 0;
    sks_spikes *sp = NULL;
    assert_int_equal(sks_spikes_new(*m, &o, &sp), 0);
    assert_int_equal(sks_spikes_forward(sp, mtok, MT), 0);
    return sp;
}

static void spikes_moe(int shared) {
    sks_model *m;
    sks_spikes *sp = moe_spikes_ctx(shared, &m);
    const int layer = 1, ch = 3, tok = 4;
    sks_spikes_layer_result r;
    if (sks_spikes_layer(sp, layer, &ch, NULL, &tok, 1, &r)) fail_msg("%s", sks_last_error());
    assert_non_null(r.moe);
    const sks_spikes_moe *M = r.moe;
    assert_int_equal(M->token, tok);
    assert_int_equal(M->n_per_expert, ME + shared);
    assert_int_equal(M->has_shared, shared);
    /* the router's choice at the token */
    const float *fo, *fin = sks_spikes_ffn_io(sp, layer, &fo, NULL);
    int ex[MK];
    float wf[MK], ws[MD * 4];
    assert_int_equal(sks_moe_route(m, layer, fin + (size_t)tok * MD, 1, ex, wf, NULL, ws, MD * 4), 0);
    for (int j = 0; j < MK; j++) assert_int_equal(M->experts[j], ex[j]), assert_true(fabs(M->weights[j] - wf[j]) < 1e-7);
    double S[MD * MD], w1 = 1;
    /* every expert */
    for (int e = 0; e < ME; e++) {
        const sks_spikes_layer_result *P = &M->per_expert[e];
        assert_int_equal(P->channels[0].channel, ch);
        dense_sk(layer, &e, &w1, 1, ch, S);
        double want = dense_lambda_star(S), got = P->channels[0].eigenvalues[0];
        if (!(fabs(got - want) <= 1e-8 * fabs(want))) fail_msg("expert %d lambda* %.10g, LAPACK %.10g", e, got, want);
        /* the screen of every channel: trace of S_k^(e) */
        for (int k = 0; k < MD; k++) {
            dense_sk(layer, &e, &w1, 1, k, S);
            double tr = 0;
            for (int a = 0; a < MD; a++) tr += S[a * MD + a];
            assert_true(fabs(P->trace[k] - tr) <= 1e-9 * (1 + fabs(tr)));
        }
    }
    /* the active form */
    double w[MK];
    for (int j = 0; j < MK; j++) w[j] = M->weights[j];
    dense_sk(layer, M->experts, w, MK, ch, S);
    if (shared) {
        /* + g S_k^(shared), g = sigmoid(w_sg . x) */
        const float *x = fin + (size_t)tok * MD;
        double z = 0;
        for (int j = 0; j < MD; j++) z += (double)SW[layer * MD + j] * x[j];
        double g = 1 / (1 + exp(-z));
        assert_true(fabs(M->shared_gate - g) < 1e-6);
        const size_t so = (size_t)layer * MF * MD;
        for (int r = 0; r < MF; r++) {
            double dk = g * SD[so + (size_t)ch * MF + r];
            for (int a = 0; a < MD; a++)
                for (int b = 0; b < MD; b++)
                    S[a * MD + b] += 0.5 * dk * ((double)SG[so + (size_t)r * MD + a] * SU[so + (size_t)r * MD + b] +
                                                 (double)SU[so + (size_t)r * MD + a] * SG[so + (size_t)r * MD + b]);
        }
    }
    double want = dense_lambda_star(S);
    const sks_spike_channel *c = &r.channels[0];
    assert_int_equal(c->channel, ch);
    assert_int_equal(c->token, tok);
    if (!(fabs(c->eigenvalues[0] - want) <= 1e-6 * fabs(want)))
        fail_msg("active form lambda* %.10g, LAPACK %.10g", c->eigenvalues[0], want);
    /* its output is the layer's (no shared expert): true_out against the forward, the
     * shares adding up to 1 */
    double y = fo[(size_t)tok * MD + ch];
    assert_true(fabs(c->true_out - y) <= 1e-5 * fabs(y));
    assert_true(fabs(c->true_out_fwd - y) == 0);
    double sum = 0;
    for (int j = 0; j < MK + shared; j++) sum += M->share[j];
    assert_true(fabs(sum - 1) < 1e-5);
    fprintf(stderr, "active form%s: lambda* %.4g (LAPACK %.4g), x^T S x %.4g, true %.4g, shares %.3f %.3f%s\n",
            shared ? " with the shared expert" : "", c->eigenvalues[0], want, c->quad_pred, c->true_out, M->share[0],
            M->share[1], shared ? " + shared" : "");
    sks_spikes_layer_result_free(&r);
    sks_spikes_free(sp);
    sks_model_close(m);
}

/* a model missing one expert is refused, naming the role and layer */
static void test_missing_expert(void **s) {
    (void)s;
    sks_arch a;
    memset(&a, 0, sizeof a);
    assert_int_equal(sks_arch_set_family(&a, "mixtral"), 0);
    a.n_layers = 1, a.d_model = 8, a.d_ffn = 4, a.n_heads = 2, a.n_kv_heads = 2, a.head_dim = 4, a.vocab_size = 4;
    a.norm_eps = 1e-6, a.rope_theta = 1e4, a.n_experts = 2, a.n_experts_used = 1, a.d_ffn_expert = 4;
    sks_model *m = NULL;
    assert_int_equal(sks_model_new_memory(&a, &m), 0);
    static float z[64];
    int64_t s8[2] = {4, 8}, sn[2] = {8, 1}, sq[2] = {8, 8}, sr[2] = {2, 8}, sd[2] = {8, 4};
    assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_EMBED, -1, SKS_DT_F32, 2, s8, z, NULL), 0);
    assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_LM_HEAD, -1, SKS_DT_F32, 2, s8, z, NULL), 0);
    assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_FINAL_NORM, -1, SKS_DT_F32, 1, sn, z, NULL), 0);
    assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_ATTN_NORM, 0, SKS_DT_F32, 1, sn, z, NULL), 0);
    assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_FFN_NORM, 0, SKS_DT_F32, 1, sn, z, NULL), 0);
    sks_role r[4] = {SKS_ROLE_WQ, SKS_ROLE_WK, SKS_ROLE_WV, SKS_ROLE_WO};
    for (int i = 0; i < 4; i++) assert_int_equal(sks_model_set_tensor(m, r[i], 0, SKS_DT_F32, 2, sq, z, NULL), 0);
    assert_int_equal(sks_model_set_tensor(m, SKS_ROLE_ROUTER, 0, SKS_DT_F32, 2, sr, z, NULL), 0);
    for (int e = 0; e < 2; e++) {
        assert_int_equal(sks_model_set_expert(m, SKS_ROLE_EXP_GATE, 0, e, SKS_DT_F32, s8, z, NULL), 0);
        assert_int_equal(sks_model_set_expert(m, SKS_ROLE_EXP_DOWN, 0, e, SKS_DT_F32, sd, z, NULL), 0);
        if (e == 0) assert_int_equal(sks_model_set_expert(m, SKS_ROLE_EXP_UP, 0, e, SKS_DT_F32, s8, z, NULL), 0);
    }
    assert_int_equal(sks_model_validate(m), SKS_ENOTFOUND);
    assert_non_null(strstr(sks_last_error(), "exp_up"));
    /* an expert index past E is refused */
    assert_int_equal(sks_model_set_expert(m, SKS_ROLE_EXP_UP, 0, 2, SKS_DT_F32, s8, z, NULL), SKS_ESHAPE);
    sks_model_close(m);
}

/* ---- the same planted model in every layout the loader reads -------------------------- */

/* dir/model.safetensors in transformers 5's layout from the per-expert model m: the router
 * as mlp.gate.weight, mlp.experts.gate_up_proj (E, 2f, d) with the gate rows first,
 * mlp.experts.down_proj (E, d, f); every other tensor under its own name. f32. */
/* The HF name of a memory model's tensor (its names are the role names): Qwen2-MoE's. */
static void qwen_name(sks_role role, int layer, int expert, char *nm, size_t n) {
    static const char *const per[SKS_ROLE_COUNT] = {
        [SKS_ROLE_ATTN_NORM] = "input_layernorm.weight", [SKS_ROLE_FFN_NORM] = "post_attention_layernorm.weight",
        [SKS_ROLE_WQ] = "self_attn.q_proj.weight", [SKS_ROLE_WK] = "self_attn.k_proj.weight",
        [SKS_ROLE_WV] = "self_attn.v_proj.weight", [SKS_ROLE_WO] = "self_attn.o_proj.weight",
        [SKS_ROLE_ROUTER] = "mlp.gate.weight", [SKS_ROLE_SHEXP_GATE] = "mlp.shared_expert.gate_proj.weight",
        [SKS_ROLE_SHEXP_UP] = "mlp.shared_expert.up_proj.weight", [SKS_ROLE_SHEXP_DOWN] = "mlp.shared_expert.down_proj.weight",
        [SKS_ROLE_SHEXP_ROUTER] = "mlp.shared_expert_gate.weight", [SKS_ROLE_EXP_GATE] = "gate_proj.weight",
        [SKS_ROLE_EXP_UP] = "up_proj.weight", [SKS_ROLE_EXP_DOWN] = "down_proj.weight"};
    if (role == SKS_ROLE_EMBED) snprintf(nm, n, "model.embed_tokens.weight");
    else if (role == SKS_ROLE_LM_HEAD) snprintf(nm, n, "lm_head.weight");
    else if (role == SKS_ROLE_FINAL_NORM) snprintf(nm, n, "model.norm.weight");
    else if (expert >= 0) snprintf(nm, n, "model.layers.%d.mlp.experts.%d.%s", layer, expert, per[role]);
    else snprintf(nm, n, "model.layers.%d.%s", layer, per[role]);
}

/* qwen: every tensor under Qwen2-MoE's HF names (experts one by one, shared_expert_gate
 * (1, d)); else the names of m with the experts stacked as transformers 5 saves them. */
static void write_stacked_as(const sks_model *m, const char *dir, int qwen);
static void write_stacked(const sks_model *m, const char *dir) { write_stacked_as(m, dir, 0); }

static void write_stacked_as(const sks_model *m, const char *dir, int qwen) {
    const sks_arch *a = sks_model_arch(m);
    const int E = a->n_experts, d = a->d_model, f = a->d_ffn_expert;
    json_t *h = json_object();
    size_t total = 0;
    /* pass 0: the header; pass 1: the data */
    for (int pass = 0; pass < 2; pass++) {
        FILE *fp = NULL;
        if (pass) {
            char *txt = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER), p[600];
            uint64_t hl = strlen(txt);
            snprintf(p, sizeof p, "%s/model.safetensors", dir);
            fp = fopen(p, "wb");
            assert_non_null(fp);
            fwrite(&hl, 8, 1, fp);
            fwrite(txt, 1, hl, fp);
            free(txt);
        }
        size_t off = 0;
#define PUT(NAME, R, C, ROWSFN)                                                                                        \
    do {                                                                                                               \
        size_t nb = (size_t)(R) * (C) * 4;                                                                             \
        if (!pass) json_object_set_new(h, NAME, json_pack("{s:s,s:[I,I],s:[I,I]}", "dtype", "F32", "shape", (json_int_t)(R), \
                                                         (json_int_t)(C), "data_offsets", (json_int_t)off, (json_int_t)(off + nb))); \
        else { ROWSFN; }                                                                                               \
        off += nb;                                                                                                     \
    } while (0)
        for (size_t i = 0; i < sks_model_n_tensors(m); i++) {
            sks_role role;
            int layer;
            const sks_tensor *t = sks_model_tensor_at(m, i, &role, &layer);
            if (sks_role_is_per_expert(role) && !qwen) continue;
            char nm[200];
            if (qwen) qwen_name(role, layer, sks_model_tensor_expert_at(m, i), nm, sizeof nm);
            else if (role == SKS_ROLE_ROUTER) snprintf(nm, sizeof nm, "model.layers.%d.mlp.gate.weight", layer);
            else snprintf(nm, sizeof nm, "%s", t->name);
            int64_t R = t->ndim == 2 ? t->shape[0] : 1, C = t->ndim == 2 ? t->shape[1] : t->shape[0];
            if (t->ndim == 1 && !pass && !(qwen && role == SKS_ROLE_SHEXP_ROUTER)) {
                size_t nb = (size_t)C * 4;
                json_object_set_new(h, nm, json_pack("{s:s,s:[I],s:[I,I]}", "dtype", "F32", "shape", (json_int_t)C,
                                                     "data_offsets", (json_int_t)off, (json_int_t)(off + nb)));
                off += nb;
                continue;
            }
            PUT(nm, R, C, fwrite(t->data, 4, (size_t)(R * C), fp));
        }
        for (int l = 0; l < a->n_layers && !qwen; l++) {
            char nm[200];
            snprintf(nm, sizeof nm, "model.layers.%d.mlp.experts.gate_up_proj", l);
            if (!pass) {
                size_t nb = (size_t)E * 2 * f * d * 4;
                json_object_set_new(h, nm, json_pack("{s:s,s:[i,i,i],s:[I,I]}", "dtype", "F32", "shape", E, 2 * f, d,
                                                     "data_offsets", (json_int_t)off, (json_int_t)(off + nb)));
                off += nb;
                snprintf(nm, sizeof nm, "model.layers.%d.mlp.experts.down_proj", l);
                nb = (size_t)E * d * f * 4;
                json_object_set_new(h, nm, json_pack("{s:s,s:[i,i,i],s:[I,I]}", "dtype", "F32", "shape", E, d, f,
                                                     "data_offsets", (json_int_t)off, (json_int_t)(off + nb)));
                off += nb;
                continue;
            }
            for (int e = 0; e < E; e++) {
                fwrite(sks_model_expert(m, SKS_ROLE_EXP_GATE, l, e)->data, 4, (size_t)f * d, fp);
                fwrite(sks_model_expert(m, SKS_ROLE_EXP_UP, l, e)->data, 4, (size_t)f * d, fp);
            }
            for (int e = 0; e < E; e++) fwrite(sks_model_expert(m, SKS_ROLE_EXP_DOWN, l, e)->data, 4, (size_t)f * d, fp);
        }
#undef PUT
        total = off;
        if (fp) fclose(fp);
    }
    (void)total;
    json_decref(h);
}

static void logits_of(const sks_model *m, const int32_t *tok, int T, float *out) {
    sks_forward *f = NULL;
    assert_int_equal(sks_forward_new(m, T, &f), 0);
    if (sks_forward_run(f, tok, T, SKS_FWD_CAUSAL, NULL, out, 0)) fail_msg("%s", sks_last_error());
    sks_forward_free(f);
}

/* synth's Mixtral (per-expert names), the same weights stacked as transformers 5 saves
 * them, and synth's GGUF (llama with 3-D ffn_*_exps; F32 and Q8_0): the same logits */
static void test_layouts_agree(void **s) {
    (void)s;
    sks_synth_config c;
    assert_int_equal(sks_synth_preset("mixtral-tiny", &c), 0);
    sks_synth *sy = NULL;
    assert_int_equal(sks_synth_new(&c, 3, &sy), 0);
    char *d1 = sks_test_tmpdir(), *d2 = sks_test_tmpdir(), *d3 = sks_test_tmpdir(), *d4 = sks_test_tmpdir(), p[700];
    assert_int_equal(sks_synth_write(sy, d1, SKS_DT_F32, 0), 0);
    assert_int_equal(sks_synth_write_gguf(sy, d3, "f32"), 0);
    assert_int_equal(sks_synth_write_gguf(sy, d4, "q8_0"), 0);
    sks_model *m1 = NULL, *m2 = NULL, *m3 = NULL, *m4 = NULL;
    assert_int_equal(sks_model_open(d1, &m1), 0);
    write_stacked(m1, d2);
    snprintf(p, sizeof p, "%s/config.json", d1);
    char q[1500];
    snprintf(q, sizeof q, "cp '%s' '%s/config.json'", p, d2);
    assert_int_equal(system(q), 0);
    if (sks_model_open(d2, &m2)) fail_msg("stacked: %s", sks_last_error());
    snprintf(p, sizeof p, "%s/model.gguf", d3);
    if (sks_model_open(p, &m3)) fail_msg("gguf: %s", sks_last_error());
    snprintf(p, sizeof p, "%s/model.gguf", d4);
    if (sks_model_open(p, &m4)) fail_msg("gguf q8_0: %s", sks_last_error());
    assert_string_equal(sks_model_arch(m3)->family, "mixtral");
    assert_int_equal(sks_model_arch(m3)->n_experts, 4);
    const int32_t tok[9] = {1, 7, 30, 99, 4, 250, 61, 2, 17};
    const int V = sks_model_arch(m1)->vocab_size;
    float *l1 = malloc(sizeof(float) * 9 * V), *l2 = malloc(sizeof(float) * 9 * V), *l3 = malloc(sizeof(float) * 9 * V),
          *l4 = malloc(sizeof(float) * 9 * V);
    logits_of(m1, tok, 9, l1);
    logits_of(m2, tok, 9, l2);
    logits_of(m3, tok, 9, l3);
    logits_of(m4, tok, 9, l4);
    double e2 = 0, e3 = 0, e4 = 0, sc = 0;
    for (int i = 0; i < 9 * V; i++) {
        sc = fmax(sc, fabs(l1[i]));
        e2 = fmax(e2, fabs(l2[i] - l1[i]));
        e3 = fmax(e3, fabs(l3[i] - l1[i]));
        e4 = fmax(e4, fabs(l4[i] - l1[i]));
    }
    fprintf(stderr, "layouts: stacked %.1e, gguf f32 %.1e of the largest |logit| %.3g\n", e2 / sc, e3 / sc, sc);
    assert_true(e2 == 0);          /* the same f32 numbers, the same arithmetic */
    assert_true(e3 <= 1e-5 * sc);  /* Q/K rows permuted (RoPE pair order): rounding only */
    (void)e4; /* 8-bit weights move ordinary tokens' near-tied routes: compare the experts instead */
    /* every expert's Q8_0 slice of the 3-D tensors dequantizes to its f32 rows within half
     * a quantization step (amax / 127 per block of 32) */
    const sks_arch *a1 = sks_model_arch(m1);
    const sks_role parts[3] = {SKS_ROLE_EXP_GATE, SKS_ROLE_EXP_UP, SKS_ROLE_EXP_DOWN};
    for (int l = 0; l < a1->n_layers; l++)
        for (int e = 0; e < a1->n_experts; e++)
            for (int k = 0; k < 3; k++) {
                const sks_tensor *t1 = sks_model_expert(m1, parts[k], l, e), *t4 = sks_model_expert(m4, parts[k], l, e);
                assert_non_null(t4);
                assert_int_equal(t4->dtype, SKS_DT_Q8_0);
                int64_t R = t1->shape[0], C = t1->shape[1];
                float *row = malloc(sizeof(float) * (size_t)C);
                for (int64_t r = 0; r < R; r++) {
                    assert_int_equal(sks_tensor_rows_f32(t4, r, 1, row), 0);
                    const float *ref = (const float *)t1->data + r * C;
                    for (int64_t b = 0; b < C; b += 32) {
                        double amax = 0;
                        for (int j = 0; j < 32; j++) amax = fmax(amax, fabs(ref[b + j]));
                        for (int j = 0; j < 32; j++)
                            if (!(fabs(row[b + j] - ref[b + j]) <= amax / 127 * 0.51 + 1e-12))
                                fail_msg("q8_0 layer %d expert %d part %d row %lld: %g vs %g", l, e, k, (long long)r,
                                         row[b + j], ref[b + j]);
                    }
                }
                free(row);
            }
    free(l1), free(l2), free(l3), free(l4);
    sks_model_close(m1), sks_model_close(m2), sks_model_close(m3), sks_model_close(m4);
    sks_synth_free(sy);
    const char *dirs[4] = {d1, d2, d3, d4};
    for (int i = 0; i < 4; i++) sks_test_rm_tree(dirs[i]);
    free(d1), free(d2), free(d3), free(d4);
}

/* the shared-expert memory model written under Qwen2-MoE's HF names with a Qwen2-MoE
 * config.json: read back, the same logits */
static void test_qwen_names(void **s) {
    (void)s;
    sks_model *m = memory_model_sh(0, 21, 1);
    char *dir = sks_test_tmpdir(), p[700];
    write_stacked_as(m, dir, 1);
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_t *c = json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:i,s:i,s:i,s:i,s:b,s:b,s:b,s:i,s:[]}",
                          "architectures", "Qwen2MoeForCausalLM", "model_type", "qwen2_moe", "hidden_size", MD,
                          "intermediate_size", 96, "num_hidden_layers", ML, "num_attention_heads", 2,
                          "num_key_value_heads", 2, "head_dim", MD / 2, "vocab_size", MV, "rms_norm_eps", 1e-6,
                          "rope_theta", 10000.0, "num_experts", ME, "num_experts_per_tok", MK, "moe_intermediate_size",
                          MF, "shared_expert_intermediate_size", MF, "norm_topk_prob", 0, "qkv_bias", 0,
                          "tie_word_embeddings", 0, "decoder_sparse_step", 1, "mlp_only_layers");
    assert_int_equal(json_dump_file(c, p, 0), 0);
    json_decref(c);
    sks_model *h = NULL;
    if (sks_model_open(dir, &h)) fail_msg("%s", sks_last_error());
    const sks_arch *a = sks_model_arch(h);
    assert_string_equal(a->family, "qwen2moe");
    assert_int_equal(a->d_ffn_shared, MF);
    assert_int_equal(a->moe_norm_topk, 0);
    assert_int_equal(a->has_qkv_bias, 0);
    const int32_t tok[MT] = {1, 5, 9, 3, 30, 17, 2};
    float l1[MT * MV], l2[MT * MV];
    logits_of(m, tok, MT, l1);
    logits_of(h, tok, MT, l2);
    for (int i = 0; i < MT * MV; i++) assert_true(l1[i] == l2[i]);
    sks_model_close(h);
    sks_model_close(m);
    sks_test_rm_tree(dir);
    free(dir);
}

/* ---- quant-risk: the W_down input of every expert ------------------------------------- */

typedef struct {
    int T;
    int64_t d;
    float *x; /* (L, T, d) the FFN inputs */
} ffn_ins;

static int keep_ffn_in(void *ud, int layer, const float *x, int T, int d) {
    ffn_ins *c = ud;
    memcpy(c->x + (size_t)layer * T * d, x, (size_t)T * d * sizeof(float));
    return 0;
}

static int cmp_f64(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Expert e's (e == E: the shared expert's) W_down input of layer l, f64 from the FFN
 * inputs x (T, d) and the weights: the tokens routed to it (the top-k rule on f64 router
 * logits), h = silu(W_gate x) * (W_up x); then its max |h|, median |h| and the int8
 * per-tensor error ||Q(h) - h|| / ||h|| (scale max|h| / 127, round half to even). */
static int ref_expert_down_in(const sks_model *m, int l, int e, const float *x, int T, double *mx, double *med,
                              double *err) {
    const sks_arch *a = sks_model_arch(m);
    const int E = a->n_experts, k = a->n_experts_used;
    const int64_t d = a->d_model;
    const int shared = e == E;
    const sks_tensor *Wg = shared ? sks_model_tensor(m, SKS_ROLE_SHEXP_GATE, l) : sks_model_expert(m, SKS_ROLE_EXP_GATE, l, e);
    const sks_tensor *Wu = shared ? sks_model_tensor(m, SKS_ROLE_SHEXP_UP, l) : sks_model_expert(m, SKS_ROLE_EXP_UP, l, e);
    assert_non_null(Wg);
    assert_non_null(Wu);
    const int64_t f = Wg->shape[0];
    double *R = malloc((size_t)E * d * sizeof(double)), *G = malloc((size_t)f * d * sizeof(double)),
           *U = malloc((size_t)f * d * sizeof(double)), *h = malloc((size_t)T * f * sizeof(double));
    assert_true(R && G && U && h);
    assert_int_equal(sks_tensor_rows_f64(sks_model_tensor(m, SKS_ROLE_ROUTER, l), 0, E, R), 0);
    assert_int_equal(sks_tensor_rows_f64(Wg, 0, f, G), 0);
    assert_int_equal(sks_tensor_rows_f64(Wu, 0, f, U), 0);
    int n = 0;
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * d;
        int routed = shared;
        if (!shared) {
            /* e is routed when fewer than k experts beat it (a larger logit, or an equal
             * logit at a lower index) */
            double ze = 0;
            for (int64_t j = 0; j < d; j++) ze += R[(size_t)e * d + j] * xt[j];
            int beat = 0;
            for (int o = 0; o < E; o++) {
                if (o == e) continue;
                double zo = 0;
                for (int64_t j = 0; j < d; j++) zo += R[(size_t)o * d + j] * xt[j];
                beat += zo > ze || (zo == ze && o < e);
            }
            routed = beat < k;
        }
        if (!routed) continue;
        for (int64_t i = 0; i < f; i++) {
            double g = 0, u = 0;
            for (int64_t j = 0; j < d; j++) g += G[i * d + j] * xt[j], u += U[i * d + j] * xt[j];
            h[(size_t)n * f + i] = g / (1 + exp(-g)) * u;
        }
        n++;
    }
    const size_t N = (size_t)n * f;
    double amax = 0, ss = 0, ee = 0;
    for (size_t i = 0; i < N; i++) amax = fmax(amax, fabs(h[i])), ss += h[i] * h[i];
    for (size_t i = 0; i < N; i++) {
        double sc = amax / 127, q = fmin(fmax(nearbyint(h[i] / sc), -127), 127) * sc;
        ee += (q - h[i]) * (q - h[i]);
    }
    for (size_t i = 0; i < N; i++) h[i] = fabs(h[i]);
    qsort(h, N, sizeof *h, cmp_f64);
    *mx = amax;
    *med = N ? (N % 2 ? h[N / 2] : 0.5 * (h[N / 2 - 1] + h[N / 2])) : 0;
    *err = ss > 0 ? sqrt(ee / ss) : 0;
    free(R), free(G), free(U), free(h);
    return n;
}

/* Every expert row of r against the f64 reference. Tolerances: max and median are of
 * f32 GEMM outputs against f64 sums over d terms of O(1) products (1e-4 relative is
 * ~100 f32 roundings); the int8 error moves when an element sits within that distance of
 * a rounding boundary, which changes ||Q(h) - h|| by far less than 1e-3 of itself. */
static void check_expert_rows(const sks_model *m, const sks_qrisk_result *r, const float *X, int T) {
    const sks_arch *a = sks_model_arch(m);
    const int NE = r->expert_rows;
    assert_int_equal(r->n_experts, a->n_experts);
    assert_int_equal(NE, a->n_experts + (a->d_ffn_shared > 0));
    for (int l = 0; l < a->n_layers; l++) {
        if (!sks_arch_layer_moe(a, l)) continue;
        int total = 0;
        double worst_err[SKS_Q_N * SKS_QKEEP_N] = {0};
        for (int e = 0; e < NE; e++) {
            const size_t le = (size_t)l * NE + e;
            double mx, med, err;
            int n = ref_expert_down_in(m, l, e, X + (size_t)l * T * a->d_model, T, &mx, &med, &err);
            if (r->expert_tokens[le] != n) fail_msg("layer %d expert %d: %d tokens, reference %d", l, e, r->expert_tokens[le], n);
            if (e < a->n_experts) total += n;
            else assert_int_equal(n, T);
            if (!n) continue;
            const double *re = r->expert_rel_err + le * SKS_Q_N * SKS_QKEEP_N;
            if (sks_test_reldiff(r->expert_max_abs[le], mx, 0) > 1e-4 ||
                sks_test_reldiff(r->expert_median_abs[le], med, 0) > 1e-4 ||
                sks_test_reldiff(re[SKS_Q_INT8_TENSOR * SKS_QKEEP_N + SKS_QKEEP_NONE], err, 0) > 1e-3)
                fail_msg("layer %d expert %d: max %.8g median %.8g int8 %.8g, f64 reference %.8g %.8g %.8g", l, e,
                         r->expert_max_abs[le], r->expert_median_abs[le], re[SKS_Q_INT8_TENSOR * SKS_QKEEP_N], mx, med, err);
            for (int j = 0; j < SKS_Q_N * SKS_QKEEP_N; j++) worst_err[j] = fmax(worst_err[j], re[j]);
        }
        assert_int_equal(total, T * a->n_experts_used);
        /* the layer's down_in row: the expert of largest range, the largest error */
        const int w = r->worst_expert[l];
        assert_true(w >= 0 && w < NE);
        const size_t ls = (size_t)l * SKS_QSITE_N + SKS_QSITE_DOWN, lw = (size_t)l * NE + w;
        for (int e = 0; e < NE; e++) {
            const size_t le = (size_t)l * NE + e;
            if (r->expert_tokens[le])
                assert_true(r->expert_max_abs[le] / r->expert_median_abs[le] <=
                            r->expert_max_abs[lw] / r->expert_median_abs[lw]);
        }
        assert_true(r->max_abs[ls] == r->expert_max_abs[lw] && r->median_abs[ls] == r->expert_median_abs[lw]);
        for (int j = 0; j < SKS_Q_N * SKS_QKEEP_N; j++) assert_true(r->rel_err[ls * SKS_Q_N * SKS_QKEEP_N + j] == worst_err[j]);
    }
}

static sks_qrisk_result *qrisk_of(const sks_model *m, const int32_t *ids, int T, float *X) {
    sks_qrisk_opts o;
    sks_qrisk_opts_default(&o);
    o.end_to_end = 0;
    sks_qrisk_result *r = NULL;
    if (sks_qrisk_run(m, ids, T, &o, &r)) fail_msg("quant-risk: %s", sks_last_error());
    assert_int_equal(r->T, T);
    ffn_ins c = {T, sks_model_arch(m)->d_model, X};
    sks_fwd_hooks hk = {0};
    hk.ud = &c;
    hk.on_ffn_in = keep_ffn_in;
    sks_forward *f = NULL;
    assert_int_equal(sks_forward_new(m, T, &f), 0);
    assert_int_equal(sks_forward_run(f, ids, T, SKS_FWD_CAUSAL, &hk, NULL, 0), 0);
    sks_forward_free(f);
    check_expert_rows(m, r, X, T);
    return r;
}

static void test_quant_risk_experts(void **s) {
    (void)s;
    /* the synth mixtral-tiny: the step-up units live in one expert of the step-up layer */
    sks_synth_config cfg;
    assert_int_equal(sks_synth_preset("mixtral-tiny", &cfg), 0);
    sks_synth *sy = NULL;
    assert_int_equal(sks_synth_new(&cfg, 3, &sy), 0);
    char *dir = sks_test_tmpdir(), p[600];
    assert_int_equal(sks_synth_write(sy, dir, SKS_DT_F32, 0), 0);
    sks_model *m = NULL;
    if (sks_model_open(dir, &m)) fail_msg("%s", sks_last_error());
    const sks_synth_planted *pl = sks_synth_get_planted(sy);
    enum { QT = 48 };
    int32_t ids[QT];
    uint64_t st = 17;
    ids[0] = pl->bos_id;
    for (int t = 1; t < QT; t++) ids[t] = 2 + (int32_t)(sks_test_rng_u64(&st) % 200);
    const sks_arch *a = sks_model_arch(m);
    float *X = malloc((size_t)a->n_layers * QT * a->d_model * sizeof(float));
    assert_non_null(X);
    sks_qrisk_result *r = qrisk_of(m, ids, QT, X);
    /* the planted expert carries the spike token's massive W_down input: the worst of
     * its layer, its range far above every other expert's */
    const int ls = pl->step_up_layer, up = pl->moe_up_expert, NE = r->expert_rows;
    assert_int_equal(r->worst_expert[ls], up);
    const size_t lu = (size_t)ls * NE + up;
    const double range_up = r->expert_max_abs[lu] / r->expert_median_abs[lu];
    for (int e = 0; e < NE; e++) {
        const size_t le = (size_t)ls * NE + e;
        if (e != up && r->expert_tokens[le])
            assert_true(r->expert_max_abs[le] / r->expert_median_abs[le] < 0.01 * range_up);
    }
    fprintf(stderr, "quant-risk mixtral-tiny: layer %d planted expert %d range %.4g (%d tokens), int8-tensor %.3g%%\n", ls, up,
            range_up, r->expert_tokens[lu], 100 * r->expert_rel_err[lu * SKS_Q_N * SKS_QKEEP_N]);
    sks_qrisk_result_free(r);
    sks_model_close(m);
    sks_synth_free(sy);
    free(X);
    const char *files[] = {"config.json", "model.safetensors", "planted.json"};
    for (size_t i = 0; i < 3; i++) snprintf(p, sizeof p, "%s/%s", dir, files[i]), unlink(p);
    rmdir(dir);
    free(dir);
    /* a shared expert (Qwen2-MoE): its row covers every token */
    m = memory_model_sh(0, 23, 1);
    X = malloc((size_t)ML * MT * MD * sizeof(float));
    assert_non_null(X);
    r = qrisk_of(m, mtok, MT, X);
    assert_int_equal(r->expert_rows, ME + 1);
    sks_qrisk_result_free(r);
    sks_model_close(m);
    free(X);
}

/* An MoE layer result through the resume parts' and MPI gather's form (spikes_pack.c):
 * packed, unpacked and packed again gives the same bytes (every f64 bitwise), the
 * routing and every expert's forms included; a record that disagrees with itself is
 * refused naming the field. */
static int pack_roundtrip(const sks_spikes_layer_result *r, sks_spikes_layer_result *back, char *why, size_t nwhy) {
    sks_out a;
    sks_out_init(&a);
    sks_spikes_layer_pack(&a, r);
    assert_false(sks_out_error(&a));
    size_t off = 0;
    int rc = sks_spikes_layer_unpack((const uint8_t *)a.buf.data, a.buf.size, &off, r->d, "part.msgpack", back);
    if (rc) snprintf(why, nwhy, "%s", sks_last_error());
    else {
        assert_int_equal(off, a.buf.size);
        sks_out b;
        sks_out_init(&b);
        sks_spikes_layer_pack(&b, back);
        assert_int_equal(b.buf.size, a.buf.size);
        assert_memory_equal(b.buf.data, a.buf.data, a.buf.size);
        sks_out_free(&b);
    }
    sks_out_free(&a);
    return rc;
}

static void test_moe_pack(void **s) {
    (void)s;
    sks_model *m;
    sks_spikes *sp = moe_spikes_ctx(1, &m);
    const int ch = 3, tok = 4;
    sks_spikes_layer_result r, back;
    if (sks_spikes_layer(sp, 1, &ch, NULL, &tok, 1, &r)) fail_msg("%s", sks_last_error());
    char why[256] = "";
    if (pack_roundtrip(&r, &back, why, sizeof why)) fail_msg("round trip: %s", why);
    assert_non_null(back.moe);
    const sks_spikes_moe *M = r.moe, *B = back.moe;
    assert_int_equal(B->token, M->token);
    assert_int_equal(B->n_per_expert, ME + 1);
    for (int j = 0; j < MK; j++) assert_int_equal(B->experts[j], M->experts[j]), assert_true(B->weights[j] == M->weights[j]);
    assert_true(B->shared_gate == M->shared_gate);
    for (int e = 0; e < ME + 1; e++)
        assert_true(B->per_expert[e].channels[0].eigenvalues[0] == M->per_expert[e].channels[0].eigenvalues[0]);
    sks_spikes_layer_result_free(&back);
    /* hostile records: an expert outside the layer's, a per-expert count that is not
     * n_experts + has_shared */
    const int keep_e = r.moe->experts[0];
    r.moe->experts[0] = ME;
    assert_int_equal(pack_roundtrip(&r, &back, why, sizeof why), SKS_EFORMAT);
    assert_non_null(strstr(why, "part.msgpack: moe.experts"));
    r.moe->experts[0] = keep_e;
    r.moe->n_experts = ME + 1;
    assert_int_equal(pack_roundtrip(&r, &back, why, sizeof why), SKS_EFORMAT);
    assert_non_null(strstr(why, "moe.per_expert"));
    r.moe->n_experts = ME;
    sks_spikes_layer_result_free(&r);
    sks_spikes_free(sp);
    sks_model_close(m);
}

int main(void) {
    enum { NM = sizeof k_moe / sizeof k_moe[0] };
    struct CMUnitTest tests[9 + NM + 1] = {
        cmocka_unit_test(test_memory_model), cmocka_unit_test(test_spikes_moe), cmocka_unit_test(test_missing_expert),
        cmocka_unit_test(test_tie_rule),     cmocka_unit_test(test_layouts_agree), cmocka_unit_test(test_qwen_names),
        cmocka_unit_test(test_ties),         cmocka_unit_test(test_quant_risk_experts),
        cmocka_unit_test(test_moe_pack),     [9 + NM] = cmocka_unit_test(test_qwen3moe_mixed),
    };
    sks_test_cases(tests + 9, test_moe_family, k_moe, NM, sizeof k_moe[0]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
