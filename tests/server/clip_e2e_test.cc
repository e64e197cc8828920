// The demo OpenCLIP model end to end through the real server: embeddings match the
// OpenCLIP reference outputs, Classify and Rerank agree with scores computed here from the
// reference embeddings, and 32 concurrent callers get exactly the single-call results.
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"
#include "client/embedserve_client.h"
#include "common/tensor_codec.h"
#include "tests/server/server_process.h"

using embedserve::client::Client;
using embedserve::testing::ServerProcess;
namespace v1 = embedserve::v1;

using embedserve::testing::Cosine;
using embedserve::testing::Slurp;

namespace {

const std::string kRef = std::string(EMBEDSERVE_TEST_DATA) + "/openclip-reference/";

const nlohmann::json& Reference() {
  static const nlohmann::json ref = nlohmann::json::parse(Slurp(kRef + "reference.json"));
  return ref;
}

std::vector<float> Values(const v1::Embedding& e) {
  auto decoded = embedserve::DecodeTensor(e.vector());
  REQUIRE(decoded.ok());
  return decoded->values;
}

ServerProcess& DemoServer() {
  static ServerProcess server({"--model", "demo=" + kRef + "model"});
  return server;
}

}  // namespace

TEST_CASE("text and image embeddings served over gRPC match the OpenCLIP reference") {
  REQUIRE(DemoServer().healthy());
  auto client = Client::Create(DemoServer().unix_target());
  const auto& ref = Reference();
  v1::EmbedRequest request;
  request.set_model("demo");
  for (const auto& text : ref["texts"]) request.add_inputs()->set_text(text.get<std::string>());
  std::vector<std::string> image_names;
  for (const auto& [name, embedding] : ref["images"].items()) {
    image_names.push_back(name);
    request.add_inputs()->set_image(Slurp(kRef + "images/" + name));
  }
  auto response = client->Embed(request);
  REQUIRE(response.ok());
  const int num_texts = static_cast<int>(ref["texts"].size());
  REQUIRE(response->embeddings_size() == num_texts + static_cast<int>(image_names.size()));
  for (int i = 0; i < num_texts; ++i) {
    INFO("text " << i << ": " << ref["texts"][i].get<std::string>());
    const auto values = Values(response->embeddings(i));
    CHECK(values.size() == 32);
    // The bar the issue sets for float32 text embeddings.
    CHECK(Cosine(values, ref["text_embeddings"][i].get<std::vector<float>>()) >= 0.99999);
    CHECK(response->embeddings(i).token_count() ==
          static_cast<int>(ref["token_ids"][i].size()));
  }
  for (size_t j = 0; j < image_names.size(); ++j) {
    INFO("image " << image_names[j]);
    const auto values = Values(response->embeddings(num_texts + j));
    CHECK(Cosine(values, ref["images"][image_names[j]].get<std::vector<float>>()) >= 0.9999);
  }
}

TEST_CASE("packed float16 and bfloat16 outputs decode to the float32 vectors") {
  REQUIRE(DemoServer().healthy());
  auto client = Client::Create(DemoServer().unix_target());
  v1::EmbedRequest request;
  request.set_model("demo");
  request.add_inputs()->set_text("a photo of a dog");
  auto f32 = client->Embed(request);
  REQUIRE(f32.ok());
  for (v1::Dtype dtype : {v1::DTYPE_FLOAT16, v1::DTYPE_BFLOAT16}) {
    request.mutable_options()->set_dtype(dtype);
    auto packed = client->Embed(request);
    REQUIRE(packed.ok());
    CHECK(packed->embeddings(0).vector().data().size() == 64);  // 32 x 2 bytes
    CHECK(Cosine(Values(packed->embeddings(0)), Values(f32->embeddings(0))) >= 0.9999);
  }
}

TEST_CASE("Classify is softmax(logit_scale * cosine) over the prompted labels") {
  REQUIRE(DemoServer().healthy());
  auto client = Client::Create(DemoServer().unix_target());
  const std::vector<std::string> labels = {"dog", "cat", "invoice"};
  // Label embeddings and the image embedding, from the server's own Embed (checked against
  // the reference above); the probabilities are computed here independently.
  v1::EmbedRequest embed;
  embed.set_model("demo");
  for (const auto& label : labels) embed.add_inputs()->set_text("a photo of a " + label + ".");
  embed.add_inputs()->set_image(Slurp(kRef + "images/photo_800x600.jpg"));
  auto embedded = client->Embed(embed);
  REQUIRE(embedded.ok());
  const double scale = Reference()["logit_scale"].get<double>();
  std::vector<double> logits;
  for (int j = 0; j < 3; ++j) {
    logits.push_back(scale * Cosine(Values(embedded->embeddings(3)), Values(embedded->embeddings(j))));
  }
  double total = 0;
  for (double l : logits) total += std::exp(l);

  v1::ClassifyRequest request;
  request.set_model("demo");
  request.add_inputs()->set_image(Slurp(kRef + "images/photo_800x600.jpg"));
  for (const auto& label : labels) request.add_labels(label);
  request.set_prompt_template("a photo of a {}.");
  auto response = client->Classify(request);
  REQUIRE(response.ok());
  REQUIRE(response->classifications_size() == 1);
  const auto& scores = response->classifications(0).scores();
  REQUIRE(scores.size() == 3);
  for (int k = 0; k < 3; ++k) {
    const int j = scores[k].index();
    CHECK(scores[k].label() == labels[j]);
    CHECK(scores[k].probability() == Approx(std::exp(logits[j]) / total).epsilon(1e-4));
    if (k > 0) CHECK(scores[k - 1].probability() >= scores[k].probability());
  }
}

