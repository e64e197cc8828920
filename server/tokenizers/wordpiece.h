// BERT's WordPiece tokenization, torch-free, from vocab.txt or a tokenizer.json, and BERT's
// [CLS] A [SEP] B [SEP] templates with token type ids (cross-encoder/ms-marco-MiniLM-*).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/tokenizers/hf_added_tokens.h"
#include "server/tokenizers/unicode_text.h"

namespace embedserve::tokenizers {

// What a vocab.txt does not say: BertNormalizer's options, the WordPiece model's and the
// special tokens. The defaults are BertTokenizerFast's (bert-base-uncased and the MiniLM
// cross-encoders); a cased checkpoint sets lowercase = false (tokenizer_config.json's
// do_lower_case).
struct WordPieceOptions {
  bool clean_text = true;             // drop control characters, map whitespace to ' '
  bool handle_chinese_chars = true;   // tokenize_chinese_chars: CJK ideographs split apart
  std::optional<bool> strip_accents;  // unset: follow `lowercase`
  bool lowercase = true;              // do_lower_case
  std::string unk_token = "[UNK]";
  std::string continuing_subword_prefix = "##";
  int max_input_chars_per_word = 100;  // longer words become unk_token
  // Split out of the text before normalization (when in the vocabulary); cls and sep make
  // the templates and must be in the vocabulary.
  std::string cls_token = "[CLS]";
  std::string sep_token = "[SEP]";
  std::string pad_token = "[PAD]";
  std::string mask_token = "[MASK]";
};

// A WordPiece encoder, as the tokenizers library runs BERT's: added (special) tokens split
// out of the raw text, BertNormalizer (clean_text; spaces around CJK ideographs;
// strip_accents: NFD then non-spacing marks dropped; per-character lowercase),
// BertPreTokenizer (split on whitespace, punctuation isolated), then greedy longest-match-
// first WordPiece per word (continuations carry the "##" prefix; a word with no full
// segmentation, or longer than max_input_chars_per_word, becomes the unknown token).
// Character classes come from ICU (Unicode 15); the tokenizers library's tables are older
// Unicode, so characters assigned since may be classed differently.
//
// From a tokenizer.json, implemented: model WordPiece; normalizers BertNormalizer,
// Lowercase, StripAccents, NFC/NFD/NFKC/NFKD, Sequence, null; pre-tokenizers
// BertPreTokenizer, WhitespaceSplit, Sequence, null; post_processor BERT's
// TemplateProcessing / BertProcessing (which give [CLS] and [SEP]) or null. Anything else is
// refused at load: a malformed file INVALID_ARGUMENT, a component not implemented
// FAILED_PRECONDITION, the message naming the JSON field.
//
// Immutable after loading: every const method is thread-safe.
class WordPieceTokenizer {
 public:
  // NOT_FOUND if `path` cannot be opened; otherwise as the Parse functions, with messages
  // prefixed by the path.
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> LoadVocabTxt(
      const std::string& path, const WordPieceOptions& options = {});
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> LoadTokenizerJson(
      const std::string& path);
  // vocab.txt: one token per line, its id the line's index (trailing whitespace trimmed; a
  // token listed twice keeps its last line). INVALID_ARGUMENT if the unknown, [CLS] or [SEP]
  // token is not in it, or max_input_chars_per_word < 1.
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> ParseVocabTxt(
      absl::string_view contents, const WordPieceOptions& options = {});
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> ParseTokenizerJson(
      absl::string_view json);

  // The ids of `text`, no [CLS]/[SEP] added. INVALID_ARGUMENT if `text` is not valid UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const;

  // BERT's templates on ids from Encode: `[CLS] A [SEP]` with type ids 0, and
  // `[CLS] A [SEP] B [SEP]` with type ids 0 up to the first [SEP] included, 1 after.
  struct Encoding {
    std::vector<int32_t> ids;
    std::vector<int32_t> type_ids;
  };
  Encoding Single(absl::Span<const int32_t> a) const;
  Encoding Pair(absl::Span<const int32_t> a, absl::Span<const int32_t> b) const;

  int32_t TokenToId(absl::string_view token) const;  // added tokens, then vocabulary; -1
  std::string IdToToken(int32_t id) const;           // "" if none
  int size() const { return size_; }                 // largest id + 1
  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t pad_id() const { return TokenToId(pad_token_); }    // -1 if none
  int32_t mask_id() const { return TokenToId(mask_token_); }  // -1 if none

  // Implementation details follow. API users need not read.
  struct NormalizerStep {
    enum class Kind { kBert, kLowercase, kStripAccents, kNormalizationForm };
    Kind kind = Kind::kBert;
    NormalizationForm form = NormalizationForm::kNfc;  // kNormalizationForm
    bool clean_text = true, handle_chinese_chars = true, strip_accents = true, lowercase = true;
  };
  enum class PreTokenizerStep { kBert, kWhitespaceSplit };

 private:
  friend class WordPieceJsonParser;
  WordPieceTokenizer() = default;

  std::string Normalize(absl::string_view text) const;
  void PreTokenize(std::string text, std::vector<std::string>* words) const;
  void EncodeWord(absl::string_view word, std::vector<int32_t>* ids) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<int32_t, std::string> vocab_r_;
  HfAddedTokens added_;
  std::vector<NormalizerStep> normalizers_;
  std::vector<PreTokenizerStep> pre_tokenizers_;
  std::string continuing_subword_prefix_ = "##";
  size_t max_input_chars_per_word_ = 100;
  std::string pad_token_ = "[PAD]", mask_token_ = "[MASK]";
  int32_t unk_id_ = -1, cls_id_ = -1, sep_id_ = -1;
  int size_ = 0;
};

}  // namespace embedserve::tokenizers
