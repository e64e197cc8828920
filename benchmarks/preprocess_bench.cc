// Image preprocessing benchmark (issue 17): per-image time of each stage of the CPU path
// (copy-in, decode, resize + crop, normalize, copy-out) for JPEG / PNG / WebP, exact against
// the opt-in fast JPEG decode side by side with ratios and fidelity, and images/s of the whole
// path on the pipeline's preprocessing ThreadPool against the thread count.
#include <cstddef>
#include <cstdio>
// jpeglib.h needs size_t and FILE declared first.
#include <jpeglib.h>
#include <png.h>
#include <webp/encode.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "CLI/CLI.hpp"
#include "server/image/clip_preprocess.h"
#include "server/image/decode.h"
#include "server/pipeline/thread_pool.h"

namespace {

using embedserve::image::ClipPreprocess;
using embedserve::image::ClipPreprocessConfig;
using embedserve::image::ClipResizeCrop;
using embedserve::image::DecodeLimits;
using embedserve::image::DecodeToRgb;
using embedserve::image::JpegDecode;
using embedserve::image::NormalizeToChw;
using embedserve::image::RgbImage;
using Clock = std::chrono::steady_clock;

// CPU time of the calling thread or of the process, in microseconds. The stage table uses
// thread CPU time: on a machine shared with other jobs, wall time mostly measures waiting.
double CpuMicros(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}
double ThreadCpu() { return CpuMicros(CLOCK_THREAD_CPUTIME_ID); }

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "preprocess_bench: %s\n", what.c_str());
  std::exit(1);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Die("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five;
  in >> one >> five;
  return one + " (1 min), " + five + " (5 min)";
}

// Baseline JPEG, 4:2:0, like a camera or Pillow's default save.
std::string EncodeJpeg(const RgbImage& img, int quality) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = img.width;
  cinfo.image_height = img.height;
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(&img.pixels[static_cast<size_t>(cinfo.next_scanline) *
                                                    img.width * 3]);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buffer), size);
  std::free(buffer);
  return out;
}

std::string EncodePng(const RgbImage& img) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.width = img.width;
  image.height = img.height;
  image.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, img.pixels.data(), 0, nullptr)) {
    Die("png size");
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&image, out.data(), &size, 0, img.pixels.data(), 0, nullptr)) {
    Die("png encode");
  }
  out.resize(size);
  return out;
}

std::string EncodeWebp(const RgbImage& img, float quality) {
  uint8_t* data = nullptr;
  const size_t size =
      WebPEncodeRGB(img.pixels.data(), img.width, img.height, img.width * 3, quality, &data);
  if (size == 0) Die("webp encode");
  std::string out(reinterpret_cast<char*>(data), size);
  WebPFree(data);
  return out;
}

// The photo upscaled to width x height with a little noise, so the JPEG has detail at full
// resolution (a plain upscale would compress to almost nothing).
RgbImage LargePhoto(const RgbImage& photo, int width, int height) {
  RgbImage big = embedserve::image::ResizeBicubic(photo, width, height);
  std::mt19937 rng(17);
  std::uniform_int_distribution<int> noise(-6, 6);
  for (auto& v : big.pixels) v = static_cast<uint8_t>(std::clamp(v + noise(rng), 0, 255));
  return big;
}

struct Case {
  std::string name;
  std::string bytes;
  bool jpeg;
};

