// The added_tokens of a tokenizer.json (HfAddedTokens), split out of the text as the tokenizers
// library does; shared by HfTokenizerJson, UnigramTokenizer and WordPieceTokenizer.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"

namespace embedserve::tokenizers {

// The added_tokens of a tokenizer.json, split out of the text as the tokenizers library's
// AddedVocabulary does: tokens with normalized=false are matched on the raw text, those with
// normalized=true on the normalized text; leftmost-longest match; lstrip, rstrip and
// single_word honoured. Immutable after Parse, so every const method is thread-safe.
class HfAddedTokens {
 public:
  // A piece of the text being encoded: a matched added token (token >= 0), or text still to
  // encode (token == -1). `at_start` is true for the text piece that begins at offset 0 of the
  // input (what Metaspace's prepend_scheme "first" asks about).
  struct Piece {
    std::string text;
    int32_t token = -1;
    bool at_start = false;
  };

  // Whether a code point is a word character (regex `\w`), which a single_word token must not
  // touch on either side.
  using WordCharacterTest = bool (*)(uint32_t code_point);
  // Rust regex's `\w` (Unicode), from ICU's properties: alphabetic, marks, decimal digits,
  // connector punctuation, join controls.
  static bool IsUnicodeWordCharacter(uint32_t code_point);

  // Reads a tokenizer.json's `added_tokens` array (null: none). `vocab` is the model's
  // vocabulary (content -> id) and `vocab_size` its number of entries. An entry whose id
  // disagrees with the id the library assigns (the vocabulary's id, else the next after the
  // vocabulary, in file order) is INVALID_ARGUMENT, as is a malformed entry; messages name
  // the field (added_tokens[i].id ...). `normalize` is applied to normalized=true contents to
  // get the text they match.
  static absl::StatusOr<HfAddedTokens> Parse(
      const nlohmann::json& added_tokens, const std::unordered_map<std::string, int32_t>& vocab,
      int64_t vocab_size, const std::function<std::string(absl::string_view)>& normalize,
      WordCharacterTest is_word_character = IsUnicodeWordCharacter);

  // The library's Tokenizer.encode around its model: INVALID_ARGUMENT if `text` is not valid
  // UTF-8 (the library takes only str); else the raw (normalized=false) tokens are split out
  // of it, the text pieces normalized by `normalize`, the normalized (normalized=true) tokens
  // split out of those, and the ids are, in order, each token's id and what encode_text
  // appends for each nonempty text piece (its first error is returned).
  using TextEncoder = std::function<absl::Status(Piece text, std::vector<int32_t>* ids)>;
  absl::StatusOr<std::vector<int32_t>> Encode(
      absl::string_view text, const std::function<std::string(absl::string_view)>& normalize,
      const TextEncoder& encode_text) const;

  int32_t Find(absl::string_view content) const;  // -1 if not an added token
  std::string Content(int32_t id) const;          // "" if not an added token
  bool Contains(int32_t id) const { return tokens_.count(id) != 0; }
  bool IsSpecial(int32_t id) const;  // an added token with special=true
  bool empty() const { return tokens_.empty(); }
  int32_t max_id() const { return tokens_.empty() ? -1 : tokens_.rbegin()->first; }

  // Implementation details follow. API users need not read.
 private:
  struct Token {
    std::string content;
    bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
  };
  // Patterns (the content, or its normalized form) to the token id, tried longest first at
  // the leftmost position where any matches.
  struct Patterns {
    std::vector<std::pair<std::string, int32_t>> by_length;  // longest first
    std::string first_bytes;  // the set of first bytes, a quick filter
  };
  // Splits the text pieces of `pieces` on `patterns`; empty text pieces are dropped.
  void Split(const Patterns& patterns, std::vector<Piece>* pieces) const;

  std::map<int32_t, Token> tokens_;
  std::unordered_map<std::string, int32_t> by_content_;
  Patterns raw_, normalized_;
  WordCharacterTest is_word_character_ = IsUnicodeWordCharacter;
};

}  // namespace embedserve::tokenizers
