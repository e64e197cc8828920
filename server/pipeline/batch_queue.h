// The dynamic batcher's queue for one (model, modality): holds prepared items from many
// calls and decides when a batch is ready and which items go into it.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "server/pipeline/embed_call.h"

namespace embedserve::pipeline {

struct BatchPolicy {
  // Most items in one forward.
  int max_batch_size = 32;
  // How long the oldest item may wait for a batch to fill (0: take what is there).
  absl::Duration max_queue_delay = absl::Microseconds(2000);
  // Most items waiting; beyond it Push refuses.
  int queue_capacity = 1024;
  // Texts: most padded tokens (longest text x count) per batch; 0 for no budget.
  int max_batch_tokens = 0;
  // Costs within this fraction of the oldest item's count as equal when a batch is formed
  // and keep arrival order, so a call's items leave together (a call completes after its own
  // batches, not after every call's); further ones join closest first. 0: closest first.
  double similar_cost_fraction = 0.125;
  // While more items for this queue are still being prepared (decoded, tokenized) and the
  // batch is not full, a partial batch may wait for them up to this fraction of the queue's
  // last forward's duration (if that is longer than max_queue_delay): a wave of requests
  // whose preprocessing spreads over tens of milliseconds becomes one batch instead of a
  // small one and a large one. 0 turns it off.
  double incoming_wait_fraction = 0.25;
  // After a forward runs out of memory the queue's effective max batch size is halved;
  // it grows back by one after every this many successful forwards (up to
  // max_batch_size).
  int oom_recovery_batches = 16;
};

// An item waiting for the device: input `index` of `call` (its class is the call's priority).
struct QueuedItem {
  std::shared_ptr<EmbedCall> call;
  int index = 0;
  int cost = 1;  // tokens for a text, 1 for an image
  absl::Time enqueued;
};

// Not thread-safe: the device executor guards every BatchQueue with its own mutex.
// Items wait by priority class; a batch holds items of one class. Within a class, batches
// keep arrival order for similar costs and texts of similar length are grouped (the oldest
// item always goes first, so nothing starves within a class; the executor keeps lower
// classes from starving). The interactive class's batch is ready as soon as it has an item:
// it never waits for a batch to fill.
class BatchQueue {
 public:
  explicit BatchQueue(BatchPolicy policy)
      : policy_(policy), effective_max_batch_size_(std::max(1, policy.max_batch_size)) {}

  const BatchPolicy& policy() const { return policy_; }
  // The most items TakeBatch takes now: policy().max_batch_size unless lowered after an
  // out-of-memory forward. Clamped to [1, policy().max_batch_size].
  int effective_max_batch_size() const { return effective_max_batch_size_; }
  void set_effective_max_batch_size(int n);
  int size() const { return size_; }
  bool empty() const { return size_ == 0; }
  int size(Priority priority) const { return static_cast<int>(Of(priority).size()); }
  // The highest class with an item waiting; kBulk when empty.
  Priority TopPriority() const;
  // When the oldest item of `priority` was queued (InfiniteFuture() if none).
  absl::Time OldestQueued(Priority priority) const;

  // False (and nothing queued) when the queue is at capacity.
  bool Push(QueuedItem item);

  // Items announced as being prepared for this queue (see incoming_wait_fraction); Push does
  // not change it, the executor does. Never below 0.
  int incoming() const { return incoming_; }
  void AddIncoming(int delta) { incoming_ = std::max(0, incoming_ + delta); }
  // How long the queue's last forward took (launch to outputs), for incoming_wait_fraction.
  void set_last_forward(absl::Duration d) { last_forward_ = d; }

  // When `priority`'s batch is ready: InfinitePast() if now, InfiniteFuture() if it has no
  // items.
  absl::Time ReadyAt(Priority priority) const;
  // The earliest of every class's.
  absl::Time ReadyAt() const;

  // Takes `priority`'s next batch, of at most min(effective_max_batch_size(), max_items)
  // items (at least one, if it has any). Items of any class whose call is finished or past
  // its deadline at `now` are removed and returned in `skipped` instead (they must not cost
  // compute).
  std::vector<QueuedItem> TakeBatch(absl::Time now, std::vector<QueuedItem>* skipped,
                                    int max_items, Priority priority);
  // The same for the highest class with an item.
  std::vector<QueuedItem> TakeBatch(absl::Time now, std::vector<QueuedItem>* skipped,
                                    int max_items = std::numeric_limits<int>::max()) {
    return TakeBatch(now, skipped, max_items, TopPriority());
  }

 private:
  static int ClassOf(const QueuedItem& item) {
    return static_cast<int>(item.call->priority());
  }
  const std::deque<QueuedItem>& Of(Priority priority) const {
    return items_[static_cast<int>(priority)];
  }
  bool FullBatchWaiting(int priority) const;

  const BatchPolicy policy_;
  std::array<std::deque<QueuedItem>, kPriorityCount> items_;
  std::array<int64_t, kPriorityCount> total_cost_ = {};
  int size_ = 0;
  int effective_max_batch_size_;
  int incoming_ = 0;
  absl::Duration last_forward_ = absl::ZeroDuration();
};

}  // namespace embedserve::pipeline
