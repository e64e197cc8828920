// The ColPali reference model end to end through the real server: multi-vector Embed of
// pages and queries matches the reference, packed float16 decodes close, Rerank by MaxSim
// (pages as images and as precomputed [tokens x dim] embeddings) follows the reference order.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
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

const std::string kRef = std::string(EMBEDSERVE_TEST_DATA) + "/colpali-reference/";

const nlohmann::json& Reference() {
  static const nlohmann::json ref = nlohmann::json::parse(Slurp(kRef + "reference.json"));
  return ref;
}

struct Matrix {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

Matrix Decode(const v1::Embedding& e) {
  auto decoded = embedserve::DecodeTensor(e.vector());
  REQUIRE(decoded.ok());
  return {decoded->shape, decoded->values};
}

// Lowest row-wise cosine against [rows x dim] reference rows.
double MinRowCosine(const Matrix& m, const nlohmann::json& rows) {
  REQUIRE(m.shape.size() == 2);
  REQUIRE(m.shape[0] == static_cast<int64_t>(rows.size()));
  const int64_t dim = m.shape[1];
  double worst = 1;
  for (size_t r = 0; r < rows.size(); ++r) {
    double dot = 0, na = 0, nb = 0;
    for (int64_t d = 0; d < dim; ++d) {
      const double a = m.values[r * dim + d], b = rows[r][d].get<double>();
      dot += a * b;
      na += a * a;
      nb += b * b;
    }
    worst = std::min(worst, dot / std::sqrt(na * nb));
  }
  return worst;
}

ServerProcess& ColPaliServer() {
  static ServerProcess server({"--model", "colpali=" + kRef + "model"});
  return server;
}

std::vector<std::string> PageOrder() {
  return Reference()["page_order"].get<std::vector<std::string>>();
}

// Candidate indices sorted by the reference MaxSim of query `q`, best first.
std::vector<int> ReferenceOrder(int q) {
  const auto& row = Reference()["maxsim"][q];
  std::vector<int> order(row.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return row[a].get<double>() > row[b].get<double>();
  });
  return order;
}

}  // namespace

TEST_CASE("pages and queries embed to [tokens x 32] matching the reference") {
  REQUIRE(ColPaliServer().healthy());
  auto client = Client::Create(ColPaliServer().unix_target());
  const auto& ref = Reference();
  v1::EmbedRequest request;
  request.set_model("colpali");
  const auto queries = ref["queries"].get<std::vector<std::string>>();
  for (const auto& q : queries) request.add_inputs()->set_text(q);
  for (const auto& page : PageOrder()) request.add_inputs()->set_image(Slurp(kRef + "images/" + page));
  auto response = client->Embed(request);
  INFO(response.status().ToString());
  REQUIRE(response.ok());
  REQUIRE(response->embeddings_size() == static_cast<int>(queries.size() + PageOrder().size()));
  double worst = 1;
  for (size_t i = 0; i < queries.size(); ++i) {
    INFO("query " << i << ": '" << queries[i] << "'");
    const Matrix m = Decode(response->embeddings(i));
    REQUIRE(m.shape.size() == 2);
    CHECK(m.shape[1] == 32);
    CHECK(response->embeddings(i).token_count() == static_cast<int>(ref["query_ids"][i].size()));
    worst = std::min(worst, MinRowCosine(m, ref["query_embeddings"][i]));
  }
  for (size_t j = 0; j < PageOrder().size(); ++j) {
    INFO("page " << PageOrder()[j]);
    const auto& e = response->embeddings(queries.size() + j);
    const Matrix m = Decode(e);
    CHECK(m.shape == std::vector<int64_t>{27, 32});
    CHECK(e.token_count() == 27);
    worst = std::min(worst, MinRowCosine(m, ref["pages"][PageOrder()[j]]));
  }
  WARN("served vectors: lowest row cosine vs reference " << worst);
  CHECK(worst >= 0.9999);
}

TEST_CASE("packed float16 multi-vectors decode close to float32") {
  REQUIRE(ColPaliServer().healthy());
  auto client = Client::Create(ColPaliServer().unix_target());
  v1::EmbedRequest request;
  request.set_model("colpali");
  request.add_inputs()->set_text("quarterly revenue");
  request.add_inputs()->set_image(Slurp(kRef + "images/photo_800x600.jpg"));
  auto f32 = client->Embed(request);
  REQUIRE(f32.ok());
  request.mutable_options()->set_dtype(v1::DTYPE_FLOAT16);
  auto f16 = client->Embed(request);
  REQUIRE(f16.ok());
  for (int i = 0; i < 2; ++i) {
    const Matrix a = Decode(f32->embeddings(i)), b = Decode(f16->embeddings(i));
    REQUIRE(a.shape == b.shape);
    CHECK(f16->embeddings(i).vector().data().size() == a.values.size() * 2);
    double worst = 0;
    for (size_t k = 0; k < a.values.size(); ++k) {
      worst = std::max(worst, std::abs(double(a.values[k]) - b.values[k]));
    }
    CHECK(worst < 1e-3);
  }
}

