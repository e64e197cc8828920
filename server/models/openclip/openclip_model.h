// The OpenCLIP family behind the Model interface: loads a hub-format directory
// (open_clip_config.json + open_clip_model.safetensors), tokenizes, preprocesses images and
// runs the towers on the configured device and dtype.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/models/family.h"
#include "server/models/model.h"
#include "server/models/openclip/openclip_config.h"
#include "server/models/openclip/openclip_pretrained.h"
#include "server/models/runtime_options.h"

namespace embedserve::models::openclip {

// Loads the model in `dir`. Every problem with the files is INVALID_ARGUMENT (or NOT_FOUND)
// naming the file, the tensor or field, and what was expected.
absl::StatusOr<std::unique_ptr<Model>> LoadOpenClip(const std::string& dir,
                                                    const RuntimeOptions& options);

// Loads `spec` (openclip:ARCH/TAG) as open_clip's create_model_and_transforms(ARCH,
// pretrained=TAG) builds it: the shipped config of ARCH (its activation: ARCH decides), the
// tag's preprocessing, the bundled tokenizer, and the weights file in `dir` (the tag's
// snapshot: open_clip_model.safetensors, else open_clip_pytorch_model.bin). Any config file
// in `dir` is ignored. UNIMPLEMENTED for a tag whose preprocessing the native code cannot run.
// The description names the activation and the resolved origin (REPO@SHA/FILE).
absl::StatusOr<std::unique_ptr<Model>> LoadOpenClipPretrained(const PretrainedSpec& spec,
                                                              const std::string& dir,
                                                              const RuntimeOptions& options);

// The number of parameters LoadOpenClipPretrained builds for `spec` (all floating point).
absl::StatusOr<int64_t> PretrainedParameterCount(const PretrainedSpec& spec);

// The family entry: directories with open_clip_config.json, weights in
// open_clip_model.safetensors, loaded by LoadOpenClip.
const ModelFamily& OpenClipFamily();

// Every parameter the module for `config` has, as (state_dict key, shape), sorted by key;
// computed on the meta device without allocating the weights.
std::vector<std::pair<std::string, std::vector<int64_t>>> ParameterShapes(
    const OpenClipConfig& config);

}  // namespace embedserve::models::openclip
