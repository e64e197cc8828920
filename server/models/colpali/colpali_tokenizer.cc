// ColPaliTokenizer: special-token splitting over SentencePiece and ColPaliProcessor's prompts.
#include "server/models/colpali/colpali_tokenizer.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "server/models/colpali/sentencepiece_model.h"

namespace embedserve::models::colpali {

ColPaliTokenizer::~ColPaliTokenizer() = default;

absl::StatusOr<std::unique_ptr<ColPaliTokenizer>> ColPaliTokenizer::Load(
    const std::string& dir, const ColPaliConfig& config) {
  namespace fs = std::filesystem;
  const fs::path model_path = fs::path(dir) / "tokenizer.model";
  std::error_code ec;
  if (!fs::exists(model_path, ec)) {
    if (fs::exists(fs::path(dir) / "tokenizer.json", ec)) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, ": only tokenizer.json is present; the native ColPali reads SentencePiece's "
               "tokenizer.model (copy it from the base PaliGemma repository, e.g. "
               "google/paligemma-3b-pt-448, into the model directory)"));
    }
    return absl::NotFoundError(absl::StrCat(model_path.string(), ": missing"));
  }
  std::unique_ptr<ColPaliTokenizer> t(new ColPaliTokenizer);
  std::string error;
  t->sp_ = SentencePieceModel::Load(model_path.string(), &error);
  if (t->sp_ == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(model_path.string(), ": ", error));
  }
  t->config_ = config;
  const int size = t->sp_->size();
  for (int id : {config.pad_token_id, config.bos_token_id, config.eos_token_id,
                 config.image_token_index}) {
    if (id < 0 || id >= size) {
      return absl::InvalidArgumentError(absl::StrCat(
          model_path.string(), ": special token id ", id, " (pad/bos/eos/image from config.json) "
          "is outside the vocabulary of ", size, " pieces"));
    }
  }
  if (size > config.text.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        model_path.string(), ": ", size, " pieces exceed text_config.vocab_size ",
        config.text.vocab_size));
  }
  // The strings recognised before SentencePiece: control pieces (<pad>, <eos>, <bos>, ...),
  // the unknown piece and the image token.
  for (int id = 0; id < size; ++id) {
    if (t->sp_->IsControl(id) || t->sp_->IsUnknown(id) || id == config.image_token_index ||
        id == config.pad_token_id || id == config.bos_token_id || id == config.eos_token_id) {
      std::string piece = t->sp_->IdToPiece(id);
      if (!piece.empty()) t->specials_.emplace_back(std::move(piece), id);
    }
  }
  std::stable_sort(t->specials_.begin(), t->specials_.end(), [](const auto& a, const auto& b) {
    return a.first.size() > b.first.size();
  });

  t->page_ids_.assign(config.preprocess.image_seq_length, config.image_token_index);
  t->page_ids_.push_back(config.bos_token_id);
  absl::StatusOr<std::vector<int32_t>> prompt = t->Encode(config.prompt.visual_prompt_prefix + "\n");
  if (!prompt.ok()) return prompt.status();
  t->page_ids_.insert(t->page_ids_.end(), prompt->begin(), prompt->end());

  t->query_prefix_ids_ = {config.bos_token_id};
  t->query_suffix_.assign(config.prompt.query_augmentation_count, config.pad_token_id);
  absl::StatusOr<std::vector<int32_t>> newline = t->Encode("\n");
  if (!newline.ok()) return newline.status();
  t->query_suffix_.insert(t->query_suffix_.end(), newline->begin(), newline->end());
  return t;
}

absl::StatusOr<std::vector<int32_t>> ColPaliTokenizer::Encode(absl::string_view text) const {
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

std::string ColPaliTokenizer::TokenString(int32_t id) const {
  if (id < 0 || id >= sp_->size()) return "";
  return sp_->IdToPiece(id);
}

int ColPaliTokenizer::vocab_size() const { return sp_->size(); }

}  // namespace embedserve::models::colpali
