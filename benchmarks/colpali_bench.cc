// ColPali forward throughput (pages/s, queries/s) for the tiny reference model and a
// mid-size random config in float32 and bfloat16, and the effect of mean-pooling page
// patch vectors (factor x factor blocks) on MaxSim scores and rankings.
//
// --full adds ColPali at full size (PaliGemma-3B's SigLIP So400m/14 at 448 px and Gemma-2B,
// random weights, the reference tokenizer's small vocabulary) and prints its FLOPs per page;
// it is meant for a GPU (--device cuda).
//
//   colpali_bench [--batch 8] [--repeats 3] [--skip-mid] [--full] [--device cpu|cuda:0]
//                 [--dtypes float32,bfloat16]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "server/models/colpali/colpali_config.h"
#include "server/models/colpali/colpali_model.h"
#include "server/models/colpali/colpali_random_checkpoint.h"

namespace fs = std::filesystem;
using namespace embedserve::models;
using namespace embedserve::models::colpali;

namespace {

const std::string kRef = std::string(EMBEDSERVE_SOURCE_DIR) + "/tests/data/colpali-reference/";

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

const std::vector<std::string> kPages = {
    "exact_224.png", "gray_640x480.png", "landscape_640x480.png", "odd_1999x1001.jpg",
    "photo_800x600.jpg", "portrait_300x900.png", "rgba_opaque_320x240.png", "small_50x40.png",
    "webp_512x384.webp"};
const std::vector<std::string> kQueries = {
    "Which page shows the quarterly revenue table?", "signature", "Umsatz drittes Quartal",
    "What is 2 + 2?", "Invoice 4711: due date and amount", "a chart of monthly sales",
    "the signature block at the bottom", "table of contents", "photo of a mountain"};

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

std::vector<Embedding> EmbedPages(Model& model, int count) {
  std::vector<ImageInput> inputs;
  for (int i = 0; i < count; ++i) {
    inputs.push_back(*model.PrepareImage(Slurp(kRef + "images/" + kPages[i % kPages.size()]), ImageLimits()));
  }
  std::vector<const ImageInput*> ptrs;
  for (const auto& i : inputs) ptrs.push_back(&i);
  return *model.EmbedImages(ptrs);
}

std::vector<Embedding> EmbedQueries(Model& model, int count) {
  std::vector<TextInput> inputs;
  for (int i = 0; i < count; ++i) inputs.push_back(*model.PrepareText(kQueries[i % kQueries.size()], true));
  std::vector<const TextInput*> ptrs;
  for (const auto& i : inputs) ptrs.push_back(&i);
  return *model.EmbedTexts(ptrs);
}

std::string g_device = "cpu";
std::vector<std::string> g_dtypes = {"float32", "bfloat16"};

struct VisionSize {
  int hidden, mlp, layers, heads, image;  // patch 14
};
struct TextSize {
  int hidden, mlp, layers, head_dim;  // 8 query heads over one KV head (multi-query)
};

// `base` (its tokenizer ids and prompts) with towers of the given sizes; 128-d output.
ColPaliConfig Resized(ColPaliConfig c, const VisionSize& v, const TextSize& t) {
  c.vision.hidden_size = v.hidden;
  c.vision.intermediate_size = v.mlp;
  c.vision.num_hidden_layers = v.layers;
  c.vision.num_attention_heads = v.heads;
  c.vision.image_size = v.image;
  c.vision.patch_size = 14;
  c.text.hidden_size = t.hidden;
  c.text.intermediate_size = t.mlp;
  c.text.num_hidden_layers = t.layers;
  c.text.num_attention_heads = 8;
  c.text.num_key_value_heads = 1;
  c.text.head_dim = t.head_dim;
  c.projection_dim = t.hidden;
  c.embedding_dim = 128;
  c.preprocess.size = v.image;
  c.preprocess.image_seq_length = c.vision.num_patches();
  return c;
}

// Forward FLOPs of one page (matmuls and attention; 2 per multiply-add).
double PageFlops(const ColPaliConfig& c, int prompt_tokens) {
  const double t = c.vision.num_patches(), w = c.vision.hidden_size;
  const double vision = c.vision.num_hidden_layers *
                        (2 * t * (4 * w * w + 2 * w * c.vision.intermediate_size) + 4 * t * t * w);
  const double projector = 2 * t * w * c.text.hidden_size;
  const double l = t + prompt_tokens, h = c.text.hidden_size, hd = c.text.head_dim;
  const double heads = c.text.num_attention_heads, kv = c.text.num_key_value_heads;
  const double per_layer = 2 * l * h * hd * (2 * heads + 2 * kv) +
                           2 * l * 3 * h * c.text.intermediate_size + 4 * l * l * heads * hd;
  return vision + projector + c.text.num_hidden_layers * per_layer + 2 * l * h * c.embedding_dim;
}

// With `config`, also the achieved TFLOP/s, from the FLOPs of a page of the size served.
void Throughput(const std::string& name, const std::string& dir, int batch, int repeats,
                const ColPaliConfig* config = nullptr) {
  for (const std::string& dtype : g_dtypes) {
    RuntimeOptions options;
    options.device = g_device;
    options.dtype = dtype;
    options.allow_slow_bfloat16 = true;  // measured on purpose, even where it is a fallback
    auto model = LoadColPali(dir, options);
    if (!model.ok()) {
      std::printf("%s %s: %s\n", name.c_str(), dtype.c_str(), model.status().ToString().c_str());
      continue;
    }
    const int page_rows = EmbedPages(**model, batch)[0].rows;  // warm-up
    const double page_flops =
        config == nullptr ? 0 : PageFlops(*config, page_rows - config->vision.num_patches());
    EmbedQueries(**model, batch);
    auto start = std::chrono::steady_clock::now();
    for (int r = 0; r < repeats; ++r) EmbedPages(**model, batch);
    const double pages = batch * repeats / Seconds(start);
    start = std::chrono::steady_clock::now();
    for (int r = 0; r < repeats; ++r) EmbedQueries(**model, batch);
    const double queries = batch * repeats / Seconds(start);
    std::printf("%-8s %-9s %s batch %2d: %8.1f pages/s  %8.1f queries/s  (%s)", name.c_str(),
                dtype.c_str(), g_device.c_str(), batch, pages, queries,
                (*model)->description().architecture.c_str());
    if (page_flops > 0) std::printf("  %.1f TFLOP/s", pages * page_flops / 1e12);
    std::printf("\n");
    std::fflush(stdout);
  }
}

double MaxSim(const Embedding& q, const Embedding& p) {
  double total = 0;
  for (int i = 0; i < q.rows; ++i) {
    double best = -1e30;
    for (int j = 0; j < p.rows; ++j) {
      double dot = 0;
      for (int d = 0; d < q.dim; ++d) dot += double(q.values[i * q.dim + d]) * p.values[j * p.dim + d];
      best = std::max(best, dot);
    }
    total += best;
  }
  return total;
}

// Mean-pools the first grid x grid rows (the image tokens) in factor x factor blocks,
// keeps the prompt rows, re-normalizes the pooled rows.
Embedding Pool(const Embedding& page, int grid, int factor) {
  Embedding out;
  out.dim = page.dim;
  const int g = grid / factor;
  for (int by = 0; by < g; ++by) {
    for (int bx = 0; bx < g; ++bx) {
      std::vector<double> sum(page.dim, 0.0);
      for (int y = 0; y < factor; ++y) {
        for (int x = 0; x < factor; ++x) {
          const int row = (by * factor + y) * grid + (bx * factor + x);
          for (int d = 0; d < page.dim; ++d) sum[d] += page.values[row * page.dim + d];
        }
      }
      double norm = 0;
      for (double v : sum) norm += v * v;
      norm = std::sqrt(norm);
      for (double v : sum) out.values.push_back(static_cast<float>(norm > 0 ? v / norm : 0));
      ++out.rows;
    }
  }
  for (int row = grid * grid; row < page.rows; ++row) {
    out.values.insert(out.values.end(), page.values.begin() + row * page.dim,
                      page.values.begin() + (row + 1) * page.dim);
    ++out.rows;
  }
  return out;
}

void PoolingEffect(const std::string& name, const std::string& dir, int grid) {
  auto model = LoadColPali(dir, RuntimeOptions());
  if (!model.ok()) return;
  const auto pages = EmbedPages(**model, static_cast<int>(kPages.size()));
  const auto queries = EmbedQueries(**model, static_cast<int>(kQueries.size()));
  for (int factor = 2; factor <= grid && grid % factor == 0; factor *= 2) {
    std::vector<Embedding> pooled;
    for (const auto& p : pages) pooled.push_back(Pool(p, grid, factor));
    double rel = 0;
    int top1 = 0, pairs_agree = 0, pairs = 0;
    for (const auto& q : queries) {
      std::vector<double> a, b;
      for (size_t j = 0; j < pages.size(); ++j) {
        a.push_back(MaxSim(q, pages[j]));
        b.push_back(MaxSim(q, pooled[j]));
        rel += std::abs(b.back() - a.back()) / std::abs(a.back());
      }
      top1 += std::max_element(a.begin(), a.end()) - a.begin() ==
              std::max_element(b.begin(), b.end()) - b.begin();
      for (size_t x = 0; x < a.size(); ++x) {
        for (size_t y = x + 1; y < a.size(); ++y) {
          pairs_agree += (a[x] > a[y]) == (b[x] > b[y]);
          ++pairs;
        }
      }
    }
    std::printf("%-8s pool %dx%d: page rows %d -> %d, mean |dMaxSim|/MaxSim %.4f, top-1 kept "
                "%d/%zu, pairwise order kept %.1f%%\n",
                name.c_str(), factor, factor, pages[0].rows, pooled[0].rows,
                rel / (queries.size() * pages.size()), top1, queries.size(),
                100.0 * pairs_agree / pairs);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("ColPali forward throughput and page-vector pooling");
  int batch = 8, repeats = 3;
  bool skip_mid = false;
  app.add_option("--batch", batch);
  app.add_option("--repeats", repeats);
  app.add_flag("--skip-mid", skip_mid);
  bool full = false;
  app.add_flag("--full", full, "Also the full-size ColPali (random weights; for a GPU)");
  app.add_option("--device", g_device, "cpu, cuda, cuda:N");
  app.add_option("--dtypes", g_dtypes, "Serving dtypes")->delimiter(',');
  CLI11_PARSE(app, argc, argv);

  const std::string tiny = kRef + "model";
  Throughput("tiny", tiny, batch, repeats);
  PoolingEffect("tiny", tiny, 4);

  if (!skip_mid) {
    // Mid-size random config: SigLIP 384 wide x 6 at 224/14 (256 patches), Gemma 512 x 6
    // with MQA, 128-dim output; the reference tokenizer.
    const ColPaliConfig c = Resized(*ReadColPaliConfig(tiny), {384, 1536, 6, 6, 224}, {512, 2048, 6, 64});
    const fs::path dir = fs::temp_directory_path() / "colpali_bench_mid";
    fs::remove_all(dir);
    if (auto s = WriteRandomCheckpoint(c, dir.string(), "BF16", 1); !s.ok()) {
      std::printf("mid: %s\n", s.ToString().c_str());
      return 1;
    }
    fs::copy_file(tiny + "/tokenizer.model", dir / "tokenizer.model");
    Throughput("mid", dir.string(), batch, repeats);
    PoolingEffect("mid", dir.string(), c.vision.grid());
    fs::remove_all(dir);
  }

  if (full) {
    // PaliGemma-3B at 448 px (vidore/colpali-v1.3's base): SigLIP So400m/14 (1152 wide,
    // 27 layers, 4304 MLP) and Gemma-2B (2048 wide, 18 layers, 8 heads over one KV head of
    // 256, 16384 GeGLU). The vocabulary stays the reference tokenizer's: it only sizes the
    // embedding table, which a forward reads a few rows of.
    const ColPaliConfig c =
        Resized(*ReadColPaliConfig(tiny), {1152, 4304, 27, 16, 448}, {2048, 16384, 18, 256});
    const fs::path dir = fs::temp_directory_path() / "colpali_bench_full";
    fs::remove_all(dir);
    if (auto s = WriteRandomCheckpoint(c, dir.string(), "BF16", 1); !s.ok()) {
      std::printf("full: %s\n", s.ToString().c_str());
      return 1;
    }
    fs::copy_file(tiny + "/tokenizer.model", dir / "tokenizer.model");
    std::printf("full: %d image tokens per page, %.2f TFLOP per page with a 6-token prompt\n",
                c.vision.num_patches(), PageFlops(c, 6) / 1e12);
    Throughput("full", dir.string(), batch, repeats, &c);
    fs::remove_all(dir);
  }
  return 0;
}
