// How a model is placed and run: device, serving dtype and CPU thread counts. Torch-free.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "server/models/serving_dtype.h"

namespace embedserve::models {

struct RuntimeOptions {
  std::string device = "cpu";     // "cpu", "cuda", "cuda:N", "mps"
  // Serving dtype: "float32", "bfloat16", "float16", "int8" (CPU: int8 Linear weights,
  // int8_linear.h), or "auto" (what the device runs fast; see serving_dtype.h).
  std::string dtype = "float32";
  // Intra-op threads for libtorch and OpenBLAS's pool; 0 picks the measured default for the
  // dtype on CPU (float32: 1 torch thread over OpenBLAS's own pool; bfloat16 and int8: all
  // cores in torch, OpenBLAS on 1 thread).
  int torch_threads = 0;
  int blas_threads = 0;
  // Serve an explicit bfloat16 on a CPU where it is a slow fallback (refused otherwise).
  bool allow_slow_bfloat16 = false;
  // The CPU facts the dtype choice uses (features, measurement); null: this host's. Tests
  // inject other CPUs here.
  const DtypeContext* dtype_context_for_testing = nullptr;
  // ColPali's prompt profile ("transformers", "colpali-engine", "colpali-engine-X.Y.Z"; see
  // server/models/colpali/NOTES.md); empty: chosen by the checkpoint's kind.
  std::string colpali_prompt_profile;
  // Turns a hub id (ORG/REPO) that a LoRA adapter names as its base_model_name_or_path into a
  // local directory. Null: a base must be a local directory. LoadModel (model_loader.h) sets
  // one over the Hugging Face cache when the caller did not.
  std::function<absl::StatusOr<std::string>(const std::string& repo_id)> resolve_base_model;
};

}  // namespace embedserve::models
