// The shared loader pieces (see tokenizer_loading.h): file reading, field errors,
// tokenizer.json field readers.
#include "server/tokenizers/tokenizer_loading.h"

#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "nlohmann/json.hpp"

namespace embedserve::tokenizers {
namespace {

using Json = nlohmann::json;

absl::Status ReadPipelineStep(const Json& step, const std::string& where,
                              const char* sequence_key, const PipelineStepReader& read_step) {
  if (step.is_null()) return absl::OkStatus();
  if (!step.is_object()) return InvalidFieldError(where, "must be an object or null");
  std::string type;
  if (absl::Status s = ReadRequiredString(step, "type", where, &type); !s.ok()) return s;
  if (type != "Sequence") return read_step(step, where, type);
  auto list = step.find(sequence_key);
  if (list == step.end() || !list->is_array()) {
    return InvalidFieldError(absl::StrCat(where, ".", sequence_key), "must be an array");
  }
  for (size_t i = 0; i < list->size(); ++i) {
    absl::Status s = ReadPipelineStep(
        (*list)[i], absl::StrCat(where, ".", sequence_key, "[", i, "]"), sequence_key, read_step);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status InvalidFieldError(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

absl::Status UnsupportedFieldError(absl::string_view where, absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat(where, ": ", what));
}

absl::StatusOr<std::string> ReadTokenizerFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

absl::StatusOr<Json> ParseTokenizerJsonObject(absl::string_view json) {
  Json root = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return InvalidFieldError("tokenizer.json", "not valid JSON");
  if (!root.is_object()) {
    return InvalidFieldError("tokenizer.json", "the document must be a JSON object");
  }
  return root;
}

absl::Status ReadOptionalBool(const Json& object, const char* key, const std::string& where,
                              bool* out) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) {
    return InvalidFieldError(absl::StrCat(where, ".", key), "must be true or false");
  }
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadRequiredString(const Json& object, const char* key, const std::string& where,
                                std::string* out) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) {
    return InvalidFieldError(absl::StrCat(where, ".", key), "must be a string");
  }
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status ForEachPipelineStep(const Json& object, const char* key, const char* sequence_key,
                                 const PipelineStepReader& read_step) {
  auto it = object.find(key);
  if (it == object.end()) return absl::OkStatus();
  return ReadPipelineStep(*it, key, sequence_key, read_step);
}

absl::Status ForEachVocabEntry(const Json& vocab, const VocabEntryAdder& add) {
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return InvalidFieldError("model.vocab", absl::StrCat("the id of '", it.key(),
                                                           "' must be an integer in [0, 2^31)"));
    }
    add(it.key(), static_cast<int32_t>(it.value().get<int64_t>()));
  }
  return absl::OkStatus();
}

absl::Status TokenizerJsonReader::Read(const Json& root, HfAddedTokens* added,
                                       HfAddedTokens::WordCharacterTest is_word_character) {
  auto model = root.find("model");
  if (model == root.end() || !model->is_object()) {
    return InvalidFieldError("model", "missing (must be an object)");
  }
  if (absl::Status s = Model(*model); !s.ok()) return s;
  // The normalizer before the added tokens: normalized=true tokens match in normalized form.
  struct Pipeline {
    const char* key;
    const char* sequence_key;
    absl::Status (TokenizerJsonReader::*read_step)(const Json&, const std::string&,
                                                   const std::string&);
  };
  for (const Pipeline& pipeline :
       {Pipeline{"normalizer", "normalizers", &TokenizerJsonReader::Normalizer},
        Pipeline{"pre_tokenizer", "pretokenizers", &TokenizerJsonReader::PreTokenizer}}) {
    absl::Status s = ForEachPipelineStep(
        root, pipeline.key, pipeline.sequence_key,
        [&](const Json& step, const std::string& where, const std::string& type) {
          return (this->*pipeline.read_step)(step, where, type);
        });
    if (!s.ok()) return s;
  }
  absl::StatusOr<HfAddedTokens> parsed = HfAddedTokens::Parse(
      root.value("added_tokens", Json()), Vocabulary(), VocabularySize(),
      [this](absl::string_view text) { return Normalize(text); }, is_word_character);
  if (!parsed.ok()) return parsed.status();
  *added = *std::move(parsed);
  return absl::OkStatus();
}

std::string BytePieceName(int byte) {
  char name[8];
  std::snprintf(name, sizeof(name), "<0x%02X>", byte);
  return name;
}

void FindBytePieceIds(const std::unordered_map<std::string, int32_t>& vocab,
                      absl::Span<int32_t> byte_ids) {
  for (int b = 0; b < 256; ++b) {
    auto it = vocab.find(BytePieceName(b));
    byte_ids[b] = it == vocab.end() ? -1 : it->second;
  }
}

}  // namespace embedserve::tokenizers
