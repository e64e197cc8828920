// The HTTP routes, each a call through the in-process gRPC channel.
#include "server/http/gateway.h"

#include <httplib.h>

#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "embedserve/v1/embed.grpc.pb.h"
#include "embedserve/v1/models.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/http/openai_api.h"
#include "server/metrics/metrics.h"

namespace embedserve::http {
namespace {

constexpr char kJson[] = "application/json";

// gRPC metadata values must be printable ASCII.
bool PrintableAscii(const std::string& value) {
  for (unsigned char c : value) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

void Reply(httplib::Response& response, const HttpError& error) {
  response.status = error.status;
  response.set_content(error.body, kJson);
}

void ReplyError(httplib::Response& response, const absl::Status& status, Route route) {
  Reply(response, ErrorFor(status, route));
}

// A failed gRPC call's answer over HTTP. The server's retry advice (trailing metadata
// `retry-after-ms`, server/rpc/retry_advice.h) becomes a Retry-After header; a message over
// the size limit is 413, not 429, since no wait makes it fit.
void ReplyCallError(httplib::Response& response, const grpc::Status& failed,
                    const grpc::ClientContext& context, Route route) {
  const absl::Status status = FromGrpcStatus(failed);
  HttpError error = ErrorFor(status, route);
  const auto& trailers = context.GetServerTrailingMetadata();
  int64_t retry_after_ms = -1;
  if (auto it = trailers.find("retry-after-ms"); it != trailers.end()) {
    if (!absl::SimpleAtoi(absl::string_view(it->second.data(), it->second.size()),
                          &retry_after_ms)) {
      retry_after_ms = -1;
    }
  }
  if (retry_after_ms >= 0) {
    response.set_header("Retry-After", std::to_string((retry_after_ms + 999) / 1000));
  } else if (status.code() == absl::StatusCode::kResourceExhausted &&
             (absl::StrContains(status.message(), "larger than max") ||
              absl::StrContains(status.message(), "--max-message-bytes"))) {
    error.status = 413;
  }
  Reply(response, error);
}

}  // namespace

struct Gateway::Routes {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::EmbedService::Stub> embed;
  std::unique_ptr<v1::ModelService::Stub> models;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;
  const pipeline::Pipeline* pipeline = nullptr;

  // The caller's identity, as gRPC's gate reads it: the bearer token, and the client id
  // (its x-embedserve-client header, else "http:IP:PORT"); and its priority class
  // (X-Embedserve-Priority). Non-ASCII values are refused.
  absl::Status Prepare(const httplib::Request& request, grpc::ClientContext* context) const {
    const std::string authorization = request.get_header_value("Authorization");
    if (!authorization.empty()) {
      if (!PrintableAscii(authorization)) {
        return absl::UnauthenticatedError(
            "Authorization: not printable ASCII; send 'Authorization: Bearer TOKEN'");
      }
      context->AddMetadata("authorization", authorization);
    }
    std::string client = request.get_header_value("X-Embedserve-Client");
    if (client.empty() || !PrintableAscii(client)) {
      client = absl::StrCat("http:", request.remote_addr, ":", request.remote_port);
    }
    context->AddMetadata("x-embedserve-client", client);
    // The priority class travels as gRPC's metadata; the server checks its value.
    const std::string priority = request.get_header_value("X-Embedserve-Priority");
    if (!priority.empty()) {
      if (!PrintableAscii(priority)) {
        return absl::InvalidArgumentError(
            "X-Embedserve-Priority: not printable ASCII; use bulk, normal or interactive");
      }
      context->AddMetadata("embedserve-priority", priority);
    }
    return absl::OkStatus();
  }

  void Embeddings(const httplib::Request& request, httplib::Response& response) const {
    absl::StatusOr<EmbeddingsCall> call = ParseEmbeddingsRequest(request.body);
    if (!call.ok()) return ReplyError(response, call.status(), Route::kEmbeddings);
    grpc::ClientContext context;
    if (absl::Status ok = Prepare(request, &context); !ok.ok()) {
      return ReplyError(response, ok, Route::kEmbeddings);
    }
    v1::EmbedResponse out;
    const grpc::Status status = embed->Embed(&context, call->request, &out);
    if (!status.ok()) return ReplyCallError(response, status, context, Route::kEmbeddings);
    absl::StatusOr<std::string> body = WriteEmbeddingsResponse(*call, out);
    if (!body.ok()) return ReplyError(response, body.status(), Route::kEmbeddings);
    response.set_content(*std::move(body), kJson);
  }

