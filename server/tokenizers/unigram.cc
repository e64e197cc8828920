// UnigramTokenizer: loading (ModelProto and tokenizer.json), the precompiled charsmap, the
// two normalization pipelines, the Viterbi encoders; XlmRobertaVocab.
#include "server/tokenizers/unigram.h"

#include <algorithm>
#include <cfloat>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"
#include "server/tokenizers/tokenizer_loading.h"
#include "server/tokenizers/unicode_text.h"
#include "server/tokenizers/utf8.h"
#include "unicode/brkiter.h"
#include "unicode/locid.h"
#include "unicode/utext.h"

namespace embedserve::tokenizers {
namespace {

using Json = nlohmann::json;

const char kSpaceSymbol[] = "\xe2\x96\x81";  // U+2581, sentencepiece's whitespace
const char kReplacementChar[] = "\xef\xbf\xbd";  // U+FFFD
constexpr float kUnkPenalty = 10.0f;          // both libraries: unk score = min score - 10

// Standard base64 (with '=' padding), as the tokenizers library's precompiled_charsmap.
bool DecodeBase64(absl::string_view in, std::string* out) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (in.size() % 4 != 0) return false;
  out->clear();
  out->reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      if (in[i + k] == '=' && i + 4 == in.size() && k >= 2) {
        v[k] = 0;
        ++pad;
      } else {
        if (pad > 0) return false;  // data after padding
        v[k] = value(in[i + k]);
        if (v[k] < 0) return false;
      }
    }
    const uint32_t triple = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out->push_back(static_cast<char>(triple >> 16));
    if (pad < 2) out->push_back(static_cast<char>((triple >> 8) & 0xFF));
    if (pad < 1) out->push_back(static_cast<char>(triple & 0xFF));
  }
  return true;
}

