// OpenAI-shaped JSON to gRPC messages and back.
#include "server/http/openai_api.h"

#include <charconv>
#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "embedserve/v1/types.pb.h"

namespace embedserve::http {
namespace {

using nlohmann::json;

absl::Status Bad(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

const char* TypeName(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "a number";
  }
}

absl::StatusOr<json> ParseObject(absl::string_view body) {
  json parsed = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return Bad("body", "not valid JSON");
  if (!parsed.is_object()) {
    return Bad("body", absl::StrCat("expected a JSON object, got ", TypeName(parsed)));
  }
  return parsed;
}

// A string field: absent gives `fallback`; any other type is an error.
absl::StatusOr<std::string> StringField(const json& object, const char* name,
                                        const std::string& fallback = "") {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_string()) return Bad(name, absl::StrCat("expected a string, got ", TypeName(*it)));
  return it->get<std::string>();
}

absl::StatusOr<bool> BoolField(const json& object, const char* name, bool fallback) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return Bad(name, absl::StrCat("expected true or false, got ", TypeName(*it)));
  return it->get<bool>();
}

// A whole number in [min, max]; absent is nullopt.
absl::StatusOr<std::optional<int>> IntField(const json& object, const char* name, int min,
                                            int max) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return std::optional<int>();
  const bool whole = it->is_number_integer() ||
                     (it->is_number_float() && std::floor(it->get<double>()) == it->get<double>());
  if (!whole) return Bad(name, absl::StrCat("expected a whole number, got ", TypeName(*it)));
  const double value = it->get<double>();
  if (value < min || value > max) {
    return Bad(name, absl::StrCat(value, " is out of range [", min, ", ", max, "]"));
  }
  return std::optional<int>(static_cast<int>(value));
}

absl::StatusOr<std::string> ModelField(const json& object) {
  absl::StatusOr<std::string> model = StringField(object, "model");
  if (!model.ok()) return model.status();
  if (model->empty()) return Bad("model", "required: the name of a served model (GET /v1/models)");
  return model;
}

// The bytes of a `data:[<mime>][;...];base64,<data>` URL.
absl::StatusOr<std::string> DataUrlBytes(const std::string& field, const std::string& url) {
  if (absl::StartsWithIgnoreCase(url, "http://") || absl::StartsWithIgnoreCase(url, "https://")) {
    return Bad(field, "remote URLs are never fetched: send the image inline as a "
                      "'data:image/...;base64,...' URL");
  }
  if (!absl::StartsWithIgnoreCase(url, "data:")) {
    return Bad(field, "expected a 'data:image/...;base64,...' URL (modality \"image\")");
  }
  const size_t comma = url.find(',');
  if (comma == std::string::npos) return Bad(field, "a data: URL needs a ',' before its data");
  const absl::string_view header = absl::string_view(url).substr(5, comma - 5);
  if (!absl::EndsWithIgnoreCase(header, ";base64")) {
    return Bad(field, "only base64 data: URLs are accepted (';base64,' before the data)");
  }
  std::string bytes;
  if (!absl::Base64Unescape(absl::string_view(url).substr(comma + 1), &bytes)) {
    return Bad(field, "the data after ';base64,' is not valid base64");
  }
  if (bytes.empty()) return Bad(field, "the image is empty");
  return bytes;
}

// A JSON string literal (the text came from a JSON parse or a proto string: valid UTF-8, but
// a bad byte becomes U+FFFD rather than an exception).
std::string Quote(const std::string& text) {
  return json(text).dump(-1, ' ', false, json::error_handler_t::replace);
}

// Appends the shortest decimal that reads back as `value` (JSON has no NaN or infinity; the
// server never answers OK with one, and null stands in should it ever happen).
void AppendFloat(std::string* out, float value) {
  if (!std::isfinite(value)) {
    out->append("null");
    return;
  }
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  out->append(buffer, result.ptr);
}

// The float32 values of a packed little-endian float32 tensor (or of `values`).
std::vector<float> FloatsOf(const v1::Tensor& tensor) {
  if (tensor.values_size() > 0) return {tensor.values().begin(), tensor.values().end()};
  std::vector<float> out(tensor.data().size() / sizeof(float));
  std::memcpy(out.data(), tensor.data().data(), out.size() * sizeof(float));  // x86/arm: LE
  return out;
}

}  // namespace

