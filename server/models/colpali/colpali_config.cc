// Parsing and validation of ColPali's config.json / preprocessor_config.json /
// processor_config.json, with transformers' defaults for omitted fields.
#include "server/models/colpali/colpali_config.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "server/models/config_json.h"

namespace embedserve::models::colpali {
namespace {

using nlohmann::json;

using config_json::Bad;
using config_json::FieldPath;
using config_json::ReadDouble;
using config_json::ReadInt;
using config_json::ReadString;

// A field accepted only at its neutral value (absent, null, false, empty).
absl::Status RequireNeutral(const json& obj, const char* key, const std::string& source,
                            const std::string& where, const std::string& what) {
  if (!obj.contains(key)) return absl::OkStatus();
  const json& v = obj.at(key);
  if (v.is_null() || (v.is_boolean() && !v.get<bool>()) ||
      ((v.is_object() || v.is_array()) && v.empty())) {
    return absl::OkStatus();
  }
  return Bad(source, FieldPath(where, key),
             absl::StrCat("value ", v.dump(), " is not supported by the native ColPali (", what,
                          ")"));
}

bool KnownGelu(const std::string& act) {
  return act == "gelu_pytorch_tanh" || act == "gelu_new" || act == "gelu_fast" || act == "gelu";
}

absl::Status ParseVision(const json& v, const std::string& source, const std::string& where,
                         VisionConfig* c) {
  if (!v.is_object()) return Bad(source, where, "expected an object");
  std::string model_type = "siglip_vision_model";
  if (auto s = ReadString(v, "model_type", source, where, &model_type); !s.ok()) return s;
  if (model_type != "siglip_vision_model") {
    return Bad(source, FieldPath(where, "model_type"),
               "'" + model_type + "' is not supported (the native ColPali runs a SigLIP "
               "vision tower, siglip_vision_model)");
  }
  if (auto s = ReadInt(v, "hidden_size", source, where, 1, &c->hidden_size); !s.ok()) return s;
  if (auto s = ReadInt(v, "intermediate_size", source, where, 1, &c->intermediate_size); !s.ok()) return s;
  if (auto s = ReadInt(v, "num_hidden_layers", source, where, 0, &c->num_hidden_layers); !s.ok()) return s;
  if (auto s = ReadInt(v, "num_attention_heads", source, where, 1, &c->num_attention_heads); !s.ok()) return s;
  if (auto s = ReadInt(v, "image_size", source, where, 1, &c->image_size); !s.ok()) return s;
  if (auto s = ReadInt(v, "patch_size", source, where, 1, &c->patch_size); !s.ok()) return s;
  if (auto s = ReadDouble(v, "layer_norm_eps", source, where, 0, 1, &c->layer_norm_eps); !s.ok()) return s;
  if (auto s = ReadString(v, "hidden_act", source, where, &c->hidden_act); !s.ok()) return s;
  int channels = 3;
  if (auto s = ReadInt(v, "num_channels", source, where, 1, &channels); !s.ok()) return s;
  if (channels != 3) return Bad(source, FieldPath(where, "num_channels"), "only 3 (RGB) is supported");
  if (!KnownGelu(c->hidden_act)) {
    return Bad(source, FieldPath(where, "hidden_act"),
               "'" + c->hidden_act + "' is not supported (gelu_pytorch_tanh, gelu_new, gelu_fast, gelu)");
  }
  if (c->hidden_size % c->num_attention_heads != 0) {
    return Bad(source, FieldPath(where, "num_attention_heads"),
               absl::StrCat(c->num_attention_heads, " does not divide hidden_size ", c->hidden_size));
  }
  if (c->image_size % c->patch_size != 0) {
    return Bad(source, FieldPath(where, "patch_size"),
               absl::StrCat(c->patch_size, " does not divide image_size ", c->image_size));
  }
  return absl::OkStatus();
}

absl::Status ParseText(const json& t, const std::string& source, const std::string& where,
                       TextConfig* c) {
  if (!t.is_object()) return Bad(source, where, "expected an object");
  std::string model_type = "gemma";
  if (auto s = ReadString(t, "model_type", source, where, &model_type); !s.ok()) return s;
  if (model_type != "gemma") {
    return Bad(source, FieldPath(where, "model_type"),
               "'" + model_type + "' is not supported (the native ColPali runs a Gemma text "
               "model; PaliGemma 2's gemma2 is not implemented)");
  }
  if (auto s = ReadInt(t, "hidden_size", source, where, 1, &c->hidden_size); !s.ok()) return s;
  if (auto s = ReadInt(t, "intermediate_size", source, where, 1, &c->intermediate_size); !s.ok()) return s;
  if (auto s = ReadInt(t, "num_hidden_layers", source, where, 0, &c->num_hidden_layers); !s.ok()) return s;
  if (auto s = ReadInt(t, "num_attention_heads", source, where, 1, &c->num_attention_heads); !s.ok()) return s;
  // GemmaConfig: num_key_value_heads defaults to num_attention_heads when omitted or null.
  c->num_key_value_heads = c->num_attention_heads;
  if (auto s = ReadInt(t, "num_key_value_heads", source, where, 1, &c->num_key_value_heads); !s.ok()) return s;
  if (auto s = ReadInt(t, "head_dim", source, where, 2, &c->head_dim); !s.ok()) return s;
  if (auto s = ReadInt(t, "vocab_size", source, where, 1, &c->vocab_size); !s.ok()) return s;
  if (auto s = ReadDouble(t, "rms_norm_eps", source, where, 0, 1, &c->rms_norm_eps); !s.ok()) return s;
  if (auto s = ReadDouble(t, "rope_theta", source, where, 0, 1e12, &c->rope_theta); !s.ok()) return s;
  // Gemma uses hidden_activation; a null one means gelu_pytorch_tanh (hidden_act is legacy).
  if (auto s = ReadString(t, "hidden_activation", source, where, &c->hidden_activation); !s.ok()) return s;
  if (!KnownGelu(c->hidden_activation)) {
    return Bad(source, FieldPath(where, "hidden_activation"),
               "'" + c->hidden_activation +
                   "' is not supported (gelu_pytorch_tanh, gelu_new, gelu_fast, gelu)");
  }
  if (auto s = RequireNeutral(t, "attention_bias", source, where, "Gemma has no attention biases"); !s.ok()) return s;
  if (auto s = RequireNeutral(t, "rope_scaling", source, where, "only plain RoPE"); !s.ok()) return s;
  if (auto s = RequireNeutral(t, "final_logit_softcapping", source, where, "Gemma 2 feature"); !s.ok()) return s;
  if (auto s = RequireNeutral(t, "attn_logit_softcapping", source, where, "Gemma 2 feature"); !s.ok()) return s;
  if (auto s = RequireNeutral(t, "sliding_window", source, where, "Gemma 2 feature"); !s.ok()) return s;
  if (c->head_dim % 2 != 0) return Bad(source, FieldPath(where, "head_dim"), "must be even for RoPE");
  if (c->num_attention_heads % c->num_key_value_heads != 0) {
    return Bad(source, FieldPath(where, "num_key_value_heads"),
               absl::StrCat(c->num_key_value_heads, " does not divide num_attention_heads ",
                            c->num_attention_heads));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ColPaliConfig> ParseColPaliConfig(const std::string& json_text,
                                                 const std::string& source) {
  const json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!root.is_object()) return Bad(source, "(root)", "not a JSON object");
  ColPaliConfig c;
  std::string model_type;
  if (auto s = ReadString(root, "model_type", source, "", &model_type); !s.ok()) return s;
  // transformers' ColPaliConfig nests the PaliGemma config under vlm_config; colpali-engine's
  // ColPali saves PaliGemma's own config (model_type paligemma, architectures ["ColPali"]).
  json vlm = json::object();
  std::string where;
  if (model_type == "colpali") {
    if (auto s = ReadInt(root, "embedding_dim", source, "", 1, &c.embedding_dim); !s.ok()) return s;
    if (root.contains("vlm_config") && !root.at("vlm_config").is_null()) vlm = root.at("vlm_config");
    if (!vlm.is_object()) return Bad(source, "vlm_config", "expected an object");
    where = "vlm_config";
  } else if (model_type == "paligemma") {
    bool colpali = false;
    if (root.contains("architectures") && root.at("architectures").is_array()) {
      for (const json& a : root.at("architectures")) colpali |= a.is_string() && a.get<std::string>() == "ColPali";
    }
    if (!colpali) {
      return Bad(source, "architectures",
                 "a paligemma config is served only as colpali-engine's ColPali (architectures "
                 "[\"ColPali\"]); got " + (root.contains("architectures") ? root.at("architectures").dump() : std::string("none")));
    }
    vlm = root;
    c.kind = CheckpointKind::kColPaliEngine;
    c.embedding_dim_from_weights = true;  // ColPali.dim, 128 in every release; checked against the weights
  } else {
    return Bad(source, "model_type",
               "'" + model_type + "' is not colpali (transformers) or paligemma (colpali-engine)");
  }
  const auto path = [&where](const char* key) { return where.empty() ? std::string(key) : where + "." + key; };

  // PaliGemmaConfig's defaults: SigLIP So400m/14 at 224 and Gemma 2B when a part is absent.
  VisionConfig paligemma_vision;
  paligemma_vision.hidden_size = 1152;
  paligemma_vision.intermediate_size = 4304;
  paligemma_vision.num_hidden_layers = 27;
  paligemma_vision.num_attention_heads = 16;
  paligemma_vision.patch_size = 14;
  TextConfig paligemma_text;
  paligemma_text.hidden_size = 2048;
  paligemma_text.intermediate_size = 16384;
  paligemma_text.num_hidden_layers = 18;
  paligemma_text.num_attention_heads = 8;
  paligemma_text.num_key_value_heads = 1;
  paligemma_text.vocab_size = 257152;
  c.vision = paligemma_vision;
  c.text = paligemma_text;

  if (model_type == "colpali") {
    std::string vlm_type = "paligemma";
    if (auto s = ReadString(vlm, "model_type", source, where, &vlm_type); !s.ok()) return s;
    if (vlm_type != "paligemma") {
      return Bad(source, path("model_type"),
                 "'" + vlm_type + "' is not supported (the native ColPali runs PaliGemma)");
    }
  }
  if (auto s = ReadInt(vlm, "image_token_index", source, where, 0, &c.image_token_index); !s.ok()) return s;
  if (auto s = ReadInt(vlm, "image_token_id", source, where, 0, &c.image_token_index); !s.ok()) return s;
  if (auto s = ReadInt(vlm, "pad_token_id", source, where, 0, &c.pad_token_id); !s.ok()) return s;
  if (auto s = ReadInt(vlm, "bos_token_id", source, where, 0, &c.bos_token_id); !s.ok()) return s;
  if (auto s = ReadInt(vlm, "eos_token_id", source, where, 0, &c.eos_token_id); !s.ok()) return s;
  if (vlm.contains("vision_config") && !vlm.at("vision_config").is_null()) {
    c.vision = VisionConfig();  // a given dict starts from SiglipVisionConfig's defaults
    if (auto s = ParseVision(vlm.at("vision_config"), source, path("vision_config"), &c.vision); !s.ok()) return s;
  }
  if (vlm.contains("text_config") && !vlm.at("text_config").is_null()) {
    c.text = TextConfig();  // a given dict starts from GemmaConfig's defaults
    if (auto s = ParseText(vlm.at("text_config"), source, path("text_config"), &c.text); !s.ok()) return s;
  }
  c.projection_dim = c.text.hidden_size;
  if (auto s = ReadInt(vlm, "projection_dim", source, where, 1, &c.projection_dim); !s.ok()) return s;
  if (c.projection_dim != c.text.hidden_size) {
    return Bad(source, path("projection_dim"),
               absl::StrCat(c.projection_dim, " differs from text_config.hidden_size ",
                            c.text.hidden_size, " (the projected image features replace token "
                            "embeddings)"));
  }
  if (c.image_token_index >= c.text.vocab_size) {
    return Bad(source, path("image_token_index"),
               absl::StrCat(c.image_token_index, " is outside the vocabulary (",
                            c.text.vocab_size, ")"));
  }
  c.preprocess.size = c.vision.image_size;
  c.preprocess.image_seq_length = c.vision.num_patches();
  ApplyPromptProfile(DefaultPromptProfile(c.kind), &c);
  return c;
}

absl::StatusOr<PromptProfile> ParsePromptProfile(const std::string& name) {
  if (name == "transformers") return PromptProfile::kTransformers;
  if (name == "colpali-engine") return PromptProfile::kColPaliEngine0313;
  const std::string engine = "colpali-engine-";
  int major = -1, minor = -1, patch = -1;
  char tail = 0;
  if (name.rfind(engine, 0) == 0 &&
      std::sscanf(name.c_str() + engine.size(), "%d.%d.%d%c", &major, &minor, &patch, &tail) == 3 &&
      major >= 0 && minor >= 0 && patch >= 0) {
    if (major == 0 && minor == 3) {
      if (patch >= 13) return PromptProfile::kColPaliEngine0313;
      if (patch >= 11) return PromptProfile::kColPaliEngine0311;
      if (patch >= 7) return PromptProfile::kColPaliEngine037;
      if (patch >= 4) return PromptProfile::kColPaliEngine034;
      return PromptProfile::kColPaliEngine030;
    }
    if (major > 0 || minor > 3) return PromptProfile::kColPaliEngine0313;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "prompt profile '", name, "' is not one of: transformers, colpali-engine (the newest), "
      "colpali-engine-X.Y.Z for a release from 0.3.0 on (e.g. colpali-engine-0.3.4)"));
}

std::string PromptProfileName(PromptProfile profile) {
  switch (profile) {
    case PromptProfile::kTransformers: return "transformers";
    case PromptProfile::kColPaliEngine030: return "colpali-engine-0.3.0";
    case PromptProfile::kColPaliEngine034: return "colpali-engine-0.3.4";
    case PromptProfile::kColPaliEngine037: return "colpali-engine-0.3.7";
    case PromptProfile::kColPaliEngine0311: return "colpali-engine-0.3.11";
    case PromptProfile::kColPaliEngine0313: return "colpali-engine-0.3.13";
  }
  return "transformers";
}

PromptProfile DefaultPromptProfile(CheckpointKind kind) {
  return kind == CheckpointKind::kColPaliEngine ? PromptProfile::kColPaliEngine0313
                                                : PromptProfile::kTransformers;
}

void ApplyPromptProfile(PromptProfile profile, ColPaliConfig* config) {
  PromptConfig& p = config->prompt;
  if (profile == PromptProfile::kTransformers && p.profile != PromptProfile::kTransformers) {
    p = PromptConfig();  // back to ColPaliProcessor's defaults
  }
  p.profile = profile;
  p.query_augmentation_count = 10;
  switch (profile) {
    case PromptProfile::kTransformers:
      p.query_newline = true;
      p.page_bos_count = 1;
      break;
    case PromptProfile::kColPaliEngine030:
      p.visual_prompt_prefix = "Describe the image.";
      p.query_prefix = "Question: ";
      p.query_newline = true;
      p.page_bos_count = 1;
      break;
    case PromptProfile::kColPaliEngine034:
    case PromptProfile::kColPaliEngine037:
      // Same strings; 0.3.7 - 0.3.10 pin transformers 4.47 - 4.51, whose PaliGemmaProcessor
      // adds a <bos> after the expanded <image>s in front of the text's own.
      p.visual_prompt_prefix = "Describe the image.";
      p.query_prefix = "Query: ";
      p.query_newline = true;
      p.page_bos_count = profile == PromptProfile::kColPaliEngine037 ? 2 : 1;
      break;
    case PromptProfile::kColPaliEngine0311:
    case PromptProfile::kColPaliEngine0313:
      p.visual_prompt_prefix = "Describe the image.";
      p.query_prefix = profile == PromptProfile::kColPaliEngine0311 ? "Query: " : "";
      p.query_newline = false;
      p.page_bos_count = 2;
      break;
  }
}

absl::Status ApplyPreprocessorConfig(const std::string& json_text, const std::string& source,
                                     ColPaliConfig* config) {
  const json p = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!p.is_object()) return Bad(source, "(root)", "not a JSON object");
  PreprocessConfig& pre = config->preprocess;
  if (p.contains("size") && !p.at("size").is_null()) {
    const json& size = p.at("size");
    int h = 0, w = 0;
    if (size.is_number_integer()) {
      h = w = size.get<int>();
    } else if (size.is_object() && size.contains("height") && size.contains("width")) {
      if (auto s = ReadInt(size, "height", source, "size", 1, &h); !s.ok()) return s;
      if (auto s = ReadInt(size, "width", source, "size", 1, &w); !s.ok()) return s;
    } else {
      return Bad(source, "size", "expected {\"height\", \"width\"}, got " + size.dump());
    }
    if (h != w || h != config->vision.image_size) {
      return Bad(source, "size",
                 absl::StrCat(h, "x", w, " differs from the vision tower's image_size ",
                              config->vision.image_size));
    }
    pre.size = h;
  }
  if (p.contains("resample") && !p.at("resample").is_null() &&
      !(p.at("resample").is_number_integer() && p.at("resample").get<int>() == 3)) {
    return Bad(source, "resample",
               p.at("resample").dump() + " is not supported (only 3, bicubic)");
  }
  if (p.contains("do_resize") && p.at("do_resize").is_boolean() && !p.at("do_resize").get<bool>()) {
    return Bad(source, "do_resize", "false is not supported (pages are always resized)");
  }
  if (auto s = ReadDouble(p, "rescale_factor", source, "", 0, 1, &pre.rescale_factor); !s.ok()) return s;
  if (p.contains("do_rescale") && p.at("do_rescale").is_boolean() && !p.at("do_rescale").get<bool>()) {
    pre.rescale_factor = 1.0;
  }
  auto read_triple = [&](const char* key, std::array<double, 3>* out) -> absl::Status {
    if (!p.contains(key) || p.at(key).is_null()) return absl::OkStatus();
    const json& v = p.at(key);
    if (v.is_number()) {
      out->fill(v.get<double>());
      return absl::OkStatus();
    }
    if (!v.is_array() || v.size() != 3) return Bad(source, key, "expected 3 numbers, got " + v.dump());
    for (int i = 0; i < 3; ++i) {
      if (!v[i].is_number()) return Bad(source, key, "expected 3 numbers, got " + v.dump());
      (*out)[i] = v[i].get<double>();
    }
    return absl::OkStatus();
  };
  if (auto s = read_triple("image_mean", &pre.mean); !s.ok()) return s;
  if (auto s = read_triple("image_std", &pre.std); !s.ok()) return s;
  for (double sd : pre.std) {
    if (!(sd > 0)) return Bad(source, "image_std", "must be positive");
  }
  if (p.contains("do_normalize") && p.at("do_normalize").is_boolean() &&
      !p.at("do_normalize").get<bool>()) {
    pre.mean = {0, 0, 0};
    pre.std = {1, 1, 1};
  }
  if (auto s = ReadInt(p, "image_seq_length", source, "", 1, &pre.image_seq_length); !s.ok()) return s;
  if (pre.image_seq_length != config->vision.num_patches()) {
    return Bad(source, "image_seq_length",
               absl::StrCat(pre.image_seq_length, " differs from the vision tower's ",
                            config->vision.num_patches(), " patches"));
  }
  return absl::OkStatus();
}

absl::Status ApplyProcessorConfig(const std::string& json_text, const std::string& source,
                                  ColPaliConfig* config) {
  const json p = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!p.is_object()) return Bad(source, "(root)", "not a JSON object");
  // colpali-engine's prefixes are class constants of its processor: the file does not change them.
  if (config->prompt.profile != PromptProfile::kTransformers) return absl::OkStatus();
  if (auto s = ReadString(p, "visual_prompt_prefix", source, "", &config->prompt.visual_prompt_prefix); !s.ok()) return s;
  if (auto s = ReadString(p, "query_prefix", source, "", &config->prompt.query_prefix); !s.ok()) return s;
  return absl::OkStatus();
}

