// HfTokenizerJson: tokenizer.json parsing and checks (HfTokenizerJsonParser), and the encoder
// (added-token split, normalizer, pre-tokenizer, BPE by merge rank with byte fallback).
#include "server/tokenizers/hf_tokenizer_json.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <limits>
#include <queue>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace embedserve::tokenizers {
namespace {

using Json = nlohmann::json;

absl::Status Invalid(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

absl::Status Unsupported(absl::string_view where, absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat(where, ": ", what));
}

// A key that may be absent or null (keeps *out), else must be a boolean.
absl::Status OptionalBool(const Json& object, const char* key, const std::string& where,
                          bool* out) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return Invalid(absl::StrCat(where, ".", key), "must be true or false");
  *out = it->get<bool>();
  return absl::OkStatus();
}

// A key that must be a string.
absl::Status RequiredString(const Json& object, const char* key, const std::string& where,
                            std::string* out) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) {
    return Invalid(absl::StrCat(where, ".", key), "must be a string");
  }
  *out = it->get<std::string>();
  return absl::OkStatus();
}

// The literal of a {"String": "..."} pattern; a {"Regex": "..."} one is not implemented.
absl::Status LiteralPattern(const Json& object, const std::string& where, std::string* out) {
  auto it = object.find("pattern");
  const std::string field = absl::StrCat(where, ".pattern");
  if (it == object.end() || !it->is_object() || it->size() != 1) {
    return Invalid(field, "must be {\"String\": ...} or {\"Regex\": ...}");
  }
  if (it->contains("Regex")) {
    return Unsupported(field, "Regex patterns are not implemented (only String patterns)");
  }
  auto s = it->find("String");
  if (s == it->end() || !s->is_string()) {
    return Invalid(field, "must be {\"String\": ...} or {\"Regex\": ...}");
  }
  *out = s->get<std::string>();
  if (out->empty()) return Unsupported(field, "an empty String pattern is not implemented");
  return absl::OkStatus();
}

// Length of the UTF-8 sequence starting at s[i] if it is valid (shortest form, no
// surrogates, at most U+10FFFF), else 0.
size_t ValidUtf8At(absl::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t n;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF)) {
    return 0;
  }
  return n;
}

