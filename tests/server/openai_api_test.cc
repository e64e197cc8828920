// The HTTP API's JSON translation: OpenAI embeddings and Cohere-shaped rerank requests parsed
// into gRPC messages, responses written back, errors mapped to OpenAI's object and HTTP
// statuses. Expectations are hand-written JSON and hand-computed bytes.
#include <cstring>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "server/http/openai_api.h"

namespace http = embedserve::http;
namespace v1 = embedserve::v1;
using nlohmann::json;

namespace {

std::string MessageOf(const absl::Status& status) { return std::string(status.message()); }

// A response with one packed float32 vector per row of `rows`.
v1::EmbedResponse PackedResponse(const std::vector<std::vector<float>>& rows, int token_count) {
  v1::EmbedResponse response;
  response.set_model("demo");
  for (const auto& row : rows) {
    v1::Embedding* embedding = response.add_embeddings();
    embedding->mutable_vector()->add_shape(static_cast<int64_t>(row.size()));
    embedding->mutable_vector()->set_dtype(v1::DTYPE_FLOAT32);
    std::string bytes(row.size() * sizeof(float), '\0');
    std::memcpy(bytes.data(), row.data(), bytes.size());
    embedding->mutable_vector()->set_data(bytes);
    embedding->set_token_count(token_count);
  }
  return response;
}

}  // namespace

TEST_CASE("embeddings requests: a string or a list, formats, dimensions, images") {
  SECTION("a single string is one text input, packed float32 asked for") {
    auto call = http::ParseEmbeddingsRequest(R"({"model":"demo","input":"a dog"})");
    REQUIRE(call.ok());
    CHECK(call->request.model() == "demo");
    REQUIRE(call->request.inputs_size() == 1);
    CHECK(call->request.inputs(0).text() == "a dog");
    CHECK(call->request.options().encoding() == v1::ENCODING_PACKED);
    CHECK(call->request.options().dtype() == v1::DTYPE_FLOAT32);
    CHECK(call->format == http::VectorFormat::kFloat);
    CHECK_FALSE(call->dimensions.has_value());
  }
  SECTION("a list keeps its order; base64 and dimensions are read; unknown fields ignored") {
    auto call = http::ParseEmbeddingsRequest(
        R"({"model":"m","input":["x","y","z"],"encoding_format":"base64","dimensions":32,
            "user":"u-1","extra":{"a":1}})");
    REQUIRE(call.ok());
    REQUIRE(call->request.inputs_size() == 3);
    CHECK(call->request.inputs(2).text() == "z");
    CHECK(call->format == http::VectorFormat::kBase64);
    CHECK(call->dimensions == 32);
  }
  SECTION("object items mix texts and images in one call; truncate false refuses long texts") {
    const std::string bytes("GIF89a", 6);
    const std::string body =
        json{{"model", "demo"},
             {"truncate", false},
             {"input", {{{"text", "a dog"}}, {{"image", "data:image/gif;base64," + absl::Base64Escape(bytes)}}}}}
            .dump();
    auto call = http::ParseEmbeddingsRequest(body);
    REQUIRE(call.ok());
    CHECK(call->request.inputs(0).text() == "a dog");
    CHECK(call->request.inputs(1).image() == bytes);
    CHECK(call->request.options().truncation() == v1::TRUNCATION_ERROR);
  }
  SECTION("images come as base64 data URLs") {
    const std::string bytes("\x89PNG\r\n\x1a\nrest", 12);
    const std::string body = json{{"model", "demo"},
                                  {"modality", "image"},
                                  {"input", {"data:image/png;base64," + absl::Base64Escape(bytes)}}}
                                 .dump();
    auto call = http::ParseEmbeddingsRequest(body);
    REQUIRE(call.ok());
    CHECK(call->request.inputs(0).image() == bytes);
  }
}

