// MaxSim on a libtorch device: chunk planning, pinned staging, one matrix product per chunk,
// and the single device-to-host copy of the scores.
#include "server/models/maxsim_torch.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <thread>
#include <utility>

#include <ATen/Parallel.h>  // at::get_num_threads
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/models/torch_util.h"

namespace embedserve::models {
namespace {

absl::Status CheckOptions(const MaxSimOptions& options) {
  const at::ScalarType t = options.compute_dtype;
  if (t != at::kFloat && t != at::kBFloat16 && t != at::kHalf) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MaxSim compute dtype ", c10::toString(t), " is not one of float32, bfloat16, float16"));
  }
  if (options.chunk_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("MaxSim chunk_bytes is ", options.chunk_bytes, ", expected >= 0"));
  }
  return absl::OkStatus();
}

absl::Status CheckQuery(const RowsView& query) {
  if (query.rows < 0 || query.dim < 0 ||
      (query.data == nullptr && int64_t{query.rows} * query.dim > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("MaxSim query: ", query.rows, " x ",
                                                   query.dim, " rows without data"));
  }
  return absl::OkStatus();
}

absl::Status CheckDocuments(absl::Span<const RowsView> documents, int dim) {
  for (size_t i = 0; i < documents.size(); ++i) {
    const RowsView& doc = documents[i];
    if (doc.rows < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("documents[", i, "]: ", doc.rows, " rows, expected >= 0"));
    }
    if (doc.rows == 0) continue;  // scores 0 whatever its width
    if (doc.dim != dim) {
      return absl::InvalidArgumentError(absl::StrCat("documents[", i, "]: ", doc.dim,
                                                     " columns, the query has ", dim));
    }
    if (doc.data == nullptr && dim > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("documents[", i, "]: ", doc.rows, " rows without data"));
    }
  }
  return absl::OkStatus();
}

int64_t ChunkBytes(const MaxSimOptions& options, at::Device device) {
  if (options.chunk_bytes > 0) return options.chunk_bytes;
  return device.is_cpu() ? kCpuChunkBytes : kAcceleratorChunkBytes;
}

// Longest documents first, so each chunk's padding (up to its first document's length) is
// small. A chunk holds at most `max_rows` padded rows; a longer document is split into pieces
// of `max_rows` rows, one chunk each, whose row maxima are combined on the device.
MaxSimPlan MakePlan(absl::Span<const RowsView> documents, int dim, int query_rows,
                    int64_t chunk_bytes) {
  const int64_t row_bytes = static_cast<int64_t>(sizeof(float)) * (dim + std::max(query_rows, 1));
  const int64_t max_rows = std::max<int64_t>(1, chunk_bytes / row_bytes);
  MaxSimPlan plan;
  for (size_t i = 0; i < documents.size(); ++i) {
    if (documents[i].rows > 0) plan.order.push_back(static_cast<int64_t>(i));
  }
  std::stable_sort(plan.order.begin(), plan.order.end(), [&](int64_t a, int64_t b) {
    return documents[a].rows > documents[b].rows;
  });
  MaxSimPlan::Chunk open;
  auto close = [&] {
    if (!open.segments.empty()) plan.chunks.push_back(std::move(open));
    open = MaxSimPlan::Chunk();
  };
  for (int64_t doc : plan.order) {
    const int64_t rows = documents[doc].rows;
    if (rows > max_rows) {
      close();
      for (int64_t first = 0; first < rows; first += max_rows) {
        MaxSimPlan::Chunk piece;
        const int64_t n = std::min(max_rows, rows - first);
        piece.segments.push_back({doc, first, n});
        piece.padded_rows = n;
        piece.piece = true;
        piece.last_piece = first + n == rows;
        plan.chunks.push_back(std::move(piece));
      }
      continue;
    }
    if (!open.segments.empty() &&
        static_cast<int64_t>(open.segments.size() + 1) * open.padded_rows > max_rows) {
      close();
    }
    if (open.segments.empty()) open.padded_rows = rows;  // the longest: sorted descending
    open.segments.push_back({doc, 0, rows});
  }
  close();
  return plan;
}