// Splits text into extended grapheme clusters (UAX #29, ICU's character break iterator, the
// rules of the unicode-segmentation crate the tokenizers library uses) and calls f(begin,
// end) for each, in order. ASCII text takes a fast path: every byte is a cluster but CR LF.
template <typename F>
void ForEachGrapheme(absl::string_view s, F&& f) {
  const bool ascii = std::all_of(s.begin(), s.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x80;
  });
  if (ascii) {
    for (size_t i = 0; i < s.size();) {
      const size_t n = (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ? 2 : 1;
      f(i, i + n);
      i += n;
    }
    return;
  }
  // A BreakIterator is not thread-safe; each thread keeps its own.
  thread_local std::unique_ptr<icu::BreakIterator> iterator = [] {
    UErrorCode status = U_ZERO_ERROR;
    std::unique_ptr<icu::BreakIterator> it(
        icu::BreakIterator::createCharacterInstance(icu::Locale::getRoot(), status));
    if (U_FAILURE(status)) it.reset();
    return it;
  }();
  UErrorCode status = U_ZERO_ERROR;
  UText* text = utext_openUTF8(nullptr, s.data(), static_cast<int64_t>(s.size()), &status);
  if (iterator != nullptr && U_SUCCESS(status)) iterator->setText(text, status);
  if (iterator == nullptr || U_FAILURE(status)) {
    // No break iterator (ICU data missing): one code point per cluster.
    utext_close(text);
    for (size_t i = 0; i < s.size();) {
      size_t len;
      DecodeUtf8At(s, i, &len);
      f(i, i + len);
      i += len;
    }
    return;
  }
  int32_t begin = iterator->first();
  for (int32_t end = iterator->next(); end != icu::BreakIterator::DONE;
       begin = end, end = iterator->next()) {
    f(static_cast<size_t>(begin), static_cast<size_t>(end));
  }
  utext_close(text);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// A byte trie: piece -> id, walked from a start position for every piece that is a prefix.

class UnigramTokenizer::Trie {
 public:
  // Inserts or overwrites (the last insert of a key wins).
  void Insert(absl::string_view key, int32_t value) {
    uint32_t node = 0;
    for (unsigned char c : key) {
      auto [it, inserted] = edges_.try_emplace(Edge(node, c), 0);
      if (inserted) {
        it->second = static_cast<uint32_t>(values_.size());
        values_.push_back(-1);
      }
      node = it->second;
    }
    values_[node] = value;
  }
  // f(length, value) for each key that is a prefix of text[begin, end), shortest first.
  template <typename F>
  void ForEachPrefix(absl::string_view text, size_t begin, F&& f) const {
    uint32_t node = 0;
    for (size_t i = begin; i < text.size(); ++i) {
      auto it = edges_.find(Edge(node, static_cast<unsigned char>(text[i])));
      if (it == edges_.end()) return;
      node = it->second;
      if (values_[node] >= 0) f(i + 1 - begin, values_[node]);
    }
  }
  bool empty() const { return edges_.empty(); }

 private:
  static uint64_t Edge(uint32_t node, unsigned char c) { return (uint64_t(node) << 8) | c; }
  absl::flat_hash_map<uint64_t, uint32_t> edges_;
  std::vector<int32_t> values_{-1};  // per node: the key's value, -1 if no key ends there
};

// ---------------------------------------------------------------------------------------
// sentencepiece's precompiled charsmap: <uint32 LE trie size><Darts-clone double array of
// that many bytes><NUL-terminated replacement strings>. The trie maps UTF-8 sequences to the
// offset of their replacement. Every array access is bounds-checked: a corrupt map yields
// wrong rules, never a crash.

class UnigramTokenizer::CharsMap {
 public:
  static absl::StatusOr<std::unique_ptr<CharsMap>> Parse(absl::string_view blob,
                                                        bool require_utf8) {
    if (blob.size() <= 4) return absl::InvalidArgumentError("the blob is too short (broken)");
    uint32_t trie_size;
    std::memcpy(&trie_size, blob.data(), 4);  // little-endian, as every supported target
    if (trie_size >= blob.size()) {
      return absl::InvalidArgumentError(absl::StrCat("the trie size ", trie_size,
                                                     " exceeds the blob (", blob.size(),
                                                     " bytes)"));
    }
    std::unique_ptr<CharsMap> m(new CharsMap);
    m->units_.resize(trie_size / 4);
    if (!m->units_.empty()) std::memcpy(m->units_.data(), blob.data() + 4, m->units_.size() * 4);
    const absl::string_view strings = blob.substr(4 + trie_size);
    m->normalized_.assign(strings.data(), strings.size());
    if (m->units_.empty()) return absl::InvalidArgumentError("the trie is empty");
    if (require_utf8 && !IsValidUtf8(m->normalized_)) {
      return absl::InvalidArgumentError("the replacement strings are not valid UTF-8");
    }
    return m;
  }

  // Darts-clone's commonPrefixSearch over `key`: f(length, value) for each rule matching a
  // prefix, shortest first. `stop_at_nul`: the tokenizers library's reading, which ends the
  // search at a NUL byte.
  template <typename F>
  void ForEachMatch(absl::string_view key, bool stop_at_nul, F&& f) const {
    size_t node = 0;
    uint32_t unit = units_[0];
    node ^= Offset(unit);
    for (size_t i = 0; i < key.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(key[i]);
      if (c == 0 && stop_at_nul) return;
      node ^= c;
      if (node >= units_.size()) return;
      unit = units_[node];
      if (Label(unit) != c) return;
      node ^= Offset(unit);
      if (HasLeaf(unit)) {
        if (node >= units_.size()) return;
        f(i + 1, units_[node] & ((1U << 31) - 1));
      }
    }
  }

  // The replacement a rule's value points at; false if it points outside the strings.
  bool Replacement(uint32_t value, absl::string_view* out) const {
    if (value >= normalized_.size()) return false;
    const size_t end = normalized_.find('\0', value);
    *out = absl::string_view(normalized_).substr(
        value, (end == std::string::npos ? normalized_.size() : end) - value);
    return true;
  }

  // sentencepiece: the longest rule at the start of `text`; its length (0: none).
  size_t Longest(absl::string_view text, absl::string_view* replacement) const {
    size_t longest = 0;
    ForEachMatch(text, /*stop_at_nul=*/false, [&](size_t length, uint32_t value) {
      absl::string_view r;
      if (length > longest && Replacement(value, &r)) {
        longest = length;
        *replacement = r;
      }
    });
    return longest;
  }

  // The tokenizers library's transform(): the first (shortest) rule matching a prefix of
  // `chunk`, which then replaces the whole chunk.
  bool First(absl::string_view chunk, absl::string_view* replacement) const {
    bool found = false, done = false;
    ForEachMatch(chunk, /*stop_at_nul=*/true, [&](size_t, uint32_t value) {
      if (done) return;
      done = true;
      found = Replacement(value, replacement);
    });
    return found;
  }

 private:
  CharsMap() = default;
  static bool HasLeaf(uint32_t unit) { return ((unit >> 8) & 1) == 1; }
  static uint32_t Label(uint32_t unit) { return unit & ((1U << 31) | 0xFF); }
  static uint32_t Offset(uint32_t unit) { return (unit >> 10) << ((unit & (1U << 9)) >> 6); }

  std::vector<uint32_t> units_;
  std::string normalized_;
};

// ---------------------------------------------------------------------------------------
// tokenizer.json pipeline steps.

struct UnigramTokenizer::NormalizerStep {
  enum class Kind {
    kPrecompiled,
    kReplace,
    kStrip,
    kNormalizationForm,
    kLowercase,
    kPrepend
  };
  Kind kind = Kind::kPrepend;
  NormalizationForm form = NormalizationForm::kNfc;  // kNormalizationForm
  std::shared_ptr<const CharsMap> charsmap;  // kPrecompiled
  std::string pattern;                       // kReplace with a String pattern
  std::shared_ptr<const RE2> regex;          // kReplace with a Regex pattern
  std::string content;                       // kReplace, kPrepend
  bool left = false, right = false;          // kStrip
};

struct UnigramTokenizer::PreTokenizerStep {
  enum class Kind { kWhitespaceSplit, kMetaspace };
  enum class Prepend { kAlways, kFirst, kNever };
  Kind kind = Kind::kWhitespaceSplit;
  std::string replacement;  // kMetaspace: one character
  Prepend prepend = Prepend::kAlways;
  bool split = true;
};

// Fills a UnigramTokenizer from a tokenizer.json document; every check names the field.
class UnigramJsonParser : public TokenizerJsonReader {
 public:
  explicit UnigramJsonParser(UnigramTokenizer* t) : t_(*t) {}

  absl::Status Run(const Json& root) {
    if (absl::Status s = Read(root, &t_.added_); !s.ok()) return s;
    t_.size_ = std::max<int>(static_cast<int>(t_.pieces_.size()), t_.added_.max_id() + 1);
    return absl::OkStatus();
  }

 private:
  absl::Status Model(const Json& m) override {
    auto type = m.find("type");
    if (type == m.end() || !type->is_string()) {
      return InvalidFieldError("model.type", "must be a string");
    }
    if (type->get<std::string>() != "Unigram") {
      return UnsupportedFieldError("model.type",
                                   absl::StrCat("'", type->get<std::string>(),
                                                "' is not a Unigram model (UnigramTokenizer reads "
                                                "Unigram; HfTokenizerJson BPE, WordPieceTokenizer "
                                                "WordPiece)"));
    }
    if (absl::Status s = ReadOptionalBool(m, "byte_fallback", "model", &t_.byte_fallback_);
        !s.ok()) {
      return s;
    }
    auto vocab = m.find("vocab");
    if (vocab == m.end() || !vocab->is_array()) {
      return InvalidFieldError("model.vocab",
                               "missing (must be an array of [piece, score] pairs)");
    }
    if (vocab->size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      return InvalidFieldError("model.vocab", "has more than 2^31 entries");
    }
    t_.json_min_score_ = std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < vocab->size(); ++i) {
      const Json& entry = (*vocab)[i];
      if (!entry.is_array() || entry.size() != 2 || !entry[0].is_string() ||
          !entry[1].is_number()) {
        return InvalidFieldError(absl::StrCat("model.vocab[", i, "]"),
                                 "must be a [piece, score] pair");
      }
      std::string piece = entry[0].get<std::string>();
      const double score = entry[1].get<double>();
      const int32_t id = static_cast<int32_t>(i);
      t_.json_ids_[piece] = id;  // a duplicate piece: the last id wins, as in the library
      if (!piece.empty()) t_.trie_->Insert(piece, id);
      t_.json_min_score_ = std::min(t_.json_min_score_, score);
      t_.json_scores_.push_back(score);
      t_.pieces_.push_back(std::move(piece));
    }
    if (auto unk = m.find("unk_id"); unk != m.end() && !unk->is_null()) {
      if (!unk->is_number_integer() || unk->get<int64_t>() < 0) {
        return InvalidFieldError("model.unk_id", "must be a non-negative integer or null");
      }
      if (t_.pieces_.empty()) {
        return InvalidFieldError("model.vocab",
                                 "is empty but an unk_id is given (at least <unk> is needed)");
      }
      if (unk->get<int64_t>() >= static_cast<int64_t>(t_.pieces_.size())) {
        return InvalidFieldError("model.unk_id", absl::StrCat(unk->get<int64_t>(),
                                                              " is not an index of model.vocab (",
                                                              t_.pieces_.size(), " entries)"));
      }
      t_.unk_id_ = static_cast<int32_t>(unk->get<int64_t>());
    }
    FindBytePieceIds(t_.json_ids_, absl::MakeSpan(t_.byte_ids_));
    return absl::OkStatus();
  }

  absl::Status Normalizer(const Json& n, const std::string& where,
                          const std::string& type) override {
    using Step = UnigramTokenizer::NormalizerStep;
    Step step;
    if (type == "Precompiled") {
      step.kind = Step::Kind::kPrecompiled;
      std::string encoded, blob;
      if (absl::Status s = ReadRequiredString(n, "precompiled_charsmap", where, &encoded);
          !s.ok()) {
        return s;
      }
      if (!DecodeBase64(encoded, &blob)) {
        return InvalidFieldError(absl::StrCat(where, ".precompiled_charsmap"),
                                 "is not valid base64");
      }
      auto charsmap = UnigramTokenizer::CharsMap::Parse(blob, /*require_utf8=*/true);
      if (!charsmap.ok()) {
        return InvalidFieldError(absl::StrCat(where, ".precompiled_charsmap"),
                                 charsmap.status().message());
      }
      step.charsmap = std::shared_ptr<const UnigramTokenizer::CharsMap>(*std::move(charsmap));
    } else if (type == "Replace") {
      step.kind = Step::Kind::kReplace;
      auto pattern = n.find("pattern");
      const std::string field = absl::StrCat(where, ".pattern");
      if (pattern == n.end() || !pattern->is_object() || pattern->size() != 1) {
        return InvalidFieldError(field, "must be {\"String\": ...} or {\"Regex\": ...}");
      }
      if (auto s = pattern->find("String"); s != pattern->end() && s->is_string()) {
        step.pattern = s->get<std::string>();
        if (step.pattern.empty()) {
          return UnsupportedFieldError(field, "an empty String is not implemented");
        }
      } else if (auto r = pattern->find("Regex"); r != pattern->end() && r->is_string()) {
        RE2::Options options;
        options.set_log_errors(false);
        auto regex = std::make_shared<RE2>(r->get<std::string>(), options);
        if (!regex->ok()) {
          return UnsupportedFieldError(field, absl::StrCat("the Regex '", r->get<std::string>(),
                                                           "' is not one RE2 runs: ",
                                                           regex->error()));
        }
        step.regex = std::move(regex);
      } else {
        return InvalidFieldError(field, "must be {\"String\": ...} or {\"Regex\": ...}");
      }
      if (absl::Status s = ReadRequiredString(n, "content", where, &step.content); !s.ok()) {
        return s;
      }
    } else if (type == "Strip") {
      step.kind = Step::Kind::kStrip;
      step.left = step.right = true;
      if (absl::Status s = ReadOptionalBool(n, "strip_left", where, &step.left); !s.ok()) return s;
      if (absl::Status s = ReadOptionalBool(n, "strip_right", where, &step.right); !s.ok()) {
        return s;
      }
    } else if (NormalizationFormNamed(type, &step.form)) {
      step.kind = Step::Kind::kNormalizationForm;
    } else if (type == "Lowercase") {
      step.kind = Step::Kind::kLowercase;
    } else if (type == "Prepend") {
      step.kind = Step::Kind::kPrepend;
      if (absl::Status s = ReadRequiredString(n, "prepend", where, &step.content); !s.ok()) {
        return s;
      }
    } else {
      return UnsupportedFieldError(
          absl::StrCat(where, ".type"),
          absl::StrCat("normalizer '", type,
                       "' is not implemented (Precompiled, Replace, Strip, NFC, "
                       "NFD, NFKC, NFKD, Lowercase, Prepend and Sequence are)"));
    }
    t_.normalizers_.push_back(std::move(step));
    return absl::OkStatus();
  }

  absl::Status PreTokenizer(const Json& p, const std::string& where,
                            const std::string& type) override {
    using Step = UnigramTokenizer::PreTokenizerStep;
    Step step;
    if (type == "WhitespaceSplit") {
      step.kind = Step::Kind::kWhitespaceSplit;
    } else if (type == "Metaspace") {
      step.kind = Step::Kind::kMetaspace;
      if (absl::Status s = ReadRequiredString(p, "replacement", where, &step.replacement);
          !s.ok()) {
        return s;
      }
      if (step.replacement.empty() || !IsValidUtf8(step.replacement) ||
          ValidUtf8At(step.replacement, 0) != step.replacement.size()) {
        return InvalidFieldError(absl::StrCat(where, ".replacement"), "must be one character");
      }
      std::optional<bool> add_prefix_space;
      if (auto a = p.find("add_prefix_space"); a != p.end() && !a->is_null()) {
        if (!a->is_boolean()) {
          return InvalidFieldError(absl::StrCat(where, ".add_prefix_space"),
                                   "must be true or false");
        }
        add_prefix_space = a->get<bool>();
      }
      auto scheme = p.find("prepend_scheme");
      if (scheme != p.end() && !scheme->is_null()) {
        const std::string value = scheme->is_string() ? scheme->get<std::string>() : "";
        if (value == "always") step.prepend = Step::Prepend::kAlways;
        else if (value == "first") step.prepend = Step::Prepend::kFirst;
        else if (value == "never") step.prepend = Step::Prepend::kNever;
        else {
          return InvalidFieldError(absl::StrCat(where, ".prepend_scheme"),
                                   absl::StrCat(scheme->dump(),
                                                " is not \"always\", \"first\" or \"never\""));
        }
        if (add_prefix_space == false && step.prepend != Step::Prepend::kNever) {
          return InvalidFieldError(absl::StrCat(where, ".add_prefix_space"),
                                   "false does not match the declared prepend_scheme");
        }
      } else {
        step.prepend = add_prefix_space.value_or(true) ? Step::Prepend::kAlways
                                                       : Step::Prepend::kNever;
      }
      if (absl::Status s = ReadOptionalBool(p, "split", where, &step.split); !s.ok()) return s;
    } else {
      return UnsupportedFieldError(absl::StrCat(where, ".type"),
                                   absl::StrCat("pre-tokenizer '", type,
                                                "' is not implemented (Metaspace, "
                                                "WhitespaceSplit and Sequence are)"));
    }
    t_.pre_tokenizers_.push_back(std::move(step));
    return absl::OkStatus();
  }

  // What the added tokens are read against.
  const std::unordered_map<std::string, int32_t>& Vocabulary() const override {
    return t_.json_ids_;
  }
  int64_t VocabularySize() const override { return static_cast<int64_t>(t_.pieces_.size()); }
  std::string Normalize(absl::string_view text) const override { return t_.NormalizeJson(text); }

  UnigramTokenizer& t_;
};

