// The device executor loop: wait for a ready batch, run it, fan results back to calls.
#include "server/pipeline/device_executor.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/metrics/metrics.h"

namespace embedserve::pipeline {

const char* ModalityName(Modality modality) {
  return modality == Modality::kText ? "text" : "image";
}

struct DeviceExecutor::Queue {
  Queue(std::shared_ptr<models::Model> m, const std::string& name, Modality mod,
        BatchPolicy policy)
      : model(std::move(m)), modality(mod), items(policy),
        labels({{"model", name}, {"modality", ModalityName(mod)}}) {
    auto& registry = metrics::Global();
    batch_size = &registry.GetHistogram("embedserve_batch_size", "Items per model forward",
                                        labels, metrics::SizeBuckets());
    inference = &registry.GetHistogram("embedserve_inference_seconds",
                                       "Duration of model forwards", labels,
                                       metrics::LatencyBuckets());
    queue_wait = &registry.GetHistogram("embedserve_queue_seconds",
                                        "Time items waited for their batch and the device",
                                        labels, metrics::LatencyBuckets());
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
  metrics::Labels labels;
  metrics::Histogram* batch_size;
  metrics::Histogram* inference;
  metrics::Histogram* queue_wait;
  metrics::Counter* items_done;
  metrics::Counter* skipped;
  metrics::Counter* failed;
  metrics::Counter* out_of_memory;
  // Successful forwards since the effective batch size last changed (guarded by mu_).
  int successes_since_change = 0;
};

DeviceExecutor::DeviceExecutor() = default;
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
    if (!queue.items.Push(std::move(item))) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the model's queue is full (", queue.items.policy().queue_capacity,
          " items, --queue-capacity); retry with backoff"));
    }
  }
  wake_.notify_one();
  return absl::OkStatus();
}

int DeviceExecutor::QueueDepth(int queue_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = queues_.find(queue_id);
  return it == queues_.end() ? 0 : it->second->items.size();
}

void DeviceExecutor::RunLoop() {
  while (true) {
    Queue* chosen = nullptr;
    std::vector<std::unique_ptr<Queue>> retired;
    std::vector<QueuedItem> batch;
    std::vector<QueuedItem> skipped;
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (chosen == nullptr) {
        const absl::Time now = absl::Now();
        absl::Time wake = absl::InfiniteFuture();
        bool any_items = false;
        // Retired queues that drained are dropped here (their models freed after unlock).
        for (auto it = queues_.begin(); it != queues_.end();) {
          if (it->second->retiring && it->second->items.empty()) {
            retired.push_back(std::move(it->second));
            it = queues_.erase(it);
          } else {
            ++it;
          }
        }
        // Round-robin: start after the queue served last, wrap around.
        auto start = queues_.upper_bound(last_served_);
        for (size_t k = 0; k < queues_.size() && chosen == nullptr; ++k) {
          if (start == queues_.end()) start = queues_.begin();
          Queue& q = *start->second;
          const int id = start->first;
          ++start;
          if (q.items.empty()) continue;
          any_items = true;
          const absl::Time ready = q.items.ReadyAt();
          // While stopping, flush without waiting for batches to fill.
          if (ready <= now || stopping_) {
            chosen = &q;
            last_served_ = id;
          } else if (ready < wake) {
            wake = ready;
          }
        }
        if (chosen != nullptr) break;
        if (stopping_ && !any_items) return;
        if (!retired.empty()) {
          // Free drained retired models now (outside the lock), not after the next batch:
          // an idle server must give an unloaded model's memory back.
          lock.unlock();
          retired.clear();
          lock.lock();
          continue;
        }
        // Sleep until a batch may be ready or the queues change (Enqueue, RetireQueue and
        // Stop notify; a spurious wake-up just re-evaluates).
        if (wake == absl::InfiniteFuture()) {
          wake_.wait(lock);
        } else {
          wake_.wait_until(lock, absl::ToChronoTime(wake));
        }
      }
      batch = chosen->items.TakeBatch(absl::Now(), &skipped);
    }
    // Items skipped for cancellation or deadline: complete their calls (idempotent).
    chosen->skipped->Add(skipped.size());
    for (QueuedItem& item : skipped) item.call->Cancel();
    RunBatch(*chosen, std::move(batch));
  }
}

void DeviceExecutor::RunBatch(Queue& queue, std::vector<QueuedItem> batch) {
  if (batch.empty()) return;
  const absl::Time start = absl::Now();
  for (QueuedItem& item : batch) {
    item.call->NoteQueueTime(start - item.enqueued);
    queue.queue_wait->Observe(absl::ToDoubleSeconds(start - item.enqueued));
  }

  absl::StatusOr<std::vector<models::Embedding>> outputs;
  if (queue.modality == Modality::kText) {
    std::vector<const models::TextInput*> inputs;
    inputs.reserve(batch.size());
    for (QueuedItem& item : batch) inputs.push_back(&item.call->text(item.index));
    outputs = queue.model->EmbedTexts(inputs);
  } else {
    std::vector<const models::ImageInput*> inputs;
    inputs.reserve(batch.size());
    for (QueuedItem& item : batch) inputs.push_back(&item.call->image(item.index));
    outputs = queue.model->EmbedImages(inputs);
  }
  const absl::Duration inference = absl::Now() - start;
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
