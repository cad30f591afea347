/* sks_test.h - shared test helpers (cmocka). */
#ifndef SKS_TEST_H
#define SKS_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* Path under the fixtures folder (../shared/fixtures), in a static buffer ring. */
const char *sks_test_fixture(const char *rel);
/* 1 if the fixtures folder exists. Executables that need it call
 * SKS_REQUIRE_FIXTURES() first in main: exit 77 (ctest: skipped) when absent. */
int sks_test_have_fixtures(void);
#define SKS_REQUIRE_FIXTURES()                                                          \
    do {                                                                                \
        if (!sks_test_have_fixtures()) {                                                \
            fprintf(stderr, "SKIPPED: fixtures folder %s not found\n", SKS_FIXTURES);   \
            return 77;                                                                  \
        }                                                                               \
    } while (0)
/* A fresh temporary directory (mkdtemp under $TMPDIR or /tmp); caller frees string. */
char *sks_test_tmpdir(void);
/* Read a whole file (tests only). Caller frees. NULL on failure. */
char *sks_test_read_file(const char *path, size_t *len);
/* Relative difference |a-b| / max(|b|, floor). */
double sks_test_reldiff(double a, double b, double floor_);

#endif
