// Random OpenCLIP checkpoints in the hub layout, written by our own code for tests and
// benchmarks (a separate library, not linked into the server).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "server/models/openclip/openclip_config.h"

namespace embedserve::models::openclip {

// Writes a randomly initialised checkpoint of `config` in the hub format into `dir`
// (created if missing): open_clip_config.json + open_clip_model.safetensors with weights in
// `weight_dtype` ("F32", "F16", "BF16"). Not a trained model.
absl::Status WriteRandomCheckpoint(const OpenClipConfig& config, const std::string& dir,
                                   const std::string& weight_dtype, uint64_t seed);

}  // namespace embedserve::models::openclip
