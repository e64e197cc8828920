// CLIP's text clean-up (see text_clean.h): ftfy's fixes, HTML unescaping, whitespace and
// case, each matching what OpenCLIP's Python gets, character for character.
#include "server/tokenizers/text_clean.h"

#include <array>
#include <cstdint>
#include <mutex>

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/locid.h>

#include "server/tokenizers/html_entities.h"

namespace embedserve::tokenizers {
namespace {

// Python's str.isspace() (what `\s` and strip() use on str).
bool IsPySpace(char32_t c) {
  if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// ftfy's CONTROL_CHARS: removed by remove_control_chars.
bool IsFtfyControl(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
         (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

// "sloppy-windows-1252" for bytes 0x80-0x9F (undefined bytes stay as they are).
constexpr char32_t kCp1252C1[32] = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};

// ftfy's LIGATURES: the replacement, or nullptr.
const char32_t* Ligature(char32_t c) {
  switch (c) {
    case 0x0132: return U"IJ";
    case 0x0133: return U"ij";
    case 0x0149: return U"\u02BCn";
    case 0x01F1: return U"DZ";
    case 0x01F2: return U"Dz";
    case 0x01F3: return U"dz";
    case 0x01C4: return U"D\u017D";
    case 0x01C5: return U"D\u017E";
    case 0x01C6: return U"d\u017E";
    case 0x01C7: return U"LJ";
    case 0x01C8: return U"Lj";
    case 0x01C9: return U"lj";
    case 0x01CA: return U"NJ";
    case 0x01CB: return U"Nj";
    case 0x01CC: return U"nj";
    case 0xFB00: return U"ff";
    case 0xFB01: return U"fi";
    case 0xFB02: return U"fl";
    case 0xFB03: return U"ffi";
    case 0xFB04: return U"ffl";
    case 0xFB05: return U"\u017Ft";
    case 0xFB06: return U"st";
    default: return nullptr;
  }
}

// ftfy's WIDTH_MAP: U+3000 -> ' ', and U+FF01..U+FFEF -> their NFKC form where it differs.
struct WidthMap {
  std::array<std::u32string, 0xFFF0 - 0xFF01> forms;
  WidthMap() {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* nfkc = icu::Normalizer2::getNFKCInstance(status);
    for (char32_t c = 0xFF01; c < 0xFFF0; ++c) {
      if (U_FAILURE(status) || nfkc == nullptr) break;
      icu::UnicodeString in(static_cast<UChar32>(c));
      UErrorCode s2 = U_ZERO_ERROR;
      icu::UnicodeString out = nfkc->normalize(in, s2);
      if (U_FAILURE(s2) || out == in) continue;
      std::u32string& form = forms[c - 0xFF01];
      for (int32_t i = 0; i < out.length();) {
        const UChar32 cp = out.char32At(i);
        form.push_back(static_cast<char32_t>(cp));
        i += U16_LENGTH(cp);
      }
    }
  }
};

const WidthMap& GetWidthMap() {
  static const WidthMap* map = new WidthMap();
  return *map;
}

void AppendQuoteFixed(char32_t c, std::u32string* out) {
  if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) {
    out->push_back(U'\'');
  } else if (c >= 0x201C && c <= 0x201F) {
    out->push_back(U'"');
  } else {
    out->push_back(c);
  }
}

void AppendWidthFixed(char32_t c, std::u32string* out) {
  if (c == 0x3000) {
    AppendQuoteFixed(U' ', out);
    return;
  }
  if (c >= 0xFF01 && c < 0xFFF0) {
    const std::u32string& form = GetWidthMap().forms[c - 0xFF01];
    if (!form.empty()) {
      for (char32_t f : form) AppendQuoteFixed(f, out);
      return;
    }
  }
  AppendQuoteFixed(c, out);
}

// fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes in turn: each
// maps single characters, so they compose per character.
std::u32string FixCharacters(const std::u32string& text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c >= 0x80 && c <= 0x9F) c = kCp1252C1[c - 0x80];
    if (const char32_t* lig = Ligature(c)) {
      for (; *lig; ++lig) AppendWidthFixed(*lig, &out);
    } else {
      AppendWidthFixed(c, &out);
    }
  }
  return out;
}

bool IsPyDigit(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return u_charType(static_cast<UChar32>(c)) == U_DECIMAL_DIGIT_NUMBER;
}

// fix_line_breaks, remove_terminal_escapes, remove_control_chars in turn.
std::u32string FixLinesEscapesControls(const std::u32string& text) {
  std::u32string lines;
  lines.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    if (c == U'\r') {
      if (i + 1 < text.size() && text[i + 1] == U'\n') ++i;
      lines.push_back(U'\n');
    } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
      lines.push_back(U'\n');
    } else {
      lines.push_back(c);
    }
  }
  std::u32string out;
  out.reserve(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    const char32_t c = lines[i];
    if (c == 0x1B && i + 1 < lines.size() && lines[i + 1] == U'[') {
      // \033\[(\d|;)*[a-zA-Z]
      size_t j = i + 2;
      while (j < lines.size() && (lines[j] == U';' || IsPyDigit(lines[j]))) ++j;
      if (j < lines.size() && ((lines[j] >= U'a' && lines[j] <= U'z') ||
                               (lines[j] >= U'A' && lines[j] <= U'Z'))) {
        i = j;
        continue;
      }
    }
    if (!IsFtfyControl(c)) out.push_back(c);
  }
  return out;
}

icu::UnicodeString ToIcu(const std::u32string& text) {
  return icu::UnicodeString::fromUTF32(reinterpret_cast<const UChar32*>(text.data()),
                                       static_cast<int32_t>(text.size()));
}

