// MaxSim scoring throughput: 1,000 candidate pages of 1,030 vectors (dim 128) against a
// 20-token query. Naive scalar triple loop vs pipeline::MaxSimBatch (BLAS sgemm + vectorized
// row max) vs the libtorch path (models::MaxSimOnDevice) on --device in --dtype, the latter
// both with the host-to-device packing and copy of the candidates ("copy+score") and with the
// candidates already on the device ("score only", models::DeviceDocuments): candidates/s
// (median of --runs), the ratio, and GFLOP/s at 2*Q*P*D*N FLOP a run, per wall second and per
// process CPU second (the latter is steadier on a shared machine). Every torch run ends with
// its scores on the host, so CUDA timings include the device's work. The torch scores are
// checked against MaxSimBatch (largest relative difference).
// Usage: maxsim_bench [--pages 1000] [--page-rows 1030] [--query-rows 20] [--dim 128]
//                     [--runs 5] [--device cpu|cuda|cuda:N] [--dtype float32|bfloat16|float16]
//                     [--chunk-mib N (0: the device's default)]
// Exit status: 0 when every path agrees, 1 when one does not, 2 for bad flags or a device this
// build or machine lacks (e.g. --device cuda with a CPU-only libtorch).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "server/models/maxsim_torch.h"
#include "server/models/torch_util.h"
#include "server/pipeline/scoring.h"

