// The device executor's sharing of the device between lanes, on a fake clock: fake models
// whose forwards take a set amount of simulated time, and the order and sizes of the batches
// the executor gave them. No sleeps and no timing assertions.
#include <algorithm>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "server/pipeline/device_executor.h"
#include "server/pipeline/thread_pool.h"

namespace embedserve::pipeline {
namespace {

// Time that moves only when a fake forward says so.
class FakeClock {
 public:
  absl::Time Now() {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += d;
  }

 private:
  std::mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1000);
};

// One forward, as the device saw it.
struct Forward {
  std::string lane;
  int items;
  absl::Duration took;
  absl::Time started;
  std::vector<int> tags;  // each text's first token id (the priority tests tag texts)
};

// The forwards of every lane, in the order they ran.
struct DeviceLog {
  std::mutex mu;
  std::vector<Forward> forwards;
};

// A text model whose forward of N texts takes `per_forward + N x per_item` on the clock and
// is logged under `lane`.
class TimedModel : public models::Model {
 public:
  TimedModel(std::string lane, absl::Duration per_forward, absl::Duration per_item,
             FakeClock* clock, DeviceLog* log)
      : lane_(std::move(lane)), per_forward_(per_forward), per_item_(per_item), clock_(clock),
        log_(log) {
    description_.family = "timed";
    description_.accepts_text = true;
    description_.embedding_dim = 1;
  }
  const models::ModelDescription& description() const override { return description_; }
  absl::StatusOr<models::TextInput> PrepareText(absl::string_view, bool) const override {
    return models::TextInput{};
  }
  absl::StatusOr<models::ImageInput> PrepareImage(absl::string_view,
                                                  const models::ImageLimits&) const override {
    return absl::UnimplementedError("no images");
  }
  // Runs at the start of every forward with the forward's number (from 0), as if a client
  // sent something while the device was busy.
  void set_during_forward(std::function<void(int)> hook) { during_forward_ = std::move(hook); }

  absl::StatusOr<std::vector<models::Embedding>> EmbedTexts(
      absl::Span<const models::TextInput* const> texts) override {
    const int n = static_cast<int>(texts.size());
    const absl::Duration took = per_forward_ + n * per_item_;
    std::vector<int> tags;
    for (const models::TextInput* text : texts) {
      tags.push_back(text->token_ids.empty() ? -1 : text->token_ids[0]);
    }
    const absl::Time started = clock_->Now();
    if (during_forward_) during_forward_(forwards_++);
    clock_->Advance(took);
    {
      std::lock_guard<std::mutex> lock(log_->mu);
      log_->forwards.push_back({lane_, n, took, started, std::move(tags)});
    }
    return std::vector<models::Embedding>(n, models::Embedding{1, 1, {1.f}});
  }
  absl::StatusOr<std::vector<models::Embedding>> EmbedImages(
      absl::Span<const models::ImageInput* const>) override {
    return absl::UnimplementedError("no images");
  }

 private:
  std::string lane_;
  absl::Duration per_forward_, per_item_;
  FakeClock* clock_;
  DeviceLog* log_;
  models::ModelDescription description_;
  std::function<void(int)> during_forward_;
  int forwards_ = 0;
};

// A batch policy that never waits for a batch to fill.
BatchPolicy NoDelayPolicy(int max_batch_size, int queue_capacity = 1024) {
  BatchPolicy policy;
  policy.max_batch_size = max_batch_size;
  policy.max_queue_delay = absl::ZeroDuration();
  policy.queue_capacity = queue_capacity;
  return policy;
}

// Posts a device task that holds the executor until the returned promise is set, so that
// work queued meanwhile is all there at its next pick.
std::promise<void> HoldExecutor(DeviceExecutor& executor) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  REQUIRE(executor.Post([released] { released.wait(); }).ok());
  return release;
}

// A call of `n` texts of `priority`, each text tagged with the priority's number (so the
// device log shows which class each batch served).
std::shared_ptr<EmbedCall> PriorityCall(int n, Priority priority,
                                        std::function<void()> done = [] {}) {
  auto call = std::make_shared<EmbedCall>(
      std::vector<CallInput>(n, CallInput{Modality::kText, "x", "inputs[]"}), true,
      absl::InfiniteFuture(), [done](const absl::Status&, EmbedCall&) { done(); });
  call->set_priority(priority);
  for (int i = 0; i < n; ++i) call->text(i).token_ids = {static_cast<int>(priority)};
  return call;
}

