// Random OpenCLIP checkpoints in the hub layout, for tests and benchmarks (not linked into
// the server).
#include "server/models/openclip/openclip_random_checkpoint.h"

#include <cmath>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/models/openclip/openclip_model.h"
#include "server/models/random_checkpoint.h"

namespace embedserve::models::openclip {

absl::Status WriteRandomCheckpoint(const OpenClipConfig& config, const std::string& dir,
                                   const std::string& weight_dtype, uint64_t seed) {
  // One parameter at a time (shapes from the meta device), so the peak memory is the file's
  // bytes plus one float32 tensor: ViT-bigG-14 fits beside everything else.
  auto generate = [&config](const EmitTensor& emit) {
    for (const auto& [name, shape] : ParameterShapes(config)) {
      at::Tensor p = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
      if (name == "logit_scale") {
        p.fill_(std::log(1 / 0.07));
      } else if (name.find("ln_") != std::string::npos) {
        if (absl::EndsWith(name, ".weight")) {
          p.normal_(1.0, 0.05);
        } else {
          p.normal_(0.0, 0.05);
        }
      } else if (absl::EndsWith(name, "bias")) {
        p.normal_(0.0, 0.01);
      } else {
        p.normal_(0.0, p.dim() >= 2 ? 1.0 / std::sqrt(static_cast<double>(p.size(-1))) : 0.02);
      }
      emit(name, p);
    }
  };
  return WriteRandomCheckpointFiles(dir, weight_dtype, seed, generate,
                                    "open_clip_model.safetensors",
                                    {{"open_clip_config.json", OpenClipConfigToJson(config)}});
}

}  // namespace embedserve::models::openclip
