// CLIP's text clean-up as OpenCLIP runs it: ftfy.fix_text (default config, without the
// mojibake repair), html.unescape twice, whitespace collapse, strip, lower-case.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/tokenizers/utf8.h"  // ValidateUtf8, DecodeUtf8, EncodeUtf8 (also for users)

namespace embedserve::tokenizers {

// ftfy.fix_text with its default configuration: per line, until nothing changes:
// unescape_html (off from the first line holding '<' on), fix_c1_controls,
// fix_latin_ligatures, fix_character_width, uncurl_quotes, fix_line_breaks,
// remove_terminal_escapes, remove_control_chars, NFC. Mojibake repair
// (fix_encoding) is not done: text that is not mojibake passes it unchanged.
std::u32string FtfyFixText(const std::u32string& text);

// What OpenCLIP's tokenizer sees: whitespace_clean(basic_clean(text)).lower(), as UTF-8.
absl::StatusOr<std::string> CleanClipText(absl::string_view utf8);

}  // namespace embedserve::tokenizers
