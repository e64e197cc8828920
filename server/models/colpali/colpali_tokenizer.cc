// ColPaliTokenizer: the two text encoders (tokenizer.json via HfTokenizerJson; tokenizer.model
// via SentencePieceModel with special-token splitting) and the page/query prompts of the
// config's prompt profile.
#include "server/models/colpali/colpali_tokenizer.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "server/tokenizers/hf_tokenizer_json.h"
#include "server/tokenizers/sentencepiece_model.h"

namespace embedserve::models::colpali {

using tokenizers::HfTokenizerJson;
using tokenizers::SentencePieceModel;

// What ColPaliTokenizer needs of a tokenizer file. Implementations are immutable.
class ColPaliTokenizer::Backend {
 public:
  virtual ~Backend() = default;
  virtual absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const = 0;
  virtual std::string IdToPiece(int32_t id) const = 0;  // "" if no such id
  virtual int size() const = 0;                        // largest id + 1
};

namespace {

// tokenizer.json: everything (added tokens included) is HfTokenizerJson's.
class JsonBackend : public ColPaliTokenizer::Backend {
 public:
  explicit JsonBackend(std::unique_ptr<HfTokenizerJson> t) : t_(std::move(t)) {}
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override {
    return t_->Encode(text);
  }
  std::string IdToPiece(int32_t id) const override { return t_->IdToToken(id); }
  int size() const override { return t_->size(); }

 private:
  std::unique_ptr<HfTokenizerJson> t_;
};

// tokenizer.model: the special-token strings are split out first (longest first), the text
// between them goes through SentencePiece.
class SentencePieceBackend : public ColPaliTokenizer::Backend {
 public:
  SentencePieceBackend(std::unique_ptr<SentencePieceModel> sp, const ColPaliConfig& config)
      : sp_(std::move(sp)) {
    // Control pieces (<pad>, <eos>, <bos>, ...), the unknown piece and the config's tokens.
    for (int id = 0; id < sp_->size(); ++id) {
      if (sp_->IsControl(id) || sp_->IsUnknown(id) || id == config.image_token_index ||
          id == config.pad_token_id || id == config.bos_token_id || id == config.eos_token_id) {
        std::string piece = sp_->IdToPiece(id);
        if (!piece.empty()) specials_.emplace_back(std::move(piece), id);
      }
    }
    std::stable_sort(specials_.begin(), specials_.end(), [](const auto& a, const auto& b) {
      return a.first.size() > b.first.size();
    });
  }

  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override {
    std::vector<int32_t> ids;
    std::vector<int> piece_ids;
    std::string error;
    size_t segment_start = 0;
    auto flush = [&](size_t end) -> absl::Status {
      if (end > segment_start) {
        if (!sp_->Encode(std::string(text.substr(segment_start, end - segment_start)), &piece_ids,
                         &error)) {
          return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", error));
        }
        ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
      }
      return absl::OkStatus();
    };
    size_t pos = 0;
    while (pos < text.size()) {
      bool matched = false;
      for (const auto& [piece, id] : specials_) {
        if (text.compare(pos, piece.size(), piece) == 0) {
          if (absl::Status s = flush(pos); !s.ok()) return s;
          ids.push_back(id);
          pos += piece.size();
          segment_start = pos;
          matched = true;
          break;
        }
      }
      if (!matched) ++pos;
    }
    if (absl::Status s = flush(text.size()); !s.ok()) return s;
    return ids;
  }
  std::string IdToPiece(int32_t id) const override {
    return id < 0 || id >= sp_->size() ? "" : sp_->IdToPiece(id);
  }
  int size() const override { return sp_->size(); }

