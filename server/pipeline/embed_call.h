// One client call's embedding work as it moves through the pipeline: its inputs, their
// prepared forms, their results, timings, and the exactly-once completion.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include <mutex>
#include <condition_variable>
#include "absl/time/time.h"
#include "server/models/model.h"

namespace embedserve::pipeline {

using models::Modality;

// A call's scheduling class. Higher classes are prepared and batched first; a lower class
// that has waited too long still gets device time (see DeviceExecutor).
enum class Priority { kBulk = 0, kNormal = 1, kInteractive = 2 };
inline constexpr int kPriorityCount = 3;
// "bulk", "normal", "interactive".
const char* PriorityName(Priority priority);

struct CallInput {
  Modality modality = Modality::kText;
  std::string data;   // UTF-8 text, a pair's query, or encoded image bytes (owned: the call
                      // may outlive the RPC)
  std::string field;  // where it came from in the request, e.g. "inputs[3]", for errors
  std::string second;  // a pair's document (UTF-8); empty otherwise
};

struct CallTimings {
  int64_t preprocess_us = 0;  // summed over items
  int64_t queue_us = 0;       // longest wait of any item
  int64_t inference_us = 0;   // longest forward of any item
  int64_t total_us = 0;
};

// Thread-safe. Every item slot is written by exactly one pipeline stage at a time; the
// completion callback runs exactly once: when the last item finishes, on the first failure,
// or on Cancel(), whichever is first. After completion, later results are ignored.
// Read results only from inside the completion callback (or after it ran).
class EmbedCall {
 public:
  using Done = std::function<void(const absl::Status&, EmbedCall&)>;

  EmbedCall(std::vector<CallInput> inputs, bool truncate, absl::Time deadline, Done done);

  int size() const { return static_cast<int>(inputs_.size()); }
  const CallInput& input(int i) const { return inputs_[i]; }
  bool truncate() const { return truncate_; }
  absl::Time deadline() const { return deadline_; }
  absl::Time created() const { return created_; }
  // Set before Submit (the pipeline reads it from other threads afterwards).
  void set_priority(Priority priority) { priority_ = priority; }
  Priority priority() const { return priority_; }

  // Prepared inputs (set by the preprocessing stage, read by the executor).
  models::TextInput& text(int i) { return texts_[i]; }
  models::ImageInput& image(int i) { return images_[i]; }

  // True once the call completed, failed or was cancelled: remaining work is skipped.
  bool finished() const { return finished_.load(std::memory_order_acquire); }
  // Drop work that has not started when the call is finished or past its deadline.
  bool ShouldSkip(absl::Time now) const { return finished() || now >= deadline_; }

  void SetResult(int i, models::Embedding embedding);
  void Fail(const absl::Status& status);
  // Cancellation by the client: completes with CANCELLED (or DEADLINE_EXCEEDED if the
  // deadline passed) at once.
  void Cancel();

  void AddPreprocessTime(absl::Duration d);
  void NoteQueueTime(absl::Duration d);
  void NoteInferenceTime(absl::Duration d);

  const std::vector<models::Embedding>& results() const { return results_; }
  std::vector<models::Embedding>& mutable_results() { return results_; }
  CallTimings timings() const;

 private:
  void Complete(const absl::Status& status);

  const std::vector<CallInput> inputs_;
  const bool truncate_;
  const absl::Time deadline_;
  const absl::Time created_;
  Priority priority_ = Priority::kNormal;
  std::vector<models::TextInput> texts_;
  std::vector<models::ImageInput> images_;
  std::vector<models::Embedding> results_;
  std::atomic<int> remaining_;
  std::atomic<bool> finished_{false};
  std::atomic<int64_t> preprocess_us_{0};
  std::atomic<int64_t> queue_us_{0};
  std::atomic<int64_t> inference_us_{0};
  std::mutex done_mu_;
  Done done_ ABSL_GUARDED_BY(done_mu_);
};

}  // namespace embedserve::pipeline
