// Random ColPali checkpoints in each key layout, for tests and benchmarks (not linked into
// the server).
#include "server/models/colpali/colpali_random_checkpoint.h"

#include <cmath>
#include <utility>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/models/colpali/colpali_modules.h"
#include "server/models/random_checkpoint.h"

namespace embedserve::models::colpali {

namespace {

absl::Status Write(const ColPaliConfig& config, const std::string& dir,
                   const std::string& weight_dtype, uint64_t seed, KeyLayout layout,
                   const std::string& config_json) {
  auto generate = [&config, layout](const EmitTensor& emit) {
    ColPaliModule module(config, at::TensorOptions().dtype(at::kFloat));
    for (auto& item : module.named_parameters(true)) {
      const std::string& name = item.key();
      at::Tensor& p = item.value();
      if (absl::StrContains(name, "layer_norm") || absl::StrContains(name, "post_layernorm")) {
        if (absl::EndsWith(name, ".weight")) {
          p.normal_(1.0, 0.05);
        } else {
          p.normal_(0.0, 0.05);
        }
      } else if (absl::EndsWith(name, "norm.weight")) {
        p.normal_(0.0, 0.1);  // Gemma RMSNorm: scale is 1 + w
      } else if (absl::EndsWith(name, "bias")) {
        p.normal_(0.0, 0.01);
      } else if (p.dim() >= 2) {
        const int64_t fan_in = p.numel() / p.size(0);
        p.normal_(0.0, absl::EndsWith(name, "embed_tokens.weight") ||
                               absl::EndsWith(name, "position_embedding.weight")
                           ? 0.1
                           : 1.0 / std::sqrt(static_cast<double>(fan_in)));
      } else {
        p.normal_(0.0, 0.02);
      }
      emit(CheckpointKey(name, layout), p);
    }
  };
  return WriteRandomCheckpointFiles(
      dir, weight_dtype, seed, generate, "model.safetensors",
      {{"config.json", config_json},
       {"preprocessor_config.json", PreprocessorConfigToJson(config)}});
}

}  // namespace

absl::Status WriteRandomCheckpoint(const ColPaliConfig& config, const std::string& dir,
                                   const std::string& weight_dtype, uint64_t seed,
                                   KeyLayout layout) {
  return Write(config, dir, weight_dtype, seed, layout, ColPaliConfigToJson(config));
}

absl::Status WriteRandomColPaliEngineCheckpoint(const ColPaliConfig& config, const std::string& dir,
                                                const std::string& weight_dtype, uint64_t seed) {
  return Write(config, dir, weight_dtype, seed, KeyLayout::kColPaliEngine,
               ColPaliEngineConfigToJson(config));
}

}  // namespace embedserve::models::colpali