std::u32string FromIcu(const icu::UnicodeString& text) {
  std::u32string out;
  out.reserve(static_cast<size_t>(text.length()));
  for (int32_t i = 0; i < text.length();) {
    const UChar32 cp = text.char32At(i);
    out.push_back(static_cast<char32_t>(cp));
    i += U16_LENGTH(cp);
  }
  return out;
}

std::u32string Nfc(const std::u32string& text) {
  // Every code point below U+0300 is NFC_Quick_Check=Yes and combines with nothing
  // that is also below U+0300, so such text is already NFC.
  bool simple = true;
  for (char32_t c : text) {
    if (c >= 0x300) {
      simple = false;
      break;
    }
  }
  if (simple) return text;
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status) || nfc == nullptr) return text;
  const icu::UnicodeString in = ToIcu(text);
  if (nfc->isNormalized(in, status) && U_SUCCESS(status)) return text;
  status = U_ZERO_ERROR;
  const icu::UnicodeString out = nfc->normalize(in, status);
  if (U_FAILURE(status)) return text;
  return FromIcu(out);
}

std::u32string FixSegment(std::u32string text, bool unescape_html) {
  while (true) {
    std::u32string fixed = unescape_html ? FtfyUnescapeHtml(text) : text;
    fixed = Nfc(FixLinesEscapesControls(FixCharacters(fixed)));
    if (fixed == text) return fixed;
    text = std::move(fixed);
  }
}

// Python's str.lower(): full lower-case mappings with Final_Sigma. Besides final sigma
// (context-dependent: left to ICU's root locale), U+0130 is the only character whose full
// lower-case mapping differs from the simple one.
std::u32string Lower(const std::u32string& text) {
  std::u32string out;
  out.reserve(text.size() + 4);
  for (char32_t c : text) {
    if (c < 0x80) {
      out.push_back(c >= U'A' && c <= U'Z' ? c + 32 : c);
    } else if (c == 0x3A3) {  // GREEK CAPITAL SIGMA: σ or final ς by context
      icu::UnicodeString s = ToIcu(text);
      s.toLower(icu::Locale::getRoot());
      return FromIcu(s);
    } else if (c == 0x130) {
      out.push_back(U'i');
      out.push_back(0x307);
    } else {
      out.push_back(static_cast<char32_t>(u_tolower(static_cast<UChar32>(c))));
    }
  }
  return out;
}

// Text that all of ftfy and html.unescape leave as it is: printable ASCII, tab, LF and
// form feed, no '&'.
bool NeedsNoFixing(absl::string_view utf8) {
  for (char c : utf8) {
    const auto b = static_cast<unsigned char>(c);
    if ((b < 0x20 && b != '\t' && b != '\n' && b != '\f') || b >= 0x7F || b == '&') return false;
  }
  return true;
}

// Whether any of ftfy's fixes could change text: a character that one of them maps, and
// anything from U+0300 on (NFC).
bool MayNeedFixing(const std::u32string& text) {
  for (char32_t c : text) {
    if (c < 0x80) {
      if ((c < 0x20 && c != U'\t' && c != U'\n' && c != U'\f') || c == 0x7F || c == U'&') return true;
    } else if (c < 0xA0 || c >= 0x300 || c == 0x132 || c == 0x133 || c == 0x149 ||
               (c >= 0x1C4 && c <= 0x1CC) || (c >= 0x1F1 && c <= 0x1F3) || c == 0x2BC) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::u32string FtfyFixText(const std::u32string& text) {
  if (!MayNeedFixing(text)) return text;
  constexpr size_t kMaxDecodeLength = 1000000;  // ftfy's max_decode_length
  std::u32string out;
  out.reserve(text.size());
  bool unescape_html = true;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t newline = text.find(U'\n', pos);
    size_t end = newline == std::u32string::npos ? text.size() : newline + 1;
    if (end - pos > kMaxDecodeLength) end = pos + kMaxDecodeLength;
    std::u32string segment = text.substr(pos, end - pos);
    if (unescape_html && segment.find(U'<') != std::u32string::npos) unescape_html = false;
    out += FixSegment(std::move(segment), unescape_html);
    pos = end;
  }
  return out;
}

absl::StatusOr<std::string> CleanClipText(absl::string_view utf8) {
  if (NeedsNoFixing(utf8)) {
    std::string out;
    out.reserve(utf8.size());
    bool pending_space = false;
    for (char c : utf8) {
      if (c == ' ' || c == '\t' || c == '\n' || c == '\f') {
        pending_space = !out.empty();
        continue;
      }
      if (pending_space) out.push_back(' ');
      pending_space = false;
      out.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c);
    }
    return out;
  }
  if (absl::Status valid = ValidateUtf8(utf8); !valid.ok()) return valid;
  std::u32string text = FtfyFixText(DecodeUtf8(utf8));
  if (text.find(U'&') != std::u32string::npos) text = HtmlUnescape(HtmlUnescape(text));
  // strip(), then re.sub(r'\s+', ' '), then strip(): runs of whitespace become one
  // space, none at either end.
  std::u32string collapsed;
  collapsed.reserve(text.size());
  bool pending_space = false;
  for (char32_t c : text) {
    if (IsPySpace(c)) {
      pending_space = !collapsed.empty();
      continue;
    }
    if (pending_space) collapsed.push_back(U' ');
    pending_space = false;
    collapsed.push_back(c);
  }
  return EncodeUtf8(Lower(collapsed));
}

}  // namespace embedserve::tokenizers
