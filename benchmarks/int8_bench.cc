// Serving dtype int8 against float32 on the CPU, side by side in one run: OpenCLIP at full
// size (random weights, 224 px images), images/s and texts/s per batch size, rounds
// alternated float32, int8, float32, int8 ... each with its own thread settings (the serving
// defaults), printing the medians and the median of the per-round ratios; then int8's thread
// settings; then the cosine of int8 against float32 over many inputs (min, p1, median).
//
//   int8_bench [--architecture ViT-B-32] [--rounds 7] [--batches 1,16] [--inputs 256]
//              [--threads N] [--no-sweep] [--no-bfloat16]
//
// --threads N gives both dtypes N threads where their matmuls run (float32: OpenBLAS, torch 1;
// int8: torch, OpenBLAS 1); 0, the default, keeps the serving defaults. On a machine shared
// with other work, --threads 1 is the steadier comparison: OpenMP teams spin-wait and collapse
// when one of their threads is descheduled.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <CLI/CLI.hpp>

#include "benchmarks/bench_checkpoint.h"
#include "server/models/cpu_features.h"
#include "server/models/openclip/openclip_config.h"
#include "server/models/openclip/openclip_model.h"
#include "server/models/openclip/openclip_random_checkpoint.h"
#include "server/models/torch_util.h"

namespace {

namespace fs = std::filesystem;
using embedserve::models::Embedding;
using embedserve::models::ImageInput;
using embedserve::models::Model;
using embedserve::models::RuntimeOptions;
using embedserve::models::TextInput;
namespace oc = embedserve::models::openclip;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  return v[i];
}
double Median(const std::vector<double>& v) { return Quantile(v, 0.5); }

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

template <typename T>
T OrDie(absl::StatusOr<T> value, const char* what) {
  if (!value.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, value.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(value);
}

// A served model with the thread settings it was loaded with (they are process-wide, so
// each timed round sets them again).
struct Served {
  std::string dtype;
  RuntimeOptions options;
  std::unique_ptr<Model> model;
  std::string threads;  // as ConfigureCpuThreads describes them

  void UseThreads() {
    threads = embedserve::models::ConfigureCpuThreads(
        options, dtype == "int8" ? at::kQInt8 : dtype == "bfloat16" ? at::kBFloat16 : at::kFloat);
  }
};

Served Load(const std::string& dir, const std::string& dtype, int torch_threads, int blas_threads) {
  Served s;
  s.dtype = dtype;
  s.options.device = "cpu";
  s.options.dtype = dtype;
  s.options.torch_threads = torch_threads;
  s.options.blas_threads = blas_threads;
  s.model = OrDie(oc::LoadOpenClip(dir, s.options), "load");
  s.UseThreads();
  return s;
}

std::vector<Embedding> Images(Model& model, const std::vector<const ImageInput*>& batch) {
  return OrDie(model.EmbedImages(batch), "image forward");
}
std::vector<Embedding> Texts(Model& model, const std::vector<const TextInput*>& batch) {
  return OrDie(model.EmbedTexts(batch), "text forward");
}

// Items/s of one forward of `batch`, after the model's thread settings are set.
template <typename Input>
double Rate(Served& served, const std::vector<const Input*>& batch) {
  served.UseThreads();
  const double start = Now();
  if constexpr (std::is_same_v<Input, ImageInput>) {
    Images(*served.model, batch);
  } else {
    Texts(*served.model, batch);
  }
  return batch.size() / (Now() - start);
}

// float32 and int8 alternated for `rounds` rounds (after one warm-up forward each): prints
// each one's median items/s and the median of the per-round int8/float32 ratios.
template <typename Input>
void Compare(const char* what, Served& fp32, Served& int8, const std::vector<Input>& pool,
             int batch, int rounds) {
  std::vector<const Input*> ptrs;
  for (int i = 0; i < batch; ++i) ptrs.push_back(&pool[i % pool.size()]);
  Rate(fp32, ptrs);
  Rate(int8, ptrs);
  std::vector<double> a, b, ratio;
  for (int r = 0; r < rounds; ++r) {
    a.push_back(Rate(fp32, ptrs));
    b.push_back(Rate(int8, ptrs));
    ratio.push_back(b.back() / a.back());
  }
  std::printf("%-7s %6d %12.1f %12.1f %10.2fx %10.2fx %10.2fx\n", what, batch, Median(a), Median(b),
              Median(ratio), Quantile(ratio, 0.0), Quantile(ratio, 1.0));
  std::fflush(stdout);
}

double Cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

void PrintCosines(const char* what, const std::vector<double>& c) {
  std::printf("%-7s %6zu %10.6f %10.6f %10.6f %10.6f\n", what, c.size(), Quantile(c, 0.0),
              Quantile(c, 0.01), Quantile(c, 0.5), Quantile(c, 1.0));
}

}  // namespace

