// Retry advice: classifies a final status by the path that made it.
#include "server/rpc/retry_advice.h"

#include <string>

#include "absl/strings/match.h"

namespace embedserve::rpc {

std::optional<absl::Duration> RetryAfter(const absl::Status& status) {
  const absl::string_view message = status.message();
  switch (status.code()) {
    case absl::StatusCode::kResourceExhausted:
      // Backpressure: room comes back as the device drains the queue.
      if (absl::StartsWith(message, "the model's queue is full (") ||
          absl::StartsWith(message, "the preprocessing queue is full (") ||
          absl::StrContains(message, " calls in flight (--max-concurrent-per-client)")) {
        return absl::Milliseconds(50);
      }
      // The executor halved the batch size: the same inputs fit now.
      if (absl::StartsWith(message, "out of memory running a batch of ")) {
        return absl::Milliseconds(100);
      }
      return std::nullopt;  // a message size, a memory budget: the same call fails again
    case absl::StatusCode::kUnavailable:
      if (absl::StartsWith(message, "model '") &&
          absl::StrContains(message, "' failed to load: ")) {
        return absl::Milliseconds(-1);  // stays failed until reloaded
      }
      if (absl::StrContains(message, "' is still loading")) return absl::Milliseconds(200);
      return absl::Milliseconds(100);  // unloaded (a new version is there), shutting down
    default:
      return std::nullopt;
  }
}

void AddRetryAdvice(const absl::Status& status, grpc::ServerContextBase* context) {
  const std::optional<absl::Duration> after = RetryAfter(status);
  if (!after.has_value()) return;
  const int64_t ms = *after < absl::ZeroDuration() ? -1 : absl::ToInt64Milliseconds(*after);
  context->AddTrailingMetadata(kRetryAfterKey, std::to_string(ms));
}

}  // namespace embedserve::rpc
