#!/usr/bin/env bash
# Installs dependencies, builds sinkscope twice (ASan+UBSan+LeakSanitizer, and release)
# and runs the whole test suite in both (the command-line tests run the sanitized binary
# in the first pass). Tests that need ../shared/fixtures report SKIPPED without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
J=$(nproc 2>/dev/null || echo 2)

echo "== sanitizer build (ASan + UBSan) =="
cmake -S . -B build-san -DCMAKE_BUILD_TYPE=Debug -DSKS_ASAN=ON -DSKS_UBSAN=ON -DSKS_WERROR=ON -DSKS_MPI=OFF >/dev/null
cmake --build build-san -j"$J" >/dev/null
( cd build-san && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  OPENBLAS_NUM_THREADS=1 ctest --output-on-failure -j"$J" )

echo "== release build =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSKS_WERROR=ON >/dev/null
cmake --build build -j"$J" >/dev/null
( cd build && ctest --output-on-failure -j"$J" )
