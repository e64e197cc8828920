// A small synchronous C++ client for embedserve: one channel to a target (unix socket or
// TCP), typed calls returning the v1 responses or an absl::Status carrying the gRPC code.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "embedserve/v1/admin.grpc.pb.h"
#include "embedserve/v1/embed.grpc.pb.h"
#include "embedserve/v1/models.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace embedserve::client {

struct ClientOptions {
  // Per-call deadline; InfiniteDuration() for none.
  absl::Duration timeout = absl::Seconds(60);
  int max_message_bytes = 64 << 20;
  // Wait for the server to accept the connection (until the deadline) instead of failing at
  // once with UNAVAILABLE: for a caller that may start before the server, or outlive a
  // restart of it.
  bool wait_for_ready = false;
  // Sent as `authorization: Bearer TOKEN` when not empty.
  std::string bearer_token;
  // TLS (TCP targets): PEM contents. A root CA turns TLS on; a client cert + key is for
  // mutual TLS. `tls_server_name` overrides the name checked in the certificate.
  std::string tls_root_ca;
  std::string tls_client_cert;
  std::string tls_client_key;
  std::string tls_server_name;
};

// Thread-safe: calls may be made from many threads at once over the one channel.
class Client {
 public:
  // `target`: "unix:/path/to/socket" or "host:port". Connects lazily.
  static std::unique_ptr<Client> Create(const std::string& target, ClientOptions options = {});

  // SERVING / NOT_SERVING as grpc.health.v1 reports for `service` ("" = the server).
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Health(
      const std::string& service = "");
  absl::StatusOr<v1::ListModelsResponse> ListModels();
  absl::StatusOr<v1::GetModelResponse> GetModel(const std::string& name);
  absl::StatusOr<v1::EmbedResponse> Embed(const v1::EmbedRequest& request);
  absl::StatusOr<v1::RerankResponse> Rerank(const v1::RerankRequest& request);
  absl::StatusOr<v1::ClassifyResponse> Classify(const v1::ClassifyRequest& request);
  absl::StatusOr<v1::TokenizeResponse> Tokenize(const v1::TokenizeRequest& request);

  // AdminService (servers started with --enable-admin). Each returns once the change is done.
  absl::StatusOr<v1::LoadModelResponse> LoadModel(const std::string& name,
                                                  const std::string& source);
  absl::StatusOr<v1::UnloadModelResponse> UnloadModel(const std::string& name);
  // `source` empty: reload from the model's current source.
  absl::StatusOr<v1::ReloadModelResponse> ReloadModel(const std::string& name,
                                                      const std::string& source = "");
  absl::StatusOr<v1::RescanModelDirResponse> RescanModelDir();

  v1::EmbedService::Stub& embed_stub() { return *embed_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options);
  void Prepare(grpc::ClientContext* context) const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::EmbedService::Stub> embed_;
  std::unique_ptr<v1::ModelService::Stub> models_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace embedserve::client