struct Mode {
  const char* name;
  DecodeLimits limits;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0;
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

struct StageTimes {
  std::vector<double> copy_in, decode, resize, normalize, copy_out, total;
  int decoded_w = 0, decoded_h = 0;
};

// One image through the stages the server runs, each timed on its own.
void TimeOnce(const Case& c, const Mode& mode, const ClipPreprocessConfig& config,
              std::vector<float>& batch_slot, StageTimes& t) {
  const double t0 = ThreadCpu();
  const std::string owned = c.bytes;  // the RPC layer's copy of the request bytes
  const double t1 = ThreadCpu();
  auto rgb = DecodeToRgb(owned, mode.limits, config.image_size);
  if (!rgb.ok()) Die(c.name + ": " + rgb.status().ToString());
  const double t2 = ThreadCpu();
  const RgbImage crop = ClipResizeCrop(*rgb, config.image_size);
  const double t3 = ThreadCpu();
  const std::vector<float> chw = NormalizeToChw(crop, config);
  const double t4 = ThreadCpu();
  std::memcpy(batch_slot.data(), chw.data(), chw.size() * sizeof(float));  // StagePixels
  const double t5 = ThreadCpu();
  t.copy_in.push_back(t1 - t0);
  t.decode.push_back(t2 - t1);
  t.resize.push_back(t3 - t2);
  t.normalize.push_back(t4 - t3);
  t.copy_out.push_back(t5 - t4);
  t.total.push_back(t5 - t0);
  t.decoded_w = rgb->width;
  t.decoded_h = rgb->height;
}

// What value-initializing the decode buffer cost (std::vector::resize zero-filled it before
// the decoder wrote it): a fill pass over memory whose pages are already mapped. The page
// faults of a fresh buffer are paid either way (now on the decoder's first write); they are
// shown beside it.
struct FillCost {
  double fresh_zeroed = 0;  // allocation + page faults + zeroing
  double fill_pass = 0;     // one more pass over the mapped buffer: the removed part
};
FillCost ZeroFillMicros(size_t bytes, int reps) {
  std::vector<double> fresh, pass;
  for (int r = 0; r < reps; ++r) {
    const double a = ThreadCpu();
    std::vector<uint8_t> buffer(bytes);
    const double b = ThreadCpu();
    std::memset(buffer.data(), r & 0xFF, bytes);
    const double c = ThreadCpu();
    if (buffer[bytes / 2] != (r & 0xFF)) Die("zero fill");
    fresh.push_back(b - a);
    pass.push_back(c - b);
  }
  return FillCost{Median(fresh), Median(pass)};
}

struct Fidelity {
  int max_abs = 0;
  double mean_abs = 0, frac_differ = 0, max_float = 0;
};

Fidelity Compare(const Case& c, const Mode& exact, const Mode& fast,
                 const ClipPreprocessConfig& config) {
  const RgbImage a = ClipResizeCrop(*DecodeToRgb(c.bytes, exact.limits, config.image_size),
                                    config.image_size);
  const RgbImage b = ClipResizeCrop(*DecodeToRgb(c.bytes, fast.limits, config.image_size),
                                    config.image_size);
  Fidelity f;
  size_t differ = 0;
  double sum = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    const int d = std::abs(static_cast<int>(a.pixels[i]) - static_cast<int>(b.pixels[i]));
    f.max_abs = std::max(f.max_abs, d);
    sum += d;
    differ += d != 0;
  }
  f.mean_abs = sum / a.pixels.size();
  f.frac_differ = static_cast<double>(differ) / a.pixels.size();
  const std::vector<float> fa = NormalizeToChw(a, config), fb = NormalizeToChw(b, config);
  for (size_t i = 0; i < fa.size(); ++i) {
    f.max_float = std::max(f.max_float, static_cast<double>(std::fabs(fa[i] - fb[i])));
  }
  return f;
}

struct Rate {
  double images_per_s = 0;     // wall clock
  double cpu_us_per_image = 0;  // process CPU time per image (pool overhead shows here)
};

