// Which failed calls a client may retry and after how long: the server's advice, sent with
// the status (gRPC trailing metadata `retry-after-ms`), so that clients retry what can
// succeed (a full queue, a model still loading) and nothing else (a message over the size
// limit, a model that failed to load).
#pragma once

#include <optional>

#include <grpcpp/server_context.h>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace embedserve::rpc {

// The trailing metadata key. Its value is an integer: >= 0, the milliseconds the server
// advises waiting before trying the call again (it may succeed then); < 0, a retry cannot
// succeed until an operator acts (the convention of gRPC's `grpc-retry-pushback-ms`).
// Absent: no advice; a client should retry only transport failures.
inline constexpr char kRetryAfterKey[] = "retry-after-ms";

// The advice for a call that ended with `status`: a non-negative wait, a negative duration
// for "never", nullopt for none. Only UNAVAILABLE and RESOURCE_EXHAUSTED get advice.
// RESOURCE_EXHAUSTED is told apart by where it was made: only the queue-full paths
// ("the model's queue is full (", "the preprocessing queue is full ("), the per-client
// limit ("... calls in flight (--max-concurrent-per-client)") and an out-of-memory batch
// that shrank the batch size ("out of memory running a batch of ") are retryable; a message
// size error or a memory budget refusal is not. UNAVAILABLE is retryable except a model
// that failed to load ("model 'NAME' failed to load: ").
std::optional<absl::Duration> RetryAfter(const absl::Status& status);

// Adds the advice for `status` to the call's trailing metadata. Call before Finish.
void AddRetryAdvice(const absl::Status& status, grpc::ServerContextBase* context);

}  // namespace embedserve::rpc
