// The gRPC edge of model discovery: ModelService (ListModels, GetModel).
#pragma once

#include "embedserve/v1/models.grpc.pb.h"
#include "server/pipeline/pipeline.h"

namespace embedserve::rpc {

class ModelServiceImpl final : public v1::ModelService::CallbackService {
 public:
  explicit ModelServiceImpl(pipeline::Pipeline* pipeline) : pipeline_(pipeline) {}

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const v1::GetModelRequest* request,
                                     v1::GetModelResponse* response) override;

 private:
  pipeline::Pipeline* const pipeline_;
};

}  // namespace embedserve::rpc
