// Family detection and dispatch to each family's loader.
#include "server/model_loader.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include "absl/strings/str_cat.h"
#include "server/models/openclip/openclip_model.h"

namespace embedserve {

std::string ResolveDevice(const std::string& requested) {
  if (requested != "auto") return requested;
  if (torch::cuda::is_available()) return "cuda:0";
  return "cpu";
}

absl::StatusOr<std::string> DetectFamily(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("model path ", dir, " is not a directory"));
  }
  if (fs::exists(fs::path(dir) / "open_clip_config.json", ec)) return std::string("openclip");
  const fs::path config = fs::path(dir) / "config.json";
  if (fs::exists(config, ec)) {
    std::ifstream in(config);
    nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (json.is_object() && json.value("model_type", "") == "colpali") {
      return std::string("colpali");
    }
    return absl::InvalidArgumentError(absl::StrCat(
        config.string(), ": model_type '",
        json.is_object() ? json.value("model_type", "") : "", "' is not a supported family "
        "(supported: open_clip_config.json directories, model_type colpali)"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "model directory ", dir, " has neither open_clip_config.json nor config.json"));
}

absl::StatusOr<std::unique_ptr<models::Model>> LoadModel(const std::string& dir,
                                                         const LoadSettings& settings) {
  absl::StatusOr<std::string> family = DetectFamily(dir);
  if (!family.ok()) return family.status();
  models::RuntimeOptions options;
  options.device = settings.device;
  options.dtype = settings.dtype;
  options.torch_threads = settings.threads;
  options.blas_threads = settings.blas_threads;
  if (*family == "openclip") return models::openclip::LoadOpenClip(dir, options);
  return absl::UnimplementedError(
      absl::StrCat("the ", *family, " family is not implemented in this build yet"));
}

}  // namespace embedserve