// Padded rows [begin, end) of the chunk (counted over all its segments) into `base`. Padding
// rows repeat their segment's last row: a repeated row cannot change a row maximum, so no mask
// is needed.
void CopyRows(const MaxSimPlan::Chunk& chunk, absl::Span<const RowsView> documents, int dim,
              float* base, int64_t begin, int64_t end) {
  const int64_t padded = chunk.padded_rows;
  const size_t row_bytes = sizeof(float) * static_cast<size_t>(dim);
  for (int64_t g = begin; g < end;) {
    const int64_t b = g / padded;
    const MaxSimPlan::Segment& s = chunk.segments[b];
    const float* src = documents[s.doc].data + s.first_row * dim;
    const int64_t stop = std::min(end, (b + 1) * padded);
    const int64_t real_end = std::min(stop, b * padded + s.rows);
    if (g < real_end) {
      std::memcpy(base + g * dim, src + (g - b * padded) * dim, row_bytes * (real_end - g));
      g = real_end;
    }
    for (; g < stop; ++g) std::memcpy(base + g * dim, src + (s.rows - 1) * dim, row_bytes);
  }
}

// Packing is bound by host memory bandwidth: large chunks are copied by up to libtorch's
// intra-op thread count, one thread per 16 MiB (on the 16-core H100 machine a 527 MB host copy
// took 89 ms on one thread, 14 ms on 16; maxsim_bench's CUDA copy+score went from 87 to 20 ms).
// Plain threads, not at::parallel_for: with libtorch's OpenMP backend that is an inline
// `#pragma omp parallel`, serial in code built without -fopenmp, as this project is. CPU chunks
// (4 MiB by default) stay on this thread.
void Pack(const MaxSimPlan::Chunk& chunk, absl::Span<const RowsView> documents, int dim,
          float* base) {
  constexpr int64_t kBytesPerThread = int64_t{16} << 20;
  const int64_t rows = static_cast<int64_t>(chunk.segments.size()) * chunk.padded_rows;
  const int64_t bytes = rows * dim * static_cast<int64_t>(sizeof(float));
  const int64_t threads =
      std::clamp<int64_t>(bytes / kBytesPerThread, 1, std::max(1, at::get_num_threads()));
  if (threads == 1) {
    CopyRows(chunk, documents, dim, base, 0, rows);
    return;
  }
  std::vector<std::thread> team;
  for (int64_t t = 1; t < threads; ++t) {
    team.emplace_back(CopyRows, std::cref(chunk), documents, dim, base, rows * t / threads,
                      rows * (t + 1) / threads);
  }
  CopyRows(chunk, documents, dim, base, 0, rows / threads);
  for (std::thread& thread : team) thread.join();
}

// The chunk's rows as a [segments, padded rows, dim] float32 tensor on `device`. For CUDA the
// host buffer is pinned and the copy asynchronous; libtorch's caching host allocator keeps the
// buffer until the copy has run, so the next chunk gets another one and is packed while this
// one is copied.
at::Tensor Stage(const MaxSimPlan::Chunk& chunk, absl::Span<const RowsView> documents, int dim,
                 at::Device device) {
  const int64_t batch = static_cast<int64_t>(chunk.segments.size());
  at::Tensor staged = NewHostTensor({batch, chunk.padded_rows, dim}, at::kFloat, device);
  Pack(chunk, documents, dim, staged.data_ptr<float>());
  if (device.is_cpu()) return staged;
  return staged.to(device, /*non_blocking=*/true);
}

// The query as [query rows, dim] in the compute dtype on the device.
at::Tensor QueryRows(const RowsView& query, at::Device device, at::ScalarType dtype) {
  at::Tensor host = at::from_blob(const_cast<float*>(query.data), {query.rows, query.dim},
                                  at::TensorOptions().dtype(at::kFloat));
  return host.to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
}

// For each segment and query row, the best product over the segment's rows: [segments, query
// rows] in float32. One matrix product for the whole chunk, laid out [query rows, segments *
// rows] so that the max runs over contiguous memory.
at::Tensor RowMaxima(const at::Tensor& rows, const at::Tensor& query) {
  const int64_t batch = rows.size(0), padded = rows.size(1), dim = rows.size(2);
  const at::Tensor x = rows.to(query.scalar_type());
  const at::Tensor scores =
      at::mm(query, x.reshape({batch * padded, dim}).t()).view({query.size(0), batch, padded});
  return at::amax(scores, {2}).to(at::kFloat).t();
}

