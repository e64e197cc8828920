// What the tokenizer loaders share: reading a tokenizer file, errors that name the field at
// fault, and the readers of tokenizer.json's common fields.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "nlohmann/json_fwd.hpp"
#include "server/tokenizers/hf_added_tokens.h"

namespace embedserve::tokenizers {

// INVALID_ARGUMENT "<where>: <what>": the file is malformed at `where` (a JSON field such as
// model.vocab[3], a ModelProto field, a vocab.txt line).
absl::Status InvalidFieldError(absl::string_view where, absl::string_view what);
// FAILED_PRECONDITION "<where>: <what>": well-formed, but what `where` asks is not implemented.
absl::Status UnsupportedFieldError(absl::string_view where, absl::string_view what);

// The bytes of the file at `path`; NOT_FOUND "<path>: cannot open".
absl::StatusOr<std::string> ReadTokenizerFile(const std::string& path);

// parse(the bytes of the file at `path`): ReadTokenizerFile's error, or what parse returns,
// an error's message prefixed by "<path>: ".
template <typename Parse>
auto ParseTokenizerFile(const std::string& path, Parse&& parse)
    -> decltype(parse(absl::string_view())) {
  absl::StatusOr<std::string> bytes = ReadTokenizerFile(path);
  if (!bytes.ok()) return bytes.status();
  auto result = parse(absl::string_view(*bytes));
  if (result.ok()) return result;
  return absl::Status(result.status().code(), absl::StrCat(path, ": ", result.status().message()));
}

// --- tokenizer.json fields. Errors are INVALID_ARGUMENT naming the field (<where>.<key>). ---

// The document of a tokenizer.json; an error if it is not JSON or not an object.
absl::StatusOr<nlohmann::json> ParseTokenizerJsonObject(absl::string_view json);

// object[key] absent or null: *out is kept; else it must be a boolean.
absl::Status ReadOptionalBool(const nlohmann::json& object, const char* key,
                              const std::string& where, bool* out);
// object[key] must be a string.
absl::Status ReadRequiredString(const nlohmann::json& object, const char* key,
                                const std::string& where, std::string* out);

// A normalizer or pre-tokenizer: object[key] ("normalizer", "pre_tokenizer") absent or null
// is none; else it is an object with a string "type", and a "Sequence" lists its steps under
// `sequence_key` ("normalizers", "pretokenizers"), nested Sequences flattened. Every other
// step goes to read_step(step, where, type), `where` naming it (normalizer.normalizers[1]);
// the first error is returned.
using PipelineStepReader = std::function<absl::Status(
    const nlohmann::json& step, const std::string& where, const std::string& type)>;
absl::Status ForEachPipelineStep(const nlohmann::json& object, const char* key,
                                 const char* sequence_key, const PipelineStepReader& read_step);

// A model's vocabulary object (token -> id): add(token, id) for each entry, in the object's
// order; an error naming model.vocab if an id is not an integer in [0, 2^31).
using VocabEntryAdder = std::function<void(const std::string& token, int32_t id)>;
absl::Status ForEachVocabEntry(const nlohmann::json& vocab, const VocabEntryAdder& add);

// The walk of a tokenizer.json that every reader here shares, in the library's order: the
// model, the normalizer's steps, the pre-tokenizer's steps, then the added tokens. A reader
// derives from it and reads what each part holds for its tokenizer.
class TokenizerJsonReader {
 public:
  virtual ~TokenizerJsonReader() = default;

  // Reads `root` (ParseTokenizerJsonObject's document): "model" (must be an object) goes to
  // Model; the steps of "normalizer" and "pre_tokenizer" (ForEachPipelineStep) go to
  // Normalizer and PreTokenizer; then "added_tokens" (absent or null: none) is read into
  // *added by HfAddedTokens::Parse, against Vocabulary(), VocabularySize() and Normalize().
  // The first error is returned.
  absl::Status Read(const nlohmann::json& root, HfAddedTokens* added,
                    HfAddedTokens::WordCharacterTest is_word_character =
                        HfAddedTokens::IsUnicodeWordCharacter);

 protected:
  virtual absl::Status Model(const nlohmann::json& model) = 0;
  // One step that is not a Sequence; `where` names it, `type` is its "type".
  virtual absl::Status Normalizer(const nlohmann::json& step, const std::string& where,
                                  const std::string& type) = 0;
  virtual absl::Status PreTokenizer(const nlohmann::json& step, const std::string& where,
                                    const std::string& type) = 0;
  // What the added tokens are read against, once the parts before them are read: the model's
  // vocabulary (content -> id), its number of entries, and the normalizer.
  virtual const std::unordered_map<std::string, int32_t>& Vocabulary() const = 0;
  virtual int64_t VocabularySize() const = 0;
  virtual std::string Normalize(absl::string_view text) const = 0;
};

// "<0xXX>", the piece byte fallback uses for `byte`.
std::string BytePieceName(int byte);
// byte_ids[b] = the id of BytePieceName(b) in `vocab`, -1 where absent (256 entries).
void FindBytePieceIds(const std::unordered_map<std::string, int32_t>& vocab,
                      absl::Span<int32_t> byte_ids);

}  // namespace embedserve::tokenizers
