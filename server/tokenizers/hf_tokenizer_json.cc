// HfTokenizerJson: tokenizer.json parsing and checks (HfTokenizerJsonParser), and the encoder
// (added-token split, normalizer, pre-tokenizer, BPE by merge rank with byte fallback).
#include "server/tokenizers/hf_tokenizer_json.h"

#include <algorithm>
#include <queue>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/tokenizers/tokenizer_loading.h"
#include "server/tokenizers/utf8.h"

namespace embedserve::tokenizers {
namespace {

using Json = nlohmann::json;

// The literal of a {"String": "..."} pattern; a {"Regex": "..."} one is not implemented.
absl::Status LiteralPattern(const Json& object, const std::string& where, std::string* out) {
  auto it = object.find("pattern");
  const std::string field = absl::StrCat(where, ".pattern");
  if (it == object.end() || !it->is_object() || it->size() != 1) {
    return InvalidFieldError(field, "must be {\"String\": ...} or {\"Regex\": ...}");
  }
  if (it->contains("Regex")) {
    return UnsupportedFieldError(field,
                                 "Regex patterns are not implemented (only String patterns)");
  }
  auto s = it->find("String");
  if (s == it->end() || !s->is_string()) {
    return InvalidFieldError(field, "must be {\"String\": ...} or {\"Regex\": ...}");
  }
  *out = s->get<std::string>();
  if (out->empty()) {
    return UnsupportedFieldError(field, "an empty String pattern is not implemented");
  }
  return absl::OkStatus();
}

// Rust's regex `\w`: exact for ASCII and Latin-1; beyond, an approximation (whitespace,
// general and CJK punctuation and emoji are not word characters, everything else is). Only
// added tokens with single_word=true use it; Gemma-family files have none.
bool IsApproximateWordChar(uint32_t cp) {
  if (cp < 0x80) {
    return (cp >= '0' && cp <= '9') || (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') ||
           cp == '_';
  }
  if (cp < 0x100)
    return cp == 0xAA || cp == 0xB5 || cp == 0xBA || (cp >= 0xC0 && cp != 0xD7 && cp != 0xF7);
  if (IsUnicodeWhiteSpace(cp)) return false;
  if (cp >= 0x2000 && cp <= 0x206F) {
    return cp == 0x200C || cp == 0x200D || cp == 0x203F || cp == 0x2040 || cp == 0x2054;
  }
  if (cp >= 0x3000 && cp <= 0x303F) {
    return (cp >= 0x3005 && cp <= 0x3007) || (cp >= 0x3021 && cp <= 0x302F) ||
           (cp >= 0x3031 && cp <= 0x3035) || (cp >= 0x3038 && cp <= 0x303C);
  }
  if (cp >= 0x1F000 && cp <= 0x1FAFF) return false;
  return true;
}

// (offsets, is_match) covering `s`: the non-overlapping occurrences of `pattern` and the
// text between them, as tokenizers' Pattern::find_matches gives them.
std::vector<std::pair<std::pair<size_t, size_t>, bool>> FindLiteral(absl::string_view s,
                                                                    absl::string_view pattern) {
  std::vector<std::pair<std::pair<size_t, size_t>, bool>> out;
  if (s.empty()) {
    out.push_back({{0, 0}, false});
    return out;
  }
  size_t prev = 0;
  for (size_t at = s.find(pattern); at != absl::string_view::npos;
       at = s.find(pattern, at + pattern.size())) {
    if (at != prev) out.push_back({{prev, at}, false});
    out.push_back({{at, at + pattern.size()}, true});
    prev = at + pattern.size();
  }
  if (prev != s.size()) out.push_back({{prev, s.size()}, false});
  return out;
}

uint64_t PairKey(int32_t left, int32_t right) {
  return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
}

}  // namespace

// Fills an HfTokenizerJson from the parsed document; every check names the JSON field.
class HfTokenizerJsonParser : public TokenizerJsonReader {
 public:
  explicit HfTokenizerJsonParser(HfTokenizerJson* t) : t_(*t) {}

