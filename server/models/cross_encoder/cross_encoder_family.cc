// The cross-encoder's entry in the family registry.
#include <filesystem>

#include "server/models/config_json.h"
#include "server/models/cross_encoder/cross_encoder_config.h"
#include "server/models/cross_encoder/cross_encoder_model.h"

namespace embedserve::models::cross_encoder {

const ModelFamily& CrossEncoderFamily() {
  static const ModelFamily family{
      "cross_encoder",
      "config.json with architectures XLMRobertaForSequenceClassification or "
      "BertForSequenceClassification",
      [](const std::string& dir) {
        absl::StatusOr<std::string> text = config_json::ReadConfigFile(
            (std::filesystem::path(dir) / "config.json").string());
        return text.ok() && IsCrossEncoderConfig(*text);
      },
      {"model.safetensors", "pytorch_model.bin"},
      {},
      [](const std::string& dir, const RuntimeOptions& options) {
        return LoadCrossEncoder(dir, options);
      }};
  return family;
}

}  // namespace embedserve::models::cross_encoder