absl::StatusOr<EmbeddingsCall> ParseEmbeddingsRequest(absl::string_view body) {
  absl::StatusOr<json> parsed = ParseObject(body);
  if (!parsed.ok()) return parsed.status();
  const json& object = *parsed;
  EmbeddingsCall call;
  absl::StatusOr<std::string> model = ModelField(object);
  if (!model.ok()) return model.status();
  call.request.set_model(*std::move(model));

  absl::StatusOr<std::string> format = StringField(object, "encoding_format", "float");
  if (!format.ok()) return format.status();
  if (*format == "base64") {
    call.format = VectorFormat::kBase64;
  } else if (*format != "float") {
    return Bad("encoding_format", absl::StrCat("expected \"float\" or \"base64\", got \"",
                                               Abbreviate(*format, 64), "\""));
  }
  absl::StatusOr<std::optional<int>> dimensions = IntField(object, "dimensions", 1, 1 << 20);
  if (!dimensions.ok()) return dimensions.status();
  call.dimensions = *dimensions;

  absl::StatusOr<std::string> modality = StringField(object, "modality", "text");
  if (!modality.ok()) return modality.status();
  const bool images = *modality == "image";
  if (!images && *modality != "text") {
    return Bad("modality", absl::StrCat("expected \"text\" or \"image\", got \"",
                                        Abbreviate(*modality, 64), "\""));
  }

  auto input = object.find("input");
  if (input == object.end() || input->is_null()) {
    return Bad("input", "required: a string or a list of strings");
  }
  std::vector<const json*> items;
  if (input->is_string()) {
    items.push_back(&*input);
  } else if (input->is_array()) {
    if (input->empty()) return Bad("input", "empty list: send at least one item");
    for (const json& item : *input) items.push_back(&item);
  } else {
    return Bad("input", absl::StrCat("expected a string or a list of strings, got ",
                                     TypeName(*input)));
  }
  call.request.mutable_inputs()->Reserve(static_cast<int>(items.size()));
  for (size_t i = 0; i < items.size(); ++i) {
    const json& item = *items[i];
    const std::string field = input->is_array() ? absl::StrCat("input[", i, "]") : "input";
    v1::Input* out = call.request.add_inputs();
    // An object names its item's modality, so that one call can mix texts and images.
    if (item.is_object()) {
      auto text = item.find("text");
      auto image = item.find("image");
      if ((text == item.end()) == (image == item.end())) {
        return Bad(field, "an object item needs exactly one of \"text\" or \"image\"");
      }
      const auto& value = text != item.end() ? *text : *image;
      if (!value.is_string()) {
        return Bad(field, absl::StrCat("expected a string, got ", TypeName(value)));
      }
      if (text != item.end()) {
        out->set_text(value.get<std::string>());
      } else {
        absl::StatusOr<std::string> bytes =
            DataUrlBytes(field, value.get_ref<const std::string&>());
        if (!bytes.ok()) return bytes.status();
        out->set_image(*std::move(bytes));
      }
      continue;
    }
    if (!item.is_string()) {
      return Bad(field, item.is_number() || item.is_array()
                            ? "token ids are not accepted: send the text (the server tokenizes "
                              "with the model's own tokenizer)"
                            : absl::StrCat("expected a string, got ", TypeName(item)));
    }
    if (images) {
      absl::StatusOr<std::string> bytes = DataUrlBytes(field, item.get_ref<const std::string&>());
      if (!bytes.ok()) return bytes.status();
      out->set_image(*std::move(bytes));
    } else {
      out->set_text(item.get<std::string>());
    }
  }
  absl::StatusOr<bool> truncate = BoolField(object, "truncate", true);
  if (!truncate.ok()) return truncate.status();
  if (!*truncate) call.request.mutable_options()->set_truncation(v1::TRUNCATION_ERROR);
  // Packed float32 carries the exact bytes base64 wants, and decodes without a copy per value.
  call.request.mutable_options()->set_dtype(v1::DTYPE_FLOAT32);
  call.request.mutable_options()->set_encoding(v1::ENCODING_PACKED);
  return call;
}

