// The device executor: the one thread that runs model forwards (and so the only code that
// touches the device and the weights). It owns every model's batch queues (lanes, one per
// model and modality) and shares the device between them by time, so a cheap model is not
// held behind an expensive one.
//
// Scheduling policy (start-time fair queuing over measured forward durations):
// - Each lane has a virtual finish time: the device time it has used, in the same units for
//   every lane. A forward's measured duration (launch to outputs) is added to its lane's when
//   the forward finishes.
// - Among the lanes with a ready batch the executor takes the one with the smallest start
//   tag, max(lane's finish time, virtual clock); ties go round-robin by queue id. The virtual
//   clock is the start tag of the latest batch taken, so a lane that was idle comes back
//   level with the others: it banks no credit while idle, and is not charged for the batch
//   another lane has on the device. While two lanes have work, neither's device time runs
//   ahead of the other's by more than about one forward.
// - Forwards are not preempted, so a cheap lane may still wait for one expensive forward.
//   To bound that wait, while another lane competes (has items waiting or being prepared, or
//   took a batch within the last slice) a lane's batch holds only as many items as its last
//   measured time per item fits in ExecutorOptions::time_slice (at least one; one item until
//   a forward of it was measured). Alone on the device a lane takes full batches.
//
// Priority classes (bulk < normal < interactive; EmbedCall::priority):
// - A batch holds items of one class. Among ready batches a higher class goes first, in any
//   lane; lanes of equal class share by device time as above.
// - Aging: a lower class whose batch is ready but that has not been served for
//   ExecutorOptions::priority_aging (counted from its last batch or its oldest item's
//   arrival, whichever is later) goes before every class, so bulk work always progresses.
// - While a higher class is active (has items waiting, or took a batch within
//   ExecutorOptions::priority_hold), a lower class's batch holds only as many items as fit,
//   at the lane's measured time per item, in the higher class's last forward: a query that
//   arrives while bulk work is on the device waits about one query forward, not one full
//   bulk batch.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include <mutex>
#include <condition_variable>
#include "server/metrics/metrics.h"
#include "server/models/model.h"
#include "server/pipeline/batch_queue.h"

namespace embedserve::pipeline {

struct ExecutorOptions {
  // While lanes compete, the longest forward a lane's batch is sized for (see the header);
  // zero: no slice (lanes take full batches, shared by forward time only).
  absl::Duration time_slice = absl::Milliseconds(50);
  // How long a lower priority class may go unserved while its batch is ready.
  absl::Duration priority_aging = absl::Seconds(1);
  // How long after a higher class last took a batch lower classes keep their batches short.
  absl::Duration priority_hold = absl::Seconds(1);
  // The clock forwards are timed with and batches are made ready by (tests use a fake one).
  std::function<absl::Time()> clock = [] { return absl::Now(); };
};

// Thread-safe. AddQueue before Start. Enqueue never blocks: a full queue answers
// RESOURCE_EXHAUSTED and keeps nothing. Stop() runs what is queued, then joins.
//
// Out of memory: when a forward returns RESOURCE_EXHAUSTED, that batch's calls fail with
// RESOURCE_EXHAUSTED ("out of memory ...; batch size reduced to N"), the queue's effective
// max batch size drops to half the failed batch (at least 1, at most its previous value),
// and grows back by one after every BatchPolicy::oom_recovery_batches successful forwards,
// up to the configured max_batch_size. The executor keeps serving throughout.
class DeviceExecutor {
 public:
  explicit DeviceExecutor(ExecutorOptions options = {});
  ~DeviceExecutor();
  DeviceExecutor(const DeviceExecutor&) = delete;
  DeviceExecutor& operator=(const DeviceExecutor&) = delete;

  // Registers a queue feeding `model` with inputs of `modality`; returns its id (never
  // reused). The queue shares ownership of the model. `model_name` labels its metrics.
  int AddQueue(std::shared_ptr<models::Model> model, const std::string& model_name,
               Modality modality, BatchPolicy policy);
  // The queue takes items as before, but is removed (and lets go of its model) as soon as
  // it is empty: a replaced or unloaded model version drains, then is freed.
  void RetireQueue(int queue_id);

  void Start();
  void Stop();

  // Announces `delta` items that will be Enqueued to the queue once prepared (each Enqueue
  // takes one off); a negative `delta` takes off those that will not come (failed or skipped).
  void AddIncoming(int queue_id, int delta);
  absl::Status Enqueue(int queue_id, QueuedItem item);
  // Runs `task` on the executor thread, between batches and before any batch not yet taken
  // (device work other than forwards, such as MaxSim scoring). UNAVAILABLE once stopping.
  absl::Status Post(std::function<void()> task);
  int QueueDepth(int queue_id) const;
  // Items announced (AddIncoming) and not yet enqueued or forgotten; 0 if no such queue.
  int IncomingItems(int queue_id) const;
  // Items waiting per queue, labelled by model and modality (for the queue depth gauge).
  std::vector<std::pair<metrics::Labels, double>> QueueDepths() const;
  // The current effective max batch size per queue (the configured one unless lowered
  // after an out-of-memory forward), labelled by model and modality (for a gauge).
  std::vector<std::pair<metrics::Labels, double>> EffectiveBatchSizes() const;
  // The same for one queue; 0 if there is no such queue.
  int EffectiveBatchSize(int queue_id) const;

 private:
  struct Queue;

  // A batch handed to the model whose outputs have not been collected yet.
  struct Launched {
    Queue* queue = nullptr;
    Priority priority = Priority::kNormal;
    std::vector<QueuedItem> batch;
    std::unique_ptr<models::PendingBatch> pending;
    absl::Time start;
  };

  void RunLoop();
  // With mu_ held: the ready lane and class to serve next (see the header), or null if none
  // is ready; lowers `*wake` to when a waiting batch becomes ready.
  Queue* PickLane(absl::Time now, absl::Time* wake, bool* any_items, Priority* priority);
  // With mu_ held: the most items `queue`'s next batch of `priority` may hold (the time slice
  // while other lanes compete, the priority slice while a higher class is active).
  int BatchLimit(const Queue& queue, Priority priority, absl::Time now) const;
  Launched Launch(Queue& queue, Priority priority, std::vector<QueuedItem> batch);
  void Finish(Launched launched);

  // std::mutex rather than absl::Mutex: ThreadSanitizer cannot see through Debian's
  // uninstrumented absl build (the pipeline runs under TSan in CI).
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::map<int, std::unique_ptr<Queue>> queues_ ABSL_GUARDED_BY(mu_);
  int next_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  const ExecutorOptions options_;
  int last_served_ ABSL_GUARDED_BY(mu_) = -1;  // the queue id ties are broken after
  // The start tag of the latest batch taken: device time, never decreasing.
  absl::Duration virtual_clock_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  // Per priority class, over every lane: when it last took a batch, and its last forward's
  // duration (zero until measured).
  std::array<absl::Time, kPriorityCount> class_last_taken_ ABSL_GUARDED_BY(mu_);
  std::array<absl::Duration, kPriorityCount> class_forward_ ABSL_GUARDED_BY(mu_) = {};
  std::thread thread_;
};

}  // namespace embedserve::pipeline
