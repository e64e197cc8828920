// Soak: runs the real server on the demo model for a long time at full concurrency with a
// mix of valid and invalid calls, and checks that it stays correct, alive and flat in
// memory. One command:
//
//   soak_bench [--seconds 600] [--warmup-seconds 60] [--concurrency 32]
//              [--model-dir DIR] [--hostile] [--server-arg ARG...]
//
// Valid calls (Embed of 1..4 texts and images, some texts over the context length and
// truncated) are spot-checked against single-call answers computed before the load
// (a wrong answer: any vector element off by more than 1e-4). Invalid calls: corrupt
// images, over-long texts with truncation off, an unknown model, precomputed embeddings
// of the wrong dimension (Rerank), calls cancelled mid-flight and calls with a 1 us
// deadline; each must get its expected status code. The server's RSS is sampled from
// /proc/<pid>/status; the growth between the end of the warm-up and the end is printed.
// At the end the server must still be healthy and exit 0 on SIGTERM.
//
// --hostile adds what an attacker or a buggy fleet sends (issue 19): every call names a new
// 100 KB model, or a 9,000-character one, or comes without the bearer token the server now
// requires (--auth-token-file; the other calls carry it). The /metrics page (--metrics-listen)
// is fetched at the end of the warm-up and at the end: its size, like RSS, must stay bounded
// (at most 1.5x + 64 KiB of its warm-up size), or the run fails.
// Exit status: 0 if all of that held, 1 otherwise.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "benchmarks/bench_util.h"
#include "client/embedserve_client.h"
#include "tests/server/server_process.h"

namespace {

using embedserve::bench::ReadFile;
using embedserve::bench::Percentile;

using embedserve::client::Client;
using Clock = std::chrono::steady_clock;
namespace v1 = embedserve::v1;

// VmRSS of `pid` in KiB, or -1 if the process is gone.
long RssKib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// True while `pid` exists and is not a zombie (it is our child: a crash leaves a zombie).
bool Alive(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  if (!std::getline(in, content)) return false;
  const size_t paren = content.rfind(')');
  if (paren == std::string::npos || paren + 2 >= content.size()) return false;
  const char state = content[paren + 2];
  return state != 'Z' && state != 'X';
}

enum Kind {
  kValid,
  kCorruptImage,
  kLongTextNoTruncation,
  kUnknownModel,
  kWrongDims,
  kCancelled,
  kTinyDeadline,
  kUniqueModelName,
  kOversizeName,
  kUnauthenticated,
  kKinds
};
// The kinds only --hostile sends.
bool Hostile(int kind) { return kind >= kUniqueModelName; }
const char* const kKindNames[kKinds] = {"valid embed (spot-checked)", "corrupt image",
                                        "long text, truncation off", "unknown model",
                                        "rerank, wrong embedding dims", "cancelled mid-call",
                                        "1 us deadline", "hostile: unique 100 KB model name",
                                        "hostile: 9000-char model name",
                                        "hostile: no token, unique name"};

struct Stats {
  std::atomic<long> sent{0};
  std::atomic<long> expected{0};
  std::atomic<long> unexpected{0};
};

// One reference input: what a caller sends and the single-call answer.
struct Reference {
  v1::Input input;
  std::string name;
  std::vector<float> vector;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"embedserve soak: long mixed load, correctness, crashes and RSS growth"};
  double seconds = 600, warmup_seconds = 60, sample_s = 1;
  int concurrency = 32;
  std::string model_dir = std::string(EMBEDSERVE_SOURCE_DIR) + "/tests/data/openclip-reference/model";
  std::vector<std::string> server_args;
  bool hostile = false;
  app.add_flag("--hostile", hostile, "Add unique and oversize model names and unauthenticated calls")
      ->capture_default_str();
  app.add_option("--seconds", seconds, "Duration of the load, warm-up included")->capture_default_str();
  app.add_option("--warmup-seconds", warmup_seconds, "RSS growth is measured from the end of this")
      ->capture_default_str();
  app.add_option("--concurrency", concurrency, "Concurrent callers")->capture_default_str();
  app.add_option("--model-dir", model_dir, "Model directory served as 'demo'")->capture_default_str();
  app.add_option("--rss-sample-seconds", sample_s, "RSS sampling period")->capture_default_str();
  app.add_option("--server-arg", server_args, "Extra server flag (repeatable)");
  CLI11_PARSE(app, argc, argv);
  if (warmup_seconds >= seconds) warmup_seconds = seconds / 5;

