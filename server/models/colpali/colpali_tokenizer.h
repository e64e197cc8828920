// ColPali's prompts over a SentencePiece tokenizer: special-token strings split out first,
// then SentencePiece on the rest; the page prompt and the query prompt of ColPaliProcessor.
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

class SentencePieceModel;

class ColPaliTokenizer {
 public:
  // Loads `dir`/tokenizer.model. A directory with only tokenizer.json is FAILED_PRECONDITION
  // saying that tokenizer.model (e.g. from the base PaliGemma repository) is needed.
  static absl::StatusOr<std::unique_ptr<ColPaliTokenizer>> Load(const std::string& dir,
                                                                const ColPaliConfig& config);
  ~ColPaliTokenizer();

  // The text's ids: special-token strings (<bos>, <eos>, <pad>, <unk>, <image>, control
  // pieces) become their ids, the text between them goes through SentencePiece. No bos/eos.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const;

  // <image> x image_seq_length, <bos>, Encode(visual_prompt_prefix + "\n").
  const std::vector<int32_t>& page_ids() const { return page_ids_; }

  struct Query {
    std::vector<int32_t> ids;
    bool truncated = false;
  };
  // <bos>, Encode(query_prefix + text), <pad> x 10, Encode("\n"). Longer than `max_tokens`:
  // the text's tokens are cut (the suffix is kept) if `truncate`, else INVALID_ARGUMENT.
  // A text holding the image token is INVALID_ARGUMENT (a query has no image to put there).
  absl::StatusOr<Query> EncodeQuery(absl::string_view text, int max_tokens, bool truncate) const;
  // Tokens a query adds around its text: <bos> + the suffix.
  int query_overhead() const { return 1 + static_cast<int>(query_suffix_.size()); }

  std::string TokenString(int32_t id) const;
  int vocab_size() const;

 private:
  ColPaliTokenizer() = default;
  std::unique_ptr<SentencePieceModel> sp_;
  std::vector<std::pair<std::string, int32_t>> specials_;  // longest first
  ColPaliConfig config_;
  std::vector<int32_t> page_ids_;
  std::vector<int32_t> query_prefix_ids_;  // <bos> only
  std::vector<int32_t> query_suffix_;      // pads + "\n"
};

}  // namespace embedserve::models::colpali
