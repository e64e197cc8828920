// EmbedService handlers and their reactors.
#include "server/rpc/embed_service.h"

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/status.h"
#include "common/tensor_codec.h"
#include "server/pipeline/ranking.h"
#include "server/rpc/request_codec.h"
#include "server/rpc/request_validation.h"

namespace embedserve::rpc {
namespace {

using pipeline::CallInput;
using pipeline::EmbedCall;
using pipeline::ServingModel;
using ModelRef = std::shared_ptr<pipeline::ServingModel>;

absl::Time DeadlineOf(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// A unary reactor whose work may be cancelled by the client. Finish runs exactly once:
// from the pipeline call's completion, or directly for an error found before submitting.
class UnaryCallReactor : public grpc::ServerUnaryReactor {
 public:
  UnaryCallReactor(CallGate* gate, const grpc::CallbackServerContext& context,
                   const char* method, const std::string& model, int items)
      : gate_(gate) {
    admitted_ = gate_->Begin(context, method, model, items, &ticket_);
    if (!admitted_.ok()) FinishWith(admitted_);
  }
  // False when the per-client limit refused the call (it is already finished).
  bool admitted() const { return admitted_.ok(); }
  grpc::ServerUnaryReactor* FinishNow(const absl::Status& status) {
    FinishWith(status);
    return this;
  }

  void Attach(const std::shared_ptr<EmbedCall>& call) {
    bool cancelled;
    {
      absl::MutexLock lock(&mu_);
      call_ = call;
      cancelled = cancelled_;
    }
    if (cancelled) call->Cancel();
  }
  void FinishWith(const absl::Status& status) {
    gate_->End(ticket_, status);
    Finish(ToGrpcStatus(status));
  }

  void OnCancel() override {
    std::shared_ptr<EmbedCall> call;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      call = call_.lock();
    }
    if (call) call->Cancel();
  }
  void OnDone() override { delete this; }

 private:
  CallGate* const gate_;
  CallGate::Ticket ticket_;
  absl::Status admitted_;
  absl::Mutex mu_;
  std::weak_ptr<EmbedCall> call_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// The preamble every unary RPC shares: the gate admits the call (auth, per-client limits,
// metrics, access log), then the model's ready version is found. When either fails, the
// reactor has already finished with the error and `model` is null.
struct Admission {
  UnaryCallReactor* reactor;
  ModelRef model;
};
Admission Admit(CallGate* gate, pipeline::Pipeline* pipeline,
                const grpc::CallbackServerContext& context, const char* method,
                const std::string& model_name, int items) {
  auto* reactor = new UnaryCallReactor(gate, context, method, model_name, items);
  if (!reactor->admitted()) return {reactor, nullptr};
  absl::StatusOr<ModelRef> found = pipeline->FindReady(model_name);
  if (!found.ok()) {
    reactor->FinishWith(found.status());
    return {reactor, nullptr};
  }
  return {reactor, *std::move(found)};
}

TargetModel Target(const ServingModel& model) { return {model.name, model.description}; }

pipeline::CallHook AttachTo(UnaryCallReactor* reactor) {
  return [reactor](const std::shared_ptr<EmbedCall>& call) { reactor->Attach(call); };
}

int TokenCount(EmbedCall& call, int i, const models::ModelDescription& model) {
  if (call.input(i).modality == pipeline::Modality::kText) {
    return static_cast<int>(call.text(i).token_ids.size());
  }
  return model.multi_vector ? call.results()[i].rows : 0;
}

// Writes an EmbedCall's results as v1 embeddings.
void WriteEmbeddings(EmbedCall& call, const models::ModelDescription& model,
                     const OutputOptions& options,
                     google::protobuf::RepeatedPtrField<v1::Embedding>* out) {
  out->Reserve(call.size());
  for (int i = 0; i < call.size(); ++i) {
    const int tokens = TokenCount(call, i, model);
    const bool truncated =
        call.input(i).modality == pipeline::Modality::kText && call.text(i).truncated;
    EncodeEmbedding(call.mutable_results()[i], model, options, truncated, tokens, out->Add());
  }
}

// Bidirectional bulk embedding: reads up to `window` messages ahead, answers in order,
// one write at a time (gRPC flow control pushes back on a slow reader). Every event calls
// Step(), which decides under the lock what to start and does it after unlocking; Finish is
// always the last thing touched, since OnDone deletes the reactor.
class EmbedStreamReactor
    : public grpc::ServerBidiReactor<v1::EmbedStreamRequest, v1::EmbedStreamResponse> {
 public:
  EmbedStreamReactor(grpc::CallbackServerContext* context, pipeline::Pipeline* pipeline,
                     RequestLimits limits, CallGate* gate)
      : context_(context), pipeline_(pipeline), limits_(limits), gate_(gate) {
    absl::Status admitted = gate_->Begin(*context, "EmbedStream", "", 0, &ticket_);
    if (!admitted.ok()) {
      absl::MutexLock lock(&mu_);
      finished_ = true;
      gate_->End(ticket_, admitted);
      Finish(ToGrpcStatus(admitted));
      return;
    }
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    std::shared_ptr<Slot> slot;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (!ok) {
        reads_done_ = true;
      } else {
        slot = std::make_shared<Slot>();
        slot->response.set_id(request_.id());
        slots_.push_back(slot);
        ++in_flight_;
        ++messages_;
      }
    }
    if (slot) SubmitMessage(slot);  // completes the slot, maybe inline, via Step()
    else Step();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      slots_.pop_front();
      if (!ok) broken_ = true;
    }
    Step();
  }

