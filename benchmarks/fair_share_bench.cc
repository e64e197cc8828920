// Fair sharing of the device between a cheap and an expensive model (issue 19): one real
// server holding both, driven by closed-loop callers in four phases per round, side by side:
// the cheap model alone, the expensive model alone, the expensive model alone with one caller
// (batches of one), both together. Prints the cheap model's p50/p99 latency alone vs together
// (ratio; the bar is 2x), the expensive model's throughput alone vs together (ratio; the bar
// is 0.9x) split into its device share and its device time per image (from the server's
// metrics), and the CPU the server and this load generator used.
//
// Cheap: the demo OpenCLIP model (tests/data/openclip-reference/model), Embed of one text.
// Expensive: a full-size OpenCLIP --architecture (default ViT-B-32) with random weights,
// written once to $TMPDIR/embedserve-bench-ARCH (as clip_forward_bench does), Embed of one
// image. --vision-layers N keeps only N of its image tower's layers (same width, so each
// layer costs the same), for a machine where one full image forward alone is longer than
// the cheap model's latency bar.
//
// --cheap-priority sends the cheap model's calls in a priority class (interactive: served
// before the expensive model's normal calls, which then take short batches while it is
// active), to see what the classes trade between the two.
//
//   fair_share_bench [--cheap-callers 56] [--expensive-callers 8] [--seconds 15]
//                    [--rounds 2] [--architecture ViT-B-32] [--vision-layers 0]
//                    [--cheap-priority normal|interactive|bulk] [--server-arg ARG...]
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "benchmarks/bench_checkpoint.h"
#include "benchmarks/bench_util.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "client/embedserve_client.h"
#include "server/models/openclip/openclip_config.h"
#include "server/models/openclip/openclip_random_checkpoint.h"
#include "tests/server/server_process.h"

namespace {

using embedserve::bench::Metric;
using embedserve::bench::Percentile;
using embedserve::bench::ReadFile;

namespace v1 = embedserve::v1;
using embedserve::client::Client;
using Clock = std::chrono::steady_clock;

// What one class of callers (one model) did in one phase.
struct Load {
  std::vector<double> latency_ms;
  long items = 0;
  long errors = 0;
  double seconds = 0;
  double device_seconds = 0;  // the model's forwards (embedserve_inference_seconds_sum)
  double forwards = 0;        // its batches (embedserve_batch_size_count)
  void Add(const Load& other) {
    latency_ms.insert(latency_ms.end(), other.latency_ms.begin(), other.latency_ms.end());
    items += other.items;
    errors += other.errors;
    seconds += other.seconds;
    device_seconds += other.device_seconds;
    forwards += other.forwards;
  }
  double Throughput() const { return seconds > 0 ? items / seconds : 0; }
};

struct Caller {
  std::string model;
  v1::EmbedRequest request;
  int count = 0;
  std::string modality;
};

struct Phase {
  std::map<std::string, Load> loads;  // by model
  double server_cores = 0, generator_cores = 0;
};

// Runs every caller class with callers > 0 for `seconds` in a closed loop (each caller sends
// its next call when the previous one answered).
Phase RunPhase(Client& client, const std::vector<Caller>& classes, double seconds, int metrics_port,
               pid_t server_pid) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  std::mutex mu;
  Phase phase;
  const std::string before = embedserve::testing::HttpGetLocal(metrics_port, "/metrics");
  const double server_cpu = embedserve::testing::ProcessCpuSeconds(server_pid);
  const double generator_cpu = embedserve::testing::ProcessCpuSeconds(getpid());
  const auto start = Clock::now();
  for (const Caller& c : classes) {
    for (int i = 0; i < c.count; ++i) {
      threads.emplace_back([&, c] {
        Load mine;
        while (!stop.load()) {
          const auto t0 = Clock::now();
          auto r = client.Embed(c.request);
          const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
          if (r.ok()) {
            ++mine.items;
            mine.latency_ms.push_back(ms);
          } else {
            ++mine.errors;
          }
        }
        std::lock_guard<std::mutex> lock(mu);
        phase.loads[c.model].Add(mine);
      });
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(seconds * 1000)));
  stop = true;
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  phase.server_cores = (embedserve::testing::ProcessCpuSeconds(server_pid) - server_cpu) / elapsed;
  phase.generator_cores = (embedserve::testing::ProcessCpuSeconds(getpid()) - generator_cpu) / elapsed;
  const std::string after = embedserve::testing::HttpGetLocal(metrics_port, "/metrics");
  for (const Caller& c : classes) {
    if (c.count == 0) continue;
    Load& load = phase.loads[c.model];
    load.seconds = elapsed;
    const std::string labels = "{model=\"" + c.model + "\",modality=\"" + c.modality + "\"}";
    load.device_seconds = Metric(after, "embedserve_inference_seconds_sum" + labels) -
                          Metric(before, "embedserve_inference_seconds_sum" + labels);
    load.forwards = Metric(after, "embedserve_batch_size_count" + labels) -
                    Metric(before, "embedserve_batch_size_count" + labels);
  }
  return phase;
}

