// CallGate: concurrency limit per client, request metrics and access log.
#include "server/rpc/call_gate.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "server/metrics/metrics.h"

namespace embedserve::rpc {

namespace {

// Compares without an early exit, so the time taken does not reveal how much matched.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

}  // namespace

bool CallGate::Authenticated(const grpc::ServerContextBase& context) const {
  const auto& metadata = context.client_metadata();
  auto header = metadata.find("authorization");
  if (header == metadata.end()) return false;
  const absl::string_view value(header->second.data(), header->second.size());
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWith(value, kBearer)) return false;
  const absl::string_view presented = value.substr(kBearer.size());
  bool ok = false;
  for (const std::string& token : tokens_) ok |= ConstantTimeEquals(presented, token);
  return ok;
}

absl::Status CallGate::Begin(const grpc::ServerContextBase& context, std::string method,
                             std::string model, int items, Ticket* ticket, ClientLimit limit) {
  ticket->method = std::move(method);
  ticket->model = std::move(model);
  ticket->items = items;
  ticket->start = absl::Now();
  const auto& metadata = context.client_metadata();
  auto header = metadata.find("x-embedserve-client");
  ticket->client = header != metadata.end()
                       ? std::string(header->second.data(), header->second.size())
                       : context.peer();
  if (!tokens_.empty() && !Authenticated(context)) {
    return absl::UnauthenticatedError(
        "missing or invalid bearer token: send the header 'authorization: Bearer TOKEN'");
  }
  if (max_per_client_ <= 0 || limit == ClientLimit::kExempt) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  int& count = in_flight_[ticket->client];
  if (count >= max_per_client_) {
    if (count == 0) in_flight_.erase(ticket->client);
    return absl::ResourceExhaustedError(absl::StrCat(
        "client '", Abbreviate(ticket->client, kMaxLoggedName), "' already has ", max_per_client_,
        " calls in flight (--max-concurrent-per-client); retry with backoff"));
  }
  ++count;
  ticket->holds_slot = true;
  return absl::OkStatus();
}

void CallGate::FreeSlot(const std::string& client) {
  absl::MutexLock lock(&mu_);
  auto it = in_flight_.find(client);
  if (it != in_flight_.end() && --it->second <= 0) in_flight_.erase(it);
}

void CallGate::Release(Ticket* ticket) {
  if (!ticket->holds_slot) return;
  ticket->holds_slot = false;
  FreeSlot(ticket->client);
}

void CallGate::End(const Ticket& ticket, const absl::Status& status) {
  if (ticket.holds_slot) FreeSlot(ticket.client);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - ticket.start);
  const char* code = StatusCodeName(status.code());
  // Labels come from a bounded set: "" (no model named), the served models, "unknown".
  const std::string label = ticket.model.empty() || !is_served_ || is_served_(ticket.model)
                                ? ticket.model
                                : std::string("unknown");
  auto& registry = metrics::Global();
  registry
      .GetCounter("embedserve_requests_total", "Calls by method, model and status code",
                  {{"method", ticket.method}, {"model", label}, {"code", code}})
      .Add();
  registry
      .GetHistogram("embedserve_request_seconds", "Call latency from arrival to answer",
                    {{"method", ticket.method}, {"model", label}},
                    metrics::LatencyBuckets())
      .Observe(seconds);
  if (access_log_ && LogEnabled(LogLevel::kInfo)) {
    LogEvent(LogLevel::kInfo, "call",
             absl::StrCat("method=", ticket.method,
                          " model=", LogQuote(Abbreviate(ticket.model, kMaxLoggedName)),
                          " items=", ticket.items, " code=", code,
                          " latency_ms=", seconds * 1000,
                          " client=", LogQuote(Abbreviate(ticket.client, kMaxLoggedName)),
                          status.ok() ? "" : absl::StrCat(" error=", LogQuote(status.message()))));
  }
}

}  // namespace embedserve::rpc