// Images/s of decode + ClipPreprocess on the pipeline's ThreadPool with `threads` threads.
Rate Throughput(const Case& c, const Mode& mode, const ClipPreprocessConfig& config,
                  int threads, int images) {
  std::mutex mu;
  std::condition_variable all_done;
  int done = 0;
  std::atomic<bool> failed{false};
  const auto start = Clock::now();
  const double cpu_start = CpuMicros(CLOCK_PROCESS_CPUTIME_ID);
  {
    embedserve::pipeline::ThreadPool pool(threads, images);
    for (int i = 0; i < images; ++i) {
      const bool accepted = pool.TrySchedule([&] {
        auto rgb = DecodeToRgb(c.bytes, mode.limits, config.image_size);
        if (!rgb.ok() || ClipPreprocess(*rgb, config).empty()) failed = true;
        std::lock_guard<std::mutex> lock(mu);
        if (++done == images) all_done.notify_one();
      });
      if (!accepted) Die("the pool refused a task");
    }
    std::unique_lock<std::mutex> lock(mu);
    all_done.wait(lock, [&] { return done == images; });
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = CpuMicros(CLOCK_PROCESS_CPUTIME_ID) - cpu_start;
  if (failed) Die(c.name + ": preprocessing failed");
  return Rate{images / seconds, cpu / images};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Image preprocessing: stage times, exact vs fast JPEG decode, thread scaling"};
  std::string data_dir = EMBEDSERVE_SOURCE_DIR "/tests/data/openclip-reference/images";
  int reps = 15;
  double seconds = 0.6;
  int rounds = 3;
  int max_threads = 0;
  int image_size = 224;
  app.add_option("--images", data_dir, "Folder holding photo_800x600.jpg");
  app.add_option("--reps", reps, "Timed repetitions per image and mode (stage table)");
  app.add_option("--seconds", seconds, "About how long one throughput run lasts");
  app.add_option("--rounds", rounds, "Throughput rounds (the median is reported)");
  app.add_option("--max-threads", max_threads, "Largest pool size (0: 2x the cores)");
  app.add_option("--image-size", image_size, "Side of the preprocessed square");
  CLI11_PARSE(app, argc, argv);

  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (max_threads <= 0) max_threads = 2 * cores;
  ClipPreprocessConfig config;
  config.image_size = image_size;

  const std::string photo_jpeg = ReadFile(data_dir + "/photo_800x600.jpg");
  const RgbImage photo = *DecodeToRgb(photo_jpeg, DecodeLimits{});
  const RgbImage large = LargePhoto(photo, 4000, 3000);
  std::vector<Case> cases = {
      {"jpeg 800x600", photo_jpeg, true},
      {"jpeg 4000x3000", EncodeJpeg(large, 90), true},
      {"png 800x600", EncodePng(photo), false},
      {"webp 800x600", EncodeWebp(photo, 90), false},
  };
  Mode exact{"exact", DecodeLimits{}};
  Mode fast{"fast", DecodeLimits{}};
  fast.limits.jpeg = JpegDecode::kFastDownscale;

  std::printf("preprocess_bench: %d hardware threads, target %dx%d, load average %s\n", cores,
              image_size, image_size, LoadAverage().c_str());
  for (const Case& c : cases) {
    std::printf("  %-15s %8zu bytes encoded\n", c.name.c_str(), c.bytes.size());
  }

  // 1. Stage times, exact and fast alternated in each repetition.
  std::printf("\nPer-image stage times, one thread, CPU time, median of %d (us); copy-in = the request "
              "bytes copied into the call, copy-out = the 3x%dx%d floats copied into the batch\n",
              reps, image_size, image_size);
  std::printf("%-15s %-5s %-11s %8s %9s %9s %9s %9s %9s %9s  %s\n", "image", "mode", "decoded",
              "copy-in", "decode", "resize", "normalize", "copy-out", "total", "p99 total",
              "fast/exact");
  std::vector<float> batch_slot(static_cast<size_t>(3) * image_size * image_size);
  for (const Case& c : cases) {
    std::vector<const Mode*> modes = {&exact};
    if (c.jpeg) modes.push_back(&fast);
    std::vector<StageTimes> times(modes.size());
    for (size_t m = 0; m < modes.size(); ++m) TimeOnce(c, *modes[m], config, batch_slot, times[m]);
    for (auto& t : times) t = StageTimes{};  // the first run warmed caches and the allocator
    for (int r = 0; r < reps; ++r) {
      for (size_t m = 0; m < modes.size(); ++m) {
        TimeOnce(c, *modes[m], config, batch_slot, times[m]);
      }
    }
    const double exact_total = Median(times[0].total);
    for (size_t m = 0; m < modes.size(); ++m) {
      const StageTimes& t = times[m];
      const std::string decoded = std::to_string(t.decoded_w) + "x" + std::to_string(t.decoded_h);
      char ratio[32] = "";
      if (m > 0) std::snprintf(ratio, sizeof(ratio), "%.2fx faster", exact_total / Median(t.total));
      std::printf("%-15s %-5s %-11s %8.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f  %s\n",
                  c.name.c_str(), modes[m]->name, decoded.c_str(), Median(t.copy_in),
                  Median(t.decode), Median(t.resize), Median(t.normalize), Median(t.copy_out),
                  Median(t.total), Percentile(t.total, 0.99), ratio);
    }
  }

  // 2. The zero-fill the decoders no longer do (vector::resize value-initialized the buffer).
  std::printf("\nRemoved copy: the zero-fill of the full-size RGB buffer before decoding into "
              "it (CPU us, median); the page faults of a fresh buffer remain (first write)\n");
  std::printf("  %-10s %14s %22s\n", "size", "removed pass", "fresh buffer (faults)");
  for (const auto& [name, w, h] : {std::tuple<const char*, int, int>{"800x600", 800, 600},
                                   {"1999x1001", 1999, 1001},
                                   {"4000x3000", 4000, 3000}}) {
    const FillCost cost = ZeroFillMicros(static_cast<size_t>(w) * h * 3, reps);
    std::printf("  %-10s %14.1f %22.1f\n", name, cost.fill_pass, cost.fresh_zeroed);
  }

  // 3. Fidelity of the fast decode: the 224x224 crop (uint8) and the normalized floats.
  std::printf("\nFast JPEG decode vs exact (Pillow-exact) after resize + crop, %dx%dx3 values\n",
              image_size, image_size);
  std::printf("%-15s %8s %10s %12s %16s\n", "image", "max|d|", "mean|d|", "frac differ",
              "max|d| normalized");
  std::vector<Case> fidelity_cases;
  for (const Case& c : cases) {
    if (c.jpeg) fidelity_cases.push_back(c);
  }
  fidelity_cases.push_back({"jpeg 1999x1001", ReadFile(data_dir + "/odd_1999x1001.jpg"), true});
  for (const Case& c : fidelity_cases) {
    const Fidelity f = Compare(c, exact, fast, config);
    std::printf("%-15s %8d %10.3f %12.4f %16.4f\n", c.name.c_str(), f.max_abs, f.mean_abs,
                f.frac_differ, f.max_float);
  }

  // 4. Thread scaling of the whole path on the pipeline's pool; rounds alternate configs.
  std::vector<int> thread_counts;
  for (int t = 1; t <= max_threads; t *= 2) thread_counts.push_back(t);
  if (std::find(thread_counts.begin(), thread_counts.end(), cores) == thread_counts.end() &&
      cores <= max_threads) {
    thread_counts.push_back(cores);
    std::sort(thread_counts.begin(), thread_counts.end());
  }
  struct Config {
    const Case* c;
    const Mode* mode;
    int images;
    std::vector<std::vector<double>> rates;  // [thread index][round] images/s
    std::vector<std::vector<double>> cpu;    // [thread index][round] CPU us per image
  };
  std::vector<Config> configs;
  for (const Case& c : cases) {
    std::vector<const Mode*> modes = {&exact};
    if (c.jpeg) modes.push_back(&fast);
    for (const Mode* mode : modes) {
      // Size a run from one timed image so that it lasts about `seconds` on one thread.
      const auto a = Clock::now();
      auto rgb = DecodeToRgb(c.bytes, mode->limits, image_size);
      (void)ClipPreprocess(*rgb, config);
      const double one = std::chrono::duration<double>(Clock::now() - a).count();
      const int images = std::clamp(static_cast<int>(seconds / one), 4 * max_threads, 5000);
      configs.push_back({&c, mode, images,
                         std::vector<std::vector<double>>(thread_counts.size()),
                         std::vector<std::vector<double>>(thread_counts.size())});
    }
  }
  for (int r = 0; r < rounds; ++r) {
    for (Config& cfg : configs) {
      for (size_t t = 0; t < thread_counts.size(); ++t) {
        // Scale the batch with the thread count so every run lasts about as long.
        const int images = cfg.images * std::min(thread_counts[t], cores);
        const Rate rate = Throughput(*cfg.c, *cfg.mode, config, thread_counts[t], images);
        cfg.rates[t].push_back(rate.images_per_s);
        cfg.cpu[t].push_back(rate.cpu_us_per_image);
      }
    }
  }
  std::printf("\nImages/s of decode + resize + crop + normalize on the preprocessing ThreadPool "
              "(median of %d rounds; ratio to 1 thread in brackets)\n", rounds);
  std::printf("%-15s %-5s", "image", "mode");
  for (int t : thread_counts) std::printf(" %10d thr", t);
  std::printf("   fast/exact at %d thr\n", cores);
  const size_t core_index =
      std::find(thread_counts.begin(), thread_counts.end(), std::min(cores, max_threads)) -
      thread_counts.begin();
  double exact_at_cores = 0;
  for (const Config& cfg : configs) {
    std::printf("%-15s %-5s", cfg.c->name.c_str(), cfg.mode->name);
    const double base = Median(cfg.rates[0]);
    for (size_t t = 0; t < thread_counts.size(); ++t) {
      const double rate = Median(cfg.rates[t]);
      std::printf(" %7.1f (%.2f)", rate, rate / base);
    }
    const double at_cores = core_index < cfg.rates.size() ? Median(cfg.rates[core_index]) : 0;
    if (cfg.mode == &exact) {
      exact_at_cores = at_cores;
      std::printf("\n");
    } else {
      std::printf("   %.2fx\n", at_cores / exact_at_cores);
    }
  }
  std::printf("\nCPU ms per image over the whole pool (median; ratio to 1 thread in brackets: "
              "above 1 is pool or allocator overhead, independent of other jobs' load)\n");
  std::printf("%-15s %-5s", "image", "mode");
  for (int t : thread_counts) std::printf(" %10d thr", t);
  std::printf("\n");
  for (const Config& cfg : configs) {
    std::printf("%-15s %-5s", cfg.c->name.c_str(), cfg.mode->name);
    const double base = Median(cfg.cpu[0]);
    for (size_t t = 0; t < thread_counts.size(); ++t) {
      const double cpu = Median(cfg.cpu[t]);
      std::printf(" %7.2f (%.2f)", cpu / 1000, cpu / base);
    }
    std::printf("\n");
  }
  std::printf("\nload average at the end: %s\n", LoadAverage().c_str());
  return 0;
}
