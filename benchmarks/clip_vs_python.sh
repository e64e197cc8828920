#!/usr/bin/env bash
# One command for the OpenCLIP performance figures: the native forward (clip_forward_bench)
# and the PyTorch baseline (openclip_torch_baseline.py, OpenCLIP's graph in Debian's
# python3-torch) in the same run, then the ratio at batch 8.
#   benchmarks/clip_vs_python.sh [BUILD_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$here/build}"
native="$("$build/benchmarks/clip_forward_bench" --no-sweep)"
echo "$native"
python="$(/usr/bin/python3 "$here/benchmarks/openclip_torch_baseline.py")"
echo "$python"
best_python="$(awk '/batch 8:/ {v=$(NF-1); if (v>b) b=v} END {print b}' <<<"$python")"
fp32="$(awk '$1=="float32" && $5==8 {print $6}' <<<"$native")"
bf16="$(awk '$1=="bfloat16" && $5==8 {print $6}' <<<"$native")"
awk -v p="$best_python" -v f="$fp32" -v b="$bf16" 'BEGIN {
  printf "\nbatch 8, images/s: python float32 %.1f | native float32 %.1f (%.2fx) | native bfloat16 %.1f (%.2fx)\n", p, f, f/p, b, b/p }'
