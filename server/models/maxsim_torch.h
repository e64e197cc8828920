// MaxSim (late interaction) on a libtorch device: documents are packed into padded
// [batch, rows, dim] chunks under a byte budget, each chunk is one matrix product against the
// query on the device, and every score comes back to the host in one copy at the end.
// Generic ATen only (no CUDA headers): builds against CPU-only libtorch 1.13 and CUDA 2.x.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/models/model.h"

namespace embedserve::models {

inline constexpr int64_t kAcceleratorChunkBytes = int64_t{256} << 20;
inline constexpr int64_t kCpuChunkBytes = int64_t{4} << 20;

struct MaxSimOptions {
  // What the products are computed in: at::kFloat (default), at::kBFloat16 or at::kHalf
  // (faster on GPUs; inputs and products are rounded to it). Row maxima are summed in float32
  // whatever this is. libtorch 1.13 has no float16 matrix product on CPU.
  at::ScalarType compute_dtype = at::kFloat;
  // Bound on one chunk, counted in float32 bytes: its padded document rows plus its score
  // matrix (rows x query rows). A document longer than one chunk is split over several.
  // 0 picks by device: kAcceleratorChunkBytes (1,000 pages of 1,030 x 128 against a 20-row
  // query take 3 chunks) or, on the CPU, kCpuChunkBytes, which keeps a chunk and its scores in
  // cache (benchmarks/maxsim_bench on 2 cores: 256 MiB chunks ran about 4x slower).
  int64_t chunk_bytes = 0;
};

// Implementation details, shared by MaxSimOnDevice and DeviceDocuments; API users need not read.
struct MaxSimPlan {
  // Rows [first_row, first_row + rows) of documents[doc].
  struct Segment {
    int64_t doc = 0;
    int64_t first_row = 0;
    int64_t rows = 0;
  };
  struct Chunk {
    std::vector<Segment> segments;  // whole documents, or one piece of a split document
    int64_t padded_rows = 0;        // every segment's rows after padding
    bool piece = false;             // one piece of a document split over several chunks
    bool last_piece = false;
  };
  std::vector<Chunk> chunks;
  std::vector<int64_t> order;  // the k-th score computed belongs to documents[order[k]]
};

// MaxSim(query, documents[i]) for every i, as pipeline::MaxSim defines it (for each query row
// the best dot product over the document's rows, summed over query rows), computed on `device`.
// - Every document with rows must have query.dim columns (INVALID_ARGUMENT naming the index
//   otherwise). Documents with no rows score 0; a query with no rows scores 0 everywhere.
// - The views are read during the call only. On a CUDA device the chunks are staged in pinned
//   host memory and copied asynchronously, so packing the next chunk overlaps the device's
//   work; the call blocks once, when the scores are copied back.
// - Never throws: libtorch failures come back as INTERNAL (RESOURCE_EXHAUSTED for out of
//   memory). Runs under c10::InferenceMode. Not for concurrent use of one CUDA stream: call it
//   from the thread that owns the device (the executor), like Model::EmbedTexts.
absl::StatusOr<std::vector<float>> MaxSimOnDevice(const RowsView& query,
                                                  absl::Span<const RowsView> documents,
                                                  at::Device device,
                                                  const MaxSimOptions& options = {});

// Documents packed and copied to a device once (in the compute dtype), then scored against
// many queries without copying them again. Same contract as MaxSimOnDevice otherwise.
class DeviceDocuments {
 public:
  // Chunks are sized for queries of up to `max_query_rows` rows (larger ones still work, with
  // proportionally larger score matrices).
  static absl::StatusOr<DeviceDocuments> Pack(absl::Span<const RowsView> documents, int dim,
                                              int max_query_rows, at::Device device,
                                              const MaxSimOptions& options = {});

  // MaxSim(query, documents[i]) for every packed document; query.dim must be the packed dim.
  absl::StatusOr<std::vector<float>> Score(const RowsView& query) const;

  size_t size() const { return count_; }
  size_t chunk_count() const { return plan_.chunks.size(); }

 private:
  DeviceDocuments(at::Device device, const MaxSimOptions& options)
      : device_(device), options_(options) {}

  at::Device device_;
  MaxSimOptions options_;
  int dim_ = 0;
  size_t count_ = 0;
  MaxSimPlan plan_;
  std::vector<at::Tensor> rows_;  // per chunk: [segments, padded rows, dim] on device_
};

}  // namespace embedserve::models
