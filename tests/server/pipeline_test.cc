// The pipeline with a fake model: batches by size, by delay and by token budget; deadlines,
// cancellation, queue-full rejection, order within a call, and failure isolation.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/numbers.h"
#include <condition_variable>
#include <mutex>
#include "server/pipeline/batch_queue.h"
#include "server/pipeline/pipeline.h"

namespace embedserve::pipeline {
namespace {

// Notification on std primitives: Debian's absl is not TSan-instrumented, and these
// tests also run under ThreadSanitizer.
class Notification {
 public:
  void Notify() {
    std::lock_guard<std::mutex> lock(mu_);
    notified_ = true;
    cv_.notify_all();
  }
  bool HasBeenNotified() {
    std::lock_guard<std::mutex> lock(mu_);
    return notified_;
  }
  void WaitForNotification() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return notified_; });
  }
  bool WaitForNotificationWithTimeout(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] { return notified_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool notified_ = false;
};

// A fake model: a text "N" (a number) becomes N tokens and the 2-d vector [N, batch size];
// "bad" fails in preprocessing; "boom" fails its whole forward. Records batch sizes.
class FakeModel : public models::Model {
 public:
  FakeModel() {
    description_.family = "fake";
    description_.accepts_text = true;
    description_.embedding_dim = 2;
  }
  const models::ModelDescription& description() const override { return description_; }

  absl::StatusOr<models::TextInput> PrepareText(absl::string_view text, bool) const override {
    if (text == "bad") return absl::InvalidArgumentError("bad text");
    models::TextInput input;
    int n = 1;
    if (text == "boom") n = -1;
    else if (text == "nan") n = -2;
    else if (!absl::SimpleAtoi(text, &n)) n = 1;
    input.token_ids.assign(n < 0 ? 1 : n, n < 0 ? n : 7);
    return input;
  }
  absl::StatusOr<models::ImageInput> PrepareImage(absl::string_view,
                                                  const models::ImageLimits&) const override {
    return absl::UnimplementedError("no images");
  }
  absl::StatusOr<std::vector<models::Embedding>> EmbedTexts(
      absl::Span<const models::TextInput* const> texts) override {
    if (entered != nullptr && !entered->HasBeenNotified()) entered->Notify();
    if (gate != nullptr) gate->WaitForNotification();
    std::vector<int> lengths;
    for (const auto* t : texts) {
      if (t->token_ids[0] == -1) {
        batch_sizes.push_back(static_cast<int>(texts.size()));
        return absl::InternalError("forward failed");
      }
      lengths.push_back(static_cast<int>(t->token_ids.size()));
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      batch_sizes.push_back(static_cast<int>(texts.size()));
      batch_lengths.push_back(lengths);
    }
    std::vector<models::Embedding> out;
    for (const auto* t : texts) {
      const float first = t->token_ids[0] == -2 ? std::nanf("") : static_cast<float>(t->token_ids.size());
      out.push_back({1, 2, {first, static_cast<float>(texts.size())}});
    }
    return out;
  }
  absl::StatusOr<std::vector<models::Embedding>> EmbedImages(
      absl::Span<const models::ImageInput* const>) override {
    return absl::UnimplementedError("no images");
  }
  ~FakeModel() override {
    if (destroyed != nullptr) *destroyed = true;
  }

  std::atomic<bool>* destroyed = nullptr;
  std::mutex mu;
  std::vector<int> batch_sizes;
  std::vector<std::vector<int>> batch_lengths;
  Notification* gate = nullptr;
  Notification* entered = nullptr;
  models::ModelDescription description_;
};

struct Outcome {
  Notification done;
  absl::Status status;
  std::vector<models::Embedding> results;
};

std::shared_ptr<EmbedCall> MakeCall(std::vector<std::string> texts, Outcome* outcome,
                                    absl::Time deadline = absl::InfiniteFuture()) {
  std::vector<CallInput> inputs;
  for (size_t i = 0; i < texts.size(); ++i) {
    inputs.push_back({Modality::kText, texts[i], "inputs[" + std::to_string(i) + "]"});
  }
  return std::make_shared<EmbedCall>(std::move(inputs), true, deadline,
                                     [outcome](const absl::Status& s, EmbedCall& call) {
                                       outcome->status = s;
                                       if (s.ok()) outcome->results = call.results();
                                       outcome->done.Notify();
                                     });
}

struct Harness {
  explicit Harness(BatchPolicy policy, int preprocess_queue = 4096) {
    PipelineOptions options;
    options.text_policy = policy;
    options.preprocess_threads = 2;
    options.preprocess_queue = preprocess_queue;
    pipeline = std::make_unique<Pipeline>(options);
    auto owned = std::make_unique<FakeModel>();
    model = owned.get();
    pipeline->AddLoading("fake", "memory");
    pipeline->SetReady("fake", std::move(owned));
    pipeline->Start();
    entry = *pipeline->FindReady("fake");
  }
  FakeModel* model;
  std::shared_ptr<ServingModel> entry;
  std::unique_ptr<Pipeline> pipeline;
};

}  // namespace

