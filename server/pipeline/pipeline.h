// The serving pipeline's front door: the models it holds (ready or failed), and Submit(),
// which runs a call's inputs through preprocessing (CPU pool) and the per-model batchers
// into the device executor, completing the call when every item is done.
#pragma once

#include <map>
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
};

enum class ModelState { kLoading, kReady, kFailed };

// A model as the server knows it. `name` and `source` never change; the rest is written
// once, under the pipeline's lock, when loading ends; once kReady it never changes.
struct ModelEntry {
  std::string name;
  std::string source;
  ModelState state = ModelState::kLoading;
  std::string state_message;
  absl::StatusCode failure_code = absl::StatusCode::kOk;
  models::ModelDescription description;
  std::unique_ptr<models::Model> model;
  int text_queue = -1;
  int image_queue = -1;
  metrics::Histogram* text_preprocess = nullptr;
  metrics::Histogram* image_preprocess = nullptr;
};

// A snapshot of a model's state for the Models RPC and health.
struct ModelSnapshot {
  std::string name;
  std::string source;
  ModelState state;
  std::string state_message;
  models::ModelDescription description;
};

// Thread-safe. Models are declared (AddLoading) before Start(); loading can finish while
// the server already answers (health says NOT_SERVING until then).
class Pipeline {
 public:
  explicit Pipeline(PipelineOptions options);
  ~Pipeline();

  // Declares a model; it answers UNAVAILABLE until SetReady or SetFailed.
  void AddLoading(std::string name, std::string source);
  // The model is loaded (and warmed): creates its batch queues and makes it callable.
  void SetReady(absl::string_view name, std::unique_ptr<models::Model> model);
  // Loading failed; calls answer UNAVAILABLE (UNIMPLEMENTED if `why` is UNIMPLEMENTED).
  void SetFailed(absl::string_view name, const absl::Status& why);

  void Start();
  // Finishes accepted work, then stops the threads.
  void Stop();

  std::vector<ModelSnapshot> Models() const;
  // NOT_FOUND for an unknown name; UNAVAILABLE for a model that is not ready. The entry of
  // a ready model stays valid and unchanged while the pipeline lives.
  absl::StatusOr<ModelEntry*> FindReady(absl::string_view name) const;

  // Checks that the model accepts every input's modality (INVALID_ARGUMENT naming the
  // field otherwise), then schedules the work. Never blocks; `call` completes exactly once.
  void Submit(ModelEntry& model, std::shared_ptr<EmbedCall> call);

  // Runs one forward per accepted modality at batch size 1 and at max_batch_size with
  // synthetic inputs, through the executor, and waits for them. Call after SetReady and
  // before reporting the model SERVING.
  absl::Status Warmup(absl::string_view name);

  const PipelineOptions& options() const { return options_; }
  DeviceExecutor& executor() { return executor_; }

 private:
  void Prepare(ModelEntry& model, const std::shared_ptr<EmbedCall>& call, int index);

  ModelEntry* Find(absl::string_view name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const PipelineOptions options_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<ModelEntry>> models_ ABSL_GUARDED_BY(mu_);
  DeviceExecutor executor_;
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace embedserve::pipeline
