// GET /metrics on an HttpListener.
#include "server/http/metrics_endpoint.h"

#include <httplib.h>

namespace embedserve::http {

absl::StatusOr<std::unique_ptr<HttpListener>> StartMetricsEndpoint(const std::string& address,
                                                                   metrics::Registry* registry) {
  ListenerOptions options;
  options.address = address;
  options.flag = "--metrics-listen";
  options.max_connections = 32;
  options.max_body_bytes = 4096;  // a scrape is a GET
  options.max_head_bytes = 16 << 10;
  options.read_timeout = absl::Seconds(2);
  options.keep_alive_timeout = absl::Seconds(1);
  options.write_timeout = absl::Seconds(5);
  return HttpListener::Start(options, [registry](httplib::Server& router) {
    router.Get("/metrics", [registry](const httplib::Request&, httplib::Response& response) {
      response.set_content(registry->Render(), "text/plain; version=0.0.4; charset=utf-8");
    });
    router.set_error_handler([](const httplib::Request&, httplib::Response& response) {
      if (response.status == 404) {
        response.set_content("not found: try GET /metrics\n", "text/plain; charset=utf-8");
      }
    });
  });
}

}  // namespace embedserve::http
