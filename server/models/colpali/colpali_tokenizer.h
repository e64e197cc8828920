// ColPali's prompts (the page prompt and the query prompt of the config's prompt profile) over the
// checkpoint's tokenizer: Hugging Face's tokenizer.json, or SentencePiece's tokenizer.model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/models/colpali/colpali_config.h"

namespace embedserve::models::colpali {

// Thread-safe (immutable after Load).
class ColPaliTokenizer {
 public:
  // Loads `dir`/tokenizer.json when present (what transformers' ColPaliProcessor uses: the
  // fast tokenizer), else `dir`/tokenizer.model. A tokenizer.json that cannot be used is an
  // error (INVALID_ARGUMENT / FAILED_PRECONDITION naming the field), not a silent fallback to
  // tokenizer.model; neither file present is NOT_FOUND. The config's pad/bos/eos/image ids
  // must be tokens of the vocabulary, which must fit text_config.vocab_size.
  static absl::StatusOr<std::unique_ptr<ColPaliTokenizer>> Load(const std::string& dir,
                                                                const ColPaliConfig& config);
  ~ColPaliTokenizer();

  // The text's ids, without bos/eos. tokenizer.json: tokenizers' encode(text,
  // add_special_tokens=False). tokenizer.model: special-token strings (<bos>, <eos>, <pad>,
  // <unk>, <image>, control pieces) become their ids, the text between them goes through
  // SentencePiece.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const;

  // <image> x image_seq_length, <bos> x page_bos_count, Encode(visual_prompt_prefix + "\n").
  const std::vector<int32_t>& page_ids() const { return page_ids_; }

  struct Query {
    std::vector<int32_t> ids;
    bool truncated = false;
  };
  // <bos>, Encode(query_prefix + text), <pad> x 10, Encode("\n") (if the profile has the
  // newline). Longer than `max_tokens`:
  // the text's tokens are cut (the suffix is kept) if `truncate`, else INVALID_ARGUMENT.
  // A text holding the image token is INVALID_ARGUMENT (a query has no image to put there).
  absl::StatusOr<Query> EncodeQuery(absl::string_view text, int max_tokens, bool truncate) const;
  // Tokens a query adds around its text: <bos> + the suffix.
  int query_overhead() const { return 1 + static_cast<int>(query_suffix_.size()); }

  std::string TokenString(int32_t id) const;
  int vocab_size() const;
  // "tokenizer.json" or "tokenizer.model": the file the ids come from.
  const std::string& source() const { return source_; }

  // Implementation details follow. API users need not read.
  // The text encoder behind Encode: one per file format (in the .cc).
  class Backend;

 private:
  ColPaliTokenizer() = default;
  std::unique_ptr<Backend> backend_;
  std::string source_;
  ColPaliConfig config_;
  std::vector<int32_t> page_ids_;
  std::vector<int32_t> query_prefix_ids_;  // <bos> only
  std::vector<int32_t> query_suffix_;      // pads + "\n"
};

}  // namespace embedserve::models::colpali