  void OnCancel() override {
    std::vector<std::shared_ptr<EmbedCall>> calls;
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
      for (auto& slot : slots_) {
        if (auto call = slot->call.lock()) calls.push_back(call);
      }
    }
    for (auto& call : calls) call->Cancel();
    Step();
  }

  void OnDone() override { delete this; }

 private:
  struct Slot {
    v1::EmbedStreamResponse response;
    bool done = false;
    std::weak_ptr<EmbedCall> call;
  };

  // Reads request_ (valid until the next StartRead, which only Step() issues after this).
  void SubmitMessage(const std::shared_ptr<Slot>& slot) {
    absl::StatusOr<ModelRef> found = pipeline_->FindReady(request_.model());
    if (!found.ok()) {
      CompleteSlot(slot, found.status(), nullptr, nullptr, {});
      return;
    }
    absl::StatusOr<ValidEmbed> valid =
        ValidateEmbed(Target(**found), request_.inputs(), request_.options(), limits_);
    if (!valid.ok()) {
      CompleteSlot(slot, valid.status(), nullptr, nullptr, {});
      return;
    }
    ModelRef entry = *found;
    auto call = std::make_shared<EmbedCall>(
        std::move(valid->inputs), valid->options.truncate, DeadlineOf(context_),
        [this, slot, entry, opts = valid->options](const absl::Status& s, EmbedCall& c) {
          CompleteSlot(slot, s, entry, &c, opts);
        });
    {
      absl::MutexLock lock(&mu_);
      slot->call = call;
      submitting_ = true;  // no new read until this message is handed over
    }
    pipeline_->Submit(entry, call);
    Step(/*end_submit=*/true);
  }

  void CompleteSlot(const std::shared_ptr<Slot>& slot, const absl::Status& status,
                    const ModelRef& entry, EmbedCall* call, const OutputOptions& options) {
    if (status.ok()) {
      WriteEmbeddings(*call, entry->description, options, slot->response.mutable_embeddings());
      EncodeTimings(call->timings(), slot->response.mutable_timing());
    } else {
      slot->response.mutable_error()->set_code(static_cast<int>(status.code()));
      slot->response.mutable_error()->set_message(std::string(status.message()));
    }
    Step(/*end_submit=*/false, slot.get());
  }

