// ColPaliModel: the Model interface over ColPaliModule; checkpoint key layouts and LoRA
// merging.
#include "server/models/colpali/colpali_model.h"

#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/image/resize.h"
#include "server/models/colpali/colpali_modules.h"
#include "server/models/colpali/colpali_tokenizer.h"
#include "server/models/config_json.h"
#include "server/weights/safetensors.h"
#include "server/models/torch_model.h"
#include "server/models/torch_util.h"

namespace embedserve::models::colpali {
namespace {

namespace fs = std::filesystem;

// Checkpoint prefixes of each canonical group, indexed by KeyLayout.
struct Group {
  const char* canonical;
  const char* prefixes[4];
  const char* probe;  // a key under the group every checkpoint has
};
constexpr Group kGroups[] = {
    {"vision.",
     {"vlm.vision_tower.vision_model.", "vlm.model.vision_tower.vision_model.",
      "model.vision_tower.vision_model.", "model.model.vision_tower.vision_model."},
     "embeddings.patch_embedding.weight"},
    {"projector.",
     {"vlm.multi_modal_projector.", "vlm.model.multi_modal_projector.",
      "model.multi_modal_projector.", "model.model.multi_modal_projector."},
     "linear.weight"},
    {"text.",
     {"vlm.language_model.model.", "vlm.model.language_model.", "model.language_model.model.",
      "model.model.language_model."},
     "embed_tokens.weight"},
    {"proj.",
     {"embedding_proj_layer.", "embedding_proj_layer.", "custom_text_proj.", "custom_text_proj."},
     "weight"},
};

// Tensors a checkpoint may carry that the retrieval model does not use: the (tied) language
// model head, rotary caches, SigLIP's unused pooling head.
bool IgnoredKey(const std::string& name) {
  return absl::EndsWith(name, "lm_head.weight") || absl::EndsWith(name, "rotary_emb.inv_freq") ||
         absl::StrContains(name, "vision_model.head.");
}

// Norm parameters stay float32 in every serving dtype.
bool KeepFp32(const std::string& name) {
  return absl::StrContains(name, "layer_norm") || absl::StrContains(name, "layernorm") ||
         absl::EndsWith(name, "norm.weight") || absl::EndsWith(name, "norm.bias");
}

// For each group, the prefix whose probe key the archive holds (the first layout if none).
std::map<std::string, std::string> DetectPrefixes(const TensorArchive& archive) {
  std::map<std::string, std::string> chosen;
  for (const Group& g : kGroups) {
    chosen[g.canonical] = g.prefixes[0];
    for (const char* prefix : g.prefixes) {
      if (archive.Find(absl::StrCat(prefix, g.probe)) != nullptr) {
        chosen[g.canonical] = prefix;
        break;
      }
    }
  }
  return chosen;
}

class ColPaliModel final : public TorchModel {
 public:
  ColPaliModel(ColPaliConfig config, ColPaliOptions options,
               std::unique_ptr<ColPaliTokenizer> tokenizer, std::shared_ptr<ColPaliModule> module,
               const Placement& placement, ModelDescription description)
      : TorchModel(placement, std::move(description)),
        config_(std::move(config)),
        options_(options),
        tokenizer_(std::move(tokenizer)),
        module_(std::move(module)) {}

  absl::StatusOr<TextInput> PrepareText(absl::string_view text, bool truncate) const override {
    absl::StatusOr<ColPaliTokenizer::Query> q =
        tokenizer_->EncodeQuery(text, options_.max_text_tokens, truncate);
    if (!q.ok()) return q.status();
    return TextInput{std::move(q->ids), q->truncated};
  }

  std::string TokenString(int32_t id) const override { return tokenizer_->TokenString(id); }

