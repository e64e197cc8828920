// The device executor: the one thread that runs model forwards (and so the only code that
// touches the device and the weights). It owns every model's batch queues and serves them
// round-robin, so no model or modality starves another.
#pragma once

#include <cstdint>
#include <string>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include <mutex>
#include <condition_variable>
#include "server/metrics/metrics.h"
#include "server/models/model.h"
#include "server/pipeline/batch_queue.h"

namespace embedserve::pipeline {

// Thread-safe. AddQueue before Start. Enqueue never blocks: a full queue answers
// RESOURCE_EXHAUSTED and keeps nothing. Stop() runs what is queued, then joins.
class DeviceExecutor {
 public:
  DeviceExecutor();
  ~DeviceExecutor();
  DeviceExecutor(const DeviceExecutor&) = delete;
  DeviceExecutor& operator=(const DeviceExecutor&) = delete;

  // Registers a queue feeding `model` with inputs of `modality`; returns its id.
  // `model` must outlive the executor. `model_name` labels its metrics.
  int AddQueue(models::Model* model, const std::string& model_name, Modality modality,
               BatchPolicy policy);

  void Start();
  void Stop();

  absl::Status Enqueue(int queue_id, QueuedItem item);
  int QueueDepth(int queue_id) const;
  // Items waiting per queue, labelled by model and modality (for the queue depth gauge).
  std::vector<std::pair<metrics::Labels, double>> QueueDepths() const;

 private:
  struct Queue;

  void RunLoop();
  void RunBatch(Queue& queue, std::vector<QueuedItem> batch);

  // std::mutex rather than absl::Mutex: ThreadSanitizer cannot see through Debian's
  // uninstrumented absl build (the pipeline runs under TSan in CI).
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::vector<std::unique_ptr<Queue>> queues_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int next_queue_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace embedserve::pipeline
