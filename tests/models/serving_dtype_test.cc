// The serving-dtype policy with injected CPUs (an AVX2-only Zen 3, a Zen 5 with AVX512_BF16,
// an AMX Xeon, an AVX-512 CPU without BF16) and devices, so every branch runs on any machine;
// and the host's CPUID reading against the kernel's own flags in /proc/cpuinfo.
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>

#include "server/models/cpu_features.h"
#include "server/models/device_choice.h"
#include "server/models/serving_dtype.h"

using namespace embedserve::models;

namespace {

CpuFeatures Zen3() {
  CpuFeatures f;
  f.model_name = "AMD EPYC 7B13";
  f.avx2 = f.fma = true;
  return f;
}

CpuFeatures Zen5() {
  CpuFeatures f = Zen3();
  f.model_name = "AMD EPYC 9B45";
  f.avx512_core = f.avx512_bf16 = true;
  return f;
}

CpuFeatures AmxOnly() {
  CpuFeatures f = Zen3();
  f.model_name = "Intel(R) Xeon(R) Processor";
  f.amx_bf16 = true;
  return f;
}

// A context whose measurement returns `rates` and counts its calls.
DtypeContext Cpu(const CpuFeatures& cpu, CpuMatmulRates rates, int* measured) {
  DtypeContext c;
  c.device = DeviceKind::kCpu;
  c.cpu = cpu;
  c.measure_cpu = [rates, measured] {
    ++*measured;
    return rates;
  };
  return c;
}

// Rates as the issue measured them on the Zen 3: float32 on OpenBLAS, bfloat16 scalar.
constexpr CpuMatmulRates kZen3Rates{142.0, 5.0};

}  // namespace

