// Metrics registry and Prometheus text rendering.
#include "server/metrics/metrics.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace embedserve::metrics {
namespace {

std::string LabelText(const Labels& labels, const std::string& extra_key = "",
                      const std::string& extra_value = "") {
  std::string out;
  auto add = [&](const std::string& k, const std::string& v) {
    absl::StrAppend(&out, out.empty() ? "{" : ",", k, "=\"",
                    absl::StrReplaceAll(v, {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}}),
                    "\"");
  };
  for (const auto& [k, v] : labels) add(k, v);
  if (!extra_key.empty()) add(extra_key, extra_value);
  if (!out.empty()) out += "}";
  return out;
}

std::string Number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return absl::StrCat(v);
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::Observe(double value) {
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mu_);
  sum_ += value;
  ++count_;
}

void Histogram::Snapshot(std::vector<uint64_t>* counts, double* sum, uint64_t* count) const {
  counts->resize(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) (*counts)[i] = counts_[i].load();
  std::lock_guard<std::mutex> lock(mu_);
  *sum = sum_;
  *count = count_;
}

std::vector<double> LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
}

std::vector<double> SizeBuckets() { return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}; }

Counter& Registry::GetCounter(const std::string& name, const std::string& help,
                              const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& family = families_[name];
  family.help = help;
  family.type = "counter";
  auto& slot = family.counters[labels];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Histogram& Registry::GetHistogram(const std::string& name, const std::string& help,
                                  const Labels& labels, const std::vector<double>& bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& family = families_[name];
  family.help = help;
  family.type = "histogram";
  auto& slot = family.histograms[labels];
  if (!slot) slot = std::make_unique<Histogram>(bounds);
  return *slot;
}

void Registry::SetGauge(const std::string& name, const std::string& help,
                        std::function<std::vector<std::pair<Labels, double>>()> read) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& family = families_[name];
  family.help = help;
  family.type = "gauge";
  family.gauge = std::move(read);
}

std::string Registry::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, family] : families_) {
    absl::StrAppend(&out, "# HELP ", name, " ", family.help, "\n# TYPE ", name, " ",
                    family.type, "\n");
    for (const auto& [labels, counter] : family.counters) {
      absl::StrAppend(&out, name, LabelText(labels), " ", counter->value(), "\n");
    }
    for (const auto& [labels, histogram] : family.histograms) {
      std::vector<uint64_t> counts;
      double sum;
      uint64_t count;
      histogram->Snapshot(&counts, &sum, &count);
      uint64_t cumulative = 0;
      const auto& bounds = histogram->upper_bounds();
      for (size_t i = 0; i <= bounds.size(); ++i) {
        cumulative += counts[i];
        const std::string le = i < bounds.size() ? Number(bounds[i]) : "+Inf";
        absl::StrAppend(&out, name, "_bucket", LabelText(labels, "le", le), " ", cumulative, "\n");
      }
      absl::StrAppend(&out, name, "_sum", LabelText(labels), " ", Number(sum), "\n");
      absl::StrAppend(&out, name, "_count", LabelText(labels), " ", count, "\n");
    }
    if (family.gauge) {
      for (const auto& [labels, value] : family.gauge()) {
        absl::StrAppend(&out, name, LabelText(labels), " ", Number(value), "\n");
      }
    }
  }
  return out;
}

Registry& Global() {
  static Registry* registry = new Registry();
  return *registry;
}

}  // namespace embedserve::metrics
