// Unigram tokenization, torch-free: the Viterbi encoder, from a SentencePiece .model or a
// tokenizer.json with a Unigram model; and XLM-RoBERTa's ids and templates (bge-reranker-*).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/tokenizers/hf_added_tokens.h"
#include "server/tokenizers/sentencepiece_model.h"

namespace embedserve::tokenizers {

// A SentencePiece Unigram encoder. Immutable after loading: every const method is
// thread-safe.
//
// From a SentencePiece .model (ModelProto with trainer_spec.model_type UNIGRAM, e.g. XLM-R's
// sentencepiece.bpe.model), Encode gives the ids of sentencepiece's
// SentencePieceProcessor::EncodeAsIds (no sampling): the model's normalizer (its
// precompiled_charsmap rules, e.g. nmt_nfkc, applied exactly, longest rule first;
// add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces), user-defined symbols kept
// whole, then Viterbi over the pieces' scores (in float, as sentencepiece, ties kept by the
// first path found), consecutive unknowns merged into one, byte fallback when the model has
// it. Malformed UTF-8 is replaced by U+FFFD one byte at a time, as sentencepiece does. The
// text is not searched for control symbols (<s>, </s>, <mask>): sentencepiece does not
// either, but transformers' slow tokenizers split their special tokens out first (with
// version-dependent whitespace stripping), so "<s>" typed in a text differs there.
//
// From a tokenizer.json (model.type "Unigram"), Encode gives the ids of the tokenizers
// library's Tokenizer.encode(text, add_special_tokens=False): added tokens split out, then
// the normalizer, the pre-tokenizer and the Viterbi (in double, unknowns fused, byte
// fallback) on each word. Implemented: normalizers Precompiled (the library's per-grapheme
// use of the charsmap), Replace (String, or Regex run by RE2), Strip, NFC/NFD/NFKC/NFKD
// (ICU), Lowercase, Prepend, Sequence; pre-tokenizers Metaspace (replacement,
// prepend_scheme or add_prefix_space, split), WhitespaceSplit, Sequence. Anything else is
// refused at load: a malformed file INVALID_ARGUMENT, a component not implemented
// FAILED_PRECONDITION, the message naming the JSON field. Approximations: a Regex pattern
// runs on RE2, not Oniguruma (the same on the simple patterns converters write, " {2,}");
// prepend_scheme "first" prepends to a word that begins at offset 0 of the text (never to
// one after an added token), without tracking offsets through normalizers that delete
// leading characters; grapheme clusters and ICU normalization follow ICU's Unicode
// version, which may differ from the library's tables on characters assigned recently.
class UnigramTokenizer {
 public:
  enum class Source { kSentencePiece, kTokenizerJson };

  // NOT_FOUND if `path` cannot be opened; otherwise as the Parse functions, with messages
  // prefixed by the path.
  static absl::StatusOr<std::unique_ptr<UnigramTokenizer>> LoadSentencePiece(
      const std::string& path);
  static absl::StatusOr<std::unique_ptr<UnigramTokenizer>> LoadTokenizerJson(
      const std::string& path);
  // Serialized ModelProto bytes. INVALID_ARGUMENT if malformed or inconsistent (no unknown
  // piece, an empty or duplicate piece, byte pieces without byte_fallback, a broken
  // charsmap), FAILED_PRECONDITION if not a unigram model or treat_whitespace_as_suffix.
  static absl::StatusOr<std::unique_ptr<UnigramTokenizer>> ParseSentencePiece(
      absl::string_view bytes);
  static absl::StatusOr<std::unique_ptr<UnigramTokenizer>> ParseTokenizerJson(
      absl::string_view json);

  // The ids of `text`, no bos/eos added. From a tokenizer.json, INVALID_ARGUMENT if `text` is
  // not valid UTF-8 (the library takes only str), and FAILED_PRECONDITION if a character is
  // unknown and the model has no unk_id (the library fails there too).
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const;

  // The id of a piece (added tokens first for a tokenizer.json), -1 if none.
  int32_t PieceToId(absl::string_view piece) const;
  // The piece of an id, "" if none.
  std::string IdToPiece(int32_t id) const;
  // Number of ids: the pieces, and the added tokens of a tokenizer.json.
  int size() const { return size_; }
  int32_t unk_id() const { return unk_id_; }  // -1 if none (tokenizer.json only)
  Source source() const { return source_; }

