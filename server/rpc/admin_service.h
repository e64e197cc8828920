// embedserve.v1.AdminService: the gRPC edge of the model lifecycle (lifecycle/model_manager).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "embedserve/v1/admin.grpc.pb.h"
#include "server/lifecycle/model_manager.h"
#include "server/pipeline/pipeline.h"
#include "server/rpc/call_gate.h"

namespace embedserve::rpc {

// embedserve.v1.AdminService: each call runs on its own thread (loads take seconds) and
// answers when the change is done. Authentication as every other method (the gate).
class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  // `manager`, `pipeline` and `gate` must outlive the service.
  AdminServiceImpl(lifecycle::ModelManager* manager, pipeline::Pipeline* pipeline, CallGate* gate)
      : manager_(manager), pipeline_(pipeline), gate_(gate) {}
  // Waits for calls still running.
  ~AdminServiceImpl() override;

  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context,
                                      const v1::LoadModelRequest* request,
                                      v1::LoadModelResponse* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context,
                                        const v1::UnloadModelRequest* request,
                                        v1::UnloadModelResponse* response) override;
  grpc::ServerUnaryReactor* ReloadModel(grpc::CallbackServerContext* context,
                                        const v1::ReloadModelRequest* request,
                                        v1::ReloadModelResponse* response) override;
  grpc::ServerUnaryReactor* RescanModelDir(grpc::CallbackServerContext* context,
                                           const v1::RescanModelDirRequest* request,
                                           v1::RescanModelDirResponse* response) override;

 private:
  grpc::ServerUnaryReactor* RunInBackground(grpc::CallbackServerContext* context,
                                            const char* method, const std::string& model,
                                            std::function<absl::Status()> work);
  void FillModel(const std::string& name, v1::ModelInfo* out) const;

  lifecycle::ModelManager* const manager_;
  pipeline::Pipeline* const pipeline_;
  CallGate* const gate_;
  std::mutex mu_;
  std::condition_variable idle_;
  int running_ = 0;
};

}  // namespace embedserve::rpc
