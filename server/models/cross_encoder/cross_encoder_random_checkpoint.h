// Random cross-encoder checkpoints in the hub layout, written by our own code for tests and
// benchmarks (a separate library, not linked into the server).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "server/models/cross_encoder/cross_encoder_config.h"

namespace embedserve::models::cross_encoder {

// Writes a randomly initialised checkpoint of `config` into `dir` (created if missing), as
// the hub repositories lay it out:
//  XLM-R (BAAI/bge-reranker-v2-m3): config.json, model.safetensors ("roberta." base model,
//    classifier.dense / classifier.out_proj), tokenizer.json (Unigram with XLM-R's special
//    tokens <s> <pad> </s> <unk> at 0..3 and <mask> last, Metaspace, TemplateProcessing
//    `<s> $A </s>` / `<s> $A </s> </s> $B </s>`), tokenizer_config.json,
//    special_tokens_map.json.
//  BERT (cross-encoder/ms-marco-MiniLM-L-6-v2): config.json, model.safetensors ("bert."
//    base model with its pooler, classifier.weight), vocab.txt, tokenizer.json (WordPiece,
//    BertNormalizer lowercasing, TemplateProcessing), tokenizer_config.json,
//    special_tokens_map.json.
// The vocabulary is small and made up (letters, a few English words, filler pieces up to
// config.vocab_size, which must be at least 200); weights in `weight_dtype` ("F32", "F16",
// "BF16"). Not a trained model.
absl::Status WriteRandomCrossEncoder(const CrossEncoderConfig& config, const std::string& dir,
                                     const std::string& weight_dtype, uint64_t seed);

// Tiny geometries for tests: hidden 32, 2 layers, 4 heads, intermediate 64, vocabulary 250,
// positions 514 (XLM-R: 512 usable) resp. 512, the real rerankers' other fields.
CrossEncoderConfig TinyXlmRobertaConfig();
CrossEncoderConfig TinyBertConfig();

}  // namespace embedserve::models::cross_encoder
