// HfAddedTokens (see hf_added_tokens.h): reading added_tokens with the library's id rules,
// and the added-token split around normalization (AddedVocabulary::find_matches).
#include "server/tokenizers/hf_added_tokens.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/tokenizers/tokenizer_loading.h"
#include "server/tokenizers/utf8.h"
#include "unicode/uchar.h"

namespace embedserve::tokenizers {

using Json = nlohmann::json;

bool HfAddedTokens::IsUnicodeWordCharacter(uint32_t cp) {
  if (cp < 0x80) {
    return (cp >= '0' && cp <= '9') || (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') ||
           cp == '_';
  }
  if (u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_ALPHABETIC) ||
      u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_JOIN_CONTROL)) {
    return true;
  }
  const int8_t type = u_charType(static_cast<UChar32>(cp));
  return type == U_NON_SPACING_MARK || type == U_ENCLOSING_MARK ||
         type == U_COMBINING_SPACING_MARK || type == U_DECIMAL_DIGIT_NUMBER ||
         type == U_CONNECTOR_PUNCTUATION;
}

absl::StatusOr<HfAddedTokens> HfAddedTokens::Parse(
    const Json& list, const std::unordered_map<std::string, int32_t>& vocab, int64_t vocab_size,
    const std::function<std::string(absl::string_view)>& normalize,
    WordCharacterTest is_word_character) {
  HfAddedTokens added;
  added.is_word_character_ = is_word_character;
  if (list.is_null()) return added;
  if (!list.is_array()) return InvalidFieldError("added_tokens", "must be an array");
  // Ids as the library assigns them on load: the vocabulary's id when the content is a
  // piece, else the next id after the vocabulary, in file order. A file whose ids disagree
  // would encode differently from what it says: refused.
  int64_t next_id = vocab_size;
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& entry = list[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!entry.is_object()) return InvalidFieldError(where, "must be an object");
    Token token;
    if (absl::Status s = ReadRequiredString(entry, "content", where, &token.content); !s.ok())
      return s;
    auto id_field = entry.find("id");
    if (id_field == entry.end() || !id_field->is_number_integer() ||
        id_field->get<int64_t>() < 0 ||
        id_field->get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return InvalidFieldError(absl::StrCat(where, ".id"), "must be an integer in [0, 2^31)");
    }
    if (absl::Status s = ReadOptionalBool(entry, "special", where, &token.special); !s.ok())
      return s;
    token.normalized = !token.special;
    for (auto [key, field] : {std::pair<const char*, bool*>{"single_word", &token.single_word},
                              {"lstrip", &token.lstrip},
                              {"rstrip", &token.rstrip},
                              {"normalized", &token.normalized}}) {
      if (absl::Status s = ReadOptionalBool(entry, key, where, field); !s.ok()) return s;
    }
    if (token.content.empty()) continue;  // the library ignores empty tokens
    if (!IsValidUtf8(token.content)) {
      return InvalidFieldError(absl::StrCat(where, ".content"), "is not valid UTF-8");
    }
    int64_t id;
    if (auto v = vocab.find(token.content); v != vocab.end()) {
      id = v->second;
    } else if (auto a = added.by_content_.find(token.content); a != added.by_content_.end()) {
      id = a->second;
    } else {
      id = next_id++;
    }
    if (id != id_field->get<int64_t>() || id > std::numeric_limits<int32_t>::max()) {
      return InvalidFieldError(
          absl::StrCat(where, ".id"),
          absl::StrCat("'", token.content, "' is given id ", id_field->get<int64_t>(),
                       " but the tokenizers library would give it ", id,
                       " (its id in model.vocab, or the next after the vocabulary)"));
    }
    added.by_content_[token.content] = static_cast<int32_t>(id);
    added.tokens_[static_cast<int32_t>(id)] = std::move(token);
  }
  std::unordered_map<std::string, int32_t> seen_raw, seen_normalized;
  for (const auto& [id, token] : added.tokens_) {
    const std::string pattern = token.normalized ? normalize(token.content) : token.content;
    if (pattern.empty()) continue;
    auto& seen = token.normalized ? seen_normalized : seen_raw;
    if (auto [it, inserted] = seen.emplace(pattern, id); !inserted) {
      return InvalidFieldError("added_tokens", absl::StrCat("ids ", it->second, " and ", id,
                                                            " match the same text '", pattern,
                                                            "'"));
    }
    Patterns& patterns = token.normalized ? added.normalized_ : added.raw_;
    patterns.by_length.emplace_back(pattern, id);
    if (patterns.first_bytes.find(pattern[0]) == std::string::npos) {
      patterns.first_bytes.push_back(pattern[0]);
    }
  }
  for (Patterns* p : {&added.raw_, &added.normalized_}) {
    std::stable_sort(p->by_length.begin(), p->by_length.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }
  return added;
}

