// Parsing and validation of open_clip_config.json, and OpenCLIP's named architectures.
#include "server/models/openclip/openclip_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/models/config_json.h"
#include "server/models/openclip/openclip_pretrained.h"

namespace embedserve::models::openclip {
namespace {

using nlohmann::json;

using config_json::Bad;

// A field that only has meaning in training, or whose default is the only value we run.
bool IsNullFalseOrEmpty(const json& v) {
  return v.is_null() || (v.is_boolean() && !v.get<bool>()) ||
         ((v.is_object() || v.is_array() || v.is_string()) && v.empty());
}

// OpenCLIP's fields: `where` names the file and the object ("<file>: model_cfg.vision_cfg"),
// sizes up to 2^20, and a null is an error, not a default.
absl::Status ReadInt(const json& obj, const char* key, const std::string& where, int min_value,
                     int* out) {
  return config_json::ReadInt(obj, key, where, "", min_value, out, 1 << 20,
                              config_json::Null::kError);
}

absl::Status ReadDouble(const json& obj, const char* key, const std::string& where, double* out) {
  return config_json::ReadDouble(obj, key, where, "", 0, 64, out, config_json::Null::kError);
}

// Checks every key of `obj` against what the native model runs: `known` keys are read by the
// caller; `ignored` keys only matter for training; `default_only` keys are accepted only at
// their neutral value (null/false/empty, or the given string).
struct KeyRules {
  std::vector<std::string> known;
  std::vector<std::string> ignored;
  std::vector<std::pair<std::string, std::string>> default_only;  // key, accepted string ("" = none)
};

absl::Status CheckKeys(const json& obj, const std::string& where, const KeyRules& rules) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const std::string& key = it.key();
    auto in = [&](const std::vector<std::string>& list) {
      return std::find(list.begin(), list.end(), key) != list.end();
    };
    if (in(rules.known) || in(rules.ignored)) continue;
    bool handled = false;
    for (const auto& [name, accepted] : rules.default_only) {
      if (name != key) continue;
      handled = true;
      const json& v = it.value();
      if (IsNullFalseOrEmpty(v) || (!accepted.empty() && v.is_string() && v == accepted)) break;
      return Bad(where, key,
                 absl::StrCat("value ", v.dump(), " is not supported by the native OpenCLIP "
                              "(only the standard CLIP with a ViT image tower and a causal "
                              "text transformer runs)"));
    }
    if (!handled) {
      return Bad(where, key, "unknown or unsupported field for the native OpenCLIP "
                             "(standard CLIP: ViT image tower + causal text transformer)");
    }
  }
  return absl::OkStatus();
}

std::string NameFor(const OpenClipConfig& c) {
  struct Known { const char* name; int image, patch, width, layers, text_width, text_layers; };
  static const Known kKnown[] = {
      {"ViT-B-32", 224, 32, 768, 12, 512, 12},   {"ViT-B-16", 224, 16, 768, 12, 512, 12},
      {"ViT-L-14", 224, 14, 1024, 24, 768, 12},  {"ViT-L-14-336", 336, 14, 1024, 24, 768, 12},
      {"ViT-H-14", 224, 14, 1280, 32, 1024, 24}, {"ViT-bigG-14", 224, 14, 1664, 48, 1280, 32},
  };
  for (const Known& k : kKnown) {
    if (c.vision.image_size == k.image && c.vision.patch_size == k.patch &&
        c.vision.width == k.width && c.vision.layers == k.layers && c.text.width == k.text_width &&
        c.text.layers == k.text_layers) {
      return absl::StrCat(k.name, c.quick_gelu ? "-quickgelu" : "");
    }
  }
  return absl::StrCat("ViT-custom-", c.vision.image_size, "px-p", c.vision.patch_size, "-w",
                      c.vision.width, c.quick_gelu ? "-quickgelu" : "");
}

}  // namespace

std::string OpenClipConfig::ArchitectureName() const { return NameFor(*this); }

