// Random cross-encoder checkpoints in the hub layout (weights, config, a small made-up
// tokenizer), for tests and benchmarks (not linked into the server).
#include "server/models/cross_encoder/cross_encoder_random_checkpoint.h"

#include <cmath>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/models/cross_encoder/cross_encoder_model.h"
#include "server/models/random_checkpoint.h"

namespace embedserve::models::cross_encoder {
namespace {

using nlohmann::json;

constexpr const char* kSpace = "\xe2\x96\x81";  // ▁, SentencePiece's whitespace
constexpr int kMinVocab = 200;

const std::vector<std::string>& Words() {
  static const std::vector<std::string> words = {
      "the", "what", "is", "a", "panda", "bear", "china", "query", "passage", "hi", "giant",
      "species", "of", "and", "to", "in", "capital", "france", "paris", "city", "population",
      "sometimes", "called", "simply", "endemic", "how", "many", "people", "live", "there"};
  return words;
}

std::vector<std::string> Characters() {
  std::vector<std::string> chars;
  for (char c = 'a'; c <= 'z'; ++c) chars.emplace_back(1, c);
  for (char c = '0'; c <= '9'; ++c) chars.emplace_back(1, c);
  for (const char* p : {".", ",", "?", "!", "(", ")", "'", "-"}) chars.emplace_back(p);
  return chars;
}

json AddedToken(int id, const std::string& content, bool lstrip = false) {
  return {{"id", id},          {"content", content},  {"single_word", false}, {"lstrip", lstrip},
          {"rstrip", false},   {"normalized", false}, {"special", true}};
}

json Special(const std::string& token, int type_id) {
  return {{"SpecialToken", {{"id", token}, {"type_id", type_id}}}};
}
json Sequence(const char* id, int type_id) {
  return {{"Sequence", {{"id", id}, {"type_id", type_id}}}};
}

// XLM-R's files: tokenizer.json (Unigram), tokenizer_config.json, special_tokens_map.json.
std::vector<std::pair<std::string, std::string>> XlmRobertaTokenizerFiles(const CrossEncoderConfig& c) {
  json vocab = json::array();
  for (const char* s : {"<s>", "<pad>", "</s>", "<unk>"}) vocab.push_back({s, 0.0});
  vocab.push_back({kSpace, -3.0});
  double score = -2.0;
  for (const std::string& w : Words()) vocab.push_back({kSpace + w, score -= 0.01});
  for (const std::string& ch : Characters()) {
    vocab.push_back({ch, -6.0});
    vocab.push_back({kSpace + ch, -7.0});
  }
  for (int n = 0; static_cast<int>(vocab.size()) < c.vocab_size - 1; ++n) {
    vocab.push_back({absl::StrCat("<extra_", n, ">"), -12.0});
  }
  const int mask = static_cast<int>(vocab.size());
  vocab.push_back({"<mask>", 0.0});
  json added = json::array({AddedToken(0, "<s>"), AddedToken(1, "<pad>"), AddedToken(2, "</s>"),
                            AddedToken(3, "<unk>"), AddedToken(mask, "<mask>", /*lstrip=*/true)});
  auto special_entry = [](const char* token, int id) {
    return json{{"id", token}, {"ids", {id}}, {"tokens", {token}}};
  };
  json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", kSpace}}}}}},
      {"pre_tokenizer",
       {{"type", "Metaspace"}, {"replacement", kSpace}, {"prepend_scheme", "always"},
        {"split", true}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {Special("<s>", 0), Sequence("A", 0), Special("</s>", 0)}},
        {"pair",
         {Special("<s>", 0), Sequence("A", 0), Special("</s>", 0), Special("</s>", 0),
          Sequence("B", 0), Special("</s>", 0)}},
        {"special_tokens", {{"<s>", special_entry("<s>", 0)}, {"</s>", special_entry("</s>", 2)}}}}},
      {"decoder",
       {{"type", "Metaspace"}, {"replacement", kSpace}, {"prepend_scheme", "always"},
        {"split", true}}},
      {"model", {{"type", "Unigram"}, {"unk_id", 3}, {"vocab", vocab}, {"byte_fallback", false}}}};
  json config = {{"bos_token", "<s>"},      {"cls_token", "<s>"},
                 {"eos_token", "</s>"},     {"mask_token", "<mask>"},
                 {"pad_token", "<pad>"},    {"sep_token", "</s>"},
                 {"unk_token", "<unk>"},    {"model_max_length", 8192},
                 {"clean_up_tokenization_spaces", true},
                 {"tokenizer_class", "XLMRobertaTokenizer"}};
  json specials = {{"bos_token", "<s>"},  {"cls_token", "<s>"},   {"eos_token", "</s>"},
                   {"mask_token", "<mask>"}, {"pad_token", "<pad>"}, {"sep_token", "</s>"},
                   {"unk_token", "<unk>"}};
  return {{"tokenizer.json", tokenizer.dump()},
          {"tokenizer_config.json", config.dump(2)},
          {"special_tokens_map.json", specials.dump(2)}};
}

