// WordPieceTokenizer: vocab.txt and tokenizer.json loading (WordPieceJsonParser),
// BertNormalizer, BertPreTokenizer, greedy longest-match-first WordPiece, BERT's templates.
#include "server/tokenizers/wordpiece.h"

#include <algorithm>
#include <limits>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/tokenizers/tokenizer_loading.h"
#include "server/tokenizers/utf8.h"
#include "unicode/uchar.h"

namespace embedserve::tokenizers {
namespace {

using Json = nlohmann::json;

// BertNormalizer's is_control: general category Cc, Cf or Co, but tab, LF and CR (which
// count as whitespace).
bool IsBertControl(uint32_t cp) {
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;
  const int8_t type = u_charType(static_cast<UChar32>(cp));
  return type == U_CONTROL_CHAR || type == U_FORMAT_CHAR || type == U_PRIVATE_USE_CHAR;
}

// BertNormalizer's is_chinese_char: the CJK Unified Ideographs blocks and the compatibility
// ideographs (not Hangul, Hiragana or Katakana).
bool IsChineseChar(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// BertPreTokenizer's is_bert_punc: ASCII punctuation (symbols such as $ + < = > ^ ` | ~
// included) or a Unicode punctuation category (Pc Pd Ps Pe Pi Pf Po).
bool IsBertPunctuation(uint32_t cp) {
  if (cp < 0x80) {
    return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
           (cp >= 123 && cp <= 126);
  }
  switch (u_charType(static_cast<UChar32>(cp))) {
    case U_CONNECTOR_PUNCTUATION:
    case U_DASH_PUNCTUATION:
    case U_START_PUNCTUATION:
    case U_END_PUNCTUATION:
    case U_INITIAL_PUNCTUATION:
    case U_FINAL_PUNCTUATION:
    case U_OTHER_PUNCTUATION:
      return true;
    default:
      return false;
  }
}

// BertNormalizer's strip_accents: NFD, then every non-spacing mark (Mn) dropped. The
// StripAccents normalizer (bert == false): every combining mark (Mn, Mc, Me) dropped, no NFD.
std::string StripAccents(absl::string_view s, bool bert) {
  const std::string decomposed =
      bert ? NormalizeUnicode(s, NormalizationForm::kNfd) : std::string(s);
  std::string out;
  out.reserve(decomposed.size());
  for (size_t i = 0; i < decomposed.size();) {
    size_t len;
    const uint32_t cp = DecodeUtf8At(decomposed, i, &len);
    const int8_t type =
        cp < 0x80 ? int8_t{U_OTHER_LETTER} : u_charType(static_cast<UChar32>(cp));
    const bool drop = type == U_NON_SPACING_MARK ||
                      (!bert && (type == U_COMBINING_SPACING_MARK || type == U_ENCLOSING_MARK));
    if (!drop) {
      out.append(decomposed, i, len);
    }
    i += len;
  }
  return out;
}

std::string BertNormalize(absl::string_view text, const WordPieceTokenizer::NormalizerStep& o) {
  std::string s;
  s.reserve(text.size() + 8);
  for (size_t i = 0; i < text.size();) {
    size_t len;
    const uint32_t cp = DecodeUtf8At(text, i, &len);
    i += len;
    if (o.clean_text) {
      if (cp == 0 || cp == 0xFFFD || IsBertControl(cp)) continue;
      if (IsUnicodeWhiteSpace(cp)) {
        s.push_back(' ');
        continue;
      }
    }
    if (o.handle_chinese_chars && IsChineseChar(cp)) {
      s.push_back(' ');
      AppendUtf8(cp, &s);
      s.push_back(' ');
      continue;
    }
    AppendUtf8(cp, &s);
  }
  if (o.strip_accents) s = StripAccents(s, /*bert=*/true);
  if (o.lowercase) s = LowercasePerCharacter(s);
  return s;
}

// The ids of the special tokens present in `vocab`, as added tokens (special, matched on the
// raw text), as BertTokenizerFast registers them.
Json SpecialAddedTokens(const std::unordered_map<std::string, int32_t>& vocab,
                        const WordPieceOptions& o) {
  std::vector<std::pair<int32_t, std::string>> present;
  for (const std::string* token :
       {&o.pad_token, &o.unk_token, &o.cls_token, &o.sep_token, &o.mask_token}) {
    auto it = vocab.find(*token);
    if (it != vocab.end() && !token->empty()) present.emplace_back(it->second, *token);
  }
  std::sort(present.begin(), present.end());
  present.erase(std::unique(present.begin(), present.end()), present.end());
  Json list = Json::array();
  for (const auto& [id, content] : present) {
    list.push_back({{"id", id}, {"content", content}, {"special", true}, {"normalized", false}});
  }
  return list;
}

}  // namespace

// Fills a WordPieceTokenizer from a tokenizer.json document; every check names the field.
class WordPieceJsonParser : public TokenizerJsonReader {
 public:
  explicit WordPieceJsonParser(WordPieceTokenizer* t) : t_(*t) {}

