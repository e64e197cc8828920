// ColPali's entry in the family registry: which directories are ColPali's (transformers'
// ColPaliForRetrieval, colpali-engine's paligemma-typed ColPali, a LoRA adapter over either).
#include <algorithm>
#include <cctype>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "server/models/colpali/colpali_model.h"
#include "server/models/config_json.h"

namespace embedserve::models::colpali {
namespace {

namespace fs = std::filesystem;

nlohmann::json ReadJson(const fs::path& path) {
  absl::StatusOr<std::string> text = config_json::ReadConfigFile(path.string());
  if (!text.ok()) return nlohmann::json();
  return nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
}

// transformers' model_type colpali, or colpali-engine's model_type paligemma saved by its
// ColPali class (architectures ["ColPali"]); a plain PaliGemma (no projection) is not ours.
bool IsColPaliConfig(const nlohmann::json& json) {
  if (!json.is_object()) return false;
  const std::string type = json.value("model_type", "");
  if (type == "colpali") return true;
  if (type != "paligemma" || !json.contains("architectures") || !json["architectures"].is_array()) {
    return false;
  }
  for (const auto& a : json["architectures"]) {
    if (a.is_string() && a.get<std::string>() == "ColPali") return true;
  }
  return false;
}

bool Detect(const std::string& dir) {
  std::error_code ec;
  const fs::path config = fs::path(dir) / "config.json";
  if (fs::exists(config, ec)) return IsColPaliConfig(ReadJson(config));
  const fs::path adapter = fs::path(dir) / "adapter_config.json";
  if (!fs::exists(adapter, ec)) return false;
  const nlohmann::json a = ReadJson(adapter);
  if (!a.is_object() || !a.contains("base_model_name_or_path") ||
      !a["base_model_name_or_path"].is_string()) {
    return false;
  }
  const std::string base = a["base_model_name_or_path"].get<std::string>();
  // A local base decides; a hub id is not looked up here (detection reads small local files
  // only): a ColPali adapter names a colpali base or adapts colpali-engine's custom_text_proj.
  for (const fs::path& candidate :
       {fs::path(base), fs::path(dir) / base, fs::path(dir).parent_path() / base}) {
    if (!base.empty() && fs::exists(candidate / "config.json", ec)) {
      return IsColPaliConfig(ReadJson(candidate / "config.json"));
    }
  }
  std::string lower = base;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  const bool targets_projection =
      a.contains("target_modules") && a["target_modules"].dump().find("custom_text_proj") != std::string::npos;
  return lower.find("colpali") != std::string::npos || targets_projection;
}

}  // namespace

const ModelFamily& ColPaliFamily() {
  static const ModelFamily family{
      "colpali",
      "config.json with model_type colpali, or paligemma with architectures [\"ColPali\"]; "
      "or adapter_config.json over such a base",
      Detect,
      {"model.safetensors"},
      {"adapter_model.safetensors"},
      [](const std::string& dir, const RuntimeOptions& options) { return LoadColPali(dir, options); }};
  return family;
}

}  // namespace embedserve::models::colpali