namespace {

using embedserve::pipeline::MatrixView;

// The scalar reference, as MaxSim was written before: one dot product at a time, sequential
// float accumulation.
float NaiveMaxSim(const MatrixView& q, const MatrixView& d) {
  float total = 0;
  for (int i = 0; i < q.rows; ++i) {
    const float* qrow = q.data + static_cast<int64_t>(i) * q.dim;
    float best = -std::numeric_limits<float>::infinity();
    for (int j = 0; j < d.rows; ++j) {
      const float* drow = d.data + static_cast<int64_t>(j) * d.dim;
      float dot = 0;
      for (int k = 0; k < q.dim; ++k) dot += qrow[k] * drow[k];
      best = std::max(best, dot);
    }
    if (d.rows > 0) total += best;
  }
  return total;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Timing {
  double wall = 0;  // seconds
  double cpu = 0;   // process CPU seconds (all threads, BLAS's included)
};

template <typename F>
Timing Time(F&& f) {
  const auto start = std::chrono::steady_clock::now();
  const std::clock_t cpu_start = std::clock();
  f();
  return {std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
          static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC};
}

}  // namespace

int main(int argc, char** argv) {
  namespace models = embedserve::models;
  int pages = 1000, page_rows = 1030, query_rows = 20, dim = 128, runs = 5, chunk_mib = 0;
  std::string device_name = "cpu", dtype_name = "float32";
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "flag %s needs a value\n", argv[i]);
      return 2;
    }
    const int value = std::atoi(argv[i + 1]);
    if (flag == "--pages") pages = value;
    else if (flag == "--page-rows") page_rows = value;
    else if (flag == "--query-rows") query_rows = value;
    else if (flag == "--dim") dim = value;
    else if (flag == "--runs") runs = value;
    else if (flag == "--chunk-mib") chunk_mib = value;
    else if (flag == "--device") device_name = argv[i + 1];
    else if (flag == "--dtype") dtype_name = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if (pages < 1 || page_rows < 1 || query_rows < 1 || dim < 1 || runs < 1 || chunk_mib < 0) {
    std::fprintf(stderr, "every count must be >= 1 (--chunk-mib >= 0)\n");
    return 2;
  }
  const absl::StatusOr<at::Device> device = models::ParseDevice(device_name);
  if (!device.ok()) {
    std::fprintf(stderr, "maxsim_bench: %s\n", device.status().ToString().c_str());
    return 2;
  }
  models::RuntimeOptions runtime;
  runtime.dtype = dtype_name;
  runtime.allow_slow_bfloat16 = true;  // measured on purpose, even where it is a fallback
  const absl::StatusOr<models::ServingDtype> serving = models::ResolveServingDtype(runtime, *device);
  if (!serving.ok()) {
    std::fprintf(stderr, "maxsim_bench: %s\n", serving.status().ToString().c_str());
    return 2;
  }
  const at::ScalarType* dtype = &serving->type;
  models::MaxSimOptions options;
  options.compute_dtype = *dtype;
  options.chunk_bytes = static_cast<int64_t>(chunk_mib) << 20;

  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random_rows = [&](int rows) {
    std::vector<float> m(static_cast<size_t>(rows) * dim);
    for (float& x : m) x = normal(rng);
    embedserve::pipeline::NormalizeRows(m.data(), rows, dim);
    return m;
  };
  const std::vector<float> query_values = random_rows(query_rows);
  const MatrixView query{query_values.data(), query_rows, dim};
  // Each page in its own buffer, as Rerank holds them.
  std::vector<std::vector<float>> page_values;
  std::vector<MatrixView> docs;
  for (int p = 0; p < pages; ++p) page_values.push_back(random_rows(page_rows));
  for (const auto& v : page_values) docs.push_back({v.data(), page_rows, dim});

  const double flop = 2.0 * query_rows * page_rows * dim * pages;
  std::printf("MaxSim: %d pages x %d x %d vs a %d x %d query; %.2f GFLOP a run; median of %d\n",
              pages, page_rows, dim, query_rows, dim, flop / 1e9, runs);

  std::vector<float> naive(pages), fast;
  std::vector<double> naive_s, fast_s, naive_cpu, fast_cpu;
  fast = embedserve::pipeline::MaxSimBatch(query, docs);  // warm-up (BLAS threads, pages)
  for (int r = 0; r < runs; ++r) {
    const Timing n = Time([&] {
      for (int p = 0; p < pages; ++p) naive[p] = NaiveMaxSim(query, docs[p]);
    });
    const Timing f = Time([&] { fast = embedserve::pipeline::MaxSimBatch(query, docs); });
    naive_s.push_back(n.wall);
    naive_cpu.push_back(n.cpu);
    fast_s.push_back(f.wall);
    fast_cpu.push_back(f.cpu);
  }
  double worst = 0;
  for (int p = 0; p < pages; ++p) {
    worst = std::max(worst, static_cast<double>(std::fabs(fast[p] - naive[p])));
  }

  // The torch path: packing + host-to-device copy + scoring, then scoring candidates that are
  // already on the device. Each call returns host scores, so a CUDA run is synchronized.
  const std::vector<models::RowsView>& views = docs;
  const models::RowsView& torch_query = query;
  std::vector<float> copied, resident;
  auto fail = [](const char* what, const absl::Status& status) {
    std::fprintf(stderr, "maxsim_bench: %s: %s\n", what, status.ToString().c_str());
    return 1;
  };
  const auto pack_start = std::chrono::steady_clock::now();
  absl::StatusOr<models::DeviceDocuments> packed =
      models::DeviceDocuments::Pack(views, dim, query_rows, *device, options);
  if (!packed.ok()) return fail("packing on the device", packed.status());
  {
    absl::StatusOr<std::vector<float>> warm = packed->Score(torch_query);  // waits for the copies
    if (!warm.ok()) return fail("torch score only", warm.status());
  }
  const double pack_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - pack_start).count();
  absl::StatusOr<std::vector<float>> warm = models::MaxSimOnDevice(torch_query, views, *device,
                                                                   options);  // warm-up
  if (!warm.ok()) return fail("torch copy+score", warm.status());
  std::vector<double> copy_s, copy_cpu, score_s, score_cpu;
  absl::Status torch_status;
  for (int r = 0; r < runs && torch_status.ok(); ++r) {
    const Timing c = Time([&] {
      absl::StatusOr<std::vector<float>> s =
          models::MaxSimOnDevice(torch_query, views, *device, options);
      if (s.ok()) copied = *std::move(s);
      else torch_status = s.status();
    });
    const Timing o = Time([&] {
      absl::StatusOr<std::vector<float>> s = packed->Score(torch_query);
      if (s.ok()) resident = *std::move(s);
      else torch_status = s.status();
    });
    copy_s.push_back(c.wall);
    copy_cpu.push_back(c.cpu);
    score_s.push_back(o.wall);
    score_cpu.push_back(o.cpu);
  }
  if (!torch_status.ok()) return fail("torch path", torch_status);
  // Relative to MaxSimBatch's scores (sums of 20 row maxima of unit vectors: far from 0).
  double worst_copied = 0, worst_resident = 0;
  for (int p = 0; p < pages; ++p) {
    const double scale = std::max(1e-6, static_cast<double>(std::fabs(fast[p])));
    worst_copied = std::max(worst_copied, std::fabs(copied[p] - fast[p]) / scale);
    worst_resident = std::max(worst_resident, std::fabs(resident[p] - fast[p]) / scale);
  }

  const double tn = Median(naive_s), tf = Median(fast_s);
  const double cn = Median(naive_cpu), cf = Median(fast_cpu);
  const double tc = Median(copy_s), to = Median(score_s);
  const double cc = Median(copy_cpu), co = Median(score_cpu);
  const std::string torch_name =
      "torch " + device->str() + " " + models::ServingDtypeName(*dtype);
  std::printf("%-36s %10s %14s %10s %14s\n", "", "ms/run", "candidates/s", "GFLOP/s",
              "GFLOP/CPU-s");
  auto row = [&](const std::string& name, double wall, double cpu) {
    std::printf("%-36s %10.1f %14.0f %10.2f %14.2f\n", name.c_str(), wall * 1e3, pages / wall,
                flop / wall / 1e9, flop / cpu / 1e9);
  };
  row("naive scalar MaxSim", tn, cn);
  row("MaxSimBatch (sgemm)", tf, cf);
  row(torch_name + ", copy+score", tc, cc);
  row(torch_name + ", score only", to, co);
  std::printf("speed-up (median ratio) %.1fx; largest |score difference| %.2e\n", tn / tf, worst);
  const int64_t chunk_bytes = options.chunk_bytes > 0 ? options.chunk_bytes
                              : device->is_cpu()     ? models::kCpuChunkBytes
                                                     : models::kAcceleratorChunkBytes;
  std::printf("torch: %zu chunks of <= %lld MiB; packing + copy to the device once %.1f ms; "
              "largest relative difference to MaxSimBatch: copy+score %.2e, score only %.2e\n",
              packed->chunk_count(), static_cast<long long>(chunk_bytes >> 20), pack_s * 1e3,
              worst_copied, worst_resident);
  // Allowed relative differences: float32 rounding only; float16 / bfloat16 round inputs and
  // products (unit roundoff 2^-11 / 2^-8, about 3 of them per product at worst).
  const double allowed = *dtype == at::kFloat ? 1e-4 : *dtype == at::kHalf ? 5e-3 : 4e-2;
  const bool torch_ok = worst_copied <= allowed && worst_resident <= allowed;
  if (!torch_ok) std::printf("torch scores differ by more than %.0e\n", allowed);
  return worst < 1e-3 * query_rows && torch_ok ? 0 : 1;
}