  std::vector<std::string> args = {"--model", "demo=" + model_dir, "--no-access-log"};
  const std::string token = "soak-token";
  const std::string token_file = "/tmp/embedserve-soak-token-" + std::to_string(getpid());
  const int metrics_port = embedserve::testing::FreeTcpPort();
  if (hostile) {
    std::ofstream(token_file) << token << "\n";
    args.insert(args.end(), {"--auth-token-file", token_file, "--metrics-listen",
                             "127.0.0.1:" + std::to_string(metrics_port)});
  }
  args.insert(args.end(), server_args.begin(), server_args.end());
  std::printf("soak: starting server (model %s), %d callers, %.0f s (warm-up %.0f s)\n",
              model_dir.c_str(), concurrency, seconds, warmup_seconds);
  embedserve::testing::ServerProcess server(args, 300);
  if (!server.healthy()) {
    std::fprintf(stderr, "soak: the server did not become healthy\n");
    return 1;
  }
  const pid_t pid = server.pid();
  const std::string target = server.unix_target();
  embedserve::client::ClientOptions client_options;
  if (hostile) client_options.bearer_token = token;

  // Reference answers, one input per call, before any load.
  const std::string data = std::string(EMBEDSERVE_SOURCE_DIR) + "/tests/data/openclip-reference/images/";
  std::vector<Reference> refs;
  for (const char* text : {"a photo of a dog", "a diagram of a transformer",
                           "two cats sleeping on a red sofa", "", "x"}) {
    Reference r;
    r.input.set_text(text);
    r.name = std::string("text '") + text + "'";
    refs.push_back(r);
  }
  std::string long_text;
  for (int i = 0; i < 300; ++i) long_text += "word" + std::to_string(i) + " ";
  {
    Reference r;
    r.input.set_text(long_text);  // over the context length: truncated by default
    r.name = "long text (truncated)";
    refs.push_back(r);
  }
  for (const char* image : {"photo_800x600.jpg", "small_50x40.png", "webp_512x384.webp",
                            "gray_640x480.png", "rgba_opaque_320x240.png"}) {
    Reference r;
    r.input.set_image(ReadFile(data + image));
    r.name = image;
    if (r.input.image().empty()) {
      std::fprintf(stderr, "soak: cannot read %s%s\n", data.c_str(), image);
      return 1;
    }
    refs.push_back(r);
  }
  {
    auto client = Client::Create(target, client_options);
    for (Reference& r : refs) {
      v1::EmbedRequest request;
      request.set_model("demo");
      *request.add_inputs() = r.input;
      auto response = client->Embed(request);
      if (!response.ok() || response->embeddings_size() != 1) {
        std::fprintf(stderr, "soak: reference call for %s failed: %s\n", r.name.c_str(),
                     response.status().ToString().c_str());
        return 1;
      }
      const auto& values = response->embeddings(0).vector().values();
      r.vector.assign(values.begin(), values.end());
    }
  }
  const int dim = static_cast<int>(refs[0].vector.size());
  std::string corrupt = refs.back().input.image();  // a PNG with its middle overwritten
  for (size_t i = corrupt.size() / 3; i < corrupt.size() * 2 / 3; ++i) corrupt[i] = static_cast<char>(i * 131);
  const std::string garbage = "\xff\xd8\xff\xe0 this is not really a jpeg";