// BERT's files: vocab.txt, tokenizer.json (WordPiece), tokenizer_config.json,
// special_tokens_map.json.
std::vector<std::pair<std::string, std::string>> BertTokenizerFiles(const CrossEncoderConfig& c) {
  std::vector<std::string> tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  for (const std::string& ch : Characters()) tokens.push_back(ch);
  for (char ch = 'a'; ch <= 'z'; ++ch) tokens.push_back(absl::StrCat("##", std::string(1, ch)));
  for (const std::string& w : Words()) tokens.push_back(w);
  for (int n = 0; static_cast<int>(tokens.size()) < c.vocab_size; ++n) {
    tokens.push_back(absl::StrCat("[unused", n, "]"));
  }
  std::string vocab_txt;
  json vocab = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) {
    absl::StrAppend(&vocab_txt, tokens[i], "\n");
    vocab[tokens[i]] = static_cast<int>(i);
  }
  vocab_txt.pop_back();  // WriteRandomCheckpointFiles adds the final newline
  json added = json::array();
  for (int id = 0; id < 5; ++id) added.push_back(AddedToken(id, tokens[id]));
  json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer",
       {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", true},
        {"strip_accents", nullptr}, {"lowercase", true}}},
      {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {Special("[CLS]", 0), Sequence("A", 0), Special("[SEP]", 0)}},
        {"pair",
         {Special("[CLS]", 0), Sequence("A", 0), Special("[SEP]", 0), Sequence("B", 1),
          Special("[SEP]", 1)}},
        {"special_tokens",
         {{"[CLS]", {{"id", "[CLS]"}, {"ids", {2}}, {"tokens", {"[CLS]"}}}},
          {"[SEP]", {{"id", "[SEP]"}, {"ids", {3}}, {"tokens", {"[SEP]"}}}}}}}},
      {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
      {"model",
       {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"continuing_subword_prefix", "##"},
        {"max_input_chars_per_word", 100}, {"vocab", vocab}}}};
  json config = {{"do_lower_case", true},       {"do_basic_tokenize", true},
                 {"never_split", nullptr},      {"unk_token", "[UNK]"},
                 {"sep_token", "[SEP]"},        {"pad_token", "[PAD]"},
                 {"cls_token", "[CLS]"},        {"mask_token", "[MASK]"},
                 {"tokenize_chinese_chars", true}, {"strip_accents", nullptr},
                 {"model_max_length", 512},     {"tokenizer_class", "BertTokenizer"}};
  json specials = {{"unk_token", "[UNK]"}, {"sep_token", "[SEP]"}, {"pad_token", "[PAD]"},
                   {"cls_token", "[CLS]"}, {"mask_token", "[MASK]"}};
  return {{"vocab.txt", vocab_txt},
          {"tokenizer.json", tokenizer.dump()},
          {"tokenizer_config.json", config.dump(2)},
          {"special_tokens_map.json", specials.dump(2)}};
}

CrossEncoderConfig Tiny(Architecture architecture) {
  CrossEncoderConfig c;
  c.architecture = architecture;
  c.vocab_size = 250;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 64;
  return c;
}

}  // namespace

CrossEncoderConfig TinyXlmRobertaConfig() {
  CrossEncoderConfig c = Tiny(Architecture::kXlmRoberta);
  c.layer_norm_eps = 1e-5;
  c.max_position_embeddings = 514;
  c.type_vocab_size = 1;
  c.pad_token_id = 1;
  c.bos_token_id = 0;
  c.eos_token_id = 2;
  return c;
}

CrossEncoderConfig TinyBertConfig() {
  CrossEncoderConfig c = Tiny(Architecture::kBert);
  c.layer_norm_eps = 1e-12;
  c.max_position_embeddings = 512;
  c.type_vocab_size = 2;
  c.pad_token_id = 0;
  return c;
}

absl::Status WriteRandomCrossEncoder(const CrossEncoderConfig& config, const std::string& dir,
                                     const std::string& weight_dtype, uint64_t seed) {
  if (config.vocab_size < kMinVocab) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a random cross-encoder needs vocab_size >= ", kMinVocab, " (its made-up tokenizer)"));
  }
  // One parameter at a time (shapes from the meta device): the full-size presets fit.
  auto generate = [&config](const EmitTensor& emit) {
    for (const auto& [key, shape] : ParameterShapes(config)) {
      at::Tensor p = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
      if (absl::StrContains(key, "LayerNorm")) {
        if (absl::EndsWith(key, ".weight")) {
          p.normal_(1.0, 0.05);
        } else {
          p.normal_(0.0, 0.05);
        }
      } else if (absl::EndsWith(key, "bias")) {
        p.normal_(0.0, 0.02);
      } else if (absl::StrContains(key, "embeddings.")) {
        p.normal_(0.0, 0.5);
      } else {
        p.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(p.size(-1))));
      }
      emit(key, p);
    }
  };
  std::vector<std::pair<std::string, std::string>> files = {
      {"config.json", CrossEncoderConfigToJson(config)}};
  for (auto& f : config.architecture == Architecture::kXlmRoberta ? XlmRobertaTokenizerFiles(config)
                                                                  : BertTokenizerFiles(config)) {
    files.push_back(std::move(f));
  }
  return WriteRandomCheckpointFiles(dir, weight_dtype, seed, generate, "model.safetensors", files);
}

}  // namespace embedserve::models::cross_encoder
