// Random ColPali checkpoints, written by our own code in each key layout for tests and
// benchmarks (a separate library, not linked into the server).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "server/models/colpali/colpali_config.h"
#include "server/models/colpali/colpali_model.h"

namespace embedserve::models::colpali {

// Writes a random checkpoint of `config` into `dir` (created if missing): config.json,
// preprocessor_config.json and model.safetensors in `layout`, weights in `weight_dtype`
// ("F32", "F16", "BF16"). No tokenizer is written.
absl::Status WriteRandomCheckpoint(const ColPaliConfig& config, const std::string& dir,
                                   const std::string& weight_dtype, uint64_t seed,
                                   KeyLayout layout = KeyLayout::kTransformers);

// The same weights (same seed: same values) as colpali-engine saves them: the paligemma-typed
// config.json of vidore/colpali-v1.2-merged (ColPaliEngineConfigToJson), keys
// "model.vision_tower.vision_model.*", "model.multi_modal_projector.*",
// "model.language_model.model.*", "custom_text_proj.*" (KeyLayout::kColPaliEngine).
absl::Status WriteRandomColPaliEngineCheckpoint(const ColPaliConfig& config, const std::string& dir,
                                                const std::string& weight_dtype, uint64_t seed);

}  // namespace embedserve::models::colpali
