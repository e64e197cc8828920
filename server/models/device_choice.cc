// Device resolution and checks against injected availability.
#include "server/models/device_choice.h"

#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace embedserve::models {

std::string ChooseDevice(const std::string& requested, const DeviceAvailability& available) {
  const std::string device = absl::AsciiStrToLower(requested);
  if (device != "auto") return device;
  if (available.cuda_devices > 0) return "cuda:0";
  if (available.mps_built && available.mps_available) return "mps";
  return "cpu";
}

absl::Status CheckDevice(const std::string& device, const DeviceAvailability& available) {
  const std::string d = absl::AsciiStrToLower(device);
  if (d == "cpu") return absl::OkStatus();
  if (d == "mps") {
    if (!available.mps_built) {
      return absl::FailedPreconditionError(
          "device 'mps': this libtorch build has no MPS backend (use the macOS arm64 "
          "libtorch of PyTorch 2.x, e.g. Homebrew's pytorch)");
    }
    if (!available.mps_available) {
      return absl::FailedPreconditionError(
          "device 'mps': this libtorch has MPS, but this machine gives it no Metal device "
          "(Apple silicon or an AMD GPU, and macOS 12.3 or later, are needed)");
    }
    return absl::OkStatus();
  }
  if (d == "cuda" || absl::StartsWith(d, "cuda:")) {
    int index = 0;
    if (d.size() > 5 && (!absl::SimpleAtoi(d.substr(5), &index) || index < 0)) {
      return absl::InvalidArgumentError(absl::StrCat("device '", device, "': bad CUDA index"));
    }
    if (available.cuda_devices == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device '", device, "': this libtorch build or machine has no CUDA device"));
    }
    if (index >= available.cuda_devices) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device '", device, "': only ", available.cuda_devices, " CUDA devices"));
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device '", device, "' is not one of auto, cpu, cuda, cuda:N, mps"));
}

int HostMacosMajor() {
#if defined(__APPLE__)
  char version[64] = {};
  size_t size = sizeof(version) - 1;
  if (sysctlbyname("kern.osproductversion", version, &size, nullptr, 0) != 0) return 0;
  int major = 0;
  const std::string text(version);
  if (!absl::SimpleAtoi(text.substr(0, text.find('.')), &major)) return 0;
  return major;
#else
  return 0;
#endif
}

}  // namespace embedserve::models
