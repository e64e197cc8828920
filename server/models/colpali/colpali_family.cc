// ColPali's entry in the family registry.
#include <filesystem>

#include <nlohmann/json.hpp>

#include "server/models/colpali/colpali_model.h"
#include "server/models/config_json.h"

namespace embedserve::models::colpali {

const ModelFamily& ColPaliFamily() {
  static const ModelFamily family{
      "colpali",
      "config.json with model_type colpali",
      [](const std::string& dir) {
        absl::StatusOr<std::string> text = config_json::ReadConfigFile(
            (std::filesystem::path(dir) / "config.json").string());
        if (!text.ok()) return false;
        const nlohmann::json json = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
        return json.is_object() && json.value("model_type", "") == "colpali";
      },
      {"model.safetensors"},
      {"adapter_model.safetensors"},
      [](const std::string& dir, const RuntimeOptions& options) { return LoadColPali(dir, options); }};
  return family;
}

}  // namespace embedserve::models::colpali
