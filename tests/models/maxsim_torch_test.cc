// MaxSim on a libtorch device (server/models/maxsim_torch) and Model::MaxSim, on CPU, against
// a scalar double-precision reference written here, with error bounds derived below.
#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

// libtorch first: with glog, c10 defines a CHECK macro (fatal on failure), which Catch's
// must replace, so every torch header comes before catch.hpp and glog's CHECK is dropped.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "server/models/maxsim_torch.h"
#include "server/models/model.h"
#include "server/models/openclip/openclip_model.h"

#undef CHECK
#include <catch2/catch.hpp>

using embedserve::models::DeviceDocuments;
using embedserve::models::Embedding;
using embedserve::models::ImageInput;
using embedserve::models::MaxSimOnDevice;
using embedserve::models::MaxSimOptions;
using embedserve::models::Model;
using embedserve::models::ModelDescription;
using embedserve::models::RowsView;
using embedserve::models::RuntimeOptions;
using embedserve::models::TextInput;

namespace {

const at::Device kCpu(at::kCPU);

struct Matrix {
  int rows = 0;
  int dim = 0;
  std::vector<float> values;
  RowsView view() const { return {values.data(), rows, dim}; }
};

Matrix Random(std::mt19937& rng, int rows, int dim) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Matrix m{rows, dim, std::vector<float>(static_cast<size_t>(rows) * dim)};
  for (float& x : m.values) x = normal(rng);
  return m;
}

// Every entry made >= 0 (sign +1) or <= 0 (sign -1). With a non-negative query and
// non-positive documents every product is <= 0, so a row left unwritten or padded with zeros
// (dot product 0) would become the maximum and show.
Matrix WithSign(Matrix m, float sign) {
  for (float& x : m.values) x = sign * std::fabs(x);
  return m;
}

std::vector<RowsView> Views(const std::vector<Matrix>& docs) {
  std::vector<RowsView> views;
  for (const Matrix& d : docs) views.push_back(d.view());
  return views;
}

double RowNorm(const float* row, int dim) {
  double s = 0;
  for (int i = 0; i < dim; ++i) s += static_cast<double>(row[i]) * row[i];
  return std::sqrt(s);
}

// The definition, in double: for each query row the best dot product over the document's
// rows, summed over query rows; 0 for an empty document or query.
double ReferenceMaxSim(const RowsView& q, const RowsView& d) {
  if (q.rows == 0 || d.rows == 0) return 0;
  double total = 0;
  for (int r = 0; r < q.rows; ++r) {
    double best = -INFINITY;
    for (int t = 0; t < d.rows; ++t) {
      double dot = 0;
      for (int i = 0; i < q.dim; ++i) {
        dot += static_cast<double>(q.data[r * q.dim + i]) * d.data[t * d.dim + i];
      }
      best = std::max(best, dot);
    }
    total += best;
  }
  return total;
}

// A bound on |computed - exact| when the inputs and the products are rounded to a format of
// unit roundoff u (float32 2^-24, bfloat16 2^-8, float16 2^-11) and sums run in float32
// (unit roundoff v = 2^-24, gamma_n = n v / (1 - n v) for n terms in any order). Per query row
// r let A = |q_r| * max_t |d_t|; by Cauchy-Schwarz A >= sum_i |q_ri d_ti| and A >= |q_r . d_t|.
// - rounding q and d: each term moves by <= (2u + u^2)|q_i d_i|; the float32 dot product adds
//   gamma_dim of the sum of |terms|, so a product is off by e = ((1+u)^2 (1+gamma_dim) - 1) A;
// - rounding the product to the format: u (A + e) more;
// - the max over rows is exact and moves by at most the largest perturbation;
// - the float32 sum over query rows adds gamma_rows * sum_r (|best_r| + e_r).
double ErrorBound(const RowsView& q, const RowsView& d, double u) {
  if (q.rows == 0 || d.rows == 0) return 0;
  const double v = std::ldexp(1.0, -24);
  auto gamma = [&](int n) { return n * v / (1 - n * v); };
  double doc_norm = 0;
  for (int t = 0; t < d.rows; ++t) {
    doc_norm = std::max(doc_norm, RowNorm(d.data + t * d.dim, d.dim));
  }
  double total = 0, magnitude = 0;
  for (int r = 0; r < q.rows; ++r) {
    const double a = RowNorm(q.data + r * q.dim, q.dim) * doc_norm;
    const double e = ((1 + u) * (1 + u) * (1 + gamma(q.dim)) - 1) * a;
    const double row_error = e + u * (a + e);
    total += row_error;
    magnitude += a + row_error;  // >= |best_r| + its error
  }
  return total + gamma(q.rows) * magnitude;
}

void CheckScores(const Matrix& query, const std::vector<Matrix>& docs,
                 const std::vector<float>& scores, double unit_roundoff) {
  REQUIRE(scores.size() == docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    const double expected = ReferenceMaxSim(query.view(), docs[i].view());
    const double bound = ErrorBound(query.view(), docs[i].view(), unit_roundoff);
    INFO("document " << i << " (" << docs[i].rows << " rows): " << scores[i] << " vs "
                     << expected << ", bound " << bound);
    CHECK(std::fabs(scores[i] - expected) <= bound);
  }
}