  // `end_submit`: the caller finished handing a message to the pipeline. `completed`: a
  // slot whose answer is ready. Both are applied in the same critical section as the
  // decisions, so no other thread can finish (and delete) the reactor in between; a thread
  // that starts a read or write keeps the reactor alive (finishing needs neither pending).
  void Step(bool end_submit = false, Slot* completed = nullptr) {
    bool start_read = false;
    const v1::EmbedStreamResponse* to_write = nullptr;
    bool finish = false;
    grpc::Status finish_status;
    {
      absl::MutexLock lock(&mu_);
      if (end_submit) submitting_ = false;
      if (completed != nullptr) {
        completed->done = true;
        --in_flight_;
      }
      if (finished_) return;
      if (!broken_ && !writing_ && !slots_.empty() && slots_.front()->done) {
        writing_ = true;
        to_write = &slots_.front()->response;
      }
      if (!broken_ && !reading_ && !reads_done_ && !submitting_ &&
          in_flight_ < limits_.stream_window) {
        reading_ = start_read = true;
      }
      if (!writing_ && !reading_ && in_flight_ == 0 && !submitting_) {
        if (broken_) {
          finish = true;
          finish_status = grpc::Status(grpc::StatusCode::CANCELLED, "the stream was cancelled");
        } else if (reads_done_ && slots_.empty()) {
          finish = true;
        }
      }
      if (finish) {
        finished_ = true;
        ticket_.items = messages_;
      }
    }
    if (to_write != nullptr) StartWrite(to_write);
    if (start_read) StartRead(&request_);
    if (finish) {
      gate_->End(ticket_, FromGrpcStatus(finish_status));
      Finish(finish_status);
    }
  }