 private:
  std::unique_ptr<SentencePieceModel> sp_;
  std::vector<std::pair<std::string, int32_t>> specials_;  // longest first
};

}  // namespace

ColPaliTokenizer::~ColPaliTokenizer() = default;

absl::StatusOr<std::unique_ptr<ColPaliTokenizer>> ColPaliTokenizer::Load(
    const std::string& dir, const ColPaliConfig& config) {
  namespace fs = std::filesystem;
  const fs::path json_path = fs::path(dir) / "tokenizer.json";
  const fs::path model_path = fs::path(dir) / "tokenizer.model";
  std::error_code ec;
  std::unique_ptr<ColPaliTokenizer> t(new ColPaliTokenizer);
  std::string path;
  if (fs::exists(json_path, ec)) {
    // transformers' processor loads the fast tokenizer (tokenizer.json) when it is present.
    path = json_path.string();
    absl::StatusOr<std::unique_ptr<HfTokenizerJson>> json = HfTokenizerJson::Load(path);
    if (!json.ok()) {
      return absl::Status(
          json.status().code(),
          absl::StrCat(json.status().message(),
                       fs::exists(model_path, ec)
                           ? " (tokenizer.json is preferred over the tokenizer.model beside it; "
                             "remove tokenizer.json to use tokenizer.model)"
                           : " (alternatively, remove it and put SentencePiece's tokenizer.model, "
                             "e.g. from the base PaliGemma repository, in the directory)"));
    }
    t->backend_ = std::make_unique<JsonBackend>(*std::move(json));
    t->source_ = "tokenizer.json";
  } else if (fs::exists(model_path, ec)) {
    path = model_path.string();
    std::string error;
    std::unique_ptr<SentencePieceModel> sp = SentencePieceModel::Load(path, &error);
    if (sp == nullptr) return absl::InvalidArgumentError(absl::StrCat(path, ": ", error));
    t->backend_ = std::make_unique<SentencePieceBackend>(std::move(sp), config);
    t->source_ = "tokenizer.model";
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir, ": neither tokenizer.json nor tokenizer.model is present"));
  }
  t->config_ = config;
  const int size = t->backend_->size();
  for (int id : {config.pad_token_id, config.bos_token_id, config.eos_token_id,
                 config.image_token_index}) {
    if (id < 0 || id >= size || t->backend_->IdToPiece(id).empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": special token id ", id, " (pad/bos/eos/image from config.json) "
          "is not a token of the vocabulary (", size, " ids)"));
    }
  }
  if (size > config.text.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": ", size, " token ids exceed text_config.vocab_size ", config.text.vocab_size));
  }

  t->page_ids_.assign(config.preprocess.image_seq_length, config.image_token_index);
  t->page_ids_.insert(t->page_ids_.end(), config.prompt.page_bos_count, config.bos_token_id);
  absl::StatusOr<std::vector<int32_t>> prompt = t->Encode(config.prompt.visual_prompt_prefix + "\n");
  if (!prompt.ok()) return prompt.status();
  t->page_ids_.insert(t->page_ids_.end(), prompt->begin(), prompt->end());

  t->query_prefix_ids_ = {config.bos_token_id};
  t->query_suffix_.assign(config.prompt.query_augmentation_count, config.pad_token_id);
  if (config.prompt.query_newline) {
    absl::StatusOr<std::vector<int32_t>> newline = t->Encode("\n");
    if (!newline.ok()) return newline.status();
    t->query_suffix_.insert(t->query_suffix_.end(), newline->begin(), newline->end());
  }
  return t;
}

absl::StatusOr<std::vector<int32_t>> ColPaliTokenizer::Encode(absl::string_view text) const {
  return backend_->Encode(text);
}

absl::StatusOr<ColPaliTokenizer::Query> ColPaliTokenizer::EncodeQuery(absl::string_view text,
                                                                     int max_tokens,
                                                                     bool truncate) const {
  absl::StatusOr<std::vector<int32_t>> body =
      Encode(absl::StrCat(config_.prompt.query_prefix, text));
  if (!body.ok()) return body.status();
  if (std::find(body->begin(), body->end(), config_.image_token_index) != body->end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text contains the image token '", TokenString(config_.image_token_index),
        "', which only a page input may hold"));
  }
  Query q;
  const int total = static_cast<int>(body->size()) + query_overhead();
  if (total > max_tokens) {
    if (!truncate) {
      return absl::InvalidArgumentError(absl::StrCat(
          "text is ", total, " tokens with the query prompt; the limit is ", max_tokens,
          " (set truncate to cut it)"));
    }
    body->resize(std::max(0, max_tokens - query_overhead()));
    q.truncated = true;
  }
  q.ids.reserve(body->size() + query_overhead());
  q.ids.insert(q.ids.end(), query_prefix_ids_.begin(), query_prefix_ids_.end());
  q.ids.insert(q.ids.end(), body->begin(), body->end());
  q.ids.insert(q.ids.end(), query_suffix_.begin(), query_suffix_.end());
  return q;
}

std::string ColPaliTokenizer::TokenString(int32_t id) const { return backend_->IdToPiece(id); }

int ColPaliTokenizer::vocab_size() const { return backend_->size(); }

}  // namespace embedserve::models::colpali