const double kFloat32 = std::ldexp(1.0, -24);
const double kBFloat16 = std::ldexp(1.0, -8);

// Ragged documents: empty ones, single rows, and documents longer than a small chunk.
std::vector<Matrix> RaggedDocuments(std::mt19937& rng, int dim) {
  std::vector<Matrix> docs;
  for (int rows : {0, 1, 3, 17, 0, 64, 200, 1, 5, 33, 2, 150, 16, 15}) {
    docs.push_back(Random(rng, rows, dim));
  }
  return docs;
}

// One chunk row costs (dim + query rows) float32 values.
int64_t ChunkBytesForRows(int64_t rows, int dim, int query_rows) {
  return rows * (dim + query_rows) * static_cast<int64_t>(sizeof(float));
}

}  // namespace

TEST_CASE("MaxSim on the CPU device matches the double reference on ragged documents") {
  std::mt19937 rng(7);
  const int dim = 24, query_rows = 7;
  const Matrix query = WithSign(Random(rng, query_rows, dim), 1);
  std::vector<Matrix> docs = RaggedDocuments(rng, dim);
  for (Matrix& d : docs) d = WithSign(std::move(d), -1);  // padding errors would show
  MaxSimOptions options;
  SECTION("one chunk (the default budget)") {}
  SECTION("chunks of 16 rows: documents of 17 to 200 rows are split across chunks") {
    options.chunk_bytes = ChunkBytesForRows(16, dim, query_rows);
  }
  SECTION("a budget under one row: every row is its own chunk") { options.chunk_bytes = 1; }
  auto scores = MaxSimOnDevice(query.view(), Views(docs), kCpu, options);
  INFO(scores.status().ToString());
  REQUIRE(scores.ok());
  CheckScores(query, docs, *scores, kFloat32);
  CHECK((*scores)[0] == 0.0f);
  CHECK((*scores)[4] == 0.0f);
}

TEST_CASE("large chunks packed by several threads keep every row and every padding right") {
  // Chunks over 32 MiB are packed by one thread per 16 MiB (up to libtorch's thread count),
  // each taking a range of rows that starts and ends inside documents.
  const int saved_threads = at::get_num_threads();
  at::set_num_threads(4);
  std::mt19937 rng(29);
  const int dim = 128, query_rows = 3;
  const Matrix query = WithSign(Random(rng, query_rows, dim), 1);
  std::uniform_int_distribution<int> length(900, 1100);
  std::vector<Matrix> docs;
  for (int i = 0; i < 100; ++i) {
    docs.push_back(WithSign(Random(rng, i == 50 ? 0 : length(rng), dim), -1));
  }
  MaxSimOptions options;
  options.chunk_bytes = int64_t{256} << 20;  // one ~55 MB chunk: 3 threads
  auto scores = MaxSimOnDevice(query.view(), Views(docs), kCpu, options);
  at::set_num_threads(saved_threads);
  INFO(scores.status().ToString());
  REQUIRE(scores.ok());
  CheckScores(query, docs, *scores, kFloat32);
}

TEST_CASE("MaxSim of single vectors is their dot product") {
  std::mt19937 rng(11);
  const int dim = 128;
  const Matrix query = Random(rng, 1, dim);
  std::vector<Matrix> docs;
  for (int i = 0; i < 50; ++i) docs.push_back(Random(rng, 1, dim));
  auto scores = MaxSimOnDevice(query.view(), Views(docs), kCpu);
  REQUIRE(scores.ok());
  CheckScores(query, docs, *scores, kFloat32);  // the reference is the dot product here
}

TEST_CASE("bfloat16 products stay within the bfloat16 rounding bound (sums in float32)") {
  std::mt19937 rng(13);
  const int dim = 64, query_rows = 5;
  const Matrix query = Random(rng, query_rows, dim);
  const std::vector<Matrix> docs = RaggedDocuments(rng, dim);
  MaxSimOptions options;
  options.compute_dtype = at::kBFloat16;
  SECTION("one chunk") {}
  SECTION("split across chunks") { options.chunk_bytes = ChunkBytesForRows(16, dim, query_rows); }
  auto scores = MaxSimOnDevice(query.view(), Views(docs), kCpu, options);
  INFO(scores.status().ToString());
  REQUIRE(scores.ok());
  CheckScores(query, docs, *scores, kBFloat16);
}

TEST_CASE("an empty query, empty documents and no documents score 0") {
  std::mt19937 rng(17);
  const std::vector<Matrix> docs = RaggedDocuments(rng, 8);
  SECTION("a query with no rows scores 0 everywhere") {
    const Matrix query{0, 8, {}};
    auto scores = MaxSimOnDevice(query.view(), Views(docs), kCpu);
    REQUIRE(scores.ok());
    CHECK(*scores == std::vector<float>(docs.size(), 0.0f));
  }
  SECTION("only empty documents") {
    const Matrix query = Random(rng, 3, 8);
    const std::vector<Matrix> empty(4, Matrix{0, 8, {}});
    auto scores = MaxSimOnDevice(query.view(), Views(empty), kCpu);
    REQUIRE(scores.ok());
    CHECK(*scores == std::vector<float>(4, 0.0f));
  }
  SECTION("no documents") {
    const Matrix query = Random(rng, 3, 8);
    auto scores = MaxSimOnDevice(query.view(), {}, kCpu);
    REQUIRE(scores.ok());
    CHECK(scores->empty());
  }
}

