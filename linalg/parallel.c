/* parallel.c - one way to spread independent items over threads (sks_parallel_for). */
#include "sks_linalg.h"

#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

enum { SKS__PAR_MAX = 64 };

typedef struct {
    int (*fn)(void *ud, int i, int w);
    void *ud;
    int n, w;
    int *next;     /* shared: the next item to hand out */
    int *stop;     /* shared: set by the first failure */
    int rc, item;  /* this worker's first failure and its item */
    char msg[512]; /* and its message (errors are per thread) */
} sks__par_job;

static void *sks__par_main(void *arg) {
    sks__par_job *j = arg;
    for (;;) {
        if (__atomic_load_n(j->stop, __ATOMIC_ACQUIRE)) break;
        int i = __atomic_fetch_add(j->next, 1, __ATOMIC_ACQ_REL);
        if (i >= j->n) break;
        int rc = j->fn(j->ud, i, j->w);
        if (rc) {
            j->rc = rc;
            j->item = i;
            snprintf(j->msg, sizeof j->msg, "%s", sks_last_error());
            __atomic_store_n(j->stop, 1, __ATOMIC_RELEASE);
            break;
        }
    }
    return NULL;
}

int sks_parallel_for(int n, int nw, int (*fn)(void *ud, int i, int w), void *ud) {
    if (n <= 0) return 0;
    if (nw > SKS__PAR_MAX) nw = SKS__PAR_MAX;
    if (nw > n) nw = n;
    if (nw <= 1) {
        for (int i = 0; i < n; i++) {
            int rc = fn(ud, i, 0);
            if (rc) return rc;
        }
        return 0;
    }
    int next = 0, stop = 0;
    sks__par_job jobs[SKS__PAR_MAX];
    pthread_t th[SKS__PAR_MAX];
    int started[SKS__PAR_MAX] = {0};
    const int saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
    for (int w = 0; w < nw; w++) jobs[w] = (sks__par_job){fn, ud, n, w, &next, &stop, 0, 0, {0}};
    for (int w = 1; w < nw; w++) started[w] = pthread_create(&th[w], NULL, sks__par_main, &jobs[w]) == 0;
    sks__par_main(&jobs[0]); /* a worker that did not start leaves its items to the others */
    for (int w = 1; w < nw; w++)
        if (started[w]) pthread_join(th[w], NULL);
    openblas_set_num_threads(saved);
    /* the failure of the lowest item, as a loop in order would have met first */
    int first = -1;
    for (int w = 0; w < nw; w++)
        if (jobs[w].rc && (first < 0 || jobs[w].item < jobs[first].item)) first = w;
    if (first < 0) return 0;
    return sks_fail(jobs[first].rc, "%s", jobs[first].msg);
}
