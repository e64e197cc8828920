// CleanClipText / HTML unescaping tests: the ftfy.fix_text, html.unescape, whitespace and
// lower-case behaviours OpenCLIP's tokenizer input goes through (expected values from Python).
#include <catch2/catch.hpp>

#include <string>

#include "server/tokenizers/html_entities.h"
#include "server/tokenizers/text_clean.h"

namespace {

using embedserve::tokenizers::CleanClipText;

std::string Clean(const std::string& text) {
  auto cleaned = CleanClipText(text);
  REQUIRE(cleaned.ok());
  return *cleaned;
}

}  // namespace

TEST_CASE("whitespace collapses and strips, case folds", "[text_clean]") {
  CHECK(Clean("  Hello \t\n  World  ") == "hello world");
  CHECK(Clean("a\u00a0b\u2003c\u3000d") == "a b c d");
  CHECK(Clean("") == "");
  CHECK(Clean(" \t\r\n ") == "");
  CHECK(Clean("ÀÉÎ ΣΑΣ İ") == "àéî σας i\u0307");  // final sigma, dotted capital I
  CHECK(Clean("zero\u200bwidth") == "zero\u200bwidth");  // not whitespace
}

TEST_CASE("HTML entities: ftfy then html.unescape twice", "[text_clean]") {
  CHECK(Clean("Hello &amp; goodbye &lt;3 &#39;quoted&#39;") == "hello & goodbye <3 'quoted'");
  CHECK(Clean("&amp;amp;amp;amp; x") == "& x");  // ftfy repeats until nothing changes
  CHECK(Clean("&ampx &AMP &#x41;&#65 &#0; &#x110000; &#128;") == "&x & aa \ufffd \ufffd \u20ac");
  CHECK(Clean("&notit; &notin; &lt3 &gt") == "\u00acit; \u2209 <3 >");
  CHECK(Clean("&NTILDE; &nTILDE;") == "\u00f1 &ntilde;");  // ftfy knows upper-case names
  // A line with '<' turns ftfy's unescaping off from there on; Python's two rounds remain.
  CHECK(Clean("<b>&amp;amp;amp;</b>") == "<b>&amp;</b>");
  CHECK(Clean("&amp;amp;amp;\n<b>&amp;amp;amp;") == "& <b>&amp;");
}

TEST_CASE("ftfy character fixes", "[text_clean]") {
  CHECK(Clean("ligatures \ufb01 \ufb02 \ufb00 \ufb03 \u0133") == "ligatures fi fl ff ffi ij");
  CHECK(Clean("\uff21\uff22\uff23\uff11\uff12\uff13\uff08x\uff09") == "abc123(x)");
  CHECK(Clean("\uff76\uff9e") == "\u30ac");  // halfwidth katakana + voiced mark -> NFC
  CHECK(Clean("\u201ccurly\u201d \u2018single\u2019 \u02bc") == "\"curly\" 'single' '");
  CHECK(Clean("C1 \xc2\x93quoted\xc2\x94 \xc2\x85") == "c1 \"quoted\" \u2026");
  CHECK(Clean("\x1b[31;1mred\x1b[0m text") == "red text");
  CHECK(Clean("ctl\x01\x7f\u2060\ufeff\ufff9x") == "ctl\u2060x");
  CHECK(Clean("e\u0301 vs \u00e9") == "\u00e9 vs \u00e9");
  CHECK(Clean("line1\r\nline2\rline3\u2028line4") == "line1 line2 line3 line4");
  // NFC, not NFKC: other compatibility characters stay.
  CHECK(Clean("\u2460 \u00bd \u2126") == "\u2460 \u00bd \u03c9");
}

TEST_CASE("invalid UTF-8 names the byte offset", "[text_clean]") {
  auto cleaned = CleanClipText("ok\xe2\x82");
  REQUIRE_FALSE(cleaned.ok());
  CHECK(cleaned.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(cleaned.status().message()), Catch::Contains("byte offset 2"));
}

TEST_CASE("HTML entity table", "[text_clean]") {
  using embedserve::tokenizers::LookupHtmlEntity;
  REQUIRE(LookupHtmlEntity("amp;") != nullptr);
  CHECK(std::string(LookupHtmlEntity("amp;")) == "&");
  CHECK(std::string(LookupHtmlEntity("amp")) == "&");
  CHECK(std::string(LookupHtmlEntity("hellip;")) == "\u2026");
  CHECK(std::string(LookupHtmlEntity("NotNestedGreaterGreater;")) == "\u2aa2\u0338");
  CHECK(LookupHtmlEntity("hellip") == nullptr);
  CHECK(LookupHtmlEntity("nosuchentity;") == nullptr);
}
