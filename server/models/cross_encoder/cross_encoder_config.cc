// Parsing and validation of a cross-encoder's config.json, the real rerankers' geometries,
// and config.json written back in the hub's style.
#include "server/models/cross_encoder/cross_encoder_config.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "server/models/config_json.h"

namespace embedserve::models::cross_encoder {
namespace {

using nlohmann::json;

using config_json::Bad;
using config_json::ReadDouble;
using config_json::ReadInt;
using config_json::ReadString;

constexpr const char* kXlmRobertaName = "XLMRobertaForSequenceClassification";
constexpr const char* kBertName = "BertForSequenceClassification";

// The one architecture of ours that `architectures` lists; nullptr if none.
const char* FindArchitecture(const json& root) {
  if (!root.is_object()) return nullptr;
  auto it = root.find("architectures");
  if (it == root.end() || !it->is_array()) return nullptr;
  for (const json& a : *it) {
    if (!a.is_string()) continue;
    if (a.get<std::string>() == kXlmRobertaName) return kXlmRobertaName;
    if (a.get<std::string>() == kBertName) return kBertName;
  }
  return nullptr;
}

}  // namespace

const char* CrossEncoderConfig::architecture_name() const {
  return architecture == Architecture::kXlmRoberta ? kXlmRobertaName : kBertName;
}

int CrossEncoderConfig::position_offset() const {
  return architecture == Architecture::kXlmRoberta ? pad_token_id + 1 : 0;
}

int CrossEncoderConfig::max_sequence_length() const {
  return max_position_embeddings - position_offset();
}

bool IsCrossEncoderConfig(const std::string& text) {
  const json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return FindArchitecture(root) != nullptr;
}

absl::StatusOr<CrossEncoderConfig> ParseCrossEncoderConfig(const std::string& text,
                                                           const std::string& source) {
  const json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!root.is_object()) return absl::InvalidArgumentError(source + ": not a JSON object");
  const char* arch = FindArchitecture(root);
  if (arch == nullptr) {
    return Bad(source, "architectures",
               absl::StrCat(root.contains("architectures") ? root["architectures"].dump() : "absent",
                            "; the cross-encoder family serves ", kXlmRobertaName, " and ",
                            kBertName));
  }
  CrossEncoderConfig c;
  c.architecture = arch == kXlmRobertaName ? Architecture::kXlmRoberta : Architecture::kBert;
  // transformers' class defaults: XLMRobertaConfig differs from BertConfig in its special ids.
  if (c.architecture == Architecture::kXlmRoberta) {
    c.pad_token_id = 1;
    c.bos_token_id = 0;
    c.eos_token_id = 2;
  }
  const std::string expected_type = c.architecture == Architecture::kXlmRoberta ? "xlm-roberta" : "bert";
  std::string model_type;
  if (auto s = ReadString(root, "model_type", source, "", &model_type); !s.ok()) return s;
  if (model_type != expected_type) {
    return Bad(source, "model_type",
               absl::StrCat("'", model_type, "' does not go with ", arch, " (expected '",
                            expected_type, "')"));
  }
  struct IntField {
    const char* key;
    int min;
    int* out;
    bool required;
  };
  const IntField ints[] = {
      {"vocab_size", 1, &c.vocab_size, true},
      {"hidden_size", 1, &c.hidden_size, true},
      {"num_hidden_layers", 0, &c.num_hidden_layers, true},
      {"num_attention_heads", 1, &c.num_attention_heads, true},
      {"intermediate_size", 1, &c.intermediate_size, true},
      {"max_position_embeddings", 1, &c.max_position_embeddings, false},
      {"type_vocab_size", 1, &c.type_vocab_size, false},
      {"pad_token_id", 0, &c.pad_token_id, false},
      {"bos_token_id", 0, &c.bos_token_id, false},
      {"eos_token_id", 0, &c.eos_token_id, false},
  };
  for (const IntField& f : ints) {
    if (f.required && !root.contains(f.key)) return Bad(source, f.key, "missing");
    if (auto s = ReadInt(root, f.key, source, "", f.min, f.out); !s.ok()) return s;
  }
  if (auto s = ReadDouble(root, "layer_norm_eps", source, "", 0, 1, &c.layer_norm_eps); !s.ok()) {
    return s;
  }
  if (auto s = ReadString(root, "hidden_act", source, "", &c.hidden_act); !s.ok()) return s;
  if (c.hidden_act != "gelu") {
    return Bad(source, "hidden_act",
               absl::StrCat("'", c.hidden_act,
                            "' is not supported (the native cross-encoder runs \"gelu\", the "
                            "exact erf form)"));
  }
  std::string position_type = "absolute";
  if (auto s = ReadString(root, "position_embedding_type", source, "", &position_type); !s.ok()) {
    return s;
  }
  if (position_type != "absolute") {
    return Bad(source, "position_embedding_type",
               absl::StrCat("'", position_type, "' is not supported (only \"absolute\")"));
  }
  // PretrainedConfig: num_labels wins when given; else len(id2label); else 2.
  if (root.contains("num_labels") && !root["num_labels"].is_null()) {
    if (auto s = ReadInt(root, "num_labels", source, "", 1, &c.num_labels); !s.ok()) return s;
  } else if (root.contains("id2label") && !root["id2label"].is_null()) {
    if (!root["id2label"].is_object()) return Bad(source, "id2label", "expected an object");
    c.num_labels = static_cast<int>(root["id2label"].size());
  } else {
    c.num_labels = 2;  // transformers' default when a config names no labels
  }
  if (c.num_labels != 1) {
    const char* field = root.contains("num_labels") && !root["num_labels"].is_null() ? "num_labels"
                                                                                     : "id2label";
    return Bad(source, field,
               absl::StrCat(c.num_labels, " labels; a reranker scores with exactly one label "
                            "(one logit per pair), so this classifier is not served"));
  }
  if (c.hidden_size % c.num_attention_heads != 0) {
    return Bad(source, "num_attention_heads",
               absl::StrCat(c.num_attention_heads, " does not divide hidden_size ", c.hidden_size));
  }
  if (c.architecture == Architecture::kBert && c.type_vocab_size < 2) {
    return Bad(source, "type_vocab_size",
               absl::StrCat(c.type_vocab_size, "; BERT gives the second segment of a pair token "
                            "type 1, so at least 2 are needed"));
  }
  if (c.pad_token_id >= c.vocab_size) {
    return Bad(source, "pad_token_id",
               absl::StrCat(c.pad_token_id, " is not below vocab_size ", c.vocab_size));
  }
  if (c.max_sequence_length() < 8) {
    return Bad(source, "max_position_embeddings",
               absl::StrCat(c.max_position_embeddings, " leaves ", c.max_sequence_length(),
                            " positions after the offset ", c.position_offset(),
                            "; at least 8 are needed"));
  }
  return c;
}