TEST_CASE("a document whose width differs from the query's is rejected, naming it") {
  std::mt19937 rng(19);
  const Matrix query = Random(rng, 2, 8);
  const std::vector<Matrix> docs = {Random(rng, 3, 8), Random(rng, 3, 9)};
  auto scores = MaxSimOnDevice(query.view(), Views(docs), kCpu);
  REQUIRE(scores.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(scores.status().message()), Catch::Contains("documents[1]"));
  MaxSimOptions options;
  options.compute_dtype = at::kInt;
  CHECK(MaxSimOnDevice(query.view(), {}, kCpu, options).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("documents packed on the device once score every query like a fresh call") {
  std::mt19937 rng(23);
  const int dim = 24, query_rows = 7;
  const std::vector<Matrix> docs = RaggedDocuments(rng, dim);
  MaxSimOptions options;
  options.chunk_bytes = ChunkBytesForRows(16, dim, query_rows);
  auto packed = DeviceDocuments::Pack(Views(docs), dim, query_rows, kCpu, options);
  INFO(packed.status().ToString());
  REQUIRE(packed.ok());
  CHECK(packed->size() == docs.size());
  CHECK(packed->chunk_count() > 5);
  for (int rows : {query_rows, 1, 3}) {
    const Matrix query = Random(rng, rows, dim);
    auto scores = packed->Score(query.view());
    REQUIRE(scores.ok());
    CheckScores(query, docs, *scores, kFloat32);
  }
  const Matrix wrong = Random(rng, 2, dim + 1);
  CHECK(packed->Score(wrong.view()).status().code() == absl::StatusCode::kInvalidArgument);
}

namespace {

// A family that does not override MaxSim.
class NoMaxSimModel final : public Model {
 public:
  const ModelDescription& description() const override { return description_; }
  absl::StatusOr<TextInput> PrepareText(absl::string_view, bool) const override {
    return TextInput();
  }
  absl::StatusOr<ImageInput> PrepareImage(absl::string_view,
                                          const embedserve::models::ImageLimits&) const override {
    return ImageInput();
  }
  absl::StatusOr<std::vector<Embedding>> EmbedTexts(absl::Span<const TextInput* const>) override {
    return std::vector<Embedding>();
  }
  absl::StatusOr<std::vector<Embedding>> EmbedImages(
      absl::Span<const ImageInput* const>) override {
    return std::vector<Embedding>();
  }

 private:
  ModelDescription description_;
};

}  // namespace

TEST_CASE("Model::MaxSim is UNIMPLEMENTED unless the family provides it") {
  NoMaxSimModel model;
  const Matrix query{1, 2, {1.0f, 0.0f}};
  CHECK(model.MaxSim(query.view(), {}).status().code() == absl::StatusCode::kUnimplemented);
}

TEST_CASE("OpenCLIP's Model::MaxSim equals the scalar MaxSim of its own embeddings") {
  RuntimeOptions runtime;
  auto model = embedserve::models::openclip::LoadOpenClip(
      std::string(EMBEDSERVE_TEST_DATA) + "/openclip-reference/model", runtime);
  INFO(model.status().ToString());
  REQUIRE(model.ok());
  const std::vector<std::string> texts = {"a photo of a dog", "a cat", "a red car",
                                          "two birds on a wire", "an empty room", "the sea"};
  std::vector<TextInput> inputs;
  for (const std::string& t : texts) {
    auto in = (*model)->PrepareText(t, /*truncate=*/true);
    REQUIRE(in.ok());
    inputs.push_back(*std::move(in));
  }
  std::vector<const TextInput*> pointers;
  for (const TextInput& in : inputs) pointers.push_back(&in);
  auto embedded = (*model)->EmbedTexts(pointers);
  REQUIRE(embedded.ok());
  const int dim = (*embedded)[0].dim;
  // Multi-vector inputs made of the model's own vectors: rows i..j stacked.
  auto stack = [&](std::vector<int> which) {
    Matrix m{static_cast<int>(which.size()), dim, {}};
    for (int i : which) {
      const auto& v = (*embedded)[i].values;
      m.values.insert(m.values.end(), v.begin(), v.end());
    }
    return m;
  };
  const Matrix query = stack({0, 1, 2});
  const std::vector<Matrix> docs = {stack({}), stack({0}), stack({3, 4}),
                                    stack({5, 2, 1, 4}), stack({1})};
  auto scores = (*model)->MaxSim(query.view(), Views(docs));
  INFO(scores.status().ToString());
  REQUIRE(scores.ok());
  CheckScores(query, docs, *scores, kFloat32);
  CHECK((*scores)[0] == 0.0f);
}