// Turns each chunk's row maxima into document scores, on the device; Finish copies them all to
// the host at once.
class Scores {
 public:
  void Add(const MaxSimPlan::Chunk& chunk, const at::Tensor& maxima) {
    if (!chunk.piece) {
      sums_.push_back(maxima.sum(1));  // float32
      return;
    }
    best_ = best_.defined() ? at::maximum(best_, maxima[0]) : maxima[0];
    if (chunk.last_piece) {
      sums_.push_back(best_.sum().reshape({1}));
      best_ = at::Tensor();
    }
  }

  std::vector<float> Finish(const MaxSimPlan& plan, size_t count) {
    std::vector<float> scores(count, 0.0f);
    if (sums_.empty()) return scores;
    const at::Tensor host = at::cat(sums_).to(at::kCPU).contiguous();  // the one sync
    const float* values = host.data_ptr<float>();
    for (size_t k = 0; k < plan.order.size(); ++k) scores[plan.order[k]] = values[k];
    return scores;
  }

 private:
  std::vector<at::Tensor> sums_;  // in plan.order
  at::Tensor best_;               // running row maxima of the document being split
};

}  // namespace

absl::StatusOr<std::vector<float>> MaxSimOnDevice(const RowsView& query,
                                                  absl::Span<const RowsView> documents,
                                                  at::Device device,
                                                  const MaxSimOptions& options) {
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  if (absl::Status s = CheckQuery(query); !s.ok()) return s;
  std::vector<float> scores(documents.size(), 0.0f);
  if (query.rows == 0) return scores;
  if (absl::Status s = CheckDocuments(documents, query.dim); !s.ok()) return s;
  if (query.dim == 0) return scores;  // every product is 0
  const MaxSimPlan plan =
      MakePlan(documents, query.dim, query.rows, ChunkBytes(options, device));
  if (plan.chunks.empty()) return scores;
  absl::Status status = GuardTorch("MaxSim", [&] {
    c10::InferenceMode inference;
    const at::Tensor query_rows = QueryRows(query, device, options.compute_dtype);
    Scores collected;
    for (const MaxSimPlan::Chunk& chunk : plan.chunks) {
      collected.Add(chunk, RowMaxima(Stage(chunk, documents, query.dim, device), query_rows));
    }
    scores = collected.Finish(plan, documents.size());
  });
  if (!status.ok()) return status;
  return scores;
}

absl::StatusOr<DeviceDocuments> DeviceDocuments::Pack(absl::Span<const RowsView> documents,
                                                      int dim, int max_query_rows,
                                                      at::Device device,
                                                      const MaxSimOptions& options) {
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  if (dim < 0) return absl::InvalidArgumentError(absl::StrCat("MaxSim dim ", dim, " < 0"));
  if (absl::Status s = CheckDocuments(documents, dim); !s.ok()) return s;
  DeviceDocuments packed(device, options);
  packed.dim_ = dim;
  packed.count_ = documents.size();
  if (dim == 0) return packed;  // every score is 0
  packed.plan_ = MakePlan(documents, dim, max_query_rows, ChunkBytes(options, device));
  absl::Status status = GuardTorch("packing MaxSim documents", [&] {
    c10::InferenceMode inference;
    for (const MaxSimPlan::Chunk& chunk : packed.plan_.chunks) {
      packed.rows_.push_back(Stage(chunk, documents, dim, device).to(options.compute_dtype));
    }
  });
  if (!status.ok()) return status;
  return std::move(packed);
}

absl::StatusOr<std::vector<float>> DeviceDocuments::Score(const RowsView& query) const {
  if (absl::Status s = CheckQuery(query); !s.ok()) return s;
  std::vector<float> scores(count_, 0.0f);
  if (query.rows == 0) return scores;
  if (query.dim != dim_) {
    return absl::InvalidArgumentError(absl::StrCat("MaxSim query has ", query.dim,
                                                   " columns, the documents ", dim_));
  }
  if (plan_.chunks.empty()) return scores;
  absl::Status status = GuardTorch("MaxSim", [&] {
    c10::InferenceMode inference;
    const at::Tensor query_rows = QueryRows(query, device_, options_.compute_dtype);
    Scores collected;
    for (size_t c = 0; c < plan_.chunks.size(); ++c) {
      collected.Add(plan_.chunks[c], RowMaxima(rows_[c], query_rows));
    }
    scores = collected.Finish(plan_, count_);
  });
  if (!status.ok()) return status;
  return scores;
}

}  // namespace embedserve::models
