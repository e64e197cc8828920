// The gRPC edge of inference: EmbedService (Embed, EmbedStream, Rerank, Classify, Tokenize)
// on the callback API. Handlers validate, hand work to the pipeline and return at once;
// the pipeline's completion finishes the call. No handler blocks on model work.
#pragma once

#include "embedserve/v1/embed.grpc.pb.h"
#include "server/pipeline/pipeline.h"
#include "server/rpc/call_gate.h"
#include "server/rpc/limits.h"

namespace embedserve::rpc {

class EmbedServiceImpl final : public v1::EmbedService::CallbackService {
 public:
  // `pipeline` must outlive the service.
  // `pipeline` and `gate` must outlive the service.
  EmbedServiceImpl(pipeline::Pipeline* pipeline, RequestLimits limits, CallGate* gate)
      : pipeline_(pipeline), limits_(limits), gate_(gate) {}

  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* context,
                                  const v1::EmbedRequest* request,
                                  v1::EmbedResponse* response) override;
  grpc::ServerBidiReactor<v1::EmbedStreamRequest, v1::EmbedStreamResponse>* EmbedStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Rerank(grpc::CallbackServerContext* context,
                                   const v1::RerankRequest* request,
                                   v1::RerankResponse* response) override;
  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* context,
                                     const v1::ClassifyRequest* request,
                                     v1::ClassifyResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;

 private:
  pipeline::Pipeline* const pipeline_;
  const RequestLimits limits_;
  CallGate* const gate_;
};

}  // namespace embedserve::rpc
