// MaxSim scoring throughput: 1,000 candidate pages of 1,030 vectors (dim 128) against a
// 20-token query. Naive scalar triple loop vs pipeline::MaxSimBatch (BLAS sgemm + vectorized
// row max): candidates/s (median of --runs), the ratio, and GFLOP/s at 2*Q*P*D*N FLOP a run,
// per wall second and per process CPU second (the latter is steadier on a shared machine).
// Usage: maxsim_bench [--pages 1000] [--page-rows 1030] [--query-rows 20] [--dim 128]
//                     [--runs 5]
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
  int pages = 1000, page_rows = 1030, query_rows = 20, dim = 128, runs = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int value = std::atoi(argv[i + 1]);
    if (flag == "--pages") pages = value;
    else if (flag == "--page-rows") page_rows = value;
    else if (flag == "--query-rows") query_rows = value;
    else if (flag == "--dim") dim = value;
    else if (flag == "--runs") runs = value;
    else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }

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

  const double tn = Median(naive_s), tf = Median(fast_s);
  const double cn = Median(naive_cpu), cf = Median(fast_cpu);
  std::printf("%-22s %10s %14s %10s %14s\n", "", "ms/run", "candidates/s", "GFLOP/s",
              "GFLOP/CPU-s");
  std::printf("%-22s %10.1f %14.0f %10.2f %14.2f\n", "naive scalar MaxSim", tn * 1e3,
              pages / tn, flop / tn / 1e9, flop / cn / 1e9);
  std::printf("%-22s %10.1f %14.0f %10.2f %14.2f\n", "MaxSimBatch (sgemm)", tf * 1e3,
              pages / tf, flop / tf / 1e9, flop / cf / 1e9);
  std::printf("speed-up (median ratio) %.1fx; largest |score difference| %.2e\n", tn / tf, worst);
  return worst < 1e-3 * query_rows ? 0 : 1;
}
