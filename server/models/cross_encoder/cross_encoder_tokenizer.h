// A cross-encoder's tokenizer over the generic ones (server/tokenizers): XLM-RoBERTa's
// Unigram (tokenizer.json or sentencepiece.bpe.model) with its ids and templates, or BERT's
// WordPiece (tokenizer.json or vocab.txt + tokenizer_config.json), as model ids.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/models/cross_encoder/cross_encoder_config.h"

namespace embedserve::models::cross_encoder {

// Immutable after Load: every const method is thread-safe.
class CrossEncoderTokenizer {
 public:
  // XLM-R: `dir`/tokenizer.json (Unigram; what FlagReranker's fast tokenizer reads) when
  // present, else `dir`/sentencepiece.bpe.model. BERT: `dir`/tokenizer.json (WordPiece) when
  // present, else `dir`/vocab.txt with tokenizer_config.json's do_lower_case, strip_accents,
  // tokenize_chinese_chars and special tokens. A tokenizer.json that cannot be used is an
  // error naming its field (no silent fall-back); none of the files is NOT_FOUND naming them.
  // The vocabulary must fit config.vocab_size.
  static absl::StatusOr<std::unique_ptr<CrossEncoderTokenizer>> Load(
      const std::string& dir, const CrossEncoderConfig& config);
  ~CrossEncoderTokenizer();

  // The model ids of `text`, no special tokens (tokenizer(text, add_special_tokens=False)).
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const;

  // `<s> A </s>` / `[CLS] A [SEP]`.
  std::vector<int32_t> Single(absl::Span<const int32_t> a) const;
  // `<s> A </s></s> B </s>` / `[CLS] A [SEP] B [SEP]`.
  std::vector<int32_t> Pair(absl::Span<const int32_t> a, absl::Span<const int32_t> b) const;
  // Index in Pair(a, b) of the second segment's first token, for |a| = `first_length`: the
  // second `</s>` (RobertaProcessing's `</s> B </s>`) resp. B's first token (BERT: type 1 from
  // there).
  static int32_t SecondSegmentStart(size_t first_length) {
    return static_cast<int32_t>(first_length) + 2;
  }
  static constexpr int kSingleSpecialTokens = 2;
  // Special tokens a pair adds: 4 (XLM-R), 3 (BERT).
  int pair_special_tokens() const;

  // The token of a model id as the vocabulary spells it ("" if none).
  std::string TokenString(int32_t id) const;
  // Number of model ids.
  int size() const;
  // The file the ids come from: "tokenizer.json", "sentencepiece.bpe.model", "vocab.txt".
  const std::string& source() const { return source_; }

  // Implementation details follow. API users need not read.
  struct Impl;

 private:
  CrossEncoderTokenizer() = default;
  std::unique_ptr<Impl> impl_;
  std::string source_;
};

}  // namespace embedserve::models::cross_encoder
