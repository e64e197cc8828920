// Host-side scoring math.
#include "server/pipeline/scoring.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

// The BLAS that libtorch already loads (libblas.so.3, OpenBLAS on Debian): only sgemm.
#if __has_include(<cblas.h>)
#include <cblas.h>
#else
extern "C" {
enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 };
void cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int m,
                 int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
                 float beta, float* c, int ldc);
}
#endif

namespace embedserve::pipeline {

void NormalizeRows(float* data, int rows, int dim) {
  for (int r = 0; r < rows; ++r) {
    float* row = data + static_cast<int64_t>(r) * dim;
    double sum = 0;
    for (int i = 0; i < dim; ++i) sum += static_cast<double>(row[i]) * row[i];
    if (sum <= 0) continue;
    const float inv = static_cast<float>(1.0 / std::sqrt(sum));
    for (int i = 0; i < dim; ++i) row[i] *= inv;
  }
}

namespace {

constexpr int kLanes = 8;  // independent accumulators, so -O3 turns the loops into SIMD

// max(x[0..n)) for n >= 1; -inf for n == 0.
float MaxOf(const float* x, int n) {
  float lane[kLanes];
  for (float& m : lane) m = -std::numeric_limits<float>::infinity();
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] = x[i + l] > lane[l] ? x[i + l] : lane[l];
  }
  for (; i < n; ++i) lane[0] = x[i] > lane[0] ? x[i] : lane[0];
  float m = lane[0];
  for (int l = 1; l < kLanes; ++l) m = lane[l] > m ? lane[l] : m;
  return m;
}

// Below this many multiply-adds a pair is scored with plain loops (no BLAS call, no buffers).
constexpr int64_t kSmallPairMacs = 16 * 1024;
// One sgemm covers at most this many multiply-adds (query rows x block rows x dim), which
// keeps the block in L1/L2 and keeps OpenBLAS on the calling thread: it only starts its
// thread pool above 65536 * GEMM_MULTITHREAD_THRESHOLD (4) = 262144. Rerank calls run in
// parallel already, and on a loaded machine the pool's spinning threads made one
// 1,000-page call 5x slower than single-threaded calls (measured).
constexpr int64_t kBlockMacs = 262144;
constexpr int kMinBlockRows = 32;
constexpr int kMaxBlockRows = 4096;

// Reads one float per cache line of x[0..n), pulling a document block into cache before
// sgemm: OpenBLAS's packing stalls on memory when a page comes cold from DRAM (measured 1.5x
// slower than a streaming read followed by sgemm on the cached block).
void TouchCacheLines(const float* x, int64_t n) {
  constexpr int kLineFloats = 64 / sizeof(float);
  float lane[4] = {};
  for (int64_t i = 0; i < n; i += kLineFloats) lane[(i / kLineFloats) & 3] += x[i];
  volatile float keep = (lane[0] + lane[1]) + (lane[2] + lane[3]);
  (void)keep;
}

float MaxSimLoops(const MatrixView& query, const MatrixView& document) {
  if (document.rows <= 0) return 0;
  float total = 0;
  for (int q = 0; q < query.rows; ++q) {
    const float* qrow = query.data + static_cast<int64_t>(q) * query.dim;
    float best = -std::numeric_limits<float>::infinity();
    for (int d = 0; d < document.rows; ++d) {
      const float s =
          Dot(qrow, document.data + static_cast<int64_t>(d) * document.dim, query.dim);
      best = s > best ? s : best;
    }
    total += best;
  }
  return total;
}

}  // namespace

float Dot(const float* a, const float* b, int dim) {
  float lane[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= dim; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] += a[i + l] * b[i + l];
  }
  for (; i < dim; ++i) lane[0] += a[i] * b[i];
  return ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
}

float MaxSim(const MatrixView& query, const MatrixView& document) {
  if (query.rows <= 0 || document.rows <= 0) return 0;
  if (static_cast<int64_t>(query.rows) * document.rows * query.dim < kSmallPairMacs) {
    return MaxSimLoops(query, document);
  }
  return MaxSimBatch(query, absl::MakeConstSpan(&document, 1))[0];
}

