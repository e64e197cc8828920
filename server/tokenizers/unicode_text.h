// Unicode text transforms on ICU that the tokenizer.json normalizers share: the four
// normalization forms and Rust's per-character lowercase.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace embedserve::tokenizers {

enum class NormalizationForm { kNfc, kNfd, kNfkc, kNfkd };

// The form a normalizer type names ("NFC", "NFD", "NFKC", "NFKD"); false for any other name.
bool NormalizationFormNamed(absl::string_view name, NormalizationForm* form);

// `s` (UTF-8) in `form`; `s` unchanged if ICU cannot normalize (its data missing).
std::string NormalizeUnicode(absl::string_view s, NormalizationForm form);

// Rust's char::to_lowercase per character (full mappings, no context: a final sigma stays σ).
std::string LowercasePerCharacter(absl::string_view s);

}  // namespace embedserve::tokenizers
