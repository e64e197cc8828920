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
#include "server/models/runtime_options.h"

namespace embedserve::models::openclip {

// Loads the model in `dir`. Every problem with the files is INVALID_ARGUMENT (or NOT_FOUND)
// naming the file, the tensor or field, and what was expected.
absl::StatusOr<std::unique_ptr<Model>> LoadOpenClip(const std::string& dir,
                                                    const RuntimeOptions& options);

// The family entry: directories with open_clip_config.json, weights in
// open_clip_model.safetensors, loaded by LoadOpenClip.
const ModelFamily& OpenClipFamily();

// Every parameter the module for `config` has, as (state_dict key, shape), sorted by key;
// computed on the meta device without allocating the weights.
std::vector<std::pair<std::string, std::vector<int64_t>>> ParameterShapes(
    const OpenClipConfig& config);

}  // namespace embedserve::models::openclip
