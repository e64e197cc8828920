// The AdminService handlers: each call runs the lifecycle change on its own thread.
#include "server/rpc/admin_service.h"

#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "server/rpc/model_service.h"

namespace embedserve::rpc {

AdminServiceImpl::~AdminServiceImpl() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [this] { return running_ == 0; });
}

grpc::ServerUnaryReactor* AdminServiceImpl::RunInBackground(
    grpc::CallbackServerContext* context, const char* method, const std::string& model,
    std::function<absl::Status()> work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  CallGate::Ticket ticket;
  absl::Status admitted = gate_->Begin(*context, method, model, 0, &ticket,
                                          CallGate::ClientLimit::kExempt);
  if (!admitted.ok()) {
    gate_->End(ticket, admitted);
    reactor->Finish(ToGrpcStatus(admitted));
    return reactor;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++running_;
  }
  std::thread([this, reactor, ticket, work = std::move(work)] {
    absl::Status status;
    try {
      status = work();
    } catch (const std::exception& e) {
      status = absl::InternalError(absl::StrCat("unexpected error: ", e.what()));
    }
    gate_->End(ticket, status);
    reactor->Finish(ToGrpcStatus(status));
    std::lock_guard<std::mutex> lock(mu_);
    --running_;
    idle_.notify_all();
  }).detach();
  return reactor;
}

void AdminServiceImpl::FillModel(const std::string& name, v1::ModelInfo* out) const {
  absl::StatusOr<pipeline::ModelSnapshot> snapshot = pipeline_->Snapshot(name);
  if (snapshot.ok()) ToModelInfo(*snapshot, out);
}

grpc::ServerUnaryReactor* AdminServiceImpl::LoadModel(grpc::CallbackServerContext* context,
                                                      const v1::LoadModelRequest* request,
                                                      v1::LoadModelResponse* response) {
  return RunInBackground(context, "LoadModel", request->name(), [this, request, response] {
    absl::Status status = manager_->Load(request->name(), request->source());
    if (status.ok()) FillModel(request->name(), response->mutable_model());
    return status;
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::UnloadModel(grpc::CallbackServerContext* context,
                                                        const v1::UnloadModelRequest* request,
                                                        v1::UnloadModelResponse*) {
  return RunInBackground(context, "UnloadModel", request->name(),
                         [this, request] { return manager_->Unload(request->name()); });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ReloadModel(grpc::CallbackServerContext* context,
                                                        const v1::ReloadModelRequest* request,
                                                        v1::ReloadModelResponse* response) {
  return RunInBackground(context, "ReloadModel", request->name(), [this, request, response] {
    std::optional<std::string> source;
    if (request->has_source()) source = request->source();
    absl::Status status = manager_->Reload(request->name(), source);
    if (status.ok()) FillModel(request->name(), response->mutable_model());
    return status;
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::RescanModelDir(
    grpc::CallbackServerContext* context, const v1::RescanModelDirRequest*,
    v1::RescanModelDirResponse* response) {
  return RunInBackground(context, "RescanModelDir", "", [this, response] {
    absl::StatusOr<lifecycle::ModelManager::RescanResult> result = manager_->Rescan();
    if (!result.ok()) return result.status();
    for (const std::string& name : result->loaded) response->add_loaded(name);
    for (const std::string& name : result->unloaded) response->add_unloaded(name);
    for (const std::string& name : result->reloaded) response->add_reloaded(name);
    for (const auto& [name, status] : result->failed) {
      v1::ModelFailure* failure = response->add_failed();
      failure->set_name(name);
      failure->set_code(static_cast<int>(status.code()));
      failure->set_message(std::string(status.message()));
    }
    return absl::OkStatus();
  });
}

// ---------------------------------------------------------------------------------------
// Registration: rpc::Server builds its grpc::ServerBuilder itself; a builder plugin (the
// mechanism reflection uses) adds the admin service to it.

}  // namespace embedserve::rpc