absl::StatusOr<CrossEncoderConfig> ReadCrossEncoderConfig(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  absl::StatusOr<std::string> text = config_json::ReadConfigFile(path);
  if (!text.ok()) return text.status();
  return ParseCrossEncoderConfig(*text, path);
}

std::string CrossEncoderConfigToJson(const CrossEncoderConfig& c) {
  json j;
  const bool xlmr = c.architecture == Architecture::kXlmRoberta;
  j["architectures"] = {c.architecture_name()};
  j["attention_probs_dropout_prob"] = 0.1;
  j["hidden_act"] = c.hidden_act;
  j["hidden_dropout_prob"] = 0.1;
  j["hidden_size"] = c.hidden_size;
  j["id2label"] = {{"0", "LABEL_0"}};
  j["label2id"] = {{"LABEL_0", 0}};
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = c.intermediate_size;
  j["layer_norm_eps"] = c.layer_norm_eps;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["pad_token_id"] = c.pad_token_id;
  j["position_embedding_type"] = "absolute";
  j["type_vocab_size"] = c.type_vocab_size;
  j["use_cache"] = true;
  j["vocab_size"] = c.vocab_size;
  if (xlmr) {
    // BAAI/bge-reranker-v2-m3's style.
    j["_name_or_path"] = "BAAI/bge-m3";
    j["bos_token_id"] = c.bos_token_id;
    j["classifier_dropout"] = nullptr;
    j["eos_token_id"] = c.eos_token_id;
    j["model_type"] = "xlm-roberta";
    j["output_past"] = true;
    j["torch_dtype"] = "float32";
    j["transformers_version"] = "4.38.1";
  } else {
    // cross-encoder/ms-marco-MiniLM-L-6-v2's style.
    j["_name_or_path"] = "nreimers/MiniLM-L6-H384-uncased";
    j["gradient_checkpointing"] = false;
    j["model_type"] = "bert";
    j["sbert_ce_default_activation_function"] = "torch.nn.modules.linear.Identity";
    j["transformers_version"] = "4.6.1";
  }
  return j.dump(2);
}

namespace {

CrossEncoderConfig XlmRobertaGeometry(int hidden, int layers, int heads, int intermediate,
                                      int max_positions) {
  CrossEncoderConfig c;
  c.architecture = Architecture::kXlmRoberta;
  c.vocab_size = 250002;
  c.hidden_size = hidden;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.intermediate_size = intermediate;
  c.layer_norm_eps = 1e-5;
  c.max_position_embeddings = max_positions;
  c.type_vocab_size = 1;
  c.pad_token_id = 1;
  c.bos_token_id = 0;
  c.eos_token_id = 2;
  return c;
}

}  // namespace

CrossEncoderConfig BgeRerankerBaseConfig() { return XlmRobertaGeometry(768, 12, 12, 3072, 514); }
CrossEncoderConfig BgeRerankerLargeConfig() { return XlmRobertaGeometry(1024, 24, 16, 4096, 514); }
CrossEncoderConfig BgeRerankerV2M3Config() { return XlmRobertaGeometry(1024, 24, 16, 4096, 8194); }

CrossEncoderConfig MsMarcoMiniLmL6Config() {
  CrossEncoderConfig c;
  c.architecture = Architecture::kBert;
  c.vocab_size = 30522;
  c.hidden_size = 384;
  c.num_hidden_layers = 6;
  c.num_attention_heads = 12;
  c.intermediate_size = 1536;
  c.layer_norm_eps = 1e-12;
  c.max_position_embeddings = 512;
  c.type_vocab_size = 2;
  c.pad_token_id = 0;
  return c;
}

}  // namespace embedserve::models::cross_encoder