constexpr int kBulkTag = static_cast<int>(Priority::kBulk);
constexpr int kNormalTag = static_cast<int>(Priority::kNormal);
constexpr int kInteractiveTag = static_cast<int>(Priority::kInteractive);

struct Lane {
  std::string name;
  absl::Duration per_forward, per_item;
  int max_batch_size;
  int items;
};

// Queues every lane's items (one call of `items` texts each) before the executor starts, so
// all lanes have work from the first pick on, then runs them to the end and returns the log.
std::vector<Forward> RunToCompletion(const std::vector<Lane>& lanes,
                                     absl::Duration time_slice = absl::Milliseconds(50)) {
  FakeClock clock;
  DeviceLog log;
  ExecutorOptions options;
  options.time_slice = time_slice;
  options.clock = [&clock] { return clock.Now(); };
  DeviceExecutor executor(options);
  std::vector<std::shared_ptr<EmbedCall>> calls;
  for (const Lane& lane : lanes) {
    const int queue = executor.AddQueue(
        std::make_shared<TimedModel>(lane.name, lane.per_forward, lane.per_item, &clock, &log),
        lane.name, Modality::kText, NoDelayPolicy(lane.max_batch_size, lane.items));
    std::vector<CallInput> inputs(lane.items, CallInput{Modality::kText, "x", "inputs[]"});
    auto call = std::make_shared<EmbedCall>(std::move(inputs), true, absl::InfiniteFuture(),
                                            [](const absl::Status&, EmbedCall&) {});
    for (int i = 0; i < lane.items; ++i) {
      REQUIRE(executor.Enqueue(queue, QueuedItem{call, i, 1, clock.Now()}).ok());
    }
    calls.push_back(std::move(call));
  }
  executor.Start();
  executor.Stop();  // runs everything queued, then joins
  for (const auto& call : calls) CHECK(call->finished());
  std::lock_guard<std::mutex> lock(log.mu);
  return log.forwards;
}

}  // namespace

TEST_CASE("the executor shares the device by forward time, not one batch per lane per turn") {
  // A cheap lane (10 ms a forward) and an expensive one (100 ms), one item a batch, both
  // with work queued throughout: 600 ms of device time each.
  const std::vector<Forward> forwards =
      RunToCompletion({{"cheap", absl::Milliseconds(10), absl::ZeroDuration(), 1, 60},
                       {"expensive", absl::Milliseconds(100), absl::ZeroDuration(), 1, 6}});
  REQUIRE(forwards.size() == 66);
  // While both lanes have work left, neither's device time runs ahead of the other's by more
  // than one forward of the expensive lane. One batch per lane per turn would let the
  // expensive lane run 90 ms further ahead every turn (200 ms vs 20 ms after two turns).
  std::map<std::string, int> left = {{"cheap", 60}, {"expensive", 6}};
  std::map<std::string, absl::Duration> used;
  for (const Forward& f : forwards) {
    if (left["cheap"] == 0 || left["expensive"] == 0) break;
    used[f.lane] += f.took;
    left[f.lane] -= f.items;
    INFO("cheap used " << absl::FormatDuration(used["cheap"]) << ", expensive used "
                       << absl::FormatDuration(used["expensive"]));
    CHECK(absl::AbsDuration(used["cheap"] - used["expensive"]) <= absl::Milliseconds(100));
  }
  // So the cheap lane ran about ten forwards per expensive one: at least 9 of its 60 before
  // the expensive lane's second forward.
  int cheap_before_second_expensive = 0, expensive_seen = 0;
  for (const Forward& f : forwards) {
    if (f.lane == "expensive" && ++expensive_seen == 2) break;
    if (f.lane == "cheap") ++cheap_before_second_expensive;
  }
  CHECK(cheap_before_second_expensive >= 9);
}