  grpc::CallbackServerContext* const context_;
  pipeline::Pipeline* const pipeline_;
  const RequestLimits limits_;
  CallGate* const gate_;
  CallGate::Ticket ticket_;
  int messages_ ABSL_GUARDED_BY(mu_) = 0;
  v1::EmbedStreamRequest request_;
  absl::Mutex mu_;
  std::deque<std::shared_ptr<Slot>> slots_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool reading_ ABSL_GUARDED_BY(mu_) = true;
  bool submitting_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerUnaryReactor* EmbedServiceImpl::Embed(grpc::CallbackServerContext* context,
                                                  const v1::EmbedRequest* request,
                                                  v1::EmbedResponse* response) {
  auto [reactor, model] = Admit(gate_, pipeline_, *context, "Embed", request->model(),
                                request->inputs_size());
  if (!model) return reactor;
  absl::StatusOr<ValidEmbed> valid =
      ValidateEmbed(Target(*model), request->inputs(), request->options(), limits_);
  if (!valid.ok()) return reactor->FinishNow(valid.status());
  auto call = std::make_shared<EmbedCall>(
      std::move(valid->inputs), valid->options.truncate, DeadlineOf(context),
      [reactor = reactor, response, model = model, opts = valid->options](
          const absl::Status& status, EmbedCall& c) {
        if (!status.ok()) {
          reactor->FinishWith(status);
          return;
        }
        response->set_model(model->name);
        WriteEmbeddings(c, model->description, opts, response->mutable_embeddings());
        EncodeTimings(c.timings(), response->mutable_timing());
        reactor->FinishWith(absl::OkStatus());
      });
  reactor->Attach(call);
  pipeline_->Submit(model, call);
  return reactor;
}

grpc::ServerBidiReactor<v1::EmbedStreamRequest, v1::EmbedStreamResponse>*
EmbedServiceImpl::EmbedStream(grpc::CallbackServerContext* context) {
  return new EmbedStreamReactor(context, pipeline_, limits_, gate_);
}

grpc::ServerUnaryReactor* EmbedServiceImpl::Rerank(grpc::CallbackServerContext* context,
                                                   const v1::RerankRequest* request,
                                                   v1::RerankResponse* response) {
  auto [reactor, model] = Admit(gate_, pipeline_, *context, "Rerank", request->model(),
                                request->candidates_size() + 1);
  if (!model) return reactor;
  absl::StatusOr<pipeline::RerankRequest> valid = ValidateRerank(Target(*model), *request, limits_);
  if (!valid.ok()) return reactor->FinishNow(valid.status());
  pipeline::Rerank(
      *pipeline_, model, *std::move(valid), DeadlineOf(context), AttachTo(reactor),
      [reactor = reactor, response, model = model](absl::StatusOr<pipeline::RerankOutcome> outcome) {
        if (!outcome.ok()) {
          reactor->FinishWith(outcome.status());
          return;
        }
        response->set_model(model->name);
        response->set_scoring(model->description.scoring);
        for (const pipeline::RankedCandidate& ranked : outcome->ranked) {
          v1::RerankResult* result = response->add_results();
          result->set_index(ranked.index);
          result->set_score(ranked.score);
          result->set_truncated(ranked.truncated);
        }
        if (outcome->timings.has_value()) EncodeTimings(*outcome->timings, response->mutable_timing());
        reactor->FinishWith(absl::OkStatus());
      });
  return reactor;
}

grpc::ServerUnaryReactor* EmbedServiceImpl::Classify(grpc::CallbackServerContext* context,
                                                     const v1::ClassifyRequest* request,
                                                     v1::ClassifyResponse* response) {
  auto [reactor, model] = Admit(gate_, pipeline_, *context, "Classify", request->model(),
                                request->inputs_size());
  if (!model) return reactor;
  absl::StatusOr<pipeline::ClassifyRequest> valid =
      ValidateClassify(Target(*model), *request, limits_);
  if (!valid.ok()) return reactor->FinishNow(valid.status());
  pipeline::Classify(
      *pipeline_, model, *std::move(valid), DeadlineOf(context), AttachTo(reactor),
      [reactor = reactor, response, model = model,
       request](absl::StatusOr<pipeline::ClassifyOutcome> outcome) {
        if (!outcome.ok()) {
          reactor->FinishWith(outcome.status());
          return;
        }
        response->set_model(model->name);
        for (const std::vector<pipeline::LabelScore>& scores : outcome->per_input) {
          v1::Classification* classification = response->add_classifications();
          for (const pipeline::LabelScore& label : scores) {
            v1::LabelScore* score = classification->add_scores();
            score->set_index(label.index);
            score->set_label(request->labels(label.index));
            score->set_probability(label.probability);
            score->set_logit(label.logit);
          }
        }
        EncodeTimings(outcome->timings, response->mutable_timing());
        reactor->FinishWith(absl::OkStatus());
      });
  return reactor;
}

grpc::ServerUnaryReactor* EmbedServiceImpl::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  auto [reactor, model] = Admit(gate_, pipeline_, *context, "Tokenize", request->model(),
                                request->texts_size());
  if (!model) return reactor;
  absl::StatusOr<ValidTokenize> valid = ValidateTokenize(Target(*model), *request, limits_);
  if (!valid.ok()) return reactor->FinishNow(valid.status());
  response->set_model(model->name);
  // Tokenizing a text takes microseconds: done inline rather than through the pool.
  for (int i = 0; i < request->texts_size(); ++i) {
    absl::StatusOr<models::Tokenization> tokens =
        model->model->Tokenize(request->texts(i), valid->truncate);
    if (!tokens.ok()) {
      return reactor->FinishNow(absl::Status(
          tokens.status().code(), absl::StrCat("texts[", i, "]: ", tokens.status().message())));
    }
    v1::TokenizedText* out = response->add_texts();
    out->mutable_ids()->Assign(tokens->ids.begin(), tokens->ids.end());
    for (std::string& token : tokens->tokens) out->add_tokens(std::move(token));
    out->set_truncated(tokens->truncated);
  }
  return reactor->FinishNow(absl::OkStatus());
}

}  // namespace embedserve::rpc