  absl::Status Run(const Json& root) {
    if (auto v = root.find("version"); v != root.end() && !v->is_null()) {
      if (!v->is_string() || v->get<std::string>() != "1.0") {
        return UnsupportedFieldError(
            "version", absl::StrCat("only version \"1.0\" is known, not ", v->dump()));
      }
    }
    if (absl::Status s = Read(root, &t_.added_, IsApproximateWordChar); !s.ok()) return s;
    int64_t max_id = t_.added_.max_id();
    for (const auto& [piece, id] : t_.vocab_) max_id = std::max<int64_t>(max_id, id);
    t_.size_ = static_cast<int>(max_id + 1);
    return absl::OkStatus();
  }

 private:
  absl::Status Model(const Json& m) override {
    if (auto type = m.find("type"); type != m.end()) {
      if (!type->is_string()) return InvalidFieldError("model.type", "must be a string");
      if (type->get<std::string>() != "BPE") {
        return UnsupportedFieldError("model.type", absl::StrCat("'", type->get<std::string>(),
                                                                "' is not implemented (only BPE)"));
      }
    } else if (!m.contains("merges")) {
      return InvalidFieldError("model.type",
                               "missing, and the model has no merges (not a BPE model)");
    }
    if (auto d = m.find("dropout"); d != m.end() && !d->is_null()) {
      if (!d->is_number()) return InvalidFieldError("model.dropout", "must be a number or null");
      if (d->get<double>() != 0.0) {
        return UnsupportedFieldError("model.dropout",
                                     "BPE dropout (random merges) is not implemented");
      }
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      auto it = m.find(key);
      if (it == m.end() || it->is_null()) continue;
      if (!it->is_string()) {
        return InvalidFieldError(absl::StrCat("model.", key), "must be a string or null");
      }
      if (!it->get<std::string>().empty()) {
        return UnsupportedFieldError(absl::StrCat("model.", key),
                                     "is not implemented (must be null)");
      }
    }
    for (auto [key, field] : {std::pair<const char*, bool*>{"fuse_unk", &t_.fuse_unk_},
                              {"byte_fallback", &t_.byte_fallback_},
                              {"ignore_merges", &t_.ignore_merges_}}) {
      if (absl::Status s = ReadOptionalBool(m, key, "model", field); !s.ok()) return s;
    }

    auto vocab = m.find("vocab");
    if (vocab == m.end() || !vocab->is_object()) {
      return InvalidFieldError("model.vocab", "missing (must be an object of piece -> id)");
    }
    if (absl::Status s = ForEachVocabEntry(*vocab,
                                           [&](const std::string& piece, int32_t id) {
                                             t_.vocab_.emplace(piece, id);
                                             t_.vocab_r_.emplace(id, piece);
                                           });
        !s.ok()) {
      return s;
    }
    FindBytePieceIds(t_.vocab_, absl::MakeSpan(t_.byte_ids_));
    if (auto unk = m.find("unk_token"); unk != m.end() && !unk->is_null()) {
      if (!unk->is_string()) {
        return InvalidFieldError("model.unk_token", "must be a string or null");
      }
      auto it = t_.vocab_.find(unk->get<std::string>());
      if (it == t_.vocab_.end()) {
        return InvalidFieldError(
            "model.unk_token",
            absl::StrCat("'", unk->get<std::string>(), "' is not in model.vocab"));
      }
      t_.unk_id_ = it->second;
    }

    auto merges = m.find("merges");
    if (merges == m.end() || !merges->is_array()) {
      return InvalidFieldError("model.merges", "missing (must be an array)");
    }
    uint32_t rank = 0;
    for (size_t i = 0; i < merges->size(); ++i) {
      const Json& merge = (*merges)[i];
      const std::string where = absl::StrCat("model.merges[", i, "]");
      std::string left, right;
      if (merge.is_string()) {
        const std::string line = merge.get<std::string>();
        if (absl::StartsWith(line, "#version")) continue;  // a merges.txt header line
        const size_t space = line.find(' ');
        if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
          return InvalidFieldError(
              where, absl::StrCat("'", line, "' must be two pieces separated by one space"));
        }
        left = line.substr(0, space);
        right = line.substr(space + 1);
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
                 merge[1].is_string()) {
        left = merge[0].get<std::string>();
        right = merge[1].get<std::string>();
      } else {
        return InvalidFieldError(where, "must be a string \"a b\" or a pair [\"a\", \"b\"]");
      }
      int32_t ids[3];
      const std::string pieces[3] = {left, right, left + right};
      for (int k = 0; k < 3; ++k) {
        auto it = t_.vocab_.find(pieces[k]);
        if (it == t_.vocab_.end()) {
          return InvalidFieldError(where, absl::StrCat("'", pieces[k], "' is not in model.vocab"));
        }
        ids[k] = it->second;
      }
      // A pair listed twice keeps its last rank, as the library's map does.
      t_.merges_[PairKey(ids[0], ids[1])] = {rank++, ids[2]};
    }
    return absl::OkStatus();
  }