// ---------------------------------------------------------------------------------------
// Loading.

UnigramTokenizer::UnigramTokenizer() : trie_(std::make_unique<Trie>()) {
  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
}
UnigramTokenizer::~UnigramTokenizer() = default;

absl::StatusOr<std::unique_ptr<UnigramTokenizer>> UnigramTokenizer::LoadSentencePiece(
    const std::string& path) {
  return ParseTokenizerFile(path, ParseSentencePiece);
}

absl::StatusOr<std::unique_ptr<UnigramTokenizer>> UnigramTokenizer::LoadTokenizerJson(
    const std::string& path) {
  return ParseTokenizerFile(path, ParseTokenizerJson);
}

absl::StatusOr<std::unique_ptr<UnigramTokenizer>> UnigramTokenizer::ParseSentencePiece(
    absl::string_view bytes) {
  absl::StatusOr<SentencePieceModelProto> proto = ParseSentencePieceModelProto(bytes);
  if (!proto.ok()) return proto.status();
  if (proto->model_type != 1) {
    return UnsupportedFieldError("ModelProto.trainer_spec.model_type",
                                 absl::StrCat(proto->model_type,
                                              " is not a unigram model (1); BPE models (2) are "
                                              "read by SentencePieceModel"));
  }
  if (proto->treat_whitespace_as_suffix) {
    return UnsupportedFieldError("ModelProto.trainer_spec.treat_whitespace_as_suffix",
                                 "true is not implemented");
  }
  if (proto->pieces.empty()) {
    return InvalidFieldError("ModelProto.pieces", "the model has no pieces");
  }
  if (proto->pieces.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return InvalidFieldError("ModelProto.pieces", "more than 2^31 pieces");
  }
  std::unique_ptr<UnigramTokenizer> t(new UnigramTokenizer);
  t->source_ = Source::kSentencePiece;
  t->byte_fallback_ = proto->byte_fallback;
  t->add_dummy_prefix_ = proto->add_dummy_prefix;
  t->remove_extra_whitespaces_ = proto->remove_extra_whitespaces;
  t->escape_whitespaces_ = proto->escape_whitespaces;
  if (!proto->precompiled_charsmap.empty()) {
    auto charsmap = CharsMap::Parse(proto->precompiled_charsmap, /*require_utf8=*/false);
    if (!charsmap.ok()) {
      return InvalidFieldError("ModelProto.normalizer_spec.precompiled_charsmap",
                               charsmap.status().message());
    }
    t->charsmap_ = *std::move(charsmap);
  }
  // As sentencepiece's ModelInterface::InitializePieces and the unigram Model.
  t->min_score_ = FLT_MAX;
  t->max_score_ = FLT_MIN;
  t->user_defined_ = std::make_unique<Trie>();
  std::unordered_map<std::string, int> byte_value;
  for (int b = 0; b < 256; ++b) byte_value[BytePieceName(b)] = b;
  for (size_t i = 0; i < proto->pieces.size(); ++i) {
    SentencePieceModelProto::Piece& p = proto->pieces[i];
    const int32_t id = static_cast<int32_t>(i);
    const std::string where = absl::StrCat("ModelProto.pieces[", i, "]");
    if (p.text.empty()) return InvalidFieldError(where, "the piece is empty");
    const bool normal = p.type == SentencePieceType::kNormal ||
                        p.type == SentencePieceType::kUserDefined ||
                        p.type == SentencePieceType::kUnused;
    auto& map = normal ? t->piece_ids_ : t->reserved_ids_;
    if (auto [it, inserted] = map.emplace(p.text, id); !inserted) {
      return InvalidFieldError(
          where, absl::StrCat("'", p.text, "' is already defined (pieces[", it->second, "])"));
    }
    if (p.type == SentencePieceType::kUserDefined) t->user_defined_->Insert(p.text, id);
    if (p.type == SentencePieceType::kUnknown) {
      if (t->unk_id_ >= 0) {
        return InvalidFieldError(
            where,
            absl::StrCat("a second unknown piece (the first is pieces[", t->unk_id_, "])"));
      }
      t->unk_id_ = id;
    }
    if (p.type == SentencePieceType::kByte) {
      if (!proto->byte_fallback) {
        return InvalidFieldError(where, absl::StrCat("byte piece '", p.text,
                                                     "' although trainer_spec.byte_fallback is "
                                                     "false"));
      }
      auto b = byte_value.find(p.text);
      if (b == byte_value.end()) {
        return InvalidFieldError(where,
                                 absl::StrCat("'", p.text, "' is not a byte piece (<0xXX>)"));
      }
      t->byte_ids_[b->second] = id;
    }
    if (p.type == SentencePieceType::kNormal) {
      t->min_score_ = std::min(t->min_score_, p.score);
      t->max_score_ = std::max(t->max_score_, p.score);
    }
    if (normal) t->trie_->Insert(p.text, id);
    t->scores_.push_back(p.score);
    t->types_.push_back(p.type);
    t->pieces_.push_back(std::move(p.text));
  }
  if (t->unk_id_ < 0) {
    return InvalidFieldError("ModelProto.pieces", "the model has no unknown piece");
  }
  if (t->byte_fallback_ && std::any_of(std::begin(t->byte_ids_), std::end(t->byte_ids_),
                                       [](int32_t id) { return id < 0; })) {
    return InvalidFieldError(
        "ModelProto.pieces",
        "trainer_spec.byte_fallback is true but the 256 byte pieces are not all there");
  }
  if (t->user_defined_->empty()) t->user_defined_.reset();
  t->size_ = static_cast<int>(t->pieces_.size());
  return t;
}