bool IsValidUtf8(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = ValidUtf8At(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

size_t Utf8Len(unsigned char c) {
  if (c < 0x80) return 1;
  if (c < 0xE0) return 2;
  if (c < 0xF0) return 3;
  return 4;
}

uint32_t DecodeAt(absl::string_view s, size_t i, size_t n) {
  uint32_t cp = static_cast<unsigned char>(s[i]);
  if (n == 1) return cp;
  cp &= (n == 2) ? 0x1F : (n == 3) ? 0x0F : 0x07;
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return cp;
}

// The code point ending at s[end) (s valid UTF-8, end > 0).
uint32_t LastCodePoint(absl::string_view s, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return DecodeAt(s, start, end - start);
}

// Unicode White_Space (what Rust's regex `\s` matches).
bool IsSpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// Rust's regex `\w`: exact for ASCII and Latin-1; beyond, an approximation (whitespace,
// general and CJK punctuation and emoji are not word characters, everything else is). Only
// added tokens with single_word=true use it; Gemma-family files have none.
bool IsWordChar(uint32_t cp) {
  if (cp < 0x80) {
    return (cp >= '0' && cp <= '9') || (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') ||
           cp == '_';
  }
  if (cp < 0x100)
    return cp == 0xAA || cp == 0xB5 || cp == 0xBA || (cp >= 0xC0 && cp != 0xD7 && cp != 0xF7);
  if (IsSpace(cp)) return false;
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

// Start of the whitespace run that ends `s` (s.size() if none).
size_t TrailingSpaceStart(absl::string_view s) {
  size_t start = s.size();
  while (start > 0) {
    size_t prev = start - 1;
    while (prev > 0 && (static_cast<unsigned char>(s[prev]) & 0xC0) == 0x80) --prev;
    if (!IsSpace(DecodeAt(s, prev, start - prev))) break;
    start = prev;
  }
  return start;
}

// Length of the whitespace run that starts `s`.
size_t LeadingSpaceLength(absl::string_view s) {
  size_t end = 0;
  while (end < s.size()) {
    const size_t n = Utf8Len(static_cast<unsigned char>(s[end]));
    if (!IsSpace(DecodeAt(s, end, n))) break;
    end += n;
  }
  return end;
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
class HfTokenizerJsonParser {
 public:
  explicit HfTokenizerJsonParser(HfTokenizerJson* t) : t_(*t) {}

  absl::Status Run(const Json& root) {
    if (!root.is_object()) return Invalid("tokenizer.json", "the document must be a JSON object");
    if (auto v = root.find("version"); v != root.end() && !v->is_null()) {
      if (!v->is_string() || v->get<std::string>() != "1.0") {
        return Unsupported("version",
                           absl::StrCat("only version \"1.0\" is known, not ", v->dump()));
      }
    }
    auto model = root.find("model");
    if (model == root.end() || !model->is_object())
      return Invalid("model", "missing (must be an object)");
    if (absl::Status s = Model(*model); !s.ok()) return s;
    // The normalizer before the added tokens: normalized=true tokens match in normalized form.
    if (auto n = root.find("normalizer"); n != root.end()) {
      if (absl::Status s = Normalizer(*n, "normalizer"); !s.ok()) return s;
    }
    if (auto p = root.find("pre_tokenizer"); p != root.end()) {
      if (absl::Status s = PreTokenizer(*p, "pre_tokenizer"); !s.ok()) return s;
    }
    if (auto a = root.find("added_tokens"); a != root.end() && !a->is_null()) {
      if (absl::Status s = AddedTokens(*a); !s.ok()) return s;
    }
    int64_t max_id = -1;
    for (const auto& [piece, id] : t_.vocab_) max_id = std::max<int64_t>(max_id, id);
    if (!t_.added_.empty()) max_id = std::max<int64_t>(max_id, t_.added_.rbegin()->first);
    t_.size_ = static_cast<int>(max_id + 1);
    return absl::OkStatus();
  }

 private:
  absl::Status Model(const Json& m) {
    if (auto type = m.find("type"); type != m.end()) {
      if (!type->is_string()) return Invalid("model.type", "must be a string");
      if (type->get<std::string>() != "BPE") {
        return Unsupported("model.type", absl::StrCat("'", type->get<std::string>(),
                                                      "' is not implemented (only BPE)"));
      }
    } else if (!m.contains("merges")) {
      return Invalid("model.type", "missing, and the model has no merges (not a BPE model)");
    }
    if (auto d = m.find("dropout"); d != m.end() && !d->is_null()) {
      if (!d->is_number()) return Invalid("model.dropout", "must be a number or null");
      if (d->get<double>() != 0.0) {
        return Unsupported("model.dropout", "BPE dropout (random merges) is not implemented");
      }
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      auto it = m.find(key);
      if (it == m.end() || it->is_null()) continue;
      if (!it->is_string()) return Invalid(absl::StrCat("model.", key), "must be a string or null");
      if (!it->get<std::string>().empty()) {
        return Unsupported(absl::StrCat("model.", key), "is not implemented (must be null)");
      }
    }
    if (absl::Status s = OptionalBool(m, "fuse_unk", "model", &t_.fuse_unk_); !s.ok()) return s;
    if (absl::Status s = OptionalBool(m, "byte_fallback", "model", &t_.byte_fallback_); !s.ok())
      return s;
    if (absl::Status s = OptionalBool(m, "ignore_merges", "model", &t_.ignore_merges_); !s.ok())
      return s;

    auto vocab = m.find("vocab");
    if (vocab == m.end() || !vocab->is_object()) {
      return Invalid("model.vocab", "missing (must be an object of piece -> id)");
    }
    for (auto it = vocab->begin(); it != vocab->end(); ++it) {
      if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
          it.value().get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return Invalid("model.vocab",
                       absl::StrCat("the id of '", it.key(), "' must be an integer in [0, 2^31)"));
      }
      const int32_t id = static_cast<int32_t>(it.value().get<int64_t>());
      t_.vocab_.emplace(it.key(), id);
      t_.vocab_r_.emplace(id, it.key());
    }
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      auto it = t_.vocab_.find(name);
      t_.byte_ids_[b] = it == t_.vocab_.end() ? -1 : it->second;
    }
    if (auto unk = m.find("unk_token"); unk != m.end() && !unk->is_null()) {
      if (!unk->is_string()) return Invalid("model.unk_token", "must be a string or null");
      auto it = t_.vocab_.find(unk->get<std::string>());
      if (it == t_.vocab_.end()) {
        return Invalid("model.unk_token",
                       absl::StrCat("'", unk->get<std::string>(), "' is not in model.vocab"));
      }
      t_.unk_id_ = it->second;
    }

    auto merges = m.find("merges");
    if (merges == m.end() || !merges->is_array()) {
      return Invalid("model.merges", "missing (must be an array)");
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
          return Invalid(where,
                         absl::StrCat("'", line, "' must be two pieces separated by one space"));
        }
        left = line.substr(0, space);
        right = line.substr(space + 1);
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
                 merge[1].is_string()) {
        left = merge[0].get<std::string>();
        right = merge[1].get<std::string>();
      } else {
        return Invalid(where, "must be a string \"a b\" or a pair [\"a\", \"b\"]");
      }
      int32_t ids[3];
      const std::string pieces[3] = {left, right, left + right};
      for (int k = 0; k < 3; ++k) {
        auto it = t_.vocab_.find(pieces[k]);
        if (it == t_.vocab_.end()) {
          return Invalid(where, absl::StrCat("'", pieces[k], "' is not in model.vocab"));
        }
        ids[k] = it->second;
      }
      // A pair listed twice keeps its last rank, as the library's map does.
      t_.merges_[PairKey(ids[0], ids[1])] = {rank++, ids[2]};
    }
    return absl::OkStatus();
  }

  absl::Status Normalizer(const Json& n, const std::string& where) {
    if (n.is_null()) return absl::OkStatus();
    std::string type;
    if (!n.is_object()) return Invalid(where, "must be an object or null");
    if (absl::Status s = RequiredString(n, "type", where, &type); !s.ok()) return s;
    if (type == "Sequence") {
      auto list = n.find("normalizers");
      if (list == n.end() || !list->is_array()) {
        return Invalid(absl::StrCat(where, ".normalizers"), "must be an array");
      }
      for (size_t i = 0; i < list->size(); ++i) {
        absl::Status s = Normalizer((*list)[i], absl::StrCat(where, ".normalizers[", i, "]"));
        if (!s.ok()) return s;
      }
      return absl::OkStatus();
    }
    HfTokenizerJson::NormalizerStep step;
    if (type == "Replace") {
      step.kind = HfTokenizerJson::NormalizerStep::Kind::kReplace;
      if (absl::Status s = LiteralPattern(n, where, &step.pattern); !s.ok()) return s;
      if (absl::Status s = RequiredString(n, "content", where, &step.content); !s.ok()) return s;
    } else if (type == "Prepend") {
      step.kind = HfTokenizerJson::NormalizerStep::Kind::kPrepend;
      if (absl::Status s = RequiredString(n, "prepend", where, &step.content); !s.ok()) return s;
    } else {
      return Unsupported(absl::StrCat(where, ".type"),
                         absl::StrCat("normalizer '", type,
                                      "' is not implemented (Replace, "
                                      "Prepend and Sequence are)"));
    }
    t_.normalizer_.push_back(std::move(step));
    return absl::OkStatus();
  }

  absl::Status PreTokenizer(const Json& p, const std::string& where) {
    if (p.is_null()) return absl::OkStatus();
    std::string type;
    if (!p.is_object()) return Invalid(where, "must be an object or null");
    if (absl::Status s = RequiredString(p, "type", where, &type); !s.ok()) return s;
    if (type == "Sequence") {
      auto list = p.find("pretokenizers");
      if (list == p.end() || !list->is_array()) {
        return Invalid(absl::StrCat(where, ".pretokenizers"), "must be an array");
      }
      for (size_t i = 0; i < list->size(); ++i) {
        absl::Status s = PreTokenizer((*list)[i], absl::StrCat(where, ".pretokenizers[", i, "]"));
        if (!s.ok()) return s;
      }
      return absl::OkStatus();
    }
    if (type != "Split") {
      return Unsupported(absl::StrCat(where, ".type"),
                         absl::StrCat("pre-tokenizer '", type,
                                      "' is not implemented (Split "
                                      "with a String pattern and Sequence are)"));
    }
    HfTokenizerJson::SplitStep step;
    if (absl::Status s = LiteralPattern(p, where, &step.pattern); !s.ok()) return s;
    std::string behavior;
    if (absl::Status s = RequiredString(p, "behavior", where, &behavior); !s.ok()) return s;
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
      return Invalid(absl::StrCat(where, ".behavior"),
                     absl::StrCat("'", behavior,
                                  "' is not a split behavior (Removed, Isolated, "
                                  "MergedWithPrevious, MergedWithNext, Contiguous)"));
    }
    if (absl::Status s = OptionalBool(p, "invert", where, &step.invert); !s.ok()) return s;
    t_.pre_tokenizer_.push_back(std::move(step));
    return absl::OkStatus();
  }

  absl::Status AddedTokens(const Json& list) {
    if (!list.is_array()) return Invalid("added_tokens", "must be an array");
    // Ids as the library assigns them on load: the vocabulary's id when the content is a
    // piece, else the next id after the vocabulary (counted in entries), in file order. A
    // file whose ids disagree would encode differently from what it says: refused.
    int64_t next_id = static_cast<int64_t>(t_.vocab_.size());
    for (size_t i = 0; i < list.size(); ++i) {
      const Json& entry = list[i];
      const std::string where = absl::StrCat("added_tokens[", i, "]");
      if (!entry.is_object()) return Invalid(where, "must be an object");
      HfTokenizerJson::AddedToken token;
      if (absl::Status s = RequiredString(entry, "content", where, &token.content); !s.ok())
        return s;
      auto id_field = entry.find("id");
      if (id_field == entry.end() || !id_field->is_number_integer() ||
          id_field->get<int64_t>() < 0 ||
          id_field->get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return Invalid(absl::StrCat(where, ".id"), "must be an integer in [0, 2^31)");
      }
      if (absl::Status s = OptionalBool(entry, "special", where, &token.special); !s.ok()) return s;
      token.normalized = !token.special;
      for (auto [key, field] : {std::pair<const char*, bool*>{"single_word", &token.single_word},
                                {"lstrip", &token.lstrip},
                                {"rstrip", &token.rstrip},
                                {"normalized", &token.normalized}}) {
        if (absl::Status s = OptionalBool(entry, key, where, field); !s.ok()) return s;
      }
      if (token.content.empty()) continue;  // the library ignores empty tokens
      if (!IsValidUtf8(token.content))
        return Invalid(absl::StrCat(where, ".content"), "is not valid UTF-8");
      int64_t id;
      if (auto v = t_.vocab_.find(token.content); v != t_.vocab_.end()) {
        id = v->second;
      } else if (auto a = t_.added_by_content_.find(token.content);
                 a != t_.added_by_content_.end()) {
        id = a->second;
      } else {
        id = next_id++;
      }
      if (id != id_field->get<int64_t>()) {
        return Invalid(absl::StrCat(where, ".id"),
                       absl::StrCat("'", token.content, "' is given id ", id_field->get<int64_t>(),
                                    " but the tokenizers library would give it ", id,
                                    " (its id in model.vocab, or the next after the vocabulary)"));
      }
      t_.added_by_content_[token.content] = static_cast<int32_t>(id);
      t_.added_[static_cast<int32_t>(id)] = std::move(token);
    }
    std::unordered_map<std::string, int32_t> raw_patterns, normalized_patterns;
    for (const auto& [id, token] : t_.added_) {
      const std::string pattern = token.normalized ? t_.Normalize(token.content) : token.content;
      auto& patterns = token.normalized ? normalized_patterns : raw_patterns;
      if (pattern.empty()) continue;
      if (auto [it, inserted] = patterns.emplace(pattern, id); !inserted) {
        return Invalid("added_tokens", absl::StrCat("ids ", it->second, " and ", id,
                                                    " match the same text '", pattern, "'"));
      }
      (token.normalized ? t_.normalized_trie_ : t_.raw_trie_).Insert(pattern, id);
    }
    return absl::OkStatus();
  }

  HfTokenizerJson& t_;
};

