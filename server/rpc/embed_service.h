// The gRPC edge of inference: EmbedService (Embed, EmbedStream, Rerank, Classify, Tokenize)
// on the callback API. Handlers validate, hand work to the pipeline and return at once;
// the pipeline's completion finishes the call. No handler blocks on model work. The methods
// take and give raw bytes, parsed and serialized by request_parsing.h: a request protobuf
// refuses (a string that is not UTF-8) gets an error naming its field and is counted and
// logged, instead of gRPC's UNIMPLEMENTED with no message before any handler runs.
#pragma once

#include "embedserve/v1/embed.grpc.pb.h"
#include "server/pipeline/pipeline.h"
#include "server/rpc/call_gate.h"
#include "server/rpc/limits.h"

namespace embedserve::rpc {

using RawEmbedService = v1::EmbedService::WithRawCallbackMethod_Embed<
    v1::EmbedService::WithRawCallbackMethod_EmbedStream<
        v1::EmbedService::WithRawCallbackMethod_Rerank<
            v1::EmbedService::WithRawCallbackMethod_Classify<
                v1::EmbedService::WithRawCallbackMethod_Tokenize<v1::EmbedService::Service>>>>>;

class EmbedServiceImpl final : public RawEmbedService {
 public:
  // `pipeline` must outlive the service.
  // `pipeline` and `gate` must outlive the service.
  EmbedServiceImpl(pipeline::Pipeline* pipeline, RequestLimits limits, CallGate* gate)
      : pipeline_(pipeline), limits_(limits), gate_(gate) {}

  // Each request: v1.EmbedRequest, v1.RerankRequest, ... serialized; each response the
  // method's response message serialized.
  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* EmbedStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Rerank(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;

 private:
  pipeline::Pipeline* const pipeline_;
  const RequestLimits limits_;
  CallGate* const gate_;
};

}  // namespace embedserve::rpc