absl::StatusOr<std::unique_ptr<UnigramTokenizer>> UnigramTokenizer::ParseTokenizerJson(
    absl::string_view json) {
  absl::StatusOr<Json> root = ParseTokenizerJsonObject(json);
  if (!root.ok()) return root.status();
  std::unique_ptr<UnigramTokenizer> t(new UnigramTokenizer);
  t->source_ = Source::kTokenizerJson;
  UnigramJsonParser parser(t.get());
  if (absl::Status s = parser.Run(*root); !s.ok()) return s;
  return t;
}

int32_t UnigramTokenizer::PieceToId(absl::string_view piece) const {
  const std::string key(piece);
  if (source_ == Source::kTokenizerJson) {
    if (int32_t id = added_.Find(piece); id >= 0) return id;
    auto it = json_ids_.find(key);
    return it == json_ids_.end() ? -1 : it->second;
  }
  if (auto it = reserved_ids_.find(key); it != reserved_ids_.end()) return it->second;
  if (auto it = piece_ids_.find(key); it != piece_ids_.end()) return it->second;
  return -1;
}

std::string UnigramTokenizer::IdToPiece(int32_t id) const {
  if (source_ == Source::kTokenizerJson) {
    std::string content = added_.Content(id);
    if (!content.empty()) return content;
  }
  if (id < 0 || id >= static_cast<int32_t>(pieces_.size())) return "";
  return pieces_[id];
}

