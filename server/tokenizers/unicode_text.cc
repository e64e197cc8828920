// ICU-backed normalization forms and per-character lowercase (see unicode_text.h).
#include "server/tokenizers/unicode_text.h"

#include "server/tokenizers/utf8.h"
#include "unicode/bytestream.h"
#include "unicode/locid.h"
#include "unicode/normalizer2.h"
#include "unicode/unistr.h"

namespace embedserve::tokenizers {

bool NormalizationFormNamed(absl::string_view name, NormalizationForm* form) {
  if (name == "NFC") *form = NormalizationForm::kNfc;
  else if (name == "NFD") *form = NormalizationForm::kNfd;
  else if (name == "NFKC") *form = NormalizationForm::kNfkc;
  else if (name == "NFKD") *form = NormalizationForm::kNfkd;
  else return false;
  return true;
}

std::string NormalizeUnicode(absl::string_view s, NormalizationForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n =
      form == NormalizationForm::kNfc    ? icu::Normalizer2::getNFCInstance(status)
      : form == NormalizationForm::kNfd  ? icu::Normalizer2::getNFDInstance(status)
      : form == NormalizationForm::kNfkc ? icu::Normalizer2::getNFKCInstance(status)
                                         : icu::Normalizer2::getNFKDInstance(status);
  if (U_FAILURE(status) || n == nullptr) return std::string(s);
  std::string out;
  icu::StringByteSink<std::string> sink(&out);
  n->normalizeUTF8(0, icu::StringPiece(s.data(), static_cast<int32_t>(s.size())), sink, nullptr,
                   status);
  return U_SUCCESS(status) ? out : std::string(s);
}

std::string LowercasePerCharacter(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t len;
    const uint32_t cp = DecodeUtf8At(s, i, &len);
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
    } else {
      icu::UnicodeString c(static_cast<UChar32>(cp));
      c.toLower(icu::Locale::getRoot());
      c.toUTF8String(out);
    }
    i += len;
  }
  return out;
}

}  // namespace embedserve::tokenizers