TEST_CASE("while another lane has work, a lane's batches are sized to the time slice") {
  // The expensive lane takes 100 ms per item (batches of up to 8); the cheap lane 10 ms per
  // batch of up to 4 items; the slice is 50 ms. While the cheap lane has items waiting the
  // expensive lane's batches hold one item (its measured 100 ms per item exceeds the slice,
  // and before its first forward it has no measurement), so the cheap lane waits at most
  // 100 ms, not 800; once the cheap lane is done, the expensive lane takes full batches.
  const std::vector<Forward> forwards =
      RunToCompletion({{"cheap", absl::Milliseconds(10), absl::ZeroDuration(), 4, 200},
                       {"expensive", absl::ZeroDuration(), absl::Milliseconds(100), 8, 20}});
  size_t last_cheap = 0;
  for (size_t i = 0; i < forwards.size(); ++i) {
    if (forwards[i].lane == "cheap") last_cheap = i;
  }
  std::vector<int> expensive_while_shared, expensive_alone;
  for (size_t i = 0; i < forwards.size(); ++i) {
    if (forwards[i].lane != "expensive") continue;
    (i < last_cheap ? expensive_while_shared : expensive_alone).push_back(forwards[i].items);
  }
  // 50 cheap batches of 10 ms beside 100 ms expensive items: about five of them.
  REQUIRE(expensive_while_shared.size() >= 4);
  for (int items : expensive_while_shared) CHECK(items == 1);
  int total = 0;
  for (int items : expensive_while_shared) total += items;
  for (int items : expensive_alone) total += items;
  CHECK(total == 20);
  // Alone (once the cheap lane has taken no batch for a slice): full batches of 8.
  CHECK(std::count(expensive_alone.begin(), expensive_alone.end(), 8) >= 1);
}

TEST_CASE("a lane that was idle comes back level with the others, not with banked credit") {
  // The expensive lane runs alone for 1 s of device time; then a cheap lane gets work. It
  // must not own the device until it has used 1 s itself: after one cheap forward past the
  // expensive lane's time the two alternate by time again.
  FakeClock clock;
  DeviceLog log;
  ExecutorOptions options;
  options.time_slice = absl::Milliseconds(50);
  options.clock = [&clock] { return clock.Now(); };
  DeviceExecutor executor(options);
  const BatchPolicy policy = NoDelayPolicy(1);
  const int expensive = executor.AddQueue(
      std::make_shared<TimedModel>("expensive", absl::Milliseconds(100), absl::ZeroDuration(),
                                   &clock, &log),
      "expensive", Modality::kText, policy);
  const int cheap = executor.AddQueue(
      std::make_shared<TimedModel>("cheap", absl::Milliseconds(10), absl::ZeroDuration(),
                                   &clock, &log),
      "cheap", Modality::kText, policy);
  std::promise<void> first_done;
  auto first = PriorityCall(10, Priority::kNormal, [&] { first_done.set_value(); });
  for (int i = 0; i < 10; ++i) REQUIRE(executor.Enqueue(expensive, {first, i, 1, clock.Now()}).ok());
  executor.Start();
  first_done.get_future().wait();
  // Both lanes get work at once: a device task holds the executor while it is queued.
  std::promise<void> release = HoldExecutor(executor);
  auto more_expensive = PriorityCall(5, Priority::kNormal);
  auto cheap_work = PriorityCall(50, Priority::kNormal);
  for (int i = 0; i < 5; ++i) REQUIRE(executor.Enqueue(expensive, {more_expensive, i, 1, clock.Now()}).ok());
  for (int i = 0; i < 50; ++i) REQUIRE(executor.Enqueue(cheap, {cheap_work, i, 1, clock.Now()}).ok());
  release.set_value();
  executor.Stop();
  std::vector<Forward> forwards;
  {
    std::lock_guard<std::mutex> lock(log.mu);
    forwards = log.forwards;
  }
  REQUIRE(forwards.size() == 65);
  // After the first 10: at most 10 cheap forwards (100 ms) before each further expensive one.
  int cheap_run = 0, longest_cheap_run = 0, expensive_after = 0;
  for (size_t i = 10; i < forwards.size(); ++i) {
    if (forwards[i].lane == "cheap") {
      longest_cheap_run = std::max(longest_cheap_run, ++cheap_run);
    } else {
      cheap_run = 0;
      if (++expensive_after == 5) break;
    }
  }
  CHECK(expensive_after == 5);  // all five ran while the cheap lane still had work
  CHECK(longest_cheap_run <= 11);
}