  absl::StatusOr<ImageInput> PreprocessImage(const image::RgbImage& rgb) const override {
    const int side = config_.preprocess.size;
    image::RgbImage resized = image::ResizeBicubic(rgb, side, side);
    if (resized.pixels.size() != static_cast<size_t>(side) * side * 3) {
      return absl::InvalidArgumentError("image could not be resized (empty image)");
    }
    // SiglipImageProcessor: x * rescale_factor in float64 -> float32, then (x - mean) / std
    // in float32.
    ImageInput input;
    input.pixels.resize(static_cast<size_t>(3) * side * side);
    const size_t plane = static_cast<size_t>(side) * side;
    for (int c = 0; c < 3; ++c) {
      const float mean = static_cast<float>(config_.preprocess.mean[c]);
      const float std = static_cast<float>(config_.preprocess.std[c]);
      float* out = input.pixels.data() + c * plane;
      for (size_t i = 0; i < plane; ++i) {
        const float x = static_cast<float>(resized.pixels[i * 3 + c] * config_.preprocess.rescale_factor);
        out[i] = (x - mean) / std;
      }
    }
    return input;
  }

  std::unique_ptr<PendingBatch> LaunchTexts(absl::Span<const TextInput* const> texts) override {
    if (texts.empty()) return std::make_unique<FinishedBatch>(std::vector<Embedding>());
    int64_t longest = 0;
    std::vector<int64_t> lengths;
    for (const TextInput* t : texts) {
      if (t->token_ids.empty()) {
        return std::make_unique<FinishedBatch>(absl::InvalidArgumentError("text input has no tokens"));
      }
      for (int32_t id : t->token_ids) {
        if (id < 0 || id >= config_.text.vocab_size || id == config_.image_token_index) {
          return std::make_unique<FinishedBatch>(absl::InvalidArgumentError(absl::StrCat(
              "text input holds token id ", id, ", not a text token of this model")));
        }
      }
      lengths.push_back(static_cast<int64_t>(t->token_ids.size()));
      longest = std::max(longest, lengths.back());
    }
    return LaunchBatch("query forward", device_, [&] {
      const int64_t batch = static_cast<int64_t>(texts.size());
      at::Tensor ids = NewHostTensor({batch, longest}, at::kLong, device_).fill_(config_.pad_token_id);
      auto a = ids.accessor<int64_t, 2>();
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t i = 0; i < lengths[b]; ++i) a[b][i] = texts[b]->token_ids[i];
      }
      return module_->Embed(StageToDevice(ids, device_), StageToDevice(LengthsTensor(lengths), device_),
                            lengths, at::Tensor());
    }, [lengths](const at::Tensor& out) { return ToEmbeddings(out, lengths); });
  }

  std::unique_ptr<PendingBatch> LaunchImages(absl::Span<const ImageInput* const> images) override {
    if (images.empty()) return std::make_unique<FinishedBatch>(std::vector<Embedding>());
    const int64_t side = config_.preprocess.size;
    if (absl::Status checked = CheckPixels(images, side); !checked.ok()) {
      return std::make_unique<FinishedBatch>(checked);
    }
    const int64_t batch = static_cast<int64_t>(images.size());
    const auto& page = tokenizer_->page_ids();
    const int64_t tokens = static_cast<int64_t>(page.size());
    std::vector<int64_t> lengths(batch, tokens);
    return LaunchBatch("page forward", device_, [&] {
      at::Tensor features = module_->ImageFeatures(StagePixels(images, side));
      at::Tensor ids = NewHostTensor({batch, tokens}, at::kLong, device_);
      auto a = ids.accessor<int64_t, 2>();
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t i = 0; i < tokens; ++i) a[b][i] = page[i];
      }
      return module_->Embed(StageToDevice(ids, device_), StageToDevice(LengthsTensor(lengths), device_),
                            lengths, features);
    }, [lengths](const at::Tensor& out) { return ToEmbeddings(out, lengths); });
  }

 private:
  at::Tensor LengthsTensor(const std::vector<int64_t>& lengths) const {
    at::Tensor t = NewHostTensor({static_cast<int64_t>(lengths.size())}, at::kLong, device_);
    std::copy(lengths.begin(), lengths.end(), t.data_ptr<int64_t>());
    return t;
  }

  static std::vector<Embedding> ToEmbeddings(const at::Tensor& out,
                                             const std::vector<int64_t>& lengths) {
    const at::Tensor host = out.contiguous();  // float32, on the host
    const int64_t tokens = host.size(1), dim = host.size(2);
    const float* data = host.data_ptr<float>();
    std::vector<Embedding> result(lengths.size());
    for (size_t b = 0; b < lengths.size(); ++b) {
      result[b].rows = static_cast<int>(lengths[b]);
      result[b].dim = static_cast<int>(dim);
      const float* start = data + b * tokens * dim;
      result[b].values.assign(start, start + lengths[b] * dim);
    }
    return result;
  }

  const ColPaliConfig config_;
  const ColPaliOptions options_;
  const std::unique_ptr<ColPaliTokenizer> tokenizer_;
  const std::shared_ptr<ColPaliModule> module_;
};

