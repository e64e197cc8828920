// CPUID/XGETBV (x86-64) and HWCAP2 (Linux arm64) reading for CpuFeatures.
#include "server/models/cpu_features.h"

#include <fstream>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace embedserve::models {
namespace {

#if defined(__APPLE__)
// A sysctl string ("" if absent) or integer (0 if absent).
std::string SysctlString(const char* name) {
  char value[256] = {};
  size_t size = sizeof(value) - 1;
  if (sysctlbyname(name, value, &size, nullptr, 0) != 0) return "";
  return std::string(value);
}
int SysctlInt(const char* name) {
  int value = 0;
  size_t size = sizeof(value);
  if (sysctlbyname(name, &value, &size, nullptr, 0) != 0) return 0;
  return value;
}
#endif

std::string ReadModelName() {
#if defined(__APPLE__)
  return SysctlString("machdep.cpu.brand_string");  // "Apple M2 Pro"
#endif
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "model name") || absl::StartsWith(line, "Model\t")) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
    }
  }
  return "";
}

#if defined(__x86_64__) || defined(__i386__)
// XCR0, the register state the OS saves on context switch; 0 when XGETBV is unavailable.
unsigned long long ReadXcr0(bool osxsave) {
  if (!osxsave) return 0;
  unsigned int eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

void DetectX86(CpuFeatures& f) {
  unsigned int eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return;
  const bool osxsave = ecx & (1u << 27);
  const bool fma = ecx & (1u << 12);
  const unsigned long long xcr0 = ReadXcr0(osxsave);
  const bool ymm_state = (xcr0 & 0x6) == 0x6;            // SSE + AVX state
  const bool zmm_state = (xcr0 & 0xE6) == 0xE6;          // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool tile_state = (xcr0 & 0x60000) == 0x60000;   // XTILECFG + XTILEDATA
  if (__get_cpuid_max(0, nullptr) < 7) return;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const unsigned int leaf7_ebx = ebx, leaf7_edx = edx;
  __cpuid_count(7, 1, eax, ebx, ecx, edx);
  const unsigned int leaf7_1_eax = eax;
  f.fma = fma && ymm_state;
  f.avx2 = (leaf7_ebx & (1u << 5)) && ymm_state;
  const bool avx512f = leaf7_ebx & (1u << 16), avx512dq = leaf7_ebx & (1u << 17);
  const bool avx512bw = leaf7_ebx & (1u << 30), avx512vl = leaf7_ebx & (1u << 31);
  f.avx512_core = avx512f && avx512dq && avx512bw && avx512vl && zmm_state;
  f.avx512_bf16 = f.avx512_core && (leaf7_1_eax & (1u << 5));
  f.amx_bf16 = (leaf7_edx & (1u << 22)) && (leaf7_edx & (1u << 24)) && tile_state;
}
#endif

}  // namespace

std::string CpuFeatures::Summary() const {
  std::vector<std::string> names;
  if (avx2) names.push_back("AVX2");
  if (fma) names.push_back("FMA");
  if (avx512_core) names.push_back("AVX512");
  if (avx512_bf16) names.push_back("AVX512_BF16");
  if (amx_bf16) names.push_back("AMX_BF16");
  if (arm_bf16) names.push_back("ARM_BF16");
  return names.empty() ? "none" : absl::StrJoin(names, " ");
}

std::string CpuFeatures::Describe() const {
  return (model_name.empty() ? std::string("unknown CPU") : model_name) + " (" + Summary() + ")";
}

CpuFeatures DetectCpuFeatures() {
  CpuFeatures f;
  f.model_name = ReadModelName();
#if defined(__x86_64__) || defined(__i386__)
  DetectX86(f);
#elif defined(__aarch64__) && defined(__linux__)
#ifndef HWCAP2_BF16
#define HWCAP2_BF16 (1 << 14)
#endif
  f.arm_bf16 = getauxval(AT_HWCAP2) & HWCAP2_BF16;
#elif defined(__aarch64__) && defined(__APPLE__)
  f.arm_bf16 = SysctlInt("hw.optional.arm.FEAT_BF16") != 0;  // M2 and later
#endif
  return f;
}

const CpuFeatures& HostCpuFeatures() {
  static const CpuFeatures features = DetectCpuFeatures();
  return features;
}

}  // namespace embedserve::models