// ---------------------------------------------------------------------------------------
// The .model path: sentencepiece's Normalizer::Normalize and unigram Model::EncodeOptimized.

std::string UnigramTokenizer::NormalizeSentencePiece(absl::string_view input) const {
  // Normalizer::NormalizePrefix: a user-defined symbol as it is, else the longest charsmap
  // rule, else one character (a malformed byte becomes U+FFFD).
  auto normalize_prefix = [&](absl::string_view in, size_t* consumed) -> absl::string_view {
    if (user_defined_ != nullptr) {
      size_t longest = 0;
      user_defined_->ForEachPrefix(in, 0, [&](size_t length, int32_t) { longest = length; });
      if (longest > 0) {
        *consumed = longest;
        return in.substr(0, longest);
      }
    }
    if (charsmap_ != nullptr) {
      absl::string_view replacement;
      if (size_t length = charsmap_->Longest(in, &replacement); length > 0) {
        *consumed = length;
        return replacement;
      }
    }
    const size_t n = ValidUtf8At(in, 0);
    if (n == 0) {
      *consumed = 1;
      return kReplacementChar;
    }
    *consumed = n;
    return in.substr(0, n);
  };

  std::string out;
  size_t consumed = 0;
  if (remove_extra_whitespaces_) {  // leading whitespace
    while (!input.empty()) {
      if (normalize_prefix(input, &consumed) != " ") break;
      input.remove_prefix(consumed);
    }
  }
  if (input.empty()) return out;
  out.reserve(input.size() * 3);
  const absl::string_view space = escape_whitespaces_ ? kSpaceSymbol : " ";
  if (add_dummy_prefix_) out.append(space.data(), space.size());
  bool is_prev_space = remove_extra_whitespaces_;
  while (!input.empty()) {
    absl::string_view piece = normalize_prefix(input, &consumed);
    while (is_prev_space && absl::ConsumePrefix(&piece, " ")) {
    }
    if (!piece.empty()) {
      for (char c : piece) {
        if (c == ' ' && escape_whitespaces_) {
          out += kSpaceSymbol;
        } else {
          out.push_back(c);
        }
      }
      is_prev_space = absl::EndsWith(piece, " ");
    }
    input.remove_prefix(consumed);
    if (!remove_extra_whitespaces_) is_prev_space = false;
  }
  if (remove_extra_whitespaces_) {  // trailing whitespace
    while (absl::EndsWith(out, space)) out.resize(out.size() - space.size());
  }
  return out;
}