int32_t HfAddedTokens::Find(absl::string_view content) const {
  auto it = by_content_.find(std::string(content));
  return it == by_content_.end() ? -1 : it->second;
}

std::string HfAddedTokens::Content(int32_t id) const {
  auto it = tokens_.find(id);
  return it == tokens_.end() ? "" : it->second.content;
}

bool HfAddedTokens::IsSpecial(int32_t id) const {
  auto it = tokens_.find(id);
  return it != tokens_.end() && it->second.special;
}

absl::StatusOr<std::vector<int32_t>> HfAddedTokens::Encode(
    absl::string_view text, const std::function<std::string(absl::string_view)>& normalize,
    const TextEncoder& encode_text) const {
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("text is not valid UTF-8");
  std::vector<Piece> pieces;
  pieces.push_back({std::string(text), -1, true});
  Split(raw_, &pieces);
  for (Piece& piece : pieces) {
    if (piece.token < 0) piece.text = normalize(piece.text);
  }
  Split(normalized_, &pieces);
  std::vector<int32_t> ids;
  for (Piece& piece : pieces) {
    if (piece.token >= 0) {
      ids.push_back(piece.token);
    } else if (absl::Status s = encode_text(std::move(piece), &ids); !s.ok()) {
      return s;
    }
  }
  return ids;
}

// The library's AddedVocabulary::find_matches on each text piece.
void HfAddedTokens::Split(const Patterns& patterns, std::vector<Piece>* pieces) const {
  std::vector<Piece> out;
  out.reserve(pieces->size());
  for (Piece& piece : *pieces) {
    if (piece.token >= 0) {
      out.push_back(std::move(piece));
      continue;
    }
    if (piece.text.empty()) continue;
    if (patterns.by_length.empty()) {
      out.push_back(std::move(piece));
      continue;
    }
    const absl::string_view s = piece.text;
    auto emit_text = [&](size_t begin, size_t end) {
      if (end > begin) {
        out.push_back({std::string(s.substr(begin, end - begin)), -1,
                       piece.at_start && begin == 0});
      }
    };
    size_t start_offset = 0, search = 0;
    while (search < s.size()) {
      // Leftmost-longest: the first position where a pattern starts, the longest one there.
      size_t match_start = 0, match_end = 0;
      int32_t token = -1;
      for (size_t at = s.find_first_of(patterns.first_bytes, search);
           at != absl::string_view::npos && token < 0;
           at = s.find_first_of(patterns.first_bytes, at + 1)) {
        for (const auto& [pattern, id] : patterns.by_length) {
          if (s.compare(at, pattern.size(), pattern) == 0) {
            token = id;
            match_start = at;
            match_end = at + pattern.size();
            break;
          }
        }
      }
      if (token < 0) break;
      search = match_end;
      const Token& added = tokens_.at(token);
      size_t start = match_start, stop = match_end;
      if (added.single_word) {
        size_t len;
        const bool word_before =
            start > 0 && is_word_character_(DecodeUtf8At(s, Utf8CharStartBefore(s, start), &len));
        const bool word_after = stop < s.size() && is_word_character_(DecodeUtf8At(s, stop, &len));
        if (word_before || word_after) continue;
      }
      if (added.lstrip) {
        start = std::max(TrailingWhiteSpaceStart(s.substr(0, start)), start_offset);
      }
      if (added.rstrip) stop += LeadingWhiteSpaceLength(s.substr(stop));
      emit_text(start_offset, start);
      out.push_back({std::string(s.substr(start, stop - start)), token, false});
      start_offset = stop;
    }
    emit_text(start_offset, s.size());
  }
  *pieces = std::move(out);
}

}  // namespace embedserve::tokenizers
