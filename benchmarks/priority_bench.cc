// Priority classes (issue 17): the latency of single interactive queries while bulk callers
// saturate the same server, with and without priority classes, side by side in one run.
// One real server holds a full-size OpenCLIP (random weights); per round, three phases:
//   idle:      one interactive caller alone (one short text per call);
//   one class: the same caller beside --bulk-callers closed-loop bulk callers, every call
//              sent without a priority (everything is "normal");
//   classes:   the same, the bulk calls sent as PRIORITY_BULK and the queries as
//              PRIORITY_INTERACTIVE.
// Prints the queries' p50/p99 in each phase, the p99 ratios against idle (the bar: classes
// <= 2x), and the bulk throughput in both loaded phases (what the classes cost bulk work).
// Bulk calls carry --bulk-items texts of 40-70 tokens each (--bulk images: photos), the
// regime of a search API beside indexing workers on one model.
//
//   priority_bench [--bulk-callers 16] [--bulk-items 8] [--bulk texts|images]
//                  [--seconds 15] [--rounds 2] [--query-gap-ms 20]
//                  [--architecture ViT-B-32] [--server-arg ARG...]
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "benchmarks/bench_checkpoint.h"
#include "benchmarks/bench_util.h"
#include "client/embedserve_client.h"
#include "server/models/openclip/openclip_config.h"
#include "server/models/openclip/openclip_random_checkpoint.h"
#include "tests/server/server_process.h"

namespace {

using embedserve::bench::Percentile;
using embedserve::bench::ReadFile;

namespace v1 = embedserve::v1;
using embedserve::client::Client;
using Clock = std::chrono::steady_clock;

struct Latencies {
  std::vector<double> ms;
  long errors = 0;
  void Add(const Latencies& other) {
    ms.insert(ms.end(), other.ms.begin(), other.ms.end());
    errors += other.errors;
  }
};

struct PhaseResult {
  Latencies queries;
  long bulk_items = 0;
  long bulk_errors = 0;
  double seconds = 0;
  double BulkThroughput() const { return seconds > 0 ? bulk_items / seconds : 0; }
  void Add(const PhaseResult& other) {
    queries.Add(other.queries);
    bulk_items += other.bulk_items;
    bulk_errors += other.bulk_errors;
    seconds += other.seconds;
  }
};

// One interactive caller (a query, then --query-gap-ms of think time, and so on) beside
// `bulk_callers` closed-loop bulk callers, for `seconds`.
PhaseResult RunPhase(Client& client, const v1::EmbedRequest& query, const v1::EmbedRequest& bulk,
                     int bulk_callers, int bulk_items, double seconds, double query_gap_ms) {
  std::atomic<bool> stop{false};
  std::atomic<long> items{0}, errors{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < bulk_callers; ++i) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        if (client.Embed(bulk).ok()) {
          items += bulk_items;
        } else {
          ++errors;
        }
      }
    });
  }
  // Let the bulk load fill the server before the first query is timed.
  if (bulk_callers > 0) std::this_thread::sleep_for(std::chrono::seconds(1));
  PhaseResult result;
  const long items_before = items.load();
  const auto start = Clock::now();
  const auto end = start + std::chrono::milliseconds(static_cast<int>(seconds * 1000));
  while (Clock::now() < end) {
    const auto t0 = Clock::now();
    auto r = client.Embed(query);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (r.ok()) {
      result.queries.ms.push_back(ms);
    } else {
      ++result.queries.errors;
    }
    std::this_thread::sleep_for(
        std::chrono::microseconds(static_cast<int64_t>(query_gap_ms * 1000)));
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  result.bulk_items = items.load() - items_before;
  stop = true;
  for (auto& t : threads) t.join();
  result.bulk_errors = errors.load();
  return result;
}

