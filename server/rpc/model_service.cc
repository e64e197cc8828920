// ModelService handlers: snapshots of the pipeline's models as v1.ModelInfo.
#include "server/rpc/model_service.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "server/rpc/retry_advice.h"

namespace embedserve::rpc {

void ToModelInfo(const pipeline::ModelSnapshot& model, v1::ModelInfo* out) {
  out->set_name(model.name);
  out->set_source(model.description.resolved_source.empty()
                      ? model.source
                      : absl::StrCat(model.source, " (", model.description.resolved_source, ")"));
  switch (model.state) {
    case pipeline::ModelState::kLoading: out->set_state(v1::MODEL_STATE_LOADING); break;
    case pipeline::ModelState::kReady: out->set_state(v1::MODEL_STATE_READY); break;
    case pipeline::ModelState::kFailed: out->set_state(v1::MODEL_STATE_FAILED); break;
  }
  out->set_state_message(model.state_message);
  const models::ModelDescription& d = model.description;
  out->set_family(d.family);
  out->set_architecture(d.architecture);
  if (d.accepts_text) out->add_modalities(v1::MODALITY_TEXT);
  if (d.accepts_image) out->add_modalities(v1::MODALITY_IMAGE);
  if (d.accepts_pairs) out->add_modalities(v1::MODALITY_PAIR);
  out->set_embedding_dim(d.embedding_dim);
  out->set_multi_vector(d.multi_vector);
  out->set_context_length(d.context_length);
  out->set_image_size(d.image_size);
  out->set_dtype(d.dtype);
  out->set_dtype_reason(d.dtype_reason);
  out->set_device(d.device);
  out->set_scoring(d.scoring);
  out->set_activation(d.activation);
  out->set_logit_scale(d.logit_scale);
  out->set_estimated_bytes(model.estimated_bytes);
}

grpc::ServerUnaryReactor* ModelServiceImpl::ListModels(grpc::CallbackServerContext* context,
                                                       const v1::ListModelsRequest*,
                                                       v1::ListModelsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  CallGate::Ticket ticket;
  absl::Status admitted = gate_->Begin(*context, "ListModels", "", 0, &ticket);
  gate_->End(ticket, admitted);
  if (!admitted.ok()) {
    AddRetryAdvice(admitted, context);
    reactor->Finish(ToGrpcStatus(admitted));
    return reactor;
  }
  for (const pipeline::ModelSnapshot& model : pipeline_->Models()) {
    ToModelInfo(model, response->add_models());
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* ModelServiceImpl::GetModel(grpc::CallbackServerContext* context,
                                                     const v1::GetModelRequest* request,
                                                     v1::GetModelResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  CallGate::Ticket ticket;
  absl::Status status = gate_->Begin(*context, "GetModel", request->name(), 0, &ticket);
  if (status.ok()) {
    // The pipeline's own snapshot (NOT_FOUND with the name abbreviated), and the call's
    // real outcome in the metrics and the access log.
    absl::StatusOr<pipeline::ModelSnapshot> model = pipeline_->Snapshot(request->name());
    if (model.ok()) {
      ToModelInfo(*model, response->mutable_model());
    } else {
      status = model.status();
    }
  }
  gate_->End(ticket, status);
  AddRetryAdvice(status, context);
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace embedserve::rpc