absl::StatusOr<OpenClipConfig> ParseOpenClipConfig(const std::string& json_text,
                                                   const std::string& source) {
  json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  // Hub format nests the model config; a bare model config (OpenCLIP's model_configs/*.json)
  // is accepted too.
  const json model = root.contains("model_cfg") ? root["model_cfg"] : root;
  if (!model.is_object()) return Bad(source, "model_cfg", "expected an object");
  OpenClipConfig c;

  KeyRules top;
  top.known = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"};
  top.ignored = {"cast_dtype"};
  top.default_only = {{"custom_text", ""}, {"multimodal_cfg", ""}, {"init_logit_bias", ""},
                      {"init_logit_scale", ""}, {"nonscalar_logit_scale", ""}};
  if (absl::Status s = CheckKeys(model, source + ": model_cfg", top); !s.ok()) return s;
  if (absl::Status s = ReadInt(model, "embed_dim", source + ": model_cfg", 1, &c.embed_dim);
      !s.ok()) {
    return s;
  }
  if (model.contains("quick_gelu")) {
    if (!model["quick_gelu"].is_boolean()) return Bad(source, "model_cfg.quick_gelu", "expected a boolean");
    c.quick_gelu = model["quick_gelu"].get<bool>();
  }

  // Vision tower.
  if (!model.contains("vision_cfg") || !model["vision_cfg"].is_object()) {
    return Bad(source, "model_cfg.vision_cfg", "missing or not an object");
  }
  const json& v = model["vision_cfg"];
  const std::string vwhere = source + ": model_cfg.vision_cfg";
  if (v.contains("layers") && v["layers"].is_array()) {
    return Bad(vwhere, "layers", "a list of stage depths means a ResNet image tower, which "
                                 "the native OpenCLIP does not run (ViT towers only)");
  }
  if (v.contains("timm_model_name") && !v["timm_model_name"].is_null()) {
    return Bad(vwhere, "timm_model_name", "timm image towers are not supported (ViT towers only)");
  }
  KeyRules vr;
  vr.known = {"image_size", "patch_size", "width", "layers", "head_width", "mlp_ratio"};
  vr.ignored = {"patch_dropout", "output_tokens", "timm_model_name", "timm_model_pretrained",
                "timm_pool", "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path",
                "attn_pooler_queries", "attn_pooler_heads", "n_queries"};
  vr.default_only = {{"ls_init_value", ""}, {"attentional_pool", ""}, {"no_ln_pre", ""},
                     {"final_ln_after_pool", ""}, {"pool_type", "tok"},
                     {"pos_embed_type", "learnable"}, {"input_patchnorm", ""},
                     {"global_average_pool", ""}, {"act_kwargs", ""}, {"norm_kwargs", ""}};
  if (absl::Status s = CheckKeys(v, vwhere, vr); !s.ok()) return s;
  if (v.contains("image_size") && v["image_size"].is_array()) {
    const json& size = v["image_size"];
    if (size.size() != 2 || !size[0].is_number_integer() || size[0] != size[1]) {
      return Bad(vwhere, "image_size", absl::StrCat("only square images are supported, got ", size.dump()));
    }
    c.vision.image_size = size[0].get<int>();
  } else if (absl::Status s = ReadInt(v, "image_size", vwhere, 1, &c.vision.image_size); !s.ok()) {
    return s;
  }
  for (auto [key, field] : {std::pair<const char*, int*>{"patch_size", &c.vision.patch_size},
                            {"width", &c.vision.width}, {"layers", &c.vision.layers},
                            {"head_width", &c.vision.head_width}}) {
    if (absl::Status s = ReadInt(v, key, vwhere, 1, field); !s.ok()) return s;
  }
  if (absl::Status s = ReadDouble(v, "mlp_ratio", vwhere, &c.vision.mlp_ratio); !s.ok()) return s;
  if (c.vision.image_size % c.vision.patch_size != 0) {
    return Bad(vwhere, "patch_size", absl::StrCat(c.vision.patch_size, " does not divide image_size ",
                                                  c.vision.image_size));
  }
  if (c.vision.width % c.vision.head_width != 0) {
    return Bad(vwhere, "head_width", absl::StrCat(c.vision.head_width, " does not divide width ",
                                                  c.vision.width));
  }

  // Text tower.
  if (!model.contains("text_cfg") || !model["text_cfg"].is_object()) {
    return Bad(source, "model_cfg.text_cfg", "missing or not an object");
  }
  const json& t = model["text_cfg"];
  const std::string twhere = source + ": model_cfg.text_cfg";
  if (t.contains("hf_model_name") && !t["hf_model_name"].is_null()) {
    return Bad(twhere, "hf_model_name", "Hugging Face text towers are not supported "
                                        "(the causal CLIP text transformer only)");
  }
  KeyRules tr;
  tr.known = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"};
  tr.ignored = {"output_tokens", "hf_model_name", "hf_model_pretrained", "hf_proj_type",
                "hf_pooler_type", "proj"};
  tr.default_only = {{"ls_init_value", ""},  {"embed_cls", ""},        {"no_causal_mask", ""},
                     {"final_ln_after_pool", ""}, {"pool_type", "argmax"}, {"proj_bias", ""},
                     {"hf_tokenizer_name", ""}, {"tokenizer_kwargs", ""}, {"act_kwargs", ""},
                     {"norm_kwargs", ""},     {"proj_type", "linear"}};
  if (absl::Status s = CheckKeys(t, twhere, tr); !s.ok()) return s;
  if (t.contains("pad_id") && !(t["pad_id"].is_number_integer() && t["pad_id"] == 0)) {
    return Bad(twhere, "pad_id", "only pad id 0 is supported");
  }
  for (auto [key, field] : {std::pair<const char*, int*>{"context_length", &c.text.context_length},
                            {"vocab_size", &c.text.vocab_size}, {"width", &c.text.width},
                            {"heads", &c.text.heads}, {"layers", &c.text.layers}}) {
    if (absl::Status s = ReadInt(t, key, twhere, 1, field); !s.ok()) return s;
  }
  if (absl::Status s = ReadDouble(t, "mlp_ratio", twhere, &c.text.mlp_ratio); !s.ok()) return s;
  if (c.text.width % c.text.heads != 0) {
    return Bad(twhere, "heads", absl::StrCat(c.text.heads, " does not divide width ", c.text.width));
  }
  if (c.text.context_length < 2) return Bad(twhere, "context_length", "must be at least 2");

  // Preprocessing.
  if (root.contains("preprocess_cfg")) {
    const json& p = root["preprocess_cfg"];
    const std::string pwhere = source + ": preprocess_cfg";
    if (!p.is_object()) return Bad(source, "preprocess_cfg", "expected an object");
    for (auto [key, field] : {std::pair<const char*, std::array<float, 3>*>{"mean", &c.preprocess.mean},
                              {"std", &c.preprocess.std}}) {
      if (!p.contains(key)) continue;
      const json& a = p[key];
      if (!a.is_array() || a.size() != 3) return Bad(pwhere, key, "expected 3 numbers");
      for (int i = 0; i < 3; ++i) {
        if (!a[i].is_number()) return Bad(pwhere, key, "expected 3 numbers");
        (*field)[i] = a[i].get<float>();
      }
    }
    for (float s : c.preprocess.std) {
      if (!(s > 0)) return Bad(pwhere, "std", "every value must be positive");
    }
    if (p.contains("interpolation") && p["interpolation"] != "bicubic") {
      return Bad(pwhere, "interpolation", absl::StrCat(p["interpolation"].dump(),
                                                       " is not supported (bicubic only)"));
    }
    if (p.contains("resize_mode") && p["resize_mode"] != "shortest") {
      return Bad(pwhere, "resize_mode", absl::StrCat(p["resize_mode"].dump(),
                                                     " is not supported (shortest only)"));
    }
    if (p.contains("size")) {
      const json& s = p["size"];
      const bool same = (s.is_number_integer() && s == c.vision.image_size) ||
                        (s.is_array() && s.size() == 2 && s[0] == c.vision.image_size &&
                         s[1] == c.vision.image_size);
      if (!same) return Bad(pwhere, "size", absl::StrCat(s.dump(), " differs from vision_cfg.image_size"));
    }
  }
  return c;
}

