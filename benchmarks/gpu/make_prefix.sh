#!/usr/bin/env bash
# Packs the Debian libraries embedserve builds with (everything but libtorch) into
# .device/prefix.tar.xz, for benchmarks/gpu/run_on_gpu.sh on a lent GPU machine, which has
# PyTorch, CMake, ninja and g++ but no gRPC, Abseil, ICU, ... and no network. Run here (Debian
# 12, packages reachable); `.device/` is ignored by git and travels with `carry`.
#   benchmarks/gpu/make_prefix.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
out="$here/.device"
packages=(
  libgrpc++-dev libgrpc-dev libgrpc++1.51 libgrpc29 protobuf-compiler-grpc grpc-proto
  libprotobuf-dev libprotobuf32 libprotoc32 protobuf-compiler
  libabsl-dev libabsl20220623 libre2-dev libre2-9 libc-ares-dev libc-ares2
  libssl-dev libssl3 zlib1g-dev libcli11-dev nlohmann-json3-dev catch2
  libicu-dev libicu72 libjpeg62-turbo-dev libjpeg62-turbo libjpeg-dev libpng-dev libpng16-16
  libgif-dev libgif7 libwebp-dev libwebp7 libwebpdemux2 libwebpmux3
  # libcurl and the two libraries it needs that an Ubuntu 24.04 image lacks
  libcurl4-openssl-dev libcurl4 libssh2-1 libldap-2.5-0
  libopenblas0-pthread libopenblas-dev libopenblas-pthread-dev libopenblas0 libblas-dev libgfortran5
  pkgconf libpkgconf3 pkgconf-bin
)
rm -rf "$out/debs" "$out/prefix"
mkdir -p "$out/debs" "$out/prefix"
(cd "$out/debs" && apt-get download "${packages[@]}")
for deb in "$out"/debs/*.deb; do dpkg -x "$deb" "$out/prefix"; done
cd "$out/prefix"
# Static libraries and documentation are not needed (Catch2's main library is the exception).
find . -name '*.a' ! -name 'libCatch2WithMain.a' -delete
rm -rf usr/share/doc usr/share/man usr/share/lintian usr/share/bash-completion
# What Debian's alternatives and absolute links would provide.
ln -sf /lib/x86_64-linux-gnu/libz.so.1 usr/lib/x86_64-linux-gnu/libz.so
for lib in libblas.so.3 libblas.so libopenblas.so.0 libopenblas.so; do
  ln -sf "openblas-pthread/$lib" "usr/lib/x86_64-linux-gnu/$lib"
done
ln -sf openblas-pthread/cblas.h usr/include/x86_64-linux-gnu/cblas.h
cd "$out"
tar cJf prefix.tar.xz -C prefix .
ls -la prefix.tar.xz
