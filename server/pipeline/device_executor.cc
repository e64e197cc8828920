// The device executor loop: pick the lane owed device time, run its batch, fan results back
// to calls, and charge the forward's measured duration to the lane.
#include "server/pipeline/device_executor.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/metrics/metrics.h"

namespace embedserve::pipeline {


struct DeviceExecutor::Queue {
  Queue(std::shared_ptr<models::Model> m, const std::string& name, Modality mod,
        BatchPolicy policy)
      : model(std::move(m)), modality(mod), items(policy),
        labels({{"model", name}, {"modality", ModalityName(mod)}}) {
    class_served.fill(absl::InfinitePast());
    auto& registry = metrics::Global();
    batch_size = &registry.GetHistogram("embedserve_batch_size", "Items per model forward",
                                        labels, metrics::SizeBuckets());
    inference = &registry.GetHistogram("embedserve_inference_seconds",
                                       "Duration of model forwards", labels,
                                       metrics::LatencyBuckets());
    queue_wait = &registry.GetHistogram("embedserve_queue_seconds",
                                        "Time items waited for their batch and the device",
                                        labels, metrics::LatencyBuckets());
    for (int c = 0; c < kPriorityCount; ++c) {
      metrics::Labels with_class = labels;
      with_class.emplace_back("priority", PriorityName(static_cast<Priority>(c)));
      class_queue_wait[c] = &registry.GetHistogram(
          "embedserve_priority_queue_seconds",
          "Time items waited for their batch and the device, by priority class", with_class,
          metrics::LatencyBuckets());
    }
    items_done = &registry.GetCounter("embedserve_items_total", "Items computed", labels);
    skipped = &registry.GetCounter("embedserve_items_skipped_total",
                                   "Items dropped before compute (cancelled or past deadline)",
                                   labels);
    failed = &registry.GetCounter("embedserve_batch_failures_total", "Forwards that failed",
                                  labels);
    out_of_memory = &registry.GetCounter(
        "embedserve_out_of_memory_total",
        "Forwards that ran out of memory (the queue's batch size was reduced)", labels);
  }
  std::shared_ptr<models::Model> model;
  Modality modality;
  BatchQueue items;
  bool retiring = false;
  int in_flight = 0;  // launched batches not yet finished (changed under mu_)
  metrics::Labels labels;
  metrics::Histogram* batch_size;
  metrics::Histogram* inference;
  metrics::Histogram* queue_wait;
  std::array<metrics::Histogram*, kPriorityCount> class_queue_wait = {};
  metrics::Counter* items_done;
  metrics::Counter* skipped;
  metrics::Counter* failed;
  metrics::Counter* out_of_memory;
  // Successful forwards since the effective batch size last changed (guarded by mu_).
  int successes_since_change = 0;
  // Fair sharing (guarded by mu_): the device time this lane has used, as a virtual finish
  // time; its last forward's duration per item (zero until measured); when it last took a
  // batch.
  absl::Duration finish_tag = absl::ZeroDuration();
  absl::Duration per_item = absl::ZeroDuration();
  absl::Time last_taken = absl::InfinitePast();
  // Priority aging (guarded by mu_): when each class last took a batch from this lane.
  std::array<absl::Time, kPriorityCount> class_served;
};

DeviceExecutor::DeviceExecutor(ExecutorOptions options) : options_(std::move(options)) {
  class_last_taken_.fill(absl::InfinitePast());
}
DeviceExecutor::~DeviceExecutor() { Stop(); }

int DeviceExecutor::AddQueue(std::shared_ptr<models::Model> model, const std::string& model_name,
                             Modality modality, BatchPolicy policy) {
  auto queue = std::make_unique<Queue>(std::move(model), model_name, modality, policy);
  std::lock_guard<std::mutex> lock(mu_);
  const int id = next_id_++;
  queues_[id] = std::move(queue);
  return id;
}

void DeviceExecutor::RetireQueue(int queue_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = queues_.find(queue_id);
    if (it == queues_.end()) return;
    // Only the executor thread erases queues (it may be running this one's batch).
    it->second->retiring = true;
  }
  wake_.notify_one();
}

void DeviceExecutor::Start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { RunLoop(); });
}

void DeviceExecutor::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status DeviceExecutor::Enqueue(int queue_id, QueuedItem item) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = queues_.find(queue_id);
    if (it == queues_.end()) {
      return absl::UnavailableError("the model was unloaded; retry to use its new version");
    }
    Queue& queue = *it->second;
    queue.items.AddIncoming(-1);
    if (!queue.items.Push(std::move(item))) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the model's queue is full (", queue.items.policy().queue_capacity,
          " items, --queue-capacity); retry with backoff"));
    }
  }
  wake_.notify_one();
  return absl::OkStatus();
}