  absl::Status Run(const Json& root) {
    if (absl::Status s = Read(root, &t_.added_); !s.ok()) return s;
    if (auto p = root.find("post_processor"); p != root.end() && !p->is_null()) {
      if (absl::Status s = PostProcessor(*p); !s.ok()) return s;
    } else {
      for (auto [name, id] : {std::pair<const char*, int32_t*>{"[CLS]", &t_.cls_id_},
                              {"[SEP]", &t_.sep_id_}}) {
        *id = t_.TokenToId(name);
        if (*id < 0) {
          return UnsupportedFieldError(
              "post_processor",
              absl::StrCat("null, and BERT's '", name,
                           "' is not in the vocabulary (the templates need it)"));
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Model(const Json& m) override {
    auto type = m.find("type");
    if (type != m.end()) {
      if (!type->is_string()) return InvalidFieldError("model.type", "must be a string");
      if (type->get<std::string>() != "WordPiece") {
        return UnsupportedFieldError(
            "model.type",
            absl::StrCat("'", type->get<std::string>(), "' is not a WordPiece model"));
      }
    }
    auto vocab = m.find("vocab");
    if (vocab == m.end() || !vocab->is_object()) {
      return InvalidFieldError("model.vocab", "missing (must be an object of token -> id)");
    }
    int64_t max_id = -1;
    if (absl::Status s = ForEachVocabEntry(*vocab,
                                           [&](const std::string& token, int32_t id) {
                                             t_.vocab_[token] = id;
                                             t_.vocab_r_[id] = token;
                                             max_id = std::max<int64_t>(max_id, id);
                                           });
        !s.ok()) {
      return s;
    }
    t_.size_ = static_cast<int>(max_id + 1);
    std::string unk;
    if (absl::Status s = ReadRequiredString(m, "unk_token", "model", &unk); !s.ok()) return s;
    auto it = t_.vocab_.find(unk);
    if (it == t_.vocab_.end()) {
      return InvalidFieldError("model.unk_token",
                               absl::StrCat("'", unk, "' is not in model.vocab"));
    }
    t_.unk_id_ = it->second;
    if (auto p = m.find("continuing_subword_prefix"); p != m.end() && !p->is_null()) {
      if (!p->is_string()) {
        return InvalidFieldError("model.continuing_subword_prefix", "must be a string");
      }
      t_.continuing_subword_prefix_ = p->get<std::string>();
    }
    if (auto n = m.find("max_input_chars_per_word"); n != m.end() && !n->is_null()) {
      if (!n->is_number_unsigned()) {
        return InvalidFieldError("model.max_input_chars_per_word",
                                 "must be a non-negative integer");
      }
      t_.max_input_chars_per_word_ = n->get<uint64_t>();
    }
    return absl::OkStatus();
  }

  absl::Status Normalizer(const Json& n, const std::string& where,
                          const std::string& type) override {
    using Step = WordPieceTokenizer::NormalizerStep;
    Step step;
    if (type == "BertNormalizer") {
      step.kind = Step::Kind::kBert;
      for (auto [key, field] :
           {std::pair<const char*, bool*>{"clean_text", &step.clean_text},
            {"handle_chinese_chars", &step.handle_chinese_chars},
            {"lowercase", &step.lowercase}}) {
        if (absl::Status s = ReadOptionalBool(n, key, where, field); !s.ok()) return s;
      }
      step.strip_accents = step.lowercase;  // strip_accents null: follow lowercase
      if (absl::Status s = ReadOptionalBool(n, "strip_accents", where, &step.strip_accents);
          !s.ok()) {
        return s;
      }
    } else if (type == "Lowercase") {
      step.kind = Step::Kind::kLowercase;
    } else if (type == "StripAccents") {
      step.kind = Step::Kind::kStripAccents;
    } else if (NormalizationFormNamed(type, &step.form)) {
      step.kind = Step::Kind::kNormalizationForm;
    } else {
      return UnsupportedFieldError(
          absl::StrCat(where, ".type"),
          absl::StrCat("normalizer '", type,
                       "' is not implemented (BertNormalizer, Lowercase, "
                       "StripAccents, NFC, NFD, NFKC, NFKD and Sequence are)"));
    }
    t_.normalizers_.push_back(step);
    return absl::OkStatus();
  }

  absl::Status PreTokenizer(const Json&, const std::string& where,
                            const std::string& type) override {
    if (type == "BertPreTokenizer") {
      t_.pre_tokenizers_.push_back(WordPieceTokenizer::PreTokenizerStep::kBert);
    } else if (type == "WhitespaceSplit") {
      t_.pre_tokenizers_.push_back(WordPieceTokenizer::PreTokenizerStep::kWhitespaceSplit);
    } else {
      return UnsupportedFieldError(absl::StrCat(where, ".type"),
                                   absl::StrCat("pre-tokenizer '", type,
                                                "' is not implemented (BertPreTokenizer, "
                                                "WhitespaceSplit and Sequence are)"));
    }
    return absl::OkStatus();
  }

  // BERT's template only: TemplateProcessing `[CLS]:0 $A:0 [SEP]:0` / `... $B:1 [SEP]:1`, or
  // BertProcessing; [CLS] and [SEP] ids from it.
  absl::Status PostProcessor(const Json& p) {
    if (!p.is_object()) return InvalidFieldError("post_processor", "must be an object or null");
    std::string type;
    if (absl::Status s = ReadRequiredString(p, "type", "post_processor", &type); !s.ok()) return s;
    if (type == "BertProcessing") {
      for (auto [key, id] : {std::pair<const char*, int32_t*>{"cls", &t_.cls_id_},
                             {"sep", &t_.sep_id_}}) {
        auto v = p.find(key);
        if (v == p.end() || !v->is_array() || v->size() != 2 || !(*v)[0].is_string() ||
            !(*v)[1].is_number_unsigned() ||
            (*v)[1].get<uint64_t>() > uint64_t(std::numeric_limits<int32_t>::max())) {
          return InvalidFieldError(absl::StrCat("post_processor.", key),
                                   "must be a [token, id] pair");
        }
        *id = static_cast<int32_t>((*v)[1].get<uint64_t>());
      }
      return absl::OkStatus();
    }
    if (type != "TemplateProcessing") {
      return UnsupportedFieldError("post_processor.type",
                                   absl::StrCat("'", type,
                                                "' is not BERT's template (TemplateProcessing "
                                                "[CLS] $A [SEP] $B [SEP], or BertProcessing)"));
    }
    // Each entry as (kind, id, type_id): kind 'S' special token, 'A'/'B' a sequence.
    auto entries = [](const Json& list, std::vector<std::tuple<char, std::string, int64_t>>* out) {
      if (!list.is_array()) return false;
      for (const Json& e : list) {
        if (!e.is_object() || e.size() != 1) return false;
        const bool special = e.contains("SpecialToken");
        const Json& body = special ? e["SpecialToken"] : e.value("Sequence", Json());
        if (!body.is_object() || !body.contains("id") || !body["id"].is_string()) return false;
        const int64_t type_id =
            body.contains("type_id") && body["type_id"].is_number_integer()
                ? body["type_id"].get<int64_t>()
                : 0;
        const std::string id = body["id"].get<std::string>();
        out->emplace_back(special ? 'S' : id == "B" ? 'B' : 'A', id, type_id);
      }
      return true;
    };
    std::vector<std::tuple<char, std::string, int64_t>> single, pair;
    const std::string kExpected =
        "must be BERT's template ([CLS]:0 $A:0 [SEP]:0, and $B:1 [SEP]:1 after it for pairs)";
    if (!entries(p.value("single", Json()), &single) || single.size() != 3 ||
        std::get<0>(single[0]) != 'S' || std::get<0>(single[1]) != 'A' ||
        std::get<0>(single[2]) != 'S' || std::get<2>(single[0]) != 0 ||
        std::get<2>(single[1]) != 0 || std::get<2>(single[2]) != 0) {
      return UnsupportedFieldError("post_processor.single", kExpected);
    }
    const std::string cls = std::get<1>(single[0]), sep = std::get<1>(single[2]);
    if (!entries(p.value("pair", Json()), &pair) || pair.size() != 5 ||
        pair[0] != single[0] || pair[1] != single[1] || pair[2] != single[2] ||
        std::get<0>(pair[3]) != 'B' || std::get<2>(pair[3]) != 1 ||
        std::get<0>(pair[4]) != 'S' || std::get<1>(pair[4]) != sep ||
        std::get<2>(pair[4]) != 1) {
      return UnsupportedFieldError("post_processor.pair", kExpected);
    }
    auto specials = p.find("special_tokens");
    for (auto [name, id] : {std::pair<const std::string*, int32_t*>{&cls, &t_.cls_id_},
                            {&sep, &t_.sep_id_}}) {
      const std::string where = absl::StrCat("post_processor.special_tokens[\"", *name, "\"]");
      if (specials == p.end() || !specials->is_object() || !specials->contains(*name)) {
        return InvalidFieldError(where, "missing");
      }
      const Json& entry = (*specials)[*name];
      const Json ids = entry.is_object() ? entry.value("ids", Json()) : Json();
      if (!ids.is_array() || ids.size() != 1 || !ids[0].is_number_unsigned() ||
          ids[0].get<uint64_t>() > uint64_t(std::numeric_limits<int32_t>::max())) {
        return UnsupportedFieldError(absl::StrCat(where, ".ids"), "must be exactly one id");
      }
      *id = static_cast<int32_t>(ids[0].get<uint64_t>());
    }
    return absl::OkStatus();
  }

  // What the added tokens are read against.
  const std::unordered_map<std::string, int32_t>& Vocabulary() const override { return t_.vocab_; }
  int64_t VocabularySize() const override { return static_cast<int64_t>(t_.vocab_.size()); }
  std::string Normalize(absl::string_view text) const override { return t_.Normalize(text); }

  WordPieceTokenizer& t_;
};

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::LoadVocabTxt(
    const std::string& path, const WordPieceOptions& options) {
  return ParseTokenizerFile(
      path, [&](absl::string_view contents) { return ParseVocabTxt(contents, options); });
}

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::LoadTokenizerJson(
    const std::string& path) {
  return ParseTokenizerFile(path, ParseTokenizerJson);
}

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::ParseVocabTxt(
    absl::string_view contents, const WordPieceOptions& options) {
  if (options.max_input_chars_per_word < 1) {
    return InvalidFieldError("max_input_chars_per_word",
                             absl::StrCat(options.max_input_chars_per_word, " must be at least 1"));
  }
  std::unique_ptr<WordPieceTokenizer> t(new WordPieceTokenizer);
  // As the tokenizers library's WordPiece::read_file: lines split on '\n', each trimmed of
  // trailing whitespace, the id a line's index; a final newline adds no empty token.
  int32_t index = 0;
  for (size_t begin = 0; begin < contents.size(); ++index) {
    size_t end = contents.find('\n', begin);
    if (end == absl::string_view::npos) end = contents.size();
    absl::string_view line = contents.substr(begin, end - begin);
    begin = end + 1;
    if (!IsValidUtf8(line)) {
      return InvalidFieldError(absl::StrCat("vocab.txt line ", index + 1), "is not valid UTF-8");
    }
    // Trailing White_Space trimmed (CR of CRLF files included).
    std::string token(line.substr(0, TrailingWhiteSpaceStart(line)));
    t->vocab_[token] = index;
    t->vocab_r_[index] = std::move(token);
    if (index == std::numeric_limits<int32_t>::max()) {
      return InvalidFieldError("vocab.txt", "too many lines");
    }
  }
  t->size_ = index;
  for (auto [name, id] : {std::pair<const std::string*, int32_t*>{&options.unk_token, &t->unk_id_},
                          {&options.cls_token, &t->cls_id_},
                          {&options.sep_token, &t->sep_id_}}) {
    auto it = t->vocab_.find(*name);
    if (it == t->vocab_.end()) {
      return InvalidFieldError("vocab.txt",
                               absl::StrCat("'", *name, "' is not in the vocabulary"));
    }
    *id = it->second;
  }
  t->continuing_subword_prefix_ = options.continuing_subword_prefix;
  t->max_input_chars_per_word_ = static_cast<size_t>(options.max_input_chars_per_word);
  t->pad_token_ = options.pad_token;
  t->mask_token_ = options.mask_token;
  NormalizerStep bert;
  bert.kind = NormalizerStep::Kind::kBert;
  bert.clean_text = options.clean_text;
  bert.handle_chinese_chars = options.handle_chinese_chars;
  bert.lowercase = options.lowercase;
  bert.strip_accents = options.strip_accents.value_or(options.lowercase);
  t->normalizers_.push_back(bert);
  t->pre_tokenizers_.push_back(PreTokenizerStep::kBert);
  absl::StatusOr<HfAddedTokens> added = HfAddedTokens::Parse(
      SpecialAddedTokens(t->vocab_, options), t->vocab_, static_cast<int64_t>(t->vocab_.size()),
      [&](absl::string_view content) { return t->Normalize(content); });
  if (!added.ok()) return added.status();
  t->added_ = *std::move(added);
  return t;
}

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::ParseTokenizerJson(
    absl::string_view json) {
  absl::StatusOr<Json> root = ParseTokenizerJsonObject(json);
  if (!root.ok()) return root.status();
  std::unique_ptr<WordPieceTokenizer> t(new WordPieceTokenizer);
  t->pad_token_ = "[PAD]";
  t->mask_token_ = "[MASK]";
  WordPieceJsonParser parser(t.get());
  if (absl::Status s = parser.Run(*root); !s.ok()) return s;
  t->size_ = std::max(t->size_, t->added_.max_id() + 1);
  return t;
}

int32_t WordPieceTokenizer::TokenToId(absl::string_view token) const {
  if (int32_t id = added_.Find(token); id >= 0) return id;
  auto it = vocab_.find(std::string(token));
  return it == vocab_.end() ? -1 : it->second;
}

std::string WordPieceTokenizer::IdToToken(int32_t id) const {
  std::string content = added_.Content(id);
  if (!content.empty()) return content;
  auto it = vocab_r_.find(id);
  return it == vocab_r_.end() ? "" : it->second;
}

std::string WordPieceTokenizer::Normalize(absl::string_view text) const {
  using Kind = NormalizerStep::Kind;
  std::string s(text);
  for (const NormalizerStep& step : normalizers_) {
    switch (step.kind) {
      case Kind::kBert:
        s = BertNormalize(s, step);
        break;
      case Kind::kLowercase:
        s = LowercasePerCharacter(s);
        break;
      case Kind::kStripAccents:
        s = StripAccents(s, /*bert=*/false);
        break;
      case Kind::kNormalizationForm:
        s = NormalizeUnicode(s, step.form);
        break;
    }
  }
  return s;
}

void WordPieceTokenizer::PreTokenize(std::string text, std::vector<std::string>* words) const {
  std::vector<std::string> current;
  if (!text.empty()) current.push_back(std::move(text));
  for (PreTokenizerStep step : pre_tokenizers_) {
    std::vector<std::string> next;
    for (const std::string& s : current) {
      size_t begin = 0;
      for (size_t i = 0; i < s.size();) {
        size_t len;
        const uint32_t cp = DecodeUtf8At(s, i, &len);
        if (IsUnicodeWhiteSpace(cp)) {  // removed
          if (i > begin) next.push_back(s.substr(begin, i - begin));
          begin = i + len;
        } else if (step == PreTokenizerStep::kBert && IsBertPunctuation(cp)) {  // isolated
          if (i > begin) next.push_back(s.substr(begin, i - begin));
          next.push_back(s.substr(i, len));
          begin = i + len;
        }
        i += len;
      }
      if (s.size() > begin) next.push_back(s.substr(begin));
    }
    current = std::move(next);
  }
  for (std::string& w : current) words->push_back(std::move(w));
}

// The library's WordPiece::tokenize: greedy longest-match-first.
void WordPieceTokenizer::EncodeWord(absl::string_view word, std::vector<int32_t>* ids) const {
  size_t chars = 0;
  for (size_t i = 0; i < word.size(); ++i) {
    if ((static_cast<unsigned char>(word[i]) & 0xC0) != 0x80) ++chars;
  }
  if (chars > max_input_chars_per_word_) {
    ids->push_back(unk_id_);
    return;
  }
  const size_t first = ids->size();
  std::string candidate;
  for (size_t start = 0; start < word.size();) {
    size_t end = word.size();
    int32_t found = -1;
    while (start < end) {
      candidate.clear();
      if (start > 0) candidate = continuing_subword_prefix_;
      candidate.append(word.data() + start, end - start);
      if (auto it = vocab_.find(candidate); it != vocab_.end()) {
        found = it->second;
        break;
      }
      end = Utf8CharStartBefore(word, end);  // the last character dropped
    }
    if (found < 0) {  // no segmentation: the whole word is unknown
      ids->resize(first);
      ids->push_back(unk_id_);
      return;
    }
    ids->push_back(found);
    start = end;
  }
}

absl::StatusOr<std::vector<int32_t>> WordPieceTokenizer::Encode(absl::string_view text) const {
  return added_.Encode(
      text, [this](absl::string_view s) { return Normalize(s); },
      [this](HfAddedTokens::Piece piece, std::vector<int32_t>* ids) {
        std::vector<std::string> words;
        PreTokenize(std::move(piece.text), &words);
        for (const std::string& word : words) EncodeWord(word, ids);
        return absl::OkStatus();
      });
}

WordPieceTokenizer::Encoding WordPieceTokenizer::Single(absl::Span<const int32_t> a) const {
  Encoding e;
  e.ids.reserve(a.size() + 2);
  e.ids.push_back(cls_id_);
  e.ids.insert(e.ids.end(), a.begin(), a.end());
  e.ids.push_back(sep_id_);
  e.type_ids.assign(e.ids.size(), 0);
  return e;
}

WordPieceTokenizer::Encoding WordPieceTokenizer::Pair(absl::Span<const int32_t> a,
                                                      absl::Span<const int32_t> b) const {
  Encoding e = Single(a);
  e.ids.insert(e.ids.end(), b.begin(), b.end());
  e.ids.push_back(sep_id_);
  e.type_ids.resize(e.ids.size(), 1);
  return e;
}

}  // namespace embedserve::tokenizers
