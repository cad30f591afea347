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

# The numeric tests once more under a second OpenBLAS kernel, so that a tolerance that
# holds on one kernel only fails here and not on someone else's machine (STYLE 13).
# OpenBLAS picks the best kernel for the CPU by itself (SkylakeX with AVX-512, Haswell
# with AVX2); the second run forces an older one that this CPU also has (forcing a
# kernel whose instructions the CPU lacks dies with SIGILL).
FLAGS=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has() { [[ " $FLAGS " == *" $1 "* ]]; }
if has avx512f && has avx2 && has fma; then CORE2=Haswell
elif has avx2; then CORE2=Nehalem
elif has ssse3; then CORE2=Prescott
else CORE2=""; fi
if [ -n "$CORE2" ]; then
  echo "== numeric tests again with OPENBLAS_CORETYPE=$CORE2 =="
  ( cd build && OPENBLAS_CORETYPE=$CORE2 ctest --output-on-failure -j"$J" -R '^test-' \
      -E '^test-(core|hostile|tokenizer|loaders|fuzz-regress)$' )
else
  echo "== no second OpenBLAS kernel for this CPU: numeric tests ran once =="
fi