void DeviceExecutor::AddIncoming(int queue_id, int delta) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = queues_.find(queue_id);
    if (it == queues_.end()) return;
    it->second->items.AddIncoming(delta);
  }
  if (delta < 0) wake_.notify_one();  // a partial batch may have been waiting for these
}

int DeviceExecutor::IncomingItems(int queue_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = queues_.find(queue_id);
  return it == queues_.end() ? 0 : it->second->items.incoming();
}

int DeviceExecutor::QueueDepth(int queue_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = queues_.find(queue_id);
  return it == queues_.end() ? 0 : it->second->items.size();
}

absl::Status DeviceExecutor::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("the server is shutting down");
    tasks_.push_back(std::move(task));
  }
  wake_.notify_one();
  return absl::OkStatus();
}

// At most two batches are out at once: the executor launches the next ready batch before
// waiting for the one on the device, so on an asynchronous device (CUDA) the next batch's
// input copy and launch overlap the current one's compute. A synchronous device (CPU)
// finishes a batch at launch, and it is completed at once.
void DeviceExecutor::RunLoop() {
  std::optional<Launched> in_flight;
  while (true) {
    Queue* chosen = nullptr;
    Priority priority = Priority::kNormal;
    std::function<void()> task;
    std::vector<std::unique_ptr<Queue>> retired;
    std::vector<QueuedItem> batch;
    std::vector<QueuedItem> skipped;
    bool finish_in_flight = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (chosen == nullptr && !task && !finish_in_flight) {
        const absl::Time now = options_.clock();
        absl::Time wake = absl::InfiniteFuture();
        bool any_items = false;
        // Retired queues that drained are dropped here (their models freed after unlock).
        for (auto it = queues_.begin(); it != queues_.end();) {
          if (it->second->retiring && it->second->items.empty() &&
              it->second->in_flight == 0) {
            retired.push_back(std::move(it->second));
            it = queues_.erase(it);
          } else {
            ++it;
          }
        }
        if (!tasks_.empty()) {
          task = std::move(tasks_.front());
          tasks_.pop_front();
          break;
        }
        chosen = PickLane(now, &wake, &any_items, &priority);
        if (chosen != nullptr) break;
        // Nothing to launch: finish the batch on the device rather than sleep.
        if (in_flight) {
          finish_in_flight = true;
          break;
        }
        if (stopping_ && !any_items) return;
        if (!retired.empty()) {
          // Free drained retired models now (outside the lock), not after the next batch:
          // an idle server must give an unloaded model's memory back.
          lock.unlock();
          retired.clear();
          lock.lock();
          continue;
        }
        // Sleep until a batch may be ready or the queues change (Enqueue, RetireQueue, Post
        // and Stop notify; a spurious wake-up just re-evaluates).
        if (wake == absl::InfiniteFuture()) {
          wake_.wait(lock);
        } else {
          wake_.wait_until(lock, absl::ToChronoTime(wake));
        }
      }
      if (chosen != nullptr) {
        const absl::Time now = options_.clock();
        batch = chosen->items.TakeBatch(now, &skipped, BatchLimit(*chosen, priority, now),
                                        priority);
        chosen->last_taken = now;
        chosen->class_served[static_cast<int>(priority)] = now;
        class_last_taken_[static_cast<int>(priority)] = now;
        if (!batch.empty()) ++chosen->in_flight;
      }
    }
    retired.clear();
    if (task) {
      task();
      continue;
    }
    if (finish_in_flight) {
      Finish(*std::move(in_flight));
      in_flight.reset();
      continue;
    }
    // Items skipped for cancellation or deadline: complete their calls (idempotent).
    chosen->skipped->Add(skipped.size());
    for (QueuedItem& item : skipped) item.call->Cancel();
    if (batch.empty()) continue;
    Launched launched = Launch(*chosen, priority, std::move(batch));
    if (in_flight) {
      Finish(*std::move(in_flight));
      in_flight.reset();
    }
    if (launched.pending->done()) {
      Finish(std::move(launched));
    } else {
      in_flight = std::move(launched);
    }
  }
}

