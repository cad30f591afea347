/* sks_dist.h - distribution: MPI ranks with agreement, gathers and broadcasts, resume
 * parts with their manifest, and the split hook of the analyses (analysis/sks_split.h)
 * over them (docs/scale.md).
 *
 * MPI lives here only (dist/, built with SKS_MPI); the analyses never see it, and this
 * module knows no analysis: it moves the bytes the drivers pack. Without SKS_HAVE_MPI
 * every function works on one process (rank 0 of 1): gathers copy, reductions return
 * their input.
 *
 * Work split (dist/split.c): a driver's n independent items (layers, forward batches)
 * are dealt out round-robin, item i to rank i % size, so that the expensive late layers
 * spread evenly. Every rank but 0 packs its finished items and rank 0 gathers them,
 * decodes them into the driver's slots beside its own, and writes the one output file
 * with the single-process writer. Only rank 0 prints or writes the result.
 *
 * Parts (resume): OUT.parts/ beside the output holds manifest.txt (the fingerprint of
 * the run's inputs, one "key=value" line each) and one <kind>-NNNN.msgpack per finished
 * item, each written atomically (temporary file, fsync, rename). A rerun with --resume
 * loads the finished items instead of computing them, and refuses a manifest that
 * differs. The folder is removed once the final output has been written (itself
 * atomically).
 */
#ifndef SKS_DIST_H
#define SKS_DIST_H

#include "../analysis/sks_out.h"
#include "../analysis/sks_split.h"

#include <stddef.h>
#include <stdint.h>

/* ---- MPI ---------------------------------------------------------------------------- */

/* MPI_Init when the process was started by mpirun (OMPI_COMM_WORLD_SIZE, PMI_SIZE or
 * PMIX_RANK in the environment) and the binary was built with MPI; otherwise nothing.
 * On ranks > 0, stdout and stderr go to /dev/null unless SKS_MPI_VERBOSE=1: the
 * failures of other ranks reach rank 0 through sks_dist_agree. */
void sks_dist_init(int *argc, char ***argv);
void sks_dist_finalize(void);
int sks_dist_rank(void);
int sks_dist_size(void);

/* Collective: every rank passes its rc; all get the first failure (lowest rank with
 * rc != 0), and rank 0 has its message ("rank R: ...") as the last error. */
int sks_dist_agree(int rc);

/* Collective: rank 0 receives the concatenation of every rank's bytes (rank order),
 * *all malloc'd, lens[r] each rank's length (malloc'd, size entries). Other ranks get
 * NULL. Each rank's part must be < 2 GiB (MPI counts are int). */
int sks_dist_gather(const void *mine, size_t n, uint8_t **all, size_t **lens);

/* Collective: rank 0's bytes to every rank; on the others *buf is malloc'd. */
int sks_dist_bcast(uint8_t **buf, size_t *n);

/* Owner of item i of n under the round-robin split. */
static inline int sks_dist_owner(int i) { return i % sks_dist_size(); }

/* ---- parts and resume ----------------------------------------------------------------- */

typedef struct {
    char *dir;       /* OUT.parts */
    int resume;
} sks_dist_parts;

/* Rank 0 creates OUT.parts with the manifest of inputs (sks_dist_fingerprint). resume = 0 clears
 * old layer files; resume = 1 keeps them when the stored manifest equals manifest,
 * and fails with SKS_EARG naming the first differing line when it does not.
 * Collective (the others wait for rank 0 and share its result). */
int sks_dist_parts_open(sks_dist_parts *p, const char *out_path, const sks_out *inputs, int resume);
/* Path of item's part file ("layer-0007.msgpack"); malloc'd. */
char *sks_dist_part_path(const sks_dist_parts *p, const char *kind, int item);
/* Read a part: 1 with *buf malloc'd when the file exists, 0 when it does not. */
int sks_dist_part_read(const sks_dist_parts *p, const char *kind, int item, uint8_t **buf, size_t *n);
int sks_dist_part_write(const sks_dist_parts *p, const char *kind, int item, const void *buf, size_t n);
/* Remove the part files and the folder (after the output is in place); rank 0 only. */
void sks_dist_parts_remove(sks_dist_parts *p);
void sks_dist_parts_free(sks_dist_parts *p);

/* The split hook of the analyses (analysis/sks_split.h) over this process's MPI ranks
 * (one rank without mpirun or without MPI) and, when parts is not NULL, its resume parts
 * (parts must outlive sp). */
void sks_dist_split_init(sks_split *sp, sks_dist_parts *parts);

/* The manifest of a resumable run: every input that changes a part's result, packed
 * by the analysis as one msgpack map (sks_spikes_inputs, sks_vocab_inputs) and
 * rendered as "key=value" lines (nested keys joined with '.', arrays of numbers
 * comma-separated), so that a refused resume names the first line that differs.
 * *text is malloc'd. */
int sks_dist_fingerprint(const sks_out *inputs, char **text);

#endif
