// GPU check (built only against a libtorch with CUDA): launching a batch queues no host
// synchronisation (CUDA's sync debug mode is set to "error" while batches launch, so any
// synchronising call inside a forward fails it), and the GPU's outputs match the CPU's.
//
//   gpu_sync_check [--device cuda:0]     exit 0 when every check passes
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <c10/cuda/CUDAFunctions.h>

#include "server/models/colpali/colpali_model.h"
#include "server/models/openclip/openclip_model.h"

namespace {

namespace fs = std::filesystem;
using namespace embedserve::models;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

double MinRowCosine(const std::vector<Embedding>& a, const std::vector<Embedding>& b) {
  if (a.size() != b.size()) return -2;
  double worst = 1;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].rows != b[i].rows || a[i].dim != b[i].dim) return -2;
    for (int r = 0; r < a[i].rows; ++r) {
      double dot = 0, na = 0, nb = 0;
      for (int d = 0; d < a[i].dim; ++d) {
        const double x = a[i].values[r * a[i].dim + d], y = b[i].values[r * b[i].dim + d];
        dot += x * y;
        na += x * x;
        nb += y * y;
      }
      // Zero rows (none expected) count as equal only if both are zero.
      const double c = (na == 0 && nb == 0) ? 1 : dot / std::sqrt(na * nb);
      if (!(c >= -1)) return -3;  // NaN
      worst = std::min(worst, c);
    }
  }
  return worst;
}

using Loader = std::function<absl::StatusOr<std::unique_ptr<Model>>(const RuntimeOptions&)>;

int failures = 0;

void Check(const std::string& name, const Loader& load, const std::string& images_dir,
           const std::vector<std::string>& texts, const std::string& device) {
  RuntimeOptions cpu_options;
  auto cpu = load(cpu_options);
  if (!cpu.ok()) {
    std::printf("FAIL %s: cpu load: %s\n", name.c_str(), cpu.status().ToString().c_str());
    ++failures;
    return;
  }
  std::vector<ImageInput> images;
  for (const auto& entry : fs::directory_iterator(images_dir)) {
    auto image = (*cpu)->PrepareImage(Slurp(entry.path().string()), ImageLimits());
    if (image.ok()) images.push_back(*std::move(image));
  }
  std::vector<TextInput> text_inputs;
  for (const auto& t : texts) text_inputs.push_back(*(*cpu)->PrepareText(t, true));
  std::vector<const ImageInput*> image_ptrs;
  for (const auto& i : images) image_ptrs.push_back(&i);
  std::vector<const TextInput*> text_ptrs;
  for (const auto& t : text_inputs) text_ptrs.push_back(&t);
  const auto cpu_images = *(*cpu)->EmbedImages(image_ptrs);
  const auto cpu_texts = *(*cpu)->EmbedTexts(text_ptrs);

  for (const char* dtype : {"float32", "bfloat16", "float16"}) {
    RuntimeOptions options;
    options.device = device;
    options.dtype = dtype;
    options.allow_slow_bfloat16 = true;  // measured on purpose, even where it is a fallback
    auto gpu = load(options);
    if (!gpu.ok()) {
      std::printf("FAIL %s %s: load: %s\n", name.c_str(), dtype, gpu.status().ToString().c_str());
      ++failures;
      continue;
    }
    // Warm-up: the caching allocators' first allocations may synchronise; later ones do not.
    for (int i = 0; i < 2; ++i) {
      (void)(*gpu)->EmbedImages(image_ptrs);
      (void)(*gpu)->EmbedTexts(text_ptrs);
    }
    c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR);
    auto pending_images = (*gpu)->LaunchImages(image_ptrs);
    auto pending_texts = (*gpu)->LaunchTexts(text_ptrs);
    c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
    auto gpu_images = pending_images->Wait();
    auto gpu_texts = pending_texts->Wait();
    if (!gpu_images.ok() || !gpu_texts.ok()) {
      std::printf("FAIL %s %s: launch under sync-debug=error: %s / %s\n", name.c_str(), dtype,
                  gpu_images.status().ToString().c_str(), gpu_texts.status().ToString().c_str());
      ++failures;
      continue;
    }
    const double image_cos = MinRowCosine(cpu_images, *gpu_images);
    const double text_cos = MinRowCosine(cpu_texts, *gpu_texts);
    const double floor = std::string(dtype) == "float32" ? 0.9999 : 0.99;
    const bool ok = image_cos >= floor && text_cos >= floor;
    if (!ok) ++failures;
    std::printf("%s %s %s: no host sync while launching; min row cosine vs CPU float32: "
                "images %.6f, texts %.6f (floor %.4f)\n",
                ok ? "PASS" : "FAIL", name.c_str(), dtype, image_cos, text_cos, floor);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string device = argc > 2 && std::string(argv[1]) == "--device" ? argv[2] : "cuda:0";
  const std::string data = std::string(EMBEDSERVE_SOURCE_DIR) + "/tests/data/";
  const std::vector<std::string> texts = {"a photo of a cat", "a diagram", "",
                                          "two dogs playing in the snow on a sunny day"};
  Check("openclip", [&](const RuntimeOptions& o) {
    return openclip::LoadOpenClip(data + "openclip-reference/model", o);
  }, data + "openclip-reference/images", texts, device);
  Check("colpali", [&](const RuntimeOptions& o) {
    return colpali::LoadColPali(data + "colpali-reference/model", o);
  }, data + "colpali-reference/images", {"Which page shows the revenue table?", "signature"},
        device);
  std::printf("%s: %d failure(s)\n", failures == 0 ? "ALL PASS" : "FAILED", failures);
  return failures == 0 ? 0 : 1;
}
