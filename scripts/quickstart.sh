#!/usr/bin/env bash
# Installs dependencies, builds sinkscope and runs the demo: a model synthesized on the
# spot (no downloads, no files from outside the repository) analysed end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
./build/sinkscope demo -o demo-out
echo "demo results are in demo-out/ (open demo-out/report.html)"
