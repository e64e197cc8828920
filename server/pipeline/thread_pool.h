// A fixed pool of CPU threads with a bounded task queue: the preprocessing stage (image
// decode/resize, tokenization) that runs ahead of the device.
#pragma once

#include <array>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include <mutex>
#include <condition_variable>

namespace embedserve::pipeline {

// Thread-safe. TrySchedule never blocks: it returns false when `max_pending` tasks are
// already waiting, so a flood of work is refused instead of buffered without bound.
// The destructor runs every task already accepted, then joins the threads.
//
// Tasks have a level (0 to kLevels - 1): a free thread takes the oldest task of the highest
// level, unless the front task of some level has waited `aging` or more, in which case it
// takes the one that has waited longest, so no level starves.
class ThreadPool {
 public:
  static constexpr int kLevels = 3;

  ThreadPool(int num_threads, int max_pending, absl::Duration aging = absl::Seconds(1));
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // `level` is clamped to [0, kLevels - 1].
  bool TrySchedule(std::function<void()> task, int level = 0);
  // Tasks accepted and not yet started.
  int pending() const;
  int num_threads() const { return static_cast<int>(threads_.size()); }

 private:
  struct Task {
    std::function<void()> run;
    absl::Time queued;
  };
  void WorkLoop();
  // With mu_ held and a task waiting: the level whose front task runs next.
  int NextLevel(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_pending_;
  const absl::Duration aging_;
  // std::mutex rather than absl::Mutex: ThreadSanitizer cannot see through Debian's
  // uninstrumented absl build (the pipeline runs under TSan in CI).
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::array<std::deque<Task>, kLevels> tasks_ ABSL_GUARDED_BY(mu_);
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace embedserve::pipeline
