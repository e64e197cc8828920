// The synchronous C++ client.
#include "client/embedserve_client.h"

#include <grpc/grpc.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "common/status.h"

namespace embedserve::client {
namespace {

template <typename Response>
absl::StatusOr<Response> Result(const grpc::Status& status, Response response) {
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

}  // namespace

std::unique_ptr<Client> Client::Create(const std::string& target, ClientOptions options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  // A server that restarts is found again within about a second of answering (gRPC's
  // defaults back off from 1 s up to 120 s). Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: gRPC
  // core also takes it as the time one attempt has to connect and receive the server's
  // HTTP/2 SETTINGS, which a busy server can miss at 100 ms (the Python client's reasons,
  // client/python/embedserve/_common.py).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_root_ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_root_ca;
    ssl.pem_cert_chain = options.tls_client_cert;
    ssl.pem_private_key = options.tls_client_key;
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  }
  auto channel = grpc::CreateCustomChannel(target, credentials, args);
  return std::unique_ptr<Client>(new Client(std::move(channel), options));
}

Client::Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : options_(options),
      channel_(std::move(channel)),
      embed_(v1::EmbedService::NewStub(channel_)),
      models_(v1::ModelService::NewStub(channel_)),
      admin_(v1::AdminService::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

void Client::Prepare(grpc::ClientContext* context) const {
  if (!options_.bearer_token.empty()) {
    context->AddMetadata("authorization", "Bearer " + options_.bearer_token);
  }
  if (options_.timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  }
  context->set_wait_for_ready(options_.wait_for_ready);
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Client::Health(
    const std::string& service) {
  grpc::ClientContext context;
  Prepare(&context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = health_->Check(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response.status();
}

absl::StatusOr<v1::ListModelsResponse> Client::ListModels() {
  grpc::ClientContext context;
  Prepare(&context);
  v1::ListModelsResponse response;
  grpc::Status status = models_->ListModels(&context, v1::ListModelsRequest(), &response);
  return Result(status, std::move(response));
}

absl::StatusOr<v1::LoadModelResponse> Client::LoadModel(const std::string& name,
                                                        const std::string& source) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::LoadModelRequest request;
  request.set_name(name);
  request.set_source(source);
  v1::LoadModelResponse response;
  grpc::Status status = admin_->LoadModel(&context, request, &response);
  return Result(status, std::move(response));
}

absl::StatusOr<v1::UnloadModelResponse> Client::UnloadModel(const std::string& name) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::UnloadModelRequest request;
  request.set_name(name);
  v1::UnloadModelResponse response;
  grpc::Status status = admin_->UnloadModel(&context, request, &response);
  return Result(status, std::move(response));
}

absl::StatusOr<v1::ReloadModelResponse> Client::ReloadModel(const std::string& name,
                                                            const std::string& source) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::ReloadModelRequest request;
  request.set_name(name);
  if (!source.empty()) request.set_source(source);
  v1::ReloadModelResponse response;
  grpc::Status status = admin_->ReloadModel(&context, request, &response);
  return Result(status, std::move(response));
}

absl::StatusOr<v1::RescanModelDirResponse> Client::RescanModelDir() {
  grpc::ClientContext context;
  Prepare(&context);
  v1::RescanModelDirResponse response;
  grpc::Status status = admin_->RescanModelDir(&context, v1::RescanModelDirRequest(), &response);
  return Result(status, std::move(response));
}

absl::StatusOr<v1::GetModelResponse> Client::GetModel(const std::string& name) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::GetModelRequest request;
  request.set_name(name);
  v1::GetModelResponse response;
  grpc::Status status = models_->GetModel(&context, request, &response);
  return Result(status, std::move(response));
}

absl::StatusOr<v1::EmbedResponse> Client::Embed(const v1::EmbedRequest& request) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::EmbedResponse response;
  grpc::Status status = embed_->Embed(&context, request, &response);
  return Result(status, std::move(response));
}

absl::StatusOr<v1::RerankResponse> Client::Rerank(const v1::RerankRequest& request) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::RerankResponse response;
  grpc::Status status = embed_->Rerank(&context, request, &response);
  return Result(status, std::move(response));
}

absl::StatusOr<v1::ClassifyResponse> Client::Classify(const v1::ClassifyRequest& request) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::ClassifyResponse response;
  grpc::Status status = embed_->Classify(&context, request, &response);
  return Result(status, std::move(response));
}

absl::StatusOr<v1::TokenizeResponse> Client::Tokenize(const v1::TokenizeRequest& request) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::TokenizeResponse response;
  grpc::Status status = embed_->Tokenize(&context, request, &response);
  return Result(status, std::move(response));
}

}  // namespace embedserve::client
