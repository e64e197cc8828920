#!/usr/bin/env bash
# The GPU session in one command, for a lent CUDA machine (PyTorch wheel with CUDA, CMake,
# ninja, g++; no network): builds embedserve against the wheel's libtorch and the Debian
# libraries carried in .device/prefix.tar.xz (made by benchmarks/gpu/make_prefix.sh), then
# runs the CUDA checks and benchmarks. Every step is bounded and logged to $OUT/gpu.log; a
# failed step does not stop the later ones.
#   OUT=/some/dir benchmarks/gpu/run_on_gpu.sh [steps...]   (default: all steps)
set -u
here="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$here"
OUT="${OUT:-/tmp/embedserve-gpu}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu.log") 2>&1
steps="${*:-info fixture build sync clip python load tests colpali maxsim}"
prefix=/opt/embedserve-deb
build="$here/build-gpu"
dev=cuda:0
step() { echo; echo "=== $(date +%T) $*"; }
want() { [[ " $steps " == *" $1 "* ]]; }

export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu:$prefix/usr/lib/x86_64-linux-gnu/openblas-pthread:$prefix/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export PATH="$prefix/usr/bin:$PATH"
export PKG_CONFIG_LIBDIR="$prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$prefix/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$prefix"
py="env -u LD_LIBRARY_PATH -u PKG_CONFIG_LIBDIR -u PKG_CONFIG_SYSROOT_DIR python3"
torch_cmake="$($py -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)"
abi="$($py -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))' 2>/dev/null)"

if want info; then
  step info
  nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
  g++ --version | head -1; cmake --version | head -1; nproc; free -g | head -2
  $py -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
  echo "torch cmake prefix=$torch_cmake abi=$abi"
fi

if want fixture; then
  step "HF tokenizer fixture (transformers/tokenizers on this machine)"
  timeout 60 $py tests/tools/make_hf_tokenizer_fixture.py \
    --model tests/data/colpali-reference/model/tokenizer.model --out "$OUT/hf" &&
    cp "$OUT/hf/tokenizer.json" "$OUT/hf_tokenizer.json" &&
    cp "$OUT/hf/hf_expected_ids.json" "$OUT/hf_expected_ids.json"
  rm -rf "$OUT/hf"
fi

if want build; then
  step "unpack the Debian prefix"
  mkdir -p "$prefix" && tar xJf .device/prefix.tar.xz -C "$prefix" && echo unpacked
  # libtorch 2.12 and later need C++20 (u8 literals stay char in this code base).
  std=17; extra=""
  if $py -c 'import sys, torch; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(0 if v >= (2, 12) else 1)'; then
    std=20; extra="-fno-char8_t"
  fi
  isystem="-isystem $prefix/usr/include/x86_64-linux-gnu/openblas-pthread -isystem $prefix/usr/include/x86_64-linux-gnu -isystem $prefix/usr/include"
  common=(-S "$here" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_LIBRARY_ARCHITECTURE=x86_64-linux-gnu
          -DPKG_CONFIG_EXECUTABLE="$prefix/usr/bin/pkgconf" -DCMAKE_POLICY_VERSION_MINIMUM=3.5
          "-DCMAKE_CXX_FLAGS=-include cstdint $extra $isystem" -DCMAKE_CXX_STANDARD=$std
          "-DCMAKE_C_FLAGS=$isystem"
          "-DCMAKE_BUILD_RPATH=$prefix/usr/lib/x86_64-linux-gnu")
  step "configure (the wheel's Torch CMake package)"
  rm -rf "$build"
  timeout 180 cmake "${common[@]}" -B "$build" "-DCMAKE_PREFIX_PATH=$prefix/usr;$torch_cmake"
  step build
  timeout 400 ninja -C "$build" -k 0 gpu_sync_check clip_forward_bench embedserve load_bench \
    colpali_bench openclip_tests colpali_tests 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\]' | tail -60
  ls -la "$build/server/embedserve" "$build/benchmarks/" 2>&1 | head -20
fi

if want tests; then
  step "model tests on $dev (reference fidelity)"
  EMBEDSERVE_TEST_DEVICE=$dev timeout 60 "$build/tests/models/openclip_tests" "~[large]" 2>&1 | tail -15
  EMBEDSERVE_TEST_DEVICE=$dev timeout 60 "$build/tests/models/colpali_tests" "~[large]" 2>&1 | tail -15
fi

if want sync; then
  step "no host sync while launching; GPU == CPU"
  timeout 90 "$build/benchmarks/gpu_sync_check" --device $dev
fi

if want clip; then
  step "OpenCLIP ViT-B-32 forward on $dev"
  timeout 120 "$build/benchmarks/clip_forward_bench" --device $dev --no-sweep --reps 5 \
    --dtypes float32,bfloat16 --batches 1,32,128
fi

if want python; then
  step "PyTorch baseline (OpenCLIP's graph) on $dev, same machine"
  timeout 60 $py benchmarks/openclip_torch_baseline.py --device cuda --reps 5 \
    --dtypes float32,bfloat16 --batches 1,32,128
fi

if want maxsim; then
  step "MaxSim 1,000 pages x 1,030 x 128 vs a 20-token query on $dev"
  timeout 60 "$build/benchmarks/maxsim_bench" --device $dev
fi

if want load; then
  step "load_bench: 16 single-image callers, server on $dev (bfloat16)"
  model_dir=/tmp/embedserve-bench-ViT-B-32
  timeout 90 "$build/benchmarks/load_bench" --model-dir "$model_dir" --kind image --concurrency 16 \
    --seconds 10 --inprocess-reps 5 --image tests/data/openclip-reference/images/photo_800x600.jpg \
    --server-arg=--device=$dev --server-arg=--dtype=bfloat16
fi

if want colpali; then
  step "ColPali full size (random weights) on $dev"
  timeout 150 "$build/benchmarks/colpali_bench" --device $dev --dtypes bfloat16 --skip-mid --full \
    --batch 8 --repeats 3
fi
step done
