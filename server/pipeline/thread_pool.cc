// The preprocessing thread pool.
#include "server/pipeline/thread_pool.h"

#include <algorithm>
#include <utility>

namespace embedserve::pipeline {

ThreadPool::ThreadPool(int num_threads, int max_pending, absl::Duration aging)
    : max_pending_(max_pending), aging_(aging) {
  if (num_threads < 1) num_threads = 1;
  threads_.reserve(num_threads);
  for (int i = 0; i < num_threads; ++i) threads_.emplace_back([this] { WorkLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : threads_) t.join();
}

bool ThreadPool::TrySchedule(std::function<void()> task, int level) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_ || pending_ >= max_pending_) return false;
  tasks_[std::clamp(level, 0, kLevels - 1)].push_back(Task{std::move(task), absl::Now()});
  ++pending_;
  wake_.notify_one();
  return true;
}

int ThreadPool::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_;
}

int ThreadPool::NextLevel(absl::Time now) const {
  int highest = -1;
  int most_waited = -1;
  absl::Duration longest = aging_;
  for (int level = kLevels - 1; level >= 0; --level) {
    if (tasks_[level].empty()) continue;
    if (highest < 0) highest = level;
    const absl::Duration waited = now - tasks_[level].front().queued;
    if (waited >= longest) {
      longest = waited;
      most_waited = level;
    }
  }
  return most_waited >= 0 ? most_waited : highest;
}

void ThreadPool::WorkLoop() {
  while (true) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || pending_ > 0; });
      if (pending_ == 0) return;  // stopping and drained
      std::deque<Task>& level = tasks_[NextLevel(absl::Now())];
      task = std::move(level.front().run);
      level.pop_front();
      --pending_;
    }
    task();
  }
}

}  // namespace embedserve::pipeline