TEST_CASE("Rerank orders candidates by cosine, and precomputed embeddings score the same") {
  REQUIRE(DemoServer().healthy());
  auto client = Client::Create(DemoServer().unix_target());
  const auto& ref = Reference();
  v1::RerankRequest request;
  request.set_model("demo");
  request.mutable_query()->set_text(ref["texts"][0].get<std::string>());
  std::vector<double> expected;
  const auto query = ref["text_embeddings"][0].get<std::vector<float>>();
  for (const auto& [name, embedding] : ref["images"].items()) {
    request.add_candidates()->set_image(Slurp(kRef + "images/" + name));
    expected.push_back(Cosine(query, embedding.get<std::vector<float>>()));
  }
  request.set_top_k(4);
  auto response = client->Rerank(request);
  REQUIRE(response.ok());
  CHECK(response->scoring() == "cosine");
  REQUIRE(response->results_size() == 4);
  std::vector<int> order(expected.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return expected[a] > expected[b]; });
  for (int k = 0; k < 4; ++k) {
    CHECK(response->results(k).index() == order[k]);
    CHECK(response->results(k).score() == Approx(expected[order[k]]).margin(2e-4));
  }

  // The same candidates as precomputed (reference) embeddings, packed as float16.
  v1::RerankRequest precomputed;
  precomputed.set_model("demo");
  precomputed.mutable_query()->set_text(ref["texts"][0].get<std::string>());
  for (const auto& [name, embedding] : ref["images"].items()) {
    const auto values = embedding.get<std::vector<float>>();
    const std::vector<int64_t> shape = {static_cast<int64_t>(values.size())};
    embedserve::EncodeTensor(values, shape, v1::DTYPE_FLOAT16, true,
                             precomputed.add_candidates()->mutable_embedding());
  }
  auto again = client->Rerank(precomputed);
  REQUIRE(again.ok());
  REQUIRE(again->results_size() == static_cast<int>(expected.size()));
  for (int k = 0; k < again->results_size(); ++k) {
    CHECK(again->results(k).index() == order[k]);
    CHECK(again->results(k).score() == Approx(expected[order[k]]).margin(2e-3));  // float16 input
  }
}

TEST_CASE("Tokenize returns the reference token ids and names the tokens") {
  REQUIRE(DemoServer().healthy());
  auto client = Client::Create(DemoServer().unix_target());
  v1::TokenizeRequest request;
  request.set_model("demo");
  request.add_texts(Reference()["texts"][0].get<std::string>());
  auto response = client->Tokenize(request);
  REQUIRE(response.ok());
  const auto expected = Reference()["token_ids"][0].get<std::vector<int>>();
  CHECK(std::vector<int>(response->texts(0).ids().begin(), response->texts(0).ids().end()) == expected);
  CHECK(response->texts(0).tokens_size() == static_cast<int>(expected.size()));
}

TEST_CASE("32 concurrent callers get exactly what each would get alone") {
  REQUIRE(DemoServer().healthy());
  auto client = Client::Create(DemoServer().unix_target());
  const auto& ref = Reference();
  std::vector<std::string> images;
  for (const auto& [name, embedding] : ref["images"].items()) images.push_back(Slurp(kRef + "images/" + name));
  auto request_for = [&](int caller) {
    v1::EmbedRequest request;
    request.set_model("demo");
    for (int k = 0; k < 3; ++k) {
      const int pick = (caller * 3 + k) % 75;
      if (pick < 66) request.add_inputs()->set_text(ref["texts"][pick].get<std::string>());
      else request.add_inputs()->set_image(images[pick - 66]);
    }
    return request;
  };
  std::vector<v1::EmbedResponse> alone(32), together(32);
  for (int c = 0; c < 32; ++c) {
    auto r = client->Embed(request_for(c));
    REQUIRE(r.ok());
    alone[c] = *r;
  }
  std::vector<std::thread> callers;
  std::vector<bool> ok(32, false);
  std::vector<std::string> errors(32);
  for (int c = 0; c < 32; ++c) {
    callers.emplace_back([&, c] {
      auto r = client->Embed(request_for(c));
      ok[c] = r.ok();
      if (r.ok()) together[c] = *r;
      else errors[c] = r.status().ToString();
    });
  }
  for (auto& t : callers) t.join();
  for (int c = 0; c < 32; ++c) {
    INFO("caller " << c << ": " << errors[c]);
    REQUIRE(ok[c]);
    REQUIRE(together[c].embeddings_size() == 3);
    for (int k = 0; k < 3; ++k) {
      // Batched with other callers' items vs alone: the same numbers up to float
      // reassociation in a different batch shape.
      CHECK(Cosine(Values(together[c].embeddings(k)), Values(alone[c].embeddings(k))) >= 0.999999);
    }
  }
}
