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
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/status.h"
#include "common/tensor_codec.h"
#include "server/pipeline/scoring.h"
#include "server/rpc/request_codec.h"

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

// A matrix of unit rows: a model output or a decoded precomputed embedding.
struct Rows {
  std::vector<float> values;
  int rows = 0;
  int dim = 0;
  pipeline::MatrixView view() const { return {values.data(), rows, dim}; }
};

Rows ToRows(models::Embedding embedding) {
  Rows rows{std::move(embedding.values), embedding.rows, embedding.dim};
  pipeline::NormalizeRows(rows.values.data(), rows.rows, rows.dim);
  return rows;
}

absl::StatusOr<Rows> DecodeCandidateEmbedding(const v1::Tensor& tensor, const std::string& field,
                                              const models::ModelDescription& model) {
  absl::StatusOr<DecodedTensor> decoded = DecodeTensor(tensor);
  if (!decoded.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".embedding: ", decoded.status().message()));
  }
  const int64_t dim = decoded->shape.back();
  const int64_t rows = decoded->shape.size() == 2 ? decoded->shape[0] : 1;
  if (dim != model.embedding_dim) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".embedding: dimension ", dim,
                                                   " does not match the model's ",
                                                   model.embedding_dim));
  }
  if (!model.multi_vector && rows != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".embedding: shape [", rows, ", ", dim, "] is a multi-vector; model '",
        model.architecture, "' scores single vectors [", model.embedding_dim, "]"));
  }
  Rows out{std::move(decoded->values), static_cast<int>(rows), static_cast<int>(dim)};
  pipeline::NormalizeRows(out.values.data(), out.rows, out.dim);
  return out;
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
    absl::Status status;
    ModelRef entry;
    absl::StatusOr<OutputOptions> options = ResolveOptions(request_.options());
    absl::StatusOr<std::vector<CallInput>> inputs;
    absl::StatusOr<ModelRef> found = pipeline_->FindReady(request_.model());
    if (!found.ok()) {
      status = found.status();
    } else if (!options.ok()) {
      status = options.status();
    } else {
      entry = *found;
      inputs = ToCallInputs(request_.inputs(), "inputs", limits_);
      status = inputs.status();
    }
    if (!status.ok()) {
      CompleteSlot(slot, status, nullptr, nullptr, {});
      return;
    }
    auto call = std::make_shared<EmbedCall>(
        std::move(*inputs), options->truncate, DeadlineOf(context_),
        [this, slot, entry, opts = *options](const absl::Status& s, EmbedCall& c) {
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
  auto* reactor = new UnaryCallReactor(gate_, *context, "Embed", request->model(), request->inputs_size());
  if (!reactor->admitted()) return reactor;
  absl::StatusOr<ModelRef> entry = pipeline_->FindReady(request->model());
  if (!entry.ok()) return reactor->FinishNow(entry.status());
  absl::StatusOr<OutputOptions> options = ResolveOptions(request->options());
  if (!options.ok()) return reactor->FinishNow(options.status());
  absl::StatusOr<std::vector<CallInput>> inputs =
      ToCallInputs(request->inputs(), "inputs", limits_);
  if (!inputs.ok()) return reactor->FinishNow(inputs.status());

  ModelRef model = *entry;
  auto call = std::make_shared<EmbedCall>(
      std::move(*inputs), options->truncate, DeadlineOf(context),
      [reactor, response, model, opts = *options](const absl::Status& status, EmbedCall& c) {
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
  auto* reactor = new UnaryCallReactor(gate_, *context, "Rerank", request->model(), request->candidates_size() + 1);
  if (!reactor->admitted()) return reactor;
  absl::StatusOr<ModelRef> entry = pipeline_->FindReady(request->model());
  if (!entry.ok()) return reactor->FinishNow(entry.status());
  ModelRef model = *entry;
  const models::ModelDescription& description = model->description;
  const int n = request->candidates_size();
  if (n == 0) {
    return reactor->FinishNow(absl::InvalidArgumentError("candidates: empty; send at least one candidate"));
  }
  if (n > limits_.max_inputs) {
    return reactor->FinishNow(absl::InvalidArgumentError(absl::StrCat(
        "candidates: ", n, " candidates, over the limit of ", limits_.max_inputs,
        " (--max-inputs)")));
  }
  if (request->has_top_k() && (request->top_k() < 1 || request->top_k() > n)) {
    return reactor->FinishNow(absl::InvalidArgumentError(absl::StrCat(
        "top_k: ", request->top_k(), " is outside [1, ", n,
        "] (the number of candidates); leave it unset for all")));
  }

  // Precomputed rows are decoded now; texts and images go through the pipeline. Slot 0 is
  // the query, slots 1..n the candidates.
  auto rows = std::make_shared<std::vector<Rows>>(n + 1);
  std::vector<CallInput> inputs;
  std::vector<int> slot_of_input;
  for (int slot = 0; slot <= n; ++slot) {
    const v1::Input& input = slot == 0 ? request->query() : request->candidates(slot - 1);
    const std::string field = slot == 0 ? std::string("query") : absl::StrCat("candidates[", slot - 1, "]");
    switch (input.content_case()) {
      case v1::Input::kText: {
        absl::Status status = CheckText(input.text(), field, limits_);
        if (!status.ok()) return reactor->FinishNow(status);
        inputs.push_back({pipeline::Modality::kText, input.text(), field});
        slot_of_input.push_back(slot);
        break;
      }
      case v1::Input::kImage:
        if (input.image().empty()) {
          return reactor->FinishNow(absl::InvalidArgumentError(absl::StrCat(field, ".image: empty (0 bytes)")));
        }
        inputs.push_back({pipeline::Modality::kImage, input.image(), field});
        slot_of_input.push_back(slot);
        break;
      case v1::Input::kEmbedding: {
        absl::StatusOr<Rows> decoded = DecodeCandidateEmbedding(input.embedding(), field, description);
        if (!decoded.ok()) return reactor->FinishNow(decoded.status());
        (*rows)[slot] = *std::move(decoded);
        break;
      }
      default:
        return reactor->FinishNow(absl::InvalidArgumentError(
            absl::StrCat(field, ": no content; set text, image or embedding")));
    }
  }

  const int top_k = request->has_top_k() ? request->top_k() : 0;
  pipeline::Pipeline* pipeline = pipeline_;
  auto finish = [response, model, rows, top_k, pipeline](UnaryCallReactor* reactor,
                                                          const pipeline::CallTimings* timings) {
    // One batched MaxSim over every candidate (a dot product for single vectors), on the
    // model's device by the executor; the callback keeps `rows` alive until it has run.
    std::vector<pipeline::MatrixView> candidates;
    candidates.reserve(rows->size() - 1);
    for (size_t i = 1; i < rows->size(); ++i) candidates.push_back((*rows)[i].view());
    std::optional<pipeline::CallTimings> call_timings;
    if (timings != nullptr) call_timings = *timings;
    pipeline->ScoreMaxSim(
        model, (*rows)[0].view(), std::move(candidates),
        [response, model, rows, top_k, reactor, call_timings](absl::StatusOr<std::vector<float>> scores) {
          if (!scores.ok()) {
            reactor->FinishWith(scores.status());
            return;
          }
          response->set_model(model->name);
          response->set_scoring(model->description.scoring);
          for (int index : pipeline::TopK(*scores, top_k)) {
            v1::RerankResult* result = response->add_results();
            result->set_index(index);
            result->set_score((*scores)[index]);
          }
          if (call_timings.has_value()) EncodeTimings(*call_timings, response->mutable_timing());
          reactor->FinishWith(absl::OkStatus());
        });
  };

  if (inputs.empty()) {
    finish(reactor, nullptr);
    return reactor;
  }
  const bool truncate = request->truncation() != v1::TRUNCATION_ERROR;
  auto call = std::make_shared<EmbedCall>(
      std::move(inputs), truncate, DeadlineOf(context),
      [reactor, rows, finish, slot_of_input](const absl::Status& status, EmbedCall& c) {
        if (!status.ok()) {
          reactor->FinishWith(status);
          return;
        }
        for (int i = 0; i < c.size(); ++i) {
          (*rows)[slot_of_input[i]] = ToRows(std::move(c.mutable_results()[i]));
        }
        const pipeline::CallTimings timings = c.timings();
        finish(reactor, &timings);
      });
  reactor->Attach(call);
  pipeline_->Submit(model, call);
  return reactor;
}

grpc::ServerUnaryReactor* EmbedServiceImpl::Classify(grpc::CallbackServerContext* context,
                                                     const v1::ClassifyRequest* request,
                                                     v1::ClassifyResponse* response) {
  auto* reactor = new UnaryCallReactor(gate_, *context, "Classify", request->model(), request->inputs_size());
  if (!reactor->admitted()) return reactor;
  absl::StatusOr<ModelRef> entry = pipeline_->FindReady(request->model());
  if (!entry.ok()) return reactor->FinishNow(entry.status());
  ModelRef model = *entry;
  if (!model->description.capabilities.classify) {
    return reactor->FinishNow(absl::UnimplementedError(absl::StrCat(
        "model '", model->name, "' (", model->description.family,
        ") has no zero-shot classification; use a CLIP model")));
  }
  const int num_labels = request->labels_size();
  if (num_labels < 2 || num_labels > limits_.max_labels) {
    return reactor->FinishNow(absl::InvalidArgumentError(absl::StrCat(
        "labels: ", num_labels, " labels; send between 2 and ", limits_.max_labels,
        " (--max-labels)")));
  }
  const std::string& tmpl = request->prompt_template();
  if (!tmpl.empty() && tmpl.find("{}") == std::string::npos) {
    return reactor->FinishNow(absl::InvalidArgumentError(
        "prompt_template: must contain \"{}\" where the label goes, e.g. \"a photo of a {}.\""));
  }
  absl::StatusOr<std::vector<CallInput>> inputs =
      ToCallInputs(request->inputs(), "inputs", limits_);
  if (!inputs.ok()) return reactor->FinishNow(inputs.status());
  const int num_inputs = static_cast<int>(inputs->size());
  for (int j = 0; j < num_labels; ++j) {
    const std::string field = absl::StrCat("labels[", j, "]");
    if (request->labels(j).empty()) {
      return reactor->FinishNow(absl::InvalidArgumentError(absl::StrCat(field, ": empty label")));
    }
    std::string text = tmpl.empty() ? request->labels(j)
                                     : absl::StrReplaceAll(tmpl, {{"{}", request->labels(j)}});
    absl::Status status = CheckText(text, field, limits_);
    if (!status.ok()) return reactor->FinishNow(status);
    inputs->push_back({pipeline::Modality::kText, std::move(text), field});
  }

  auto call = std::make_shared<EmbedCall>(
      std::move(*inputs), /*truncate=*/true, DeadlineOf(context),
      [reactor, response, model, request, num_inputs, num_labels](const absl::Status& status,
                                                                  EmbedCall& c) {
        if (!status.ok()) {
          reactor->FinishWith(status);
          return;
        }
        std::vector<Rows> rows;
        rows.reserve(c.size());
        for (int i = 0; i < c.size(); ++i) rows.push_back(ToRows(std::move(c.mutable_results()[i])));
        const float scale = model->description.logit_scale;
        response->set_model(model->name);
        for (int i = 0; i < num_inputs; ++i) {
          std::vector<float> logits(num_labels);
          for (int j = 0; j < num_labels; ++j) {
            logits[j] = scale * pipeline::Dot(rows[i].values.data(),
                                              rows[num_inputs + j].values.data(), rows[i].dim);
          }
          std::vector<float> probabilities = logits;
          pipeline::SoftmaxInPlace(probabilities);
          v1::Classification* classification = response->add_classifications();
          for (int j : pipeline::TopK(probabilities, 0)) {
            v1::LabelScore* score = classification->add_scores();
            score->set_index(j);
            score->set_label(request->labels(j));
            score->set_probability(probabilities[j]);
            score->set_logit(logits[j]);
          }
        }
        EncodeTimings(c.timings(), response->mutable_timing());
        reactor->FinishWith(absl::OkStatus());
      });
  reactor->Attach(call);
  pipeline_->Submit(model, call);
  return reactor;
}

grpc::ServerUnaryReactor* EmbedServiceImpl::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  auto* reactor = new UnaryCallReactor(gate_, *context, "Tokenize", request->model(), request->texts_size());
  if (!reactor->admitted()) return reactor;
  absl::StatusOr<ModelRef> entry = pipeline_->FindReady(request->model());
  if (!entry.ok()) return reactor->FinishNow(entry.status());
  if (request->texts_size() == 0) {
    return reactor->FinishNow(absl::InvalidArgumentError("texts: empty; send at least one text"));
  }
  if (request->texts_size() > limits_.max_inputs) {
    return reactor->FinishNow(absl::InvalidArgumentError(
        absl::StrCat("texts: ", request->texts_size(), " texts, over the limit of ",
                     limits_.max_inputs, " (--max-inputs)")));
  }
  const models::Model& model = *(*entry)->model;
  if (!model.description().accepts_text) {
    return reactor->FinishNow(absl::InvalidArgumentError(
        absl::StrCat("model: '", request->model(), "' does not accept text")));
  }
  const bool truncate = request->truncation() != v1::TRUNCATION_ERROR;
  response->set_model(request->model());
  // Tokenizing a text takes microseconds: done inline rather than through the pool.
  for (int i = 0; i < request->texts_size(); ++i) {
    const std::string field = absl::StrCat("texts[", i, "]");
    absl::Status status = CheckText(request->texts(i), field, limits_);
    if (!status.ok()) return reactor->FinishNow(status);
    absl::StatusOr<models::Tokenization> tokens = model.Tokenize(request->texts(i), truncate);
    if (!tokens.ok()) {
      return reactor->FinishNow(absl::Status(tokens.status().code(),
                                    absl::StrCat(field, ": ", tokens.status().message())));
    }
    v1::TokenizedText* out = response->add_texts();
    out->mutable_ids()->Assign(tokens->ids.begin(), tokens->ids.end());
    for (std::string& token : tokens->tokens) out->add_tokens(std::move(token));
    out->set_truncated(tokens->truncated);
  }
  return reactor->FinishNow(absl::OkStatus());
}

}  // namespace embedserve::rpc
