// How a model is placed and run: device, serving dtype and CPU thread counts. Torch-free.
#pragma once

#include <string>

namespace embedserve::models {

struct RuntimeOptions {
  std::string device = "cpu";     // "cpu", "cuda", "cuda:N", "mps"
  std::string dtype = "float32";  // serving dtype: "float32", "bfloat16", "float16"
  // Intra-op threads for libtorch and OpenBLAS's pool; 0 picks the measured default for the
  // dtype on CPU (float32: 1 torch thread over OpenBLAS's own pool; bfloat16: all cores in
  // torch, OpenBLAS on 1 thread).
  int torch_threads = 0;
  int blas_threads = 0;
};

}  // namespace embedserve::models
