// The gRPC edge of model discovery: ModelService (ListModels, GetModel).
#pragma once

#include "embedserve/v1/models.grpc.pb.h"
#include "server/pipeline/pipeline.h"
#include "server/rpc/call_gate.h"

namespace embedserve::rpc {

// A pipeline snapshot as the v1 message (also used by AdminService's answers).
void ToModelInfo(const pipeline::ModelSnapshot& model, v1::ModelInfo* out);

class ModelServiceImpl final : public v1::ModelService::CallbackService {
 public:
  // `pipeline` and `gate` must outlive the service.
  ModelServiceImpl(pipeline::Pipeline* pipeline, CallGate* gate)
      : pipeline_(pipeline), gate_(gate) {}

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const v1::GetModelRequest* request,
                                     v1::GetModelResponse* response) override;

 private:
  pipeline::Pipeline* const pipeline_;
  CallGate* const gate_;
};

}  // namespace embedserve::rpc