TEST_CASE("results come back in input order, one per input") {
  BatchPolicy policy;
  policy.max_batch_size = 3;
  policy.max_queue_delay = absl::Milliseconds(1);
  Harness h(policy);
  Outcome outcome;
  h.pipeline->Submit(h.entry, MakeCall({"5", "1", "9", "2", "7", "3", "8"}, &outcome));
  REQUIRE(outcome.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  REQUIRE(outcome.status.ok());
  const std::vector<float> expected = {5, 1, 9, 2, 7, 3, 8};
  REQUIRE(outcome.results.size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) CHECK(outcome.results[i].values[0] == expected[i]);
  for (int size : h.model->batch_sizes) CHECK(size <= 3);
}

TEST_CASE("items from many concurrent calls are grouped into one batch up to max_batch_size") {
  BatchPolicy policy;
  policy.max_batch_size = 8;
  policy.max_queue_delay = absl::Milliseconds(200);  // long: only a full batch runs early
  Harness h(policy);
  std::vector<Outcome> outcomes(8);
  const absl::Time start = absl::Now();
  for (auto& o : outcomes) h.pipeline->Submit(h.entry, MakeCall({"4"}, &o));
  for (auto& o : outcomes) REQUIRE(o.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // One forward with all 8 (each result reports the batch size it ran in), and it did not
  // wait for the delay because the batch was full.
  for (auto& o : outcomes) CHECK(o.results[0].values[1] == 8);
  CHECK(h.model->batch_sizes == std::vector<int>{8});
  CHECK(absl::Now() - start < absl::Milliseconds(190));
}

TEST_CASE("a partial batch runs once the oldest item has waited max_queue_delay") {
  BatchPolicy policy;
  policy.max_batch_size = 32;
  policy.max_queue_delay = absl::Milliseconds(100);
  Harness h(policy);
  Outcome outcome;
  const absl::Time start = absl::Now();
  h.pipeline->Submit(h.entry, MakeCall({"3", "3", "3"}, &outcome));
  REQUIRE(outcome.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK(absl::Now() - start >= absl::Milliseconds(100));
  CHECK(h.model->batch_sizes == std::vector<int>{3});
}

TEST_CASE("the token budget bounds padded tokens per batch and groups texts by length") {
  BatchPolicy policy{8, absl::ZeroDuration(), 100, /*max_batch_tokens=*/40};
  policy.similar_cost_fraction = 0;
  BatchQueue queue(policy);
  Outcome outcome;
  auto call = MakeCall(std::vector<std::string>(6, "x"), &outcome);
  const absl::Time t = absl::Now();
  const int costs[] = {10, 30, 9, 11, 30, 10};
  for (int i = 0; i < 6; ++i) REQUIRE(queue.Push({call, i, costs[i], t}));
  std::vector<QueuedItem> skipped;
  // Head costs 10: with lengths closest first (similar_cost_fraction 0) 10, 10, 9 join
  // while longest x count <= 40 (30 padded tokens); 11 would make 11 x 4 = 44. They leave
  // in queue order.
  auto costs_of = [](const std::vector<QueuedItem>& batch) {
    std::vector<int> out;
    for (const auto& item : batch) out.push_back(item.cost);
    return out;
  };
  CHECK(costs_of(queue.TakeBatch(t, &skipped)) == std::vector<int>{10, 9, 10});
  // Left: 30, 11, 30. Any pair with a 30 pads to 60 > 40, so each goes alone, oldest first.
  CHECK(costs_of(queue.TakeBatch(t, &skipped)) == std::vector<int>{30});
  CHECK(costs_of(queue.TakeBatch(t, &skipped)) == std::vector<int>{11});
  CHECK(costs_of(queue.TakeBatch(t, &skipped)) == std::vector<int>{30});
  CHECK(queue.empty());
  CHECK(skipped.empty());
}

TEST_CASE("similar lengths keep arrival order, so one call's items leave together") {
  // Two calls of four texts, their items interleaved by length as preprocessing finishes
  // them: call A 20, 18, 21, 19 tokens; call B 19, 20, 18, 21. Within 1/8 of the head's 20
  // tokens (2) every length counts as equal, so the first batch of four is call A's four
  // items in arrival order, not the four closest to 20 tokens from both calls.
  BatchPolicy policy{4, absl::ZeroDuration(), 100, 0};
  policy.similar_cost_fraction = 0.125;
  BatchQueue queue(policy);
  Outcome a, b;
  auto call_a = MakeCall(std::vector<std::string>(4, "x"), &a);
  auto call_b = MakeCall(std::vector<std::string>(4, "x"), &b);
  const absl::Time t = absl::Now();
  const int costs_a[] = {20, 18, 21, 19}, costs_b[] = {19, 20, 18, 21};
  for (int i = 0; i < 4; ++i) REQUIRE(queue.Push({call_a, i, costs_a[i], t}));
  for (int i = 0; i < 4; ++i) REQUIRE(queue.Push({call_b, i, costs_b[i], t}));
  std::vector<QueuedItem> skipped;
  std::vector<QueuedItem> first = queue.TakeBatch(t, &skipped);
  REQUIRE(first.size() == 4);
  for (int i = 0; i < 4; ++i) {
    CHECK(first[i].call == call_a);
    CHECK(first[i].index == i);
  }
  // With the fraction at 0 the closest lengths come first and take call B's 20 before call
  // A's 18: the two calls would both wait for the second batch.
  policy.similar_cost_fraction = 0;
  BatchQueue closest(policy);
  for (int i = 0; i < 4; ++i) REQUIRE(closest.Push({call_a, i, costs_a[i], t}));
  for (int i = 0; i < 4; ++i) REQUIRE(closest.Push({call_b, i, costs_b[i], t}));
  std::vector<QueuedItem> mixed = closest.TakeBatch(t, &skipped);
  REQUIRE(mixed.size() == 4);
  CHECK(std::any_of(mixed.begin(), mixed.end(),
                    [&](const QueuedItem& item) { return item.call == call_b; }));
}

TEST_CASE("a full queue refuses at once with RESOURCE_EXHAUSTED") {
  BatchPolicy policy;
  policy.max_batch_size = 1;
  policy.queue_capacity = 2;
  policy.max_queue_delay = absl::ZeroDuration();
  Harness h(policy);
  Notification gate, entered;
  h.model->gate = &gate;  // the device is busy until released
  h.model->entered = &entered;
  std::vector<Outcome> outcomes(6);
  h.pipeline->Submit(h.entry, MakeCall({"2"}, &outcomes[0]));
  REQUIRE(entered.WaitForNotificationWithTimeout(absl::Seconds(10)));
  for (int i = 1; i < 6; ++i) h.pipeline->Submit(h.entry, MakeCall({"2"}, &outcomes[i]));
  // One runs (blocked), two wait, the other three are refused without waiting.
  int refused = 0;
  for (auto& o : outcomes) {
    if (o.done.WaitForNotificationWithTimeout(absl::Milliseconds(500))) {
      CHECK(o.status.code() == absl::StatusCode::kResourceExhausted);
      CHECK_THAT(std::string(o.status.message()), Catch::Contains("retry"));
      ++refused;
    }
  }
  CHECK(refused == 3);
  gate.Notify();
  for (auto& o : outcomes) REQUIRE(o.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

TEST_CASE("a call past its deadline or cancelled is dropped before it costs compute") {
  BatchPolicy policy;
  policy.max_batch_size = 4;
  policy.max_queue_delay = absl::Milliseconds(50);
  Harness h(policy);

  SECTION("deadline") {
    Outcome outcome;
    h.pipeline->Submit(h.entry, MakeCall({"1", "2"}, &outcome, absl::Now() + absl::Milliseconds(10)));
    REQUIRE(outcome.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
    CHECK(outcome.status.code() == absl::StatusCode::kDeadlineExceeded);
  }
  SECTION("cancellation") {
    Outcome outcome;
    auto call = MakeCall({"1", "2"}, &outcome);
    h.pipeline->Submit(h.entry, call);
    call->Cancel();
    REQUIRE(outcome.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
    CHECK(outcome.status.code() == absl::StatusCode::kCancelled);
  }
  absl::SleepFor(absl::Milliseconds(150));  // past the batch delay
  std::lock_guard<std::mutex> lock(h.model->mu);
  CHECK(h.model->batch_sizes.empty());
}

namespace {

// Up to 16 items a batch, after at most 50 ms.
BatchPolicy SixteenPerBatch() {
  BatchPolicy policy;
  policy.max_batch_size = 16;
  policy.max_queue_delay = absl::Milliseconds(50);
  return policy;
}

// Submits a good call and another one together (so they may share a batch), and waits for
// both answers.
void SubmitBesideAGoodCall(Harness& h, std::vector<std::string> texts, Outcome* good,
                           Outcome* other) {
  h.pipeline->Submit(h.entry, MakeCall({"1", "2"}, good));
  h.pipeline->Submit(h.entry, MakeCall(std::move(texts), other));
  REQUIRE(good->done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  REQUIRE(other->done.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

}  // namespace

TEST_CASE("a bad item fails only its own call, and a failed forward fails only its batch") {
  Harness h(SixteenPerBatch());
  Outcome good, bad;
  SubmitBesideAGoodCall(h, {"3", "bad"}, &good, &bad);
  CHECK(good.status.ok());
  CHECK(bad.status.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(bad.status.message()), Catch::Contains("inputs[1]"));

  Outcome boom;
  h.pipeline->Submit(h.entry, MakeCall({"boom"}, &boom));
  REQUIRE(boom.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK(boom.status.code() == absl::StatusCode::kInternal);
  Outcome after;  // the executor keeps serving
  h.pipeline->Submit(h.entry, MakeCall({"4"}, &after));
  REQUIRE(after.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK(after.status.ok());
}

TEST_CASE("a non-finite output fails its own call with INTERNAL, never OK") {
  Harness h(SixteenPerBatch());
  Outcome good, poisoned;
  SubmitBesideAGoodCall(h, {"3", "nan"}, &good, &poisoned);
  CHECK(good.status.ok());
  CHECK(poisoned.status.code() == absl::StatusCode::kInternal);
  CHECK_THAT(std::string(poisoned.status.message()),
             Catch::Contains("inputs[1]") && Catch::Contains("non-finite"));
}

TEST_CASE("a full preprocessing queue refuses with RESOURCE_EXHAUSTED") {
  BatchPolicy policy;
  Harness h(policy, /*preprocess_queue=*/1);
  // 1000 inputs cannot all wait for two preprocessing threads behind a queue of one.
  Outcome outcome;
  h.pipeline->Submit(h.entry, MakeCall(std::vector<std::string>(1000, "1"), &outcome));
  REQUIRE(outcome.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK(outcome.status.code() == absl::StatusCode::kResourceExhausted);
}

}  // namespace embedserve::pipeline

namespace embedserve::pipeline {

TEST_CASE("warm-up runs one forward at batch 1 and one at max_batch_size per modality") {
  BatchPolicy policy;
  policy.max_batch_size = 6;
  policy.max_queue_delay = absl::Milliseconds(1);
  Harness h(policy);
  REQUIRE(h.pipeline->Warmup("fake").ok());
  std::lock_guard<std::mutex> lock(h.model->mu);
  CHECK(h.model->batch_sizes == std::vector<int>{1, 6});
}

}  // namespace embedserve::pipeline

namespace embedserve::pipeline {

TEST_CASE("a reload switches new calls to the new version while calls in flight finish on the old") {
  BatchPolicy policy;
  policy.max_batch_size = 4;
  policy.max_queue_delay = absl::ZeroDuration();
  Harness h(policy);
  Notification gate, entered;
  std::atomic<bool> old_destroyed{false};
  h.model->gate = &gate;
  h.model->entered = &entered;
  h.model->destroyed = &old_destroyed;
  Outcome in_flight;
  h.pipeline->Submit(h.entry, MakeCall({"3"}, &in_flight));
  REQUIRE(entered.WaitForNotificationWithTimeout(absl::Seconds(10)));
  h.entry.reset();  // the harness lets go; the call still holds the old version

  // A call that has picked the old version but not yet queued: it must still be served.
  auto picked_old = *h.pipeline->FindReady("fake");
  auto replacement = std::make_unique<FakeModel>();
  FakeModel* new_model = replacement.get();
  h.pipeline->SetReady("fake", std::move(replacement));
  auto picked_new = *h.pipeline->FindReady("fake");
  CHECK(picked_new->model.get() == new_model);
  CHECK(picked_old->model.get() != new_model);

  Outcome late_old, fresh;
  h.pipeline->Submit(picked_old, MakeCall({"5"}, &late_old));
  h.pipeline->Submit(picked_new, MakeCall({"7"}, &fresh));
  CHECK_FALSE(old_destroyed.load());
  gate.Notify();  // one executor: the fresh call runs once the old forward returns
  REQUIRE(fresh.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK(fresh.status.ok());
  REQUIRE(in_flight.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  REQUIRE(late_old.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK(in_flight.status.ok());
  CHECK(late_old.status.ok());
  CHECK(late_old.results[0].values[0] == 5);
  {
    std::lock_guard<std::mutex> lock(new_model->mu);
    CHECK(new_model->batch_sizes == std::vector<int>{1});  // only the fresh call
  }
  // Once nothing holds the old version and its queue drained, it is freed, without any
  // further batch having to run.
  picked_old.reset();
  for (int i = 0; i < 100 && !old_destroyed.load(); ++i) absl::SleepFor(absl::Milliseconds(10));
  CHECK(old_destroyed.load());
}

TEST_CASE("a removed model is NOT_FOUND for new calls") {
  BatchPolicy policy;
  Harness h(policy);
  CHECK(h.pipeline->Remove("fake"));
  CHECK(h.pipeline->FindReady("fake").status().code() == absl::StatusCode::kNotFound);
  CHECK_FALSE(h.pipeline->Remove("fake"));
}

}  // namespace embedserve::pipeline

// Out of memory in a forward (issue 7): the batch fails with RESOURCE_EXHAUSTED, the queue's
// effective max batch size shrinks, the executor keeps serving and the size grows back.
namespace embedserve::pipeline {
namespace {

// A FakeModel with "a tiny memory cap": a forward of more than `cap` texts returns
// RESOURCE_EXHAUSTED, as a real model does on out-of-memory. cap < 0: no cap.
class CappedModel : public FakeModel {
 public:
  absl::StatusOr<std::vector<models::Embedding>> EmbedTexts(
      absl::Span<const models::TextInput* const> texts) override {
    int limit;
    {
      std::lock_guard<std::mutex> lock(cap_mu);
      limit = cap;
    }
    if (limit >= 0 && static_cast<int>(texts.size()) > limit) {
      if (entered != nullptr && !entered->HasBeenNotified()) entered->Notify();
      if (gate != nullptr) gate->WaitForNotification();
      std::lock_guard<std::mutex> lock(mu);
      oversized.push_back(static_cast<int>(texts.size()));
      return absl::ResourceExhaustedError("fake allocator: out of memory");
    }
    return FakeModel::EmbedTexts(texts);
  }
  void SetCap(int n) {
    std::lock_guard<std::mutex> lock(cap_mu);
    cap = n;
  }
  std::vector<int> BatchSizes() {
    std::lock_guard<std::mutex> lock(mu);
    return batch_sizes;
  }
  std::mutex cap_mu;
  int cap = -1;
  std::vector<int> oversized;  // guarded by mu
};

struct CappedHarness {
  explicit CappedHarness(BatchPolicy policy) {
    PipelineOptions options;
    options.text_policy = policy;
    options.preprocess_threads = 2;
    pipeline = std::make_unique<Pipeline>(options);
    auto owned = std::make_unique<CappedModel>();
    model = owned.get();
    pipeline->AddLoading("capped", "memory");
    pipeline->SetReady("capped", std::move(owned));
    pipeline->Start();
    entry = *pipeline->FindReady("capped");
  }
  int Effective() { return pipeline->executor().EffectiveBatchSize(entry->QueueFor(Modality::kText)); }

  // Runs `calls` so that their items are all queued before the device takes any: a
  // one-item blocker call holds the executor until every item is waiting. The blocker
  // counts as one successful forward. Returns once every call has finished.
  void RunQueuedTogether(std::vector<std::pair<std::vector<std::string>, Outcome*>> calls) {
    Notification gate, entered, blocker_done;
    model->gate = &gate;
    model->entered = &entered;
    Outcome blocker;
    pipeline->Submit(entry, MakeCall({"1"}, &blocker));
    REQUIRE(entered.WaitForNotificationWithTimeout(absl::Seconds(10)));
    int total = 0;
    for (auto& [texts, outcome] : calls) {
      total += static_cast<int>(texts.size());
      pipeline->Submit(entry, MakeCall(texts, outcome));
    }
    for (int i = 0; i < 1000 && pipeline->executor().QueueDepth(entry->QueueFor(Modality::kText)) < total; ++i) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    REQUIRE(pipeline->executor().QueueDepth(entry->QueueFor(Modality::kText)) == total);
    gate.Notify();
    REQUIRE(blocker.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
    REQUIRE(blocker.status.ok());
    for (auto& [texts, outcome] : calls) {
      REQUIRE(outcome->done.WaitForNotificationWithTimeout(absl::Seconds(10)));
    }
    // The executor has returned from the forward (every result is in); detach the gate.
    model->gate = nullptr;
    model->entered = nullptr;
  }

  CappedModel* model;
  std::shared_ptr<ServingModel> entry;
  std::unique_ptr<Pipeline> pipeline;
};

std::vector<std::string> Numbers(int from, int count) {
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) out.push_back(std::to_string(from + i));
  return out;
}

}  // namespace

TEST_CASE("BatchQueue: the effective max batch size bounds batches and is clamped to [1, max]") {
  BatchQueue queue(BatchPolicy{8, absl::Hours(1), 100, 0});
  CHECK(queue.effective_max_batch_size() == 8);
  queue.set_effective_max_batch_size(0);
  CHECK(queue.effective_max_batch_size() == 1);
  queue.set_effective_max_batch_size(100);
  CHECK(queue.effective_max_batch_size() == 8);
  queue.set_effective_max_batch_size(3);
  Outcome outcome;
  auto call = MakeCall(std::vector<std::string>(7, "x"), &outcome);
  const absl::Time t = absl::Now();
  for (int i = 0; i < 7; ++i) REQUIRE(queue.Push({call, i, 1, t}));
  // 7 >= 3 waiting: a full (effective) batch is ready now, despite the hour of delay.
  CHECK(queue.ReadyAt() == absl::InfinitePast());
  std::vector<QueuedItem> skipped;
  CHECK(queue.TakeBatch(t, &skipped).size() == 3);
  CHECK(queue.TakeBatch(t, &skipped).size() == 3);
  CHECK(queue.TakeBatch(t, &skipped).size() == 1);
}

TEST_CASE("out of memory: the batch fails RESOURCE_EXHAUSTED, batches shrink, then grow back") {
  BatchPolicy policy;
  policy.max_batch_size = 8;
  policy.max_queue_delay = absl::ZeroDuration();
  policy.oom_recovery_batches = 3;
  CappedHarness h(policy);
  h.model->SetCap(4);  // a tiny memory: more than 4 texts per forward do not fit
  REQUIRE(h.Effective() == 8);

  // 1. The first oversized batch (all 8 queued together) fails, with a message that says
  // what happened; the queue's max batch size halves.
  Outcome oversized;
  h.RunQueuedTogether({{Numbers(1, 8), &oversized}});
  CHECK(oversized.status.code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(oversized.status.message()), Catch::Contains("out of memory"));
  CHECK_THAT(std::string(oversized.status.message()),
             Catch::Contains("reduced from 8 to 4"));
  {
    std::lock_guard<std::mutex> lock(h.model->mu);
    CHECK(h.model->oversized == std::vector<int>{8});
  }
  CHECK(h.Effective() == 4);

  // 2. The server keeps serving: the same 8 texts now run in batches of at most 4 and
  // every answer is right.
  const size_t forwards_before = h.model->BatchSizes().size();
  Outcome retried;
  h.RunQueuedTogether({{Numbers(1, 8), &retried}});
  REQUIRE(retried.status.ok());
  REQUIRE(retried.results.size() == 8);
  for (int i = 0; i < 8; ++i) CHECK(retried.results[i].values[0] == i + 1);
  const std::vector<int> sizes = h.model->BatchSizes();
  for (size_t i = forwards_before; i < sizes.size(); ++i) CHECK(sizes[i] <= 4);
  {
    std::lock_guard<std::mutex> lock(h.model->mu);
    CHECK(h.model->oversized.size() == 1);
  }
  // Blocker + two batches of 4 = 3 successful forwards: +1.
  CHECK(h.Effective() == 5);

  // 3. The memory cap is lifted: the size grows back to the configured max (one step per
  // 3 successful forwards) and full batches of 8 run again; nothing fails on the way.
  h.model->SetCap(-1);
  for (int round = 0; round < 40 && h.Effective() < 8; ++round) {
    Outcome outcome;
    h.RunQueuedTogether({{Numbers(1, 8), &outcome}});
    REQUIRE(outcome.status.ok());
  }
  CHECK(h.Effective() == 8);
  Outcome full;
  h.RunQueuedTogether({{Numbers(1, 8), &full}});
  REQUIRE(full.status.ok());
  for (int i = 0; i < 8; ++i) CHECK(full.results[i].values[1] == 8);  // ran as one batch
  CHECK(h.Effective() == 8);  // never above the configured max

  // The gauge source reports the queue's effective size with its labels.
  bool found = false;
  for (const auto& [labels, value] : h.pipeline->executor().EffectiveBatchSizes()) {
    if (labels == metrics::Labels{{"model", "capped"}, {"modality", "text"}}) {
      found = true;
      CHECK(value == 8);
    }
  }
  CHECK(found);
}

TEST_CASE("out of memory on a single item: the limit floors at 1 and the executor keeps serving") {
  BatchPolicy policy;
  policy.max_batch_size = 8;
  policy.max_queue_delay = absl::ZeroDuration();
  policy.oom_recovery_batches = 100;
  CappedHarness h(policy);
  h.model->SetCap(0);  // nothing fits
  for (int i = 0; i < 3; ++i) {
    Outcome outcome;
    h.pipeline->Submit(h.entry, MakeCall({"2"}, &outcome));
    REQUIRE(outcome.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
    CHECK(outcome.status.code() == absl::StatusCode::kResourceExhausted);
    CHECK_THAT(std::string(outcome.status.message()), Catch::Contains("to 1"));
    CHECK(h.Effective() == 1);
  }
  h.model->SetCap(-1);
  Outcome after;
  h.pipeline->Submit(h.entry, MakeCall({"3", "4"}, &after));
  REQUIRE(after.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  REQUIRE(after.status.ok());
  CHECK(after.results[1].values[0] == 4);
  for (int size : h.model->BatchSizes()) CHECK(size == 1);
}

}  // namespace embedserve::pipeline

// Two-phase forwards: the executor launches the next ready batch before it waits for the one
// on the device (copy/compute overlap on CUDA), and device tasks run on the executor thread.
namespace embedserve::pipeline {
namespace {

// A FakeModel whose batches stay "on the device" until Wait(); records launches and waits.
class AsyncModel : public FakeModel {
 public:
  class Pending : public models::PendingBatch {
   public:
    Pending(AsyncModel* model, int number, absl::StatusOr<std::vector<models::Embedding>> out)
        : model_(model), number_(number), out_(std::move(out)) {}
    bool done() const override { return false; }
    absl::StatusOr<std::vector<models::Embedding>> Wait() override {
      model_->Log("wait " + std::to_string(number_));
      return std::move(out_);
    }

   private:
    AsyncModel* model_;
    int number_;
    absl::StatusOr<std::vector<models::Embedding>> out_;
  };

  std::unique_ptr<models::PendingBatch> LaunchTexts(
      absl::Span<const models::TextInput* const> texts) override {
    const int number = ++launches_;
    Log("launch " + std::to_string(number));
    return std::make_unique<Pending>(this, number, FakeModel::EmbedTexts(texts));
  }
  void Log(std::string event) {
    std::lock_guard<std::mutex> lock(log_mu);
    log.push_back(std::move(event));
  }
  std::vector<std::string> Events() {
    std::lock_guard<std::mutex> lock(log_mu);
    return log;
  }

  std::mutex log_mu;
  std::vector<std::string> log;
  int launches_ = 0;  // executor thread only
};

}  // namespace

TEST_CASE("the executor launches the next batch before waiting for the one on the device") {
  PipelineOptions options;
  options.text_policy = BatchPolicy{1, absl::ZeroDuration(), 100, 0};
  options.preprocess_threads = 2;
  Pipeline pipeline(options);
  auto owned = std::make_unique<AsyncModel>();
  AsyncModel* model = owned.get();
  pipeline.AddLoading("async", "memory");
  pipeline.SetReady("async", std::move(owned));
  pipeline.Start();
  std::shared_ptr<ServingModel> entry = *pipeline.FindReady("async");

  // A device task holds the executor until all three items are queued.
  Notification gate, task_running;
  REQUIRE(pipeline.executor().Post([&] {
    task_running.Notify();
    gate.WaitForNotification();
  }).ok());
  REQUIRE(task_running.WaitForNotificationWithTimeout(absl::Seconds(10)));
  Outcome outcome;
  pipeline.Submit(entry, MakeCall({"3", "1", "2"}, &outcome));
  for (int i = 0; i < 1000 && pipeline.executor().QueueDepth(entry->QueueFor(Modality::kText)) < 3; ++i) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  REQUIRE(pipeline.executor().QueueDepth(entry->QueueFor(Modality::kText)) == 3);
  gate.Notify();
  REQUIRE(outcome.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  REQUIRE(outcome.status.ok());
  // Batches of one, in order; each result is its own text's (N tokens -> first value N).
  REQUIRE(outcome.results.size() == 3);
  CHECK(outcome.results[0].values[0] == 3.f);
  CHECK(outcome.results[1].values[0] == 1.f);
  CHECK(outcome.results[2].values[0] == 2.f);
  CHECK(model->Events() == std::vector<std::string>{"launch 1", "launch 2", "wait 1", "launch 3",
                                                    "wait 2", "wait 3"});
  pipeline.Stop();
}

TEST_CASE("device tasks run on the executor in order, and none is taken once stopping") {
  PipelineOptions options;
  Pipeline pipeline(options);
  pipeline.Start();
  std::mutex mu;
  std::vector<int> order;
  std::vector<std::thread::id> threads;
  Notification last;
  for (int i = 0; i < 5; ++i) {
    REQUIRE(pipeline.executor().Post([&, i] {
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(i);
      threads.push_back(std::this_thread::get_id());
      if (i == 4) last.Notify();
    }).ok());
  }
  REQUIRE(last.WaitForNotificationWithTimeout(absl::Seconds(10)));
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
    for (const auto& id : threads) {
      CHECK(id == threads[0]);
      CHECK(id != std::this_thread::get_id());
    }
  }
  pipeline.Stop();
  CHECK(pipeline.executor().Post([] {}).code() == absl::StatusCode::kUnavailable);
}

}  // namespace embedserve::pipeline

// Rerank's MaxSim runs on the executor: through the model's device MaxSim when the model is
// not on the CPU, through the host BLAS path on the CPU or when the family has none.
namespace embedserve::pipeline {
namespace {

// Scores every document as 1000 + its index, so the device path is recognisable.
class DeviceScoringModel : public FakeModel {
 public:
  explicit DeviceScoringModel(std::string device, bool implemented)
      : implemented_(implemented) {
    description_.device = std::move(device);
  }
  absl::StatusOr<std::vector<float>> MaxSim(const models::RowsView&,
                                            absl::Span<const models::RowsView> documents) override {
    calls.fetch_add(1);
    on_thread = std::this_thread::get_id();
    if (!implemented_) return absl::UnimplementedError("no device MaxSim");
    std::vector<float> scores;
    for (size_t i = 0; i < documents.size(); ++i) scores.push_back(1000.f + static_cast<float>(i));
    return scores;
  }
  std::atomic<int> calls{0};
  std::thread::id on_thread;

 private:
  bool implemented_;
};

std::vector<float> Score(Pipeline& pipeline, const std::string& name) {
  std::shared_ptr<ServingModel> entry = *pipeline.FindReady(name);
  // query [2 x 2]; documents: [1 x 2] and [2 x 2] (hand-computed MaxSim below).
  static const std::vector<float> query = {1, 0, 0, 1};
  static const std::vector<float> doc0 = {2, 3};
  static const std::vector<float> doc1 = {1, 1, -1, 5};
  Notification done;
  absl::StatusOr<std::vector<float>> result;
  pipeline.ScoreMaxSim(entry, {query.data(), 2, 2}, {{doc0.data(), 1, 2}, {doc1.data(), 2, 2}},
                       [&](absl::StatusOr<std::vector<float>> scores) {
                         result = std::move(scores);
                         done.Notify();
                       });
  REQUIRE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  REQUIRE(result.ok());
  return *result;
}

}  // namespace

TEST_CASE("Rerank scoring uses the model's device MaxSim off the CPU, the host path on it") {
  PipelineOptions options;
  Pipeline pipeline(options);
  auto on_gpu = std::make_unique<DeviceScoringModel>("cuda:0", true);
  auto on_cpu = std::make_unique<DeviceScoringModel>("cpu", true);
  auto without = std::make_unique<DeviceScoringModel>("cuda:0", false);
  DeviceScoringModel* gpu = on_gpu.get();
  DeviceScoringModel* cpu = on_cpu.get();
  DeviceScoringModel* none = without.get();
  pipeline.AddLoading("gpu", "memory");
  pipeline.SetReady("gpu", std::move(on_gpu));
  pipeline.AddLoading("cpu", "memory");
  pipeline.SetReady("cpu", std::move(on_cpu));
  pipeline.AddLoading("none", "memory");
  pipeline.SetReady("none", std::move(without));
  pipeline.Start();

  // Host MaxSim by hand: doc0: max(2) + max(3) = 5; doc1: max(1, -1) + max(1, 5) = 6.
  const std::vector<float> host = {5.f, 6.f};
  CHECK(Score(pipeline, "gpu") == std::vector<float>{1000.f, 1001.f});
  CHECK(gpu->calls.load() == 1);
  CHECK(gpu->on_thread != std::this_thread::get_id());
  CHECK(Score(pipeline, "cpu") == host);
  CHECK(cpu->calls.load() == 0);
  CHECK(Score(pipeline, "none") == host);  // UNIMPLEMENTED on the device: the host path
  CHECK(none->calls.load() == 1);
  pipeline.Stop();
}

}  // namespace embedserve::pipeline

// Items still being prepared hold a partial batch back (up to a fraction of the last
// forward's time), and the executor's count of them returns to zero however calls end.
namespace embedserve::pipeline {

TEST_CASE("BatchQueue: a partial batch waits for items still being prepared, within bounds") {
  BatchPolicy policy{16, absl::Milliseconds(2), 100, 0};
  policy.incoming_wait_fraction = 0.25;
  BatchQueue queue(policy);
  queue.set_last_forward(absl::Milliseconds(400));
  Outcome outcome;
  auto call = MakeCall({"1"}, &outcome);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  REQUIRE(queue.Push(QueuedItem{call, 0, 1, t0}));
  CHECK(queue.ReadyAt() == t0 + absl::Milliseconds(2));  // nothing on its way: the delay
  queue.AddIncoming(3);
  CHECK(queue.ReadyAt() == t0 + absl::Milliseconds(100));  // 0.25 x 400 ms
  queue.AddIncoming(-3);
  CHECK(queue.ReadyAt() == t0 + absl::Milliseconds(2));
  queue.AddIncoming(-5);  // never below zero
  CHECK(queue.incoming() == 0);
  // A short last forward never shortens the configured delay.
  queue.set_last_forward(absl::Milliseconds(1));
  queue.AddIncoming(1);
  CHECK(queue.ReadyAt() == t0 + absl::Milliseconds(2));
  // Off.
  BatchPolicy off = policy;
  off.incoming_wait_fraction = 0;
  BatchQueue plain(off);
  plain.set_last_forward(absl::Milliseconds(400));
  REQUIRE(plain.Push(QueuedItem{call, 0, 1, t0}));
  plain.AddIncoming(3);
  CHECK(plain.ReadyAt() == t0 + absl::Milliseconds(2));
  // A full batch is ready at once, whatever is on its way.
  BatchQueue full(BatchPolicy{2, absl::Milliseconds(2), 100, 0});
  full.set_last_forward(absl::Seconds(10));
  full.AddIncoming(5);
  REQUIRE(full.Push(QueuedItem{call, 0, 1, t0}));
  REQUIRE(full.Push(QueuedItem{call, 0, 1, t0}));
  CHECK(full.ReadyAt() == absl::InfinitePast());
}

TEST_CASE("the count of items being prepared returns to zero after good, bad and refused calls") {
  Harness h(BatchPolicy{4, absl::Milliseconds(1), 100, 0});
  std::vector<std::unique_ptr<Outcome>> outcomes;
  for (int i = 0; i < 20; ++i) {
    outcomes.push_back(std::make_unique<Outcome>());
    h.pipeline->Submit(h.entry, MakeCall({"3", i % 3 == 0 ? "bad" : "2", "1"}, outcomes.back().get()));
  }
  // A call whose deadline has passed is skipped in preprocessing.
  outcomes.push_back(std::make_unique<Outcome>());
  h.pipeline->Submit(h.entry, MakeCall({"1", "2"}, outcomes.back().get(), absl::InfinitePast()));
  for (auto& o : outcomes) REQUIRE(o->done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK(outcomes[0]->status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(outcomes[1]->status.ok());
  for (int i = 0; i < 100 && h.pipeline->executor().IncomingItems(h.entry->QueueFor(Modality::kText)) != 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));  // a failed call's other items may still be in the pool
  }
  CHECK(h.pipeline->executor().IncomingItems(h.entry->QueueFor(Modality::kText)) == 0);
}

}  // namespace embedserve::pipeline