TEST_CASE("bad embeddings requests name the field") {
  struct Case {
    const char* body;
    std::vector<const char*> parts;
  };
  const Case cases[] = {
      {"not json", {"body", "JSON"}},
      {"[1,2]", {"body", "object"}},
      {R"({"input":"a"})", {"model", "required"}},
      {R"({"model":7,"input":"a"})", {"model", "string"}},
      {R"({"model":"m"})", {"input", "required"}},
      {R"({"model":"m","input":[]})", {"input", "empty"}},
      {R"({"model":"m","input":{"a":1}})", {"input", "an object"}},
      {R"({"model":"m","input":["a",3]})", {"input[1]", "token ids"}},
      {R"({"model":"m","input":[[1,2,3]]})", {"input[0]", "token ids"}},
      {R"({"model":"m","input":["a",null]})", {"input[1]", "null"}},
      {R"({"model":"m","input":[{"text":"a","image":"b"}]})", {"input[0]", "exactly one"}},
      {R"({"model":"m","input":[{}]})", {"input[0]", "exactly one"}},
      {R"({"model":"m","input":[{"text":1}]})", {"input[0]", "a number"}},
      {R"({"model":"m","input":[{"image":"https://x/y.png"}]})", {"input[0]", "never fetched"}},
      {R"({"model":"m","input":"a","truncate":"no"})", {"truncate", "true or false"}},
      {R"({"model":"m","input":"a","encoding_format":"int8"})", {"encoding_format", "int8"}},
      {R"({"model":"m","input":"a","dimensions":0})", {"dimensions", "range"}},
      {R"({"model":"m","input":"a","dimensions":1.5})", {"dimensions", "whole"}},
      {R"({"model":"m","input":"a","modality":"audio"})", {"modality", "audio"}},
      {R"({"model":"m","modality":"image","input":["https://example.com/a.png"]})",
       {"input[0]", "never fetched"}},
      {R"({"model":"m","modality":"image","input":"a.png"})", {"input", "data:"}},
      {R"({"model":"m","modality":"image","input":"data:image/png,abc"})", {"input", "base64"}},
      {R"({"model":"m","modality":"image","input":"data:image/png;base64,@@@"})",
       {"input", "not valid base64"}},
      {R"({"model":"m","modality":"image","input":"data:image/png;base64,"})",
       {"input", "empty"}},
  };
  for (const Case& c : cases) {
    INFO(c.body);
    auto call = http::ParseEmbeddingsRequest(c.body);
    REQUIRE_FALSE(call.ok());
    CHECK(call.status().code() == absl::StatusCode::kInvalidArgument);
    for (const char* part : c.parts) CHECK_THAT(MessageOf(call.status()), Catch::Contains(part));
  }
}

TEST_CASE("embeddings responses: floats, base64 of little-endian float32, usage, shape") {
  const std::vector<float> a = {0.5f, -0.25f, 1.0f};
  const std::vector<float> b = {0.1f, 0.2f, 0.3f};
  auto call = http::ParseEmbeddingsRequest(R"({"model":"demo","input":["a","b"]})");
  REQUIRE(call.ok());

  SECTION("float: the numbers read back exactly") {
    auto body = http::WriteEmbeddingsResponse(*call, PackedResponse({a, b}, 4));
    REQUIRE(body.ok());
    const json out = json::parse(*body);
    CHECK(out["object"] == "list");
    CHECK(out["model"] == "demo");
    REQUIRE(out["data"].size() == 2);
    CHECK(out["data"][1]["index"] == 1);
    CHECK(out["data"][1]["object"] == "embedding");
    for (int k = 0; k < 3; ++k) {
      CHECK(out["data"][0]["embedding"][k].get<float>() == a[k]);
      CHECK(out["data"][1]["embedding"][k].get<float>() == b[k]);
    }
    CHECK(out["usage"]["prompt_tokens"] == 8);
    CHECK(out["usage"]["total_tokens"] == 8);
    CHECK_FALSE(out["data"][0].contains("shape"));
  }
  SECTION("base64: 0.5f is 00 00 00 3f little-endian") {
    call->format = http::VectorFormat::kBase64;
    auto body = http::WriteEmbeddingsResponse(*call, PackedResponse({{0.5f}}, 1));
    REQUIRE(body.ok());
    const json out = json::parse(*body);
    CHECK(out["data"][0]["embedding"] == absl::Base64Escape(std::string("\0\0\0\x3f", 4)));
  }
  SECTION("dimensions: the model's own is accepted, another is refused") {
    call->dimensions = 3;
    CHECK(http::WriteEmbeddingsResponse(*call, PackedResponse({a}, 1)).ok());
    call->dimensions = 2;
    auto refused = http::WriteEmbeddingsResponse(*call, PackedResponse({a}, 1));
    REQUIRE_FALSE(refused.ok());
    CHECK_THAT(MessageOf(refused.status()),
               Catch::Contains("dimensions") && Catch::Contains("3 dimensions"));
  }
  SECTION("a multi-vector comes flat, with its shape") {
    v1::EmbedResponse response;
    v1::Tensor* tensor = response.add_embeddings()->mutable_vector();
    tensor->add_shape(2);
    tensor->add_shape(2);
    for (float v : {1.f, 2.f, 3.f, 4.f}) tensor->add_values(v);
    auto body = http::WriteEmbeddingsResponse(*call, response);
    REQUIRE(body.ok());
    const json out = json::parse(*body);
    CHECK(out["data"][0]["shape"] == json::array({2, 2}));
    CHECK(out["data"][0]["embedding"] == json::array({1.0, 2.0, 3.0, 4.0}));
  }
}

TEST_CASE("rerank requests and responses in the Cohere/Jina shape") {
  auto call = http::ParseRerankRequest(
      R"({"model":"r","query":"q","documents":["d0",{"text":"d1"},"d2"],"top_n":2,
          "return_documents":true})");
  REQUIRE(call.ok());
  CHECK(call->request.query().text() == "q");
  REQUIRE(call->request.candidates_size() == 3);
  CHECK(call->request.candidates(1).text() == "d1");
  CHECK(call->request.top_k() == 2);
  CHECK(call->return_documents);
  CHECK_FALSE(call->raw_scores);
  CHECK_FALSE(call->request.has_sigmoid());

  v1::RerankResponse response;
  auto* best = response.add_results();
  best->set_index(2);
  best->set_score(0.75f);
  auto* next = response.add_results();
  next->set_index(0);
  next->set_score(-1.5f);
  const json out = json::parse(http::WriteRerankResponse(*call, response));
  CHECK(out["model"] == "r");
  REQUIRE(out["results"].size() == 2);
  CHECK(out["results"][0]["index"] == 2);
  CHECK(out["results"][0]["relevance_score"].get<float>() == 0.75f);
  CHECK(out["results"][0]["document"]["text"] == "d2");
  CHECK(out["results"][1]["document"]["text"] == "d0");

  call->return_documents = false;
  CHECK_FALSE(json::parse(http::WriteRerankResponse(*call, response))["results"][0].contains(
      "document"));

  auto tei = http::ParseRerankRequest(R"({"model":"r","query":"q","texts":["a"],"raw_scores":true})");
  REQUIRE(tei.ok());
  CHECK(tei->documents == std::vector<std::string>{"a"});
  CHECK(tei->raw_scores);

  for (const char* bad : {R"({"model":"r","documents":["a"]})", R"({"model":"r","query":"q"})",
                          R"({"model":"r","query":"q","documents":"a"})",
                          R"({"model":"r","query":"q","documents":[1]})",
                          R"({"model":"r","query":"q","documents":["a"],"top_n":-1})",
                          R"({"model":"r","query":"q","documents":["a"],"return_documents":1})"}) {
    INFO(bad);
    auto refused = http::ParseRerankRequest(bad);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("errors: OpenAI's error object, the HTTP status per gRPC code, the route's names") {
  CHECK(http::HttpStatusFor(absl::StatusCode::kInvalidArgument) == 400);
  CHECK(http::HttpStatusFor(absl::StatusCode::kUnauthenticated) == 401);
  CHECK(http::HttpStatusFor(absl::StatusCode::kPermissionDenied) == 403);
  CHECK(http::HttpStatusFor(absl::StatusCode::kNotFound) == 404);
  CHECK(http::HttpStatusFor(absl::StatusCode::kResourceExhausted) == 429);
  CHECK(http::HttpStatusFor(absl::StatusCode::kUnavailable) == 503);
  CHECK(http::HttpStatusFor(absl::StatusCode::kDeadlineExceeded) == 504);
  CHECK(http::HttpStatusFor(absl::StatusCode::kInternal) == 500);

  const http::HttpError error = http::ErrorFor(
      absl::InvalidArgumentError("inputs[2].text: 2000000 bytes, over --max-text-bytes 1048576"),
      http::Route::kEmbeddings);
  CHECK(error.status == 400);
  const json out = json::parse(error.body);
  CHECK(out["error"]["message"] ==
        "input[2].text: 2000000 bytes, over --max-text-bytes 1048576");
  CHECK(out["error"]["type"] == "invalid_request_error");
  CHECK(out["error"]["param"] == "input");
  CHECK(out["error"]["code"] == "invalid_argument");

  const json rerank = json::parse(
      http::ErrorFor(absl::InvalidArgumentError("top_k: 0 must be at least 1"), http::Route::kRerank)
          .body);
  CHECK(rerank["error"]["message"] == "top_n: 0 must be at least 1");
  CHECK(rerank["error"]["param"] == "top_n");

  const http::HttpError missing =
      http::ErrorFor(absl::NotFoundError("no model 'x'; serving: demo"), http::Route::kEmbeddings);
  CHECK(missing.status == 404);
  CHECK(json::parse(missing.body)["error"]["param"].is_null());
  CHECK(json::parse(missing.body)["error"]["type"] == "not_found_error");
}
