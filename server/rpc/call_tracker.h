// Per-call bookkeeping at the gRPC edge: the per-client concurrency limit, request metrics
// (counts by method/model/code, latency), and the access log line.
#pragma once

#include <map>
#include <string>

#include <grpcpp/server_context.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace embedserve::rpc {

// Thread-safe.
class CallTracker {
 public:
  // max_per_client: calls in flight per client (0: no limit). A client is the value of the
  // `x-embedserve-client` request header if sent, else its peer address (all callers of a
  // unix socket share one peer address, so they should send the header).
  CallTracker(int max_per_client, bool access_log)
      : max_per_client_(max_per_client), access_log_(access_log) {}

  struct Ticket {
    std::string method;
    std::string model;
    int items = 0;
    std::string client;
    absl::Time start;
    bool holds_slot = false;
  };

  // Starts tracking a call. RESOURCE_EXHAUSTED (and a ticket to End anyway) when the client
  // already has max_per_client calls in flight.
  absl::Status Begin(const grpc::ServerContextBase& context, std::string method,
                     std::string model, int items, Ticket* ticket);
  // Ends a call: frees its slot, counts it, and writes the access log line.
  void End(const Ticket& ticket, const absl::Status& status);

 private:
  const int max_per_client_;
  const bool access_log_;
  absl::Mutex mu_;
  std::map<std::string, int> in_flight_ ABSL_GUARDED_BY(mu_);
};

}  // namespace embedserve::rpc