DeviceExecutor::Queue* DeviceExecutor::PickLane(absl::Time now, absl::Time* wake,
                                                bool* any_items, Priority* priority) {
  // Which classes of which lanes have a ready batch, and the highest of them anywhere.
  struct Ready {
    int id;
    Queue* queue;
    std::array<bool, kPriorityCount> ready;
  };
  std::vector<Ready> lanes;
  int top = -1;
  // Lanes in round-robin order after the one served last, so the first of equal tags wins.
  auto it = queues_.upper_bound(last_served_);
  for (size_t k = 0; k < queues_.size(); ++k, ++it) {
    if (it == queues_.end()) it = queues_.begin();
    Queue& q = *it->second;
    if (q.items.empty()) continue;
    *any_items = true;
    Ready lane{it->first, &q, {}};
    bool any_ready = false;
    for (int c = 0; c < kPriorityCount; ++c) {
      const absl::Time ready = q.items.ReadyAt(static_cast<Priority>(c));
      if (ready == absl::InfiniteFuture()) continue;  // no items of this class
      // While stopping, flush without waiting for batches to fill.
      if (ready > now && !stopping_) {
        *wake = std::min(*wake, ready);
        continue;
      }
      lane.ready[c] = any_ready = true;
      top = std::max(top, c);
    }
    if (any_ready) lanes.push_back(lane);
  }
  // Each lane's candidate: its highest ready class, or a lower-than-top class that went
  // unserved for priority_aging (the most starved); ranked by class, aged ones above all.
  Queue* best = nullptr;
  int best_id = -1;
  int best_rank = -1;
  Priority best_class = Priority::kNormal;
  absl::Duration best_start;
  for (const Ready& lane : lanes) {
    const Queue& q = *lane.queue;
    int rank = -1;
    Priority cls = Priority::kNormal;
    absl::Duration most_starved = options_.priority_aging;
    for (int c = kPriorityCount - 1; c >= 0; --c) {
      if (!lane.ready[c]) continue;
      if (rank < 0) {
        rank = c;
        cls = static_cast<Priority>(c);
      }
      if (c >= top) continue;
      const absl::Duration starved =
          now - std::max(q.class_served[c], q.items.OldestQueued(static_cast<Priority>(c)));
      if (starved >= most_starved) {
        most_starved = starved;
        rank = kPriorityCount;
        cls = static_cast<Priority>(c);
      }
    }
    const absl::Duration start = std::max(q.finish_tag, virtual_clock_);
    if (best == nullptr || rank > best_rank || (rank == best_rank && start < best_start)) {
      best = lane.queue;
      best_id = lane.id;
      best_rank = rank;
      best_class = cls;
      best_start = start;
    }
  }
  if (best != nullptr) {
    last_served_ = best_id;
    virtual_clock_ = best_start;
    best->finish_tag = best_start;  // the forward's duration is added when it finishes
    *priority = best_class;
  }
  return best;
}

int DeviceExecutor::BatchLimit(const Queue& queue, Priority priority, absl::Time now) const {
  const int full = queue.items.effective_max_batch_size();
  auto items_fitting = [&](absl::Duration budget) {
    if (queue.per_item <= absl::ZeroDuration() || budget <= absl::ZeroDuration()) {
      return 1;  // not measured yet: one item
    }
    return static_cast<int>(std::clamp<int64_t>(budget / queue.per_item, 1, full));
  };
  int limit = full;
  // The priority slice: a higher class is active somewhere.
  for (int c = static_cast<int>(priority) + 1; c < kPriorityCount; ++c) {
    bool active = now - class_last_taken_[c] < options_.priority_hold;
    for (const auto& [id, other] : queues_) {
      if (active) break;
      active = other->items.size(static_cast<Priority>(c)) > 0;
    }
    if (active) limit = std::min(limit, items_fitting(class_forward_[c]));
  }
  if (options_.time_slice <= absl::ZeroDuration()) return limit;  // no time slice
  bool competing = false;
  for (const auto& [id, other] : queues_) {
    if (other.get() == &queue) continue;
    if (!other->items.empty() || other->items.incoming() > 0 ||
        now - other->last_taken < options_.time_slice) {
      competing = true;
      break;
    }
  }
  if (!competing) return limit;
  return std::min(limit, items_fitting(options_.time_slice));
}