// --- LoRA ---

struct Adapter {
  std::string base_dir;
  double scale = 1.0;
  std::unique_ptr<TensorArchive> archive;
};

// "ORG/REPO": what the hub's ids look like (a relative local path may look so too: local
// directories are tried first).
bool LooksLikeHubId(const std::string& name) {
  const size_t slash = name.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == name.size() ||
      name.find('/', slash + 1) != std::string::npos) {
    return false;
  }
  for (char ch : name) {
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.' || ch == '/')) {
      return false;
    }
  }
  return name.find("..") == std::string::npos && name[0] != '.';
}

absl::StatusOr<std::optional<Adapter>> ReadAdapter(const std::string& dir,
                                                   const RuntimeOptions& options) {
  const fs::path config_path = fs::path(dir) / "adapter_config.json";
  std::error_code ec;
  if (!fs::exists(config_path, ec)) return std::optional<Adapter>();
  const std::string source = config_path.string();
  absl::StatusOr<std::string> text = config_json::ReadConfigFile(config_path.string());
  if (!text.ok()) return text.status();
  nlohmann::json c = nlohmann::json::parse(*text, nullptr, false);
  if (!c.is_object()) return absl::InvalidArgumentError(source + ": not a JSON object");
  auto bad = [&](const std::string& field, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, ": ", why));
  };
  const std::string peft_type = c.value("peft_type", "LORA");
  if (peft_type != "LORA") return bad("peft_type", "'" + peft_type + "' is not LORA");
  if (!c.contains("r") || !c["r"].is_number_integer() || c["r"].get<int>() <= 0) {
    return bad("r", "expected a positive integer");
  }
  const double r = c["r"].get<int>();
  double alpha = r;
  if (c.contains("lora_alpha")) {
    if (!c["lora_alpha"].is_number()) return bad("lora_alpha", "expected a number");
    alpha = c["lora_alpha"].get<double>();
  }
  for (const char* key : {"use_dora", "fan_in_fan_out", "rank_pattern", "alpha_pattern",
                          "layer_replication"}) {
    if (!c.contains(key)) continue;
    const auto& v = c[key];
    if (v.is_null() || (v.is_boolean() && !v.get<bool>()) || ((v.is_object() || v.is_array()) && v.empty())) {
      continue;
    }
    return bad(key, absl::StrCat("value ", v.dump(), " is not supported (plain LoRA only)"));
  }
  const bool rslora = c.value("use_rslora", false);
  Adapter adapter;
  adapter.scale = rslora ? alpha / std::sqrt(r) : alpha / r;
  const std::string base = c.value("base_model_name_or_path", "");
  if (base.empty()) return bad("base_model_name_or_path", "missing");
  std::vector<fs::path> candidates;
  if (fs::path(base).is_absolute()) {
    candidates.push_back(base);
  } else {
    candidates.push_back(fs::path(dir) / base);
    candidates.push_back(fs::path(dir).parent_path() / base);
  }
  for (const fs::path& p : candidates) {
    if (fs::is_directory(p, ec) && fs::exists(p / "config.json", ec)) {
      adapter.base_dir = p.string();
      break;
    }
  }
  if (adapter.base_dir.empty() && options.resolve_base_model && LooksLikeHubId(base)) {
    absl::StatusOr<std::string> resolved = options.resolve_base_model(base);
    if (!resolved.ok()) {
      return absl::Status(resolved.status().code(),
                          absl::StrCat(source, ": base_model_name_or_path '", base,
                                       "': ", resolved.status().message()));
    }
    if (!fs::exists(fs::path(*resolved) / "config.json", ec)) {
      return absl::FailedPreconditionError(absl::StrCat(
          source, ": base_model_name_or_path '", base, "' resolved to ", *resolved,
          ", which has no config.json"));
    }
    adapter.base_dir = *resolved;
  }
  if (adapter.base_dir.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        source, ": base_model_name_or_path '", base, "' is not a local model directory (looked "
        "for config.json in ", candidates.front().string(),
        candidates.size() > 1 ? " and " + candidates.back().string() : std::string(),
        options.resolve_base_model ? ")" : "; hub ids are not looked up here)",
        "; download the base model and point base_model_name_or_path at it, or load through "
        "the server, which finds a hub id in the Hugging Face cache"));
  }
  absl::StatusOr<std::unique_ptr<TensorArchive>> archive =
      TensorArchive::OpenInDir(dir, "adapter_model.safetensors");
  if (!archive.ok()) return archive.status();
  adapter.archive = *std::move(archive);
  return std::optional<Adapter>(std::move(adapter));
}