absl::Status ApplyOptionalConfigs(const std::string& dir, ColPaliConfig* config) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path pre = fs::path(dir) / "preprocessor_config.json";
  if (fs::exists(pre, ec)) {
    absl::StatusOr<std::string> text = config_json::ReadConfigFile(pre.string());
    if (!text.ok()) return text.status();
    if (auto s = ApplyPreprocessorConfig(*text, pre.string(), config); !s.ok()) return s;
  }
  const fs::path proc = fs::path(dir) / "processor_config.json";
  if (fs::exists(proc, ec)) {
    absl::StatusOr<std::string> text = config_json::ReadConfigFile(proc.string());
    if (!text.ok()) return text.status();
    if (auto s = ApplyProcessorConfig(*text, proc.string(), config); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<ColPaliConfig> ReadColPaliConfig(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path path = fs::path(dir) / "config.json";
  absl::StatusOr<std::string> text = config_json::ReadConfigFile(path.string());
  if (!text.ok()) return text.status();
  absl::StatusOr<ColPaliConfig> config = ParseColPaliConfig(*text, path.string());
  if (!config.ok()) return config.status();
  if (absl::Status s = ApplyOptionalConfigs(dir, &*config); !s.ok()) return s;
  return config;
}

std::string ColPaliConfigToJson(const ColPaliConfig& c) {
  json vision = {{"model_type", "siglip_vision_model"},
                 {"hidden_size", c.vision.hidden_size},
                 {"intermediate_size", c.vision.intermediate_size},
                 {"num_hidden_layers", c.vision.num_hidden_layers},
                 {"num_attention_heads", c.vision.num_attention_heads},
                 {"image_size", c.vision.image_size},
                 {"patch_size", c.vision.patch_size},
                 {"num_channels", 3},
                 {"layer_norm_eps", c.vision.layer_norm_eps},
                 {"hidden_act", c.vision.hidden_act},
                 {"projection_dim", c.projection_dim},
                 {"vision_use_head", false}};
  json text = {{"model_type", "gemma"},
               {"hidden_size", c.text.hidden_size},
               {"intermediate_size", c.text.intermediate_size},
               {"num_hidden_layers", c.text.num_hidden_layers},
               {"num_attention_heads", c.text.num_attention_heads},
               {"num_key_value_heads", c.text.num_key_value_heads},
               {"head_dim", c.text.head_dim},
               {"vocab_size", c.text.vocab_size},
               {"rms_norm_eps", c.text.rms_norm_eps},
               {"rope_theta", c.text.rope_theta},
               {"hidden_activation", c.text.hidden_activation}};
  json root = {{"architectures", {"ColPaliForRetrieval"}},
               {"model_type", "colpali"},
               {"embedding_dim", c.embedding_dim},
               {"vlm_config",
                {{"model_type", "paligemma"},
                 {"image_token_index", c.image_token_index},
                 {"pad_token_id", c.pad_token_id},
                 {"bos_token_id", c.bos_token_id},
                 {"eos_token_id", c.eos_token_id},
                 {"projection_dim", c.projection_dim},
                 {"hidden_size", c.text.hidden_size},
                 {"vision_config", vision},
                 {"text_config", text}}}};
  return root.dump(2);
}

std::string ColPaliEngineConfigToJson(const ColPaliConfig& c) {
  // The fields and nesting of vidore/colpali-v1.2-merged's config.json (PaliGemmaConfig as
  // colpali-engine's ColPali saves it), with every size spelled out.
  const int image_tokens = c.vision.num_patches();
  json vision = {{"model_type", "siglip_vision_model"},
                 {"hidden_size", c.vision.hidden_size},
                 {"image_size", c.vision.image_size},
                 {"intermediate_size", c.vision.intermediate_size},
                 {"num_attention_heads", c.vision.num_attention_heads},
                 {"num_hidden_layers", c.vision.num_hidden_layers},
                 {"num_image_tokens", image_tokens},
                 {"patch_size", c.vision.patch_size},
                 {"projection_dim", c.projection_dim},
                 {"projector_hidden_act", "gelu_fast"},
                 {"layer_norm_eps", c.vision.layer_norm_eps},
                 {"hidden_act", c.vision.hidden_act},
                 {"vision_use_head", false}};
  json text = {{"model_type", "gemma"},
               {"hidden_size", c.text.hidden_size},
               {"intermediate_size", c.text.intermediate_size},
               {"num_attention_heads", c.text.num_attention_heads},
               {"num_hidden_layers", c.text.num_hidden_layers},
               {"num_image_tokens", image_tokens},
               {"num_key_value_heads", c.text.num_key_value_heads},
               {"head_dim", c.text.head_dim},
               {"rms_norm_eps", c.text.rms_norm_eps},
               {"rope_theta", c.text.rope_theta},
               {"torch_dtype", "float32"},
               {"vocab_size", c.text.vocab_size}};
  json root = {{"_name_or_path", "vidore/colpaligemma-3b-pt-448-base"},
               {"architectures", {"ColPali"}},
               {"bos_token_id", c.bos_token_id},
               {"eos_token_id", c.eos_token_id},
               {"hidden_size", c.text.hidden_size},
               {"ignore_index", -100},
               {"image_token_index", c.image_token_index},
               {"model_type", "paligemma"},
               {"pad_token_id", c.pad_token_id},
               {"projection_dim", c.projection_dim},
               {"text_config", text},
               {"torch_dtype", "bfloat16"},
               {"transformers_version", "4.44.0"},
               {"vision_config", vision},
               {"vocab_size", c.text.vocab_size}};
  return root.dump(2);
}

std::string PreprocessorConfigToJson(const ColPaliConfig& c) {
  json p = {{"image_processor_type", "SiglipImageProcessor"},
            {"do_resize", true},
            {"size", {{"height", c.preprocess.size}, {"width", c.preprocess.size}}},
            {"resample", 3},
            {"do_rescale", true},
            {"rescale_factor", c.preprocess.rescale_factor},
            {"do_normalize", true},
            {"image_mean", c.preprocess.mean},
            {"image_std", c.preprocess.std},
            {"image_seq_length", c.preprocess.image_seq_length},
            {"processor_class", "ColPaliProcessor"}};
  return p.dump(2);
}

}  // namespace embedserve::models::colpali