  // Implementation details follow. API users need not read.
  ~UnigramTokenizer();
  class Trie;
  class CharsMap;
  struct NormalizerStep;
  struct PreTokenizerStep;

 private:
  friend class UnigramJsonParser;

  UnigramTokenizer();

  // .model path.
  std::string NormalizeSentencePiece(absl::string_view text) const;
  void EncodeSentencePiece(absl::string_view normalized, std::vector<int32_t>* ids) const;
  // tokenizer.json path.
  std::string NormalizeJson(absl::string_view text) const;
  void PreTokenize(HfAddedTokens::Piece piece, std::vector<HfAddedTokens::Piece>* words) const;
  absl::Status EncodeJsonWord(absl::string_view word, std::vector<int32_t>* ids) const;

  Source source_ = Source::kSentencePiece;
  int size_ = 0;
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false;
  std::vector<std::string> pieces_;  // by id
  std::unique_ptr<Trie> trie_;       // piece -> id, every piece the Viterbi may use

  // .model: sentencepiece's data.
  std::vector<float> scores_;
  std::vector<SentencePieceType> types_;
  std::unordered_map<std::string, int32_t> piece_ids_;  // NORMAL, USER_DEFINED, UNUSED
  std::unordered_map<std::string, int32_t> reserved_ids_;  // the other types
  std::unique_ptr<Trie> user_defined_;  // kept whole by the normalizer
  std::unique_ptr<CharsMap> charsmap_;   // null: no normalization rules
  float min_score_ = 0.f, max_score_ = 0.f;  // over NORMAL pieces
  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = true;
  bool escape_whitespaces_ = true;
  int32_t byte_ids_[256];

  // tokenizer.json: the library's data.
  std::vector<double> json_scores_;
  std::unordered_map<std::string, int32_t> json_ids_;  // the last id of a duplicate wins
  double json_min_score_ = 0.0;
  HfAddedTokens added_;
  std::vector<NormalizerStep> normalizers_;
  std::vector<PreTokenizerStep> pre_tokenizers_;
};

// XLM-RoBERTa's ids over a UnigramTokenizer, and its sequence templates.
//
// Over a SentencePiece .model (sentencepiece.bpe.model), fairseq's dictionary as
// transformers' XLMRobertaTokenizer builds it: <s> = 0, <pad> = 1, </s> = 2, <unk> = 3, every
// other sentencepiece id k becomes k + 1 (fairseq_offset; sentencepiece's unknown id 0 becomes
// 3), and <mask> = the number of sentencepiece pieces + 1. Over a tokenizer.json, the file's
// ids already are the model's: the mapping is the identity and the special tokens are looked
// up by name. Copyable, immutable, thread-safe.
class XlmRobertaVocab {
 public:
  // FAILED_PRECONDITION, naming the token, if a tokenizer.json lacks <s>, </s>, <pad> or
  // <unk> (<mask> may be absent: mask_id() is then -1).
  static absl::StatusOr<XlmRobertaVocab> For(const UnigramTokenizer& tokenizer);

  // The model id of an id UnigramTokenizer::Encode gave.
  int32_t ToModelId(int32_t tokenizer_id) const;
  std::vector<int32_t> ToModelIds(absl::Span<const int32_t> tokenizer_ids) const;

  // transformers' build_inputs_with_special_tokens, on model ids: `<s> A </s>` and
  // `<s> A </s></s> B </s>`. XLM-R has no token type ids (all 0).
  std::vector<int32_t> Single(absl::Span<const int32_t> a) const;
  std::vector<int32_t> Pair(absl::Span<const int32_t> a, absl::Span<const int32_t> b) const;

  int32_t bos_id() const { return bos_; }
  int32_t pad_id() const { return pad_; }
  int32_t eos_id() const { return eos_; }
  int32_t unk_id() const { return unk_; }
  int32_t mask_id() const { return mask_; }
  int size() const { return size_; }  // the model's vocabulary size

 private:
  XlmRobertaVocab() = default;
  bool fairseq_offset_ = false;
  int32_t bos_ = 0, pad_ = 1, eos_ = 2, unk_ = 3, mask_ = -1;
  int size_ = 0;
};

}  // namespace embedserve::tokenizers