  void Rerank(const httplib::Request& request, httplib::Response& response) const {
    absl::StatusOr<RerankCall> call = ParseRerankRequest(request.body);
    if (!call.ok()) return ReplyError(response, call.status(), Route::kRerank);
    // A cross-encoder's logit goes through a sigmoid unless raw scores are asked for, as
    // vLLM, Infinity and TEI answer; cosine and MaxSim scores are given as they are.
    if (!call->raw_scores) {
      auto model = pipeline->FindReady(call->request.model());
      if (model.ok() && (*model)->description.accepts_pairs) call->request.set_sigmoid(true);
    }
    grpc::ClientContext context;
    if (absl::Status ok = Prepare(request, &context); !ok.ok()) {
      return ReplyError(response, ok, Route::kRerank);
    }
    v1::RerankResponse out;
    const grpc::Status status = embed->Rerank(&context, call->request, &out);
    if (!status.ok()) return ReplyCallError(response, status, context, Route::kRerank);
    response.set_content(WriteRerankResponse(*call, out), kJson);
  }

  void Models(const httplib::Request& request, httplib::Response& response) const {
    grpc::ClientContext context;
    if (absl::Status ok = Prepare(request, &context); !ok.ok()) {
      return ReplyError(response, ok, Route::kOther);
    }
    v1::ListModelsResponse out;
    const grpc::Status status = models->ListModels(&context, v1::ListModelsRequest(), &out);
    if (!status.ok()) return ReplyCallError(response, status, context, Route::kOther);
    response.set_content(WriteModelsResponse(out), kJson);
  }

  // 200 only while the server serves (every startup model loaded, not draining).
  void Health(const httplib::Request&, httplib::Response& response) const {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::health::v1::HealthCheckResponse out;
    const grpc::Status status =
        health->Check(&context, grpc::health::v1::HealthCheckRequest(), &out);
    const bool serving =
        status.ok() && out.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    response.status = serving ? 200 : 503;
    response.set_content(serving ? "{\"status\":\"ok\"}" : "{\"status\":\"unavailable\"}", kJson);
  }
};

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Start(
    const std::vector<ListenerOptions>& listeners, std::shared_ptr<grpc::Channel> channel,
    const pipeline::Pipeline* pipeline) {
  std::unique_ptr<Gateway> gateway(new Gateway());
  gateway->routes_ = std::make_unique<Routes>();
  Routes& routes = *gateway->routes_;
  routes.channel = channel;
  routes.embed = v1::EmbedService::NewStub(channel);
  routes.models = v1::ModelService::NewStub(channel);
  routes.health = grpc::health::v1::Health::NewStub(channel);
  routes.pipeline = pipeline;

  const auto add_routes = [&routes](httplib::Server& router) {
        using Request = const httplib::Request&;
        using Response = httplib::Response&;
        for (const char* path : {"/v1/embeddings", "/embeddings"}) {
          router.Post(path, [&routes](Request q, Response r) { routes.Embeddings(q, r); });
        }
        // vLLM serves all three; Infinity /rerank; Cohere /v1 and /v2.
        for (const char* path : {"/v1/rerank", "/rerank", "/v2/rerank"}) {
          router.Post(path, [&routes](Request q, Response r) { routes.Rerank(q, r); });
        }
        for (const char* path : {"/v1/models", "/models"}) {
          router.Get(path, [&routes](Request q, Response r) { routes.Models(q, r); });
        }
        router.Get("/health", [&routes](Request q, Response r) { routes.Health(q, r); });
        router.Get("/metrics", [](Request, Response r) {
          r.set_content(metrics::Global().Render(), "text/plain; version=0.0.4; charset=utf-8");
        });
        // cpp-httplib's own answers (404, 413, 400 for a bad request line...) get an
        // OpenAI error body too.
        router.set_error_handler([](Request q, Response r) {
          if (!r.body.empty()) return;
          const absl::Status status =
              r.status == 404   ? absl::NotFoundError(absl::StrCat(
                                    "no route ", q.method, " ", q.path,
                                    ": try POST /v1/embeddings, POST /v1/rerank, "
                                    "GET /v1/models, GET /health, GET /metrics"))
              : r.status == 413 ? absl::InvalidArgumentError(
                                      "body: over the limit (--http-max-body-bytes)")
              : r.status == 405 ? absl::InvalidArgumentError(
                                      absl::StrCat("method ", q.method, " not allowed here"))
                                : absl::InvalidArgumentError(
                                      absl::StrCat("bad HTTP request (status ", r.status, ")"));
          const int http_status = r.status;
          Reply(r, ErrorFor(status, Route::kOther));
          r.status = http_status;
        });
  };
  for (const ListenerOptions& options : listeners) {
    absl::StatusOr<std::unique_ptr<HttpListener>> listener =
        HttpListener::Start(options, add_routes);
    if (!listener.ok()) return listener.status();
    gateway->listeners_.push_back(*std::move(listener));
  }
  return gateway;
}

std::vector<int> Gateway::ports() const {
  std::vector<int> out;
  for (const auto& listener : listeners_) out.push_back(listener->port());
  return out;
}

void Gateway::Stop() {
  // Every listener stops accepting at once; each then waits for its own requests.
  std::vector<std::thread> stopping;
  for (auto& listener : listeners_) stopping.emplace_back([&listener] { listener->Stop(); });
  for (std::thread& thread : stopping) thread.join();
}

Gateway::~Gateway() { Stop(); }

}  // namespace embedserve::http
