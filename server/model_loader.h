// Loads a model from a directory by recognising its family from the files it holds, through
// the family registry (server/models/registry.h): OpenCLIP (open_clip_config.json), ColPali
// (config.json with model_type colpali or colpali-engine's paligemma ColPali; adapters, whose
// hub base is resolved here), the cross-encoder.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/models/model.h"
#include "server/models/runtime_options.h"

namespace embedserve {

// "auto" -> the first of cuda, mps, cpu this build and machine have; anything else unchanged.
std::string ResolveDevice(const std::string& requested);

// The family name ("openclip", "colpali") found in `dir`, or INVALID_ARGUMENT naming what
// is missing.
absl::StatusOr<std::string> DetectFamily(const std::string& dir);

// Estimated memory of the model in `dir` once loaded in `dtype` ("float32", "bfloat16",
// "float16", or "auto" on `device`, counted as what auto picks there): the sum over its
// weight tensors (the family's safetensors checkpoint, sharded or not, plus its extra files
// such as an adapter; else every *.safetensors file in `dir`) of numel x the size of the
// type it is served in (floating tensors take `dtype`, others keep their own). Reads only
// the headers. INVALID_ARGUMENT if `dir` is no family's.
absl::StatusOr<int64_t> EstimateModelBytes(const std::string& dir, const std::string& dtype,
                                           const std::string& device = "cpu");

// Loads and returns the model; UNIMPLEMENTED for a family this build cannot run yet.
// `options.device` must be resolved ("cpu", "cuda:N", "mps"; see ResolveDevice). Without
// `options.resolve_base_model`, DefaultBaseModelResolver() is used.
// How an adapter's hub base (base_model_name_or_path "ORG/REPO") becomes a directory: the
// directory $EMBEDSERVE_BASE_MODEL_DIRS names for it ("ORG/REPO=DIR[,ORG/REPO=DIR...]"), else
// hf:ORG/REPO through the Hugging Face cache (sources::ResolveModelSource: offline from the
// cache under HF_HUB_OFFLINE=1, else downloaded if missing).
std::function<absl::StatusOr<std::string>(const std::string& repo_id)> DefaultBaseModelResolver();

absl::StatusOr<std::unique_ptr<models::Model>> LoadModel(const std::string& dir,
                                                         const models::RuntimeOptions& options);

}  // namespace embedserve
