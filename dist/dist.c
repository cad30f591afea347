/* dist.c - MPI ranks, agreement, gather and broadcast, resume parts and their manifest
 * (sks_dist.h). */
#include "sks_dist.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SKS_HAVE_MPI
#define SKS_HAVE_MPI 0
#endif
#if SKS_HAVE_MPI
#include <mpi.h>
#endif

/* ---- MPI ---------------------------------------------------------------------------- */

/* this process's rank and the number of ranks, set by sks_dist_init */
static int sks__rank = 0, sks__size = 1;
#if SKS_HAVE_MPI
static int sks__dist_inited;
#endif

void sks_dist_init(int *argc, char ***argv) {
#if SKS_HAVE_MPI
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE") && !getenv("PMIX_RANK")) return;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) return;
    sks__dist_inited = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &sks__rank);
    MPI_Comm_size(MPI_COMM_WORLD, &sks__size);
    int r = sks__rank;
    const char *v = getenv("SKS_MPI_VERBOSE");
    if (r > 0 && !(v && !strcmp(v, "1"))) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
    }
#else
    (void)argc, (void)argv;
#endif
}

void sks_dist_finalize(void) {
#if SKS_HAVE_MPI
    if (sks__dist_inited) {
        fflush(stdout);
        MPI_Finalize();
        sks__dist_inited = 0;
        sks__rank = 0, sks__size = 1;
    }
#endif
}

int sks_dist_rank(void) { return sks__rank; }
int sks_dist_size(void) { return sks__size; }

int sks_dist_agree(int rc) {
#if SKS_HAVE_MPI
    if (sks_dist_size() == 1) return rc;
    int me = sks_dist_rank(), mine = rc ? me : INT32_MAX, first = INT32_MAX;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == INT32_MAX) return 0;
    int code = rc;
    MPI_Bcast(&code, 1, MPI_INT, first, MPI_COMM_WORLD);
    char msg[512];
    memset(msg, 0, sizeof msg);
    if (me == first) snprintf(msg, sizeof msg, "%s", sks_last_error());
    if (first != 0) {
        if (me == first) MPI_Send(msg, (int)sizeof msg, MPI_CHAR, 0, 77, MPI_COMM_WORLD);
        if (me == 0) {
            MPI_Recv(msg, (int)sizeof msg, MPI_CHAR, first, 77, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            msg[sizeof msg - 1] = '\0';
            sks_fail(code, "rank %d: %s", first, msg);
        }
    }
    return code;
#else
    return rc;
#endif
}