absl::StatusOr<std::string> WriteEmbeddingsResponse(const EmbeddingsCall& call,
                                                    const v1::EmbedResponse& response) {
  std::string out = "{\"object\":\"list\",\"model\":";
  out += Quote(response.model().empty() ? call.request.model() : response.model());
  out += ",\"data\":[";
  int64_t tokens = 0;
  for (int i = 0; i < response.embeddings_size(); ++i) {
    const v1::Embedding& embedding = response.embeddings(i);
    const v1::Tensor& tensor = embedding.vector();
    tokens += embedding.token_count();
    const int64_t dim = tensor.shape_size() > 0 ? tensor.shape(tensor.shape_size() - 1) : 0;
    if (call.dimensions.has_value() && *call.dimensions != dim) {
      return Bad("dimensions", absl::StrCat(*call.dimensions, " is not available: model '",
                                            Abbreviate(call.request.model(), 128), "' gives ",
                                            dim, " dimensions and cannot shorten them"));
    }
    if (i > 0) out += ',';
    absl::StrAppend(&out, "{\"object\":\"embedding\",\"index\":", i, ",\"embedding\":");
    if (call.format == VectorFormat::kBase64) {
      std::string packed;
      if (tensor.values_size() > 0) {
        packed.resize(tensor.values_size() * sizeof(float));
        std::memcpy(packed.data(), tensor.values().data(), packed.size());
      }
      out += '"';
      out += absl::Base64Escape(tensor.values_size() > 0 ? packed : tensor.data());
      out += '"';
    } else {
      out += '[';
      const std::vector<float> values = FloatsOf(tensor);
      for (size_t k = 0; k < values.size(); ++k) {
        if (k > 0) out += ',';
        AppendFloat(&out, values[k]);
      }
      out += ']';
    }
    if (tensor.shape_size() == 2) {
      absl::StrAppend(&out, ",\"shape\":[", tensor.shape(0), ",", tensor.shape(1), "]");
    }
    out += '}';
  }
  absl::StrAppend(&out, "],\"usage\":{\"prompt_tokens\":", tokens, ",\"total_tokens\":", tokens,
                  "}}");
  return out;
}

absl::StatusOr<RerankCall> ParseRerankRequest(absl::string_view body) {
  absl::StatusOr<json> parsed = ParseObject(body);
  if (!parsed.ok()) return parsed.status();
  const json& object = *parsed;
  RerankCall call;
  absl::StatusOr<std::string> model = ModelField(object);
  if (!model.ok()) return model.status();
  call.request.set_model(*std::move(model));

  auto query = object.find("query");
  if (query == object.end() || !query->is_string()) {
    return Bad("query", query == object.end() ? "required: a string"
                                              : absl::StrCat("expected a string, got ",
                                                             TypeName(*query)));
  }
  call.request.mutable_query()->set_text(query->get<std::string>());

  const char* documents_name = object.contains("documents") ? "documents" : "texts";
  auto documents = object.find(documents_name);
  if (documents == object.end() || documents->is_null()) {
    return Bad("documents", "required: a list of strings");
  }
  if (!documents->is_array()) {
    return Bad(documents_name,
               absl::StrCat("expected a list of strings, got ", TypeName(*documents)));
  }
  call.documents.reserve(documents->size());
  for (size_t i = 0; i < documents->size(); ++i) {
    const json& document = (*documents)[i];
    // Cohere also takes {"text": ...} objects.
    const json* text = &document;
    if (document.is_object()) {
      auto inner = document.find("text");
      if (inner != document.end()) text = &*inner;
    }
    if (!text->is_string()) {
      return Bad(absl::StrCat(documents_name, "[", i, "]"),
                 absl::StrCat("expected a string, got ", TypeName(*text)));
    }
    call.documents.push_back(text->get<std::string>());
    call.request.add_candidates()->set_text(call.documents.back());
  }
  absl::StatusOr<std::optional<int>> top_n = IntField(object, "top_n", 1, 1 << 30);
  if (!top_n.ok()) return top_n.status();
  if (top_n->has_value()) call.request.set_top_k(**top_n);
  absl::StatusOr<bool> return_documents = BoolField(object, "return_documents", false);
  if (!return_documents.ok()) return return_documents.status();
  call.return_documents = *return_documents;
  absl::StatusOr<bool> raw_scores = BoolField(object, "raw_scores", false);
  if (!raw_scores.ok()) return raw_scores.status();
  call.raw_scores = *raw_scores;
  return call;
}

