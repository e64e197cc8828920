// Pipeline: model registry, preprocessing dispatch and hand-off to the device executor.
#include "server/pipeline/pipeline.h"

#include <algorithm>
#include <future>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "server/metrics/metrics.h"

namespace embedserve::pipeline {

namespace {
// The longest model name a status message repeats (a longer one is abbreviated with its
// length): a client's unknown 100 KB name must not come back as a 100 KB message.
constexpr size_t kMaxEchoedName = 200;
}  // namespace

absl::Status NotAcceptedError(absl::string_view field, absl::string_view model,
                              Modality modality) {
  const char* what = modality == Modality::kText    ? "text"
                     : modality == Modality::kImage ? "images"
                                                    : "(query, document) pairs";
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": model '", model, "' does not accept ", what));
}

void QueueRetirer::Retire(std::initializer_list<int> queue_ids) {
  std::lock_guard<std::mutex> lock(mu);
  if (executor == nullptr) return;
  for (const int id : queue_ids) {
    if (id >= 0) executor->RetireQueue(id);
  }
}

ServingModel::~ServingModel() {
  if (retirer) retirer->Retire({queues[0], queues[1], queues[2]});
}

Pipeline::Pipeline(PipelineOptions options)
    : options_(std::move(options)),
      executor_(options_.executor),
      retirer_(std::make_shared<QueueRetirer>()) {
  retirer_->executor = &executor_;
}

Pipeline::~Pipeline() {
  Stop();
  std::vector<std::unique_ptr<Entry>> entries;
  {
    std::lock_guard<std::mutex> lock(mu_);
    entries.swap(models_);
  }
  entries.clear();  // versions nobody else holds retire their queues while the executor lives
  std::lock_guard<std::mutex> lock(retirer_->mu);
  retirer_->executor = nullptr;  // versions still held elsewhere outlive the executor
}

void Pipeline::AddLoading(std::string name, std::string source) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Entry* existing = Find(name)) {
    existing->source = std::move(source);
    if (!existing->current) {  // a failed model being loaded again
      existing->state = ModelState::kLoading;
      existing->state_message.clear();
      existing->failure_code = absl::StatusCode::kOk;
    }
    return;
  }
  auto entry = std::make_unique<Entry>();
  entry->name = std::move(name);
  entry->source = std::move(source);
  models_.push_back(std::move(entry));
}

Pipeline::Entry* Pipeline::Find(absl::string_view name) const {
  for (const auto& entry : models_) {
    if (entry->name == name) return entry.get();
  }
  return nullptr;
}

std::shared_ptr<ServingModel> Pipeline::PrepareVersion(absl::string_view name,
                                                      std::shared_ptr<models::Model> model,
                                                      int64_t estimated_bytes) {
  auto version = std::make_shared<ServingModel>();
  version->name = std::string(name);
  version->description = model->description();
  version->model = std::move(model);
  version->estimated_bytes = estimated_bytes;
  auto& registry = metrics::Global();
  for (const Modality modality : models::kModalities) {
    if (!version->description.Accepts(modality)) continue;
    const int lane = static_cast<int>(modality);
    version->preprocess[lane] = &registry.GetHistogram(
        "embedserve_preprocess_seconds", "Decode/resize or tokenization time per item",
        {{"model", version->name}, {"modality", models::ModalityName(modality)}},
        metrics::LatencyBuckets());
    version->queues[lane] = executor_.AddQueue(version->model, version->name, modality,
                                               options_.PolicyFor(modality));
  }
  version->retirer = retirer_;
  return version;
}

void Pipeline::Publish(std::shared_ptr<ServingModel> version, std::string source) {
  std::shared_ptr<ServingModel> previous;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Entry* entry = Find(version->name);
    if (entry == nullptr) {
      models_.push_back(std::make_unique<Entry>());
      entry = models_.back().get();
      entry->name = version->name;
    }
    if (!source.empty()) entry->source = std::move(source);
    previous = std::move(entry->current);
    entry->current = std::move(version);
    entry->state = ModelState::kReady;
    entry->state_message.clear();
    entry->failure_code = absl::StatusCode::kOk;
  }
  // `previous` goes out of scope here: once the calls holding it finish, its queues retire.
}

void Pipeline::SetReady(absl::string_view name, std::unique_ptr<models::Model> model) {
  Publish(PrepareVersion(name, std::shared_ptr<models::Model>(std::move(model))), "");
}

void Pipeline::SetFailed(absl::string_view name, const absl::Status& why) {
  std::shared_ptr<ServingModel> previous;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Entry* entry = Find(name);
    if (entry == nullptr) return;
    previous = std::move(entry->current);
    entry->state = ModelState::kFailed;
    entry->failure_code = why.code();
    entry->state_message = std::string(why.message());
  }
}

