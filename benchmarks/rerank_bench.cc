// Cross-encoder reranking benchmark: the real server against the same graph in Debian's
// PyTorch in-process, side by side.
//
// Writes a random checkpoint of the full-size bge-reranker-base architecture
// (XLMRobertaForSequenceClassification, 768 x 12, 250002 vocabulary) into a temporary
// directory, tokenizes the benchmark's (query, candidate) pairs with the model's own
// PreparePair (so the server and the baseline score the same token ids), starts the server on
// it (`--model reranker=DIR`, default flags) and benchmarks/cross_encoder_torch_baseline.py
// (float32, inference_mode, FlagReranker's batching, torch.set_num_threads(cores)), then runs
// rounds alternately: A = `--concurrency` callers in a closed loop, each sending
// `--calls-per-caller` Rerank calls of one query and `--candidates` candidates; B = the
// baseline scoring the same calls in-process. Prints pairs/s of both per round, the median of
// the per-round ratios, FLOPs per pair (from the config) and GFLOP/s, the baseline process's
// sgemm ceiling, p50/p99 call latency, and checks every response (all candidates, finite
// scores, equal to the baseline's logits within --tolerance).
//
//   rerank_bench [--quick] [--query-tokens 8] [--passage-tokens 56] [--passage-jitter 8]
//                [--concurrency 16] [--candidates 20] [--calls-per-caller 1] [--rounds 4]
//                [--baseline-batch 0] [--baseline-threads 0] [--server-arg ARG...]
//
// Exit status: 0 if every call succeeded and matched the baseline; 1 otherwise. The 1.0x
// bar is printed, not enforced.
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
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
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
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/embedserve_client.h"
#include "server/models/cross_encoder/cross_encoder_config.h"
#include "server/models/cross_encoder/cross_encoder_model.h"
#include "server/models/cross_encoder/cross_encoder_random_checkpoint.h"
#include "tests/server/server_process.h"

namespace {

using embedserve::bench::JsonLinesChild;
using embedserve::bench::Seconds;
using embedserve::bench::Percentile;
using embedserve::bench::TempDir;
using embedserve::bench::Median;

using embedserve::client::Client;
using nlohmann::json;
namespace ce = embedserve::models::cross_encoder;
namespace v1 = embedserve::v1;

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



// The server's pair batch sizes from its histogram, as "<=N: count" for non-empty buckets.
std::string BatchSizeDistribution(int port) {
  const std::string page = embedserve::testing::HttpGetLocal(port, "/metrics");
  std::string out;
  long previous = 0;
  const std::string prefix = "embedserve_batch_size_bucket{model=\"reranker\",modality=\"pair\",le=\"";
  for (absl::string_view line : absl::StrSplit(page, '\n')) {
    if (!absl::StartsWith(line, prefix)) continue;
    const size_t end = line.find('"', prefix.size());
    const std::string le(line.substr(prefix.size(), end - prefix.size()));
    const long cumulative = std::stol(std::string(line.substr(line.rfind(' ') + 1)));
    if (cumulative > previous) {
      absl::StrAppend(&out, out.empty() ? "" : ", ", "<=", le, ": ", cumulative - previous);
    }
    previous = cumulative;
  }
  return out.empty() ? "(none)" : out;
}

// Multiply-adds x 2 of one pair of `tokens` tokens (no padding): the encoder's linear layers
// (2 x tokens x weights per token), attention's QK^T and AV (2 x 2 x tokens^2 x hidden per
// layer) and the head on token 0. Embedding lookups, LayerNorm, GELU and softmax are left out
// (elementwise, no matmul).
double PairFlops(const ce::CrossEncoderConfig& c, int tokens) {
  const double h = c.hidden_size, inter = c.intermediate_size, l = tokens;
  const double per_token_weights = 4 * h * h + 2 * h * inter;
  return c.num_hidden_layers * (2 * l * per_token_weights + 4 * l * l * h) +
         2 * (h * h + h * c.num_labels);
}

struct Call {
  std::string query;
  std::vector<std::string> candidates;
  std::vector<embedserve::models::TextInput> pairs;  // as the server's PreparePair makes them
};

}  // namespace

