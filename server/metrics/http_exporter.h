// A minimal HTTP/1.1 endpoint serving GET /metrics (Prometheus text format) from one
// background thread. Off unless --metrics-listen is given; binds where told.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace embedserve::metrics {

class Registry;

// Thread-safe to destroy from any thread; the destructor stops the thread.
class HttpExporter {
 public:
  // `address` is "HOST:PORT" (port 0 picks one). Requests other than GET /metrics get 404.
  static absl::StatusOr<std::unique_ptr<HttpExporter>> Start(const std::string& address,
                                                             Registry* registry);
  ~HttpExporter();
  int port() const { return port_; }

 private:
  HttpExporter() = default;
  void Serve();

  Registry* registry_ = nullptr;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace embedserve::metrics
