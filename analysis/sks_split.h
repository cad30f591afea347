/* sks_split.h - the split hook: how an analysis driver hands its independent work items
 * to a distribution layer (dist/: MPI ranks, resume parts) without knowing either.
 *
 * A driver takes `const sks_split *sp`. NULL is one process without resume parts: the
 * driver runs every item itself and never packs or unpacks a result. Otherwise the
 * driver describes its items as an sks_deal and calls sp->deal: each item is computed
 * on exactly one part (or read back from its resume part) and, afterwards, part 0 holds
 * every item in the driver's own slots. A process never packs its own items to read
 * them back; it packs only what it sends to another part or writes to a resume part.
 *
 * Every function of sks_split is collective: all parts call it in the same order with
 * the same arguments (their own data), and all receive the same return value, the first
 * failure of any part (its message on part 0), so that no part waits for a failed one.
 */
#ifndef SKS_SPLIT_H
#define SKS_SPLIT_H

#include "sks_out.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* n independent items (layers, token batches), each with a slot the driver owns. */
typedef struct {
    int n;
    const char *kind;  /* resume part name: "<kind>-NNNN.msgpack" ("layer", "batch") */
    const int *ids;    /* (n) number of item i in part names and logs; NULL: i */
    const char *log;   /* "spikes": logs "<log>: <kind> N: resumed from its part file";
                          NULL: no line per item */
    const char *progress; /* progress stage (items done on this part), or NULL */
    void *ud;
    /* compute item i into its slot (0 or SKS_E*) */
    int (*run)(void *ud, int i);
    /* item i's slot as one msgpack object */
    void (*pack)(void *ud, int i, sks_out *o);
    /* item i's slot from buf[*off..n), advancing *off; checked (SKS_EFORMAT naming name) */
    int (*unpack)(void *ud, int i, const uint8_t *buf, size_t n, size_t *off, const char *name);
    /* release item i's slot (on a part that sent it away); may be NULL */
    void (*drop)(void *ud, int i);
} sks_deal;

typedef struct sks_split sks_split;
struct sks_split {
    int part, nparts;  /* this process and how many cooperate (>= 1) */
    int resume;        /* resume parts are read back (items finished by an earlier run) */
    int verbose;       /* each part logs its share of the work on stderr (SKS_MPI_VERBOSE) */
    void *ud;          /* the distribution layer's own state */
    /* Deal the items: item i on part i % nparts, or read back from its resume part; each
     * computed item is written to its resume part (when there are parts). Afterwards
     * part 0 holds every item; *n_resumed (part 0) counts the items read back. */
    int (*deal)(const sks_split *sp, const sks_deal *job, int *n_resumed);
    /* The first failure among the parts' rc (0 when none). */
    int (*agree)(const sks_split *sp, int rc);
    /* Part 0's bytes to every part; elsewhere *buf is malloc'd (the caller frees it). */
    int (*bcast)(const sks_split *sp, uint8_t **buf, size_t *n);
    /* Every part's bytes to part 0: *all (malloc'd) their concatenation in part order,
     * (*lens)[p] part p's length (malloc'd); NULL elsewhere. */
    int (*gather)(const sks_split *sp, const void *mine, size_t n, uint8_t **all, size_t **lens);
    /* rows (row0[nblk], width) f64: block b (rows [row0[b], row0[b + 1])) is filled by
     * part b % nparts; afterwards every part holds every block, copied from its owner.
     * status is this part's result so far. label names the work in verbose logs. */
    int (*share)(const sks_split *sp, const char *label, int nblk, const int *row0, size_t width, double *rows, int status);
    /* Resume parts of one item, on the part that calls them: read (1 with *buf and
     * *name, its path, malloc'd; 0 when absent) and write. NULL when the run has no
     * parts folder. */
    int (*part_read)(const sks_split *sp, const char *kind, int i, uint8_t **buf, size_t *n, char **name);
    int (*part_write)(const sks_split *sp, const char *kind, int i, const void *buf, size_t n);
};

#ifdef __cplusplus
}
#endif
#endif
