// Load generator: starts the real server on a model, drives it with N concurrent callers
// sending batches of M texts or images over a unix socket or TCP, and prints throughput,
// latency percentiles, errors and the server's batch size distribution. In the same run it
// measures the in-process model forward (no gRPC, no batcher) on the same inputs, after each
// of --rounds load phases, and prints the median of server throughput / in-process
// throughput over the rounds. Also: the p50 of a tiny call
// (Tokenize of a short text) with one caller.
//
//   load_bench --model-dir DIR [--kind image|text] [--concurrency 16] [--batch 1]
//              [--seconds 20] [--rounds 3] [--transport unix|tcp] [--image FILE]
//              [--server-arg ARG...]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <mutex>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "benchmarks/bench_util.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/embedserve_client.h"
#include "server/model_loader.h"
#include "tests/server/server_process.h"

namespace {

using embedserve::bench::Percentile;
using embedserve::bench::ReadFile;

using embedserve::client::Client;
namespace v1 = embedserve::v1;

// Scrapes http://127.0.0.1:port/metrics for embedserve_batch_size buckets of `modality`.
std::string BatchSizeDistribution(int port, const std::string& modality);
std::string DeviceMemoryLines(int port);

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"embedserve load benchmark"};
  std::string model_dir, kind = "image", transport = "unix";
  std::string image_path = std::string(EMBEDSERVE_SOURCE_DIR) +
                           "/tests/data/openclip-reference/images/photo_800x600.jpg";
  int concurrency = 16, batch = 1, inprocess_reps = 5, threads = 0;
  double seconds = 20;
  int rounds = 3;
  std::vector<std::string> server_args;
  app.add_option("--model-dir", model_dir, "Model directory to serve")->required();
  app.add_option("--kind", kind, "image|text")->check(CLI::IsMember({"image", "text"}));
  app.add_option("--concurrency", concurrency, "Concurrent callers");
  app.add_option("--batch", batch, "Inputs per call");
  app.add_option("--seconds", seconds, "Duration of the load phases, all rounds together");
  app.add_option("--rounds", rounds, "Load phases, each followed by the in-process forward (the ratio is their median)");
  app.add_option("--transport", transport, "unix|tcp")->check(CLI::IsMember({"unix", "tcp"}));
  app.add_option("--image", image_path, "Image file sent by image callers");
  app.add_option("--threads", threads, "Torch threads for the in-process forward (0: server default)");
  app.add_option("--inprocess-reps", inprocess_reps, "Repetitions per in-process batch size");
  app.add_option("--server-arg", server_args, "Extra server flag (repeatable, e.g. --server-arg=--dtype=bfloat16)");
  CLI11_PARSE(app, argc, argv);

  const std::string image = ReadFile(image_path);
  const std::string text = "a photo of a dog playing in the snow";
  const int metrics_port = embedserve::testing::FreeTcpPort();
  std::vector<std::string> args = {"--model", "bench=" + model_dir, "--metrics-listen",
                                   "127.0.0.1:" + std::to_string(metrics_port),
                                   "--no-access-log"};
  args.insert(args.end(), server_args.begin(), server_args.end());
  std::printf("starting server: model=%s kind=%s concurrency=%d batch=%d transport=%s\n",
              model_dir.c_str(), kind.c_str(), concurrency, batch, transport.c_str());
  embedserve::testing::ServerProcess server(args, 600);
  if (!server.healthy()) {
    std::fprintf(stderr, "server did not become healthy\n");
    return 1;
  }
  const std::string target = transport == "unix" ? server.unix_target() : server.tcp_target();

  // 1. Tiny-call latency: Tokenize of a short text, one caller.
  {
    auto client = Client::Create(target);
    v1::TokenizeRequest request;
    request.set_model("bench");
    request.add_texts("a dog");
    std::vector<double> us;
    for (int i = 0; i < 2000; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      auto r = client->Tokenize(request);
      const auto t1 = std::chrono::steady_clock::now();
      if (i >= 200 && r.ok()) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    std::printf("tiny call (Tokenize, 1 caller, %s): p50 %.0f us  p90 %.0f us  p99 %.0f us  (%zu calls)\n",
                transport.c_str(), Percentile(us, 0.5), Percentile(us, 0.9), Percentile(us, 0.99), us.size());
    // gRPC's own floor on this machine: the built-in health service (no embedserve code).
    std::vector<double> floor_us;
    for (int i = 0; i < 2000; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      auto r = client->Health("");
      const auto t1 = std::chrono::steady_clock::now();
      if (i >= 200 && r.ok()) floor_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    std::printf("gRPC floor (Health.Check, same client and socket): p50 %.0f us  p90 %.0f us\n",
                Percentile(floor_us, 0.5), Percentile(floor_us, 0.9));
  }

  // 2. The in-process model (no gRPC, no batcher) on the same inputs, loaded beside the
  // server; its best batch size is found once, up front.
  embedserve::models::RuntimeOptions settings;
  for (const std::string& a : server_args) {
    if (absl::StartsWith(a, "--dtype=")) settings.dtype = a.substr(8);
    if (absl::StartsWith(a, "--device=")) settings.device = embedserve::ResolveDevice(a.substr(9));
  }
  settings.torch_threads = threads;
  auto model = embedserve::LoadModel(model_dir, settings);
  if (!model.ok()) {
    std::fprintf(stderr, "in-process load failed: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  auto in_process = [&](int b, int reps) -> double {
    std::vector<embedserve::models::ImageInput> images;
    std::vector<embedserve::models::TextInput> texts;
    for (int i = 0; i < b; ++i) {
      if (kind == "image") images.push_back(*(*model)->PrepareImage(image, {}));
      else texts.push_back(*(*model)->PrepareText(text, true));
    }
    std::vector<const embedserve::models::ImageInput*> image_ptrs;
    std::vector<const embedserve::models::TextInput*> text_ptrs;
    for (auto& x : images) image_ptrs.push_back(&x);
    for (auto& x : texts) text_ptrs.push_back(&x);
    std::vector<double> rates;
    for (int rep = 0; rep <= reps; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      auto out = kind == "image" ? (*model)->EmbedImages(image_ptrs) : (*model)->EmbedTexts(text_ptrs);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!out.ok()) {
        std::fprintf(stderr, "in-process forward failed: %s\n", std::string(out.status().message()).c_str());
        std::exit(1);
      }
      if (rep > 0) rates.push_back(b / s);  // rep 0 warms up
    }
    return Percentile(rates, 0.5);
  };
  double best = 0;
  int best_batch = 0;
  for (int b : {1, 8, 16, 32}) {
    const double median = in_process(b, inprocess_reps);
    std::printf("in-process forward: batch %2d  %.1f %ss/s (median of %d)\n", b, median, kind.c_str(), inprocess_reps);
    if (median > best) {
      best = median;
      best_batch = b;
    }
  }

  // 3. Rounds: a load phase of seconds/rounds, then the in-process forward at its best batch
  // size, so that both see the same state of this (shared, noisy) machine.
  v1::EmbedRequest request;
  request.set_model("bench");
  for (int i = 0; i < batch; ++i) {
    if (kind == "image") request.add_inputs()->set_image(image);
    else request.add_inputs()->set_text(text);
  }
  auto client = Client::Create(target);
  std::vector<double> all;
  std::array<std::vector<double>, 4> parts;  // server timing: preprocess, queue, inference, total
  std::map<std::string, int> error_codes;
  long total_items = 0, total_errors = 0;
  double total_elapsed = 0, server_cpu = 0, client_cpu = 0;
  std::vector<double> ratios;
  for (int round = 0; round < rounds; ++round) {
    std::atomic<bool> stop{false};
    std::atomic<long> items{0}, errors{0};
    std::vector<std::vector<double>> latencies(concurrency);
    std::vector<std::vector<std::array<double, 4>>> timings(concurrency);
    std::mutex error_mu;
    std::vector<std::thread> callers;
    const double server_cpu_before = embedserve::testing::ProcessCpuSeconds(server.pid());
    const double client_cpu_before = embedserve::testing::ProcessCpuSeconds(getpid());
    const auto start = std::chrono::steady_clock::now();
    for (int c = 0; c < concurrency; ++c) {
      callers.emplace_back([&, c] {
        while (!stop.load()) {
          const auto t0 = std::chrono::steady_clock::now();
          auto r = client->Embed(request);
          const auto t1 = std::chrono::steady_clock::now();
          if (r.ok()) {
            items += batch;
            latencies[c].push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
            const auto& t = r->timing();
            timings[c].push_back({t.preprocess_us() / 1e3, t.queue_us() / 1e3,
                                  t.inference_us() / 1e3, t.total_us() / 1e3});
          } else {
            ++errors;
            std::lock_guard<std::mutex> lock(error_mu);
            error_codes[std::string(r.status().message())]++;
          }
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(seconds / rounds * 1000)));
    stop = true;
    for (auto& t : callers) t.join();
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    server_cpu += embedserve::testing::ProcessCpuSeconds(server.pid()) - server_cpu_before;
    client_cpu += embedserve::testing::ProcessCpuSeconds(getpid()) - client_cpu_before;
    for (int c = 0; c < concurrency; ++c) {
      all.insert(all.end(), latencies[c].begin(), latencies[c].end());
      for (const auto& t : timings[c]) {
        for (int k = 0; k < 4; ++k) parts[k].push_back(t[k]);
      }
    }
    total_items += items;
    total_errors += errors;
    total_elapsed += elapsed;
    const double throughput = items / elapsed;
    const double reference = in_process(best_batch, inprocess_reps);
    ratios.push_back(throughput / reference);
    std::printf("round %d: server %.1f %ss/s, in-process batch %d %.1f/s: ratio %.2f\n", round + 1,
                throughput, kind.c_str(), best_batch, reference, ratios.back());
    std::fflush(stdout);
  }
  const double server_throughput = total_items / total_elapsed;
  std::printf("server: %.1f %ss/s over %.1f s; latency p50 %.1f ms  p90 %.1f ms  p99 %.1f ms; errors %ld\n",
              server_throughput, kind.c_str(), total_elapsed, Percentile(all, 0.5), Percentile(all, 0.9),
              Percentile(all, 0.99), total_errors);
  for (const auto& [message, count] : error_codes) std::printf("  error x%d: %s\n", count, message.c_str());
  std::printf("server timing per call, medians (ms): preprocess %.1f  queue %.1f  inference %.1f  "
              "total %.1f; the client saw %.1f\n",
              Percentile(parts[0], 0.5), Percentile(parts[1], 0.5), Percentile(parts[2], 0.5),
              Percentile(parts[3], 0.5), Percentile(all, 0.5));
  std::printf("CPU during the load phases (of %u cores): server %.2f cores, this load generator %.2f cores\n",
              std::max(1u, std::thread::hardware_concurrency()), server_cpu / total_elapsed,
              client_cpu / total_elapsed);
  std::printf("server batch sizes (%s): %s\n", kind.c_str(),
              BatchSizeDistribution(metrics_port, kind).c_str());
  if (const std::string memory = DeviceMemoryLines(metrics_port); !memory.empty()) {
    std::printf("server device memory (metrics):\n%s", memory.c_str());
  }
  server.StopWith(SIGTERM);
  std::printf("RATIO server / in-process at batch %d, median of %d rounds: %.2f\n", best_batch,
              rounds, Percentile(ratios, 0.5));
  return 0;
}

namespace {



// The device memory gauges' lines (CUDA only), or "".
std::string DeviceMemoryLines(int port) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(embedserve::testing::HttpGetLocal(port, "/metrics"), '\n')) {
    if (absl::StartsWith(line, "embedserve_device_memory")) absl::StrAppend(&out, "  ", line, "\n");
  }
  return out;
}

std::string BatchSizeDistribution(int port, const std::string& modality) {
  const std::string page = embedserve::testing::HttpGetLocal(port, "/metrics");
  // Turn cumulative buckets into "le<=N: count" pairs with non-zero counts.
  std::string out;
  long previous = 0;
  const std::string prefix = "embedserve_batch_size_bucket{model=\"bench\",modality=\"" + modality + "\",le=\"";
  for (absl::string_view line : absl::StrSplit(page, '\n')) {
    if (!absl::StartsWith(line, prefix)) continue;
    const size_t end = line.find('"', prefix.size());
    const std::string le(line.substr(prefix.size(), end - prefix.size()));
    const long cumulative = std::stol(std::string(line.substr(line.rfind(' ') + 1)));
    if (cumulative > previous) absl::StrAppend(&out, out.empty() ? "" : ", ", "<=", le, ": ", cumulative - previous);
    previous = cumulative;
  }
  return out.empty() ? "(none)" : out;
}

}  // namespace
