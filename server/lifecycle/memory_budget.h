// The memory budget of loaded models' weights (host memory on CPU, device memory on CUDA):
// reservations held by each loaded version until its model is freed. No gRPC, no torch.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace embedserve::lifecycle {

// Bytes of device memory (host memory on CPU) the weights of loaded models may take.
// Thread-safe. Every loaded version holds a reservation until its model is freed (after
// its calls drained), so what is "used" is what is really resident.
class MemoryBudget {
 public:
  // `limit_bytes` <= 0: no limit.
  explicit MemoryBudget(int64_t limit_bytes) : limit_(limit_bytes) {}

  // One model version's share; released when the model is freed.
  struct Hold {
    int64_t bytes = 0;
    bool draining = false;  // guarded by the budget's mutex
    bool released = false;  // guarded by the budget's mutex
  };

  // Reserves `bytes` for model `name`. RESOURCE_EXHAUSTED naming the model, its estimate,
  // the budget and what is left when it does not fit; when versions that were unloaded or
  // replaced are still draining, waits up to `drain_wait` for them to be freed first (the
  // executor frees a drained version as soon as its last call lets go).
  absl::StatusOr<std::shared_ptr<Hold>> Reserve(absl::string_view name, int64_t bytes,
                                                absl::Duration drain_wait);
  // The version holding `hold` was unloaded or replaced: its memory comes back once freed.
  void StartDraining(const std::shared_ptr<Hold>& hold);
  // The model holding `hold` was freed (idempotent).
  void Release(const std::shared_ptr<Hold>& hold);

  int64_t limit() const { return limit_; }
  int64_t used() const;

 private:
  const int64_t limit_;
  mutable std::mutex mu_;
  std::condition_variable freed_;
  int64_t used_ = 0;
  int64_t draining_ = 0;
};

// "3.4 MiB (3571712 bytes)".
std::string FormatBytes(int64_t bytes);

// The budget when --memory-budget-mb is not given, for a resolved device: CPU (and MPS,
// whose memory is the host's): MemAvailable from /proc/meminfo minus a margin (a tenth of
// it, at least 256 MiB, at most half); CUDA: the device's free memory (cudaMemGetInfo via
// libcudart, when it can be loaded) minus 5% of its total. 0 (no limit) when unknown.
int64_t DefaultMemoryBudgetBytes(const std::string& device);

}  // namespace embedserve::lifecycle
