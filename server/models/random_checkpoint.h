// What every family's random-checkpoint writer shares (tests and benchmarks only): the
// directory, the seed, the weight dtype, the safetensors file and the config files beside it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"

namespace embedserve::models {

// Receives one generated parameter: its checkpoint key and its float32 values.
using EmitTensor = std::function<void(const std::string& key, const at::Tensor& values)>;

// Creates `dir`, runs `generate` under at::manual_seed(seed) without autograd (libtorch
// exceptions become a status), converts each emitted tensor to `weight_dtype` ("F32", "F16",
// "BF16") at once (so only one float32 tensor is alive at a time), writes them as
// `dir/weights_file`, then each (name, text) of `text_files` with a final newline.
absl::Status WriteRandomCheckpointFiles(
    const std::string& dir, const std::string& weight_dtype, uint64_t seed,
    const std::function<void(const EmitTensor& emit)>& generate, const std::string& weights_file,
    const std::vector<std::pair<std::string, std::string>>& text_files);

}  // namespace embedserve::models