TEST_CASE("Rerank scores pages by MaxSim in the reference order, as images and as multi-vectors") {
  REQUIRE(ColPaliServer().healthy());
  auto client = Client::Create(ColPaliServer().unix_target());
  const auto& ref = Reference();
  const auto queries = ref["queries"].get<std::vector<std::string>>();
  for (int q : {0, 3, 6}) {
    DYNAMIC_SECTION("query " << q) {
      const std::vector<int> order = ReferenceOrder(q);
      v1::RerankRequest images;
      images.set_model("colpali");
      images.mutable_query()->set_text(queries[q]);
      for (const auto& page : PageOrder()) {
        images.add_candidates()->set_image(Slurp(kRef + "images/" + page));
      }
      images.set_top_k(4);
      auto response = client->Rerank(images);
      INFO(response.status().ToString());
      REQUIRE(response.ok());
      CHECK(response->scoring() == "maxsim");
      REQUIRE(response->results_size() == 4);
      for (int k = 0; k < 4; ++k) {
        CHECK(response->results(k).index() == order[k]);
        CHECK(response->results(k).score() ==
              Approx(ref["maxsim"][q][order[k]].get<double>()).epsilon(1e-4));
      }

      // The reference page vectors sent as precomputed 2-D embeddings (float32 and float16).
      for (v1::Dtype dtype : {v1::DTYPE_FLOAT32, v1::DTYPE_FLOAT16}) {
        v1::RerankRequest precomputed;
        precomputed.set_model("colpali");
        precomputed.mutable_query()->set_text(queries[q]);
        for (const auto& page : PageOrder()) {
          const auto& rows = ref["pages"][page];
          std::vector<float> values;
          for (const auto& row : rows) {
            for (const auto& v : row) values.push_back(v.get<float>());
          }
          const std::vector<int64_t> shape = {static_cast<int64_t>(rows.size()),
                                              static_cast<int64_t>(rows[0].size())};
          embedserve::EncodeTensor(values, shape, dtype, true,
                                   precomputed.add_candidates()->mutable_embedding());
        }
        auto again = client->Rerank(precomputed);
        INFO(again.status().ToString());
        REQUIRE(again.ok());
        REQUIRE(again->results_size() == static_cast<int>(order.size()));
        const double tolerance = dtype == v1::DTYPE_FLOAT32 ? 1e-4 : 2e-3;
        for (int k = 0; k < again->results_size(); ++k) {
          const double expected = ref["maxsim"][q][again->results(k).index()].get<double>();
          CHECK(again->results(k).score() == Approx(expected).epsilon(tolerance));
          if (dtype == v1::DTYPE_FLOAT32) CHECK(again->results(k).index() == order[k]);
        }
      }
    }
  }
}

