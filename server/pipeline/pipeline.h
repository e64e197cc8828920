// The serving pipeline's front door: the models it holds (ready or failed), and Submit(),
// which runs a call's inputs through preprocessing (CPU pool) and the per-model batchers
// into the device executor, completing the call when every item is done.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <mutex>
#include <condition_variable>
#include "server/models/model.h"
#include "server/pipeline/batch_queue.h"
#include "server/pipeline/device_executor.h"
#include "server/pipeline/scoring.h"
#include "server/pipeline/embed_call.h"
#include "server/pipeline/thread_pool.h"

namespace embedserve::pipeline {

struct PipelineOptions {
  int preprocess_threads = 2;
  // Most preprocessing tasks waiting; beyond it calls get RESOURCE_EXHAUSTED.
  int preprocess_queue = 4096;
  models::ImageLimits image_limits;
  BatchPolicy text_policy;
  BatchPolicy image_policy;
  BatchPolicy pair_policy;
  // How the device executor shares the device between lanes.
  ExecutorOptions executor;
  // The batch policy of `modality`'s lane.
  const BatchPolicy& PolicyFor(Modality modality) const {
    switch (modality) {
      case Modality::kText: return text_policy;
      case Modality::kImage: return image_policy;
      case Modality::kPair: return pair_policy;
    }
    return text_policy;
  }
};

enum class ModelState { kLoading, kReady, kFailed };

// INVALID_ARGUMENT "<field>: model '<model>' does not accept <what modality names>": the one
// wording of that refusal, for the pipeline and for request validation.
absl::Status NotAcceptedError(absl::string_view field, absl::string_view model,
                              Modality modality);

// Shared by the pipeline and every version it made: lets a version retire its batch queues
// when the last call lets go of it, as long as the pipeline (and its executor) exists.
// Retiring wakes the executor, which frees a retired queue (and so its model) as soon as it
// has drained, also on an idle server.
struct QueueRetirer {
  std::mutex mu;
  DeviceExecutor* executor = nullptr;  // null once the pipeline is gone

  // Retires `queue_ids` (negative ids are skipped).
  void Retire(std::initializer_list<int> queue_ids);
};

// One loaded version of a model, as calls see it. Immutable; shared by every call that
// uses it, so a reload or unload never pulls a model from under a call in flight. Its batch
// queues are retired when the last holder lets go (a call that picked this version before a
// reload can therefore still queue its items); the executor frees the model once they drain.
struct ServingModel {
  ServingModel() = default;
  ServingModel(const ServingModel&) = delete;
  ServingModel& operator=(const ServingModel&) = delete;
  ~ServingModel();

  std::string name;
  models::ModelDescription description;
  std::shared_ptr<models::Model> model;
  // The memory estimate of the weights (0: unknown), for ModelService.
  int64_t estimated_bytes = 0;
  // The lanes, indexed by modality: each accepted modality's batch queue (-1 for one the
  // model does not accept) and preprocessing-time histogram.
  std::array<int, models::kModalityCount> queues = {-1, -1, -1};
  std::array<metrics::Histogram*, models::kModalityCount> preprocess = {};
  int QueueFor(Modality modality) const { return queues[static_cast<int>(modality)]; }
  std::shared_ptr<QueueRetirer> retirer;
};

// A snapshot of a model's state for the Models RPC and health.
struct ModelSnapshot {
  std::string name;
  std::string source;
  ModelState state;
  std::string state_message;
  models::ModelDescription description;
  int64_t estimated_bytes = 0;
};

// Thread-safe. Models are declared (AddLoading) before Start(); loading can finish while
// the server already answers (health says NOT_SERVING until then).
class Pipeline {
 public:
  explicit Pipeline(PipelineOptions options);
  ~Pipeline();

