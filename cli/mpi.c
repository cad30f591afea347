/* mpi.c - rank and size; 0 and 1 when built without MPI. */
#include "cli.h"

#if SKS_HAVE_MPI
#include <mpi.h>
int sks_cli_mpi_rank(void) {
    int init = 0, r = 0;
    MPI_Initialized(&init);
    if (init) MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}
int sks_cli_mpi_size(void) {
    int init = 0, s = 1;
    MPI_Initialized(&init);
    if (init) MPI_Comm_size(MPI_COMM_WORLD, &s);
    return s;
}
#else
int sks_cli_mpi_rank(void) { return 0; }
int sks_cli_mpi_size(void) { return 1; }
#endif
