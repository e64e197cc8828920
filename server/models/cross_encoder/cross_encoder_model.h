// The cross-encoder family behind the Model interface: loads a Hugging Face
// XLMRobertaForSequenceClassification / BertForSequenceClassification directory
// (config.json, model.safetensors[.index.json], the tokenizer), tokenizes (query, document)
// pairs with FlagReranker's truncation and scores them (one raw logit per pair).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/models/cross_encoder/cross_encoder_config.h"
#include "server/models/family.h"
#include "server/models/model.h"
#include "server/models/runtime_options.h"

namespace embedserve::models::cross_encoder {

struct CrossEncoderOptions {
  // FlagReranker's max_length: the longest pair, special tokens included. Capped by the
  // model's positions (config max_sequence_length()); reported as context_length.
  int max_length = 512;
  // FlagReranker's query_max_length: the most query tokens (without special tokens) a pair
  // keeps. 0: max_length * 3 / 4 (of the capped max_length).
  int query_max_length = 0;
};

// Loads the model in `dir`. Problems with the files are INVALID_ARGUMENT / NOT_FOUND /
// FAILED_PRECONDITION naming the file, tensor or field. model.safetensors is read, else
// pytorch_model.bin (a torch.save checkpoint, see server/weights/torch_bin.h).
//
// The Model: accepts_pairs only (texts and images are UNIMPLEMENTED in LaunchTexts /
// LaunchImages: use Rerank); PrepareText tokenizes one text with the single template (for
// Tokenize); PreparePair as described at TruncatePairLengths; LaunchPairs pads the batch to
// its longest pair and returns one Embedding {rows 1, dim 1, {logit}} per pair, computed in
// the serving dtype and returned as float32. embedding_dim is 1.
absl::StatusOr<std::unique_ptr<Model>> LoadCrossEncoder(const std::string& dir,
                                                        const RuntimeOptions& options,
                                                        const CrossEncoderOptions& ce_options = {});

// The family entry: config.json whose architectures name XLMRobertaForSequenceClassification
// or BertForSequenceClassification, weights in model.safetensors, loaded by LoadCrossEncoder
// with default options.
const ModelFamily& CrossEncoderFamily();

// FlagReranker's (encoder-only) truncation of a pair, on token counts without special
// tokens: the query is cut to `query_max_length`, the document to `max_length`, then the
// document's tail is cut until query + document + `pair_special_tokens` <= max_length.
// Requires query_max_length + pair_special_tokens < max_length (LoadCrossEncoder checks it),
// so the document alone is ever cut in the last step.
struct PairLengths {
  int query = 0;     // query tokens kept
  int document = 0;  // document tokens kept
  bool truncated = false;
};
PairLengths TruncatePairLengths(int query_tokens, int document_tokens, int max_length,
                                int query_max_length, int pair_special_tokens);

// The checkpoint key of a canonical parameter name of CrossEncoderModule
// ("encoder.layer.0.output.dense.weight", "head.out.weight") in the hub's layout: the base
// model under "roberta." / "bert.", XLM-R's head as classifier.dense / classifier.out_proj,
// BERT's as bert.pooler.dense / classifier.
std::string CheckpointKey(const std::string& canonical, Architecture architecture);

// Every parameter as (checkpoint key, shape), sorted by canonical name; on the meta device.
std::vector<std::pair<std::string, std::vector<int64_t>>> ParameterShapes(
    const CrossEncoderConfig& config);

}  // namespace embedserve::models::cross_encoder