// Device share: the fraction of the phase the model's forwards ran; device ms per item:
// their time per item computed.
void PrintLoad(const char* phase, const std::string& model, const Load& load) {
  std::printf("  %-16s %-9s %7.1f items/s  p50 %7.1f ms  p99 %7.1f ms  errors %ld  device "
              "share %5.1f%%, %6.2f ms/item (%.0f forwards, %.1f items each)\n",
              phase, model.c_str(), load.Throughput(), Percentile(load.latency_ms, 0.5),
              Percentile(load.latency_ms, 0.99), load.errors,
              100 * load.device_seconds / std::max(1e-9, load.seconds),
              1e3 * load.device_seconds / std::max<long>(1, load.items), load.forwards,
              load.forwards > 0 ? load.items / load.forwards : 0.0);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"embedserve fair sharing of the device: a cheap model beside an expensive one"};
  int cheap_callers = 56, expensive_callers = 8, rounds = 2;
  double seconds = 15;
  std::string architecture = "ViT-B-32";
  int vision_layers = 0;
  std::vector<std::string> server_args;
  std::string cheap_priority = "normal";
  app.add_option("--cheap-callers", cheap_callers, "Closed-loop callers of the cheap model");
  app.add_option("--cheap-priority", cheap_priority, "The cheap model's calls' priority class")
      ->check(CLI::IsMember({"bulk", "normal", "interactive"}));
  app.add_option("--expensive-callers", expensive_callers,
                 "Closed-loop callers of the expensive model");
  app.add_option("--seconds", seconds, "Duration of each phase");
  app.add_option("--rounds", rounds, "Rounds of the three phases (figures pool the rounds)");
  app.add_option("--architecture", architecture, "The expensive model's OpenCLIP architecture");
  app.add_option("--vision-layers", vision_layers,
                 "Image tower layers of the expensive model (0: the architecture's)");
  app.add_option("--server-arg", server_args, "Extra server flag (repeatable)");
  CLI11_PARSE(app, argc, argv);

  const std::string source = EMBEDSERVE_SOURCE_DIR;
  const std::string cheap_dir = source + "/tests/data/openclip-reference/model";
  auto config = embedserve::models::openclip::NamedArchitecture(architecture);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 2;
  }
  std::string expensive_name = architecture;
  if (vision_layers > 0 && vision_layers != config->vision.layers) {
    config->vision.layers = vision_layers;
    expensive_name += "-vision" + std::to_string(vision_layers);
  }
  const absl::StatusOr<std::string> written =
      embedserve::bench::CachedRandomCheckpoint(*config, expensive_name);
  if (!written.ok()) {
    std::fprintf(stderr, "%s\n", written.status().ToString().c_str());
    return 1;
  }
  const std::string& expensive_dir = *written;

  const int metrics_port = embedserve::testing::FreeTcpPort();
  std::vector<std::string> args = {"--model", "cheap=" + cheap_dir, "--model",
                                   "expensive=" + expensive_dir, "--metrics-listen",
                                   "127.0.0.1:" + std::to_string(metrics_port), "--no-access-log"};
  args.insert(args.end(), server_args.begin(), server_args.end());
  std::printf("server: cheap=%s expensive=%s (random %s); %d cheap callers (1 text), %d expensive "
              "callers (1 image); cheap calls' priority %s; %d rounds of 4 phases x %.0f s; %u hardware "
              "threads\n",
              cheap_dir.c_str(), expensive_dir.c_str(), expensive_name.c_str(), cheap_callers,
              expensive_callers, cheap_priority.c_str(), rounds, seconds,
              std::max(1u, std::thread::hardware_concurrency()));
  embedserve::testing::ServerProcess server(args, 600);
  if (!server.healthy()) {
    std::fprintf(stderr, "server did not become healthy\n");
    return 1;
  }
  auto client = Client::Create(server.unix_target());

  Caller cheap{"cheap", {}, cheap_callers, "text"};
  cheap.request.set_model("cheap");
  cheap.request.add_inputs()->set_text("a photo of a dog playing in the snow");
  cheap.request.mutable_options()->set_priority(
      cheap_priority == "interactive" ? v1::PRIORITY_INTERACTIVE
      : cheap_priority == "bulk"      ? v1::PRIORITY_BULK
                                      : v1::PRIORITY_NORMAL);
  Caller expensive{"expensive", {}, expensive_callers, "image"};
  expensive.request.set_model("expensive");
  expensive.request.add_inputs()->set_image(
      ReadFile(source + "/tests/data/openclip-reference/images/photo_800x600.jpg"));
  Caller cheap_off = cheap, expensive_off = expensive, expensive_one = expensive;
  cheap_off.count = 0;
  expensive_off.count = 0;
  expensive_one.count = 1;

  // Warm-up (not counted): both together.
  RunPhase(*client, {cheap, expensive}, 3, metrics_port, server.pid());
  Load cheap_solo, cheap_mixed, expensive_solo, expensive_mixed, expensive_single;
  for (int round = 1; round <= rounds; ++round) {
    std::printf("round %d\n", round);
    Phase a = RunPhase(*client, {cheap, expensive_off}, seconds, metrics_port, server.pid());
    PrintLoad("alone", "cheap", a.loads["cheap"]);
    Phase b = RunPhase(*client, {cheap_off, expensive}, seconds, metrics_port, server.pid());
    PrintLoad("alone", "expensive", b.loads["expensive"]);
    // The cost of an image in batches of one without contention, to tell the cost of the
    // smaller batches the time slice makes from that of sharing the CPU with the cheap load.
    Phase d = RunPhase(*client, {cheap_off, expensive_one}, seconds / 2, metrics_port, server.pid());
    PrintLoad("alone, 1 caller", "expensive", d.loads["expensive"]);
    Phase c = RunPhase(*client, {cheap, expensive}, seconds, metrics_port, server.pid());
    PrintLoad("together", "cheap", c.loads["cheap"]);
    PrintLoad("together", "expensive", c.loads["expensive"]);
    std::printf("  CPU cores used (server / load generator): cheap alone %.2f / %.2f, expensive "
                "alone %.2f / %.2f, together %.2f / %.2f\n",
                a.server_cores, a.generator_cores, b.server_cores, b.generator_cores,
                c.server_cores, c.generator_cores);
    std::fflush(stdout);
    cheap_solo.Add(a.loads["cheap"]);
    expensive_solo.Add(b.loads["expensive"]);
    cheap_mixed.Add(c.loads["cheap"]);
    expensive_mixed.Add(c.loads["expensive"]);
    expensive_single.Add(d.loads["expensive"]);
  }
  server.StopWith(SIGTERM);

  std::printf("all rounds pooled\n");
  PrintLoad("alone", "cheap", cheap_solo);
  PrintLoad("together", "cheap", cheap_mixed);
  PrintLoad("alone", "expensive", expensive_solo);
  PrintLoad("together", "expensive", expensive_mixed);
  PrintLoad("alone, 1 caller", "expensive", expensive_single);
  const double p50_solo = Percentile(cheap_solo.latency_ms, 0.5);
  const double p99_solo = Percentile(cheap_solo.latency_ms, 0.99);
  const double p50_mixed = Percentile(cheap_mixed.latency_ms, 0.5);
  const double p99_mixed = Percentile(cheap_mixed.latency_ms, 0.99);
  std::printf("CHEAP latency together / alone: p50 %.1f / %.1f ms = %.2fx, p99 %.1f / %.1f ms = "
              "%.2fx (bar: p99 <= 2x)\n",
              p50_mixed, p50_solo, p50_mixed / std::max(1e-9, p50_solo), p99_mixed, p99_solo,
              p99_mixed / std::max(1e-9, p99_solo));
  std::printf("EXPENSIVE throughput together / alone: %.2f / %.2f images/s = %.2fx (bar: >= 0.9x)\n",
              expensive_mixed.Throughput(), expensive_solo.Throughput(),
              expensive_mixed.Throughput() / std::max(1e-9, expensive_solo.Throughput()));
  auto share = [](const Load& l) { return l.device_seconds / std::max(1e-9, l.seconds); };
  auto per_item = [](const Load& l) { return l.device_seconds / std::max<long>(1, l.items); };
  std::printf("  = device share %.2fx (%.1f%% / %.1f%%) / device time per image %.2fx (%.1f / %.1f "
              "ms; batches of one alone: %.1f ms)\n",
              share(expensive_mixed) / std::max(1e-9, share(expensive_solo)),
              100 * share(expensive_mixed), 100 * share(expensive_solo),
              per_item(expensive_mixed) / std::max(1e-9, per_item(expensive_solo)),
              1e3 * per_item(expensive_mixed), 1e3 * per_item(expensive_solo),
              1e3 * per_item(expensive_single));
  const long errors = cheap_solo.errors + cheap_mixed.errors + expensive_solo.errors +
                      expensive_mixed.errors;
  return errors == 0 ? 0 : 1;
}