int Run(int argc, char** argv) {
  CLI::App app{"embedserve cross-encoder Rerank benchmark: server vs in-process PyTorch"};
  bool quick = false;
  int query_tokens = 8, passage_tokens = 56, passage_jitter = 8;
  int concurrency = 16, candidates = 20, calls_per_caller = 1, rounds = 4;
  int baseline_batch = 0, baseline_threads = 0;
  uint64_t seed = 1;
  double tolerance = 1e-3;
  std::string python = "/usr/bin/python3";
  std::string baseline_script = std::string(EMBEDSERVE_SOURCE_DIR) +
                                "/benchmarks/cross_encoder_torch_baseline.py";
  std::vector<std::string> server_args;
  app.add_flag("--quick", quick, "Tiny config (hidden 32, 2 layers): a smoke test of seconds; its ratio means nothing");
  app.add_option("--query-tokens", query_tokens, "Query length in tokens (without special tokens)")->check(CLI::Range(1, 300));
  app.add_option("--passage-tokens", passage_tokens, "Mean candidate length in tokens (without special tokens)")->check(CLI::Range(1, 500));
  app.add_option("--passage-jitter", passage_jitter, "Candidate lengths are uniform in passage-tokens +- this")->check(CLI::Range(0, 500));
  app.add_option("--concurrency", concurrency, "Concurrent callers")->check(CLI::Range(1, 1024));
  app.add_option("--candidates", candidates, "Candidates per Rerank call")->check(CLI::Range(1, 1024));
  app.add_option("--calls-per-caller", calls_per_caller, "Rerank calls each caller makes per round (the baseline scores the same calls)")->check(CLI::Range(1, 1000));
  app.add_option("--rounds", rounds, "Rounds, each the server (A) then the baseline (B)")->check(CLI::Range(1, 100));
  app.add_option("--baseline-batch", baseline_batch, "Baseline batching: 0 = each call's candidates are one compute_score (one batch); N = all pairs of a round in one compute_score with batch_size N");
  app.add_option("--baseline-threads", baseline_threads, "torch.set_num_threads in the baseline (0: the number of cores)");
  app.add_option("--seed", seed, "Seed of the weights and the texts");
  app.add_option("--tolerance", tolerance, "Largest accepted |server score - baseline logit|");
  app.add_option("--python", python, "Python with torch and numpy");
  app.add_option("--server-arg", server_args, "Extra server flag (repeatable, e.g. --server-arg=--max-batch-size=64)");
  CLI11_PARSE(app, argc, argv);
  if (passage_jitter >= passage_tokens) passage_jitter = passage_tokens - 1;

  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (baseline_threads <= 0) baseline_threads = cores;
  const ce::CrossEncoderConfig config = quick ? ce::TinyXlmRobertaConfig() : ce::BgeRerankerBaseConfig();
  std::printf("CPU: %s, %d cores\n", CpuModel().c_str(), cores);
  std::printf("model: %s, random weights: hidden %d, layers %d, heads %d, intermediate %d, vocabulary %d%s\n",
              quick ? "tiny XLM-R (--quick)" : "bge-reranker-base architecture",
              config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
              config.intermediate_size, config.vocab_size, quick ? " (--quick: the ratio means nothing)" : "");

  // 1. The checkpoint.
  TempDir temp;
  {
    char tmpl[] = "/tmp/rerank-bench-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      std::perror("mkdtemp");
      return 1;
    }
    temp.path = tmpl;
  }
  const std::string model_dir = temp.path + "/model";
  auto t0 = Clock::now();
  if (absl::Status s = ce::WriteRandomCrossEncoder(config, model_dir, "F32", seed); !s.ok()) {
    std::fprintf(stderr, "writing the checkpoint failed: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("checkpoint written (F32) in %.1f s: %s\n", Seconds(t0), model_dir.c_str());

  // 2. The calls, tokenized by the model itself (the server's PreparePair: same template,
  // truncation and ids), then the model is dropped.
  static const char* kWords[] = {"the", "what", "is", "a", "panda", "bear", "china", "giant",
                                 "species", "of", "and", "to", "in", "capital", "france", "paris",
                                 "city", "population", "people", "live", "there", "how", "many"};
  std::mt19937_64 rng(seed);
  auto words = [&](int n) {
    std::vector<std::string> w;
    for (int i = 0; i < n; ++i) w.push_back(kWords[rng() % std::size(kWords)]);
    return absl::StrJoin(w, " ");
  };
  const int total_calls = concurrency * calls_per_caller;
  std::vector<Call> calls(total_calls);
  std::string serving_dtype_in_process;
  t0 = Clock::now();
  {
    auto model = ce::LoadCrossEncoder(model_dir, embedserve::models::RuntimeOptions{});
    if (!model.ok()) {
      std::fprintf(stderr, "in-process load failed: %s\n", std::string(model.status().message()).c_str());
      return 1;
    }
    std::uniform_int_distribution<int> length(passage_tokens - passage_jitter, passage_tokens + passage_jitter);
    for (Call& call : calls) {
      call.query = words(query_tokens);
      for (int j = 0; j < candidates; ++j) {
        call.candidates.push_back(words(length(rng)));
        auto pair = (*model)->PreparePair(call.query, call.candidates.back(), true);
        if (!pair.ok()) {
          std::fprintf(stderr, "PreparePair failed: %s\n", std::string(pair.status().message()).c_str());
          return 1;
        }
        call.pairs.push_back(std::move(*pair));
      }
    }
  }
  std::vector<double> pair_lengths;
  double round_flops = 0;
  long round_tokens = 0;
  std::vector<double> query_lengths, candidate_lengths;
  for (const Call& call : calls) {
    for (const auto& pair : call.pairs) {
      const int n = static_cast<int>(pair.token_ids.size());
      pair_lengths.push_back(n);
      round_flops += PairFlops(config, n);
      round_tokens += n;
      const int q = pair.second_segment_start - 2;  // <s> q </s> | </s> p </s>
      query_lengths.push_back(q);
      candidate_lengths.push_back(n - q - 4);
    }
  }
  const int round_pairs = total_calls * candidates;
  const double flops_per_pair = round_flops / round_pairs;
  std::printf("pairs tokenized in-process (LoadCrossEncoder + PreparePair) in %.1f s\n", Seconds(t0));
  std::printf("sequence lengths (tokens, from the ids): query %.0f-%.0f, candidates %.0f-%.0f "
              "(flags: --query-tokens %d --passage-tokens %d --passage-jitter %d); pairs with the 4 "
              "special tokens: min %.0f, mean %.1f, max %.0f\n",
              Percentile(query_lengths, 0), Percentile(query_lengths, 1), Percentile(candidate_lengths, 0),
              Percentile(candidate_lengths, 1), query_tokens, passage_tokens, passage_jitter,
              Percentile(pair_lengths, 0), static_cast<double>(round_tokens) / round_pairs,
              Percentile(pair_lengths, 1));
  const double weights_per_token = config.num_hidden_layers *
      (4.0 * config.hidden_size * config.hidden_size + 2.0 * config.hidden_size * config.intermediate_size);
  std::printf("FLOPs per pair: %.3f GFLOP (mean over the pairs; 2 x %.1fM encoder weights per token x tokens "
              "+ attention 4 x tokens^2 x hidden per layer + head; no padding counted)\n",
              flops_per_pair / 1e9, weights_per_token / 1e6);
  std::printf("each round: %d callers x %d call(s) x %d candidates = %d pairs, %ld tokens\n", concurrency,
              calls_per_caller, candidates, round_pairs, round_tokens);

  // 3. The baseline (loads in the background) and the server.
  const std::string pairs_path = temp.path + "/pairs.json";
  {
    json j = {{"calls", json::array()}};
    for (const Call& call : calls) {
      json items = json::array();
      for (const auto& pair : call.pairs) {
        items.push_back({{"ids", pair.token_ids}, {"second_segment_start", pair.second_segment_start}});
      }
      j["calls"].push_back(items);
    }
    std::ofstream(pairs_path) << j.dump();
  }
  t0 = Clock::now();
  // The baseline: its stdin takes commands (warmup, ceiling, round), its stdout answers.
  JsonLinesChild baseline({python, baseline_script, "--model-dir", model_dir, "--pairs",
                           pairs_path, "--threads", std::to_string(baseline_threads), "--batch",
                           std::to_string(baseline_batch)},
                          "the PyTorch baseline");
  const int metrics_port = embedserve::testing::FreeTcpPort();
  std::vector<std::string> args = {"--model", "reranker=" + model_dir, "--metrics-listen",
                                   "127.0.0.1:" + std::to_string(metrics_port), "--no-access-log"};
  args.insert(args.end(), server_args.begin(), server_args.end());
  embedserve::testing::ServerProcess server(args, 600);
  if (!server.healthy()) {
    std::fprintf(stderr, "server did not become healthy\n");
    return 1;
  }
  const double server_ready_s = Seconds(t0);
  const json ready = baseline.Read();
  std::printf("server healthy after %.1f s; baseline loaded in %.1f s (both loading at once)\n",
              server_ready_s, ready.value("load_s", 0.0));
  embedserve::client::ClientOptions client_options;
  client_options.timeout = absl::Seconds(1800);
  auto client = Client::Create(server.unix_target(), client_options);
  auto info = client->GetModel("reranker");
  if (!info.ok()) {
    std::fprintf(stderr, "GetModel failed: %s\n", std::string(info.status().message()).c_str());
    return 1;
  }
  std::printf("server: serving dtype %s on %s (%s), default flags, unix socket\n",
              info->model().dtype().c_str(), info->model().device().c_str(),
              info->model().dtype_reason().c_str());
  std::printf("baseline: %s %s, torch %s, dtype %s, torch.set_num_threads(%d), inference_mode, "
              "FlagReranker batching: %s\n",
              python.c_str(), "benchmarks/cross_encoder_torch_baseline.py",
              ready.value("torch", std::string("?")).c_str(), ready.value("dtype", std::string("?")).c_str(),
              ready.value("threads", 0),
              baseline_batch > 0 ? absl::StrCat("all pairs of a round sorted by length, batches of ",
                                                baseline_batch).c_str()
                                 : absl::StrCat("each call's ", candidates,
                                                " candidates sorted by length, one padded batch per call").c_str());

  std::vector<v1::RerankRequest> requests(total_calls);
  for (int i = 0; i < total_calls; ++i) {
    requests[i].set_model("reranker");
    requests[i].mutable_query()->set_text(calls[i].query);
    for (const std::string& c : calls[i].candidates) requests[i].add_candidates()->set_text(c);
  }

  // 4. Warm-up, then the sgemm ceiling in the baseline's process (same OpenBLAS).
  t0 = Clock::now();
  if (auto r = client->Rerank(requests[0]); !r.ok()) {
    std::fprintf(stderr, "warm-up Rerank failed: %s\n", std::string(r.status().message()).c_str());
    return 1;
  }
  const double server_warm_s = Seconds(t0);
  const json warm = baseline.Command("warmup");
  std::printf("warm-up (one call of %d candidates): server %.2f s, baseline %.2f s\n", candidates,
              server_warm_s, warm.value("seconds", 0.0));
  const int gemm_m = static_cast<int>(std::lround(static_cast<double>(round_tokens) / round_pairs)) * candidates;
  const json ceiling = baseline.Command(absl::StrCat("ceiling ", gemm_m, " ", config.hidden_size, " ",
                                                     config.intermediate_size));
  std::printf("matmul ceiling: sgemm %d x %d x %d (one call's tokens x the FFN's first matrix) in the "
              "baseline's torch: %.1f GFLOP/s (best of %d)\n",
              gemm_m, config.hidden_size, config.intermediate_size, ceiling.value("gflops", 0.0),
              ceiling.value("reps", 0));
  std::fflush(stdout);

  // 5. Rounds A B A B ...
  bool ok = true;
  std::vector<double> server_rates, baseline_rates, ratios, latencies_ms;
  std::vector<double> server_cores, baseline_cores;
  double max_diff = 0, baseline_drift = 0;
  long failures = 0;
  std::vector<std::vector<float>> first_baseline;
  for (int round = 1; round <= rounds; ++round) {
    // A: the server.
    std::vector<std::vector<float>> scores(total_calls, std::vector<float>(candidates, NAN));
    std::vector<std::vector<double>> latency(concurrency);
    std::atomic<long> errors{0};
    std::vector<std::string> messages(concurrency);
    const double cpu_before = embedserve::testing::ProcessCpuSeconds(server.pid());
    const auto start = Clock::now();
    std::vector<std::thread> callers;
    for (int c = 0; c < concurrency; ++c) {
      callers.emplace_back([&, c] {
        for (int k = 0; k < calls_per_caller; ++k) {
          const int i = c * calls_per_caller + k;
          const auto s = Clock::now();
          auto r = client->Rerank(requests[i]);
          latency[c].push_back(Seconds(s) * 1e3);
          if (!r.ok()) {
            ++errors;
            messages[c] = std::string(r.status().message());
            continue;
          }
          if (r->scoring() != "cross_encoder" || r->results_size() != candidates) {
            ++errors;
            messages[c] = absl::StrCat("scoring ", r->scoring(), ", ", r->results_size(), " results");
            continue;
          }
          for (const auto& result : r->results()) {
            if (result.index() < 0 || result.index() >= candidates || !std::isfinite(result.score()) ||
                !std::isnan(scores[i][result.index()])) {
              ++errors;
              messages[c] = absl::StrCat("bad result: index ", result.index(), " score ", result.score());
              break;
            }
            scores[i][result.index()] = result.score();
          }
        }
      });
    }
    for (auto& t : callers) t.join();
    const double elapsed = Seconds(start);
    server_cores.push_back((embedserve::testing::ProcessCpuSeconds(server.pid()) - cpu_before) / elapsed);
    for (const auto& l : latency) latencies_ms.insert(latencies_ms.end(), l.begin(), l.end());
    for (const std::string& m : messages) {
      if (!m.empty()) std::printf("  server error: %s\n", m.c_str());
    }
    failures += errors;
    const double server_rate = round_pairs / elapsed;

    // B: the baseline on the same calls.
    const double py_cpu_before = embedserve::testing::ProcessCpuSeconds(baseline.pid());
    const auto b_start = Clock::now();
    const json b = baseline.Command("round");
    const double b_wall = Seconds(b_start);
    const double b_seconds = b.at("seconds").get<double>();
    baseline_cores.push_back((embedserve::testing::ProcessCpuSeconds(baseline.pid()) - py_cpu_before) / b_wall);
    const auto logits = b.at("logits").get<std::vector<std::vector<float>>>();
    const double baseline_rate = round_pairs / b_seconds;
    const long padded = b.at("padded_tokens").get<long>();

    double round_diff = 0;
    for (int i = 0; i < total_calls; ++i) {
      for (int j = 0; j < candidates; ++j) {
        const double d = std::fabs(static_cast<double>(scores[i][j]) - logits.at(i).at(j));
        round_diff = std::isnan(d) ? INFINITY : std::max(round_diff, d);
        if (!first_baseline.empty()) {
          baseline_drift = std::max(baseline_drift,
                                    std::fabs(static_cast<double>(first_baseline[i][j]) - logits[i][j]));
        }
      }
    }
    if (first_baseline.empty()) first_baseline = logits;
    max_diff = std::max(max_diff, round_diff);
    server_rates.push_back(server_rate);
    baseline_rates.push_back(baseline_rate);
    ratios.push_back(server_rate / baseline_rate);
    std::printf("round %d: A server %.2f pairs/s (%.1f s, %.2f cores busy) | B in-process %.2f pairs/s "
                "(%.1f s, %.2f cores busy, padding +%.1f%%) | ratio %.3f | max |server - baseline| %.2e\n",
                round, server_rate, elapsed, server_cores.back(), baseline_rate, b_seconds,
                baseline_cores.back(), 100.0 * (static_cast<double>(padded) / round_tokens - 1),
                ratios.back(), round_diff);
    std::fflush(stdout);
  }

  // 6. Summary.
  const double server_median = Median(server_rates);
  const double baseline_median = Median(baseline_rates);
  const double ratio_median = Median(ratios);
  std::printf("server batch sizes (pairs per forward): %s\n", BatchSizeDistribution(metrics_port).c_str());
  server.StopWith(SIGTERM);
  std::printf("server latency per Rerank call (%zu calls, %d concurrent): p50 %.0f ms  p99 %.0f ms  "
              "(min %.0f ms)\n",
              latencies_ms.size(), concurrency, Percentile(latencies_ms, 0.5),
              Percentile(latencies_ms, 0.99), Percentile(latencies_ms, 0));
  std::printf("checks: %ld failed calls; every response %d results with finite scores: %s; "
              "max |server score - baseline logit| %.2e (tolerance %.0e); baseline rounds differ by %.1e\n",
              failures, candidates, failures == 0 ? "yes" : "NO", max_diff, tolerance, baseline_drift);
  if (failures > 0 || !(max_diff <= tolerance)) ok = false;
  std::printf("medians over %d rounds (A B alternated):\n", rounds);
  std::printf("  server      %.2f pairs/s  %.1f GFLOP/s\n", server_median, server_median * flops_per_pair / 1e9);
  std::printf("  in-process  %.2f pairs/s  %.1f GFLOP/s\n", baseline_median, baseline_median * flops_per_pair / 1e9);
  std::printf("  matmul ceiling %.1f GFLOP/s; FLOPs per pair %.3f GFLOP\n", ceiling.value("gflops", 0.0),
              flops_per_pair / 1e9);
  std::printf("RATIO server / in-process at %d callers, median of %d per-round ratios: %.3f "
              "(bar >= 1.0: %s)%s\n",
              concurrency, rounds, ratio_median, ratio_median >= 1.0 ? "met" : "NOT met",
              quick ? " [--quick: tiny model, not a measurement]" : "");
  std::printf("correctness: %s\n", ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {  // unwinds: the server is stopped, the temp dir removed
    std::fprintf(stderr, "rerank_bench: %s\n", e.what());
    return 1;
  }
}
