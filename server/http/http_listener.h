// An HTTP/1.1 listener with hard bounds, on cpp-httplib's request parser and router: TCP or
// a unix socket, a fixed pool of connection workers and a bounded accept queue, a deadline and
// a byte budget for reading each request (head and body), write and keep-alive timeouts.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace httplib {
class Server;
}

namespace embedserve::http {

struct ListenerOptions {
  // "HOST:PORT" ("[::1]:PORT" for IPv6; port 0 picks one) or "unix:PATH".
  std::string address;
  // What the address is for, as errors name it ("--http-listen").
  std::string flag = "--http-listen";
  int socket_mode = 0660;  // of a created unix socket
  // Connections served at once (a keep-alive connection holds a worker while open); as many
  // more wait accepted, and beyond that the kernel's backlog holds new ones.
  int max_connections = 128;
  int64_t max_body_bytes = 64 << 20;
  // Request line plus headers, together (cpp-httplib also cuts each line at 8 KiB).
  int64_t max_head_bytes = 64 << 10;
  // The whole request, head and body, must arrive within this (slow clients are cut off).
  absl::Duration read_timeout = absl::Seconds(30);
  absl::Duration write_timeout = absl::Seconds(30);
  // A connection idle this long, before its first request or between two, is closed.
  absl::Duration keep_alive_timeout = absl::Seconds(5);
  int max_requests_per_connection = 1000;
};

// Thread-safe: Stop and the destructor may be called from any thread but a handler's.
class HttpListener {
 public:
  // Binds `options.address`, lets `add_routes` register handlers on the router (Get, Post,
  // set_error_handler...; its listen functions must not be called), and starts serving.
  static absl::StatusOr<std::unique_ptr<HttpListener>> Start(
      const ListenerOptions& options, const std::function<void(httplib::Server&)>& add_routes);
  ~HttpListener();

  // The bound TCP port (0 for a unix socket).
  int port() const { return port_; }

  // Stops accepting, closes idle connections, lets requests being handled finish, and joins
  // the workers. A unix socket's file is removed. Idempotent.
  void Stop();

 private:
  struct State;
  HttpListener() = default;
  std::unique_ptr<State> state_;
  int port_ = 0;
};

}  // namespace embedserve::http
