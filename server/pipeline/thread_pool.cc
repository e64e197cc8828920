// The preprocessing thread pool.
#include "server/pipeline/thread_pool.h"

#include <utility>

namespace embedserve::pipeline {

ThreadPool::ThreadPool(int num_threads, int max_pending) : max_pending_(max_pending) {
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

bool ThreadPool::TrySchedule(std::function<void()> task) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_ || static_cast<int>(tasks_.size()) >= max_pending_) return false;
  tasks_.push_back(std::move(task));
  wake_.notify_one();
  return true;
}

int ThreadPool::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(tasks_.size());
}

void ThreadPool::WorkLoop() {
  while (true) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping and drained
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace embedserve::pipeline
