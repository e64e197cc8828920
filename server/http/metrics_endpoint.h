// The --metrics-listen endpoint: GET /metrics (Prometheus text) alone, on its own bounded
// HTTP listener, for a scrape port apart from the API.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/http/http_listener.h"
#include "server/metrics/metrics.h"

namespace embedserve::http {

// `address` is "HOST:PORT" (port 0 picks one) or "unix:PATH". Idle connections are closed
// after a second, so that idle ones cannot hold a scrape up for long.
absl::StatusOr<std::unique_ptr<HttpListener>> StartMetricsEndpoint(const std::string& address,
                                                                   metrics::Registry* registry);

}  // namespace embedserve::http