bool Pipeline::Remove(absl::string_view name) {
  std::shared_ptr<ServingModel> previous;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = std::find_if(models_.begin(), models_.end(),
                           [&](const auto& e) { return e->name == name; });
    if (it == models_.end()) return false;
    previous = std::move((*it)->current);
    models_.erase(it);
  }
  return true;  // `previous` retires once the calls holding it finish
}

ModelSnapshot Pipeline::SnapshotOf(const Entry& entry) const {
  return ModelSnapshot{entry.name, entry.source, entry.state, entry.state_message,
                       entry.current ? entry.current->description : models::ModelDescription(),
                       entry.current ? entry.current->estimated_bytes : 0};
}

std::vector<ModelSnapshot> Pipeline::Models() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ModelSnapshot> out;
  for (const auto& entry : models_) out.push_back(SnapshotOf(*entry));
  return out;
}

bool Pipeline::Holds(absl::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  return Find(name) != nullptr;
}

absl::StatusOr<ModelSnapshot> Pipeline::Snapshot(absl::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (const Entry* entry = Find(name)) return SnapshotOf(*entry);
  return absl::NotFoundError(absl::StrCat("no model named '", Abbreviate(name, kMaxEchoedName), "'"));
}

void Pipeline::Start() {
  if (!pool_) {
    pool_ = std::make_unique<ThreadPool>(options_.preprocess_threads, options_.preprocess_queue,
                                         options_.executor.priority_aging);
  }
  executor_.Start();
}

void Pipeline::Stop() {
  pool_.reset();  // runs accepted preprocessing, which enqueues into the executor
  executor_.Stop();
}