// Merges the adapter into float32 CPU parameters: W += (B @ A) * scale for LoRA pairs;
// other tensors (modules_to_save) replace the parameter.
absl::Status MergeAdapter(ColPaliModule& module, const Adapter& adapter) {
  std::map<std::string, at::Tensor> params;
  for (auto& item : module.named_parameters(true)) params[item.key()] = item.value();
  std::map<std::string, std::pair<const TensorView*, const TensorView*>> pairs;  // module -> (A, B)
  const std::string& source = adapter.archive->source();
  for (const std::string& raw : adapter.archive->Names()) {
    std::string key = raw;
    if (absl::StartsWith(key, "base_model.model.")) key = key.substr(strlen("base_model.model."));
    for (const char* tag : {".default.weight", ".default.bias"}) {
      if (absl::EndsWith(key, tag)) key = key.substr(0, key.size() - strlen(tag)) + (tag + 8);
    }
    if (size_t at = key.find("modules_to_save.default."); at != std::string::npos) {
      key.erase(at, strlen("modules_to_save.default."));
    }
    const TensorView* view = adapter.archive->Find(raw);
    if (absl::EndsWith(key, ".lora_A.weight") || absl::EndsWith(key, ".lora_B.weight")) {
      const bool is_a = absl::EndsWith(key, ".lora_A.weight");
      const std::string module_key = key.substr(0, key.size() - strlen(".lora_A.weight")) + ".weight";
      std::optional<std::string> canonical = CanonicalName(module_key);
      if (!canonical || params.count(*canonical) == 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            source, ": tensor '", raw, "' adapts '", module_key, "', which the model does not have"));
      }
      (is_a ? pairs[*canonical].first : pairs[*canonical].second) = view;
      continue;
    }
    if (IgnoredKey(key)) continue;
    std::optional<std::string> canonical = CanonicalName(key);
    if (!canonical || params.count(*canonical) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": tensor '", raw, "' is neither a LoRA pair nor a model parameter"));
    }
    at::Tensor& p = params[*canonical];
    absl::StatusOr<at::Tensor> value = TensorFromView(*view);
    if (!value.ok()) return value.status();
    if (value->sizes() != p.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": tensor '", raw, "' has shape ",
                                                     ShapeString(value->sizes().vec()), ", expected ",
                                                     ShapeString(p.sizes().vec())));
    }
    at::NoGradGuard no_grad;
    p.copy_(*value);
  }
  for (const auto& [name, ab] : pairs) {
    if (ab.first == nullptr || ab.second == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": the LoRA pair for '", name,
                                                     "' lacks its ", ab.first ? "B" : "A", " matrix"));
    }
    absl::StatusOr<at::Tensor> a = TensorFromView(*ab.first);
    if (!a.ok()) return a.status();
    absl::StatusOr<at::Tensor> b = TensorFromView(*ab.second);
    if (!b.ok()) return b.status();
    at::Tensor& w = params[name];
    if (a->dim() != 2 || b->dim() != 2 || a->size(0) != b->size(1) || b->size(0) != w.size(0) ||
        a->size(1) != w.size(1) || w.dim() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": LoRA pair for '", name, "' has shapes A ", ShapeString(a->sizes().vec()),
          " and B ", ShapeString(b->sizes().vec()), ", which do not fit the weight ",
          ShapeString(w.sizes().vec())));
    }
    absl::Status merged = GuardTorch("merging LoRA weights", [&] {
      at::NoGradGuard no_grad;
      w.add_(at::matmul(b->to(at::kFloat), a->to(at::kFloat)) * adapter.scale);
    });
    if (!merged.ok()) return merged;
  }
  return absl::OkStatus();
}