std::vector<float> MaxSimBatch(const MatrixView& query, absl::Span<const MatrixView> documents) {
  std::vector<float> scores(documents.size(), 0.0f);
  const int qrows = query.rows;
  const int dim = query.dim;
  if (qrows <= 0 || documents.empty()) return scores;
  if (dim <= 0) return scores;  // every dot product is 0

  // Rows of document vectors per sgemm. Documents with at least half a block are multiplied
  // in place, a block at a time; smaller ones are copied together into one packed block.
  const int block_rows = static_cast<int>(std::clamp<int64_t>(
      kBlockMacs / (static_cast<int64_t>(qrows) * dim), kMinBlockRows, kMaxBlockRows));
  const int direct_rows = block_rows / 2;
  std::vector<float> tile(static_cast<size_t>(qrows) * block_rows);  // [qrows x block rows]
  std::vector<float> packed;                                          // [block_rows x dim]
  std::vector<float> best(qrows);

  // tile[q][0..cols) = query[q] . rows[c] for `cols` contiguous rows of width dim.
  auto multiply = [&](const float* rows, int cols) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qrows, cols, dim, 1.0f, query.data, dim,
                rows, dim, 0.0f, tile.data(), cols);
  };

  // Small documents waiting in `packed`: document index, first row, row count.
  struct Pending {
    size_t index;
    int first;
    int rows;
  };
  std::vector<Pending> pending;
  int packed_rows = 0;
  auto flush = [&] {
    if (packed_rows == 0) return;
    multiply(packed.data(), packed_rows);
    for (const Pending& p : pending) {
      float total = 0;
      for (int q = 0; q < qrows; ++q) {
        total += MaxOf(tile.data() + static_cast<int64_t>(q) * packed_rows + p.first, p.rows);
      }
      scores[p.index] = total;
    }
    pending.clear();
    packed_rows = 0;
  };

  for (size_t i = 0; i < documents.size(); ++i) {
    const MatrixView& doc = documents[i];
    if (doc.rows <= 0) continue;  // no rows: 0, as MaxSim
    if (doc.dim != dim) {
      scores[i] = MaxSimLoops(query, doc);  // a row stride other than dim: the plain loops
      continue;
    }
    if (doc.rows >= direct_rows) {
      std::fill(best.begin(), best.end(), -std::numeric_limits<float>::infinity());
      for (int start = 0; start < doc.rows; start += block_rows) {
        const int cols = std::min(block_rows, doc.rows - start);
        const float* rows = doc.data + static_cast<int64_t>(start) * dim;
        TouchCacheLines(rows, static_cast<int64_t>(cols) * dim);
        multiply(rows, cols);
        for (int q = 0; q < qrows; ++q) {
          best[q] = std::max(best[q], MaxOf(tile.data() + static_cast<int64_t>(q) * cols, cols));
        }
      }
      float total = 0;
      for (int q = 0; q < qrows; ++q) total += best[q];
      scores[i] = total;
      continue;
    }
    if (packed_rows + doc.rows > block_rows) flush();
    if (packed.empty()) packed.resize(static_cast<size_t>(block_rows) * dim);
    std::memcpy(packed.data() + static_cast<int64_t>(packed_rows) * dim, doc.data,
                sizeof(float) * static_cast<size_t>(doc.rows) * dim);
    pending.push_back({i, packed_rows, doc.rows});
    packed_rows += doc.rows;
  }
  flush();
  return scores;
}

void SoftmaxInPlace(std::vector<float>& logits) {
  if (logits.empty()) return;
  const float top = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float& x : logits) {
    x = std::exp(x - top);
    sum += x;
  }
  for (float& x : logits) x = static_cast<float>(x / sum);
}

std::vector<int> TopK(absl::Span<const float> scores, int k) {
  std::vector<int> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return scores[a] > scores[b]; });
  if (k > 0 && k < static_cast<int>(order.size())) order.resize(k);
  return order;
}

}  // namespace embedserve::pipeline