DeviceExecutor::Launched DeviceExecutor::Launch(Queue& queue, Priority priority,
                                                std::vector<QueuedItem> batch) {
  Launched launched;
  launched.queue = &queue;
  launched.priority = priority;
  launched.start = options_.clock();
  for (QueuedItem& item : batch) {
    item.call->NoteQueueTime(launched.start - item.enqueued);
    const double waited = absl::ToDoubleSeconds(launched.start - item.enqueued);
    queue.queue_wait->Observe(waited);
    queue.class_queue_wait[static_cast<int>(priority)]->Observe(waited);
  }
  if (queue.modality == Modality::kImage) {
    std::vector<const models::ImageInput*> inputs;
    inputs.reserve(batch.size());
    for (QueuedItem& item : batch) inputs.push_back(&item.call->image(item.index));
    launched.pending = queue.model->LaunchImages(inputs);
  } else {  // texts, and pairs (tokenized as one sequence each)
    std::vector<const models::TextInput*> inputs;
    inputs.reserve(batch.size());
    for (QueuedItem& item : batch) inputs.push_back(&item.call->text(item.index));
    launched.pending = queue.modality == Modality::kText ? queue.model->LaunchTexts(inputs)
                                                         : queue.model->LaunchPairs(inputs);
  }
  launched.batch = std::move(batch);
  return launched;
}

void DeviceExecutor::Finish(Launched launched) {
  Queue& queue = *launched.queue;
  std::vector<QueuedItem>& batch = launched.batch;
  absl::StatusOr<std::vector<models::Embedding>> outputs = launched.pending->Wait();
  launched.pending.reset();
  const absl::Duration inference = options_.clock() - launched.start;
  {
    std::lock_guard<std::mutex> lock(mu_);
    --queue.in_flight;
    queue.items.set_last_forward(inference);
    queue.finish_tag += inference;
    queue.per_item = inference / static_cast<int64_t>(batch.size());
    class_forward_[static_cast<int>(launched.priority)] = inference;
  }
  if (outputs.ok() && outputs->size() != batch.size()) {
    outputs = absl::InternalError(absl::StrCat("the model returned ", outputs->size(),
                                               " outputs for a batch of ", batch.size()));
  }
  queue.batch_size->Observe(static_cast<double>(batch.size()));
  queue.inference->Observe(absl::ToDoubleSeconds(inference));
  if (!outputs.ok()) {
    queue.failed->Add();
    absl::Status status = outputs.status();
    if (status.code() == absl::StatusCode::kResourceExhausted) {
      // Out of memory: shrink this queue's batches and fail this batch; keep serving.
      queue.out_of_memory->Add();
      const int n = static_cast<int>(batch.size());
      int before, after;
      {
        std::lock_guard<std::mutex> lock(mu_);
        before = queue.items.effective_max_batch_size();
        queue.items.set_effective_max_batch_size(std::min(before, n) / 2);
        after = queue.items.effective_max_batch_size();
        queue.successes_since_change = 0;
      }
      status = absl::ResourceExhaustedError(absl::StrCat(
          "out of memory running a batch of ", n, " ", ModalityName(queue.modality),
          " inputs (", status.message(), "); the model's max batch size was reduced from ",
          before, " to ", after, "; retry"));
    }
    for (QueuedItem& item : batch) item.call->Fail(status);
    return;
  }
  {
    // Grow back slowly after an out-of-memory reduction.
    std::lock_guard<std::mutex> lock(mu_);
    const int effective = queue.items.effective_max_batch_size();
    if (effective < queue.items.policy().max_batch_size &&
        ++queue.successes_since_change >= std::max(1, queue.items.policy().oom_recovery_batches)) {
      queue.items.set_effective_max_batch_size(effective + 1);
      queue.successes_since_change = 0;
    }
  }
  queue.items_done->Add(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i].call->NoteInferenceTime(inference);
    const std::vector<float>& values = (*outputs)[i].values;
    if (!std::all_of(values.begin(), values.end(), [](float v) { return std::isfinite(v); })) {
      // Never an OK answer with NaN or Inf in it: corrupt weights, or an input that drives
      // the model out of range. Only this item's call fails.
      batch[i].call->Fail(absl::InternalError(absl::StrCat(
          batch[i].call->input(batch[i].index).field,
          ": the model produced non-finite values (NaN or Inf); its weights may be corrupt")));
      continue;
    }
    batch[i].call->SetResult(batch[i].index, std::move((*outputs)[i]));
  }
}

std::vector<std::pair<metrics::Labels, double>> DeviceExecutor::QueueDepths() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<metrics::Labels, double>> out;
  for (const auto& [id, q] : queues_) out.emplace_back(q->labels, q->items.size());
  return out;
}

std::vector<std::pair<metrics::Labels, double>> DeviceExecutor::EffectiveBatchSizes() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<metrics::Labels, double>> out;
  for (const auto& [id, q] : queues_) {
    out.emplace_back(q->labels, q->items.effective_max_batch_size());
  }
  return out;
}

int DeviceExecutor::EffectiveBatchSize(int queue_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = queues_.find(queue_id);
  return it == queues_.end() ? 0 : it->second->items.effective_max_batch_size();
}

}  // namespace embedserve::pipeline