int sks_dist_gather(const void *mine, size_t n, uint8_t **all, size_t **lens) {
    *all = NULL;
    *lens = NULL;
    int size = sks_dist_size(), me = sks_dist_rank();
    if (n > (size_t)INT32_MAX) return sks_fail(SKS_EOVERFLOW, "gather: %zu bytes on one rank (limit 2 GiB)", n);
#if SKS_HAVE_MPI
    if (size > 1) {
        int cnt = (int)n, *cnts = NULL, *displs = NULL, rc = 0;
        if (me == 0) {
            cnts = calloc((size_t)size, sizeof *cnts);
            displs = calloc((size_t)size, sizeof *displs);
            *lens = calloc((size_t)size, sizeof **lens);
            if (!cnts || !displs || !*lens) {
                /* a few ints per rank: without them the collective cannot go on */
                fprintf(stderr, "sinkscope: gather: out of memory on rank 0\n");
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
        }
        MPI_Gather(&cnt, 1, MPI_INT, cnts, 1, MPI_INT, 0, MPI_COMM_WORLD);
        size_t tot = 0;
        if (me == 0) {
            for (int r = 0; r < size && !rc; r++) {
                if (tot > (size_t)INT32_MAX - (size_t)cnts[r]) rc = SKS_EOVERFLOW;
                displs[r] = (int)tot;
                tot += (size_t)cnts[r];
                (*lens)[r] = (size_t)cnts[r];
            }
            if (!rc) *all = malloc(tot ? tot : 1);
            if (!rc && !*all) rc = SKS_ENOMEM;
        }
        /* everyone learns whether rank 0 can receive before sending anything */
        MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (!rc) MPI_Gatherv(mine, cnt, MPI_BYTE, *all, cnts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
        free(cnts);
        free(displs);
        if (rc) {
            free(*all);
            free(*lens);
            *all = NULL;
            *lens = NULL;
            return sks_fail(rc, "gather: the results are over 2 GiB or out of memory on rank 0");
        }
        return 0;
    }
#endif
    (void)me, (void)size;
    *all = malloc(n ? n : 1);
    *lens = malloc(sizeof **lens);
    if (!*all || !*lens) {
        free(*all), free(*lens);
        *all = NULL, *lens = NULL;
        return sks_fail(SKS_ENOMEM, "gather: out of memory");
    }
    if (n) memcpy(*all, mine, n);
    (*lens)[0] = n;
    return 0;
}

int sks_dist_bcast(uint8_t **buf, size_t *n) {
#if SKS_HAVE_MPI
    if (sks_dist_size() > 1) {
        long long len = sks_dist_rank() == 0 ? (long long)*n : 0;
        MPI_Bcast(&len, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
        if (len < 0 || len > INT32_MAX) return sks_fail(SKS_EOVERFLOW, "bcast: %lld bytes", len);
        if (sks_dist_rank() != 0) {
            *buf = malloc(len ? (size_t)len : 1);
            *n = (size_t)len;
        }
        int ok = *buf != NULL, all_ok = 0;
        MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (!all_ok) return sks_fail(SKS_ENOMEM, "bcast: out of memory");
        MPI_Bcast(*buf, (int)len, MPI_BYTE, 0, MPI_COMM_WORLD);
    }
#else
    (void)buf, (void)n;
#endif
    return 0;
}

/* ---- the manifest: a fingerprint of the inputs ---------------------------------------- */

typedef struct {
    char *s;
    size_t n, cap;
    int err;
} sks__text;

static void sks__put(sks__text *t, const char *s, size_t n) {
    if (t->err) return;
    if (t->n + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->n + n + 1) cap *= 2;
        char *ns = realloc(t->s, cap);
        if (!ns) {
            t->err = 1;
            return;
        }
        t->s = ns;
        t->cap = cap;
    }
    memcpy(t->s + t->n, s, n);
    t->n += n;
    t->s[t->n] = '\0';
}

static void sks__put_scalar(sks__text *t, const msgpack_object *o) {
    char b[64];
    int k = 0;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: k = snprintf(b, sizeof b, "%llu", (unsigned long long)o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: k = snprintf(b, sizeof b, "%lld", (long long)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: k = snprintf(b, sizeof b, "%.17g", o->via.f64); break;
    case MSGPACK_OBJECT_BOOLEAN: k = snprintf(b, sizeof b, "%d", o->via.boolean ? 1 : 0); break;
    case MSGPACK_OBJECT_STR: sks__put(t, o->via.str.ptr, o->via.str.size); return;
    default: k = snprintf(b, sizeof b, "nil"); break;
    }
    sks__put(t, b, (size_t)k);
}

static int sks__is_scalar(const msgpack_object *o) {
    return o->type != MSGPACK_OBJECT_MAP && o->type != MSGPACK_OBJECT_ARRAY;
}

/* "key=value" lines: nested map keys joined with '.', an array of scalars as one
 * comma-separated value, an array of anything else one line per element (key.i). */
static void sks__render(sks__text *t, const char *key, const msgpack_object *o) {
    char sub[256];
    if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            int kl = k->type == MSGPACK_OBJECT_STR ? (int)k->via.str.size : 0;
            snprintf(sub, sizeof sub, "%s%s%.*s", key, *key ? "." : "", kl, kl ? k->via.str.ptr : "");
            sks__render(t, sub, &o->via.map.ptr[i].val);
        }
        return;
    }
    int flat = 1;
    for (uint32_t i = 0; o->type == MSGPACK_OBJECT_ARRAY && i < o->via.array.size; i++)
        flat &= sks__is_scalar(&o->via.array.ptr[i]);
    if (!flat) {
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            snprintf(sub, sizeof sub, "%s.%u", key, i);
            sks__render(t, sub, &o->via.array.ptr[i]);
        }
        return;
    }
    sks__put(t, key, strlen(key));
    sks__put(t, "=", 1);
    if (o->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i) sks__put(t, ",", 1);
            sks__put_scalar(t, &o->via.array.ptr[i]);
        }
    else
        sks__put_scalar(t, o);
    sks__put(t, "\n", 1);
}

int sks_dist_fingerprint(const sks_out *inputs, char **text) {
    *text = NULL;
    if (sks_out_error(inputs)) return sks_fail(SKS_ENOMEM, "out of memory packing the run's inputs");
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, inputs->buf.data, inputs->buf.size, NULL) != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(&u);
        return sks_fail(SKS_EINTERNAL, "fingerprint: the inputs are not one msgpack object");
    }
    sks__text t = {0};
    sks__render(&t, "", &u.data);
    msgpack_unpacked_destroy(&u);
    if (t.err || !t.s) {
        free(t.s);
        return sks_fail(SKS_ENOMEM, "out of memory");
    }
    *text = t.s;
    return 0;
}

/* ---- parts ---------------------------------------------------------------------------- */

/* First line where a and b differ, for the error message. */
static void sks__first_diff(const char *a, const char *b, char *out, size_t cap) {
    const char *pa = a, *pb = b;
    for (;;) {
        const char *ea = strchr(pa, '\n'), *eb = strchr(pb, '\n');
        size_t la = ea ? (size_t)(ea - pa) : strlen(pa), lb = eb ? (size_t)(eb - pb) : strlen(pb);
        if (la != lb || memcmp(pa, pb, la)) {
            snprintf(out, cap, "was '%.*s', now '%.*s'", (int)(la > 120 ? 120 : la), pa, (int)(lb > 120 ? 120 : lb),
                     pb);
            return;
        }
        if (!ea || !eb) break;
        pa = ea + 1, pb = eb + 1;
    }
    snprintf(out, cap, "(differs)");
}

