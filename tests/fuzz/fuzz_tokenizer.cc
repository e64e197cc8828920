// libFuzzer target: arbitrary bytes through ClipTokenizer::Encode (clean-up, split, BPE) and
// the HTML unescapers. Nothing may crash; valid output keeps its invariants.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "server/tokenizers/clip_tokenizer.h"
#include "server/tokenizers/html_entities.h"
#include "server/tokenizers/text_clean.h"

namespace {

const embedserve::tokenizers::ClipTokenizer& Tokenizer() {
  static const embedserve::tokenizers::ClipTokenizer* tok = [] {
    auto made = embedserve::tokenizers::ClipTokenizer::FromBundledVocab();
    if (!made.ok()) std::abort();
    return made->release();
  }();
  return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)Tokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace tk = embedserve::tokenizers;
  const std::string text(reinterpret_cast<const char*>(data), size);
  const tk::ClipTokenizer& tok = Tokenizer();
  const int context_length = size > 0 ? 2 + data[0] % 100 : 77;
  auto truncated = tok.Encode(text, context_length, true);
  auto full = tok.Encode(text, context_length, false);
  if (truncated.ok() != tk::ValidateUtf8(text).ok()) std::abort();
  if (truncated.ok()) {
    const auto& ids = truncated->ids;
    if (ids.size() < 2 || ids.size() > static_cast<size_t>(context_length)) std::abort();
    if (ids.front() != tok.start_id() || ids.back() != tok.end_id()) std::abort();
    for (int32_t id : ids) {
      if (id < 0 || id >= tok.vocab_size()) std::abort();
    }
    // Without truncation: the same ids when they fit, an error exactly when they don't.
    if (truncated->truncated == full.ok()) std::abort();
    if (full.ok() && full->ids != ids) std::abort();
    (void)tk::FtfyUnescapeHtml(tk::DecodeUtf8(text));
    (void)tk::HtmlUnescape(tk::DecodeUtf8(text));
  }
  return 0;
}
