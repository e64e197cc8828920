// Process-wide Prometheus metrics: counters, histograms and gauges with labels, rendered in
// the Prometheus text exposition format. Names follow Prometheus conventions
// (embedserve_..._total, embedserve_..._seconds).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include <mutex>
#include <condition_variable>

namespace embedserve::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

// Thread-safe; lock-free to update.
class Counter {
 public:
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// Thread-safe. Cumulative buckets as Prometheus wants them.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);
  // Bucket counts (non-cumulative, last = +Inf), sum and count.
  void Snapshot(std::vector<uint64_t>* counts, double* sum, uint64_t* count) const;
  const std::vector<double>& upper_bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  mutable std::mutex mu_;
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

// Buckets for latencies in seconds (100 us .. 60 s) and for batch sizes (1 .. 1024).
std::vector<double> LatencyBuckets();
std::vector<double> SizeBuckets();

// Thread-safe. Series are created on first use and live as long as the registry; the
// returned references stay valid.
class Registry {
 public:
  Counter& GetCounter(const std::string& name, const std::string& help, const Labels& labels);
  Histogram& GetHistogram(const std::string& name, const std::string& help,
                          const Labels& labels, const std::vector<double>& bounds);
  // A gauge read at render time: returns (labels, value) pairs.
  void SetGauge(const std::string& name, const std::string& help,
                std::function<std::vector<std::pair<Labels, double>>()> read);
  std::string Render() const;

 private:
  struct Family {
    std::string help;
    std::string type;  // "counter", "histogram", "gauge"
    std::map<Labels, std::unique_ptr<Counter>> counters;
    std::map<Labels, std::unique_ptr<Histogram>> histograms;
    std::function<std::vector<std::pair<Labels, double>>()> gauge;
  };
  mutable std::mutex mu_;
  std::map<std::string, Family> families_ ABSL_GUARDED_BY(mu_);
};

// The process-wide registry.
Registry& Global();

}  // namespace embedserve::metrics