  Stats stats[kKinds];
  std::atomic<long> wrong_answers{0}, checked_vectors{0}, cancelled_in_flight{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::map<std::string, long> unexpected_statuses;  // "kind: CODE message" -> count
  std::vector<std::vector<double>> valid_ms(concurrency);
  double max_diff = 0;

  auto note_unexpected = [&](Kind kind, const grpc::Status& s) {
    stats[kind].unexpected++;
    std::lock_guard<std::mutex> lock(mu);
    unexpected_statuses[std::string(kKindNames[kind]) + ": code " + std::to_string(s.error_code()) +
                        " " + s.error_message().substr(0, 160)]++;
  };
  auto check_answer = [&](const v1::EmbedResponse& response, const std::vector<int>& picks) {
    bool ok = response.embeddings_size() == static_cast<int>(picks.size());
    double worst = 0;
    for (size_t i = 0; ok && i < picks.size(); ++i) {
      const auto& values = response.embeddings(static_cast<int>(i)).vector().values();
      const std::vector<float>& want = refs[picks[i]].vector;
      if (values.size() != static_cast<int>(want.size())) {
        ok = false;
        break;
      }
      for (int k = 0; k < values.size(); ++k) {
        worst = std::max(worst, static_cast<double>(std::fabs(values[k] - want[k])));
      }
      checked_vectors++;
    }
    if (worst > 1e-4) ok = false;
    std::lock_guard<std::mutex> lock(mu);
    max_diff = std::max(max_diff, worst);
    if (!ok) wrong_answers++;
    return ok;
  };

  // A few channels shared by the callers (as a pool of workers would).
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < std::max(1, concurrency / 8); ++i) clients.push_back(Client::Create(target));

