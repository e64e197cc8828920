// Rerank and Classify as the pipeline runs them: from validated inputs (the rpc layer's
// request validation builds them) to scores, through the model's lanes and the executor.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/pipeline/embed_call.h"
#include "server/pipeline/pipeline.h"
#include "server/pipeline/scoring.h"

namespace embedserve::pipeline {

// A matrix of rows owned on the host: a model output or a decoded precomputed embedding.
struct HostRows {
  std::vector<float> values;
  int rows = 0;
  int dim = 0;
  MatrixView view() const { return {values.data(), rows, dim}; }
};

// A rerank query or candidate: content the model embeds (a text or an image), or rows the
// client computed earlier (already checked against the model's dim and unit-normalized).
struct RerankItem {
  std::optional<CallInput> content;
  HostRows precomputed;
};

// A validated Rerank. For a model that scores pairs (scoring "cross_encoder") the query and
// every candidate are texts; otherwise any mix of texts, images and precomputed rows.
struct RerankRequest {
  RerankItem query;
  std::vector<RerankItem> candidates;
  int top_k = 0;         // 0: every candidate
  bool truncate = true;  // false: a text over the model's limit is INVALID_ARGUMENT
  bool sigmoid = false;  // pairs only: scores through the logistic sigmoid
  Priority priority = Priority::kNormal;
};

struct RankedCandidate {
  int index = 0;  // into RerankRequest::candidates
  float score = 0.f;
  bool truncated = false;
};

struct RerankOutcome {
  std::vector<RankedCandidate> ranked;  // best first, ties in candidate order
  std::optional<CallTimings> timings;   // absent when nothing went through the model
};

// Receives the call that carries a request's model work before it is submitted, so the
// caller can cancel it (an RPC's cancellation); not called when there is no model work.
using CallHook = std::function<void(const std::shared_ptr<EmbedCall>&)>;

// Scores every candidate against the query and ranks them: embeddings and MaxSim (a dot
// product for single vectors) on the executor, or one pair-lane item per candidate for a
// cross-encoder. `done` runs once, on a pipeline thread (possibly before Rerank returns).
void Rerank(Pipeline& pipeline, std::shared_ptr<ServingModel> model, RerankRequest request,
            absl::Time deadline, const CallHook& attach,
            std::function<void(absl::StatusOr<RerankOutcome>)> done);

// A validated zero-shot Classify: inputs (texts or images) against label prompts (the
// labels with the prompt template applied).
struct ClassifyRequest {
  std::vector<CallInput> inputs;
  std::vector<std::string> label_prompts;
  Priority priority = Priority::kNormal;
};

struct LabelScore {
  int index = 0;  // into the labels
  float probability = 0.f;
  float logit = 0.f;
};

struct ClassifyOutcome {
  // Per input, every label best first (ties in label order).
  std::vector<std::vector<LabelScore>> per_input;
  CallTimings timings;
};

// Embeds inputs and label prompts in one call; each input's logits are the model's
// logit_scale times the cosine to each label, softmaxed into probabilities. The model must
// declare the classify capability. `done` runs once, on a pipeline thread.
void Classify(Pipeline& pipeline, std::shared_ptr<ServingModel> model, ClassifyRequest request,
              absl::Time deadline, const CallHook& attach,
              std::function<void(absl::StatusOr<ClassifyOutcome>)> done);

}  // namespace embedserve::pipeline
