// The gate every call passes at the gRPC edge: admission at Begin (bearer token, per-client
// concurrency limit) and accounting at End (metrics by method/model/code, latency, the access
// log line).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <grpcpp/server_context.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace embedserve::rpc {

// Thread-safe.
class CallGate {
 public:
  // max_per_client: calls in flight per client (0: no limit). A client is the value of the
  // `x-embedserve-client` request header if sent, else its peer address (all callers of a
  // unix socket share one peer address, so they should send the header).
  // `tokens`: accepted bearer tokens; empty disables authentication.
  CallGate(int max_per_client, bool access_log, std::vector<std::string> tokens = {})
      : max_per_client_(max_per_client), access_log_(access_log), tokens_(std::move(tokens)) {}

  struct Ticket {
    std::string method;
    std::string model;
    int items = 0;
    std::string client;
    absl::Time start;
    bool holds_slot = false;
  };

  // Whether a call takes one of its client's max_per_client slots (admin calls do not: they
  // change the server, they do not load it).
  enum class ClientLimit { kCounts, kExempt };

  // Starts tracking a call. UNAUTHENTICATED without a valid `authorization: Bearer TOKEN`
  // header when tokens are configured; RESOURCE_EXHAUSTED when the client already has
  // max_per_client calls in flight. On error the ticket must still be passed to End.
  absl::Status Begin(const grpc::ServerContextBase& context, std::string method,
                     std::string model, int items, Ticket* ticket,
                     ClientLimit limit = ClientLimit::kCounts);
  // Frees the call's client slot now, when the answer is handed to the transport, so that a
  // client's next call (made the moment it has the answer) finds the slot free; the call is
  // still counted and logged by End, once its delivery is known. Idempotent.
  void Release(Ticket* ticket);
  // Ends a call: frees its slot (unless released), counts it, and writes the access log line.
  void End(const Ticket& ticket, const absl::Status& status);

  // Which model names may become metric labels (the served ones); any other name is counted
  // as "unknown", so that clients cannot grow the metrics without bound. Unset: every name.
  // Call before serving.
  void SetServedModels(std::function<bool(const std::string& name)> is_served) {
    is_served_ = std::move(is_served);
  }

  // The longest model name or client id written to the access log or repeated in a status
  // message (longer ones are abbreviated, with their length).
  static constexpr size_t kMaxLoggedName = 128;

 private:
  bool Authenticated(const grpc::ServerContextBase& context) const;
  void FreeSlot(const std::string& client);

  const int max_per_client_;
  const bool access_log_;
  const std::vector<std::string> tokens_;
  std::function<bool(const std::string&)> is_served_;
  absl::Mutex mu_;
  std::map<std::string, int> in_flight_ ABSL_GUARDED_BY(mu_);
};

}  // namespace embedserve::rpc
