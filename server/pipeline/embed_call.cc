// EmbedCall: per-call state and exactly-once completion.
#include "server/pipeline/embed_call.h"

#include <utility>

namespace embedserve::pipeline {
namespace {

void StoreMax(std::atomic<int64_t>& target, int64_t value) {
  int64_t current = target.load(std::memory_order_relaxed);
  while (value > current &&
         !target.compare_exchange_weak(current, value, std::memory_order_relaxed)) {
  }
}

}  // namespace

const char* PriorityName(Priority priority) {
  switch (priority) {
    case Priority::kBulk: return "bulk";
    case Priority::kNormal: return "normal";
    case Priority::kInteractive: return "interactive";
  }
  return "normal";
}

EmbedCall::EmbedCall(std::vector<CallInput> inputs, bool truncate, absl::Time deadline,
                     Done done)
    : inputs_(std::move(inputs)),
      truncate_(truncate),
      deadline_(deadline),
      created_(absl::Now()),
      texts_(inputs_.size()),
      images_(inputs_.size()),
      results_(inputs_.size()),
      remaining_(static_cast<int>(inputs_.size())),
      done_(std::move(done)) {}

void EmbedCall::SetResult(int i, models::Embedding embedding) {
  if (finished()) return;
  results_[i] = std::move(embedding);
  // Free the prepared image early (600 KB at 224 px); texts stay for their token counts.
  images_[i] = models::ImageInput();
  if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) Complete(absl::OkStatus());
}

void EmbedCall::Fail(const absl::Status& status) { Complete(status); }

void EmbedCall::Cancel() {
  if (absl::Now() >= deadline_) {
    Complete(absl::DeadlineExceededError("the call's deadline passed before it was answered"));
  } else {
    Complete(absl::CancelledError("the call was cancelled by the client"));
  }
}

void EmbedCall::AddPreprocessTime(absl::Duration d) {
  preprocess_us_.fetch_add(absl::ToInt64Microseconds(d), std::memory_order_relaxed);
}
void EmbedCall::NoteQueueTime(absl::Duration d) {
  StoreMax(queue_us_, absl::ToInt64Microseconds(d));
}
void EmbedCall::NoteInferenceTime(absl::Duration d) {
  StoreMax(inference_us_, absl::ToInt64Microseconds(d));
}

CallTimings EmbedCall::timings() const {
  CallTimings t;
  t.preprocess_us = preprocess_us_.load(std::memory_order_relaxed);
  t.queue_us = queue_us_.load(std::memory_order_relaxed);
  t.inference_us = inference_us_.load(std::memory_order_relaxed);
  t.total_us = absl::ToInt64Microseconds(absl::Now() - created_);
  return t;
}

void EmbedCall::Complete(const absl::Status& status) {
  Done done;
  {
    std::lock_guard<std::mutex> lock(done_mu_);
    if (!done_) return;  // already completed
    finished_.store(true, std::memory_order_release);
    done = std::move(done_);
    done_ = nullptr;
  }
  done(status, *this);
}

}  // namespace embedserve::pipeline
