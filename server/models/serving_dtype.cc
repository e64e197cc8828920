// The serving-dtype policy: auto per device, the CPU bfloat16 guard, and the reasons given.
#include "server/models/serving_dtype.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace embedserve::models {
namespace {

// Canonical name, or "" when unknown.
std::string Canonical(const std::string& requested) {
  const std::string d = absl::AsciiStrToLower(requested);
  if (d == "auto") return "auto";
  if (d == "float32" || d == "fp32") return "float32";
  if (d == "bfloat16" || d == "bf16") return "bfloat16";
  if (d == "float16" || d == "fp16" || d == "half") return "float16";
  if (d == "int8" || d == "qint8") return "int8";
  return "";
}

std::string Rates(const CpuMatmulRates& r) {
  return absl::StrFormat(
      "a measured bfloat16 matmul ran at %.1f GFLOP/s against %.1f GFLOP/s in float32 "
      "(%.1fx %s)",
      r.bfloat16_gflops, r.float32_gflops,
      r.bfloat16_gflops >= r.float32_gflops ? r.bfloat16_gflops / r.float32_gflops
                                            : r.float32_gflops / r.bfloat16_gflops,
      r.bfloat16_gflops >= r.float32_gflops ? "faster" : "slower");
}

// Whether bfloat16 is fast on this CPU, and the evidence in words.
struct CpuBfloat16 {
  bool fast = false;
  std::string evidence;
};

CpuBfloat16 JudgeCpuBfloat16(const DtypeContext& context) {
  if (context.cpu.NativeBfloat16()) {
    return {true, absl::StrCat("the CPU runs bfloat16 natively (", context.cpu.Summary(), ")")};
  }
  const std::string missing = absl::StrCat(
      "the CPU (", context.cpu.Describe(), ") has no native bfloat16 (AVX512_BF16 or AMX_BF16)");
  if (!context.measure_cpu) return {false, missing};
  const CpuMatmulRates rates = context.measure_cpu();
  if (rates.float32_gflops <= 0 || rates.bfloat16_gflops <= 0) return {false, missing};
  const bool fast = rates.bfloat16_gflops >= kFastBfloat16Fraction * rates.float32_gflops;
  return {fast, absl::StrCat(missing, "; ", Rates(rates))};
}

}  // namespace

absl::StatusOr<DtypeChoice> ChooseServingDtype(const std::string& requested,
                                               const DtypeContext& context,
                                               bool allow_slow_bfloat16) {
  const std::string dtype = Canonical(requested);
  if (dtype.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dtype '", requested, "' is not one of auto, float32, bfloat16, float16, int8"));
  }
  if (dtype == "float32") return DtypeChoice{"float32", "requested (--dtype float32)"};
  if (dtype == "int8") {
    if (context.device != DeviceKind::kCpu) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dtype int8: dynamic int8 Linear layers run on the CPU only (libtorch's onednn "
          "quantized engine); this model is placed on ",
          context.device == DeviceKind::kCuda ? "CUDA" : "MPS",
          ". Serve --dtype auto (bfloat16 or float16 there), or --device cpu for int8"));
    }
    return DtypeChoice{"int8", absl::StrCat("requested (--dtype int8: ", kInt8Description, ")")};
  }
  switch (context.device) {
    case DeviceKind::kCuda: {
      if (dtype != "auto") return DtypeChoice{dtype, absl::StrCat("requested (--dtype ", dtype, ")")};
      if (context.cuda_compute_major >= 8) {
        return DtypeChoice{"bfloat16", absl::StrCat("auto: CUDA compute capability ",
                                                    context.cuda_compute_major,
                                                    ".x runs bfloat16 natively")};
      }
      return DtypeChoice{"float16", absl::StrCat("auto: CUDA compute capability ",
                                                 context.cuda_compute_major,
                                                 ".x has no native bfloat16; float16")};
    }
    case DeviceKind::kMps:
      if (dtype == "bfloat16" && context.macos_major < 14) {
        return absl::InvalidArgumentError(absl::StrCat(
            "dtype bfloat16: MPS runs bfloat16 from macOS 14 on; this is ",
            context.macos_major > 0 ? absl::StrCat("macOS ", context.macos_major)
                                    : std::string("a macOS of unknown version"),
            ". Serve float16 (--dtype float16, or auto) or float32"));
      }
      if (dtype != "auto") return DtypeChoice{dtype, absl::StrCat("requested (--dtype ", dtype, ")")};
      return DtypeChoice{"float16", "auto: float16 on MPS (Metal's native half precision)"};
    case DeviceKind::kCpu:
      break;
  }
  if (dtype == "float16") {
    return absl::InvalidArgumentError(
        "dtype float16: libtorch has no float16 matmul on CPU; use bfloat16 (where the CPU "
        "has it natively), float32, or auto");
  }
  const CpuBfloat16 bf16 = JudgeCpuBfloat16(context);
  if (dtype == "auto") {
    if (bf16.fast) return DtypeChoice{"bfloat16", absl::StrCat("auto: bfloat16, as ", bf16.evidence)};
    return DtypeChoice{"float32", absl::StrCat("auto: float32, as ", bf16.evidence)};
  }
  // An explicit bfloat16.
  if (bf16.fast) return DtypeChoice{"bfloat16", absl::StrCat("requested; ", bf16.evidence)};
  if (allow_slow_bfloat16) {
    return DtypeChoice{"bfloat16", absl::StrCat("requested with --allow-slow-bfloat16, although ",
                                                bf16.evidence)};
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "dtype bfloat16: ", bf16.evidence,
      ", so bfloat16 runs on a slow fallback here. Serve float32 (--dtype float32, or --dtype "
      "auto, which picks what this device runs fast), or pass --allow-slow-bfloat16 to serve "
      "bfloat16 anyway"));
}

int ServingFloatBytes(const std::string& requested, const CpuFeatures& cpu, bool on_cpu) {
  const std::string dtype = Canonical(requested);
  // int8 loads every weight in float32 and packs the Linear weights after: the load peaks at 4.
  if (dtype == "bfloat16" || dtype == "float16") return 2;
  if (dtype == "auto") return (!on_cpu || cpu.NativeBfloat16()) ? 2 : 4;
  return 4;
}

}  // namespace embedserve::models
