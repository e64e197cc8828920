// The /metrics HTTP endpoint (Prometheus text format) on cpp-httplib: a small worker pool,
// read and keep-alive timeouts, bounded request heads and bodies, so idle or slow
// connections cannot hold a scrape up. Off unless --metrics-listen is given; binds where told.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace embedserve::metrics {

class Registry;

// Thread-safe to destroy from any thread; the destructor stops the server and its threads.
class HttpExporter {
 public:
  // `address` is "HOST:PORT" (port 0 picks one; "[::1]:PORT" for IPv6). GET /metrics
  // answers the registry; anything else gets 404.
  static absl::StatusOr<std::unique_ptr<HttpExporter>> Start(const std::string& address,
                                                             Registry* registry);
  ~HttpExporter();
  int port() const { return port_; }

 private:
  struct Server;
  HttpExporter() = default;

  std::unique_ptr<Server> server_;
  int port_ = 0;
};

}  // namespace embedserve::metrics
