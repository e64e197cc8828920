// Which device a model runs on: `--device auto` resolved, and an explicit device checked
// against what this libtorch build and machine have. Pure and torch-free; availability is
// injected (tests/models/serving_dtype_test.cc covers every branch on any machine), and
// torch_util.h's HostDeviceAvailability() reads the real one.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace embedserve::models {

struct DeviceAvailability {
  int cuda_devices = 0;        // CUDA devices libtorch sees (0: none, or a CPU-only build)
  bool mps_built = false;      // this libtorch was built with the MPS backend
  bool mps_available = false;  // and this machine and macOS give it a Metal device
};

// "auto" is CUDA's first device, then MPS, then the CPU; anything else is returned lowered
// and unchecked (CheckDevice judges it).
std::string ChooseDevice(const std::string& requested, const DeviceAvailability& available);

// OK if `device` ("cpu", "cuda", "cuda:N", "mps") can be used here. FAILED_PRECONDITION
// names what is missing: for "mps", the build's MPS support or the machine's Metal device
// (each said apart); for CUDA, any device or that index. INVALID_ARGUMENT for a device
// name that is none of those.
absl::Status CheckDevice(const std::string& device, const DeviceAvailability& available);

// The running macOS's major version (14 for Sonoma) from sysctl kern.osproductversion; 0 on
// any other system or when unknown.
int HostMacosMajor();

}  // namespace embedserve::models
