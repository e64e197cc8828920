// What the host CPU runs natively, as CPUID and the operating system's enabled register state
// report it: the facts the serving-dtype choice rests on. Torch-free.
#pragma once

#include <string>

namespace embedserve::models {

struct CpuFeatures {
  std::string model_name;    // /proc/cpuinfo's "model name"; "" when unknown
  bool avx2 = false;
  bool fma = false;
  bool avx512_core = false;  // AVX-512 F, BW, VL and DQ, with the OS saving ZMM state
  bool avx512_bf16 = false;  // AVX512_BF16 (VDPBF16PS), with AVX-512 usable
  bool amx_bf16 = false;     // AMX-BF16, with the OS granting AMX tile state
  bool arm_bf16 = false;     // Arm BF16 (FEAT_BF16)

  // True if bfloat16 matmuls have a native instruction here (oneDNN uses it).
  bool NativeBfloat16() const { return avx512_bf16 || amx_bf16 || arm_bf16; }
  // The features present, e.g. "AVX2 FMA AVX512 AVX512_BF16 AMX_BF16"; "none" if none.
  std::string Summary() const;
  // The model name and Summary(), for logs and messages.
  std::string Describe() const;
};

// Read from the CPU (CPUID + XGETBV on x86-64, HWCAP2 on Linux arm64).
CpuFeatures DetectCpuFeatures();

// DetectCpuFeatures() of this process, read once.
const CpuFeatures& HostCpuFeatures();

}  // namespace embedserve::models
