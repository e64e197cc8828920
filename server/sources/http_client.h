// A small blocking HTTP client over libcurl for the hub resolver: one request per call,
// response headers parsed, the body either kept in memory or streamed to a sink.
// Internal to server/sources; not a general-purpose client.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace embedserve::sources::internal {

struct HttpResponse {
  long status = 0;  // of the last response received (after any redirects followed)
  // Headers of that response, names lower-cased; a repeated header keeps its last value.
  std::map<std::string, std::string> headers;
  // The body when no sink was given, or when the status is not 2xx (capped, for messages).
  std::string body;
  std::string effective_url;  // the URL the last response came from

  // The header's value, or "" when absent. `name` must be lower-case.
  std::string Header(const std::string& name) const;
};

struct HttpRequest {
  std::string method = "GET";        // "GET" or "HEAD"
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  bool follow_redirects = false;     // curl follows 3xx itself (at most 10)
  int connect_timeout_s = 10;
  int total_timeout_s = 0;           // 0: none
  int stall_timeout_s = 0;           // abort after this many seconds receiving nothing; 0: never
  size_t max_body_bytes = 64 << 20;  // in-memory bodies over this fail the request
  // When set, 2xx body bytes go here instead of HttpResponse::body. `head` carries the
  // status and headers of the response the bytes belong to. Returning false aborts the
  // transfer (the call then fails with CANCELLED).
  std::function<bool(const HttpResponse& head, const char* data, size_t size)> on_body;
};

// Performs the request. HTTP statuses, 4xx and 5xx included, are results, not errors; the
// error cases are transport failures: UNAVAILABLE with curl's message (connection refused,
// reset, timed out, a body cut short; the caller may retry), CANCELLED when `on_body`
// returned false, RESOURCE_EXHAUSTED when an in-memory body exceeds `max_body_bytes`,
// INVALID_ARGUMENT for an unusable URL. Thread-safe; each call uses its own connection.
absl::StatusOr<HttpResponse> Fetch(const HttpRequest& request);

// Percent-encodes `s` for a URL path; '/' is kept when `keep_slash`.
std::string UrlEscape(const std::string& s, bool keep_slash);

// `url` without its query string (signed storage URLs carry credentials), for messages.
std::string UrlForMessage(const std::string& url);

// "scheme://host[:port]" of `url`, lower-cased; "" when it has none.
std::string UrlOrigin(const std::string& url);

}  // namespace embedserve::sources::internal
