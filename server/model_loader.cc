// Family detection, weight estimates and loading, through the family registry.
#include "server/model_loader.h"

#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <ATen/Context.h>
#include <torch/cuda.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/log.h"
#include "server/models/config_json.h"
#include "server/models/cpu_features.h"
#include "server/models/device_choice.h"
#include "server/models/torch_util.h"
#include "server/models/registry.h"
#include "server/weights/safetensors.h"
#include "server/models/serving_dtype.h"
#include "server/openclip_source.h"
#include "server/sources/hf_hub.h"

namespace embedserve {

std::string ResolveDevice(const std::string& requested) {
  return models::ChooseDevice(requested, models::HostDeviceAvailability());
}

namespace {

// The registered family whose directories `dir` is one of; INVALID_ARGUMENT naming what
// each family looks for otherwise.
absl::StatusOr<const models::ModelFamily*> FindFamily(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("model path ", dir, " is not a directory"));
  }
  std::vector<std::string> wanted;
  for (const models::ModelFamily* family : models::ModelFamilies()) {
    if (family->detect(dir)) return family;
    wanted.push_back(family->recognized_by);
  }
  const fs::path config = fs::path(dir) / "config.json";
  if (fs::exists(config, ec)) {
    absl::StatusOr<std::string> text = models::config_json::ReadConfigFile(config.string());
    if (!text.ok()) return text.status();
    const nlohmann::json json = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    return absl::InvalidArgumentError(absl::StrCat(
        config.string(), ": model_type '", json.is_object() ? json.value("model_type", "") : "",
        "' is not a supported family (supported: ", absl::StrJoin(wanted, "; "), ")"));
  }
  return absl::InvalidArgumentError(absl::StrCat("model directory ", dir, " has neither ",
                                                 absl::StrJoin(wanted, " nor ")));
}

}  // namespace

absl::StatusOr<std::string> DetectFamily(const std::string& dir) {
  absl::StatusOr<const models::ModelFamily*> family = FindFamily(dir);
  if (!family.ok()) return family.status();
  return (*family)->name;
}

absl::StatusOr<int64_t> EstimateModelBytes(const std::string& dir, const std::string& dtype,
                                           const std::string& device) {
  namespace fs = std::filesystem;
  const int64_t float_size = models::ServingFloatBytes(dtype, models::HostCpuFeatures(),
                                                       /*on_cpu=*/device == "cpu");
  if (IsOpenClipPretrainedLocator(dir)) return EstimateOpenClipPretrained(dir, float_size);
  auto weigh = [float_size](const weights::TensorArchive& archive) {
    int64_t total = 0;
    for (const auto& file : archive.files()) {
      for (const weights::TensorView& tensor : file->tensors()) {
        const weights::TensorDtype t = tensor.dtype;
        const bool floating = t == weights::TensorDtype::kF32 || t == weights::TensorDtype::kF16 ||
                              t == weights::TensorDtype::kBF16 || t == weights::TensorDtype::kF64;
        total += tensor.numel() *
                 (floating ? float_size : static_cast<int64_t>(weights::DtypeSize(t)));
      }
    }
    return total;
  };
  absl::StatusOr<const models::ModelFamily*> family = FindFamily(dir);
  if (!family.ok()) return family.status();
  std::error_code ec;
  int64_t total = 0;
  bool found = false;
  for (const std::string& base : (*family)->weight_files) {
    if (absl::EndsWith(base, ".bin")) {
      // A torch.save checkpoint: its size, without reading it (converting it to weigh it
      // would cost as much as loading it); its tensors are stored in their saved dtype.
      const uintmax_t size = fs::file_size(fs::path(dir) / base, ec);
      if (ec) continue;
      total += static_cast<int64_t>(size);
      found = true;
      break;
    }
    if (!fs::exists(fs::path(dir) / base, ec) &&
        !fs::exists(fs::path(dir) / absl::StrCat(base, ".index.json"), ec)) {
      continue;
    }
    absl::StatusOr<std::unique_ptr<weights::TensorArchive>> archive =
        weights::TensorArchive::OpenInDir(dir, base);
    if (!archive.ok()) return archive.status();
    total += weigh(**archive);
    found = true;
    break;
  }
  // An adapter sits beside (or instead of) the base weights.
  for (const std::string& extra : (*family)->extra_weight_files) {
    if (!fs::exists(fs::path(dir) / extra, ec)) continue;
    absl::StatusOr<std::unique_ptr<weights::TensorArchive>> archive =
        weights::TensorArchive::OpenFile((fs::path(dir) / extra).string());
    if (!archive.ok()) return archive.status();
    total += weigh(**archive);
    found = true;
  }
  if (!found) {
    for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
      if (entry.path().extension() != ".safetensors") continue;
      absl::StatusOr<std::unique_ptr<weights::TensorArchive>> archive =
          weights::TensorArchive::OpenFile(entry.path().string());
      if (!archive.ok()) return archive.status();
      total += weigh(**archive);
      found = true;
    }
  }
  if (!found) {
    return absl::InvalidArgumentError(
        absl::StrCat("model directory ", dir, " holds no *.safetensors weights"));
  }
  return total;
}

std::function<absl::StatusOr<std::string>(const std::string& repo_id)> DefaultBaseModelResolver() {
  return [](const std::string& repo_id) -> absl::StatusOr<std::string> {
    if (const char* dirs = std::getenv("EMBEDSERVE_BASE_MODEL_DIRS"); dirs != nullptr) {
      for (absl::string_view entry : absl::StrSplit(dirs, ',', absl::SkipWhitespace())) {
        std::vector<std::string> parts = absl::StrSplit(entry, absl::MaxSplits('=', 1));
        if (parts.size() == 2 && parts[0] == repo_id) {
          std::error_code ec;
          if (!std::filesystem::is_directory(parts[1], ec)) {
            return absl::NotFoundError(absl::StrCat("EMBEDSERVE_BASE_MODEL_DIRS names ", parts[1],
                                                    " for ", repo_id, ", which is not a directory"));
          }
          return parts[1];
        }
      }
    }
    return sources::ResolveModelSource(absl::StrCat("hf:", repo_id));
  };
}

absl::StatusOr<std::unique_ptr<models::Model>> LoadModel(const std::string& dir,
                                                         const models::RuntimeOptions& options) {
  if (IsOpenClipPretrainedLocator(dir)) return LoadOpenClipPretrainedLocator(dir, options);
  absl::StatusOr<const models::ModelFamily*> family = FindFamily(dir);
  if (!family.ok()) return family.status();
  models::RuntimeOptions with_resolver = options;
  if (!with_resolver.resolve_base_model) with_resolver.resolve_base_model = DefaultBaseModelResolver();
  absl::StatusOr<std::unique_ptr<models::Model>> model = (*family)->load(dir, with_resolver);
  if (model.ok()) {
    const models::ModelDescription& d = (*model)->description();
    LogEvent(LogLevel::kInfo, "model_dtype",
             absl::StrCat("dir=", LogQuote(dir), " device=", d.device, " dtype=", d.dtype,
                          " reason=", LogQuote(d.dtype_reason)));
  }
  return model;
}

}  // namespace embedserve