std::string WriteRerankResponse(const RerankCall& call, const v1::RerankResponse& response) {
  std::string out = "{\"object\":\"rerank\",\"model\":";
  out += Quote(response.model().empty() ? call.request.model() : response.model());
  out += ",\"results\":[";
  for (int i = 0; i < response.results_size(); ++i) {
    const v1::RerankResult& result = response.results(i);
    if (i > 0) out += ',';
    absl::StrAppend(&out, "{\"index\":", result.index(), ",\"relevance_score\":");
    AppendFloat(&out, result.score());
    if (result.truncated()) out += ",\"truncated\":true";
    if (call.return_documents && result.index() >= 0 &&
        result.index() < static_cast<int>(call.documents.size())) {
      out += ",\"document\":{\"text\":";
      out += Quote(call.documents[result.index()]);
      out += '}';
    }
    out += '}';
  }
  out += "]}";
  return out;
}

std::string WriteModelsResponse(const v1::ListModelsResponse& response) {
  json data = json::array();
  for (const v1::ModelInfo& model : response.models()) {
    json modalities = json::array();
    for (int m : model.modalities()) {
      modalities.push_back(m == v1::MODALITY_TEXT    ? "text"
                           : m == v1::MODALITY_IMAGE ? "image"
                           : m == v1::MODALITY_PAIR  ? "pair"
                                                     : "unspecified");
    }
    const char* state = model.state() == v1::MODEL_STATE_READY     ? "ready"
                         : model.state() == v1::MODEL_STATE_LOADING ? "loading"
                         : model.state() == v1::MODEL_STATE_FAILED  ? "failed"
                                                                    : "unspecified";
    data.push_back({{"id", model.name()},
                    {"object", "model"},
                    {"created", 0},
                    {"owned_by", "embedserve"},
                    {"family", model.family()},
                    {"architecture", model.architecture()},
                    {"modalities", modalities},
                    {"embedding_dim", model.embedding_dim()},
                    {"multi_vector", model.multi_vector()},
                    {"context_length", model.context_length()},
                    {"dtype", model.dtype()},
                    {"device", model.device()},
                    {"state", state},
                    {"scoring", model.scoring()}});
  }
  return json{{"object", "list"}, {"data", data}}.dump(-1, ' ', false,
                                                       json::error_handler_t::replace);
}

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

HttpError ErrorFor(const absl::Status& status, Route route) {
  std::string message(status.message());
  // The gRPC fields a message may start with, and their names in this route's JSON.
  struct Rename {
    absl::string_view grpc, http;
  };
  static constexpr Rename kEmbeddings[] = {{"inputs", "input"}, {"options.", ""}};
  static constexpr Rename kRerank[] = {{"candidates", "documents"}, {"top_k", "top_n"},
                                       {"query.text", "query"}};
  absl::Span<const Rename> renames;
  if (route == Route::kEmbeddings) renames = kEmbeddings;
  if (route == Route::kRerank) renames = kRerank;
  for (const Rename& rename : renames) {
    if (absl::StartsWith(message, rename.grpc)) {
      message = absl::StrCat(rename.http, message.substr(rename.grpc.size()));
      break;
    }
  }
  // The field a message names comes before its first ':' (and any '[' or '.').
  json param = nullptr;
  const size_t colon = message.find(':');
  if (status.code() == absl::StatusCode::kInvalidArgument && colon != std::string::npos &&
      colon < 64) {
    const std::string head = message.substr(0, colon);
    const size_t end = head.find_first_of("[. ");
    const std::string field = head.substr(0, end);
    if (!field.empty() && field.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") == std::string::npos) {
      param = field;
    }
  }
  const int http_status = HttpStatusFor(status.code());
  const char* type = http_status == 401   ? "authentication_error"
                     : http_status == 403 ? "permission_error"
                     : http_status == 404 ? "not_found_error"
                     : http_status == 429 ? "rate_limit_error"
                     : http_status >= 500 ? "server_error"
                                          : "invalid_request_error";
  const json body = {{"error",
                      {{"message", message},
                       {"type", type},
                       {"param", param},
                       {"code", absl::AsciiStrToLower(StatusCodeName(status.code()))}}}};
  return {http_status, body.dump(-1, ' ', false, json::error_handler_t::replace)};
}

}  // namespace embedserve::http
