// ColPali's configuration (transformers' config.json with vlm_config, or colpali-engine's
// paligemma-typed config.json; preprocessor_config.json; optional processor_config.json),
// parsed and checked, and the prompt profiles (which prompt construction a checkpoint gets). Torch-free.
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

// Which library's prompt construction the model's inputs follow (NOTES.md, "Prompt
// profiles", gives each token sequence and its source).
enum class PromptProfile {
  kTransformers,      // transformers' ColPaliProcessor
  kColPaliEngine030,  // colpali-engine 0.3.0 - 0.3.3
  kColPaliEngine034,  // colpali-engine 0.3.4 - 0.3.6 (transformers 4.46)
  kColPaliEngine037,  // colpali-engine 0.3.7 - 0.3.10 (transformers 4.47 - 4.51: page <bos> doubled)
  kColPaliEngine0311, // colpali-engine 0.3.11 - 0.3.12
  kColPaliEngine0313, // colpali-engine 0.3.13 and later
};

// "transformers", "colpali-engine" (the newest construction), or "colpali-engine-X.Y.Z" for
// any release from 0.3.0 on (mapped to the construction that release uses). INVALID_ARGUMENT
// listing the accepted spellings otherwise.
absl::StatusOr<PromptProfile> ParsePromptProfile(const std::string& name);
// The canonical spelling: "transformers", "colpali-engine-0.3.0", "-0.3.4", "-0.3.7", "-0.3.11",
// "-0.3.13".
std::string PromptProfileName(PromptProfile profile);

struct PromptConfig {
  PromptProfile profile = PromptProfile::kTransformers;
  std::string visual_prompt_prefix = "Describe the image.";
  std::string query_prefix = "Question: ";
  int query_augmentation_count = 10;  // <pad> tokens appended to every query
  bool query_newline = true;          // "\n" after the augmentation tokens
  int page_bos_count = 1;             // <bos> tokens between the image tokens and the prompt
};

// Where config.json came from: transformers' ColPaliForRetrieval (model_type colpali,
// vlm_config) or colpali-engine's ColPali (model_type paligemma, architectures ["ColPali"]).
enum class CheckpointKind { kTransformers, kColPaliEngine };

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
  CheckpointKind kind = CheckpointKind::kTransformers;
  // colpali-engine configs do not state the output size (ColPali's dim is a class constant,
  // 128): the loader takes it from custom_text_proj.weight's rows.
  bool embedding_dim_from_weights = false;
};

// The profile a checkpoint gets when none is asked for: kTransformers for transformers'
// checkpoints, the newest colpali-engine construction (kColPaliEngine0313) for colpali-engine's.
PromptProfile DefaultPromptProfile(CheckpointKind kind);
// Sets config->prompt to `profile`'s construction. The transformers profile keeps the
// prefixes read from processor_config.json; colpali-engine's prefixes are class constants.
void ApplyPromptProfile(PromptProfile profile, ColPaliConfig* config);

// Parses config.json text: model_type colpali (transformers) or model_type paligemma with
// architectures ["ColPali"] (colpali-engine; text_config / vision_config at the top level).
// Missing fields take transformers' defaults;
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

// Serializes `config` as config.json + preprocessor_config.json texts (random checkpoints):
// transformers' layout, or colpali-engine's (the fields of vidore/colpali-v1.2-merged).
std::string ColPaliConfigToJson(const ColPaliConfig& config);
std::string ColPaliEngineConfigToJson(const ColPaliConfig& config);
std::string PreprocessorConfigToJson(const ColPaliConfig& config);

}  // namespace embedserve::models::colpali
