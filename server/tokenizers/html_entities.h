// HTML character references for the CLIP text clean-up: Python's html.unescape and
// ftfy's unescape_html, over UTF-32 text, with the full WHATWG named-reference table.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace embedserve::tokenizers {

// The replacement (UTF-8) for a WHATWG named character reference, `name` without the '&'
// and with its ';' where the name has one ("amp;", "amp"); nullptr if unknown.
const char* LookupHtmlEntity(absl::string_view name);

// Python's html.unescape: named references (longest legacy prefix for names without ';'),
// decimal and hex numeric references with HTML5's replacements for invalid numbers.
std::u32string HtmlUnescape(const std::u32string& text);

// ftfy's unescape_html: only complete "&name;" / "&#...;" references of 1-24 ASCII
// letters or digits, also the upper-cased forms of lower-case names ("&NTILDE;").
std::u32string FtfyUnescapeHtml(const std::u32string& text);

}  // namespace embedserve::tokenizers
