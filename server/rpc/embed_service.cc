// EmbedService handlers and their reactors.
#include "server/rpc/embed_service.h"

#include <deque>
#include <limits>
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
#include "server/rpc/priority.h"
#include "server/rpc/request_codec.h"
#include "server/rpc/request_parsing.h"
#include "server/rpc/request_validation.h"
#include "server/rpc/retry_advice.h"

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

// What the access log and the metrics record for a call that finished with `status`: a
// call gRPC could not complete (the client cancelled or went away first) did not deliver an
// OK answer, whatever the handler finished with.
absl::Status DeliveredOutcome(const absl::Status& status,
                              const grpc::CallbackServerContext& context) {
  if (status.ok() && context.IsCancelled()) {
    return absl::CancelledError(
        "the answer was not delivered: the client cancelled or went away first");
  }
  return status;
}

// The items a request carries, for the access log.
int ItemsOf(const v1::EmbedRequest& request) { return request.inputs_size(); }
int ItemsOf(const v1::RerankRequest& request) { return request.candidates_size() + 1; }
int ItemsOf(const v1::ClassifyRequest& request) { return request.inputs_size(); }
int ItemsOf(const v1::TokenizeRequest& request) { return request.texts_size(); }

// A unary call on raw bytes: the reactor parses the request and owns it and the response
// message until the call is done. Finish runs exactly once: from the pipeline call's
// completion, or directly for an error found before submitting. The call is counted and
// logged in OnDone, with its delivered outcome. The work may be cancelled by the client.
template <typename Request, typename Response>
class UnaryCallReactor : public grpc::ServerUnaryReactor {
 public:
  // Parses `raw_request`, then passes the gate; either's error finishes the call at once
  // (the gate's first: an unauthenticated caller learns nothing about its request).
  UnaryCallReactor(CallGate* gate, grpc::CallbackServerContext* context, const char* method,
                   const grpc::ByteBuffer& raw_request, grpc::ByteBuffer* raw_response,
                   int64_t max_response_bytes)
      : gate_(gate),
        context_(context),
        raw_response_(raw_response),
        max_response_bytes_(max_response_bytes) {
    const absl::Status parsed = ParseRequest(raw_request, &request_);
    admitted_ = gate_->Begin(*context, method, request_.model(), ItemsOf(request_), &ticket_);
    if (admitted_.ok()) admitted_ = parsed;
    if (!admitted_.ok()) FinishWith(admitted_);
  }
  // False when the request could not be parsed or the gate refused the call (it is
  // already finished).
  bool admitted() const { return admitted_.ok(); }
  const Request& request() const { return request_; }
  Response* response() { return &response_; }

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
  // An OK answer too large to send becomes RESOURCE_EXHAUSTED naming the limit (gRPC would
  // refuse it after the work, with a message that names no flag).
  void FinishWith(absl::Status status) {
    if (status.ok()) status = SerializeResponse(response_, max_response_bytes_, raw_response_);
    AddRetryAdvice(status, context_);
    status_ = status;  // read in OnDone, which Finish's completion precedes
    gate_->Release(&ticket_);
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
  void OnDone() override {
    gate_->End(ticket_, DeliveredOutcome(status_, *context_));
    delete this;
  }

 private:
  CallGate* const gate_;
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer* const raw_response_;
  const int64_t max_response_bytes_;
  Request request_;
  Response response_;
  CallGate::Ticket ticket_;
  absl::Status admitted_;
  absl::Status status_;
  absl::Mutex mu_;
  std::weak_ptr<EmbedCall> call_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// The preamble every unary RPC shares: the request is parsed, the gate admits the call
// (auth, per-client limits, metrics, access log), then the model's ready version is found.
// When any fails, the reactor has already finished with the error and `model` is null.
template <typename Request, typename Response>
struct Admission {
  UnaryCallReactor<Request, Response>* reactor;
  ModelRef model;
};
template <typename Request, typename Response>
Admission<Request, Response> Admit(CallGate* gate, pipeline::Pipeline* pipeline,
                                   grpc::CallbackServerContext* context, const char* method,
                                   const grpc::ByteBuffer& raw_request,
                                   grpc::ByteBuffer* raw_response, const RequestLimits& limits) {
  auto* reactor = new UnaryCallReactor<Request, Response>(gate, context, method, raw_request,
                                                          raw_response, limits.max_message_bytes);
  if (!reactor->admitted()) return {reactor, nullptr};
  absl::StatusOr<ModelRef> found = pipeline->FindReady(reactor->request().model());
  if (!found.ok()) {
    reactor->FinishWith(found.status());
    return {reactor, nullptr};
  }
  return {reactor, *std::move(found)};
}

TargetModel Target(const ServingModel& model) { return {model.name, model.description}; }

// Refuses, before any compute, an Embed whose answer cannot fit in one message: each image
// of a multi-vector model answers at least the model's image-token rows.
absl::Status CheckAnswerCanFit(const models::ModelDescription& model, const ValidEmbed& valid,
                               int64_t limit) {
  if (!model.multi_vector || model.min_image_rows <= 0) return absl::OkStatus();
  int64_t images = 0;
  for (const CallInput& input : valid.inputs) {
    images += input.modality == pipeline::Modality::kImage;
  }
  // Float lists are 4 bytes a value; packed bytes are the dtype's width.
  const int64_t value_bytes =
      valid.options.packed && valid.options.dtype != v1::DTYPE_FLOAT32 ? 2 : 4;
  const int64_t per_image = int64_t{model.min_image_rows} * model.embedding_dim * value_bytes;
  if (images == 0 || images * per_image <= limit) return absl::OkStatus();
  const int64_t fitting = limit / per_image;
  return absl::ResourceExhaustedError(absl::StrCat(
      "inputs: ", images, " images answer at least ", images * per_image, " bytes (",
      model.min_image_rows, " x ", model.embedding_dim, " values each, ", value_bytes,
      " bytes a value), over the limit of ", limit, " bytes (--max-message-bytes); ",
      fitting == 0 ? "one image alone is over it"
                   : absl::StrCat("send at most ", fitting, " images per call"),
      ", ask for dtype float16 or bfloat16 with packed encoding, or raise the server's "
      "--max-message-bytes"));
}

template <typename Request, typename Response>
pipeline::CallHook AttachTo(UnaryCallReactor<Request, Response>* reactor) {
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
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  EmbedStreamReactor(grpc::CallbackServerContext* context, pipeline::Pipeline* pipeline,
                     RequestLimits limits, CallGate* gate)
      : context_(context), pipeline_(pipeline), limits_(limits), gate_(gate) {
    absl::Status admitted = gate_->Begin(*context, "EmbedStream", "", 0, &ticket_);
    if (!admitted.ok()) {
      absl::MutexLock lock(&mu_);
      finished_ = true;
      outcome_ = admitted;
      AddRetryAdvice(admitted, context_);
      Finish(ToGrpcStatus(admitted));
      return;
    }
    StartRead(&raw_request_);
  }

  void OnReadDone(bool ok) override {
    std::shared_ptr<Slot> slot;
    absl::Status parsed;
    if (ok) parsed = ParseRequest(raw_request_, &request_);
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
    if (slot && !parsed.ok()) CompleteSlot(slot, parsed, nullptr, nullptr, {});
    else if (slot) SubmitMessage(slot);  // completes the slot, maybe inline, via Step()
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

  // Counted and logged here, with the delivered outcome: a stream whose client vanished
  // (its reads end as if it had closed its side) is CANCELLED, not OK.
  void OnDone() override {
    absl::Status outcome;
    {
      absl::MutexLock lock(&mu_);
      outcome = outcome_;
      ticket_.items = messages_;
    }
    gate_->End(ticket_, DeliveredOutcome(outcome, *context_));
    delete this;
  }

 private:
  struct Slot {
    v1::EmbedStreamResponse response;
    grpc::ByteBuffer wire;  // the response serialized, once done
    bool done = false;
    std::weak_ptr<EmbedCall> call;
  };

  // Reads request_ (valid until the next read, which only Step() starts after this).
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
    if (absl::Status fits =
            CheckAnswerCanFit((*found)->description, *valid, limits_.max_message_bytes);
        !fits.ok()) {
      CompleteSlot(slot, fits, nullptr, nullptr, {});
      return;
    }
    absl::StatusOr<pipeline::Priority> priority =
        PriorityOf(request_.options().priority(), "options.priority", *context_);
    if (!priority.ok()) {
      CompleteSlot(slot, priority.status(), nullptr, nullptr, {});
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
    call->set_priority(*priority);
    pipeline_->Submit(entry, call);
    Step(/*end_submit=*/true);
  }

  void CompleteSlot(const std::shared_ptr<Slot>& slot, absl::Status status,
                    const ModelRef& entry, EmbedCall* call, const OutputOptions& options) {
    if (status.ok()) {
      WriteEmbeddings(*call, entry->description, options, slot->response.mutable_embeddings());
      EncodeTimings(call->timings(), slot->response.mutable_timing());
      // Too large to send: this message's error instead of breaking the stream.
      status = SerializeResponse(slot->response, limits_.max_message_bytes, &slot->wire);
      if (!status.ok()) {
        const std::string id = slot->response.id();
        slot->response.Clear();
        slot->response.set_id(id);
      }
    }
    if (!status.ok()) {
      slot->response.mutable_error()->set_code(static_cast<int>(status.code()));
      slot->response.mutable_error()->set_message(std::string(status.message()));
      // An error answer is small: only a --max-message-bytes below a few hundred bytes
      // could refuse it, and then the write fails and the stream ends CANCELLED.
      (void)SerializeResponse(slot->response, std::numeric_limits<int32_t>::max(), &slot->wire);
    }
    Step(/*end_submit=*/false, slot.get());
  }

  // `end_submit`: the caller finished handing a message to the pipeline. `completed`: a
  // slot whose answer is ready. Both are applied in the same critical section as the
  // decisions, so no other thread can finish (and delete) the reactor in between; a thread
  // that starts a read or write keeps the reactor alive (finishing needs neither pending).
  void Step(bool end_submit = false, Slot* completed = nullptr) {
    bool start_read = false;
    const grpc::ByteBuffer* to_write = nullptr;
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
        to_write = &slots_.front()->wire;
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
        outcome_ = FromGrpcStatus(finish_status);
      }
    }
    if (to_write != nullptr) StartWrite(to_write);
    if (start_read) StartRead(&raw_request_);
    if (finish) {
      gate_->Release(&ticket_);  // OnDone, which reads the ticket, follows Finish
      Finish(finish_status);
    }
  }

  grpc::CallbackServerContext* const context_;
  pipeline::Pipeline* const pipeline_;
  const RequestLimits limits_;
  CallGate* const gate_;
  CallGate::Ticket ticket_;
  int messages_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::ByteBuffer raw_request_;
  v1::EmbedStreamRequest request_;  // raw_request_ parsed
  absl::Mutex mu_;
  std::deque<std::shared_ptr<Slot>> slots_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool reading_ ABSL_GUARDED_BY(mu_) = true;
  bool submitting_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status outcome_ ABSL_GUARDED_BY(mu_);  // what Finish was given
};

}  // namespace

