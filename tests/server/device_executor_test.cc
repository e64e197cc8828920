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
#include <vector>

#include <catch2/catch.hpp>

#include "server/pipeline/device_executor.h"

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
  absl::StatusOr<std::vector<models::Embedding>> EmbedTexts(
      absl::Span<const models::TextInput* const> texts) override {
    const int n = static_cast<int>(texts.size());
    const absl::Duration took = per_forward_ + n * per_item_;
    clock_->Advance(took);
    {
      std::lock_guard<std::mutex> lock(log_->mu);
      log_->forwards.push_back({lane_, n, took});
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
};

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
    BatchPolicy policy;
    policy.max_batch_size = lane.max_batch_size;
    policy.max_queue_delay = absl::ZeroDuration();
    policy.queue_capacity = lane.items;
    const int queue = executor.AddQueue(
        std::make_shared<TimedModel>(lane.name, lane.per_forward, lane.per_item, &clock, &log),
        lane.name, Modality::kText, policy);
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
  BatchPolicy policy;
  policy.max_batch_size = 1;
  policy.max_queue_delay = absl::ZeroDuration();
  const int expensive = executor.AddQueue(
      std::make_shared<TimedModel>("expensive", absl::Milliseconds(100), absl::ZeroDuration(),
                                   &clock, &log),
      "expensive", Modality::kText, policy);
  const int cheap = executor.AddQueue(
      std::make_shared<TimedModel>("cheap", absl::Milliseconds(10), absl::ZeroDuration(),
                                   &clock, &log),
      "cheap", Modality::kText, policy);
  auto make_call = [](int n, std::function<void()> done = [] {}) {
    return std::make_shared<EmbedCall>(
        std::vector<CallInput>(n, CallInput{Modality::kText, "x", "inputs[]"}), true,
        absl::InfiniteFuture(), [done](const absl::Status&, EmbedCall&) { done(); });
  };
  std::promise<void> first_done;
  auto first = make_call(10, [&] { first_done.set_value(); });
  for (int i = 0; i < 10; ++i) REQUIRE(executor.Enqueue(expensive, {first, i, 1, clock.Now()}).ok());
  executor.Start();
  first_done.get_future().wait();
  // Both lanes get work at once: a device task holds the executor while it is queued.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  REQUIRE(executor.Post([released] { released.wait(); }).ok());
  auto more_expensive = make_call(5), cheap_work = make_call(50);
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

}  // namespace embedserve::pipeline