absl::StatusOr<OpenClipConfig> ReadOpenClipConfig(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "open_clip_config.json").string();
  absl::StatusOr<std::string> text = config_json::ReadConfigFile(path);
  if (!text.ok()) return text.status();
  return ParseOpenClipConfig(*text, path);
}

std::string OpenClipConfigToJson(const OpenClipConfig& c) {
  json model = {
      {"embed_dim", c.embed_dim},
      {"vision_cfg", {{"image_size", c.vision.image_size}, {"patch_size", c.vision.patch_size},
                      {"width", c.vision.width}, {"layers", c.vision.layers},
                      {"head_width", c.vision.head_width}, {"mlp_ratio", c.vision.mlp_ratio}}},
      {"text_cfg", {{"context_length", c.text.context_length}, {"vocab_size", c.text.vocab_size},
                    {"width", c.text.width}, {"heads", c.text.heads}, {"layers", c.text.layers},
                    {"mlp_ratio", c.text.mlp_ratio}}},
  };
  if (c.quick_gelu) model["quick_gelu"] = true;
  json root = {{"model_cfg", model},
               {"preprocess_cfg",
                {{"mean", c.preprocess.mean}, {"std", c.preprocess.std},
                 {"interpolation", "bicubic"}, {"resize_mode", "shortest"}}}};
  return root.dump(2);
}

absl::StatusOr<OpenClipConfig> NamedArchitecture(const std::string& name) {
  return ShippedArchitecture(name);  // the shipped table (openclip_pretrained.cc)
}

}  // namespace embedserve::models::openclip
