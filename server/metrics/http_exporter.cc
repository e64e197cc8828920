// The /metrics endpoint on cpp-httplib.
#include "server/metrics/http_exporter.h"

#include <httplib.h>

#include <algorithm>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/metrics/metrics.h"

namespace embedserve::metrics {
namespace {

// Workers serving connections: an idle connection holds one until its read timeout, so this
// many idle connections delay a scrape by at most kReadTimeoutS.
constexpr size_t kWorkers = 32;
constexpr time_t kReadTimeoutS = 1;
constexpr time_t kWriteTimeoutS = 5;
constexpr time_t kKeepAliveS = 2;
// A scrape is a GET: no body worth reading.
constexpr size_t kMaxBodyBytes = 4096;

}  // namespace

struct HttpExporter::Server {
  httplib::Server http;
  std::thread thread;
};

absl::StatusOr<std::unique_ptr<HttpExporter>> HttpExporter::Start(const std::string& address,
                                                                  Registry* registry) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen: expected HOST:PORT, got '", address, "'"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";

  std::unique_ptr<HttpExporter> exporter(new HttpExporter());
  exporter->server_ = std::make_unique<Server>();
  httplib::Server& http = exporter->server_->http;
  http.new_task_queue = [] { return new httplib::ThreadPool(kWorkers); };
  http.set_read_timeout(kReadTimeoutS, 0);
  http.set_write_timeout(kWriteTimeoutS, 0);
  http.set_keep_alive_timeout(kKeepAliveS);
  http.set_payload_max_length(kMaxBodyBytes);
  http.Get("/metrics", [registry](const httplib::Request&, httplib::Response& response) {
    response.set_content(registry->Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  http.set_error_handler([](const httplib::Request&, httplib::Response& response) {
    if (response.status == 404) {
      response.set_content("not found: try GET /metrics\n", "text/plain; charset=utf-8");
    }
  });
  if (port == 0) {
    port = http.bind_to_any_port(host);
    if (port < 0) {
      return absl::UnavailableError(absl::StrCat("--metrics-listen ", address, ": cannot bind"));
    }
  } else if (!http.bind_to_port(host, port)) {
    return absl::UnavailableError(
        absl::StrCat("--metrics-listen ", address, ": cannot bind (in use, or no such address)"));
  }
  exporter->port_ = port;
  exporter->server_->thread = std::thread([&http] { http.listen_after_bind(); });
  return exporter;
}

HttpExporter::~HttpExporter() {
  if (!server_) return;
  server_->http.stop();
  if (server_->thread.joinable()) server_->thread.join();
}

}  // namespace embedserve::metrics
