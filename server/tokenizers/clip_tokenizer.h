// ClipTokenizer: OpenCLIP's byte-level BPE text tokenizer (v2.24 SimpleTokenizer), exact to
// the token id, with the bundled merges or HF-style vocab.json/merges.txt. Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace re2 {
class RE2;
}

namespace embedserve::tokenizers {

class ClipTokenizer {
 public:
  static constexpr int kDefaultContextLength = 77;

  // The merges bundled into the binary (assets/bpe_simple_vocab_16e6.txt.gz).
  static absl::StatusOr<std::unique_ptr<ClipTokenizer>> FromBundledVocab();
  // Merges from a gzip (or plain) file like bpe_simple_vocab_16e6.txt.gz: header line, then
  // the merges of which OpenCLIP uses the first 49152 - 256 - 2.
  static absl::StatusOr<std::unique_ptr<ClipTokenizer>> FromBpeFile(const std::string& path);
  // Hugging Face style files from a model directory: vocab.json (token -> id) and
  // merges.txt (optional "#version" line, then one "a b" merge per line, by rank).
  static absl::StatusOr<std::unique_ptr<ClipTokenizer>> FromVocabAndMerges(
      const std::string& vocab_json, const std::string& merges_txt);

  ~ClipTokenizer();
  ClipTokenizer(const ClipTokenizer&) = delete;
  ClipTokenizer& operator=(const ClipTokenizer&) = delete;

  struct Encoded {
    std::vector<int32_t> ids;
    bool truncated = false;
  };
  // Token ids with the start and end tokens, no padding. Longer than context_length:
  // truncate=true cuts to context_length with the end token last (truncated=true);
  // truncate=false is INVALID_ARGUMENT. Invalid UTF-8 is INVALID_ARGUMENT naming the byte
  // offset. Thread-safe.
  absl::StatusOr<Encoded> Encode(absl::string_view text,
                                 int context_length = kDefaultContextLength,
                                 bool truncate = true) const;

  // The vocabulary entry in its byte-level form ("a</w>", "<start_of_text>"); "" if the id
  // is out of range.
  std::string TokenString(int32_t id) const;
  int32_t start_id() const { return start_id_; }
  int32_t end_id() const { return end_id_; }
  int vocab_size() const { return static_cast<int>(vocab_.size()); }

  // For tests: CLIP's pre-tokenizer pieces of already cleaned text, by the RE2 pattern
  // (use_regex) or by Encode's own path (a hand-written split for ASCII text).
  std::vector<std::string> SplitForTest(absl::string_view cleaned, bool use_regex) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  struct CacheShard {
    std::mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> words;
  };
  static constexpr int kCacheShards = 16;

  ClipTokenizer();
  // vocab_: id -> token; merges as (left, right) token strings by rank.
  static absl::StatusOr<std::unique_ptr<ClipTokenizer>> Build(
      std::vector<std::string> vocab, const std::vector<std::pair<std::string, std::string>>& merges);
  static absl::StatusOr<std::unique_ptr<ClipTokenizer>> FromMergesText(absl::string_view text);

  // Calls fn on each piece of CLIP's split of cleaned text until it returns false.
  void ForEachPiece(absl::string_view text,
                    const std::function<bool(absl::string_view)>& fn) const;
  // Appends the BPE ids of one pre-tokenized piece (raw UTF-8 bytes).
  void AppendWord(absl::string_view piece, std::vector<int32_t>* ids) const;
  void Bpe(absl::string_view piece, std::vector<int32_t>* out) const;

  std::vector<std::string> vocab_;
  int32_t byte_ids_[256] = {};      // byte -> id of its byte-level character
  int32_t byte_end_ids_[256] = {};  // byte -> id of that character + "</w>"
  absl::flat_hash_map<uint64_t, Merge> merges_;
  int32_t start_id_ = 0;
  int32_t end_id_ = 0;
  std::unique_ptr<re2::RE2> pattern_;
  std::unique_ptr<CacheShard[]> cache_;
};

// GPT-2/CLIP's bytes_to_unicode(): the printable character standing for each byte, in
// the order OpenCLIP's vocabulary lists them (index = token id of the bare byte).
const std::vector<std::pair<uint8_t, char32_t>>& ByteLevelAlphabet();

}  // namespace embedserve::tokenizers