  absl::Status Normalizer(const Json& n, const std::string& where,
                          const std::string& type) override {
    HfTokenizerJson::NormalizerStep step;
    if (type == "Replace") {
      step.kind = HfTokenizerJson::NormalizerStep::Kind::kReplace;
      if (absl::Status s = LiteralPattern(n, where, &step.pattern); !s.ok()) return s;
      if (absl::Status s = ReadRequiredString(n, "content", where, &step.content); !s.ok()) {
        return s;
      }
    } else if (type == "Prepend") {
      step.kind = HfTokenizerJson::NormalizerStep::Kind::kPrepend;
      if (absl::Status s = ReadRequiredString(n, "prepend", where, &step.content); !s.ok()) {
        return s;
      }
    } else {
      return UnsupportedFieldError(absl::StrCat(where, ".type"),
                                   absl::StrCat("normalizer '", type,
                                                "' is not implemented (Replace, "
                                                "Prepend and Sequence are)"));
    }
    t_.normalizer_.push_back(std::move(step));
    return absl::OkStatus();
  }

  absl::Status PreTokenizer(const Json& p, const std::string& where,
                            const std::string& type) override {
    if (type != "Split") {
      return UnsupportedFieldError(absl::StrCat(where, ".type"),
                                   absl::StrCat("pre-tokenizer '", type,
                                                "' is not implemented (Split "
                                                "with a String pattern and Sequence are)"));
    }
    HfTokenizerJson::SplitStep step;
    if (absl::Status s = LiteralPattern(p, where, &step.pattern); !s.ok()) return s;
    std::string behavior;
    if (absl::Status s = ReadRequiredString(p, "behavior", where, &behavior); !s.ok()) return s;
    using B = HfTokenizerJson::SplitBehavior;
    static const std::pair<const char*, B> kBehaviors[] = {
        {"Removed", B::kRemoved},
        {"Isolated", B::kIsolated},
        {"MergedWithPrevious", B::kMergedWithPrevious},
        {"MergedWithNext", B::kMergedWithNext},
        {"Contiguous", B::kContiguous}};
    bool known = false;
    for (const auto& [name, value] : kBehaviors) {
      if (behavior == name) {
        step.behavior = value;
        known = true;
      }
    }
    if (!known) {
      return InvalidFieldError(absl::StrCat(where, ".behavior"),
                               absl::StrCat("'", behavior,
                                            "' is not a split behavior (Removed, Isolated, "
                                            "MergedWithPrevious, MergedWithNext, Contiguous)"));
    }
    if (absl::Status s = ReadOptionalBool(p, "invert", where, &step.invert); !s.ok()) return s;
    t_.pre_tokenizer_.push_back(std::move(step));
    return absl::OkStatus();
  }

