// The cross-encoder family's config.json (XLMRobertaForSequenceClassification,
// BertForSequenceClassification): parsing with the field named in every error, the
// geometry presets of the real rerankers, and writing a config back (random checkpoints).
// Torch-free.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace embedserve::models::cross_encoder {

// Which encoder and head the checkpoint holds.
//  kXlmRoberta: XLMRobertaForSequenceClassification (BAAI bge-reranker-base/-large/-v2-m3):
//    positions counted from pad_token_id + 1, all token types 0, head
//    classifier.dense -> tanh -> classifier.out_proj on token 0, no pooler.
//  kBert: BertForSequenceClassification (cross-encoder/ms-marco-MiniLM-*): positions 0..L-1,
//    token type 1 for the second segment, head bert.pooler.dense -> tanh -> classifier.
enum class Architecture { kXlmRoberta, kBert };

// The fields the native model reads. Defaults are transformers' class defaults where the
// file may omit a field (BertConfig; XLMRobertaConfig shares them), except that
// architectures, model_type and the geometry are required.
struct CrossEncoderConfig {
  Architecture architecture = Architecture::kXlmRoberta;
  int vocab_size = 30522;
  int hidden_size = 768;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int intermediate_size = 3072;
  std::string hidden_act = "gelu";  // only "gelu" (exact erf) is served
  double layer_norm_eps = 1e-12;
  int max_position_embeddings = 512;
  int type_vocab_size = 2;
  int pad_token_id = 0;
  int bos_token_id = 0;  // written back only
  int eos_token_id = 2;  // written back only
  int num_labels = 1;    // only 1 (a reranker's single logit) is served

  // "XLMRobertaForSequenceClassification" or "BertForSequenceClassification".
  const char* architecture_name() const;
  // First position id of a sequence: pad_token_id + 1 (XLM-R), 0 (BERT).
  int position_offset() const;
  // Longest sequence the position table holds: max_position_embeddings - position_offset().
  int max_sequence_length() const;
};

// Reads `dir`/config.json. NOT_FOUND if absent; INVALID_ARGUMENT "<path>: <field>: <why>"
// for a malformed or unsupported field (an architecture other than the two above, a
// model_type that does not match it, num_labels / id2label other than one label, a
// hidden_act other than "gelu", a position_embedding_type other than "absolute", geometry
// that does not fit together).
absl::StatusOr<CrossEncoderConfig> ReadCrossEncoderConfig(const std::string& dir);
// The same from the file's text; `source` names it in errors.
absl::StatusOr<CrossEncoderConfig> ParseCrossEncoderConfig(const std::string& text,
                                                           const std::string& source);

// True if the text of a config.json names one of the two architectures (the family's
// detect; never a ColPali/PaliGemma config).
bool IsCrossEncoderConfig(const std::string& text);

// config.json as the hub repositories write it (field names and style of
// BAAI/bge-reranker-v2-m3 resp. cross-encoder/ms-marco-MiniLM-L-6-v2).
std::string CrossEncoderConfigToJson(const CrossEncoderConfig& config);

// Full-size geometries (vocabulary 250002 for XLM-R, 30522 for BERT).
CrossEncoderConfig BgeRerankerBaseConfig();    // XLM-R base: 768 x 12, 3072, positions 514
CrossEncoderConfig BgeRerankerLargeConfig();   // XLM-R large: 1024 x 24, 4096, positions 514
CrossEncoderConfig BgeRerankerV2M3Config();    // XLM-R large: 1024 x 24, 4096, positions 8194
CrossEncoderConfig MsMarcoMiniLmL6Config();    // BERT: 384 x 6, 1536, 12 heads, positions 512

}  // namespace embedserve::models::cross_encoder
