// embedserve against its Python peer, side by side in one run (issue 17): the real server, a
// Python gRPC server over our proto with the same graph (benchmarks/python_peer_server.py:
// Debian's PyTorch, PIL decode, a dynamic batcher; and its one-forward-per-call mode), and the
// in-process PyTorch loop end to end (decode + preprocess + forward, no gRPC).
//
// For each regime it writes a random OpenCLIP checkpoint in the hub layout (float32 weights):
//   compute     the full ViT-B-32 (the forward dominates);
//   preprocess  a one-layer, 64-wide image tower at 224 px (decoding and resizing dominate);
// starts embedserve (`--model bench=DIR`, default flags but `--no-access-log`) and the peer on
// it, checks that both answer the same embeddings (cosine >= --min-cosine on the reference
// images), finds the in-process loop's best batch (1, 8, 16, 32), then runs --rounds rounds of
// four phases in turn, A B C D: embedserve, the peer batched, the peer one forward per call,
// the in-process loop. A, B and C are this C++ load generator's --concurrency closed-loop
// callers (each sends its next call when the last one answered), one 800x600 JPEG per call,
// over unix sockets. Prints images/s per round and phase, the CPU each process used, the
// batch sizes, the medians, the median per-round ratios embedserve / each alternative, and
// p50/p99 call latency.
//
//   peer_bench [--regime compute|preprocess|both] [--seconds 15] [--rounds 3]
//              [--concurrency 16] [--quick] [--peer-torch-threads 1] [--server-arg ARG...]
//
// --quick: both regimes on the small tower, 2 s phases, one round: a smoke test of about a
// minute whose figures mean nothing. Exit status: 0 if every call succeeded and the outputs
// agree; 1 otherwise.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "benchmarks/bench_util.h"
#include "benchmarks/json_lines_child.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/embedserve_client.h"
#include "server/models/openclip/openclip_config.h"
#include "server/models/openclip/openclip_random_checkpoint.h"
#include "tests/server/server_process.h"

namespace {

using embedserve::bench::JsonLinesChild;
using embedserve::bench::Seconds;
using embedserve::bench::Metric;
using embedserve::bench::Percentile;
using embedserve::bench::TempDir;
using embedserve::bench::Median;
using embedserve::bench::ReadFile;

namespace fs = std::filesystem;
namespace oc = embedserve::models::openclip;
namespace v1 = embedserve::v1;
using embedserve::client::Client;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "model name")) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

// The 1, 5 and 15 minute load averages, as `uptime` prints them.
std::string LoadAverage() {
  std::string a, b, c;
  std::ifstream("/proc/loadavg") >> a >> b >> c;
  return a + " " + b + " " + c;
}

// What one closed-loop load phase measured.
struct Load {
  double rate = 0;  // images/s
  double seconds = 0;
  long images = 0, errors = 0;
  std::vector<double> latency_ms;
  double target_cores = 0, generator_cores = 0;
  std::string first_error;
};

