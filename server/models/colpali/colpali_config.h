// ColPali's Hugging Face configuration (config.json with vlm_config: SigLIP vision + Gemma
// text; preprocessor_config.json; optional processor_config.json), parsed and checked. Torch-free.
#pragma once

#include <array>
#include <string>

#include "absl/status/statusor.h"

namespace embedserve::models::colpali {

// Defaults are transformers' SiglipVisionConfig defaults (used for fields a config omits).
struct VisionConfig {
  int hidden_size = 768;
  int intermediate_size = 3072;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int image_size = 224;
  int patch_size = 16;
  double layer_norm_eps = 1e-6;
  std::string hidden_act = "gelu_pytorch_tanh";
  int grid() const { return image_size / patch_size; }
  int num_patches() const { return grid() * grid(); }
  int head_dim() const { return hidden_size / num_attention_heads; }
};

// Defaults are transformers' GemmaConfig defaults.
struct TextConfig {
  int hidden_size = 3072;
  int intermediate_size = 24576;
  int num_hidden_layers = 28;
  int num_attention_heads = 16;
  int num_key_value_heads = 16;
  int head_dim = 256;
  int vocab_size = 256000;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::string hidden_activation = "gelu_pytorch_tanh";
};

struct PreprocessConfig {
  int size = 224;  // square resize target (height == width)
  double rescale_factor = 1.0 / 255.0;
  std::array<double, 3> mean{0.5, 0.5, 0.5};
  std::array<double, 3> std{0.5, 0.5, 0.5};
  int image_seq_length = 0;  // image tokens per page; 0 until resolved
};

struct PromptConfig {
  std::string visual_prompt_prefix = "Describe the image.";
  std::string query_prefix = "Question: ";
  int query_augmentation_count = 10;  // <pad> tokens appended to every query
};

struct ColPaliConfig {
  int embedding_dim = 128;
  int projection_dim = 2048;
  int image_token_index = 256000;
  int pad_token_id = 0;
  int bos_token_id = 2;
  int eos_token_id = 1;
  VisionConfig vision;
  TextConfig text;
  PreprocessConfig preprocess;
  PromptConfig prompt;
};

// Parses config.json text (model_type colpali). Missing fields take transformers' defaults;
// anything the native implementation cannot run is INVALID_ARGUMENT naming the field
// (e.g. "config.json: vlm_config.text_config.model_type: ...").
absl::StatusOr<ColPaliConfig> ParseColPaliConfig(const std::string& json_text,
                                                 const std::string& source);

// Applies preprocessor_config.json text to `config` (size, rescale, mean/std, resample,
// image_seq_length) and checks it against the vision tower.
absl::Status ApplyPreprocessorConfig(const std::string& json_text, const std::string& source,
                                     ColPaliConfig* config);
// Applies processor_config.json text (visual_prompt_prefix, query_prefix).
absl::Status ApplyProcessorConfig(const std::string& json_text, const std::string& source,
                                  ColPaliConfig* config);

// Reads config.json, then preprocessor_config.json and processor_config.json if present.
absl::StatusOr<ColPaliConfig> ReadColPaliConfig(const std::string& dir);
// Applies `dir`'s preprocessor_config.json and processor_config.json, where present, to
// `config` (an adapter directory's own files override its base's).
absl::Status ApplyOptionalConfigs(const std::string& dir, ColPaliConfig* config);

// Serializes `config` as config.json + preprocessor_config.json texts (random checkpoints).
std::string ColPaliConfigToJson(const ColPaliConfig& config);
std::string PreprocessorConfigToJson(const ColPaliConfig& config);

}  // namespace embedserve::models::colpali
