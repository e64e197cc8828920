// The request validation unit, table-driven: each row is a request (as text-format proto), the
// model it names, and the status the rules must give, with the message written out by hand.
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <google/protobuf/text_format.h>

#include "common/tensor_codec.h"
#include "server/rpc/request_parsing.h"
#include "server/rpc/request_validation.h"

namespace embedserve::rpc {
namespace {

using absl::StatusCode;
using pipeline::Modality;

models::ModelDescription Clip() {
  models::ModelDescription d;
  d.family = "openclip";
  d.architecture = "ViT-B-32";
  d.accepts_text = d.accepts_image = true;
  d.embedding_dim = 4;
  d.scoring = "cosine";
  d.capabilities.classify = true;
  return d;
}
models::ModelDescription ColPali() {
  models::ModelDescription d = Clip();
  d.family = "colpali";
  d.architecture = "ColPali";
  d.multi_vector = true;
  d.scoring = "maxsim";
  d.capabilities.classify = false;
  return d;
}
models::ModelDescription TextOnly() {
  models::ModelDescription d = Clip();
  d.accepts_image = false;
  return d;
}
models::ModelDescription ImageOnly() {
  models::ModelDescription d = Clip();
  d.accepts_text = false;
  return d;
}
models::ModelDescription Reranker() {
  models::ModelDescription d;
  d.family = "cross_encoder";
  d.architecture = "XLMRobertaForSequenceClassification";
  d.accepts_pairs = true;
  d.embedding_dim = 1;
  d.scoring = "cross_encoder";
  return d;
}

RequestLimits SmallLimits() {
  RequestLimits limits;
  limits.max_inputs = 2;
  limits.max_text_bytes = 8;
  limits.max_labels = 3;
  return limits;
}

template <typename Message>
Message Parse(const std::string& text) {
  Message message;
  REQUIRE(google::protobuf::TextFormat::ParseFromString(text, &message));
  return message;
}

// A text-format Input holding a precomputed float32 embedding of `shape`.
std::string EmbeddingInput(const std::vector<float>& values, const std::vector<int64_t>& shape) {
  v1::Input input;
  EncodeTensor(values, shape, v1::DTYPE_FLOAT32, /*packed=*/false, input.mutable_embedding());
  std::string text;
  google::protobuf::TextFormat::PrintToString(input, &text);
  return "{ " + text + " }";
}

struct Row {
  const char* rpc;  // "Embed", "Rerank", "Classify", "Tokenize"
  models::ModelDescription model;
  std::string request;  // text format of the RPC's request message
  StatusCode code;
  std::string message;  // the whole message; empty for OK
};

absl::Status Validate(const Row& row) {
  const TargetModel model{"m", row.model};
  const RequestLimits limits = SmallLimits();
  const std::string rpc = row.rpc;
  if (rpc == "Embed") {
    const auto request = Parse<v1::EmbedRequest>(row.request);
    return ValidateEmbed(model, request.inputs(), request.options(), limits).status();
  }
  if (rpc == "Rerank") return ValidateRerank(model, Parse<v1::RerankRequest>(row.request), limits).status();
  if (rpc == "Classify") {
    return ValidateClassify(model, Parse<v1::ClassifyRequest>(row.request), limits).status();
  }
  return ValidateTokenize(model, Parse<v1::TokenizeRequest>(row.request), limits).status();
}

TEST_CASE("every rule answers with its code and a message naming the field and the limit") {
  const std::string one_text = "inputs { text: \"a cat\" }";
  const std::vector<Row> table = {
      // Embed (and each EmbedStream message).
      {"Embed", Clip(), "", StatusCode::kInvalidArgument, "inputs: empty; send at least one input"},
      {"Embed", Clip(), one_text + one_text + one_text, StatusCode::kInvalidArgument,
       "inputs: 3 inputs, over the limit of 2 (--max-inputs)"},
      {"Embed", Clip(), "inputs { text: \"123456789\" }", StatusCode::kInvalidArgument,
       "inputs[0]: text is 9 bytes, over the limit of 8 (--max-text-bytes)"},
      {"Embed", Clip(), one_text + "inputs { image: \"\" }", StatusCode::kInvalidArgument,
       "inputs[1].image: empty (0 bytes)"},
      {"Embed", Clip(), "inputs " + EmbeddingInput({1, 0, 0, 0}, {4}),
       StatusCode::kInvalidArgument,
       "inputs[0]: a precomputed embedding is accepted only by Rerank; send text or image"},
      {"Embed", Clip(), "inputs { }", StatusCode::kInvalidArgument,
       "inputs[0]: no content; set text or image"},
      {"Embed", Clip(), one_text + " options { dtype: 99 }", StatusCode::kInvalidArgument,
       "options.dtype: unknown value 99"},
      {"Embed", Clip(), one_text + " options { dtype: DTYPE_FLOAT16 encoding: ENCODING_FLOAT_LIST }",
       StatusCode::kInvalidArgument,
       "options.encoding: ENCODING_FLOAT_LIST carries float32 only; use ENCODING_PACKED for "
       "float16/bfloat16"},
      {"Embed", Clip(), one_text + " options { truncation: 7 }", StatusCode::kInvalidArgument,
       "options.truncation: unknown value 7"},
      {"Embed", TextOnly(), one_text + "inputs { image: \"x\" }", StatusCode::kInvalidArgument,
       "inputs[1]: model 'm' does not accept images"},
      {"Embed", ImageOnly(), one_text, StatusCode::kInvalidArgument,
       "inputs[0]: model 'm' does not accept text"},
      {"Embed", Reranker(), one_text, StatusCode::kUnimplemented,
       "model 'm' (cross_encoder) scores (query, document) pairs and has no embeddings; call "
       "Rerank with a text query and text candidates"},
      {"Embed", Clip(), one_text + "inputs { image: \"x\" }", StatusCode::kOk, ""},

      // Rerank.
      {"Rerank", Clip(), "query { text: \"q\" }", StatusCode::kInvalidArgument,
       "candidates: empty; send at least one candidate"},
      {"Rerank", Clip(), "query { text: \"q\" } candidates { text: \"a\" } candidates { text: \"b\" } "
                         "candidates { text: \"c\" }",
       StatusCode::kInvalidArgument, "candidates: 3 candidates, over the limit of 2 (--max-inputs)"},
      {"Rerank", Clip(), "query { text: \"q\" } candidates { text: \"a\" } top_k: 2",
       StatusCode::kInvalidArgument,
       "top_k: 2 is outside [1, 1] (the number of candidates); leave it unset for all"},
      {"Rerank", Clip(), "query { text: \"q\" } candidates { text: \"a\" } top_k: 0",
       StatusCode::kInvalidArgument,
       "top_k: 0 is outside [1, 1] (the number of candidates); leave it unset for all"},
      {"Rerank", Clip(), "query { text: \"q\" } candidates { text: \"a\" } sigmoid: false",
       StatusCode::kInvalidArgument,
       "sigmoid: only a cross-encoder's logits are mapped through a sigmoid; model 'm' scores "
       "with cosine; leave it unset"},
      {"Rerank", Clip(), "query { } candidates { text: \"a\" }", StatusCode::kInvalidArgument,
       "query: no content; set text, image or embedding"},
      {"Rerank", Clip(), "query { text: \"q\" } candidates " + EmbeddingInput({1, 0, 0}, {3}),
       StatusCode::kInvalidArgument,
       "candidates[0].embedding: dimension 3 does not match the model's 4"},
      {"Rerank", Clip(), "query { text: \"q\" } candidates " + EmbeddingInput({1, 0, 0, 0, 0, 1, 0, 0}, {2, 4}),
       StatusCode::kInvalidArgument,
       "candidates[0].embedding: shape [2, 4] is a multi-vector; model 'ViT-B-32' scores single "
       "vectors [4]"},
      {"Rerank", ColPali(), "query { text: \"q\" } candidates " + EmbeddingInput({1, 0, 0, 0, 0, 1, 0, 0}, {2, 4}),
       StatusCode::kOk, ""},
      {"Rerank", Clip(), "query { text: \"q\" } candidates { image: \"\" }",
       StatusCode::kInvalidArgument, "candidates[0].image: empty (0 bytes)"},
      {"Rerank", Reranker(), "query { text: \"q\" } candidates { image: \"x\" }",
       StatusCode::kInvalidArgument,
       "candidates[0]: model 'm' is a cross-encoder and scores texts only; send text"},
      {"Rerank", Reranker(), "query " + EmbeddingInput({1}, {1}) + " candidates { text: \"a\" }",
       StatusCode::kInvalidArgument,
       "query: model 'm' is a cross-encoder and scores texts only; send text"},
      {"Rerank", Reranker(), "query { text: \"q\" } candidates { }", StatusCode::kInvalidArgument,
       "candidates[0]: no content; set text"},
      {"Rerank", Reranker(), "query { text: \"q\" } candidates { text: \"123456789\" }",
       StatusCode::kInvalidArgument,
       "candidates[0]: text is 9 bytes, over the limit of 8 (--max-text-bytes)"},
      {"Rerank", Reranker(), "query { text: \"q\" } candidates { text: \"a\" } sigmoid: true",
       StatusCode::kOk, ""},

      // Classify.
      {"Classify", ColPali(), "inputs { image: \"x\" } labels: \"a\" labels: \"b\"",
       StatusCode::kUnimplemented,
       "model 'm' (colpali) has no zero-shot classification; use a CLIP model"},
      {"Classify", Clip(), "inputs { image: \"x\" } labels: \"a\"", StatusCode::kInvalidArgument,
       "labels: 1 labels; send between 2 and 3 (--max-labels)"},
      {"Classify", Clip(), "inputs { image: \"x\" } labels: \"a\" labels: \"b\" labels: \"c\" labels: \"d\"",
       StatusCode::kInvalidArgument, "labels: 4 labels; send between 2 and 3 (--max-labels)"},
      {"Classify", Clip(), "inputs { image: \"x\" } labels: \"a\" labels: \"b\" prompt_template: \"a photo\"",
       StatusCode::kInvalidArgument,
       "prompt_template: must contain \"{}\" where the label goes, e.g. \"a photo of a {}.\""},
      {"Classify", Clip(), "labels: \"a\" labels: \"b\"", StatusCode::kInvalidArgument,
       "inputs: empty; send at least one input"},
      {"Classify", Clip(), "inputs { image: \"x\" } labels: \"a\" labels: \"\"",
       StatusCode::kInvalidArgument, "labels[1]: empty label"},
      {"Classify", Clip(), "inputs { image: \"x\" } labels: \"a\" labels: \"b\" prompt_template: \"photo of {}\"",
       StatusCode::kInvalidArgument,
       "labels[0]: text is 10 bytes, over the limit of 8 (--max-text-bytes)"},
      {"Classify", Clip(), "inputs { image: \"x\" } labels: \"a\" labels: \"b\" prompt_template: \"a {}\"",
       StatusCode::kOk, ""},

      // Tokenize.
      {"Tokenize", Clip(), "", StatusCode::kInvalidArgument, "texts: empty; send at least one text"},
      {"Tokenize", Clip(), "texts: \"a\" texts: \"b\" texts: \"c\"", StatusCode::kInvalidArgument,
       "texts: 3 texts, over the limit of 2 (--max-inputs)"},
      {"Tokenize", Clip(), "texts: \"a\" texts: \"123456789\"", StatusCode::kInvalidArgument,
       "texts[1]: text is 9 bytes, over the limit of 8 (--max-text-bytes)"},
      {"Tokenize", ImageOnly(), "texts: \"a\"", StatusCode::kInvalidArgument,
       "texts: model 'm' does not accept text"},
      {"Tokenize", Reranker(), "texts: \"a\"", StatusCode::kOk, ""},
  };
  for (size_t i = 0; i < table.size(); ++i) {
    const Row& row = table[i];
    INFO("row " << i << ": " << row.rpc << " on " << row.model.family << " { " << row.request << " }");
    const absl::Status status = Validate(row);
    CHECK(status.code() == row.code);
    CHECK(std::string(status.message()) == row.message);
  }
}

TEST_CASE("a valid Embed carries its inputs and resolved options") {
  const auto request = Parse<v1::EmbedRequest>(
      "inputs { text: \"a cat\" } inputs { image: \"xy\" } "
      "options { normalize: false dtype: DTYPE_BFLOAT16 truncation: TRUNCATION_ERROR }");
  const models::ModelDescription clip = Clip();
  absl::StatusOr<ValidEmbed> valid =
      ValidateEmbed({"m", clip}, request.inputs(), request.options(), RequestLimits());
  REQUIRE(valid.ok());
  REQUIRE(valid->inputs.size() == 2);
  CHECK(valid->inputs[0].modality == Modality::kText);
  CHECK(valid->inputs[0].data == "a cat");
  CHECK(valid->inputs[0].field == "inputs[0]");
  CHECK(valid->inputs[1].modality == Modality::kImage);
  CHECK(valid->inputs[1].data == "xy");
  CHECK_FALSE(valid->options.normalize);
  CHECK(valid->options.dtype == v1::DTYPE_BFLOAT16);
  CHECK(valid->options.packed);  // a 16-bit dtype defaults to the packed encoding
  CHECK_FALSE(valid->options.truncate);
}

TEST_CASE("a valid Rerank: precomputed rows normalized, pairs for a cross-encoder") {
  SECTION("embedding model") {
    const auto request = Parse<v1::RerankRequest>(
        "query { text: \"q\" } candidates " + EmbeddingInput({3, 4, 0, 0}, {4}) +
        " candidates { image: \"png\" } top_k: 1");
    const models::ModelDescription clip = Clip();
    absl::StatusOr<pipeline::RerankRequest> valid = ValidateRerank({"m", clip}, request, RequestLimits());
    REQUIRE(valid.ok());
    REQUIRE(valid->query.content.has_value());
    CHECK(valid->query.content->modality == Modality::kText);
    REQUIRE(valid->candidates.size() == 2);
    CHECK_FALSE(valid->candidates[0].content.has_value());
    const pipeline::HostRows& rows = valid->candidates[0].precomputed;
    CHECK(rows.rows == 1);
    CHECK(rows.dim == 4);
    // (3, 4, 0, 0) / 5.
    CHECK(rows.values == std::vector<float>{0.6f, 0.8f, 0.f, 0.f});
    CHECK(valid->candidates[1].content->modality == Modality::kImage);
    CHECK(valid->candidates[1].content->field == "candidates[1]");
    CHECK(valid->top_k == 1);
    CHECK(valid->truncate);
    CHECK_FALSE(valid->sigmoid);
  }
  SECTION("cross-encoder") {
    const auto request = Parse<v1::RerankRequest>(
        "query { text: \"what is a panda?\" } candidates { text: \"a bear\" } "
        "candidates { text: \"hi\" } sigmoid: true truncation: TRUNCATION_ERROR");
    const models::ModelDescription reranker = Reranker();
    absl::StatusOr<pipeline::RerankRequest> valid =
        ValidateRerank({"m", reranker}, request, RequestLimits());
    REQUIRE(valid.ok());
    CHECK(valid->query.content->data == "what is a panda?");
    REQUIRE(valid->candidates.size() == 2);
    CHECK(valid->candidates[1].content->modality == Modality::kPair);
    CHECK(valid->candidates[1].content->data == "hi");
    CHECK(valid->candidates[1].content->field == "candidates[1]");
    CHECK(valid->top_k == 0);
    CHECK(valid->sigmoid);
    CHECK_FALSE(valid->truncate);
  }
}

TEST_CASE("a valid Classify applies the prompt template to every label") {
  const auto request = Parse<v1::ClassifyRequest>(
      "inputs { image: \"x\" } labels: \"cat\" labels: \"dog\" prompt_template: \"a {}, {}\"");
  const models::ModelDescription clip = Clip();
  absl::StatusOr<pipeline::ClassifyRequest> valid =
      ValidateClassify({"m", clip}, request, RequestLimits());
  REQUIRE(valid.ok());
  REQUIRE(valid->inputs.size() == 1);
  CHECK(valid->label_prompts == std::vector<std::string>{"a cat, cat", "a dog, dog"});
}

}  // namespace
TEST_CASE("a string that is not UTF-8 is found where protobuf refuses it, and named") {
  // Protobuf's own parser is the reference: the finder names a field exactly when it refuses.
  struct Case {
    const char* name;
    std::string text;
    bool valid;
  };
  const std::vector<Case> cases = {
      {"ASCII", "a photo of a dog", true},
      {"two-, three- and four-byte forms", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\xb6", true},
      {"the highest code point", "\xf4\x8f\xbf\xbf", true},
      {"Latin-1", "caf\xe9", false},
      {"a lone continuation byte", "\x80", false},
      {"an overlong slash", "\xc0\xaf", false},
      {"an overlong three-byte form", "\xe0\x80\xaf", false},
      {"a UTF-16 surrogate", "\xed\xa0\x80", false},
      {"past U+10FFFF", "\xf4\x90\x80\x80", false},
      {"cut short", "ab\xe2\x82", false},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.name) {
      v1::EmbedRequest request;
      request.set_model("demo");
      request.add_inputs()->set_image(std::string("\xff\xd8\xff", 3));  // bytes: never checked
      request.add_inputs()->set_text("fine");
      request.add_inputs()->set_text(c.text);
      const std::string wire = request.SerializeAsString();
      v1::EmbedRequest parsed;
      REQUIRE(parsed.ParseFromString(wire) == c.valid);
      const std::optional<std::string> field =
          FindInvalidUtf8Field(*v1::EmbedRequest::descriptor(), wire);
      if (c.valid) {
        CHECK_FALSE(field.has_value());
      } else {
        REQUIRE(field.has_value());
        CHECK(*field == "inputs[2].text");
      }
    }
  }
}

TEST_CASE("ParseRequest names the field that is not UTF-8, or the message type") {
  v1::RerankRequest request;
  request.set_model("demo");
  request.mutable_query()->set_text("a dog");
  request.add_candidates()->set_text("a cat");
  request.add_candidates()->set_text(std::string("caf\xe9", 4));
  const std::string wire = request.SerializeAsString();
  grpc::Slice slice(wire);
  v1::RerankRequest parsed;
  absl::Status status = ParseRequest(grpc::ByteBuffer(&slice, 1), &parsed);
  CHECK(status.code() == StatusCode::kInvalidArgument);
  CHECK(status.message() ==
        "candidates[1].text: not valid UTF-8; protobuf string fields must be UTF-8 (send an "
        "image's bytes in `image`, and texts encoded as UTF-8)");

  grpc::Slice garbage(std::string("\x0a\xff\xff\xff\xff\x0f", 6));  // a length past the end
  status = ParseRequest(grpc::ByteBuffer(&garbage, 1), &parsed);
  CHECK(status.code() == StatusCode::kInvalidArgument);
  CHECK(status.message() ==
        "the request is not a valid embedserve.v1.RerankRequest message (6 bytes)");

  request.mutable_candidates(1)->set_text("caf\xc3\xa9");
  grpc::Slice good(request.SerializeAsString());
  REQUIRE(ParseRequest(grpc::ByteBuffer(&good, 1), &parsed).ok());
  CHECK(parsed.candidates(1).text() == "caf\xc3\xa9");
}

TEST_CASE("SerializeResponse refuses an answer over the limit, naming its size and the flag") {
  v1::TokenizeResponse response;
  response.set_model("demo");
  response.add_texts()->add_ids(7);
  const size_t size = response.ByteSizeLong();
  grpc::ByteBuffer bytes;
  REQUIRE(SerializeResponse(response, static_cast<int64_t>(size), &bytes).ok());
  CHECK(bytes.Length() == size);
  const absl::Status refused = SerializeResponse(response, static_cast<int64_t>(size) - 1, &bytes);
  CHECK(refused.code() == StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(refused.message()),
             Catch::StartsWith("the response is " + std::to_string(size) +
                               " bytes, over the limit of " + std::to_string(size - 1) +
                               " bytes (--max-message-bytes)"));
  CHECK(bytes.Length() == 0);
}

}  // namespace embedserve::rpc