  auto caller = [&](int c) {
    std::mt19937 rng(1234 + c);
    Client& client = *clients[c % clients.size()];
    v1::EmbedService::Stub& stub = client.embed_stub();
    while (!stop.load(std::memory_order_relaxed)) {
      // About 60% valid calls, the rest spread over the invalid kinds.
      const int roll = static_cast<int>(rng() % 100);
      const int invalid_kinds = hostile ? kKinds - 1 : kUniqueModelName - 1;
      const Kind kind = roll < 60 ? kValid : static_cast<Kind>(1 + (roll - 60) % invalid_kinds);
      stats[kind].sent++;
      v1::EmbedRequest request;
      request.set_model("demo");
      std::vector<int> picks;
      const int n = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < n; ++i) picks.push_back(static_cast<int>(rng() % refs.size()));
      for (int p : picks) *request.add_inputs() = refs[p].input;

      grpc::ClientContext context;
      if (hostile && kind != kUnauthenticated) context.AddMetadata("authorization", "Bearer " + token);
      v1::EmbedResponse response;
      grpc::Status status;
      switch (kind) {
        case kValid: {
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
          const auto t0 = Clock::now();
          status = stub.Embed(&context, request, &response);
          if (status.ok()) {
            valid_ms[c].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
            if (check_answer(response, picks)) stats[kind].expected++;
            else note_unexpected(kind, grpc::Status(grpc::StatusCode::DATA_LOSS, "wrong answer"));
          } else {
            note_unexpected(kind, status);
          }
          break;
        }
        case kCorruptImage: {
          request.add_inputs()->set_image(rng() % 2 ? corrupt : garbage);
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
          status = stub.Embed(&context, request, &response);
          if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) stats[kind].expected++;
          else note_unexpected(kind, status);
          break;
        }
        case kLongTextNoTruncation: {
          request.add_inputs()->set_text(long_text);
          request.mutable_options()->set_truncation(v1::TRUNCATION_ERROR);
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
          status = stub.Embed(&context, request, &response);
          if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) stats[kind].expected++;
          else note_unexpected(kind, status);
          break;
        }
        case kUnknownModel: {
          request.set_model("no-such-model");
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
          status = stub.Embed(&context, request, &response);
          if (status.error_code() == grpc::StatusCode::NOT_FOUND) stats[kind].expected++;
          else note_unexpected(kind, status);
          break;
        }
        case kWrongDims: {
          v1::RerankRequest rerank;
          rerank.set_model("demo");
          rerank.mutable_query()->set_text("a photo of a dog");
          for (int i = 0; i < 3; ++i) {
            auto* tensor = rerank.add_candidates()->mutable_embedding();
            const int d = i == 1 ? dim + 1 + static_cast<int>(rng() % 7) : dim;
            tensor->add_shape(d);
            for (int k = 0; k < d; ++k) tensor->add_values(0.1f * static_cast<float>(k % 5));
          }
          v1::RerankResponse rerank_response;
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
          status = stub.Rerank(&context, rerank, &rerank_response);
          if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) stats[kind].expected++;
          else note_unexpected(kind, status);
          break;
        }
        case kCancelled: {
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
          std::mutex done_mu;
          std::condition_variable done_cv;
          bool done = false;
          stub.async()->Embed(&context, &request, &response, [&](grpc::Status s) {
            std::lock_guard<std::mutex> lock(done_mu);
            status = std::move(s);
            done = true;
            done_cv.notify_all();
          });
          std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
          context.TryCancel();
          std::unique_lock<std::mutex> lock(done_mu);
          done_cv.wait(lock, [&] { return done; });
          if (status.error_code() == grpc::StatusCode::CANCELLED) {
            stats[kind].expected++;
            cancelled_in_flight++;
          } else if (status.ok()) {  // finished before the cancel: must still be right
            if (check_answer(response, picks)) stats[kind].expected++;
            else note_unexpected(kind, grpc::Status(grpc::StatusCode::DATA_LOSS, "wrong answer"));
          } else {
            note_unexpected(kind, status);
          }
          break;
        }
        case kTinyDeadline: {
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::microseconds(1));
          status = stub.Embed(&context, request, &response);
          if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) stats[kind].expected++;
          else note_unexpected(kind, status);
          break;
        }
        case kUniqueModelName:
        case kOversizeName:
        case kUnauthenticated: {
          // A name no call used before: 100 KB (or 9,000 characters) of random letters.
          std::string name(kind == kOversizeName ? 9000 : 100 * 1024, 'a');
          for (size_t i = 0; i < 64; ++i) name[rng() % name.size()] = static_cast<char>('a' + rng() % 26);
          name += std::to_string(c) + "-" + std::to_string(stats[kind].sent.load());
          request.set_model(name);
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
          status = stub.Embed(&context, request, &response);
          const grpc::StatusCode want = kind == kUnauthenticated
                                            ? grpc::StatusCode::UNAUTHENTICATED
                                            : grpc::StatusCode::NOT_FOUND;
          // The name is never echoed whole: the status must fit in the metadata limit.
          if (status.error_code() == want && status.error_message().size() < 2048) {
            stats[kind].expected++;
          } else {
            note_unexpected(kind, status);
          }
          break;
        }
        default:
          break;
      }
    }
  };
  auto metrics_bytes = [&]() -> long {
    if (!hostile) return -1;
    return static_cast<long>(embedserve::testing::HttpGetLocal(metrics_port, "/metrics").size());
  };

  // RSS sampler and crash watch.
  std::vector<std::pair<double, long>> rss;  // (seconds since start, KiB)
  std::atomic<bool> crashed{false};
  const auto start = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  long metrics_warm = -1;
  std::thread sampler([&] {
    double next_print = 60;
    while (!stop.load()) {
      const long kib = RssKib(pid);
      if (kib < 0 || !Alive(pid)) {
        crashed = true;
        stop = true;
        break;
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        rss.emplace_back(elapsed(), kib);
      }
      if (metrics_warm < 0 && elapsed() >= warmup_seconds) metrics_warm = metrics_bytes();
      if (elapsed() >= next_print) {
        long total = 0;
        for (const Stats& s : stats) total += s.sent.load();
        std::printf("soak: t=%4.0f s  RSS %.1f MiB  calls %ld  wrong %ld\n", elapsed(),
                    kib / 1024.0, total, wrong_answers.load());
        std::fflush(stdout);
        next_print += 60;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(sample_s * 1000)));
    }
  });
  std::vector<std::thread> callers;
  for (int c = 0; c < concurrency; ++c) callers.emplace_back(caller, c);
  while (!stop.load() && elapsed() < seconds) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const long rss_end_kib = RssKib(pid);  // at the end of the load, before it drains
  const long metrics_end = metrics_bytes();
  stop = true;
  for (auto& t : callers) t.join();
  sampler.join();
  const double duration = elapsed();

  // The end: still healthy, then a clean exit on SIGTERM.
  bool healthy_at_end = false;
  if (!crashed) {
    auto health = Client::Create(target, {absl::Seconds(5)})->Health("");
    healthy_at_end = health.ok() && *health == grpc::health::v1::HealthCheckResponse::SERVING;
  }
  const int exit_code = crashed ? -1 : server.StopWith(SIGTERM, 60);
  if (hostile) std::remove(token_file.c_str());

  long rss_warm = -1, rss_peak = 0;
  for (const auto& [t, kib] : rss) {
    if (t <= warmup_seconds || rss_warm < 0) rss_warm = kib;
    rss_peak = std::max(rss_peak, kib);
  }
  const long rss_last = rss_end_kib > 0 ? rss_end_kib : (rss.empty() ? -1 : rss.back().second);
  const double growth = rss_warm > 0 ? 100.0 * (rss_last - rss_warm) / rss_warm : 0;

  std::vector<double> all_ms;
  for (auto& v : valid_ms) all_ms.insert(all_ms.end(), v.begin(), v.end());
  long total = 0, total_unexpected = 0;
  std::printf("\nsoak summary: %.0f s, %d callers, model %s (dim %d)\n", duration, concurrency,
              model_dir.c_str(), dim);
  std::printf("  %-30s %10s %10s %10s\n", "call kind", "sent", "expected", "unexpected");
  for (int k = 0; k < kKinds; ++k) {
    std::printf("  %-30s %10ld %10ld %10ld\n", kKindNames[k], stats[k].sent.load(),
                stats[k].expected.load(), stats[k].unexpected.load());
    total += stats[k].sent;
    total_unexpected += stats[k].unexpected;
  }
  std::printf("  %-30s %10ld %10ld %10ld\n", "all", total, total - total_unexpected, total_unexpected);
  for (const auto& [what, count] : unexpected_statuses) std::printf("    x%ld %s\n", count, what.c_str());
  std::printf("  cancelled calls: %ld ended CANCELLED, %ld finished (right) before the cancel\n",
              cancelled_in_flight.load(), stats[kCancelled].expected.load() - cancelled_in_flight.load());
  std::printf("  calls/s %.1f; valid latency p50 %.1f ms p99 %.1f ms\n", total / duration,
              Percentile(all_ms, 0.5), Percentile(all_ms, 0.99));
  std::printf("  wrong answers: %ld (of %ld vectors checked; max |diff| %.2g)\n",
              wrong_answers.load(), checked_vectors.load(), max_diff);
  std::printf("  crashes: %d; healthy at end: %s; exit code after SIGTERM: %d\n", crashed ? 1 : 0,
              healthy_at_end ? "yes" : "NO", exit_code);
  std::printf("  RSS: end of warm-up (%.0f s) %.1f MiB, end %.1f MiB, peak %.1f MiB, growth %+.2f%%\n",
              warmup_seconds, rss_warm / 1024.0, rss_last / 1024.0, rss_peak / 1024.0, growth);
  bool metrics_bounded = true;
  if (hostile) {
    metrics_bounded = metrics_warm > 0 && metrics_end > 0 &&
                      metrics_end <= metrics_warm * 3 / 2 + 64 * 1024;
    std::printf("  /metrics: end of warm-up %.1f KiB, end %.1f KiB (%s)\n", metrics_warm / 1024.0,
                metrics_end / 1024.0, metrics_bounded ? "bounded" : "GREW");
  }
  const bool pass = !crashed && healthy_at_end && exit_code == 0 && wrong_answers == 0 &&
                    total_unexpected == 0 && metrics_bounded;
  std::printf("soak: %s\n", pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}
