// The HTTP API (--http-listen): OpenAI's /v1/embeddings, /v1/rerank, /v1/models, /health and
// /metrics, each call made to the gRPC services through the in-process channel, so HTTP
// passes the same gate (bearer token, per-client limit, metrics, access log), validation,
// limits and pipeline as gRPC.
#pragma once

#include <memory>
#include <vector>

#include <grpcpp/channel.h>

#include "absl/status/statusor.h"
#include "server/http/http_listener.h"
#include "server/pipeline/pipeline.h"

namespace embedserve::http {

class Gateway {
 public:
  // `channel`: the gRPC server's in-process channel. `pipeline` is read only to tell a
  // cross-encoder from the other rerankers (its scores go through a sigmoid by default).
  // One listener per entry of `listeners` (TCP and unix sockets alike).
  static absl::StatusOr<std::unique_ptr<Gateway>> Start(
      const std::vector<ListenerOptions>& listeners, std::shared_ptr<grpc::Channel> channel,
      const pipeline::Pipeline* pipeline);
  ~Gateway();

  // The TCP port bound by each listener, in order (0 for a unix socket).
  std::vector<int> ports() const;
  // Stops accepting and waits for the requests being handled (see HttpListener::Stop).
  void Stop();

 private:
  struct Routes;
  Gateway() = default;
  std::unique_ptr<Routes> routes_;
  std::vector<std::unique_ptr<HttpListener>> listeners_;  // after routes_: stopped first
};

}  // namespace embedserve::http