void PrintPhase(const char* name, const PhaseResult& r) {
  std::printf("  %-10s queries: %5zu  p50 %7.1f ms  p99 %7.1f ms  errors %ld | bulk %7.1f "
              "items/s  errors %ld\n",
              name, r.queries.ms.size(), Percentile(r.queries.ms, 0.5),
              Percentile(r.queries.ms, 0.99), r.queries.errors, r.BulkThroughput(),
              r.bulk_errors);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"embedserve priority classes: interactive queries beside bulk load"};
  int bulk_callers = 16, bulk_items = 8, rounds = 2;
  double seconds = 15, query_gap_ms = 20;
  std::string bulk_kind = "texts";
  std::string architecture = "ViT-B-32";
  std::vector<std::string> server_args;
  app.add_option("--bulk-callers", bulk_callers, "Closed-loop bulk callers");
  app.add_option("--bulk-items", bulk_items, "Inputs per bulk call");
  app.add_option("--bulk", bulk_kind, "What bulk calls embed")
      ->check(CLI::IsMember({"texts", "images"}));
  app.add_option("--seconds", seconds, "Duration of each phase");
  app.add_option("--rounds", rounds, "Rounds of the three phases (figures pool the rounds)");
  app.add_option("--query-gap-ms", query_gap_ms, "The interactive caller's pause between queries");
  app.add_option("--architecture", architecture, "OpenCLIP architecture (random weights)");
  app.add_option("--server-arg", server_args, "Extra server flag (repeatable)");
  CLI11_PARSE(app, argc, argv);

  const std::string source = EMBEDSERVE_SOURCE_DIR;
  auto config = embedserve::models::openclip::NamedArchitecture(architecture);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 2;
  }
  const absl::StatusOr<std::string> written =
      embedserve::bench::CachedRandomCheckpoint(*config, architecture);
  if (!written.ok()) {
    std::fprintf(stderr, "%s\n", written.status().ToString().c_str());
    return 1;
  }
  const std::string& model_dir = *written;
  std::vector<std::string> args = {"--model", "m=" + model_dir, "--no-access-log"};
  args.insert(args.end(), server_args.begin(), server_args.end());
  std::printf("server: m=%s (random %s); 1 interactive caller (one text, %.0f ms between "
              "queries) beside %d bulk callers (%d %s per call); %d rounds of 3 phases x %.0f s; "
              "%u hardware threads\n",
              model_dir.c_str(), architecture.c_str(), query_gap_ms, bulk_callers, bulk_items,
              bulk_kind.c_str(), rounds, seconds, std::max(1u, std::thread::hardware_concurrency()));
  embedserve::testing::ServerProcess server(args, 600);
  if (!server.healthy()) {
    std::fprintf(stderr, "server did not become healthy\n");
    return 1;
  }
  auto client = Client::Create(server.unix_target());

  v1::EmbedRequest query;
  query.set_model("m");
  query.add_inputs()->set_text("red running shoes for a marathon");
  v1::EmbedRequest bulk;
  bulk.set_model("m");
  const std::string photo =
      ReadFile(source + "/tests/data/openclip-reference/images/photo_800x600.jpg");
  for (int i = 0; i < bulk_items; ++i) {
    if (bulk_kind == "images") {
      bulk.add_inputs()->set_image(photo);
      continue;
    }
    // Documents of 40-70 tokens, a different length each.
    std::string document = "product " + std::to_string(i) + ":";
    for (int w = 0; w < 38 + (i * 7) % 31; ++w) document += " word" + std::to_string(w % 13);
    bulk.add_inputs()->set_text(document);
  }
  v1::EmbedRequest query_interactive = query, bulk_low = bulk;
  query_interactive.mutable_options()->set_priority(v1::PRIORITY_INTERACTIVE);
  bulk_low.mutable_options()->set_priority(v1::PRIORITY_BULK);

  // Warm-up (not counted).
  RunPhase(*client, query, bulk, bulk_callers, bulk_items, 3, query_gap_ms);
  PhaseResult idle, one_class, classes;
  for (int round = 1; round <= rounds; ++round) {
    std::printf("round %d\n", round);
    PhaseResult a = RunPhase(*client, query_interactive, bulk_low, 0, bulk_items, seconds,
                             query_gap_ms);
    PrintPhase("idle", a);
    PhaseResult b = RunPhase(*client, query, bulk, bulk_callers, bulk_items, seconds, query_gap_ms);
    PrintPhase("one class", b);
    PhaseResult c = RunPhase(*client, query_interactive, bulk_low, bulk_callers, bulk_items,
                             seconds, query_gap_ms);
    PrintPhase("classes", c);
    std::fflush(stdout);
    idle.Add(a);
    one_class.Add(b);
    classes.Add(c);
  }
  server.StopWith(SIGTERM);

  std::printf("all rounds pooled\n");
  PrintPhase("idle", idle);
  PrintPhase("one class", one_class);
  PrintPhase("classes", classes);
  const double idle_p99 = Percentile(idle.queries.ms, 0.99);
  const double one_p99 = Percentile(one_class.queries.ms, 0.99);
  const double classes_p99 = Percentile(classes.queries.ms, 0.99);
  std::printf("INTERACTIVE p99 under bulk load / idle: one class %.1f / %.1f ms = %.2fx; "
              "classes %.1f / %.1f ms = %.2fx (bar: <= 2x)\n",
              one_p99, idle_p99, one_p99 / std::max(1e-9, idle_p99), classes_p99, idle_p99,
              classes_p99 / std::max(1e-9, idle_p99));
  std::printf("INTERACTIVE p50 under bulk load / idle: one class %.2fx; classes %.2fx\n",
              Percentile(one_class.queries.ms, 0.5) / std::max(1e-9, Percentile(idle.queries.ms, 0.5)),
              Percentile(classes.queries.ms, 0.5) / std::max(1e-9, Percentile(idle.queries.ms, 0.5)));
  std::printf("BULK throughput classes / one class: %.1f / %.1f items/s = %.2fx\n",
              classes.BulkThroughput(), one_class.BulkThroughput(),
              classes.BulkThroughput() / std::max(1e-9, one_class.BulkThroughput()));
  const long errors = idle.queries.errors + one_class.queries.errors + classes.queries.errors +
                      one_class.bulk_errors + classes.bulk_errors;
  return errors == 0 ? 0 : 1;
}