TEST_CASE("a higher priority class is served first, in batches of its own class") {
  FakeClock clock;
  DeviceLog log;
  ExecutorOptions options;
  options.clock = [&clock] { return clock.Now(); };
  DeviceExecutor executor(options);
  auto model = std::make_shared<TimedModel>("one", absl::Milliseconds(5),
                                            absl::Milliseconds(10), &clock, &log);
  const int queue = executor.AddQueue(model, "one", Modality::kText, NoDelayPolicy(8));
  // Everything is queued while a device task holds the executor: bulk first, then normal,
  // then interactive, so arrival order is the reverse of the priority order.
  executor.Start();
  std::promise<void> release = HoldExecutor(executor);
  auto bulk = PriorityCall(12, Priority::kBulk);
  auto normal = PriorityCall(3, Priority::kNormal);
  auto interactive = PriorityCall(2, Priority::kInteractive);
  for (auto* call : {&bulk, &normal, &interactive}) {
    for (int i = 0; i < (*call)->size(); ++i) {
      REQUIRE(executor.Enqueue(queue, {*call, i, 1, clock.Now()}).ok());
    }
  }
  release.set_value();
  executor.Stop();
  std::lock_guard<std::mutex> lock(log.mu);
  REQUIRE(!log.forwards.empty());
  CHECK(log.forwards[0].tags == std::vector<int>{kInteractiveTag, kInteractiveTag});
  // Every batch holds one class, and the classes ran highest first.
  std::vector<int> classes;
  std::map<int, int> items_of;
  for (const Forward& f : log.forwards) {
    for (int tag : f.tags) CHECK(tag == f.tags[0]);
    classes.push_back(f.tags[0]);
    items_of[f.tags[0]] += f.items;
  }
  CHECK(std::is_sorted(classes.rbegin(), classes.rend()));
  CHECK(items_of == std::map<int, int>{{kBulkTag, 12}, {kNormalTag, 3}, {kInteractiveTag, 2}});
  CHECK(bulk->finished());
  CHECK(interactive->finished());
}

TEST_CASE("while interactive work is active, bulk batches fit in one interactive forward") {
  // Bulk: 400 items, batches of up to 16, 5 ms + 10 ms per item (165 ms a full batch).
  // Interactive queries of one item arrive while bulk forwards run. The first waits for
  // the full bulk batch on the device; after it, bulk batches hold one item (an interactive
  // forward takes 15 ms, a bulk item at least 10 ms), so every later query waits at most
  // one 15 ms bulk forward. A second after the last query bulk is back to full batches.
  FakeClock clock;
  DeviceLog log;
  ExecutorOptions options;
  options.clock = [&clock] { return clock.Now(); };
  options.priority_hold = absl::Seconds(1);
  options.priority_aging = absl::Seconds(10);
  DeviceExecutor executor(options);
  auto model = std::make_shared<TimedModel>("one", absl::Milliseconds(5),
                                            absl::Milliseconds(10), &clock, &log);
  const int queue = executor.AddQueue(model, "one", Modality::kText, NoDelayPolicy(16, 1000));
  std::mutex mu;
  std::map<int, absl::Time> query_sent;  // forward number during which it was sent
  std::vector<std::shared_ptr<EmbedCall>> queries;
  model->set_during_forward([&](int forward) {
    if (forward != 2 && forward != 6 && forward != 12 && forward != 30) return;
    auto query = PriorityCall(1, Priority::kInteractive);
    {
      std::lock_guard<std::mutex> lock(mu);
      query_sent[forward] = clock.Now();
      queries.push_back(query);
    }
    REQUIRE(executor.Enqueue(queue, {query, 0, 1, clock.Now()}).ok());
  });
  auto bulk = PriorityCall(400, Priority::kBulk);
  for (int i = 0; i < 400; ++i) REQUIRE(executor.Enqueue(queue, {bulk, i, 1, clock.Now()}).ok());
  executor.Start();
  executor.Stop();
  std::lock_guard<std::mutex> lock(log.mu);
  const std::vector<Forward>& forwards = log.forwards;
  // Each query ran in the forward right after the one it arrived during, alone.
  for (const auto& [sent_during, sent] : query_sent) {
    REQUIRE(static_cast<int>(forwards.size()) > sent_during + 1);
    INFO("query sent during forward " << sent_during);
    CHECK(forwards[sent_during + 1].tags == std::vector<int>{kInteractiveTag});
  }
  // Before the first query, full bulk batches.
  CHECK(forwards[0].items == 16);
  CHECK(forwards[2].items == 16);
  // From the first query's forward (3) until a second after the last one's (31), bulk
  // batches hold one item, so queries 2-4 waited at most 15 ms of bulk.
  const absl::Time last_query_taken = forwards[31].started;
  int full_after_hold = 0;
  for (size_t i = 3; i < forwards.size(); ++i) {
    const Forward& f = forwards[i];
    if (f.tags[0] != kBulkTag) continue;
    if (f.started < last_query_taken + absl::Seconds(1)) {
      INFO("bulk forward " << i);
      CHECK(f.items == 1);
    } else if (f.items == 16) {
      ++full_after_hold;
    }
  }
  CHECK(full_after_hold >= 1);
  CHECK(bulk->finished());
  for (const auto& query : queries) CHECK(query->finished());
}

