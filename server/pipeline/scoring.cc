// Host-side scoring math.
#include "server/pipeline/scoring.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

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

float Dot(const float* a, const float* b, int dim) {
  float sum = 0;
  for (int i = 0; i < dim; ++i) sum += a[i] * b[i];
  return sum;
}

float MaxSim(const MatrixView& query, const MatrixView& document) {
  float total = 0;
  for (int q = 0; q < query.rows; ++q) {
    const float* qrow = query.data + static_cast<int64_t>(q) * query.dim;
    float best = -std::numeric_limits<float>::infinity();
    for (int d = 0; d < document.rows; ++d) {
      best = std::max(best, Dot(qrow, document.data + static_cast<int64_t>(d) * document.dim,
                                query.dim));
    }
    if (document.rows > 0) total += best;
  }
  return total;
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
