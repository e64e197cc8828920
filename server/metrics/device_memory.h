// Device memory as the device's runtime reports it (CUDA: cudaMemGetInfo through the CUDA
// runtime libtorch already loaded), for the memory gauges and the admin memory budget.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace embedserve::metrics {

struct DeviceMemory {
  int64_t total_bytes = 0;
  int64_t free_bytes = 0;
};

// "cuda" / "cuda:N": the device's total and free memory; nullopt when the CUDA runtime is
// not in this process (CPU-only libtorch) or the query fails. Other devices: nullopt.
std::optional<DeviceMemory> QueryDeviceMemory(const std::string& device);

}  // namespace embedserve::metrics
