/* out.c - msgpack writer with sticky errors and atomic file replacement. */
#define _POSIX_C_SOURCE 200809L
#include "sks_out.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void sks_out_init(sks_out *o) {
    msgpack_sbuffer_init(&o->buf);
    msgpack_packer_init(&o->pk, &o->buf, msgpack_sbuffer_write);
    o->err = 0;
}

void sks_out_free(sks_out *o) { msgpack_sbuffer_destroy(&o->buf); }
int sks_out_error(const sks_out *o) { return o->err; }

#define SKS__PK(call)                                                                                  \
    do {                                                                                               \
        if (!o->err && (call) != 0) o->err = SKS_ENOMEM;                                               \
    } while (0)

void sks_out_map(sks_out *o, size_t n) { SKS__PK(msgpack_pack_map(&o->pk, n)); }
void sks_out_array(sks_out *o, size_t n) { SKS__PK(msgpack_pack_array(&o->pk, n)); }
void sks_out_str(sks_out *o, const char *s) {
    size_t n = strlen(s);
    SKS__PK(msgpack_pack_str(&o->pk, n));
    SKS__PK(msgpack_pack_str_body(&o->pk, s, n));
}
void sks_out_int(sks_out *o, int64_t v) { SKS__PK(msgpack_pack_int64(&o->pk, v)); }
void sks_out_f64(sks_out *o, double v) { SKS__PK(msgpack_pack_double(&o->pk, v)); }
void sks_out_bool(sks_out *o, int v) { SKS__PK(v ? msgpack_pack_true(&o->pk) : msgpack_pack_false(&o->pk)); }
void sks_out_nil(sks_out *o) { SKS__PK(msgpack_pack_nil(&o->pk)); }
void sks_out_bin(sks_out *o, const void *p, size_t n) {
    SKS__PK(msgpack_pack_bin(&o->pk, n));
    if (n) SKS__PK(msgpack_pack_bin_body(&o->pk, p, n));
}
void sks_out_kstr(sks_out *o, const char *k, const char *v) { sks_out_str(o, k); sks_out_str(o, v); }
void sks_out_kint(sks_out *o, const char *k, int64_t v) { sks_out_str(o, k); sks_out_int(o, v); }
void sks_out_kf64(sks_out *o, const char *k, double v) { sks_out_str(o, k); sks_out_f64(o, v); }
void sks_out_kbool(sks_out *o, const char *k, int v) { sks_out_str(o, k); sks_out_bool(o, v); }
void sks_out_karray(sks_out *o, const char *k, size_t n) { sks_out_str(o, k); sks_out_array(o, n); }
void sks_out_kmap(sks_out *o, const char *k, size_t n) { sks_out_str(o, k); sks_out_map(o, n); }
void sks_out_kints(sks_out *o, const char *k, const int *v, int n) {
    sks_out_karray(o, k, (size_t)n);
    for (int i = 0; i < n; i++) sks_out_int(o, v[i]);
}

static void sks__out_typed(sks_out *o, const char *dt, const void *data, size_t elsize, int ndim,
                           const int64_t *shape) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    sks_out_map(o, 3);
    sks_out_kstr(o, "dtype", dt);
    sks_out_karray(o, "shape", (size_t)ndim);
    for (int i = 0; i < ndim; i++) sks_out_int(o, shape[i]);
    sks_out_str(o, "data");
    /* x86-64 and aarch64 are little-endian: the bytes go out as they are. */
    SKS__PK(msgpack_pack_bin(&o->pk, n * elsize));
    if (n) SKS__PK(msgpack_pack_bin_body(&o->pk, data, n * elsize));
}

void sks_out_f32_array(sks_out *o, const float *d, int nd, const int64_t *s) { sks__out_typed(o, "f32", d, 4, nd, s); }
void sks_out_f64_array(sks_out *o, const double *d, int nd, const int64_t *s) { sks__out_typed(o, "f64", d, 8, nd, s); }
void sks_out_i32_array(sks_out *o, const int32_t *d, int nd, const int64_t *s) { sks__out_typed(o, "i32", d, 4, nd, s); }

void sks_out_head(sks_out *o, size_t n, const char *schema, const sks_model *m) {
    sks_out_map(o, n);
    sks_out_kstr(o, "schema", schema);
    sks_out_str(o, "model");
    sks_out_model(o, m);
}

void sks_out_begin(sks_out *o, size_t n, const char *schema, const sks_model *m) {
    sks_out_init(o);
    sks_out_head(o, n, schema, m);
}

