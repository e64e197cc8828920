// OpenCLIP forward throughput at full size (random weights): images/s and texts/s at batch
// 1, 8 and 32 in float32 and bfloat16, next to the device's matmul GFLOP/s measured in the
// same run with the same thread settings, plus a sweep of thread settings at batch 8 (CPU).
// On a GPU it also prints images/s with two batches in flight (the executor's overlap of
// one batch's copy with the previous one's compute) beside one batch at a time.
//
//   clip_forward_bench [--architecture ViT-B-32] [--reps 5] [--no-sweep]
//                      [--device cpu|cuda:0] [--dtypes float32,bfloat16] [--batches 1,8,32]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <c10/core/InferenceMode.h>

#include "benchmarks/bench_checkpoint.h"
#include "server/models/openclip/openclip_config.h"
#include "server/models/openclip/openclip_model.h"
#include "server/models/openclip/openclip_random_checkpoint.h"
#include "server/models/torch_util.h"

namespace {

namespace fs = std::filesystem;
using embedserve::models::ImageInput;
using embedserve::models::Model;
using embedserve::models::RuntimeOptions;
using embedserve::models::TextInput;
namespace oc = embedserve::models::openclip;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Median GFLOP/s of an n x n x n matmul in `dtype` on `device` under the thread settings
// in effect (n = 1024 on the CPU, 8192 on a GPU, timed to the host's read of a result).
double MatmulGflops(at::ScalarType dtype, const at::Device& device, int reps) {
  c10::InferenceMode guard;
  const int64_t n = device.is_cpu() ? 1024 : 8192;
  at::Tensor a = at::randn({n, n}).to(device, dtype), b = at::randn({n, n}).to(device, dtype);
  at::matmul(a, b).sum().item<float>();  // warm
  std::vector<double> rates;
  for (int i = 0; i < reps; ++i) {
    const double start = Now();
    at::Tensor c = at::matmul(a, b);
    c.select(0, 0).select(0, 0).item<float>();
    rates.push_back(2.0 * n * n * n / (Now() - start) / 1e9);
  }
  return Median(rates);
}

at::ScalarType DtypeOf(const std::string& name) {
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  return at::kFloat;
}

// Images/s with up to two batches in flight (Model::LaunchImages, as the device executor
// runs them): `rounds` batches per repetition.
double PipelinedImagesPerSecond(Model& model, const std::vector<const ImageInput*>& ptrs,
                                int reps, int rounds) {
  std::vector<double> rates;
  for (int r = 0; r < reps; ++r) {
    const double start = Now();
    std::unique_ptr<embedserve::models::PendingBatch> previous;
    for (int i = 0; i < rounds; ++i) {
      auto next = model.LaunchImages(ptrs);
      if (previous && !previous->Wait().ok()) std::exit(1);
      previous = std::move(next);
    }
    if (!previous->Wait().ok()) std::exit(1);
    rates.push_back(static_cast<double>(rounds) * ptrs.size() / (Now() - start));
  }
  return Median(rates);
}

// Forward FLOPs of one image through the ViT (matmuls only; 2 per multiply-add).
double VisionGflops(const oc::OpenClipConfig& c) {
  const double t = c.vision.grid() * c.vision.grid() + 1, w = c.vision.width;
  const double per_layer = 2 * t * (4 * w * w + 2 * w * c.vision.mlp_width()) + 2 * 2 * t * t * w;
  const double patch = 2 * (t - 1) * 3 * c.vision.patch_size * c.vision.patch_size * w;
  return (c.vision.layers * per_layer + patch + 2 * w * c.embed_dim) / 1e9;
}

struct Inputs {
  std::vector<ImageInput> images;
  std::vector<TextInput> texts;
};

double ImagesPerSecond(Model& model, const Inputs& in, int batch, int reps) {
  std::vector<const ImageInput*> ptrs;
  for (int i = 0; i < batch; ++i) ptrs.push_back(&in.images[i % in.images.size()]);
  (void)model.EmbedImages(ptrs);  // warm
  std::vector<double> rates;
  for (int r = 0; r < reps; ++r) {
    const double start = Now();
    auto out = model.EmbedImages(ptrs);
    if (!out.ok()) {
      std::fprintf(stderr, "forward failed: %s\n", out.status().ToString().c_str());
      std::exit(1);
    }
    rates.push_back(batch / (Now() - start));
  }
  return Median(rates);
}

double TextsPerSecond(Model& model, const std::vector<TextInput>& texts, int batch, int reps) {
  std::vector<const TextInput*> ptrs;
  for (int i = 0; i < batch; ++i) ptrs.push_back(&texts[i % texts.size()]);
  (void)model.EmbedTexts(ptrs);
  std::vector<double> rates;
  for (int r = 0; r < reps; ++r) {
    const double start = Now();
    auto out = model.EmbedTexts(ptrs);
    if (!out.ok()) std::exit(1);
    rates.push_back(batch / (Now() - start));
  }
  return Median(rates);
}

std::string g_device = "cpu";

std::unique_ptr<Model> Load(const std::string& dir, const std::string& dtype, int torch_threads,
                            int blas_threads) {
  RuntimeOptions options;
  options.device = g_device;
  options.dtype = dtype;
  options.allow_slow_bfloat16 = true;  // measured on purpose, even where it is a fallback
  options.torch_threads = torch_threads;
  options.blas_threads = blas_threads;
  auto model = oc::LoadOpenClip(dir, options);
  if (!model.ok()) {
    std::fprintf(stderr, "load failed: %s\n", model.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(model);
}

}  // namespace

int main(int argc, char** argv) {
  std::string architecture = "ViT-B-32";
  int reps = 5;
  bool no_sweep = false;
  CLI::App app{"OpenCLIP forward throughput (random weights, full size)"};
  app.add_option("--architecture", architecture);
  app.add_option("--reps", reps, "Timed repetitions per figure (the median is printed)");
  app.add_flag("--no-sweep", no_sweep, "Skip the thread-settings sweep");
  std::vector<std::string> dtypes = {"float32", "bfloat16"};
  std::vector<int> batches = {1, 8, 32};
  app.add_option("--device", g_device, "cpu, cuda, cuda:N");
  app.add_option("--dtypes", dtypes, "Serving dtypes to measure")->delimiter(',');
  app.add_option("--batches", batches, "Batch sizes to measure")->delimiter(',');
  CLI11_PARSE(app, argc, argv);
  absl::StatusOr<at::Device> device = embedserve::models::ParseDevice(g_device);
  if (!device.ok()) {
    std::fprintf(stderr, "%s\n", device.status().ToString().c_str());
    return 2;
  }
  const bool on_cpu = device->is_cpu();

  auto config = oc::NamedArchitecture(architecture);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 2;
  }
  const absl::StatusOr<std::string> written =
      embedserve::bench::CachedRandomCheckpoint(*config, architecture);
  if (!written.ok()) {
    std::fprintf(stderr, "%s\n", written.status().ToString().c_str());
    return 1;
  }
  const std::string& dir = *written;

  const std::string images_dir = std::string(EMBEDSERVE_SOURCE_DIR) + "/tests/data/openclip-reference/images/";
  const std::vector<std::string> captions = {
      "a photo of a cat", "two dogs playing in the snow", "a diagram of a neural network",
      "a red car parked next to a tree on a sunny day", "the skyline of a city at night"};
  std::string long_text;
  while (long_text.size() < 1000) long_text += "a very long description of a busy market street ";

  const double vision_gflop = VisionGflops(*config);
  std::printf("\n%s: %.2f GFLOP per image (vision tower matmuls), %d hardware threads\n",
              architecture.c_str(), vision_gflop, std::max(1u, std::thread::hardware_concurrency()));
  std::printf("device %s\n", g_device.c_str());
  std::printf("\n%-9s %-22s %10s %8s %10s %10s %10s %12s %10s\n", "dtype", "threads", "matmul", "batch",
              "images/s", "%matmul", "texts/s", "texts77/s", "images/s");
  std::printf("%-9s %-22s %10s %8s %10s %10s %10s %12s %10s\n", "", "", "GFLOP/s", "", "", "", "(caption)",
              "(truncated)", "2-in-flight");

  struct Setting { std::string dtype; int torch_threads, blas_threads; };
  std::vector<Setting> settings;
  for (const std::string& d : dtypes) settings.push_back({d, 0, 0});
  for (const Setting& s : settings) {
    auto model = Load(dir, s.dtype, s.torch_threads, s.blas_threads);
    const std::string threads = on_cpu ? embedserve::models::ConfigureCpuThreads(
        {"cpu", s.dtype, s.torch_threads, s.blas_threads}, DtypeOf(s.dtype)) : std::string("-");
    const double gflops = MatmulGflops(DtypeOf(s.dtype), *device, reps);
    Inputs in;
    for (const auto& entry : fs::directory_iterator(images_dir)) {
      auto img = model->PrepareImage(Slurp(entry.path().string()), {});
      if (img.ok()) in.images.push_back(*std::move(img));
    }
    std::vector<TextInput> short_texts, long_texts;
    for (const auto& c : captions) short_texts.push_back(*model->PrepareText(c, true));
    long_texts.push_back(*model->PrepareText(long_text, true));
    for (int batch : batches) {
      const double ips = ImagesPerSecond(*model, in, batch, reps);
      const double tps = TextsPerSecond(*model, short_texts, batch, reps);
      const double tps_long = TextsPerSecond(*model, long_texts, batch, reps);
      double pipelined = 0;
      if (!on_cpu) {
        std::vector<const ImageInput*> ptrs;
        for (int i = 0; i < batch; ++i) ptrs.push_back(&in.images[i % in.images.size()]);
        pipelined = PipelinedImagesPerSecond(*model, ptrs, reps, 8);
      }
      std::printf("%-9s %-22s %10.0f %8d %10.1f %9.0f%% %10.1f %12.1f %10.1f\n", s.dtype.c_str(),
                  threads.c_str(), gflops, batch, ips, 100 * ips * vision_gflop / gflops, tps,
                  tps_long, pipelined);
      std::fflush(stdout);
    }
  }

  if (!no_sweep && on_cpu) {
    std::printf("\nthread settings at batch 8 (images/s; the defaults are marked *)\n");
    const int cores = std::max(1u, std::thread::hardware_concurrency());
    std::vector<Setting> sweep = {{"float32", 1, cores}, {"float32", cores, cores},
                                  {"float32", cores, 1}, {"float32", 1, 1},
                                  {"bfloat16", cores, 1}, {"bfloat16", 1, 1},
                                  {"bfloat16", cores, cores}};
    for (const Setting& s : sweep) {
      auto model = Load(dir, s.dtype, s.torch_threads, s.blas_threads);
      Inputs in;
      for (const auto& entry : fs::directory_iterator(images_dir)) {
        auto img = model->PrepareImage(Slurp(entry.path().string()), {});
        if (img.ok()) in.images.push_back(*std::move(img));
      }
      const bool is_default = (s.dtype == "float32" && s.torch_threads == 1 && s.blas_threads == cores) ||
                              (s.dtype == "bfloat16" && s.torch_threads == cores && s.blas_threads == 1);
      std::printf("  %-9s torch_threads=%d openblas_threads=%d: %8.1f%s\n", s.dtype.c_str(),
                  s.torch_threads, s.blas_threads, ImagesPerSecond(*model, in, 8, reps),
                  is_default ? " *" : "");
      std::fflush(stdout);
    }
  }
  return 0;
}
