// HTTP against gRPC on the same server: small texts, closed-loop callers, side by side.
//
// Starts the real server on the demo model with --http-listen, then runs rounds alternately
// (A B A B ...): A = `--concurrency` gRPC callers (the C++ client over the unix socket, or TCP
// with --tcp), each calling Embed with `--batch` short texts in a loop for `--seconds`;
// B = as many HTTP callers (cpp-httplib's client over TCP keep-alive) POSTing the same texts
// to /v1/embeddings (encoding_format float, or base64 with --base64). Every answer is checked
// (status, count, dimension). Prints texts/s of each round, the median of the per-round ratios
// HTTP/gRPC, and p50/p99 call latency for each.
//
//   http_bench [--concurrency 16] [--batch 1] [--seconds 5] [--rounds 3] [--base64] [--tcp]
//
// Exit status: 0 if every call succeeded; 1 otherwise.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "benchmarks/bench_util.h"
#include "client/embedserve_client.h"
#include "tests/server/server_process.h"

namespace {

using embedserve::bench::Percentile;
using embedserve::bench::Median;

using Clock = std::chrono::steady_clock;

struct Round {
  double texts_per_s = 0;
  std::vector<double> latencies_ms;
  int failures = 0;
};

// `call` makes one call and says whether it succeeded; run by `concurrency` threads.
template <typename MakeCaller>
Round RunRound(int concurrency, double seconds, int batch, MakeCaller make_caller) {
  std::atomic<long> calls{0};
  std::atomic<int> failures{0};
  std::vector<std::vector<double>> latencies(concurrency);
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int>(seconds * 1000));
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < concurrency; ++t) {
    threads.emplace_back([&, t] {
      auto call = make_caller();
      while (Clock::now() < deadline) {
        const auto begin = Clock::now();
        if (!call()) ++failures;
        latencies[t].push_back(
            std::chrono::duration<double, std::milli>(Clock::now() - begin).count());
        ++calls;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  Round round;
  round.texts_per_s = static_cast<double>(calls.load()) * batch / elapsed;
  round.failures = failures.load();
  for (auto& l : latencies) round.latencies_ms.insert(round.latencies_ms.end(), l.begin(), l.end());
  return round;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"HTTP /v1/embeddings against gRPC Embed on the same server, small texts"};
  int concurrency = 16, batch = 1, rounds = 3;
  double seconds = 5;
  bool base64 = false, tcp = false;
  app.add_option("--concurrency", concurrency)->capture_default_str();
  app.add_option("--batch", batch, "texts per call")->capture_default_str();
  app.add_option("--seconds", seconds, "per round and protocol")->capture_default_str();
  app.add_option("--rounds", rounds)->capture_default_str();
  app.add_flag("--base64", base64, "HTTP asks for encoding_format base64");
  app.add_flag("--tcp", tcp, "gRPC over TCP instead of the unix socket");
  CLI11_PARSE(app, argc, argv);

  const int http_port = embedserve::testing::FreeTcpPort();
  embedserve::testing::ServerProcess server(
      {"--model", std::string("demo=") + EMBEDSERVE_SOURCE_DIR + "/tests/data/openclip-reference/model",
       "--http-listen", "127.0.0.1:" + std::to_string(http_port), "--no-access-log",
       "--http-max-connections", std::to_string(std::max(concurrency, 16))});
  if (!server.healthy()) {
    std::fprintf(stderr, "http_bench: the server did not start\n");
    return 1;
  }
  std::vector<std::string> texts;
  for (int i = 0; i < batch; ++i) texts.push_back("a photo of a small dog number " + std::to_string(i));
  embedserve::v1::EmbedRequest request;
  request.set_model("demo");
  for (const auto& t : texts) request.add_inputs()->set_text(t);
  const std::string body =
      nlohmann::json{{"model", "demo"}, {"input", texts}, {"encoding_format", base64 ? "base64" : "float"}}
          .dump();
  const std::string target = tcp ? server.tcp_target() : server.unix_target();

  auto grpc_caller = [&] {
    std::shared_ptr<embedserve::client::Client> client = embedserve::client::Client::Create(target);
    return [client, &request, batch]() {
      auto response = client->Embed(request);
      return response.ok() && response->embeddings_size() == batch;
    };
  };
  auto http_caller = [&] {
    auto client = std::make_shared<httplib::Client>("127.0.0.1", http_port);
    client->set_keep_alive(true);
    client->set_tcp_nodelay(true);  // as Node, urllib3 and Go clients do
    client->set_read_timeout(60, 0);
    return [client, &body, batch]() {
      auto result = client->Post("/v1/embeddings", body, "application/json");
      if (!result || result->status != 200) return false;
      const auto parsed = nlohmann::json::parse(result->body, nullptr, false);
      return !parsed.is_discarded() && parsed["data"].size() == static_cast<size_t>(batch);
    };
  };

  // Warm-up: connections made, first batches formed.
  RunRound(concurrency, 1, batch, grpc_caller);
  RunRound(concurrency, 1, batch, http_caller);

  std::printf("http_bench: %d callers, %d text(s) per call, %.0f s per round, gRPC over %s, "
              "HTTP encoding_format %s, demo model (32-d CLIP, tiny)\n",
              concurrency, batch, seconds, tcp ? "TCP" : "unix socket", base64 ? "base64" : "float");
  std::printf("%-6s %14s %14s %8s\n", "round", "gRPC texts/s", "HTTP texts/s", "ratio");
  std::vector<double> grpc_rates, http_rates, ratios, grpc_latency, http_latency;
  int failures = 0;
  for (int r = 0; r < rounds; ++r) {
    const Round a = RunRound(concurrency, seconds, batch, grpc_caller);
    const Round b = RunRound(concurrency, seconds, batch, http_caller);
    failures += a.failures + b.failures;
    grpc_rates.push_back(a.texts_per_s);
    http_rates.push_back(b.texts_per_s);
    ratios.push_back(b.texts_per_s / a.texts_per_s);
    grpc_latency.insert(grpc_latency.end(), a.latencies_ms.begin(), a.latencies_ms.end());
    http_latency.insert(http_latency.end(), b.latencies_ms.begin(), b.latencies_ms.end());
    std::printf("%-6d %14.1f %14.1f %8.3f\n", r + 1, a.texts_per_s, b.texts_per_s, ratios.back());
  }
  std::printf("median: gRPC %.1f texts/s, HTTP %.1f texts/s, HTTP/gRPC %.3fx\n", Median(grpc_rates),
              Median(http_rates), Median(ratios));
  std::printf("latency ms: gRPC p50 %.2f p99 %.2f; HTTP p50 %.2f p99 %.2f\n",
              Percentile(grpc_latency, 0.5), Percentile(grpc_latency, 0.99),
              Percentile(http_latency, 0.5), Percentile(http_latency, 0.99));
  std::printf("failed calls: %d\n", failures);
  return failures == 0 ? 0 : 1;
}