void HfTokenizerJson::Trie::Insert(absl::string_view pattern, int32_t token) {
  int32_t node = 0;
  for (unsigned char c : pattern) {
    auto it = nodes[node].next.find(c);
    if (it == nodes[node].next.end()) {
      nodes.emplace_back();
      it = nodes[node].next.emplace(c, static_cast<int32_t>(nodes.size() - 1)).first;
    }
    node = it->second;
  }
  nodes[node].token = token;
}

absl::StatusOr<std::unique_ptr<HfTokenizerJson>> HfTokenizerJson::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  absl::StatusOr<std::unique_ptr<HfTokenizerJson>> t = Parse(buffer.str());
  if (!t.ok()) {
    return absl::Status(t.status().code(), absl::StrCat(path, ": ", t.status().message()));
  }
  return t;
}

absl::StatusOr<std::unique_ptr<HfTokenizerJson>> HfTokenizerJson::Parse(absl::string_view json) {
  const Json root = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return Invalid("tokenizer.json", "not valid JSON");
  std::unique_ptr<HfTokenizerJson> t(new HfTokenizerJson);
  t->byte_ids_.fill(-1);
  HfTokenizerJsonParser parser(t.get());
  if (absl::Status s = parser.Run(root); !s.ok()) return s;
  return t;
}