void sks_out_model(sks_out *o, const sks_model *m) {
    const sks_arch *a = sks_model_arch(m);
    int nnf = sks_nonfinite_n_tensors();
    sks_out_map(o, 18 + (nnf > 0));
    sks_out_kstr(o, "path", sks_model_path(m));
    sks_out_kstr(o, "format", sks_format_name(sks_model_format(m)));
    sks_out_kstr(o, "family", a->family);
    sks_out_kint(o, "n_layers", a->n_layers);
    sks_out_kint(o, "d_model", a->d_model);
    sks_out_kint(o, "d_ffn", a->d_ffn);
    sks_out_kint(o, "n_heads", a->n_heads);
    sks_out_kint(o, "n_kv_heads", a->n_kv_heads);
    sks_out_kint(o, "head_dim", a->head_dim);
    sks_out_kint(o, "vocab_size", a->vocab_size);
    sks_out_kint(o, "n_params", (int64_t)sks_model_n_params(m));
    sks_out_kf64(o, "rope_theta", a->rope_theta);
    sks_out_kf64(o, "norm_eps", a->norm_eps);
    sks_out_kbool(o, "tied_embeddings", a->tied_embeddings);
    sks_out_kbool(o, "rope_interleaved", a->rope_interleaved);
    sks_out_kbool(o, "has_qkv_bias", a->has_qkv_bias);
    sks_out_kstr(o, "norms", sks_arch_norm_layout(a));
    sks_out_kstr(o, "activation", sks_act_name(a->act));
    if (nnf > 0) { /* only with --allow-nonfinite: [{name, nonfinite, size}, ...] */
        sks_out_karray(o, "nonfinite_tensors", (size_t)nnf);
        for (int i = 0; i < nnf; i++) {
            uint64_t cnt = 0, tot = 0;
            const char *name = sks_nonfinite_tensor(i, &cnt, &tot);
            sks_out_map(o, 3);
            sks_out_kstr(o, "name", name ? name : "");
            sks_out_kint(o, "nonfinite", (int64_t)cnt);
            sks_out_kint(o, "size", (int64_t)tot);
        }
    }
}

void sks_out_spike_rule(sks_out *o, double outlier, double abs_thresh, double ratio, int min_blocks) {
    sks_out_kf64(o, "outlier", outlier);
    sks_out_kf64(o, "abs", abs_thresh);
    sks_out_kf64(o, "ratio", ratio);
    sks_out_kint(o, "min_blocks", min_blocks);
}

int sks_out_moe_inputs_n(const sks_arch *a) { return a->n_experts > 0; }

void sks_out_moe_inputs(sks_out *o, const sks_arch *a) {
    if (a->n_experts <= 0) return;
    sks_out_str(o, "moe");
    sks_out_map(o, 7);
    sks_out_kint(o, "n_experts", a->n_experts);
    sks_out_kint(o, "n_experts_used", a->n_experts_used);
    sks_out_kint(o, "d_ffn_expert", a->d_ffn_expert);
    sks_out_kint(o, "d_ffn_shared", a->d_ffn_shared);
    sks_out_kint(o, "norm_topk", a->moe_norm_topk);
    sks_out_kint(o, "sparse_step", a->moe_sparse_step);
    int nm = 0;
    for (int l = 0; l < a->n_layers; l++) nm += sks_arch_layer_moe(a, l);
    sks_out_str(o, "moe_layers");
    sks_out_array(o, (size_t)nm);
    for (int l = 0; l < a->n_layers; l++)
        if (sks_arch_layer_moe(a, l)) sks_out_int(o, l);
}

int sks_write_file_atomic(const char *path, const void *data, size_t n) {
    size_t pl = strlen(path) + 32;
    char *tmp = malloc(pl);
    if (!tmp) return sks_fail(SKS_ENOMEM, "%s: out of memory", path);
    snprintf(tmp, pl, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return sks_fail(SKS_EIO, "%s: cannot create: %s", path, strerror(e));
    }
    const char *p = data;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            free(tmp);
            return sks_fail(SKS_EIO, "%s: write failed: %s", path, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        free(tmp);
        return sks_fail(SKS_EIO, "%s: sync failed: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        free(tmp);
        return sks_fail(SKS_EIO, "%s: rename failed: %s", path, strerror(e));
    }
    free(tmp);
    return 0;
}

int sks_out_finish(sks_out *o, const char *path) {
    int rc = sks_out_write_file(o, path);
    sks_out_free(o);
    return rc;
}

int sks_out_write_file(sks_out *o, const char *path) {
    if (o->err) return sks_fail(o->err, "%s: msgpack encoding failed", path);
    return sks_write_file_atomic(path, o->buf.data, o->buf.size);
}

json_t *sks_json_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

json_t *sks_json_ints(const int *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

void sks_json_add_nonfinite(json_t *root) {
    int n = sks_nonfinite_n_tensors();
    if (n <= 0 || !root) return;
    json_t *a = json_array();
    for (int i = 0; i < n; i++) {
        uint64_t cnt = 0, tot = 0;
        const char *name = sks_nonfinite_tensor(i, &cnt, &tot);
        json_array_append_new(a, json_pack("{s:s,s:I,s:I}", "name", name ? name : "", "nonfinite", (json_int_t)cnt,
                                           "size", (json_int_t)tot));
    }
    json_object_set_new(root, "nonfinite_tensors", a);
}

char *sks__path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

void sks_out_kf32_array(sks_out *o, const char *k, const float *data, int ndim, const int64_t *shape) {
    sks_out_str(o, k);
    sks_out_f32_array(o, data, ndim, shape);
}

void sks_out_kf64_array(sks_out *o, const char *k, const double *data, int ndim, const int64_t *shape) {
    sks_out_str(o, k);
    sks_out_f64_array(o, data, ndim, shape);
}

void sks_out_ki32_array(sks_out *o, const char *k, const int32_t *data, int ndim, const int64_t *shape) {
    sks_out_str(o, k);
    sks_out_i32_array(o, data, ndim, shape);
}

void sks_out_str_or_nil(sks_out *o, const char *s) {
    if (s) sks_out_str(o, s);
    else sks_out_nil(o);
}
