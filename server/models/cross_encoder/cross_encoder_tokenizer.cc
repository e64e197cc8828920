// CrossEncoderTokenizer: chooses the tokenizer file, reads tokenizer_config.json for a
// vocab.txt, and maps XLM-R's sentencepiece ids to model ids.
#include "server/models/cross_encoder/cross_encoder_tokenizer.h"

#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "server/models/config_json.h"
#include "server/tokenizers/unigram.h"
#include "server/tokenizers/wordpiece.h"

namespace embedserve::models::cross_encoder {

using tokenizers::UnigramTokenizer;
using tokenizers::WordPieceOptions;
using tokenizers::WordPieceTokenizer;
using tokenizers::XlmRobertaVocab;

struct CrossEncoderTokenizer::Impl {
  // XLM-R.
  std::unique_ptr<UnigramTokenizer> unigram;
  std::optional<XlmRobertaVocab> xlmr;
  // BERT.
  std::unique_ptr<WordPieceTokenizer> wordpiece;
};

namespace {

namespace fs = std::filesystem;

// A special token in tokenizer_config.json: a string, or an AddedToken object's content.
void ReadTokenName(const nlohmann::json& config, const char* key, std::string* out) {
  auto it = config.find(key);
  if (it == config.end()) return;
  if (it->is_string()) {
    *out = it->get<std::string>();
  } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    *out = (*it)["content"].get<std::string>();
  }
}

// BertTokenizer's options from `dir`/tokenizer_config.json (absent: the defaults).
absl::StatusOr<WordPieceOptions> ReadWordPieceOptions(const std::string& dir) {
  WordPieceOptions options;
  const std::string path = (fs::path(dir) / "tokenizer_config.json").string();
  std::error_code ec;
  if (!fs::exists(path, ec)) return options;
  absl::StatusOr<std::string> text = config_json::ReadConfigFile(path);
  if (!text.ok()) return text.status();
  const nlohmann::json c = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!c.is_object()) return absl::InvalidArgumentError(path + ": not a JSON object");
  auto read_bool = [&](const char* key, bool* out) -> absl::Status {
    auto it = c.find(key);
    if (it == c.end() || it->is_null()) return absl::OkStatus();
    if (!it->is_boolean()) return config_json::Bad(path, key, "expected true or false");
    *out = it->get<bool>();
    return absl::OkStatus();
  };
  if (auto s = read_bool("do_lower_case", &options.lowercase); !s.ok()) return s;
  if (auto s = read_bool("tokenize_chinese_chars", &options.handle_chinese_chars); !s.ok()) return s;
  if (c.contains("strip_accents") && !c["strip_accents"].is_null()) {
    bool strip = false;
    if (auto s = read_bool("strip_accents", &strip); !s.ok()) return s;
    options.strip_accents = strip;
  }
  ReadTokenName(c, "unk_token", &options.unk_token);
  ReadTokenName(c, "cls_token", &options.cls_token);
  ReadTokenName(c, "sep_token", &options.sep_token);
  ReadTokenName(c, "pad_token", &options.pad_token);
  ReadTokenName(c, "mask_token", &options.mask_token);
  return options;
}

}  // namespace

CrossEncoderTokenizer::~CrossEncoderTokenizer() = default;

