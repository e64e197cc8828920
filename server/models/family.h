// A model family as the loader sees it: its name, how its directories are recognised, which
// weight files it reads, and its loader. Each family defines one in its own folder; the
// registry (registry.h) lists them. Torch-free.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/models/model.h"
#include "server/models/runtime_options.h"

namespace embedserve::models {

struct ModelFamily {
  std::string name;  // "openclip", "colpali": ModelInfo.family
  // What marks a directory as this family's, for messages ("open_clip_config.json").
  std::string recognized_by;
  // True if `dir` is this family's. Reads small config files only; never loads weights.
  std::function<bool(const std::string& dir)> detect;
  // The checkpoint the family reads, as base names in order of preference (a safetensors
  // name is also found sharded, as NAME.index.json; a name ending in ".bin" is a torch.save
  // file, weighed by its size): the first present is weighed.
  std::vector<std::string> weight_files;
  // Further safetensors files that add to the weights when present (a LoRA adapter).
  std::vector<std::string> extra_weight_files;
  std::function<absl::StatusOr<std::unique_ptr<Model>>(const std::string& dir,
                                                       const RuntimeOptions& options)>
      load;
};

}  // namespace embedserve::models
