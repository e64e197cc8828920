// Host scoring math: MaxSimBatch and MaxSim against a naive triple loop on random shapes
// (one row, dims that are not a multiple of 8, empty documents), a hand-computed example,
// the single-vector case as a dot product, and Dot itself.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "server/pipeline/scoring.h"

namespace embedserve::pipeline {
namespace {

struct Matrix {
  std::vector<float> values;
  int rows = 0;
  int dim = 0;
  MatrixView view() const { return {values.data(), rows, dim}; }
};

Matrix Random(std::mt19937& rng, int rows, int dim, bool normalize = true) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Matrix m{std::vector<float>(static_cast<size_t>(rows) * dim), rows, dim};
  for (float& x : m.values) x = normal(rng);
  if (normalize) NormalizeRows(m.values.data(), rows, dim);
  return m;
}

// The definition, in double: sum over query rows of the best dot over document rows.
double NaiveMaxSim(const MatrixView& q, const MatrixView& d) {
  if (q.rows == 0 || d.rows == 0) return 0;
  double total = 0;
  for (int i = 0; i < q.rows; ++i) {
    double best = -std::numeric_limits<double>::infinity();
    for (int j = 0; j < d.rows; ++j) {
      double dot = 0;
      for (int k = 0; k < q.dim; ++k) {
        dot += static_cast<double>(q.data[static_cast<int64_t>(i) * q.dim + k]) *
               d.data[static_cast<int64_t>(j) * d.dim + k];
      }
      best = std::max(best, dot);
    }
    total += best;
  }
  return total;
}

// Float tolerance: float products summed over dim, then over query rows.
double Tolerance(const MatrixView& q) { return 1e-5 * q.rows * std::sqrt(q.dim + 1.0) + 1e-6; }

TEST_CASE("MaxSimBatch equals the naive triple loop on random shapes") {
  std::mt19937 rng(1234);
  for (int dim : {1, 3, 7, 8, 13, 64, 128, 130}) {
    for (int qrows : {1, 2, 20, 33}) {
      const Matrix query = Random(rng, qrows, dim);
      // Mixed sizes: empty, single row, small (packed), around and above the direct and
      // block thresholds, so that packing, block flushes and in-place chunks all happen.
      std::vector<Matrix> docs;
      for (int rows : {0, 1, 5, 0, 255, 256, 300, 1030, 17, 1, 4500, 3}) {
        docs.push_back(Random(rng, rows, dim));
      }
      std::vector<MatrixView> views;
      for (const Matrix& d : docs) views.push_back(d.view());
      const std::vector<float> batch = MaxSimBatch(query.view(), views);
      REQUIRE(batch.size() == docs.size());
      for (size_t i = 0; i < docs.size(); ++i) {
        INFO("dim " << dim << " query rows " << qrows << " document " << i << " rows "
                    << docs[i].rows);
        const double want = NaiveMaxSim(query.view(), views[i]);
        CHECK(batch[i] == Approx(want).margin(Tolerance(query.view())));
        CHECK(MaxSim(query.view(), views[i]) == Approx(want).margin(Tolerance(query.view())));
      }
    }
  }
}

TEST_CASE("MaxSimBatch packs many small documents across several blocks") {
  std::mt19937 rng(7);
  const Matrix query = Random(rng, 20, 128);
  std::uniform_int_distribution<int> rows(0, 200);
  std::vector<Matrix> docs;
  for (int i = 0; i < 300; ++i) docs.push_back(Random(rng, rows(rng), 128));
  std::vector<MatrixView> views;
  for (const Matrix& d : docs) views.push_back(d.view());
  const std::vector<float> batch = MaxSimBatch(query.view(), views);
  for (size_t i = 0; i < docs.size(); ++i) {
    INFO("document " << i << " rows " << docs[i].rows);
    CHECK(batch[i] == Approx(NaiveMaxSim(query.view(), views[i])).margin(1e-4));
  }
}

TEST_CASE("a document whose row stride exceeds the query's dim is read with query.dim columns") {
  std::mt19937 rng(11);
  const Matrix query = Random(rng, 6, 10);
  const Matrix wide = Random(rng, 40, 12);  // rows of 12 floats, of which 10 are scored
  const Matrix big_wide = Random(rng, 3000, 12);
  const std::vector<float> batch = MaxSimBatch(query.view(), {wide.view(), big_wide.view()});
  CHECK(batch[0] == Approx(NaiveMaxSim(query.view(), wide.view())).margin(1e-5));
  CHECK(batch[1] == Approx(NaiveMaxSim(query.view(), big_wide.view())).margin(1e-5));
  CHECK(MaxSim(query.view(), wide.view()) == Approx(batch[0]).margin(1e-5));
}

TEST_CASE("MaxSim on a hand-computed 2x2 example") {
  // q0 = (1, 0), q1 = (0, 1); d0 = (0.5, 0.25), d1 = (-1, 2).
  // q0: max(0.5, -1) = 0.5; q1: max(0.25, 2) = 2; total 2.5.
  const std::vector<float> q = {1, 0, 0, 1};
  const std::vector<float> d = {0.5f, 0.25f, -1, 2};
  const MatrixView query{q.data(), 2, 2};
  const MatrixView doc{d.data(), 2, 2};
  CHECK(MaxSim(query, doc) == Approx(2.5f));
  const std::vector<float> batch = MaxSimBatch(query, {doc, doc});
  CHECK(batch == std::vector<float>{2.5f, 2.5f});
  // The best row can be negative: q = (1, 0) against (-3, 0) and (-2, 5) scores -2.
  const std::vector<float> q1 = {1, 0};
  const std::vector<float> neg = {-3, 0, -2, 5};
  CHECK(MaxSim({q1.data(), 1, 2}, {neg.data(), 2, 2}) == Approx(-2.0f));
  CHECK(MaxSimBatch({q1.data(), 1, 2}, {MatrixView{neg.data(), 2, 2}})[0] == Approx(-2.0f));
}

TEST_CASE("with one row each MaxSim is the dot product") {
  std::mt19937 rng(99);
  for (int dim : {1, 5, 8, 9, 128, 1000}) {
    const Matrix a = Random(rng, 1, dim, false);
    const Matrix b = Random(rng, 1, dim, false);
    double dot = 0;
    for (int k = 0; k < dim; ++k) dot += static_cast<double>(a.values[k]) * b.values[k];
    const double tol = 1e-5 * std::sqrt(static_cast<double>(dim)) * 4;
    CHECK(Dot(a.values.data(), b.values.data(), dim) == Approx(dot).margin(tol));
    CHECK(MaxSim(a.view(), b.view()) == Approx(dot).margin(tol));
    CHECK(MaxSimBatch(a.view(), {b.view(), b.view()})[1] == Approx(dot).margin(tol));
  }
}

TEST_CASE("empty documents and empty queries score 0") {
  std::mt19937 rng(5);
  const Matrix query = Random(rng, 4, 16);
  const Matrix empty{{}, 0, 16};
  const Matrix doc = Random(rng, 3, 16);
  CHECK(MaxSim(query.view(), empty.view()) == 0.0f);
  const std::vector<float> batch = MaxSimBatch(query.view(), {empty.view(), doc.view(), empty.view()});
  REQUIRE(batch.size() == 3);
  CHECK(batch[0] == 0.0f);
  CHECK(batch[2] == 0.0f);
  CHECK(batch[1] == Approx(NaiveMaxSim(query.view(), doc.view())).margin(1e-5));
  CHECK(MaxSimBatch(empty.view(), {doc.view()}) == std::vector<float>{0.0f});
  CHECK(MaxSim(empty.view(), doc.view()) == 0.0f);
  CHECK(MaxSimBatch(query.view(), {}).empty());
}

}  // namespace
}  // namespace embedserve::pipeline