TEST_CASE("an AVX2-only CPU: bfloat16 is refused with its measured cost, auto serves float32") {
  int measured = 0;
  const DtypeContext zen3 = Cpu(Zen3(), kZen3Rates, &measured);

  auto refused = ChooseServingDtype("bfloat16", zen3, /*allow_slow_bfloat16=*/false);
  REQUIRE(refused.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string msg(refused.status().message());
  INFO(msg);
  CHECK_THAT(msg, Catch::Contains("AMD EPYC 7B13"));
  CHECK_THAT(msg, Catch::Contains("AVX2 FMA"));
  CHECK_THAT(msg, Catch::Contains("5.0 GFLOP/s"));
  CHECK_THAT(msg, Catch::Contains("142.0 GFLOP/s"));
  CHECK_THAT(msg, Catch::Contains("28.4x slower"));  // 142 / 5
  CHECK_THAT(msg, Catch::Contains("--dtype float32"));
  CHECK_THAT(msg, Catch::Contains("--allow-slow-bfloat16"));

  auto allowed = ChooseServingDtype("bf16", zen3, /*allow_slow_bfloat16=*/true);
  REQUIRE(allowed.ok());
  CHECK(allowed->dtype == "bfloat16");
  CHECK_THAT(allowed->reason, Catch::Contains("--allow-slow-bfloat16"));

  auto automatic = ChooseServingDtype("auto", zen3, false);
  REQUIRE(automatic.ok());
  CHECK(automatic->dtype == "float32");
  CHECK_THAT(automatic->reason, Catch::StartsWith("auto: float32"));
  CHECK_THAT(automatic->reason, Catch::Contains("28.4x slower"));

  measured = 0;
  auto exact = ChooseServingDtype("float32", zen3, false);
  REQUIRE(exact.ok());
  CHECK(exact->dtype == "float32");
  CHECK(measured == 0);  // float32 needs no measurement
}

TEST_CASE("native bfloat16 (AVX512_BF16 or AMX) serves bfloat16 under auto, unmeasured") {
  for (const CpuFeatures& cpu : {Zen5(), AmxOnly()}) {
    INFO(cpu.Describe());
    int measured = 0;
    // Rates that would refuse it: CPUID alone must decide.
    const DtypeContext context = Cpu(cpu, kZen3Rates, &measured);
    auto automatic = ChooseServingDtype("auto", context, false);
    REQUIRE(automatic.ok());
    CHECK(automatic->dtype == "bfloat16");
    CHECK_THAT(automatic->reason, Catch::Contains("natively"));
    auto explicit_bf16 = ChooseServingDtype("bfloat16", context, false);
    REQUIRE(explicit_bf16.ok());
    CHECK(explicit_bf16->dtype == "bfloat16");
    CHECK(measured == 0);
  }
  CHECK(Zen5().Summary() == "AVX2 FMA AVX512 AVX512_BF16");
  CHECK(AmxOnly().Summary() == "AVX2 FMA AMX_BF16");
  CHECK(CpuFeatures{}.Summary() == "none");
}

TEST_CASE("without native bfloat16 the measurement decides, at 0.8 of float32") {
  CpuFeatures icelake = Zen3();
  icelake.avx512_core = true;  // oneDNN emulates bfloat16 on AVX-512
  int measured = 0;
  auto fast = ChooseServingDtype("auto", Cpu(icelake, {200.0, 170.0}, &measured), false);
  REQUIRE(fast.ok());
  CHECK(fast->dtype == "bfloat16");
  CHECK_THAT(fast->reason, Catch::Contains("170.0 GFLOP/s"));
  CHECK(measured == 1);
  auto slow = ChooseServingDtype("auto", Cpu(icelake, {200.0, 150.0}, &measured), false);
  REQUIRE(slow.ok());
  CHECK(slow->dtype == "float32");
  // A failed measurement (zero rates) or none at all counts as not fast.
  auto failed = ChooseServingDtype("bfloat16", Cpu(icelake, {0.0, 0.0}, &measured), false);
  CHECK(failed.status().code() == absl::StatusCode::kInvalidArgument);
  DtypeContext unmeasured;
  unmeasured.cpu = icelake;
  auto none = ChooseServingDtype("auto", unmeasured, false);
  REQUIRE(none.ok());
  CHECK(none->dtype == "float32");
}

TEST_CASE("accelerators: auto is bfloat16 on CUDA 8+, float16 before and on MPS") {
  DtypeContext cuda;
  cuda.device = DeviceKind::kCuda;
  cuda.cpu = Zen3();  // the host CPU does not matter for a GPU
  cuda.cuda_compute_major = 9;
  auto hopper = ChooseServingDtype("auto", cuda, false);
  REQUIRE(hopper.ok());
  CHECK(hopper->dtype == "bfloat16");
  cuda.cuda_compute_major = 7;
  auto volta = ChooseServingDtype("auto", cuda, false);
  REQUIRE(volta.ok());
  CHECK(volta->dtype == "float16");
  auto half = ChooseServingDtype("fp16", cuda, false);
  REQUIRE(half.ok());
  CHECK(half->dtype == "float16");
  CHECK_THAT(half->reason, Catch::Contains("requested"));

  DtypeContext mps;
  mps.device = DeviceKind::kMps;
  auto apple = ChooseServingDtype("auto", mps, false);
  REQUIRE(apple.ok());
  CHECK(apple->dtype == "float16");
}

TEST_CASE("MPS: bfloat16 needs macOS 14, said with the version found") {
  DtypeContext mps;
  mps.device = DeviceKind::kMps;
  mps.macos_major = 13;
  auto ventura = ChooseServingDtype("bf16", mps, false);
  CHECK(ventura.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(ventura.status().message()), Catch::Contains("this is macOS 13"));
  CHECK_THAT(std::string(ventura.status().message()), Catch::Contains("float16"));
  // Even --allow-slow-bfloat16 does not make Metal run it.
  CHECK_FALSE(ChooseServingDtype("bfloat16", mps, true).ok());
  mps.macos_major = 0;
  CHECK_THAT(std::string(ChooseServingDtype("bfloat16", mps, false).status().message()),
             Catch::Contains("unknown version"));
  mps.macos_major = 14;
  auto sonoma = ChooseServingDtype("bfloat16", mps, false);
  REQUIRE(sonoma.ok());
  CHECK(sonoma->dtype == "bfloat16");
  auto full = ChooseServingDtype("float32", mps, false);
  REQUIRE(full.ok());
  CHECK(full->dtype == "float32");
}

TEST_CASE("device auto: CUDA, then MPS, then the CPU; each refusal names what is missing") {
  DeviceAvailability none;
  DeviceAvailability two_gpus;
  two_gpus.cuda_devices = 2;
  DeviceAvailability mac;
  mac.mps_built = mac.mps_available = true;
  DeviceAvailability mps_build_without_metal;
  mps_build_without_metal.mps_built = true;
  DeviceAvailability both = two_gpus;
  both.mps_built = both.mps_available = true;

  CHECK(ChooseDevice("auto", none) == "cpu");
  CHECK(ChooseDevice("auto", two_gpus) == "cuda:0");
  CHECK(ChooseDevice("auto", mac) == "mps");
  CHECK(ChooseDevice("AUTO", mps_build_without_metal) == "cpu");
  CHECK(ChooseDevice("auto", both) == "cuda:0");
  CHECK(ChooseDevice("MPS", none) == "mps");  // explicit: returned, judged by CheckDevice

  CHECK(CheckDevice("cpu", none).ok());
  CHECK(CheckDevice("mps", mac).ok());
  CHECK(CheckDevice("cuda:1", two_gpus).ok());
  CHECK(CheckDevice("cuda", two_gpus).ok());

  const absl::Status no_build = CheckDevice("mps", none);
  CHECK(no_build.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(no_build.message()), Catch::Contains("this libtorch build has no MPS"));
  const absl::Status no_metal = CheckDevice("mps", mps_build_without_metal);
  CHECK(no_metal.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(no_metal.message()), Catch::Contains("no Metal device"));
  CHECK_THAT(std::string(CheckDevice("cuda:2", two_gpus).message()),
             Catch::Contains("only 2 CUDA devices"));
  CHECK_THAT(std::string(CheckDevice("cuda", mac).message()), Catch::Contains("no CUDA device"));
  CHECK(CheckDevice("cuda:x", two_gpus).code() == absl::StatusCode::kInvalidArgument);
  CHECK(CheckDevice("cuda:-1", two_gpus).code() == absl::StatusCode::kInvalidArgument);
  CHECK(CheckDevice("tpu", both).code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("float16 on CPU and unknown names are refused, naming what works") {
  int measured = 0;
  auto half = ChooseServingDtype("float16", Cpu(Zen5(), kZen3Rates, &measured), false);
  CHECK(half.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(half.status().message()), Catch::Contains("bfloat16"));
  auto unknown = ChooseServingDtype("int4", Cpu(Zen5(), kZen3Rates, &measured), false);
  CHECK(unknown.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(unknown.status().message()),
             Catch::Contains("auto, float32, bfloat16, float16"));
}

TEST_CASE("int8 is served on any CPU when asked for, never by auto, and refused on GPUs") {
  int measured = 0;
  for (const CpuFeatures& cpu : {Zen3(), Zen5(), AmxOnly()}) {
    INFO(cpu.model_name);
    const DtypeContext context = Cpu(cpu, kZen3Rates, &measured);
    for (const char* name : {"int8", "INT8", "qint8"}) {
      auto chosen = ChooseServingDtype(name, context, false);
      REQUIRE(chosen.ok());
      CHECK(chosen->dtype == "int8");
      CHECK_THAT(chosen->reason, Catch::StartsWith("requested (--dtype int8: the transformer layers' Linear weights int8"));
    }
    auto automatic = ChooseServingDtype("auto", context, false);
    REQUIRE(automatic.ok());
    CHECK(automatic->dtype != "int8");
  }
  CHECK(measured == 1);  // only auto on the Zen 3 measured; int8 never does
  for (const DeviceKind device : {DeviceKind::kCuda, DeviceKind::kMps}) {
    DtypeContext accelerator;
    accelerator.device = device;
    accelerator.cuda_compute_major = 9;
    accelerator.macos_major = 15;
    auto refused = ChooseServingDtype("int8", accelerator, false);
    REQUIRE(refused.status().code() == absl::StatusCode::kInvalidArgument);
    const std::string msg(refused.status().message());
    CHECK_THAT(msg, Catch::Contains("CPU only"));
    CHECK_THAT(msg, Catch::Contains(device == DeviceKind::kCuda ? "CUDA" : "MPS"));
    CHECK_THAT(msg, Catch::Contains("--device cpu"));
  }
  // The load peaks with every weight in float32, before the Linear weights are packed.
  CHECK(ServingFloatBytes("int8", Zen5(), true) == 4);
}

TEST_CASE("weight bytes per float follow the dtype auto would pick") {
  CHECK(ServingFloatBytes("float32", Zen5(), true) == 4);
  CHECK(ServingFloatBytes("bfloat16", Zen3(), true) == 2);
  CHECK(ServingFloatBytes("auto", Zen5(), true) == 2);
  CHECK(ServingFloatBytes("auto", Zen3(), true) == 4);
  CHECK(ServingFloatBytes("auto", Zen3(), false) == 2);  // a GPU
}

TEST_CASE("CPUID agrees with the kernel's flags in /proc/cpuinfo") {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  std::set<std::string> flags;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      for (std::string w; words >> w;) flags.insert(w);
      break;
    }
  }
  if (flags.empty()) {
    WARN("no x86 flags line in /proc/cpuinfo; only internal consistency is checked");
  }
  const CpuFeatures host = DetectCpuFeatures();
  INFO(host.Describe());
  if (!flags.empty()) {
    CHECK(host.avx2 == (flags.count("avx2") == 1));
    CHECK(host.fma == (flags.count("fma") == 1));
    CHECK(host.avx512_bf16 == (flags.count("avx512_bf16") == 1));
    CHECK(host.amx_bf16 == (flags.count("amx_bf16") == 1 && flags.count("amx_tile") == 1));
    CHECK(host.avx512_core == (flags.count("avx512f") && flags.count("avx512bw") &&
                               flags.count("avx512vl") && flags.count("avx512dq")));
  }
  if (host.avx512_bf16) CHECK(host.avx512_core);
  CHECK(host.NativeBfloat16() == (host.avx512_bf16 || host.amx_bf16 || host.arm_bf16));
  CHECK(&HostCpuFeatures() == &HostCpuFeatures());
  CHECK(HostCpuFeatures().Summary() == host.Summary());
}