std::string ArchitectureName(const ColPaliConfig& c) {
  return absl::StrFormat("ColPali (SigLIP %dx%d/%d, Gemma %dx%d, dim %d)", c.vision.hidden_size,
                         c.vision.num_hidden_layers, c.vision.patch_size, c.text.hidden_size,
                         c.text.num_hidden_layers, c.embedding_dim);
}

}  // namespace

std::string CheckpointKey(const std::string& canonical, KeyLayout layout) {
  for (const Group& g : kGroups) {
    if (absl::StartsWith(canonical, g.canonical)) {
      return absl::StrCat(g.prefixes[static_cast<int>(layout)],
                          canonical.substr(strlen(g.canonical)));
    }
  }
  return canonical;
}

std::optional<std::string> CanonicalName(const std::string& key) {
  // Longest prefixes first, so "model.model.x" is not read as "model.x".
  size_t best_len = 0;
  std::optional<std::string> best;
  for (const Group& g : kGroups) {
    for (const char* prefix : g.prefixes) {
      const size_t n = strlen(prefix);
      if (n > best_len && absl::StartsWith(key, prefix)) {
        best_len = n;
        best = absl::StrCat(g.canonical, key.substr(n));
      }
    }
  }
  return best;
}

absl::StatusOr<std::unique_ptr<Model>> LoadColPali(const std::string& dir,
                                                   const RuntimeOptions& options,
                                                   const ColPaliOptions& colpali_options) {
  absl::StatusOr<std::optional<Adapter>> adapter = ReadAdapter(dir, options);
  if (!adapter.ok()) return adapter.status();
  const std::string weights_dir = adapter->has_value() ? (*adapter)->base_dir : dir;
  absl::StatusOr<ColPaliConfig> config = ReadColPaliConfig(weights_dir);
  if (!config.ok()) return config.status();
  std::error_code ec;
  if (adapter->has_value()) {
    // The adapter directory's own processor files take precedence over the base's.
    if (absl::Status s = ApplyOptionalConfigs(dir, &*config); !s.ok()) return s;
  }
  if (!options.colpali_prompt_profile.empty()) {
    absl::StatusOr<PromptProfile> profile = ParsePromptProfile(options.colpali_prompt_profile);
    if (!profile.ok()) return profile.status();
    ApplyPromptProfile(*profile, &*config);
  }
  if (colpali_options.max_text_tokens < 1 + config->prompt.query_augmentation_count + 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_text_tokens ", colpali_options.max_text_tokens, " cannot hold the query prompt"));
  }
  absl::StatusOr<Placement> placement = PlaceModel(options);
  if (!placement.ok()) return placement.status();
  const at::Device device = placement->device;
  const at::ScalarType dtype = placement->dtype.type;

  const bool tokenizer_in_dir = fs::exists(fs::path(dir) / "tokenizer.json", ec) ||
                                fs::exists(fs::path(dir) / "tokenizer.model", ec);
  absl::StatusOr<std::unique_ptr<ColPaliTokenizer>> tokenizer =
      ColPaliTokenizer::Load(tokenizer_in_dir ? dir : weights_dir, *config);
  if (!tokenizer.ok()) return tokenizer.status();

  if (!fs::exists(fs::path(weights_dir) / "model.safetensors", ec) &&
      !fs::exists(fs::path(weights_dir) / "model.safetensors.index.json", ec) &&
      fs::exists(fs::path(weights_dir) / "pytorch_model.bin", ec)) {
    return absl::InvalidArgumentError(absl::StrCat(
        weights_dir, ": only pytorch_model.bin is present; embedserve reads safetensors"));
  }
  absl::StatusOr<std::unique_ptr<TensorArchive>> archive =
      TensorArchive::OpenInDir(weights_dir, "model.safetensors");
  if (!archive.ok()) return archive.status();

  const std::map<std::string, std::string> prefixes = DetectPrefixes(**archive);
  if (config->embedding_dim_from_weights) {
    const std::string key = prefixes.at("proj.") + "weight";
    const TensorView* proj = (*archive)->Find(key);
    if (proj == nullptr || proj->shape.size() != 2 || proj->shape[0] < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          (*archive)->source(), ": tensor '", key, "' (the output projection, colpali-engine's "
          "custom_text_proj) is missing or not a matrix"));
    }
    config->embedding_dim = static_cast<int>(proj->shape[0]);
  }
  std::shared_ptr<ColPaliModule> module;
  absl::Status built = GuardTorch("building the ColPali module", [&] {
    module = std::make_shared<ColPaliModule>(*config, at::TensorOptions().dtype(at::kFloat));
  });
  if (!built.ok()) return built;
  LoadPlan plan;
  plan.key_for = [&prefixes](const std::string& name) {
    for (const auto& [canonical, prefix] : prefixes) {
      if (absl::StartsWith(name, canonical)) {
        return absl::StrCat(prefix, name.substr(canonical.size()));
      }
    }
    return name;
  };
  plan.ignore = IgnoredKey;
  plan.keep_fp32 = KeepFp32;
  if (adapter->has_value()) {
    // Merge in float32 on the CPU, then place every parameter.
    if (auto s = LoadParameters(*module, **archive, plan, at::Device(at::kCPU), at::kFloat); !s.ok()) {
      return s;
    }
    if (auto s = MergeAdapter(*module, **adapter); !s.ok()) return s;
    absl::Status placed = GuardTorch("placing merged weights", [&] {
      at::NoGradGuard no_grad;
      for (auto& item : module->named_parameters(true)) {
        const at::ScalarType target = KeepFp32(item.key()) ? at::kFloat : dtype;
        item.value().set_data(item.value().to(device, target));
      }
    });
    if (!placed.ok()) return placed;
  } else if (auto s = LoadParameters(*module, **archive, plan, device, dtype); !s.ok()) {
    return s;
  }
  if (placement->dtype.int8_linears) {
    if (absl::Status s = PackInt8(*module); !s.ok()) return s;
  }

  ModelDescription d = DescribePlacement("colpali", *placement);
  d.architecture = ArchitectureName(*config);
  d.accepts_text = true;
  d.accepts_image = true;
  d.embedding_dim = config->embedding_dim;
  d.multi_vector = true;
  d.min_image_rows = config->preprocess.image_seq_length;
  d.context_length = colpali_options.max_text_tokens;
  d.image_size = config->preprocess.size;
  d.outputs_normalized = true;
  d.logit_scale = 0.f;
  d.scoring = "maxsim";
  return std::unique_ptr<Model>(new ColPaliModel(*std::move(config), colpali_options,
                                                 *std::move(tokenizer), std::move(module),
                                                 *placement, std::move(d)));
}

std::vector<std::pair<std::string, std::vector<int64_t>>> ParameterShapes(
    const ColPaliConfig& config) {
  ColPaliModule module(config, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
  return SortedParameterShapes(module);
}

}  // namespace embedserve::models::colpali
