// UTF-8 validation, decoding and encoding, and White_Space runs (see utf8.h): one
// implementation of each for every tokenizer here.
#include "server/tokenizers/utf8.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace embedserve::tokenizers {
namespace {

// What is wrong with the UTF-8 sequence at s[i], if anything (kValid: *length is its length).
enum class Utf8Fault { kValid, kInvalidLead, kTruncated, kInvalidContinuation, kInvalidCodePoint };

Utf8Fault CheckUtf8At(absl::string_view s, size_t i, size_t* length) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) {
    *length = 1;
    return Utf8Fault::kValid;
  }
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
    return Utf8Fault::kInvalidLead;
  }
  if (i + n > s.size()) return Utf8Fault::kTruncated;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return Utf8Fault::kInvalidContinuation;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF)) {
    return Utf8Fault::kInvalidCodePoint;
  }
  *length = n;
  return Utf8Fault::kValid;
}

}  // namespace

size_t ValidUtf8At(absl::string_view s, size_t i) {
  size_t length;
  return CheckUtf8At(s, i, &length) == Utf8Fault::kValid ? length : 0;
}

bool IsValidUtf8(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = ValidUtf8At(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

absl::Status ValidateUtf8(absl::string_view utf8) {
  for (size_t i = 0; i < utf8.size();) {
    size_t length = 0;
    switch (CheckUtf8At(utf8, i, &length)) {
      case Utf8Fault::kValid:
        i += length;
        continue;
      case Utf8Fault::kInvalidLead:
        return absl::InvalidArgumentError(absl::StrCat(
            "text is not valid UTF-8: invalid byte 0x",
            absl::Hex(static_cast<unsigned char>(utf8[i]), absl::kZeroPad2), " at byte offset ",
            i));
      case Utf8Fault::kTruncated:
        return absl::InvalidArgumentError(absl::StrCat(
            "text is not valid UTF-8: truncated sequence at byte offset ", i));
      case Utf8Fault::kInvalidContinuation:
        return absl::InvalidArgumentError(absl::StrCat(
            "text is not valid UTF-8: invalid sequence at byte offset ", i));
      case Utf8Fault::kInvalidCodePoint:
        return absl::InvalidArgumentError(absl::StrCat(
            "text is not valid UTF-8: invalid code point at byte offset ", i));
    }
  }
  return absl::OkStatus();
}

size_t Utf8LengthOfLead(unsigned char lead) {
  return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[lead >> 4];
}

uint32_t DecodeUtf8At(absl::string_view s, size_t i, size_t* length) {
  const size_t n = std::min(Utf8LengthOfLead(static_cast<unsigned char>(s[i])), s.size() - i);
  *length = n;
  uint32_t cp = static_cast<unsigned char>(s[i]);
  if (n == 1) return cp;
  cp &= (n == 2) ? 0x1F : (n == 3) ? 0x0F : 0x07;
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return cp;
}

size_t Utf8CharStartBefore(absl::string_view s, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return start;
}

std::u32string DecodeUtf8(absl::string_view utf8) {
  std::u32string out;
  out.reserve(utf8.size());
  const auto* p = reinterpret_cast<const unsigned char*>(utf8.data());
  const size_t n = utf8.size();
  for (size_t i = 0; i < n;) {
    const unsigned char b = p[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    size_t len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
    char32_t cp = b & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
    for (size_t k = 1; k < len && i + k < n; ++k) cp = (cp << 6) | (p[i + k] & 0x3F);
    out.push_back(cp);
    i += len;
  }
  return out;
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string EncodeUtf8(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) AppendUtf8(c, &out);
  return out;
}

bool IsUnicodeWhiteSpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

size_t LeadingWhiteSpaceLength(absl::string_view s) {
  size_t end = 0;
  while (end < s.size()) {
    size_t len;
    if (!IsUnicodeWhiteSpace(DecodeUtf8At(s, end, &len))) break;
    end += len;
  }
  return end;
}

size_t TrailingWhiteSpaceStart(absl::string_view s) {
  size_t start = s.size();
  while (start > 0) {
    const size_t prev = Utf8CharStartBefore(s, start);
    size_t len;
    if (!IsUnicodeWhiteSpace(DecodeUtf8At(s, prev, &len))) break;
    start = prev;
  }
  return start;
}

}  // namespace embedserve::tokenizers
