#!/usr/bin/env bash
# Installs every Debian package sinkscope needs to build, test and plot.
# Run as root on Debian 12 (bookworm) or newer.
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config git
  libopenblas-dev liblapacke-dev libgsl-dev libmsgpack-dev libjansson-dev
  libpcre2-dev libutf8proc-dev
  libcmocka-dev libopenmpi-dev openmpi-bin
  clang libclang-rt-14-dev
  python3 python3-numpy python3-matplotlib python3-msgpack
  python3-nbformat python3-nbconvert jupyter-nbconvert python3-ipykernel
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "install-deps: all packages present"
