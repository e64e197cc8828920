// Which dtype a model serves in, and why: the requested dtype (or "auto") checked against
// what the device runs natively. Pure and torch-free; the CPU facts are injected, so every
// branch is tested on any machine (tests/models/serving_dtype_test.cc).
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "server/models/cpu_features.h"

namespace embedserve::models {

enum class DeviceKind { kCpu, kCuda, kMps };

// Matmul throughput measured on this CPU in each dtype, each with its serving thread set-up.
struct CpuMatmulRates {
  double float32_gflops = 0;
  double bfloat16_gflops = 0;
};

// What the choice depends on.
struct DtypeContext {
  DeviceKind device = DeviceKind::kCpu;
  CpuFeatures cpu;
  // Measures bfloat16 against float32 on this CPU; called only when CPUID does not settle it.
  std::function<CpuMatmulRates()> measure_cpu;
  int cuda_compute_major = 0;  // the CUDA device's compute capability (8 = Ampere)
  int macos_major = 0;         // MPS: the macOS major version (bfloat16 needs 14); 0 unknown
};

struct DtypeChoice {
  std::string dtype;   // "float32", "bfloat16", "float16", "int8"
  std::string reason;  // why, for ModelInfo.dtype_reason and the log
};

// bfloat16 counts as fast on a CPU without native instructions when its measured matmul
// rate is at least this fraction of float32's (oneDNN's AVX-512 emulation can be).
inline constexpr double kFastBfloat16Fraction = 0.8;

// What "int8" serves, in the words of its dtype_reason.
inline constexpr char kInt8Description[] =
    "the transformer layers' Linear weights int8 per output channel, their inputs quantized "
    "per call; embeddings, norms, convolutions and output heads float32";

// `requested`: "auto", "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16"/"half",
// "int8"/"qint8" (dynamic int8 Linear layers on the CPU; refused on CUDA and MPS). int8 is
// opt-in: "auto" never picks it (its vectors differ from float32's by more than bfloat16's
// do, and most on the AVX2 CPUs where auto serves float32; benchmarks/int8_bench).
// On a CPU without fast bfloat16, an explicit "bfloat16" is refused (INVALID_ARGUMENT with
// the measured cost and the alternative) unless `allow_slow_bfloat16`; on MPS before macOS
// 14 (which added bfloat16 to Metal), an explicit "bfloat16" is refused naming the version.
absl::StatusOr<DtypeChoice> ChooseServingDtype(const std::string& requested,
                                               const DtypeContext& context,
                                               bool allow_slow_bfloat16);

// The bytes one floating-point weight takes when `requested` is served on the host CPU,
// without measuring: 2 for bfloat16/float16 and for "auto" where the CPU is native, else 4
// (int8 too: its weights are loaded in float32 before the Linear ones are packed).
int ServingFloatBytes(const std::string& requested, const CpuFeatures& cpu, bool on_cpu);

}  // namespace embedserve::models
