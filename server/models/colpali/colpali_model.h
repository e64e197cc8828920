// The ColPali family behind the Model interface: loads a Hugging Face ColPali directory
// (config.json, preprocessor_config.json, tokenizer.json/.model, model.safetensors[.index.json],
// or a LoRA adapter over a local or hub base), builds page/query prompts and runs the model.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/models/colpali/colpali_config.h"
#include "server/models/family.h"
#include "server/models/model.h"
#include "server/models/runtime_options.h"

namespace embedserve::models::colpali {

struct ColPaliOptions {
  // Longest query input (prompt tokens included); longer texts are cut or refused per the
  // request's truncate flag. Reported as the description's context_length.
  int max_text_tokens = 512;
};

// Loads the model in `dir`: transformers' ColPaliForRetrieval or colpali-engine's ColPali
// (paligemma-typed config.json). If `dir` holds adapter_config.json + adapter_model.safetensors,
// the LoRA weights are merged into the base named by base_model_name_or_path: a local
// directory (absolute or relative to `dir` or its parent), else a hub id (ORG/REPO) given to
// options.resolve_base_model (FAILED_PRECONDITION when that is null). The prompt profile is
// options.colpali_prompt_profile, else the checkpoint kind's default (DefaultPromptProfile of
// the base's config). Problems with the files are INVALID_ARGUMENT / NOT_FOUND /
// FAILED_PRECONDITION naming the file, tensor or field.
absl::StatusOr<std::unique_ptr<Model>> LoadColPali(const std::string& dir,
                                                   const RuntimeOptions& options,
                                                   const ColPaliOptions& colpali_options = {});

// The family entry: config.json with model_type colpali or colpali-engine's paligemma with
// architectures ["ColPali"], or adapter_config.json over such a base; weights in model.safetensors (plus
// adapter_model.safetensors for a LoRA adapter), loaded by LoadColPali with default options.
const ModelFamily& ColPaliFamily();

// Checkpoint key layouts that load: transformers <= 4.51 ("vlm.vision_tower.vision_model.",
// "vlm.multi_modal_projector.", "vlm.language_model.model.", "embedding_proj_layer."),
// transformers >= 4.52 ("vlm.model.vision_tower.vision_model.", "vlm.model.multi_modal_projector.",
// "vlm.model.language_model."), and colpali-engine's ColPali ("model.vision_tower.vision_model.",
// "model.multi_modal_projector.", "model.language_model.model.", "custom_text_proj."; with
// newer transformers "model.model.vision_tower.vision_model." ...).
enum class KeyLayout { kTransformers, kTransformersNew, kColPaliEngine, kColPaliEngineNew };
// The key of a canonical module parameter name ("text.layers.0.mlp.up_proj.weight") in a layout.
std::string CheckpointKey(const std::string& canonical, KeyLayout layout);
// The canonical name of a checkpoint key in any layout; nullopt if it belongs to none.
std::optional<std::string> CanonicalName(const std::string& checkpoint_key);

// Every parameter (canonical name, shape), sorted; on the meta device.
std::vector<std::pair<std::string, std::vector<int64_t>>> ParameterShapes(const ColPaliConfig& config);


}  // namespace embedserve::models::colpali