TEST_CASE("bulk work is not starved by a continuous stream of interactive work") {
  // Interactive work that never lets up (one item a forward, 20 ms each, 5 s in all) on
  // one lane and bulk work on another: bulk still gets a batch at least once per
  // priority_aging (500 ms), each of them small (the interactive class stays active).
  FakeClock clock;
  DeviceLog log;
  ExecutorOptions options;
  options.clock = [&clock] { return clock.Now(); };
  options.priority_aging = absl::Milliseconds(500);
  DeviceExecutor executor(options);
  const int queries = executor.AddQueue(
      std::make_shared<TimedModel>("queries", absl::Milliseconds(20), absl::ZeroDuration(),
                                   &clock, &log),
      "queries", Modality::kText, NoDelayPolicy(1, 1000));
  const int indexing = executor.AddQueue(
      std::make_shared<TimedModel>("indexing", absl::Milliseconds(5), absl::Milliseconds(10),
                                   &clock, &log),
      "indexing", Modality::kText, NoDelayPolicy(8, 1000));
  auto interactive = PriorityCall(250, Priority::kInteractive);
  auto bulk = PriorityCall(100, Priority::kBulk);
  for (int i = 0; i < 250; ++i) {
    REQUIRE(executor.Enqueue(queries, {interactive, i, 1, clock.Now()}).ok());
  }
  for (int i = 0; i < 100; ++i) REQUIRE(executor.Enqueue(indexing, {bulk, i, 1, clock.Now()}).ok());
  executor.Start();
  executor.Stop();
  std::lock_guard<std::mutex> lock(log.mu);
  absl::Time last_bulk = log.forwards.front().started;
  int bulk_while_interactive = 0;
  absl::Time interactive_end = log.forwards.front().started;
  for (const Forward& f : log.forwards) {
    if (f.lane == "queries") interactive_end = f.started + f.took;
  }
  for (const Forward& f : log.forwards) {
    if (f.lane != "indexing" || f.started >= interactive_end) continue;
    ++bulk_while_interactive;
    // Unserved for at most the aging time plus the forward then on the device.
    CHECK(f.started - last_bulk <= absl::Milliseconds(500 + 20));
    CHECK(f.items == 1);  // fits in one 20 ms interactive forward (15 ms per item)
    last_bulk = f.started;
  }
  // 5 s of interactive work: about ten aged bulk batches.
  CHECK(bulk_while_interactive >= 9);
  CHECK(interactive_end - last_bulk <= absl::Milliseconds(500 + 20));
  CHECK(bulk->finished());
  CHECK(interactive->finished());
}

TEST_CASE("the preprocessing pool runs higher levels first, and ages waiting ones") {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::mutex mu;
  std::vector<int> order;
  auto record = [&](int id) {
    return [&, id] {
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(id);
    };
  };
  {
    ThreadPool pool(1, 100, absl::Hours(1));
    std::promise<void> blocking;
    REQUIRE(pool.TrySchedule([&blocking, released] {
      blocking.set_value();
      released.wait();
    }));
    blocking.get_future().wait();
    // ids: level * 10 + arrival
    REQUIRE(pool.TrySchedule(record(0), 0));
    REQUIRE(pool.TrySchedule(record(11), 1));
    REQUIRE(pool.TrySchedule(record(22), 2));
    REQUIRE(pool.TrySchedule(record(3), 0));
    REQUIRE(pool.TrySchedule(record(24), 2));
    REQUIRE(pool.TrySchedule(record(25), 7));  // clamped to the top level
    CHECK(pool.pending() == 6);
    release.set_value();
  }  // the destructor runs what was accepted
  CHECK(order == std::vector<int>{22, 24, 25, 11, 0, 3});

  order.clear();
  std::promise<void> release_again;
  std::shared_future<void> released_again = release_again.get_future().share();
  {
    ThreadPool pool(1, 100, absl::Milliseconds(50));
    REQUIRE(pool.TrySchedule([released_again] { released_again.wait(); }));
    REQUIRE(pool.TrySchedule(record(0), 0));
    std::this_thread::sleep_for(std::chrono::milliseconds(80));  // the bulk task ages
    REQUIRE(pool.TrySchedule(record(21), 2));
    release_again.set_value();
  }
  CHECK(order == std::vector<int>{0, 21});
}

}  // namespace embedserve::pipeline
