// cudaMemGetInfo without a link-time CUDA dependency: the symbol is looked up in the CUDA
// runtime that a CUDA libtorch has loaded (never a second copy, which would make a context).
#include "server/metrics/device_memory.h"

#include <dlfcn.h>

#include <cstdlib>

namespace embedserve::metrics {
namespace {

using SetDevice = int (*)(int);
using MemGetInfo = int (*)(size_t*, size_t*);

struct CudaRuntime {
  SetDevice set_device = nullptr;
  MemGetInfo mem_get_info = nullptr;
};

const CudaRuntime& LoadedCudaRuntime() {
  static const CudaRuntime runtime = [] {
    CudaRuntime r;
    void* handle = nullptr;
    for (const char* name : {"libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so"}) {
      handle = dlopen(name, RTLD_NOW | RTLD_NOLOAD);
      if (handle != nullptr) break;
    }
    if (handle == nullptr) handle = RTLD_DEFAULT;
    r.set_device = reinterpret_cast<SetDevice>(dlsym(handle, "cudaSetDevice"));
    r.mem_get_info = reinterpret_cast<MemGetInfo>(dlsym(handle, "cudaMemGetInfo"));
    return r;  // a NOLOAD handle stays referenced: the runtime is never unloaded anyway
  }();
  return runtime;
}

}  // namespace

std::optional<DeviceMemory> QueryDeviceMemory(const std::string& device) {
  if (device.compare(0, 4, "cuda") != 0) return std::nullopt;
  int index = 0;
  if (device.size() > 5 && device[4] == ':') index = std::atoi(device.c_str() + 5);
  const CudaRuntime& cuda = LoadedCudaRuntime();
  if (cuda.set_device == nullptr || cuda.mem_get_info == nullptr) return std::nullopt;
  size_t free_bytes = 0, total_bytes = 0;
  if (cuda.set_device(index) != 0 || cuda.mem_get_info(&free_bytes, &total_bytes) != 0) {
    return std::nullopt;
  }
  return DeviceMemory{static_cast<int64_t>(total_bytes), static_cast<int64_t>(free_bytes)};
}

}  // namespace embedserve::metrics
