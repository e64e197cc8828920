// The device executor: the one thread that runs model forwards (and so the only code that
// touches the device and the weights). It owns every model's batch queues and serves them
// round-robin, so no model or modality starves another.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/models/model.h"
#include "server/pipeline/batch_queue.h"

namespace embedserve::pipeline {

// What the executor reports about each batch it ran (for metrics and logs).
struct BatchReport {
  int queue_id = 0;
  int size = 0;
  int skipped = 0;
  absl::Duration inference;
  absl::Status status;
};

// Thread-safe. AddQueue before Start. Enqueue never blocks: a full queue answers
// RESOURCE_EXHAUSTED and keeps nothing. Stop() runs what is queued, then joins.
class DeviceExecutor {
 public:
  using BatchObserver = std::function<void(const BatchReport&)>;

  DeviceExecutor() = default;
  ~DeviceExecutor();
  DeviceExecutor(const DeviceExecutor&) = delete;
  DeviceExecutor& operator=(const DeviceExecutor&) = delete;

  // Registers a queue feeding `model` with inputs of `modality`; returns its id.
  // `model` must outlive the executor.
  int AddQueue(models::Model* model, Modality modality, BatchPolicy policy);
  void SetBatchObserver(BatchObserver observer);

  void Start();
  void Stop();

  absl::Status Enqueue(int queue_id, QueuedItem item);
  int QueueDepth(int queue_id) const;

 private:
  struct Queue {
    models::Model* model;
    Modality modality;
    BatchQueue items;
  };

  void RunLoop();
  void RunBatch(Queue& queue, int queue_id, std::vector<QueuedItem> batch, int skipped);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Queue>> queues_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int next_queue_ ABSL_GUARDED_BY(mu_) = 0;
  BatchObserver observer_;
  std::thread thread_;
};

}  // namespace embedserve::pipeline
