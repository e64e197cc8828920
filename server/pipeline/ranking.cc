// Rerank (embeddings + MaxSim, or the pair lane) and Classify orchestration.
#include "server/pipeline/ranking.h"

#include <cmath>
#include <utility>

namespace embedserve::pipeline {
namespace {

HostRows NormalizedRows(models::Embedding embedding) {
  HostRows rows{std::move(embedding.values), embedding.rows, embedding.dim};
  NormalizeRows(rows.values.data(), rows.rows, rows.dim);
  return rows;
}

bool WasTruncated(EmbedCall& call, int i) {
  return call.input(i).modality != Modality::kImage && call.text(i).truncated;
}

RerankOutcome Ranked(const std::vector<float>& scores, const std::vector<bool>& truncated,
                     int top_k) {
  RerankOutcome outcome;
  for (const int index : TopK(scores, top_k)) {
    outcome.ranked.push_back({index, scores[index], truncated[index]});
  }
  return outcome;
}

// A cross-encoder: one pair item per candidate, each scored by the model as one sequence.
void RerankPairs(Pipeline& pipeline, std::shared_ptr<ServingModel> model, RerankRequest request,
                 absl::Time deadline, const CallHook& attach,
                 std::function<void(absl::StatusOr<RerankOutcome>)> done) {
  std::vector<CallInput> pairs;
  pairs.reserve(request.candidates.size());
  for (RerankItem& candidate : request.candidates) {
    CallInput& document = *candidate.content;
    pairs.push_back({Modality::kPair, request.query.content->data, std::move(document.field),
                     std::move(document.data)});
  }
  const int top_k = request.top_k;
  const bool sigmoid = request.sigmoid;
  auto call = std::make_shared<EmbedCall>(
      std::move(pairs), request.truncate, deadline,
      [done = std::move(done), top_k, sigmoid](const absl::Status& status, EmbedCall& c) {
        if (!status.ok()) {
          done(status);
          return;
        }
        std::vector<float> scores(c.size());
        std::vector<bool> truncated(c.size());
        for (int i = 0; i < c.size(); ++i) {
          const float logit = c.results()[i].values.at(0);
          scores[i] = sigmoid ? 1.f / (1.f + std::exp(-logit)) : logit;
          truncated[i] = c.text(i).truncated;
        }
        RerankOutcome outcome = Ranked(scores, truncated, top_k);
        outcome.timings = c.timings();
        done(std::move(outcome));
      });
  call->set_priority(request.priority);
  attach(call);
  pipeline.Submit(std::move(model), call);
}

}  // namespace

void Rerank(Pipeline& pipeline, std::shared_ptr<ServingModel> model, RerankRequest request,
            absl::Time deadline, const CallHook& attach,
            std::function<void(absl::StatusOr<RerankOutcome>)> done) {
  if (model->description.accepts_pairs) {
    RerankPairs(pipeline, std::move(model), std::move(request), deadline, attach, std::move(done));
    return;
  }
  // Slot 0 is the query, slots 1..n the candidates. Precomputed rows are in place already;
  // texts and images go through the model in one call, then one batched MaxSim scores all.
  const int n = static_cast<int>(request.candidates.size());
  auto rows = std::make_shared<std::vector<HostRows>>(n + 1);
  auto truncated = std::make_shared<std::vector<bool>>(n + 1, false);
  std::vector<CallInput> inputs;
  std::vector<int> slot_of_input;
  for (int slot = 0; slot <= n; ++slot) {
    RerankItem& item = slot == 0 ? request.query : request.candidates[slot - 1];
    if (item.content.has_value()) {
      inputs.push_back(std::move(*item.content));
      slot_of_input.push_back(slot);
    } else {
      (*rows)[slot] = std::move(item.precomputed);
    }
  }

  const int top_k = request.top_k;
  auto score = [&pipeline, model, rows, truncated, top_k, done](
                   std::optional<CallTimings> timings) {
    std::vector<MatrixView> candidates;
    candidates.reserve(rows->size() - 1);
    for (size_t i = 1; i < rows->size(); ++i) candidates.push_back((*rows)[i].view());
    // `rows` stays alive in the callback until the executor has scored the views.
    pipeline.ScoreMaxSim(
        model, (*rows)[0].view(), std::move(candidates),
        [rows, truncated, top_k, timings, done](absl::StatusOr<std::vector<float>> scores) {
          if (!scores.ok()) {
            done(scores.status());
            return;
          }
          const std::vector<bool> candidate_truncated(truncated->begin() + 1, truncated->end());
          RerankOutcome outcome = Ranked(*scores, candidate_truncated, top_k);
          outcome.timings = timings;
          done(std::move(outcome));
        });
  };

  if (inputs.empty()) {
    score(std::nullopt);
    return;
  }
  auto call = std::make_shared<EmbedCall>(
      std::move(inputs), request.truncate, deadline,
      [rows, truncated, score = std::move(score), done, slot_of_input](
          const absl::Status& status, EmbedCall& c) {
        if (!status.ok()) {
          done(status);
          return;
        }
        for (int i = 0; i < c.size(); ++i) {
          (*rows)[slot_of_input[i]] = NormalizedRows(std::move(c.mutable_results()[i]));
          (*truncated)[slot_of_input[i]] = WasTruncated(c, i);
        }
        score(c.timings());
      });
  call->set_priority(request.priority);
  attach(call);
  pipeline.Submit(std::move(model), call);
}

void Classify(Pipeline& pipeline, std::shared_ptr<ServingModel> model, ClassifyRequest request,
              absl::Time deadline, const CallHook& attach,
              std::function<void(absl::StatusOr<ClassifyOutcome>)> done) {
  const int num_inputs = static_cast<int>(request.inputs.size());
  const int num_labels = static_cast<int>(request.label_prompts.size());
  std::vector<CallInput> inputs = std::move(request.inputs);
  for (int j = 0; j < num_labels; ++j) {
    inputs.push_back({Modality::kText, std::move(request.label_prompts[j]),
                      "labels[" + std::to_string(j) + "]"});
  }
  const float scale = model->description.logit_scale;
  auto call = std::make_shared<EmbedCall>(
      std::move(inputs), /*truncate=*/true, deadline,
      [done = std::move(done), scale, num_inputs, num_labels](const absl::Status& status,
                                                              EmbedCall& c) {
        if (!status.ok()) {
          done(status);
          return;
        }
        std::vector<HostRows> rows;
        rows.reserve(c.size());
        for (int i = 0; i < c.size(); ++i) {
          rows.push_back(NormalizedRows(std::move(c.mutable_results()[i])));
        }
        ClassifyOutcome outcome;
        outcome.per_input.resize(num_inputs);
        for (int i = 0; i < num_inputs; ++i) {
          std::vector<float> logits(num_labels);
          for (int j = 0; j < num_labels; ++j) {
            logits[j] = scale * Dot(rows[i].values.data(), rows[num_inputs + j].values.data(),
                                    rows[i].dim);
          }
          std::vector<float> probabilities = logits;
          SoftmaxInPlace(probabilities);
          for (const int j : TopK(probabilities, 0)) {
            outcome.per_input[i].push_back({j, probabilities[j], logits[j]});
          }
        }
        outcome.timings = c.timings();
        done(std::move(outcome));
      });
  call->set_priority(request.priority);
  attach(call);
  pipeline.Submit(std::move(model), call);
}

}  // namespace embedserve::pipeline