void UnigramTokenizer::EncodeSentencePiece(absl::string_view s, std::vector<int32_t>* ids) const {
  if (s.empty()) return;
  // The best path ending at each byte position: its score (float, as sentencepiece keeps it),
  // where its last piece starts (-1: not reached) and that piece's id.
  struct Node {
    int32_t id = -1;
    float score = 0.f;
    int64_t starts_at = -1;
  };
  const size_t size = s.size();
  const float unk_score = min_score_ - kUnkPenalty;
  std::vector<Node> best(size + 1);
  for (size_t starts_at = 0; starts_at < size;) {
    const float till_here = best[starts_at].score;
    const size_t mblen =
        std::min(Utf8LengthOfLead(static_cast<unsigned char>(s[starts_at])), size - starts_at);
    bool has_single_node = false;
    trie_->ForEachPrefix(s, starts_at, [&](size_t length, int32_t id) {
      if (types_[id] == SentencePieceType::kUnused) return;
      Node& target = best[starts_at + length];
      // sentencepiece computes this in double (a user-defined symbol's bonus is a double
      // expression) and stores the winner as float; the same arithmetic here.
      const double score = types_[id] == SentencePieceType::kUserDefined
                               ? static_cast<double>(static_cast<float>(length) * max_score_) - 0.1
                               : static_cast<double>(scores_[id]);
      const double candidate = score + static_cast<double>(till_here);
      if (target.starts_at == -1 || candidate > static_cast<double>(target.score)) {
        target.score = static_cast<float>(candidate);
        target.starts_at = static_cast<int64_t>(starts_at);
        target.id = id;
      }
      if (length == mblen) has_single_node = true;
    });
    if (!has_single_node) {
      Node& target = best[starts_at + mblen];
      const float candidate = unk_score + till_here;
      if (target.starts_at == -1 || candidate > target.score) {
        target.score = candidate;
        target.starts_at = static_cast<int64_t>(starts_at);
        target.id = unk_id_;
      }
    }
    starts_at += mblen;
  }
  std::vector<std::pair<absl::string_view, int32_t>> path;
  for (size_t ends_at = size; ends_at > 0;) {
    const Node& node = best[ends_at];
    if (node.starts_at < 0) return;  // unreachable: every character boundary is reached
    path.emplace_back(s.substr(node.starts_at, ends_at - node.starts_at), node.id);
    ends_at = static_cast<size_t>(node.starts_at);
  }
  std::reverse(path.begin(), path.end());
  // SentencePieceProcessor: unknown pieces become their bytes with byte fallback, else
  // consecutive unknown pieces merge into one.
  bool prev_unk = false;
  for (const auto& [piece, id] : path) {
    const bool unk = types_[id] == SentencePieceType::kUnknown;
    if (unk && byte_fallback_) {
      for (unsigned char b : piece) ids->push_back(byte_ids_[b]);
    } else if (!(unk && prev_unk)) {
      ids->push_back(id);
    }
    prev_unk = unk;
  }
}

// ---------------------------------------------------------------------------------------
// The tokenizer.json path.

