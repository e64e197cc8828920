// OpenCLIP's hub-format configuration (open_clip_config.json: model_cfg + preprocess_cfg),
// parsed and checked against what the native implementation can run. Torch-free.
#pragma once

#include <array>
#include <string>

#include "absl/status/statusor.h"

namespace embedserve::models::openclip {

struct VisionConfig {
  int image_size = 224;
  int patch_size = 32;
  int width = 768;
  int layers = 12;
  int head_width = 64;
  double mlp_ratio = 4.0;
  int heads() const { return width / head_width; }
  int mlp_width() const { return static_cast<int>(width * mlp_ratio); }
  int grid() const { return image_size / patch_size; }
};

struct TextConfig {
  int context_length = 77;
  int vocab_size = 49408;
  int width = 512;
  int heads = 8;
  int layers = 12;
  double mlp_ratio = 4.0;
  int mlp_width() const { return static_cast<int>(width * mlp_ratio); }
};

struct PreprocessConfig {
  std::array<float, 3> mean{0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> std{0.26862954f, 0.26130258f, 0.27577711f};
};

struct OpenClipConfig {
  int embed_dim = 512;
  bool quick_gelu = false;
  VisionConfig vision;
  TextConfig text;
  PreprocessConfig preprocess;
  // A readable name derived from the shape ("ViT-B-32", "ViT-L-14-quickgelu"), or
  // "ViT-custom" when the shape is not one of OpenCLIP's named ones.
  std::string ArchitectureName() const;
};

// Parses the JSON text of an open_clip_config.json. `source` names the file in errors.
// Anything the native CLIP cannot run (timm or HF towers, ResNet image towers, CoCa,
// attentional pooling, non-default pooling or norms, ...) is INVALID_ARGUMENT naming the field.
absl::StatusOr<OpenClipConfig> ParseOpenClipConfig(const std::string& json_text,
                                                   const std::string& source);

// Reads and parses `<dir>/open_clip_config.json`.
absl::StatusOr<OpenClipConfig> ReadOpenClipConfig(const std::string& dir);

// Serializes a config in the hub format (used by the random checkpoint generator).
std::string OpenClipConfigToJson(const OpenClipConfig& config);

// The configurations of OpenCLIP's named architectures (ViT-B-32, ViT-B-16, ViT-L-14,
// ViT-L-14-336, ViT-H-14, ViT-bigG-14, each also with a -quickgelu suffix), from the shipped
// table (ShippedArchitecture in openclip_pretrained.h); NOT_FOUND otherwise.
absl::StatusOr<OpenClipConfig> NamedArchitecture(const std::string& name);

}  // namespace embedserve::models::openclip
