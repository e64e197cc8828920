// OpenCLIP's entry in the family registry.
#include <filesystem>

#include "server/models/openclip/openclip_model.h"

namespace embedserve::models::openclip {

const ModelFamily& OpenClipFamily() {
  static const ModelFamily family{
      "openclip",
      "open_clip_config.json",
      [](const std::string& dir) {
        std::error_code ec;
        return std::filesystem::exists(std::filesystem::path(dir) / "open_clip_config.json", ec);
      },
      {"open_clip_model.safetensors", "open_clip_pytorch_model.bin"},
      {},
      [](const std::string& dir, const RuntimeOptions& options) { return LoadOpenClip(dir, options); }};
  return family;
}

}  // namespace embedserve::models::openclip