// `concurrency` callers sending `request` in a closed loop for `seconds`; the calls in flight
// at the end are waited for and counted (the elapsed time includes them).
Load RunLoad(Client& client, const v1::EmbedRequest& request, int dim, int concurrency,
             double seconds, pid_t target) {
  std::atomic<bool> stop{false};
  std::atomic<long> images{0}, errors{0};
  std::vector<std::vector<double>> latency(concurrency);
  std::mutex mu;
  Load load;
  const double target_cpu = embedserve::testing::ProcessCpuSeconds(target);
  const double generator_cpu = embedserve::testing::ProcessCpuSeconds(getpid());
  const auto start = Clock::now();
  std::vector<std::thread> callers;
  for (int c = 0; c < concurrency; ++c) {
    callers.emplace_back([&, c] {
      while (!stop.load()) {
        const auto t0 = Clock::now();
        auto r = client.Embed(request);
        const double ms = Seconds(t0) * 1e3;
        std::string error;
        if (!r.ok()) {
          error = std::string(r.status().message());
        } else if (r->embeddings_size() != request.inputs_size() ||
                   r->embeddings(0).vector().values_size() != dim) {
          error = absl::StrCat(r->embeddings_size(), " embeddings of ",
                               r->embeddings_size() > 0 ? r->embeddings(0).vector().values_size() : 0,
                               " values; expected ", request.inputs_size(), " of ", dim);
        }
        if (!error.empty()) {
          ++errors;
          std::lock_guard<std::mutex> lock(mu);
          if (load.first_error.empty()) load.first_error = error;
          continue;
        }
        images += request.inputs_size();
        latency[c].push_back(ms);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(seconds * 1000)));
  stop = true;
  for (auto& t : callers) t.join();
  load.seconds = Seconds(start);
  load.images = images;
  load.errors = errors;
  load.rate = load.images / load.seconds;
  load.target_cores = (embedserve::testing::ProcessCpuSeconds(target) - target_cpu) / load.seconds;
  load.generator_cores = (embedserve::testing::ProcessCpuSeconds(getpid()) - generator_cpu) / load.seconds;
  for (const auto& l : latency) load.latency_ms.insert(load.latency_ms.end(), l.begin(), l.end());
  return load;
}

// One image's embedding from a server, as float32 (float list or packed float32).
std::vector<float> EmbedOne(Client& client, const std::string& image) {
  v1::EmbedRequest request;
  request.set_model("bench");
  request.add_inputs()->set_image(image);
  auto r = client.Embed(request);
  if (!r.ok()) throw std::runtime_error(absl::StrCat("Embed: ", r.status().message()));
  if (r->embeddings_size() != 1) throw std::runtime_error("Embed: not one embedding");
  const v1::Tensor& t = r->embeddings(0).vector();
  if (t.values_size() > 0) return {t.values().begin(), t.values().end()};
  std::vector<float> v(t.data().size() / sizeof(float));
  std::memcpy(v.data(), t.data().data(), v.size() * sizeof(float));
  return v;
}

double Cosine(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || a.empty()) return -2;
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

// The small tower of the preprocessing-bound regime: one layer, 64 wide, patch 32 at 224 px
// (50 tokens), with a text tower as small (the server loads it; no call uses it).
oc::OpenClipConfig SmallTower(oc::OpenClipConfig config) {
  config.embed_dim = 64;
  config.vision.image_size = 224;
  config.vision.patch_size = 32;
  config.vision.width = 64;
  config.vision.layers = 1;
  config.vision.head_width = 64;
  config.text.width = 64;
  config.text.heads = 1;
  config.text.layers = 1;
  return config;
}

struct Options {
  int concurrency = 16, rounds = 3, peer_torch_threads = 1, peer_max_batch = 32;
  double seconds = 15, peer_max_wait_ms = 2, min_cosine = 0.9999;
  bool quick = false;
  std::string python = "/usr/bin/python3";
  std::string image_path;
  std::vector<std::string> server_args;
};

struct System {
  const char* name;
  std::vector<double> rates, latency_ms, target_cores, generator_cores, batch;
  long errors = 0;
};

// One regime, start to end; false if a call failed or the outputs disagree.
bool RunRegime(const std::string& regime, const Options& o) {
  auto base = oc::NamedArchitecture("ViT-B-32");
  if (!base.ok()) throw std::runtime_error(std::string(base.status().message()));
  const bool small = regime == "preprocess" || o.quick;
  const oc::OpenClipConfig config = small ? SmallTower(*base) : *base;
  std::printf("\n=== regime %s: %s, random float32 weights: image %d px, patch %d, width %d, "
              "layers %d, embed %d%s ===\n",
              regime.c_str(), small ? "one-layer 64-wide tower" : "OpenCLIP ViT-B-32",
              config.vision.image_size, config.vision.patch_size, config.vision.width,
              config.vision.layers, config.embed_dim, o.quick ? " (--quick: figures mean nothing)" : "");
  std::printf("load average at start (1/5/15 min): %s\n", LoadAverage().c_str());

  TempDir temp;
  {
    char tmpl[] = "/tmp/peer-bench-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    temp.path = tmpl;
  }
  const std::string model_dir = temp.path + "/model";
  auto t0 = Clock::now();
  if (auto s = oc::WriteRandomCheckpoint(config, model_dir, "F32", 1); !s.ok()) {
    throw std::runtime_error(absl::StrCat("writing the checkpoint: ", s.message()));
  }
  std::printf("checkpoint (OpenCLIP hub layout, F32) written in %.1f s\n", Seconds(t0));

  // Both servers load at once.
  t0 = Clock::now();
  const std::string peer_socket = temp.path + "/peer.sock";
  // The Python peer: its stdin takes commands (mode, stats, inprocess), its stdout answers.
  JsonLinesChild peer(
      {o.python, std::string(EMBEDSERVE_SOURCE_DIR) + "/benchmarks/python_peer_server.py",
       "--model-dir", model_dir, "--name", "bench", "--listen", "unix:" + peer_socket,
       "--control-stdin", "--torch-threads", std::to_string(o.peer_torch_threads), "--max-batch",
       std::to_string(o.peer_max_batch), "--max-wait-ms", absl::StrCat(o.peer_max_wait_ms),
       "--grpc-threads", std::to_string(o.concurrency)},
      "the Python peer");
  const int metrics_port = embedserve::testing::FreeTcpPort();
  std::vector<std::string> args = {"--model", "bench=" + model_dir, "--metrics-listen",
                                   absl::StrCat("127.0.0.1:", metrics_port), "--no-access-log"};
  args.insert(args.end(), o.server_args.begin(), o.server_args.end());
  embedserve::testing::ServerProcess server(args, 600);
  if (!server.healthy()) throw std::runtime_error("embedserve did not become healthy");
  const double server_ready_s = Seconds(t0);
  const json ready = peer.Read();
  std::printf("embedserve healthy after %.1f s; peer serving after %.1f s (both loading at once)\n",
              server_ready_s, Seconds(t0));

  embedserve::client::ClientOptions client_options;
  client_options.timeout = absl::Seconds(600);
  auto ours = Client::Create(server.unix_target(), client_options);
  auto theirs = Client::Create("unix:" + peer_socket, client_options);
  auto info = ours->GetModel("bench");
  if (!info.ok()) throw std::runtime_error(absl::StrCat("GetModel: ", info.status().message()));
  std::printf("embedserve: dtype %s on %s, default flags%s, unix socket\n",
              info->model().dtype().c_str(), info->model().device().c_str(),
              o.server_args.empty() ? "" : " + --server-arg");
  std::printf("peer: python_peer_server.py, torch %s, grpcio %s, float32, torch threads %d, "
              "OpenBLAS threads %s, %d gRPC threads, batcher max %d images / %.1f ms wait\n",
              ready.value("torch", "?").c_str(), ready.value("grpc", "?").c_str(),
              ready.value("torch_threads", 0), ready.value("openblas_threads", "?").c_str(),
              ready.value("grpc_threads", 0), ready.value("max_batch", 0),
              ready.value("max_wait_ms", 0.0));

  // Same answers: each reference image through both servers.
  bool ok = true;
  double min_cosine = 1;
  int dim = 0;
  std::string worst;
  const std::string images_dir = std::string(EMBEDSERVE_SOURCE_DIR) + "/tests/data/openclip-reference/images";
  for (const char* name : {"photo_800x600.jpg", "odd_1999x1001.jpg", "portrait_300x900.png",
                           "landscape_640x480.png", "gray_640x480.png", "rgba_opaque_320x240.png",
                           "small_50x40.png", "exact_224.png"}) {
    const std::string bytes = ReadFile(images_dir + "/" + name);
    const std::vector<float> a = EmbedOne(*ours, bytes), b = EmbedOne(*theirs, bytes);
    dim = static_cast<int>(a.size());
    const double c = Cosine(a, b);
    if (c < min_cosine) {
      min_cosine = c;
      worst = name;
    }
  }
  const bool agree = min_cosine >= o.min_cosine && dim == config.embed_dim;
  ok = ok && agree;
  std::printf("outputs: embedserve vs peer on 8 reference images, dim %d: min cosine %.7f (%s); "
              "bar >= %.4f: %s\n",
              dim, min_cosine, worst.c_str(), o.min_cosine, agree ? "agree" : "DISAGREE");

  const std::string image = ReadFile(o.image_path);
  v1::EmbedRequest request;
  request.set_model("bench");
  request.add_inputs()->set_image(image);

  // Warm-up of both servers under the load, then the in-process loop's best batch.
  RunLoad(*ours, request, dim, o.concurrency, o.quick ? 0.5 : 2, server.pid());
  RunLoad(*theirs, request, dim, o.concurrency, o.quick ? 0.5 : 2, peer.pid());
  const double sweep_s = o.quick ? 0.5 : std::max(1.0, o.seconds / 5);
  int best_batch = 1;
  double best_rate = 0;
  std::string sweep;
  for (int b : {1, 8, 16, 32}) {
    if (o.quick && b > 8) break;
    const json r = peer.Command(absl::StrCat("inprocess ", o.image_path, " ", b, " ", sweep_s));
    const double rate = r.at("rate").get<double>();
    absl::StrAppend(&sweep, sweep.empty() ? "" : ", ", "batch ", b, " ", absl::StrFormat("%.1f", rate));
    if (rate > best_rate) {
      best_rate = rate;
      best_batch = b;
    }
  }
  std::printf("in-process end to end (decode + preprocess on %u threads + one forward), images/s: %s "
              "-> batch %d\n",
              std::max(1u, std::thread::hardware_concurrency()), sweep.c_str(), best_batch);
  peer.Command("stats");  // reset its counters
  std::fflush(stdout);

  // Rounds A B C D.
  System a{"embedserve"}, b{"peer batched"}, c{"peer unbatched"}, d{"in-process"};
  std::vector<double> ratio_b, ratio_c, ratio_d;
  const std::string batch_labels = "{model=\"bench\",modality=\"image\"}";
  for (int round = 1; round <= o.rounds; ++round) {
    const std::string before = embedserve::testing::HttpGetLocal(metrics_port, "/metrics");
    Load la = RunLoad(*ours, request, dim, o.concurrency, o.seconds, server.pid());
    const std::string after = embedserve::testing::HttpGetLocal(metrics_port, "/metrics");
    const double forwards = Metric(after, "embedserve_batch_size_count" + batch_labels) -
                            Metric(before, "embedserve_batch_size_count" + batch_labels);
    const double items = Metric(after, "embedserve_batch_size_sum" + batch_labels) -
                         Metric(before, "embedserve_batch_size_sum" + batch_labels);
    a.batch.push_back(forwards > 0 ? items / forwards : 0);

    peer.Command("mode batched");
    Load lb = RunLoad(*theirs, request, dim, o.concurrency, o.seconds, peer.pid());
    json stats = peer.Command("stats");
    b.batch.push_back(stats.value("forwards", 0) > 0
                          ? stats.value("images", 0.0) / stats.value("forwards", 1) : 0);

    peer.Command("mode unbatched");
    Load lc = RunLoad(*theirs, request, dim, o.concurrency, o.seconds, peer.pid());
    stats = peer.Command("stats");
    c.batch.push_back(stats.value("forwards", 0) > 0
                          ? stats.value("images", 0.0) / stats.value("forwards", 1) : 0);
    peer.Command("mode batched");

    const double d_cpu = embedserve::testing::ProcessCpuSeconds(peer.pid());
    const auto d_start = Clock::now();
    const json rd = peer.Command(absl::StrCat("inprocess ", o.image_path, " ", best_batch, " ", o.seconds));
    const double d_wall = Seconds(d_start);
    const double d_rate = rd.at("rate").get<double>();
    d.rates.push_back(d_rate);
    d.target_cores.push_back((embedserve::testing::ProcessCpuSeconds(peer.pid()) - d_cpu) / d_wall);
    d.batch.push_back(best_batch);

    const std::vector<std::pair<System*, const Load*>> phases = {{&a, &la}, {&b, &lb}, {&c, &lc}};
    for (const auto& [system, load] : phases) {
      system->rates.push_back(load->rate);
      system->latency_ms.insert(system->latency_ms.end(), load->latency_ms.begin(), load->latency_ms.end());
      system->target_cores.push_back(load->target_cores);
      system->generator_cores.push_back(load->generator_cores);
      system->errors += load->errors;
      if (!load->first_error.empty()) std::printf("  %s error: %s\n", system->name, load->first_error.c_str());
    }
    ratio_b.push_back(la.rate / lb.rate);
    ratio_c.push_back(la.rate / lc.rate);
    ratio_d.push_back(la.rate / d_rate);
    std::printf("round %d: A embedserve %.1f | B peer batched %.1f | C peer unbatched %.1f | "
                "D in-process batch %d %.1f images/s; A/B %.2f A/C %.2f A/D %.2f; load %s\n",
                round, la.rate, lb.rate, lc.rate, best_batch, d_rate, ratio_b.back(),
                ratio_c.back(), ratio_d.back(), LoadAverage().c_str());
    std::fflush(stdout);
  }
  server.StopWith(SIGTERM);

  std::printf("medians over %d rounds (%d closed-loop callers, one %s per call, %.0f s per phase):\n",
              o.rounds, o.concurrency, fs::path(o.image_path).filename().c_str(), o.seconds);
  for (const System* s : {&a, &b, &c}) {
    std::printf("  %-15s %7.1f images/s  p50 %7.1f ms  p99 %7.1f ms  (%zu calls, %ld errors)  "
                "mean batch %.1f  cores: it %.2f, this generator %.2f\n",
                s->name, Median(s->rates), Percentile(s->latency_ms, 0.5),
                Percentile(s->latency_ms, 0.99), s->latency_ms.size(), s->errors, Median(s->batch),
                Median(s->target_cores), Median(s->generator_cores));
    ok = ok && s->errors == 0;
  }
  std::printf("  %-15s %7.1f images/s  (batch %d, no gRPC, no latency to speak of)  cores: %.2f\n",
              d.name, Median(d.rates), best_batch, Median(d.target_cores));
  std::printf("RATIO [%s] embedserve / peer batched %.2f, / peer unbatched %.2f, / in-process %.2f "
              "(medians of the per-round ratios)%s\n",
              regime.c_str(), Median(ratio_b), Median(ratio_c), Median(ratio_d),
              o.quick ? " [--quick: not a measurement]" : "");
  std::printf("load average at end (1/5/15 min): %s\n", LoadAverage().c_str());
  return ok;
}

int Run(int argc, char** argv) {
  CLI::App app{"embedserve vs a Python gRPC peer over the same proto and graph, and the in-process loop"};
  Options o;
  std::string regime = "both";
  o.image_path = std::string(EMBEDSERVE_SOURCE_DIR) + "/tests/data/openclip-reference/images/photo_800x600.jpg";
  app.add_option("--regime", regime, "compute (ViT-B-32), preprocess (a one-layer 64-wide tower) or both")
      ->check(CLI::IsMember({"compute", "preprocess", "both"}));
  app.add_option("--seconds", o.seconds, "Length of each load phase")->check(CLI::Range(0.5, 3600.0));
  app.add_option("--rounds", o.rounds, "Rounds of the four phases A B C D")->check(CLI::Range(1, 100));
  app.add_option("--concurrency", o.concurrency, "Closed-loop callers (and the peer's gRPC threads)")
      ->check(CLI::Range(1, 1024));
  app.add_flag("--quick", o.quick, "The small tower in both regimes, 2 s phases, one round: a smoke test");
  app.add_option("--image", o.image_path, "The image every call sends");
  app.add_option("--python", o.python, "Python with torch, grpcio, numpy and PIL");
  app.add_option("--peer-torch-threads", o.peer_torch_threads, "torch.set_num_threads in the peer");
  app.add_option("--peer-max-batch", o.peer_max_batch, "The peer batcher's most images per forward");
  app.add_option("--peer-max-wait-ms", o.peer_max_wait_ms, "The peer batcher's wait after a batch's first call");
  app.add_option("--min-cosine", o.min_cosine, "Least accepted cosine of embedserve's and the peer's outputs");
  app.add_option("--server-arg", o.server_args, "Extra embedserve flag (repeatable)");
  CLI11_PARSE(app, argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows when piped to a file
  if (o.quick) {
    if (app.count("--seconds") == 0) o.seconds = 2;
    if (app.count("--rounds") == 0) o.rounds = 1;
  }
  std::printf("CPU: %s, %u cores; load average (1/5/15 min): %s\n", CpuModel().c_str(),
              std::max(1u, std::thread::hardware_concurrency()), LoadAverage().c_str());
  bool ok = true;
  for (const std::string& r : {std::string("compute"), std::string("preprocess")}) {
    if (regime == r || regime == "both") ok = RunRegime(r, o) && ok;
  }
  std::printf("\ncorrectness: %s\n", ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {  // unwinds: the servers are stopped, the temp dirs removed
    std::fprintf(stderr, "peer_bench: %s\n", e.what());
    return 1;
  }
}
