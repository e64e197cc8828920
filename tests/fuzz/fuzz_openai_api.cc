// libFuzzer target: arbitrary bytes as HTTP API bodies (OpenAI embeddings, Cohere-shaped
// rerank), parsed and, when accepted, answered with a made-up response of the right shape.
// Nothing may crash, and every refusal is INVALID_ARGUMENT.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "server/http/openai_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace http = embedserve::http;
  const absl::string_view body(reinterpret_cast<const char*>(data), size);
  auto embeddings = http::ParseEmbeddingsRequest(body);
  if (embeddings.ok()) {
    embedserve::v1::EmbedResponse response;
    for (int i = 0; i < embeddings->request.inputs_size(); ++i) {
      auto* vector = response.add_embeddings()->mutable_vector();
      vector->add_shape(2);
      vector->add_values(0.5f);
      vector->add_values(-1.f);
    }
    (void)http::WriteEmbeddingsResponse(*embeddings, response);
  } else if (embeddings.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();
  }
  auto rerank = http::ParseRerankRequest(body);
  if (rerank.ok()) {
    embedserve::v1::RerankResponse response;
    for (int i = 0; i < rerank->request.candidates_size(); ++i) {
      auto* result = response.add_results();
      result->set_index(i);
      result->set_score(static_cast<float>(i));
    }
    (void)http::WriteRerankResponse(*rerank, response);
  } else if (rerank.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();
  }
  (void)http::ErrorFor(absl::InvalidArgumentError(std::string(body.substr(0, 256))),
                       http::Route::kEmbeddings);
  return 0;
}