int32_t HfTokenizerJson::TokenToId(absl::string_view token) const {
  const std::string key(token);
  if (auto it = added_by_content_.find(key); it != added_by_content_.end()) return it->second;
  if (auto it = vocab_.find(key); it != vocab_.end()) return it->second;
  return -1;
}

std::string HfTokenizerJson::IdToToken(int32_t id) const {
  if (auto it = added_.find(id); it != added_.end()) return it->second.content;
  if (auto it = vocab_r_.find(id); it != vocab_r_.end()) return it->second;
  return "";
}

bool HfTokenizerJson::IsSpecialToken(int32_t id) const {
  auto it = added_.find(id);
  return it != added_.end() && it->second.special;
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

// tokenizers' AddedVocabulary::find_matches on each piece not yet a token; empty text pieces
// are dropped, as PreTokenizedString::split does.
void HfTokenizerJson::SplitAddedTokens(const Trie& trie, std::vector<Piece>* pieces) const {
  if (trie.empty()) {
    pieces->erase(std::remove_if(pieces->begin(), pieces->end(),
                                 [](const Piece& p) { return p.token < 0 && p.text.empty(); }),
                  pieces->end());
    return;
  }
  std::vector<Piece> out;
  for (Piece& piece : *pieces) {
    if (piece.token >= 0) {
      out.push_back(std::move(piece));
      continue;
    }
    const absl::string_view s = piece.text;
    auto emit = [&](size_t begin, size_t end, int32_t token) {
      if (token < 0 && end <= begin) return;
      out.push_back({std::string(s.substr(begin, end - begin)), token});
    };
    size_t start_offset = 0;
    size_t search = 0;
    while (search < s.size()) {
      // Leftmost-longest: the first position where a token starts, the longest one there.
      size_t match_start = s.size(), match_end = 0;
      int32_t token = -1;
      for (size_t at = search; at < s.size() && token < 0; ++at) {
        int32_t node = 0;
        for (size_t k = at; k < s.size(); ++k) {
          auto it = trie.nodes[node].next.find(static_cast<unsigned char>(s[k]));
          if (it == trie.nodes[node].next.end()) break;
          node = it->second;
          if (trie.nodes[node].token >= 0) {
            token = trie.nodes[node].token;
            match_start = at;
            match_end = k + 1;
          }
        }
      }
      if (token < 0) break;
      search = match_end;
      const AddedToken& added = added_.at(token);
      size_t start = match_start, stop = match_end;
      if (added.single_word) {
        const bool space_before = start == 0 || !IsWordChar(LastCodePoint(s, start));
        const bool space_after =
            stop == s.size() ||
            !IsWordChar(DecodeAt(s, stop, Utf8Len(static_cast<unsigned char>(s[stop]))));
        if (!space_before || !space_after) continue;
      }
      if (added.lstrip) start = std::max(TrailingSpaceStart(s.substr(0, start)), start_offset);
      if (added.rstrip) stop += LeadingSpaceLength(s.substr(stop));
      if (start_offset < start) emit(start_offset, start, -1);
      out.push_back({std::string(s.substr(start, stop - start)), token});
      start_offset = stop;
    }
    if (start_offset < s.size()) emit(start_offset, s.size(), -1);
  }
  *pieces = std::move(out);
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
    const size_t n = std::min(Utf8Len(static_cast<unsigned char>(word[i])), word.size() - i);
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
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("text is not valid UTF-8");
  std::vector<Piece> pieces;
  pieces.push_back({std::string(text), -1});
  SplitAddedTokens(raw_trie_, &pieces);
  for (Piece& piece : pieces) {
    if (piece.token < 0) piece.text = Normalize(piece.text);
  }
  SplitAddedTokens(normalized_trie_, &pieces);
  std::vector<int32_t> ids;
  for (Piece& piece : pieces) {
    if (piece.token >= 0) {
      ids.push_back(piece.token);
      continue;
    }
    for (const std::string& word : PreTokenize(std::move(piece.text))) EncodeWord(word, &ids);
  }
  return ids;
}

}  // namespace embedserve::tokenizers