/* Files this code writes into a parts folder: "<kind>-NNNN.msgpack", and the
 * "<name>.tmp.<pid>" leftovers of writes that a kill interrupted. */
static int sks__is_part_name(const char *s) {
    const char *dash = strchr(s, '-'), *ext = strstr(s, ".msgpack");
    return dash && ext && dash < ext && (!ext[8] || !strncmp(ext + 8, ".tmp.", 5));
}

static int sks__parts_open_rank0(sks_dist_parts *p, const char *manifest, int resume) {
    char mpath[4096];
    snprintf(mpath, sizeof mpath, "%s/manifest.txt", p->dir);
    if (mkdir(p->dir, 0777) && errno != EEXIST)
        return sks_fail(SKS_EIO, "%s: cannot create the parts folder: %s", p->dir, strerror(errno));
    uint8_t *old = NULL;
    size_t on = 0;
    int have = sks_read_file(mpath, &old, &on);
    if (have < 0) return have;
    if (resume && have) {
        char *o = malloc(on + 1);
        if (!o) {
            free(old);
            return sks_fail(SKS_ENOMEM, "out of memory");
        }
        memcpy(o, old, on);
        o[on] = '\0';
        free(old);
        int same = !strcmp(o, manifest);
        if (!same) {
            char why[400];
            sks__first_diff(o, manifest, why, sizeof why);
            free(o);
            return sks_fail(SKS_EARG,
                            "--resume: %s was made with other parameters (%s); rerun without --resume to start over",
                            p->dir, why);
        }
        free(o);
        return 0;
    }
    free(old);
    /* a fresh run: old parts would be from another run */
    DIR *dp = opendir(p->dir);
    if (dp) {
        struct dirent *e;
        while ((e = readdir(dp))) {
            if (!sks__is_part_name(e->d_name)) continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", p->dir, e->d_name);
            unlink(path);
        }
        closedir(dp);
    }
    return sks_write_file_atomic(mpath, manifest, strlen(manifest));
}

int sks_dist_parts_open(sks_dist_parts *p, const char *out_path, const sks_out *inputs, int resume) {
    memset(p, 0, sizeof *p);
    char *manifest = NULL;
    int frc = sks_dist_fingerprint(inputs, &manifest);
    if (frc) return frc;
    size_t n = strlen(out_path);
    int rc = 0;
    if (n + 32 > 4096) rc = sks_fail(SKS_EARG, "%s: path too long for a parts folder", out_path);
    if (!rc && !(p->dir = malloc(n + 7))) rc = sks_fail(SKS_ENOMEM, "out of memory");
    if (!rc) {
        memcpy(p->dir, out_path, n);
        memcpy(p->dir + n, ".parts", 7);
        p->resume = resume;
        if (sks_dist_rank() == 0) rc = sks__parts_open_rank0(p, manifest, resume);
    }
    free(manifest);
    rc = sks_dist_agree(rc);
    if (rc) {
        free(p->dir);
        p->dir = NULL;
    }
    return rc;
}

char *sks_dist_part_path(const sks_dist_parts *p, const char *kind, int item) {
    size_t n = strlen(p->dir) + strlen(kind) + 32;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s-%04d.msgpack", p->dir, kind, item);
    return s;
}

int sks_dist_part_read(const sks_dist_parts *p, const char *kind, int item, uint8_t **buf, size_t *n) {
    char *path = sks_dist_part_path(p, kind, item);
    if (!path) return sks_fail(SKS_ENOMEM, "out of memory");
    int rc = sks_read_file(path, buf, n);
    free(path);
    return rc;
}

int sks_dist_part_write(const sks_dist_parts *p, const char *kind, int item, const void *buf, size_t n) {
    char *path = sks_dist_part_path(p, kind, item);
    if (!path) return sks_fail(SKS_ENOMEM, "out of memory");
    int rc = sks_write_file_atomic(path, buf, n);
    free(path);
    return rc;
}

void sks_dist_parts_remove(sks_dist_parts *p) {
    if (!p->dir || sks_dist_rank() != 0) return;
    DIR *dp = opendir(p->dir);
    if (dp) {
        struct dirent *e;
        while ((e = readdir(dp))) {
            if (!sks__is_part_name(e->d_name) && strncmp(e->d_name, "manifest.txt", 12)) continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", p->dir, e->d_name);
            unlink(path);
        }
        closedir(dp);
    }
    rmdir(p->dir);
}

void sks_dist_parts_free(sks_dist_parts *p) {
    if (!p) return;
    free(p->dir);
    p->dir = NULL;
}