namespace {

std::string ReplaceAll(absl::string_view s, const UnigramTokenizer::NormalizerStep& step) {
  std::string out;
  if (step.regex == nullptr) {
    size_t prev = 0;
    for (size_t at = s.find(step.pattern); at != absl::string_view::npos;
         at = s.find(step.pattern, prev)) {
      out.append(s.data() + prev, at - prev);
      out += step.content;
      prev = at + step.pattern.size();
    }
    out.append(s.data() + prev, s.size() - prev);
    return out;
  }
  size_t prev = 0, pos = 0;
  const re2::StringPiece text(s.data(), s.size());
  re2::StringPiece match;
  while (pos <= s.size() &&
         step.regex->Match(text, pos, s.size(), RE2::UNANCHORED, &match, 1)) {
    const size_t begin = static_cast<size_t>(match.data() - s.data());
    const size_t end = begin + match.size();
    out.append(s.data() + prev, begin - prev);
    out += step.content;
    prev = end;
    if (end == begin) {  // an empty match: step over one character
      if (end >= s.size()) break;
      size_t len;
      DecodeUtf8At(s, end, &len);
      out.append(s.data() + end, len);
      prev = end + len;
      pos = end + len;
    } else {
      pos = end;
    }
  }
  out.append(s.data() + prev, s.size() - prev);
  return out;
}

std::string ApplyPrecompiled(const UnigramTokenizer::NormalizerStep& step, absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  ForEachGrapheme(s, [&](size_t begin, size_t end) {
    const absl::string_view grapheme = s.substr(begin, end - begin);
    absl::string_view replacement;
    if (grapheme.size() < 6 && step.charsmap->First(grapheme, &replacement)) {
      out.append(replacement.data(), replacement.size());
      return;
    }
    for (size_t i = 0; i < grapheme.size();) {
      size_t len;
      DecodeUtf8At(grapheme, i, &len);
      const absl::string_view c = grapheme.substr(i, len);
      if (step.charsmap->First(c, &replacement)) {
        out.append(replacement.data(), replacement.size());
      } else {
        out.append(c.data(), c.size());
      }
      i += len;
    }
  });
  return out;
}

}  // namespace

std::string UnigramTokenizer::NormalizeJson(absl::string_view text) const {
  using Kind = NormalizerStep::Kind;
  std::string s(text);
  for (const NormalizerStep& step : normalizers_) {
    switch (step.kind) {
      case Kind::kPrecompiled:
        s = ApplyPrecompiled(step, s);
        break;
      case Kind::kReplace:
        s = ReplaceAll(s, step);
        break;
      case Kind::kStrip: {
        size_t begin = step.left ? LeadingWhiteSpaceLength(s) : 0;
        size_t end = step.right ? TrailingWhiteSpaceStart(s) : s.size();
        s = end > begin ? s.substr(begin, end - begin) : std::string();
        break;
      }
      case Kind::kNormalizationForm:
        s = NormalizeUnicode(s, step.form);
        break;
      case Kind::kLowercase:
        s = LowercasePerCharacter(s);
        break;
      case Kind::kPrepend:
        if (!s.empty()) s.insert(0, step.content);
        break;
    }
  }
  return s;
}

void UnigramTokenizer::PreTokenize(HfAddedTokens::Piece piece,
                                   std::vector<HfAddedTokens::Piece>* words) const {
  using Kind = PreTokenizerStep::Kind;
  std::vector<HfAddedTokens::Piece> current;
  current.push_back(std::move(piece));
  for (const PreTokenizerStep& step : pre_tokenizers_) {
    std::vector<HfAddedTokens::Piece> next;
    for (HfAddedTokens::Piece& word : current) {
      const std::string& s = word.text;
      if (step.kind == Kind::kWhitespaceSplit) {
        size_t begin = 0;
        for (size_t i = 0; i < s.size();) {
          size_t len;
          const uint32_t cp = DecodeUtf8At(s, i, &len);
          if (IsUnicodeWhiteSpace(cp)) {
            if (i > begin) {
              next.push_back({s.substr(begin, i - begin), -1, word.at_start && begin == 0});
            }
            begin = i + len;
          }
          i += len;
        }
        if (s.size() > begin) {
          next.push_back({s.substr(begin), -1, word.at_start && begin == 0});
        }
        continue;
      }
      // Metaspace: ' ' becomes the replacement, which is prepended per the scheme, and the
      // word splits before each replacement (MergedWithNext).
      std::string t;
      t.reserve(s.size() + step.replacement.size());
      for (char c : s) {
        if (c == ' ') t += step.replacement;
        else t.push_back(c);
      }
      if (!t.empty() && !absl::StartsWith(t, step.replacement) &&
          (step.prepend == PreTokenizerStep::Prepend::kAlways ||
           (step.prepend == PreTokenizerStep::Prepend::kFirst && word.at_start))) {
        t.insert(0, step.replacement);
      }
      if (!step.split) {
        if (!t.empty()) next.push_back({std::move(t), -1, word.at_start});
        continue;
      }
      size_t begin = 0;
      for (size_t at = t.find(step.replacement, 1); at != std::string::npos;
           at = t.find(step.replacement, at + step.replacement.size())) {
        next.push_back({t.substr(begin, at - begin), -1, word.at_start && begin == 0});
        begin = at;
      }
      if (t.size() > begin) next.push_back({t.substr(begin), -1, word.at_start && begin == 0});
    }
    current = std::move(next);
  }
  for (HfAddedTokens::Piece& word : current) {
    if (!word.text.empty()) words->push_back(std::move(word));
  }
}

