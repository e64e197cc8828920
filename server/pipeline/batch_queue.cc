// Batch forming: readiness by size, token budget and delay; length grouping for texts.
#include "server/pipeline/batch_queue.h"

#include <algorithm>
#include <cstdlib>
#include <utility>

namespace embedserve::pipeline {

bool BatchQueue::Push(QueuedItem item) {
  if (size_ >= policy_.queue_capacity) return false;
  const int c = ClassOf(item);
  total_cost_[c] += item.cost;
  items_[c].push_back(std::move(item));
  ++size_;
  return true;
}

Priority BatchQueue::TopPriority() const {
  for (int c = kPriorityCount - 1; c > 0; --c) {
    if (!items_[c].empty()) return static_cast<Priority>(c);
  }
  return Priority::kBulk;
}

absl::Time BatchQueue::OldestQueued(Priority priority) const {
  const std::deque<QueuedItem>& items = Of(priority);
  return items.empty() ? absl::InfiniteFuture() : items.front().enqueued;
}

void BatchQueue::set_effective_max_batch_size(int n) {
  effective_max_batch_size_ = std::clamp(n, 1, std::max(1, policy_.max_batch_size));
}

bool BatchQueue::FullBatchWaiting(int priority) const {
  if (static_cast<int>(items_[priority].size()) >= effective_max_batch_size_) return true;
  return policy_.max_batch_tokens > 0 && total_cost_[priority] >= policy_.max_batch_tokens;
}

absl::Time BatchQueue::ReadyAt(Priority priority) const {
  const int c = static_cast<int>(priority);
  if (items_[c].empty()) return absl::InfiniteFuture();
  if (priority == Priority::kInteractive || FullBatchWaiting(c)) return absl::InfinitePast();
  absl::Duration delay = policy_.max_queue_delay;
  if (incoming_ > 0) delay = std::max(delay, last_forward_ * policy_.incoming_wait_fraction);
  return items_[c].front().enqueued + delay;
}

absl::Time BatchQueue::ReadyAt() const {
  absl::Time earliest = absl::InfiniteFuture();
  for (int c = 0; c < kPriorityCount; ++c) {
    earliest = std::min(earliest, ReadyAt(static_cast<Priority>(c)));
  }
  return earliest;
}

std::vector<QueuedItem> BatchQueue::TakeBatch(absl::Time now, std::vector<QueuedItem>* skipped,
                                              int max_items, Priority priority) {
  // Drop what must not cost compute, wherever it is in the queue.
  for (int c = 0; c < kPriorityCount; ++c) {
    std::deque<QueuedItem> live;
    for (QueuedItem& item : items_[c]) {
      if (item.call->ShouldSkip(now)) {
        total_cost_[c] -= item.cost;
        --size_;
        skipped->push_back(std::move(item));
      } else {
        live.push_back(std::move(item));
      }
    }
    items_[c].swap(live);
  }
  std::deque<QueuedItem>& items = items_[static_cast<int>(priority)];
  int64_t& total_cost = total_cost_[static_cast<int>(priority)];
  std::vector<QueuedItem> batch;
  if (items.empty()) return batch;

  // The oldest item goes first; the rest are picked from a window of the queue by how
  // close their cost is to the head's, those within similar_cost_fraction of it counting as
  // equal (stable: equal keys keep arrival order, which keeps a call's items together).
  const int window =
      std::min<int>(static_cast<int>(items.size()), 4 * effective_max_batch_size_);
  const int head_cost = items.front().cost;
  const int similar = static_cast<int>(head_cost * policy_.similar_cost_fraction);
  auto distance = [&](int i) {
    const int d = std::abs(items[i].cost - head_cost);
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
    const int new_longest = std::max(longest, items[i].cost);
    if (policy_.max_batch_tokens > 0 && count > 0 &&
        static_cast<int64_t>(new_longest) * (count + 1) > policy_.max_batch_tokens) {
      continue;  // would exceed the padded-token budget; a shorter item may still fit
    }
    chosen[i] = true;
    longest = new_longest;
    ++count;
  }

  std::deque<QueuedItem> rest;
  for (int i = 0; i < static_cast<int>(items.size()); ++i) {
    if (i < window && chosen[i]) {
      total_cost -= items[i].cost;
      --size_;
      batch.push_back(std::move(items[i]));
    } else {
      rest.push_back(std::move(items[i]));
    }
  }
  items.swap(rest);
  return batch;
}

}  // namespace embedserve::pipeline
