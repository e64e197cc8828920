// A reader and encoder for Hugging Face tokenizers' `tokenizer.json` with a BPE model, as
// Gemma / PaliGemma / ColPali checkpoints ship it. Torch-free. Encode gives the ids of the
// `tokenizers` library's Tokenizer.encode(text, add_special_tokens=False).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/tokenizers/hf_added_tokens.h"

namespace embedserve::tokenizers {

// One tokenizer.json, parsed and checked at Load; immutable afterwards, so every const method
// is thread-safe.
//
// What is implemented (the pieces Gemma-family files use), in the library's order:
//  1. added_tokens: those with normalized=false are split out of the raw text, then those
//     with normalized=true out of the normalized text (leftmost-longest match; single_word,
//     lstrip and rstrip honoured);
//  2. normalizer: null, Replace (String pattern), Prepend, Sequence of these;
//  3. pre_tokenizer: null, Split (String pattern, any behavior, invert), Sequence of these;
//  4. model: BPE with merges ranked by their index ("a b" strings or [a, b] pairs), byte
//     fallback (<0xXX> pieces), fuse_unk, ignore_merges.
// post_processor, decoder, truncation and padding are not read: ids come without the
// template's bos/eos, and transformers sets truncation/padding per call.
//
// Anything else is refused at Load: a malformed file is INVALID_ARGUMENT, a component this
// reader does not implement (another model, normalizer or pre-tokenizer type, a Regex
// pattern, BPE dropout, subword prefixes) FAILED_PRECONDITION; both name the JSON field.
class HfTokenizerJson {
 public:
  // NOT_FOUND if `path` cannot be opened; otherwise as Parse, with messages prefixed by path.
  static absl::StatusOr<std::unique_ptr<HfTokenizerJson>> Load(const std::string& path);
  static absl::StatusOr<std::unique_ptr<HfTokenizerJson>> Parse(absl::string_view json);

  // The ids of `text`: added tokens, then normalizer, pre-tokenizer and BPE on the rest. No
  // bos/eos is added. INVALID_ARGUMENT if `text` is not valid UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const;

  // The id of a token (added tokens first, then the model's vocabulary), -1 if none.
  int32_t TokenToId(absl::string_view token) const;
  // The token of an id (added token content first, then the vocabulary), "" if none.
  std::string IdToToken(int32_t id) const;
  // Largest id in the vocabulary or the added tokens, plus one.
  int size() const { return size_; }
  bool IsAddedToken(int32_t id) const { return added_.Contains(id); }
  bool IsSpecialToken(int32_t id) const { return added_.IsSpecial(id); }

  // Implementation details follow. API users need not read.
 private:
  HfTokenizerJson() = default;

  // Literal-pattern steps; a normalizer Sequence and a pre-tokenizer Sequence are flattened.
  struct NormalizerStep {
    enum class Kind { kReplace, kPrepend } kind;
    std::string pattern;  // Replace only
    std::string content;  // the replacement, or the prepended text
  };
  enum class SplitBehavior {
    kRemoved,
    kIsolated,
    kMergedWithPrevious,
    kMergedWithNext,
    kContiguous
  };
  struct SplitStep {
    std::string pattern;
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
  };

  friend class HfTokenizerJsonParser;  // fills the fields below from the JSON (in the .cc)

  std::string Normalize(absl::string_view text) const;
  std::vector<std::string> PreTokenize(std::string text) const;
  void EncodeWord(absl::string_view word, std::vector<int32_t>* ids) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<int32_t, std::string> vocab_r_;
  // (left id << 32 | right id) -> (rank, merged id).
  std::unordered_map<uint64_t, std::pair<uint32_t, int32_t>> merges_;
  std::array<int32_t, 256> byte_ids_{};  // <0xXX> pieces, -1 where absent
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;

  // Matched with single_word's word characters exact for ASCII and Latin-1 and approximated
  // beyond (IsApproximateWordChar in the .cc).
  HfAddedTokens added_;

  std::vector<NormalizerStep> normalizer_;
  std::vector<SplitStep> pre_tokenizer_;
  int size_ = 0;
};

}  // namespace embedserve::tokenizers
