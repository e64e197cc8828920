// MemoryBudget and the default budget per device.
#include "server/lifecycle/memory_budget.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <optional>

#if defined(__APPLE__)
#include <mach/mach.h>
#endif

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/metrics/device_memory.h"

namespace embedserve::lifecycle {

std::string FormatBytes(int64_t bytes) {
  return absl::StrFormat("%.1f MiB (%d bytes)", static_cast<double>(bytes) / (1 << 20), bytes);
}

absl::StatusOr<std::shared_ptr<MemoryBudget::Hold>> MemoryBudget::Reserve(
    absl::string_view name, int64_t bytes, absl::Duration drain_wait) {
  std::unique_lock<std::mutex> lock(mu_);
  const absl::Time deadline = absl::Now() + drain_wait;
  while (limit_ > 0 && used_ + bytes > limit_ && draining_ > 0 && absl::Now() < deadline) {
    freed_.wait_until(lock, absl::ToChronoTime(std::min(deadline, absl::Now() + absl::Milliseconds(100))));
  }
  if (limit_ > 0 && used_ + bytes > limit_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "model '", name, "' needs an estimated ", FormatBytes(bytes), " but only ",
        FormatBytes(std::max<int64_t>(0, limit_ - used_)), " of the memory budget of ",
        FormatBytes(limit_), " (--memory-budget-mb) is left; loaded models use ",
        FormatBytes(used_), draining_ > 0 ? absl::StrCat(", of which ", FormatBytes(draining_),
                                                         " is still draining") : "",
        ". Unload a model or raise --memory-budget-mb"));
  }
  used_ += bytes;
  auto hold = std::make_shared<Hold>();
  hold->bytes = bytes;
  return hold;
}

void MemoryBudget::StartDraining(const std::shared_ptr<Hold>& hold) {
  std::lock_guard<std::mutex> lock(mu_);
  if (hold->released || hold->draining) return;
  hold->draining = true;
  draining_ += hold->bytes;
}

void MemoryBudget::Release(const std::shared_ptr<Hold>& hold) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (hold->released) return;
    hold->released = true;
    used_ -= hold->bytes;
    if (hold->draining) draining_ -= hold->bytes;
  }
  freed_.notify_all();
}

int64_t MemoryBudget::used() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_;
}

namespace {

// Memory the host can give without swapping: Linux's MemAvailable; on macOS the free,
// inactive and purgeable pages (what Activity Monitor counts as reclaimable).
int64_t MemAvailableBytes() {
#if defined(__APPLE__)
  vm_statistics64_data_t stats;
  mach_msg_type_number_t count = HOST_VM_INFO64_COUNT;
  if (host_statistics64(mach_host_self(), HOST_VM_INFO64, reinterpret_cast<host_info64_t>(&stats),
                        &count) != KERN_SUCCESS) {
    return 0;
  }
  vm_size_t page = 0;
  if (host_page_size(mach_host_self(), &page) != KERN_SUCCESS) return 0;
  return static_cast<int64_t>(stats.free_count + stats.inactive_count + stats.purgeable_count) *
         static_cast<int64_t>(page);
#else
  std::ifstream in("/proc/meminfo");
  for (std::string line; std::getline(in, line);) {
    long long kb = 0;
    if (std::sscanf(line.c_str(), "MemAvailable: %lld kB", &kb) == 1) return kb * 1024;
  }
  return 0;
#endif
}

int64_t CudaFreeBytes(const std::string& device) {
  const std::optional<metrics::DeviceMemory> memory = metrics::QueryDeviceMemory(device);
  if (!memory.has_value()) return 0;
  const int64_t margin = memory->total_bytes / 20;
  return std::max<int64_t>(1, memory->free_bytes - margin);
}

}  // namespace

int64_t DefaultMemoryBudgetBytes(const std::string& device) {
  if (device.compare(0, 4, "cuda") == 0) return CudaFreeBytes(device);
  const int64_t available = MemAvailableBytes();
  if (available <= 0) return 0;
  const int64_t margin =
      std::min(std::max<int64_t>(available / 10, int64_t{256} << 20), available / 2);
  return available - margin;
}

}  // namespace embedserve::lifecycle