TEST_CASE("a precomputed embedding with the wrong width is refused") {
  REQUIRE(ColPaliServer().healthy());
  auto client = Client::Create(ColPaliServer().unix_target());
  v1::RerankRequest request;
  request.set_model("colpali");
  request.mutable_query()->set_text("signature");
  std::vector<float> values(3 * 16, 0.1f);
  embedserve::EncodeTensor(values, std::vector<int64_t>{3, 16}, v1::DTYPE_FLOAT32, true,
                           request.add_candidates()->mutable_embedding());
  auto response = client->Rerank(request);
  REQUIRE_FALSE(response.ok());
  CHECK(response.status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Tokenize returns the query prompt's reference ids") {
  REQUIRE(ColPaliServer().healthy());
  auto client = Client::Create(ColPaliServer().unix_target());
  v1::TokenizeRequest request;
  request.set_model("colpali");
  request.add_texts(Reference()["queries"][0].get<std::string>());
  auto response = client->Tokenize(request);
  INFO(response.status().ToString());
  REQUIRE(response.ok());
  REQUIRE(response->texts_size() == 1);
  const auto& t = response->texts(0);
  std::vector<int32_t> ids(t.ids().begin(), t.ids().end());
  CHECK(ids == Reference()["query_ids"][0].get<std::vector<int32_t>>());
}

TEST_CASE("Classify is UNIMPLEMENTED for ColPali, which does not declare it") {
  auto client = Client::Create(ColPaliServer().unix_target());
  v1::ClassifyRequest request;
  request.set_model("colpali");
  request.add_inputs()->set_text("a page");
  request.add_labels("invoice");
  request.add_labels("letter");
  auto answer = client->Classify(request);
  CHECK(answer.status().code() == absl::StatusCode::kUnimplemented);
  CHECK_THAT(std::string(answer.status().message()), Catch::Contains("no zero-shot classification"));
}

namespace {

// A 1x1 24-bit BMP (58 bytes): a page whose request is tiny and whose answer is not.
std::string TinyBmp() {
  auto le = [](std::string* out, uint32_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  };
  std::string bmp = "BM";
  le(&bmp, 58, 4);        // file size
  le(&bmp, 0, 4);         // reserved
  le(&bmp, 54, 4);        // pixel data offset
  le(&bmp, 40, 4);        // BITMAPINFOHEADER size
  le(&bmp, 1, 4);         // width
  le(&bmp, 1, 4);         // height
  le(&bmp, 1, 2);         // planes
  le(&bmp, 24, 2);        // bits per pixel
  le(&bmp, 0, 4);         // no compression
  le(&bmp, 4, 4);         // pixel data size (one row padded to 4 bytes)
  le(&bmp, 2835, 4);      // 72 dpi
  le(&bmp, 2835, 4);
  le(&bmp, 0, 4);         // palette colours
  le(&bmp, 0, 4);         // important colours
  bmp += std::string("\x40\x80\xc0\x00", 4);  // one BGR pixel and its padding
  return bmp;
}

// The metrics line counting the image items `model` computed ("" when none).
std::string ImageItemsLine(int metrics_port, const std::string& model) {
  std::istringstream page(embedserve::testing::HttpGetLocal(metrics_port, "/metrics"));
  for (std::string line; std::getline(page, line);) {
    if (line.rfind("embedserve_items_total{", 0) == 0 &&
        line.find("model=\"" + model + "\"") != std::string::npos &&
        line.find("modality=\"image\"") != std::string::npos) {
      return line;
    }
  }
  return "";
}

}  // namespace

TEST_CASE("an answer over --max-message-bytes is refused naming the limit, before compute when "
          "the pages alone cannot fit") {
  const int metrics_port = embedserve::testing::FreeTcpPort();
  ServerProcess server({"--model", "colpali=" + kRef + "model", "--max-message-bytes", "4096",
                        "--metrics-listen", "127.0.0.1:" + std::to_string(metrics_port)});
  REQUIRE(server.healthy());
  auto client = Client::Create(server.unix_target());
  const std::string computed_before = ImageItemsLine(metrics_port, "colpali");
  REQUIRE_FALSE(computed_before.empty());  // the warm-up's pages

  // Each page answers at least its 16 image tokens (preprocessor_config.json's
  // image_seq_length) x 32 values x 4 bytes = 2048 bytes: 8 pages cannot fit in 4096.
  v1::EmbedRequest eight;
  eight.set_model("colpali");
  for (int i = 0; i < 8; ++i) eight.add_inputs()->set_image(TinyBmp());
  auto refused = client->Embed(eight);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(refused.status().message()),
             Catch::Contains("8 images answer at least 16384 bytes") &&
                 Catch::Contains("over the limit of 4096 bytes (--max-message-bytes)") &&
                 Catch::Contains("send at most 2 images per call"));
  CHECK(ImageItemsLine(metrics_port, "colpali") == computed_before);  // nothing computed

  // Two pages pass the estimate, but their 27 rows each (tokens after the image's) do not
  // fit: refused at the end with the size and the limit, never sent as an OK.
  v1::EmbedRequest two;
  two.set_model("colpali");
  for (int i = 0; i < 2; ++i) two.add_inputs()->set_image(TinyBmp());
  auto too_large = client->Embed(two);
  REQUIRE_FALSE(too_large.ok());
  CHECK(too_large.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(too_large.status().message()),
             Catch::StartsWith("the response is ") &&
                 Catch::Contains("over the limit of 4096 bytes (--max-message-bytes)"));

  // As packed float16 the two pages fit (2 x 27 x 32 x 2 bytes and framing).
  two.mutable_options()->set_dtype(v1::DTYPE_FLOAT16);
  two.mutable_options()->set_encoding(v1::ENCODING_PACKED);
  auto half = client->Embed(two);
  INFO(half.status().ToString());
  REQUIRE(half.ok());
  REQUIRE(half->embeddings_size() == 2);
  CHECK(Decode(half->embeddings(1)).shape == std::vector<int64_t>{27, 32});

  // The access log's and the metrics' outcome is the delivered one.
  const std::vector<std::string> counted = {
      "embedserve_requests_total{method=\"Embed\",model=\"colpali\",code=\"RESOURCE_EXHAUSTED\"} 2",
      "embedserve_requests_total{method=\"Embed\",model=\"colpali\",code=\"OK\"} 1"};
  const std::string page =
      embedserve::testing::HttpGetLocalContaining(metrics_port, "/metrics", counted);
  for (const std::string& line : counted) CHECK_THAT(page, Catch::Contains(line));
}