  // What the added tokens are read against.
  const std::unordered_map<std::string, int32_t>& Vocabulary() const override { return t_.vocab_; }
  int64_t VocabularySize() const override { return static_cast<int64_t>(t_.vocab_.size()); }
  std::string Normalize(absl::string_view text) const override { return t_.Normalize(text); }

  HfTokenizerJson& t_;
};

absl::StatusOr<std::unique_ptr<HfTokenizerJson>> HfTokenizerJson::Load(const std::string& path) {
  return ParseTokenizerFile(path, Parse);
}

absl::StatusOr<std::unique_ptr<HfTokenizerJson>> HfTokenizerJson::Parse(absl::string_view json) {
  absl::StatusOr<Json> root = ParseTokenizerJsonObject(json);
  if (!root.ok()) return root.status();
  std::unique_ptr<HfTokenizerJson> t(new HfTokenizerJson);
  t->byte_ids_.fill(-1);
  HfTokenizerJsonParser parser(t.get());
  if (absl::Status s = parser.Run(*root); !s.ok()) return s;
  return t;
}

int32_t HfTokenizerJson::TokenToId(absl::string_view token) const {
  if (int32_t id = added_.Find(token); id >= 0) return id;
  auto it = vocab_.find(std::string(token));
  return it == vocab_.end() ? -1 : it->second;
}

std::string HfTokenizerJson::IdToToken(int32_t id) const {
  std::string content = added_.Content(id);  // never empty for an added token
  if (!content.empty()) return content;
  auto it = vocab_r_.find(id);
  return it == vocab_r_.end() ? "" : it->second;
}

std::string HfTokenizerJson::Normalize(absl::string_view text) const {
  std::string s(text);
  for (const NormalizerStep& step : normalizer_) {
    if (step.kind == NormalizerStep::Kind::kPrepend) {
      if (!s.empty()) s.insert(0, step.content);
      continue;
    }
    std::string out;
    size_t prev = 0;
    for (size_t at = s.find(step.pattern); at != std::string::npos;
         at = s.find(step.pattern, prev)) {
      out.append(s, prev, at - prev);
      out += step.content;
      prev = at + step.pattern.size();
    }
    out.append(s, prev, std::string::npos);
    s = std::move(out);
  }
  return s;
}

std::vector<std::string> HfTokenizerJson::PreTokenize(std::string text) const {
  std::vector<std::string> words;
  if (!text.empty()) words.push_back(std::move(text));
  for (const SplitStep& step : pre_tokenizer_) {
    std::vector<std::string> next;
    for (const std::string& word : words) {
      auto matches = FindLiteral(word, step.pattern);
      if (step.invert) {
        for (auto& m : matches) m.second = !m.second;
      }
      // (offsets, remove) per the behavior, as NormalizedString::split computes them.
      std::vector<std::pair<std::pair<size_t, size_t>, bool>> splits;
      bool previous_match = false;
      switch (step.behavior) {
        case SplitBehavior::kIsolated:
          for (const auto& [offsets, is_match] : matches) splits.push_back({offsets, false});
          break;
        case SplitBehavior::kRemoved:
          splits = matches;
          break;
        case SplitBehavior::kContiguous:
          for (const auto& [offsets, is_match] : matches) {
            if (is_match == previous_match && !splits.empty()) {
              splits.back().first.second = offsets.second;
            } else {
              splits.push_back({offsets, false});
            }
            previous_match = is_match;
          }
          break;
        case SplitBehavior::kMergedWithPrevious:
          for (const auto& [offsets, is_match] : matches) {
            if (is_match && !previous_match && !splits.empty()) {
              splits.back().first.second = offsets.second;
            } else {
              splits.push_back({offsets, false});
            }
            previous_match = is_match;
          }
          break;
        case SplitBehavior::kMergedWithNext:
          for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
            if (it->second && !previous_match && !splits.empty()) {
              splits.back().first.first = it->first.first;
            } else {
              splits.push_back({it->first, false});
            }
            previous_match = it->second;
          }
          std::reverse(splits.begin(), splits.end());
          break;
      }
      for (const auto& [offsets, remove] : splits) {
        if (remove || offsets.second <= offsets.first) continue;
        next.push_back(word.substr(offsets.first, offsets.second - offsets.first));
      }
    }
    words = std::move(next);
  }
  return words;
}