absl::StatusOr<std::shared_ptr<ServingModel>> Pipeline::FindReady(
    absl::string_view name) const {
  if (name.empty()) {
    return absl::InvalidArgumentError("model: empty; name a model from ModelService.ListModels");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (const Entry* entry = Find(name)) {
    if (entry->current) return entry->current;  // ready, or reloading with the old version
    switch (entry->state) {
      case ModelState::kReady:
      case ModelState::kLoading:
        return absl::UnavailableError(absl::StrCat("model '", name, "' is still loading"));
      case ModelState::kFailed:
        return absl::Status(entry->failure_code == absl::StatusCode::kUnimplemented
                                ? absl::StatusCode::kUnimplemented
                                : absl::StatusCode::kUnavailable,
                            absl::StrCat("model '", name, "' failed to load: ",
                                         entry->state_message));
    }
  }
  std::string known;
  for (const auto& entry : models_) absl::StrAppend(&known, known.empty() ? "" : ", ", entry->name);
  return absl::NotFoundError(absl::StrCat("no model named '", Abbreviate(name, kMaxEchoedName),
                                          "'; this server has: ",
                                          known.empty() ? "(none)" : known));
}

absl::Status Pipeline::Warmup(absl::string_view name) {
  absl::StatusOr<std::shared_ptr<ServingModel>> found = FindReady(name);
  if (!found.ok()) return found.status();
  return WarmupVersion(**found);
}

absl::Status Pipeline::WarmupVersion(const ServingModel& entry) {
  const std::string& name = entry.name;
  for (const Modality modality : models::kModalities) {
    const int queue = entry.QueueFor(modality);
    if (queue < 0) continue;
    const BatchPolicy& policy = options_.PolicyFor(modality);
    models::TextInput text;  // a text's or a pair's tokens
    if (modality != Modality::kImage) {
      absl::StatusOr<models::TextInput> prepared =
          modality == Modality::kText
              ? entry.model->PrepareText("a photo of a cat on a sofa", /*truncate=*/true)
              : entry.model->PreparePair("where does the cat sleep?", "a photo of a cat on a sofa",
                                         /*truncate=*/true);
      if (!prepared.ok()) return prepared.status();
      text = *std::move(prepared);
    }
    const int side = entry.description.image_size;
    for (const int size : {1, policy.max_batch_size}) {
      std::promise<absl::Status> done;
      auto call = std::make_shared<EmbedCall>(
          std::vector<CallInput>(size, CallInput{modality, "", "warmup"}), true,
          absl::InfiniteFuture(),
          [&done](const absl::Status& status, EmbedCall&) { done.set_value(status); });
      for (int i = 0; i < size; ++i) {
        if (modality == Modality::kImage) call->image(i).pixels.assign(static_cast<size_t>(3) * side * side, 0.f);
        else call->text(i) = text;
      }
      for (int i = 0; i < size; ++i) {
        absl::Status queued = executor_.Enqueue(
            queue, QueuedItem{call, i, static_cast<int>(text.token_ids.size()) + 1, absl::Now()});
        if (!queued.ok()) call->Fail(queued);
      }
      const absl::Status result = done.get_future().get();
      if (!result.ok()) {
        return absl::Status(result.code(), absl::StrCat("warm-up of '", name, "' (",
                                                        models::ModalityName(modality),
                                                        ", batch ", size, "): ", result.message()));
      }
      if (policy.max_batch_size == 1) break;
    }
  }
  return absl::OkStatus();
}

void Pipeline::Submit(std::shared_ptr<ServingModel> model, std::shared_ptr<EmbedCall> call) {
  for (int i = 0; i < call->size(); ++i) {
    const CallInput& input = call->input(i);
    if (model->QueueFor(input.modality) < 0) {
      call->Fail(NotAcceptedError(input.field, model->name, input.modality));
      return;
    }
  }
  if (call->size() == 0) {
    call->Fail(absl::InvalidArgumentError("no inputs"));
    return;
  }
  // The batcher learns what is on its way, so a partial batch can wait for it.
  auto queue_of = [&](int i) { return model->QueueFor(call->input(i).modality); };
  std::map<int, int> announced;
  for (int i = 0; i < call->size(); ++i) ++announced[queue_of(i)];
  for (const auto& [queue, n] : announced) executor_.AddIncoming(queue, n);
  for (int i = 0; i < call->size(); ++i) {
    if (!pool_ || !pool_->TrySchedule([this, model, call, i] { Prepare(*model, call, i); },
                                      static_cast<int>(call->priority()))) {
      for (int j = i; j < call->size(); ++j) executor_.AddIncoming(queue_of(j), -1);
      call->Fail(absl::ResourceExhaustedError(absl::StrCat(
          "the preprocessing queue is full (", options_.preprocess_queue,
          " tasks, --preprocess-queue); retry with backoff")));
      return;
    }
  }
}

void Pipeline::Prepare(const ServingModel& model, const std::shared_ptr<EmbedCall>& call,
                       int index) {
  const CallInput& input = call->input(index);
  const int queue = model.QueueFor(input.modality);
  if (call->ShouldSkip(absl::Now())) {
    executor_.AddIncoming(queue, -1);
    call->Cancel();
    return;
  }
  const absl::Time start = absl::Now();
  absl::Status status;
  int cost = 1;
  if (input.modality == Modality::kImage) {
    absl::StatusOr<models::ImageInput> prepared =
        model.model->PrepareImage(input.data, options_.image_limits);
    if (prepared.ok()) call->image(index) = *std::move(prepared);
    status = prepared.status();
  } else {
    absl::StatusOr<models::TextInput> prepared =
        input.modality == Modality::kText
            ? model.model->PrepareText(input.data, call->truncate())
            : model.model->PreparePair(input.data, input.second, call->truncate());
    if (prepared.ok()) {
      cost = static_cast<int>(prepared->token_ids.size());
      call->text(index) = *std::move(prepared);
    }
    status = prepared.status();
  }
  const absl::Time end = absl::Now();
  call->AddPreprocessTime(end - start);
  model.preprocess[static_cast<int>(input.modality)]->Observe(absl::ToDoubleSeconds(end - start));
  if (!status.ok()) {
    executor_.AddIncoming(queue, -1);
    call->Fail(absl::Status(status.code(), absl::StrCat(input.field, ": ", status.message())));
    return;
  }
  status = executor_.Enqueue(queue, QueuedItem{call, index, cost, end});
  if (!status.ok()) call->Fail(status);
}

void Pipeline::ScoreMaxSim(std::shared_ptr<ServingModel> model, MatrixView query,
                           std::vector<MatrixView> documents,
                           std::function<void(absl::StatusOr<std::vector<float>>)> done) {
  struct Job {
    std::shared_ptr<ServingModel> model;
    MatrixView query;
    std::vector<MatrixView> documents;
    std::function<void(absl::StatusOr<std::vector<float>>)> done;
  };
  auto job = std::make_shared<Job>(Job{std::move(model), query, std::move(documents), std::move(done)});
  absl::Status posted = executor_.Post([job] {
    absl::StatusOr<std::vector<float>> scores = absl::UnimplementedError("host");
    if (job->model->description.device != "cpu") {
      scores = job->model->model->MaxSim(job->query, job->documents);
    }
    if (scores.status().code() == absl::StatusCode::kUnimplemented) {
      scores = MaxSimBatch(job->query, job->documents);
    }
    job->done(std::move(scores));
  });
  if (!posted.ok()) job->done(posted);
}

}  // namespace embedserve::pipeline