  // Declares a model; it answers UNAVAILABLE until SetReady or SetFailed. Declaring a name
  // that exists only updates its source (a reload keeps serving the current version); a
  // failed one goes back to LOADING.
  void AddLoading(std::string name, std::string source);
  // The model is loaded: creates its batch queues and makes it the version new calls use.
  // A previous version keeps serving the calls that already hold it, then its queues are
  // retired and it is freed.
  void SetReady(absl::string_view name, std::unique_ptr<models::Model> model);

  // The steps of SetReady, for a reload that must not disturb the serving version:
  // PrepareVersion builds a version (its batch queues included) that no call can see yet,
  // WarmupVersion runs it, Publish makes it the version new calls use (the previous one
  // drains) and records `source` as where it came from. A version dropped unpublished
  // retires its queues and is freed.
  std::shared_ptr<ServingModel> PrepareVersion(absl::string_view name,
                                               std::shared_ptr<models::Model> model,
                                               int64_t estimated_bytes = 0);
  absl::Status WarmupVersion(const ServingModel& version);
  void Publish(std::shared_ptr<ServingModel> version, std::string source);
  // The state of `name` (NOT_FOUND if unknown) and its source.
  absl::StatusOr<ModelSnapshot> Snapshot(absl::string_view name) const;
  // True if `name` is one of the pipeline's models (in any state). Cheap: no copy.
  bool Holds(absl::string_view name) const;

  // Loading failed; calls answer UNAVAILABLE (UNIMPLEMENTED if `why` is UNIMPLEMENTED).
  void SetFailed(absl::string_view name, const absl::Status& why);
  // Forgets a model: new calls get NOT_FOUND; calls in flight finish on their version.
  // False if there is no such model.
  bool Remove(absl::string_view name);

  void Start();
  // Finishes accepted work, then stops the threads.
  void Stop();

  std::vector<ModelSnapshot> Models() const;
  // The version new calls use. NOT_FOUND for an unknown name; UNAVAILABLE for a model that
  // is not ready (UNIMPLEMENTED for a family this build cannot run).
  absl::StatusOr<std::shared_ptr<ServingModel>> FindReady(absl::string_view name) const;

  // Checks that the model accepts every input's modality (INVALID_ARGUMENT naming the
  // field otherwise), then schedules the work. Never blocks; `call` completes exactly once.
  void Submit(std::shared_ptr<ServingModel> model, std::shared_ptr<EmbedCall> call);

  // Runs one forward per accepted modality at batch size 1 and at max_batch_size with
  // synthetic inputs, through the executor, and waits for them. Call after SetReady and
  // before reporting the model SERVING.
  absl::Status Warmup(absl::string_view name);

  // MaxSim of `query` against every document (pipeline::MaxSim's definition), run by the
  // device executor between batches: on the model's device through Model::MaxSim, or with
  // the host BLAS path (MaxSimBatch) when the model is on the CPU, where it is the faster of
  // the two, or its family has no device MaxSim. `done` receives the scores, in order, on the
  // executor thread (UNAVAILABLE if the pipeline is stopping); the views must stay valid
  // until then, e.g. owned by what `done` holds.
  void ScoreMaxSim(std::shared_ptr<ServingModel> model, MatrixView query,
                   std::vector<MatrixView> documents,
                   std::function<void(absl::StatusOr<std::vector<float>>)> done);

  const PipelineOptions& options() const { return options_; }
  DeviceExecutor& executor() { return executor_; }

 private:
  struct Entry {
    std::string name;
    std::string source;
    ModelState state = ModelState::kLoading;
    std::string state_message;
    absl::StatusCode failure_code = absl::StatusCode::kOk;
    std::shared_ptr<ServingModel> current;
  };

  void Prepare(const ServingModel& model, const std::shared_ptr<EmbedCall>& call, int index);
  Entry* Find(absl::string_view name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  ModelSnapshot SnapshotOf(const Entry& entry) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const PipelineOptions options_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Entry>> models_ ABSL_GUARDED_BY(mu_);
  DeviceExecutor executor_;
  std::shared_ptr<QueueRetirer> retirer_;
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace embedserve::pipeline