// tokenizers' BPE::merge_word and Word::merge_all (no dropout).
void HfTokenizerJson::EncodeWord(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(std::string(word)); it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int64_t prev, next;
    size_t len;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id, size_t len) {
    const int64_t index = static_cast<int64_t>(symbols.size());
    if (index > 0) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1, len});
  };
  bool have_unk = false;
  size_t unk_len = 0;
  for (size_t i = 0; i < word.size();) {
    const size_t n =
        std::min(Utf8LengthOfLead(static_cast<unsigned char>(word[i])), word.size() - i);
    const std::string ch(word.substr(i, n));
    i += n;
    if (auto it = vocab_.find(ch); it != vocab_.end()) {
      if (have_unk) {
        add(unk_id_, unk_len);
        have_unk = false;
      }
      add(it->second, n);
      continue;
    }
    if (byte_fallback_ && std::all_of(ch.begin(), ch.end(), [&](char b) {
          return byte_ids_[static_cast<unsigned char>(b)] >= 0;
        })) {
      // As the library does, a pending unknown stays pending behind these bytes.
      for (char b : ch) add(byte_ids_[static_cast<unsigned char>(b)], 1);
      continue;
    }
    if (unk_id_ < 0) continue;  // no unk token: the character is dropped
    if (have_unk && fuse_unk_) {
      unk_len += n;
    } else {
      if (have_unk) add(unk_id_, unk_len);
      have_unk = true;
      unk_len = n;
    }
  }
  if (have_unk) add(unk_id_, unk_len);

  struct Merge {
    uint32_t rank;
    size_t pos;
    int32_t new_id;
  };
  // Lowest rank first, then leftmost position.
  auto later = [](const Merge& a, const Merge& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::priority_queue<Merge, std::vector<Merge>, decltype(later)> queue(later);
  auto find = [&](int32_t left, int32_t right) { return merges_.find(PairKey(left, right)); };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (auto it = find(symbols[i].id, symbols[i + 1].id); it != merges_.end()) {
      queue.push({it->second.first, i, it->second.second});
    }
  }
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& current = symbols[top.pos];
    if (current.len == 0 || current.next == -1) continue;
    const size_t next_pos = static_cast<size_t>(current.next);
    const Symbol right = symbols[next_pos];
    auto target = find(current.id, right.id);
    if (target == merges_.end() || target->second.second != top.new_id) continue;  // stale
    current.id = top.new_id;
    current.len += right.len;
    current.next = right.next;
    symbols[next_pos].len = 0;
    if (right.next >= 0)
      symbols[static_cast<size_t>(right.next)].prev = static_cast<int64_t>(top.pos);
    if (current.prev >= 0) {
      const size_t prev = static_cast<size_t>(current.prev);
      if (auto it = find(symbols[prev].id, current.id); it != merges_.end()) {
        queue.push({it->second.first, prev, it->second.second});
      }
    }
    if (current.next >= 0) {
      if (auto it = find(current.id, symbols[static_cast<size_t>(current.next)].id);
          it != merges_.end()) {
        queue.push({it->second.first, top.pos, it->second.second});
      }
    }
  }
  for (const Symbol& s : symbols) {
    if (s.len != 0) ids->push_back(s.id);
  }
}

absl::StatusOr<std::vector<int32_t>> HfTokenizerJson::Encode(absl::string_view text) const {
  return added_.Encode(text, [this](absl::string_view s) { return Normalize(s); },
                       [this](HfAddedTokens::Piece piece, std::vector<int32_t>* ids) {
                         for (const std::string& word : PreTokenize(std::move(piece.text))) {
                           EncodeWord(word, ids);
                         }
                         return absl::OkStatus();
                       });
}

}  // namespace embedserve::tokenizers
