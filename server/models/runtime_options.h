// How a model is placed and run: device, serving dtype and CPU thread counts. Torch-free.
#pragma once

#include <string>

#include "server/models/serving_dtype.h"

namespace embedserve::models {

struct RuntimeOptions {
  std::string device = "cpu";     // "cpu", "cuda", "cuda:N", "mps"
  // Serving dtype: "float32", "bfloat16", "float16", or "auto" (what the device runs fast;
  // see serving_dtype.h).
  std::string dtype = "float32";
  // Intra-op threads for libtorch and OpenBLAS's pool; 0 picks the measured default for the
  // dtype on CPU (float32: 1 torch thread over OpenBLAS's own pool; bfloat16: all cores in
  // torch, OpenBLAS on 1 thread).
  int torch_threads = 0;
  int blas_threads = 0;
  // Serve an explicit bfloat16 on a CPU where it is a slow fallback (refused otherwise).
  bool allow_slow_bfloat16 = false;
  // The CPU facts the dtype choice uses (features, measurement); null: this host's. Tests
  // inject other CPUs here.
  const DtypeContext* dtype_context_for_testing = nullptr;
};

}  // namespace embedserve::models
