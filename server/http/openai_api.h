// The HTTP API's JSON shapes, translated to and from the gRPC messages: OpenAI's
// /v1/embeddings, the Cohere/Jina rerank shape (shared by vLLM and Infinity), /v1/models and
// OpenAI's error object. Pure functions: no I/O, no server state.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "embedserve/v1/embed.pb.h"
#include "embedserve/v1/models.pb.h"

namespace embedserve::http {

// How /v1/embeddings returns each vector: a JSON array of numbers, or the base64 of its
// little-endian float32 bytes (OpenAI's `encoding_format: "base64"`).
enum class VectorFormat { kFloat, kBase64 };

struct EmbeddingsCall {
  v1::EmbedRequest request;  // model, inputs; options ask for packed float32
  VectorFormat format = VectorFormat::kFloat;
  std::optional<int> dimensions;  // as asked; only the model's own is accepted
};

// Parses an OpenAI embeddings request:
//   {"model": str, "input": str | [item, ...], "encoding_format": "float" | "base64",
//    "dimensions": int, "modality": "text" | "image", "truncate": bool, "user": str}
// `modality: "image"` (Infinity's convention) takes each string input as a
// `data:image/...;base64,` URL; remote URLs are refused, never fetched. An item may also be
// {"text": str} or {"image": data URL}, mixing both in one call (our extension). `truncate`
// false (TEI's field) refuses a text over the model's context instead of cutting it. Token-id
// inputs are refused. Unknown fields are ignored, as OpenAI clients send some.
// INVALID_ARGUMENT names the field.
absl::StatusOr<EmbeddingsCall> ParseEmbeddingsRequest(absl::string_view body);

// The OpenAI response for `response` (INVALID_ARGUMENT if `call.dimensions` is not the
// model's dimension). A multi-vector item carries its flat row-major values in `embedding`
// and `"shape": [rows, dim]`.
absl::StatusOr<std::string> WriteEmbeddingsResponse(const EmbeddingsCall& call,
                                                    const v1::EmbedResponse& response);

struct RerankCall {
  v1::RerankRequest request;  // model, query, candidates, top_k
  std::vector<std::string> documents;
  bool return_documents = false;
  // Give the cross-encoder's raw logit instead of its sigmoid (TEI's name for it).
  bool raw_scores = false;
};

// Parses {"model": str, "query": str, "documents": [str, ...], "top_n": int,
// "return_documents": bool, "raw_scores": bool} ("texts" is taken for "documents", as TEI
// names them).
absl::StatusOr<RerankCall> ParseRerankRequest(absl::string_view body);

// {"model", "results": [{"index", "relevance_score", "document": {"text"}}]}, best first.
std::string WriteRerankResponse(const RerankCall& call, const v1::RerankResponse& response);

// OpenAI's model list, each entry with embedserve's description beside the usual fields.
std::string WriteModelsResponse(const v1::ListModelsResponse& response);

// Which request an error answers, to name its fields as that route's JSON names them.
enum class Route { kEmbeddings, kRerank, kOther };

struct HttpError {
  int status = 500;
  std::string body;  // {"error": {"message", "type", "param", "code"}}
};

// The HTTP status each gRPC code maps to (INVALID_ARGUMENT 400, UNAUTHENTICATED 401,
// PERMISSION_DENIED 403, NOT_FOUND 404, RESOURCE_EXHAUSTED 429, CANCELLED 499,
// UNIMPLEMENTED 501, UNAVAILABLE 503, DEADLINE_EXCEEDED 504, the rest 500 or 400).
int HttpStatusFor(absl::StatusCode code);

// OpenAI's error object for `status`, with the gRPC field names in its message rewritten to
// the route's JSON names ("inputs[2]" -> "input[2]", "candidates" -> "documents").
HttpError ErrorFor(const absl::Status& status, Route route);

}  // namespace embedserve::http