grpc::ServerUnaryReactor* EmbedServiceImpl::Embed(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* raw_request,
                                                  grpc::ByteBuffer* raw_response) {
  auto [reactor, model] = Admit<v1::EmbedRequest, v1::EmbedResponse>(
      gate_, pipeline_, context, "Embed", *raw_request, raw_response, limits_);
  if (!model) return reactor;
  const v1::EmbedRequest* request = &reactor->request();
  v1::EmbedResponse* response = reactor->response();
  absl::StatusOr<ValidEmbed> valid =
      ValidateEmbed(Target(*model), request->inputs(), request->options(), limits_);
  if (!valid.ok()) return reactor->FinishNow(valid.status());
  if (absl::Status fits = CheckAnswerCanFit(model->description, *valid, limits_.max_message_bytes);
      !fits.ok()) {
    return reactor->FinishNow(fits);
  }
  absl::StatusOr<pipeline::Priority> priority =
      PriorityOf(request->options().priority(), "options.priority", *context);
  if (!priority.ok()) return reactor->FinishNow(priority.status());
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
  call->set_priority(*priority);
  pipeline_->Submit(model, call);
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* EmbedServiceImpl::EmbedStream(
    grpc::CallbackServerContext* context) {
  return new EmbedStreamReactor(context, pipeline_, limits_, gate_);
}

grpc::ServerUnaryReactor* EmbedServiceImpl::Rerank(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* raw_request,
                                                   grpc::ByteBuffer* raw_response) {
  auto [reactor, model] = Admit<v1::RerankRequest, v1::RerankResponse>(
      gate_, pipeline_, context, "Rerank", *raw_request, raw_response, limits_);
  if (!model) return reactor;
  const v1::RerankRequest* request = &reactor->request();
  v1::RerankResponse* response = reactor->response();
  absl::StatusOr<pipeline::RerankRequest> valid = ValidateRerank(Target(*model), *request, limits_);
  if (!valid.ok()) return reactor->FinishNow(valid.status());
  absl::StatusOr<pipeline::Priority> priority =
      PriorityOf(request->priority(), "priority", *context);
  if (!priority.ok()) return reactor->FinishNow(priority.status());
  valid->priority = *priority;
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
                                                     const grpc::ByteBuffer* raw_request,
                                                     grpc::ByteBuffer* raw_response) {
  auto [reactor, model] = Admit<v1::ClassifyRequest, v1::ClassifyResponse>(
      gate_, pipeline_, context, "Classify", *raw_request, raw_response, limits_);
  if (!model) return reactor;
  const v1::ClassifyRequest* request = &reactor->request();
  v1::ClassifyResponse* response = reactor->response();
  absl::StatusOr<pipeline::ClassifyRequest> valid =
      ValidateClassify(Target(*model), *request, limits_);
  if (!valid.ok()) return reactor->FinishNow(valid.status());
  absl::StatusOr<pipeline::Priority> priority =
      PriorityOf(request->priority(), "priority", *context);
  if (!priority.ok()) return reactor->FinishNow(priority.status());
  valid->priority = *priority;
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
                                                     const grpc::ByteBuffer* raw_request,
                                                     grpc::ByteBuffer* raw_response) {
  auto [reactor, model] = Admit<v1::TokenizeRequest, v1::TokenizeResponse>(
      gate_, pipeline_, context, "Tokenize", *raw_request, raw_response, limits_);
  if (!model) return reactor;
  const v1::TokenizeRequest* request = &reactor->request();
  v1::TokenizeResponse* response = reactor->response();
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
