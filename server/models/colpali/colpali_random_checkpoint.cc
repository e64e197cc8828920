// Random ColPali checkpoints in each key layout, for tests and benchmarks (not linked into
// the server).
#include "server/models/colpali/colpali_random_checkpoint.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <utility>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/models/colpali/colpali_modules.h"
#include "server/models/torch_util.h"

namespace embedserve::models::colpali {

namespace fs = std::filesystem;

absl::Status WriteRandomCheckpoint(const ColPaliConfig& config, const std::string& dir,
                                   const std::string& weight_dtype, uint64_t seed,
                                   KeyLayout layout) {
  absl::StatusOr<WeightDtype> file_dtype = ParseWeightDtype(weight_dtype);
  if (!file_dtype.ok()) return file_dtype.status();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  std::vector<TensorToWrite> tensors;
  absl::Status made = GuardTorch("random initialisation", [&] {
    at::NoGradGuard no_grad;
    at::manual_seed(seed);
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
      tensors.push_back(ToTensorToWrite(CheckpointKey(name, layout), p, *file_dtype));
    }
  });
  if (!made.ok()) return made;
  if (absl::Status s = WriteSafetensors((fs::path(dir) / "model.safetensors").string(), tensors,
                                        {{"format", "pt"}});
      !s.ok()) {
    return s;
  }
  for (const auto& [file, text] :
       {std::pair<std::string, std::string>{"config.json", ColPaliConfigToJson(config)},
        {"preprocessor_config.json", PreprocessorConfigToJson(config)}}) {
    std::ofstream out(fs::path(dir) / file, std::ios::binary | std::ios::trunc);
    out << text << "\n";
    if (!out) return absl::InternalError(absl::StrCat(dir, ": cannot write ", file));
  }
  return absl::OkStatus();
}

}  // namespace embedserve::models::colpali