// The library's Unigram::encode_optimized and Unigram::tokenize on one word.
absl::Status UnigramTokenizer::EncodeJsonWord(absl::string_view s,
                                              std::vector<int32_t>* ids) const {
  if (s.empty()) return absl::OkStatus();
  struct Node {
    int32_t id = 0;
    double score = 0.0;
    int64_t starts_at = -1;
  };
  const size_t size = s.size();
  const double unk_score = json_min_score_ - static_cast<double>(kUnkPenalty);
  std::vector<Node> best(size + 1);
  for (size_t starts_at = 0; starts_at < size;) {
    const double till_here = best[starts_at].score;
    const size_t mblen =
        std::min(Utf8LengthOfLead(static_cast<unsigned char>(s[starts_at])), size - starts_at);
    bool has_single_node = false;
    trie_->ForEachPrefix(s, starts_at, [&](size_t length, int32_t id) {
      Node& target = best[starts_at + length];
      const double candidate = json_scores_[id] + till_here;
      if (target.starts_at == -1 || candidate > target.score) {
        target.score = candidate;
        target.starts_at = static_cast<int64_t>(starts_at);
        target.id = id;
      }
      if (length == mblen) has_single_node = true;
    });
    if (!has_single_node) {
      Node& target = best[starts_at + mblen];
      const double candidate = unk_score + till_here;
      if (target.starts_at == -1 || candidate > target.score) {
        if (unk_id_ < 0) {
          return UnsupportedFieldError("model.unk_id",
                                       "the text has a character no piece covers, and the model "
                                       "has no unknown piece");
        }
        target.score = candidate;
        target.starts_at = static_cast<int64_t>(starts_at);
        target.id = unk_id_;
      }
    }
    starts_at += mblen;
  }
  // Backtrack; consecutive unknown pieces fuse into one string.
  std::vector<std::string> strings;
  std::string fused;
  for (size_t ends_at = size; ends_at > 0;) {
    const Node& node = best[ends_at];
    if (node.starts_at < 0) break;  // unreachable: every character boundary is reached
    const absl::string_view piece = s.substr(node.starts_at, ends_at - node.starts_at);
    if (unk_id_ >= 0 && node.id == unk_id_) {
      fused.insert(0, piece.data(), piece.size());
    } else {
      if (!fused.empty()) strings.push_back(std::move(fused));
      fused.clear();
      strings.emplace_back(piece);
    }
    ends_at = static_cast<size_t>(node.starts_at);
  }
  if (!fused.empty()) strings.push_back(std::move(fused));
  std::reverse(strings.begin(), strings.end());
  for (const std::string& piece : strings) {
    if (auto it = json_ids_.find(piece); it != json_ids_.end()) {
      ids->push_back(it->second);
      continue;
    }
    if (byte_fallback_ && std::all_of(piece.begin(), piece.end(), [&](char b) {
          return byte_ids_[static_cast<unsigned char>(b)] >= 0;
        })) {
      for (unsigned char b : piece) ids->push_back(byte_ids_[b]);
      continue;
    }
    if (unk_id_ < 0) {
      return UnsupportedFieldError("model.unk_id",
                                   "the text has a character no piece covers, and the model has "
                                   "no unknown piece");
    }
    ids->push_back(unk_id_);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> UnigramTokenizer::Encode(absl::string_view text) const {
  if (source_ == Source::kSentencePiece) {
    std::vector<int32_t> ids;
    EncodeSentencePiece(NormalizeSentencePiece(text), &ids);
    return ids;
  }
  return added_.Encode(
      text, [this](absl::string_view s) { return NormalizeJson(s); },
      [this](HfAddedTokens::Piece piece, std::vector<int32_t>* ids) {
        std::vector<HfAddedTokens::Piece> words;
        PreTokenize(std::move(piece), &words);
        for (const HfAddedTokens::Piece& word : words) {
          if (absl::Status s = EncodeJsonWord(word.text, ids); !s.ok()) return s;
        }
        return absl::OkStatus();
      });
}

// ---------------------------------------------------------------------------------------
// XlmRobertaVocab.

absl::StatusOr<XlmRobertaVocab> XlmRobertaVocab::For(const UnigramTokenizer& tokenizer) {
  XlmRobertaVocab v;
  if (tokenizer.source() == UnigramTokenizer::Source::kSentencePiece) {
    // transformers' XLMRobertaTokenizer: fairseq_tokens_to_ids and fairseq_offset = 1.
    v.fairseq_offset_ = true;
    v.bos_ = 0;
    v.pad_ = 1;
    v.eos_ = 2;
    v.unk_ = 3;
    v.mask_ = tokenizer.size() + 1;
    v.size_ = tokenizer.size() + 2;
    return v;
  }
  struct Named {
    const char* name;
    int32_t* id;
    bool required;
  };
  for (const Named& n : {Named{"<s>", &v.bos_, true}, Named{"<pad>", &v.pad_, true},
                         Named{"</s>", &v.eos_, true}, Named{"<unk>", &v.unk_, true},
                         Named{"<mask>", &v.mask_, false}}) {
    *n.id = tokenizer.PieceToId(n.name);
    if (*n.id < 0 && n.required) {
      return absl::FailedPreconditionError(
          absl::StrCat("tokenizer.json: XLM-RoBERTa's '", n.name,
                       "' is neither an added token nor in model.vocab"));
    }
  }
  v.size_ = tokenizer.size();
  return v;
}

int32_t XlmRobertaVocab::ToModelId(int32_t id) const {
  if (!fairseq_offset_) return id;
  return id == 0 ? unk_ : id + 1;  // sentencepiece's id 0 is its unknown piece
}

std::vector<int32_t> XlmRobertaVocab::ToModelIds(absl::Span<const int32_t> ids) const {
  std::vector<int32_t> out;
  out.reserve(ids.size());
  for (int32_t id : ids) out.push_back(ToModelId(id));
  return out;
}

std::vector<int32_t> XlmRobertaVocab::Single(absl::Span<const int32_t> a) const {
  std::vector<int32_t> out;
  out.reserve(a.size() + 2);
  out.push_back(bos_);
  out.insert(out.end(), a.begin(), a.end());
  out.push_back(eos_);
  return out;
}

std::vector<int32_t> XlmRobertaVocab::Pair(absl::Span<const int32_t> a,
                                           absl::Span<const int32_t> b) const {
  std::vector<int32_t> out;
  out.reserve(a.size() + b.size() + 4);
  out.push_back(bos_);
  out.insert(out.end(), a.begin(), a.end());
  out.push_back(eos_);
  out.push_back(eos_);
  out.insert(out.end(), b.begin(), b.end());
  out.push_back(eos_);
  return out;
}

}  // namespace embedserve::tokenizers
