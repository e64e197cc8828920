// Batch forming: readiness by size, token budget and delay; length grouping for texts.
#include "server/pipeline/batch_queue.h"

#include <algorithm>
#include <cstdlib>
#include <utility>

namespace embedserve::pipeline {

bool BatchQueue::Push(QueuedItem item) {
  if (static_cast<int>(items_.size()) >= policy_.queue_capacity) return false;
  total_cost_ += item.cost;
  items_.push_back(std::move(item));
  return true;
}

void BatchQueue::set_effective_max_batch_size(int n) {
  effective_max_batch_size_ = std::clamp(n, 1, std::max(1, policy_.max_batch_size));
}

bool BatchQueue::FullBatchWaiting() const {
  if (static_cast<int>(items_.size()) >= effective_max_batch_size_) return true;
  return policy_.max_batch_tokens > 0 && total_cost_ >= policy_.max_batch_tokens;
}

absl::Time BatchQueue::ReadyAt() const {
  if (items_.empty()) return absl::InfiniteFuture();
  if (FullBatchWaiting()) return absl::InfinitePast();
  absl::Duration delay = policy_.max_queue_delay;
  if (incoming_ > 0) delay = std::max(delay, last_forward_ * policy_.incoming_wait_fraction);
  return items_.front().enqueued + delay;
}

std::vector<QueuedItem> BatchQueue::TakeBatch(absl::Time now, std::vector<QueuedItem>* skipped,
                                              int max_items) {
  // Drop what must not cost compute, wherever it is in the queue.
  std::deque<QueuedItem> live;
  for (QueuedItem& item : items_) {
    if (item.call->ShouldSkip(now)) {
      total_cost_ -= item.cost;
      skipped->push_back(std::move(item));
    } else {
      live.push_back(std::move(item));
    }
  }
  items_.swap(live);
  std::vector<QueuedItem> batch;
  if (items_.empty()) return batch;

  // The oldest item goes first; the rest are picked from a window of the queue by how
  // close their cost is to the head's, those within similar_cost_fraction of it counting as
  // equal (stable: equal keys keep arrival order, which keeps a call's items together).
  const int window =
      std::min<int>(static_cast<int>(items_.size()), 4 * effective_max_batch_size_);
  const int head_cost = items_.front().cost;
  const int similar = static_cast<int>(head_cost * policy_.similar_cost_fraction);
  auto distance = [&](int i) {
    const int d = std::abs(items_[i].cost - head_cost);
    return d <= similar ? 0 : d;
  };
  std::vector<int> order(window);
  for (int i = 0; i < window; ++i) order[i] = i;
  std::stable_sort(order.begin() + 1, order.end(),
                   [&](int a, int b) { return distance(a) < distance(b); });

  const int limit = std::clamp(max_items, 1, effective_max_batch_size_);
  std::vector<bool> chosen(window, false);
  int longest = 0;
  int count = 0;
  for (int i : order) {
    if (count >= limit) break;
    const int new_longest = std::max(longest, items_[i].cost);
    if (policy_.max_batch_tokens > 0 && count > 0 &&
        static_cast<int64_t>(new_longest) * (count + 1) > policy_.max_batch_tokens) {
      continue;  // would exceed the padded-token budget; a shorter item may still fit
    }
    chosen[i] = true;
    longest = new_longest;
    ++count;
  }

  std::deque<QueuedItem> rest;
  for (int i = 0; i < static_cast<int>(items_.size()); ++i) {
    if (i < window && chosen[i]) {
      total_cost_ -= items_[i].cost;
      batch.push_back(std::move(items_[i]));
    } else {
      rest.push_back(std::move(items_[i]));
    }
  }
  items_.swap(rest);
  return batch;
}

}  // namespace embedserve::pipeline
