// Scoring rules on host vectors: L2 normalization, cosine/dot, late-interaction MaxSim,
// softmax, and top-k ordering. Pure CPU math with no model knowledge (the view type is
// shared with the models).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "server/models/model.h"

namespace embedserve::pipeline {

// A row-major [rows x dim] matrix view (the models' RowsView: the same vectors a model's
// MaxSim scores on its device).
using MatrixView = models::RowsView;

// Scales each row of a [rows x dim] matrix to unit L2 norm (zero rows stay zero).
void NormalizeRows(float* data, int rows, int dim);

float Dot(const float* a, const float* b, int dim);

// Late interaction: for each query row, the best dot product over the document's rows,
// summed over query rows. With one row each it is the dot product. A document (or query)
// with no rows scores 0. Documents are read with query.dim columns and a row stride of
// their own dim (normally the two are equal). Large pairs go through MaxSimBatch.
float MaxSim(const MatrixView& query, const MatrixView& document);

// MaxSim(query, documents[i]) for every i, computed with BLAS sgemm over blocks of
// document rows (small documents are packed together, large ones are used in place) and
// a vectorized row max; documents may have different row counts. Same definition as
// MaxSim, up to float rounding.
std::vector<float> MaxSimBatch(const MatrixView& query, absl::Span<const MatrixView> documents);

// softmax(x) in place, numerically stable.
void SoftmaxInPlace(std::vector<float>& logits);

// Indices of `scores`, best first, ties in index order; at most `k` (k <= 0: all).
std::vector<int> TopK(absl::Span<const float> scores, int k);

}  // namespace embedserve::pipeline
