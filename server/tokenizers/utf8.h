// UTF-8 for every tokenizer here: validation, code points decoded and encoded, stepping over
// characters, and the runs of Unicode White_Space at either end of a string.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace embedserve::tokenizers {

// Length of the valid UTF-8 sequence starting at s[i] (shortest form, no surrogates, at most
// U+10FFFF), else 0. The same rule as sentencepiece's IsValidDecodeUTF8 and Rust's str.
size_t ValidUtf8At(absl::string_view s, size_t i);
bool IsValidUtf8(absl::string_view s);

// OK, or INVALID_ARGUMENT naming the byte offset of the first invalid UTF-8 sequence (the
// rule of ValidUtf8At) and what is wrong there.
absl::Status ValidateUtf8(absl::string_view utf8);

// The length a lead byte announces: 1 for ASCII and for a stray continuation byte, 2 for
// 0xC0-0xDF, 3 for 0xE0-0xEF, 4 for 0xF0-0xFF (sentencepiece's OneCharLen).
size_t Utf8LengthOfLead(unsigned char lead);

// The code point at s[i], and in *length its byte length: Utf8LengthOfLead, cut at the end
// of s. Exact where s is valid UTF-8 at i.
uint32_t DecodeUtf8At(absl::string_view s, size_t i, size_t* length);

// Where the character that ends at s[end) starts (s valid UTF-8, end > 0).
size_t Utf8CharStartBefore(absl::string_view s, size_t end);

// Decodes UTF-8 that ValidateUtf8 accepted.
std::u32string DecodeUtf8(absl::string_view utf8);
void AppendUtf8(char32_t c, std::string* out);
std::string EncodeUtf8(const std::u32string& text);

// Unicode White_Space: Rust's char::is_whitespace and regex `\s`, what the tokenizers library
// strips and splits on.
bool IsUnicodeWhiteSpace(uint32_t cp);
// Length of the White_Space run that starts `s` (s valid UTF-8).
size_t LeadingWhiteSpaceLength(absl::string_view s);
// Start of the White_Space run that ends `s`, s.size() if none (s valid UTF-8).
size_t TrailingWhiteSpaceStart(absl::string_view s);

}  // namespace embedserve::tokenizers