absl::StatusOr<std::unique_ptr<CrossEncoderTokenizer>> CrossEncoderTokenizer::Load(
    const std::string& dir, const CrossEncoderConfig& config) {
  std::unique_ptr<CrossEncoderTokenizer> t(new CrossEncoderTokenizer);
  t->impl_ = std::make_unique<Impl>();
  std::error_code ec;
  const fs::path json_path = fs::path(dir) / "tokenizer.json";
  std::string path;
  if (config.architecture == Architecture::kXlmRoberta) {
    const fs::path spm_path = fs::path(dir) / "sentencepiece.bpe.model";
    absl::StatusOr<std::unique_ptr<UnigramTokenizer>> unigram;
    if (fs::exists(json_path, ec)) {
      path = json_path.string();
      t->source_ = "tokenizer.json";
      unigram = UnigramTokenizer::LoadTokenizerJson(path);
    } else if (fs::exists(spm_path, ec)) {
      path = spm_path.string();
      t->source_ = "sentencepiece.bpe.model";
      unigram = UnigramTokenizer::LoadSentencePiece(path);
    } else {
      return absl::NotFoundError(absl::StrCat(
          dir, ": neither tokenizer.json nor sentencepiece.bpe.model is present (XLM-RoBERTa's "
               "tokenizer)"));
    }
    if (!unigram.ok()) return unigram.status();
    absl::StatusOr<XlmRobertaVocab> vocab = XlmRobertaVocab::For(**unigram);
    if (!vocab.ok()) {
      return absl::Status(vocab.status().code(), absl::StrCat(path, ": ", vocab.status().message()));
    }
    t->impl_->unigram = *std::move(unigram);
    t->impl_->xlmr = *vocab;
    if (vocab->pad_id() != config.pad_token_id) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": <pad> is id ", vocab->pad_id(), " but config.json's pad_token_id is ",
          config.pad_token_id));
    }
  } else {
    absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> wordpiece;
    const fs::path vocab_path = fs::path(dir) / "vocab.txt";
    if (fs::exists(json_path, ec)) {
      path = json_path.string();
      t->source_ = "tokenizer.json";
      wordpiece = WordPieceTokenizer::LoadTokenizerJson(path);
    } else if (fs::exists(vocab_path, ec)) {
      path = vocab_path.string();
      t->source_ = "vocab.txt";
      absl::StatusOr<WordPieceOptions> options = ReadWordPieceOptions(dir);
      if (!options.ok()) return options.status();
      wordpiece = WordPieceTokenizer::LoadVocabTxt(path, *options);
    } else {
      return absl::NotFoundError(absl::StrCat(
          dir, ": neither tokenizer.json nor vocab.txt is present (BERT's tokenizer)"));
    }
    if (!wordpiece.ok()) return wordpiece.status();
    t->impl_->wordpiece = *std::move(wordpiece);
  }
  if (t->size() > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": ", t->size(), " token ids exceed config.json's vocab_size ", config.vocab_size));
  }
  return t;
}

absl::StatusOr<std::vector<int32_t>> CrossEncoderTokenizer::Encode(absl::string_view text) const {
  if (impl_->wordpiece) return impl_->wordpiece->Encode(text);
  absl::StatusOr<std::vector<int32_t>> ids = impl_->unigram->Encode(text);
  if (!ids.ok()) return ids.status();
  return impl_->xlmr->ToModelIds(*ids);
}

std::vector<int32_t> CrossEncoderTokenizer::Single(absl::Span<const int32_t> a) const {
  if (impl_->wordpiece) return impl_->wordpiece->Single(a).ids;
  return impl_->xlmr->Single(a);
}

std::vector<int32_t> CrossEncoderTokenizer::Pair(absl::Span<const int32_t> a,
                                                 absl::Span<const int32_t> b) const {
  if (impl_->wordpiece) return impl_->wordpiece->Pair(a, b).ids;
  return impl_->xlmr->Pair(a, b);
}

int CrossEncoderTokenizer::pair_special_tokens() const { return impl_->wordpiece ? 3 : 4; }

std::string CrossEncoderTokenizer::TokenString(int32_t id) const {
  if (impl_->wordpiece) return impl_->wordpiece->IdToToken(id);
  const XlmRobertaVocab& v = *impl_->xlmr;
  if (impl_->unigram->source() == UnigramTokenizer::Source::kTokenizerJson) {
    return impl_->unigram->IdToPiece(id);  // the file's ids are the model's
  }
  // sentencepiece.bpe.model: fairseq's dictionary around sentencepiece's ids.
  if (id == v.bos_id()) return "<s>";
  if (id == v.pad_id()) return "<pad>";
  if (id == v.eos_id()) return "</s>";
  if (id == v.unk_id()) return "<unk>";
  if (id == v.mask_id()) return "<mask>";
  if (id < 4 || id >= v.size()) return "";
  return impl_->unigram->IdToPiece(id - 1);
}

int CrossEncoderTokenizer::size() const {
  return impl_->wordpiece ? impl_->wordpiece->size() : impl_->xlmr->size();
}

}  // namespace embedserve::models::cross_encoder