int main(int argc, char** argv) {
  std::string architecture = "ViT-B-32";
  int rounds = 7;
  int inputs = 256;
  bool no_sweep = false;
  bool no_bfloat16 = false;
  int threads = 0;
  std::vector<int> batches = {1, 16};
  CLI::App app{"int8 vs float32 OpenCLIP on the CPU (random weights, full size)"};
  app.add_option("--architecture", architecture);
  app.add_option("--rounds", rounds, "Alternated float32/int8 rounds per figure");
  app.add_option("--batches", batches, "Batch sizes")->delimiter(',');
  app.add_option("--inputs", inputs, "Texts and images for the cosine figures");
  app.add_option("--threads", threads, "Threads for both dtypes' matmuls (0: serving defaults)");
  app.add_flag("--no-sweep", no_sweep, "Skip int8's thread settings");
  app.add_flag("--no-bfloat16", no_bfloat16, "Skip bfloat16's cosine figures");
  CLI11_PARSE(app, argc, argv);

  const oc::OpenClipConfig config = OrDie(oc::NamedArchitecture(architecture), "architecture");
  const std::string dir = OrDie(embedserve::bench::CachedRandomCheckpoint(config, architecture),
                                "checkpoint");
  Served fp32 = Load(dir, "float32", threads > 0 ? 1 : 0, threads);
  Served int8 = Load(dir, "int8", threads, threads > 0 ? 1 : 0);
  std::printf("%s (random weights), %d px images, %u hardware threads\n", architecture.c_str(),
              config.vision.image_size, std::max(1u, std::thread::hardware_concurrency()));
  std::printf("float32: %s (%s)\nint8:    %s (%s)\n", fp32.threads.c_str(),
              fp32.model->description().dtype_reason.c_str(), int8.threads.c_str(),
              int8.model->description().dtype_reason.c_str());

  // Inputs: the reference images (preprocessed to the model's side), and captions.
  const std::string images_dir =
      std::string(EMBEDSERVE_SOURCE_DIR) + "/tests/data/openclip-reference/images/";
  std::vector<ImageInput> images;
  for (const auto& entry : fs::directory_iterator(images_dir)) {
    images.push_back(OrDie(fp32.model->PrepareImage(Slurp(entry.path().string()), {}), "image"));
  }
  const std::vector<std::string> captions = {
      "a photo of a cat", "two dogs playing in the snow", "a diagram of a neural network",
      "a red car parked next to a tree on a sunny day", "the skyline of a city at night"};
  std::vector<TextInput> texts;
  for (const auto& c : captions) texts.push_back(OrDie(fp32.model->PrepareText(c, true), "text"));

  std::printf("\nthroughput, %d alternated rounds (items/s medians; ratio = int8 / float32 per "
              "round: median, min, max)\n", rounds);
  std::printf("%-7s %6s %12s %12s %11s %11s %11s\n", "input", "batch", "float32", "int8",
              "ratio", "min", "max");
  for (int batch : batches) {
    Compare("images", fp32, int8, images, batch, rounds);
    Compare("texts", fp32, int8, texts, batch, rounds);
  }

  if (!no_sweep) {
    const int cores = std::max(1u, std::thread::hardware_concurrency());
    const int batch = batches.back();
    std::printf("\nint8 thread settings, images at batch %d (median of %d; the default is *)\n",
                batch, rounds);
    std::vector<const ImageInput*> ptrs;
    for (int i = 0; i < batch; ++i) ptrs.push_back(&images[i % images.size()]);
    const std::pair<int, int> settings[] = {{cores, 1}, {cores, cores}, {1, cores}, {1, 1}};
    for (const auto& [torch_threads, blas_threads] : settings) {
      Served s = Load(dir, "int8", torch_threads, blas_threads);
      std::vector<double> r;
      Rate(s, ptrs);
      for (int i = 0; i < rounds; ++i) r.push_back(Rate(s, ptrs));
      std::printf("  %-32s %8.1f images/s%s\n", s.threads.c_str(), Median(r),
                  torch_threads == cores && blas_threads == 1 ? " *" : "");
      std::fflush(stdout);
    }
  }

  // Cosine of int8 against float32 over `inputs` texts (random word sequences of 1 to 30
  // words) and `inputs` images (two reference images blended with a random weight, Gaussian
  // noise of 0.2 standard deviations, mirrored half of the time), in batches of 16.
  std::mt19937 rng(5);
  const std::vector<std::string> words = {
      "a", "photo", "of", "the", "cat", "dog", "red", "car", "city", "night", "two", "people",
      "walking", "on", "beach", "with", "diagram", "neural", "network", "tree", "sunny", "day",
      "old", "man", "reading", "newspaper", "in", "park", "bowl", "fruit", "table", "mountain",
      "lake", "snow", "bird", "flying", "over", "river", "painting", "portrait"};
  std::vector<TextInput> many_texts;
  for (int i = 0; i < inputs; ++i) {
    std::string t;
    const int n = 1 + static_cast<int>(rng() % 30);
    for (int w = 0; w < n; ++w) t += (w ? " " : "") + words[rng() % words.size()];
    many_texts.push_back(OrDie(fp32.model->PrepareText(t, true), "text"));
  }
  std::vector<ImageInput> many_images;
  std::normal_distribution<float> noise(0.0f, 0.2f);
  std::uniform_real_distribution<float> blend(0.0f, 1.0f);
  const int side = config.vision.image_size;
  for (int i = 0; i < inputs; ++i) {
    const ImageInput& a = images[rng() % images.size()];
    const ImageInput& b = images[rng() % images.size()];
    const float t = blend(rng);
    const bool mirror = rng() % 2 == 0;
    ImageInput out = a;
    for (int c = 0; c < 3; ++c) {
      for (int y = 0; y < side; ++y) {
        for (int x = 0; x < side; ++x) {
          const size_t at = (static_cast<size_t>(c) * side + y) * side + x;
          const size_t from = (static_cast<size_t>(c) * side + y) * side + (mirror ? side - 1 - x : x);
          out.pixels[at] = t * a.pixels[from] + (1 - t) * b.pixels[from] + noise(rng);
        }
      }
    }
    many_images.push_back(std::move(out));
  }
  // bfloat16 beside it, for scale, where the CPU runs it natively (elsewhere it is a slow
  // fallback that auto never picks).
  std::unique_ptr<Served> bf16;
  if (!no_bfloat16 && embedserve::models::HostCpuFeatures().NativeBfloat16()) {
    bf16 = std::make_unique<Served>(Load(dir, "bfloat16", threads, threads > 0 ? 1 : 0));
  }
  std::vector<double> text_cos, image_cos, bf16_text_cos, bf16_image_cos;
  for (int start = 0; start < inputs; start += 16) {
    std::vector<const TextInput*> tb;
    std::vector<const ImageInput*> ib;
    for (int i = start; i < std::min(inputs, start + 16); ++i) {
      tb.push_back(&many_texts[i]);
      ib.push_back(&many_images[i]);
    }
    fp32.UseThreads();
    const auto t32 = Texts(*fp32.model, tb);
    const auto i32 = Images(*fp32.model, ib);
    int8.UseThreads();
    const auto t8 = Texts(*int8.model, tb);
    const auto i8 = Images(*int8.model, ib);
    for (size_t k = 0; k < tb.size(); ++k) {
      text_cos.push_back(Cosine(t32[k].values, t8[k].values));
      image_cos.push_back(Cosine(i32[k].values, i8[k].values));
    }
    if (bf16) {
      bf16->UseThreads();
      const auto t16 = Texts(*bf16->model, tb);
      const auto i16 = Images(*bf16->model, ib);
      for (size_t k = 0; k < tb.size(); ++k) {
        bf16_text_cos.push_back(Cosine(t32[k].values, t16[k].values));
        bf16_image_cos.push_back(Cosine(i32[k].values, i16[k].values));
      }
    }
  }
  std::printf("\ncosine(int8, float32) per input\n%-7s %6s %10s %10s %10s %10s\n", "input", "n",
              "min", "p1", "median", "max");
  PrintCosines("texts", text_cos);
  PrintCosines("images", image_cos);
  if (bf16) {
    std::printf("cosine(bfloat16, float32), the same inputs (this CPU runs bfloat16 natively)\n");
    PrintCosines("texts", bf16_text_cos);
    PrintCosines("images", bf16_image_cos);
  }
  return 0;
}
