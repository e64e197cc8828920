// Random OpenCLIP checkpoints in the hub layout, for tests and benchmarks (not linked into
// the server).
#include "server/models/openclip/openclip_random_checkpoint.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/models/openclip/openclip_model.h"
#include "server/models/torch_util.h"

namespace embedserve::models::openclip {

namespace fs = std::filesystem;

absl::Status WriteRandomCheckpoint(const OpenClipConfig& config, const std::string& dir,
                                   const std::string& weight_dtype, uint64_t seed) {
  absl::StatusOr<WeightDtype> file_dtype = ParseWeightDtype(weight_dtype);
  if (!file_dtype.ok()) return file_dtype.status();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  std::vector<TensorToWrite> tensors;
  absl::Status made = GuardTorch("random initialisation", [&] {
    at::NoGradGuard no_grad;
    at::manual_seed(seed);
    // One parameter at a time (shapes from the meta device), so the peak memory is the file's
    // bytes plus one float32 tensor: ViT-bigG-14 fits beside everything else.
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
      tensors.push_back(ToTensorToWrite(name, p, *file_dtype));
    }
  });
  if (!made.ok()) return made;
  if (absl::Status s = WriteSafetensors((fs::path(dir) / "open_clip_model.safetensors").string(),
                                        tensors, {{"format", "pt"}});
      !s.ok()) {
    return s;
  }
  std::ofstream out(fs::path(dir) / "open_clip_config.json", std::ios::binary | std::ios::trunc);
  out << OpenClipConfigToJson(config) << "\n";
  if (!out) return absl::InternalError(absl::StrCat(dir, ": cannot write open_clip_config.json"));
  return absl::OkStatus();
}

}  // namespace embedserve::models::openclip
