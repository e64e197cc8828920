// A fixed pool of CPU threads with a bounded task queue: the preprocessing stage (image
// decode/resize, tokenization) that runs ahead of the device.
#pragma once

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include <mutex>
#include <condition_variable>

namespace embedserve::pipeline {

// Thread-safe. TrySchedule never blocks: it returns false when `max_pending` tasks are
// already waiting, so a flood of work is refused instead of buffered without bound.
// The destructor runs every task already accepted, then joins the threads.
class ThreadPool {
 public:
  ThreadPool(int num_threads, int max_pending);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  bool TrySchedule(std::function<void()> task);
  // Tasks accepted and not yet started.
  int pending() const;
  int num_threads() const { return static_cast<int>(threads_.size()); }

 private:
  void WorkLoop();

  const int max_pending_;
  // std::mutex rather than absl::Mutex: ThreadSanitizer cannot see through Debian's
  // uninstrumented absl build (the pipeline runs under TSan in CI).
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace embedserve::pipeline
