// Model lifecycle at run time: the memory budget, the ModelManager (load, unload, reload,
// --model-dir scans and polling) and the gRPC edge that drives it, embedserve.v1.AdminService.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "embedserve/v1/admin.grpc.pb.h"
#include "server/models/model.h"
#include "server/pipeline/pipeline.h"
#include "server/rpc/call_tracker.h"

namespace embedserve::rpc {

// Bytes of device memory (host memory on CPU) the weights of loaded models may take.
// Thread-safe. Every loaded version holds a reservation until its model is freed (after
// its calls drained), so what is "used" is what is really resident.
class MemoryBudget {
 public:
  // `limit_bytes` <= 0: no limit.
  explicit MemoryBudget(int64_t limit_bytes) : limit_(limit_bytes) {}

  // One model version's share; released when the model is freed.
  struct Hold {
    int64_t bytes = 0;
    bool draining = false;  // guarded by the budget's mutex
    bool released = false;  // guarded by the budget's mutex
  };

  // Reserves `bytes` for model `name`. RESOURCE_EXHAUSTED naming the model, its estimate,
  // the budget and what is left when it does not fit; when versions that were unloaded or
  // replaced are still draining, waits up to `drain_wait` for them to be freed first (the
  // executor frees a drained version as soon as its last call lets go).
  absl::StatusOr<std::shared_ptr<Hold>> Reserve(absl::string_view name, int64_t bytes,
                                                absl::Duration drain_wait);
  // The version holding `hold` was unloaded or replaced: its memory comes back once freed.
  void StartDraining(const std::shared_ptr<Hold>& hold);
  // The model holding `hold` was freed (idempotent).
  void Release(const std::shared_ptr<Hold>& hold);

  int64_t limit() const { return limit_; }
  int64_t used() const;

 private:
  const int64_t limit_;
  mutable std::mutex mu_;
  std::condition_variable freed_;
  int64_t used_ = 0;
  int64_t draining_ = 0;
};

// "3.4 MiB (3571712 bytes)".
std::string FormatBytes(int64_t bytes);

// The budget when --memory-budget-mb is not given, for a resolved device: CPU (and MPS,
// whose memory is the host's): MemAvailable from /proc/meminfo minus a margin (a tenth of
// it, at least 256 MiB, at most half); CUDA: the device's free memory (cudaMemGetInfo via
// libcudart, when it can be loaded) minus 5% of its total. 0 (no limit) when unknown.
int64_t DefaultMemoryBudgetBytes(const std::string& device);

// What the manager needs from the rest of the daemon (kept as functions so this library
// does not depend on the model families or torch).
struct ModelHooks {
  // A source spec (directory or hf:ORG/REPO[@REV]) -> a local directory.
  std::function<absl::StatusOr<std::string>(const std::string& source)> resolve;
  // The estimated memory of the model in a directory (errors: not a model).
  std::function<absl::StatusOr<int64_t>(const std::string& dir)> estimate;
  std::function<absl::StatusOr<std::unique_ptr<models::Model>>(const std::string& dir)> load;
  // True if a directory holds a model of a known family (for --model-dir).
  std::function<bool(const std::string& dir)> is_model_dir;
  // Health for a model name; may be set after construction (SetServingHook).
  std::function<void(const std::string& name, bool serving)> set_serving;
};

// Loads, reloads and unloads models of a Pipeline while it serves. Thread-safe; operations
// on one name are serialized, operations on different names run in parallel.
class ModelManager {
 public:
  // `budget_bytes` <= 0: no memory limit. `model_dir` empty: no --model-dir.
  ModelManager(pipeline::Pipeline* pipeline, ModelHooks hooks, int64_t budget_bytes,
               std::string model_dir);
  ~ModelManager();

  void SetServingHook(std::function<void(const std::string& name, bool serving)> hook);

  // Loads `source` as `name`, warms it up and makes it SERVING; blocks until done. A failed
  // load leaves the model FAILED with the reason (and returns it). ALREADY_EXISTS if `name`
  // is ready (use Reload); INVALID_ARGUMENT for an empty or malformed name or source.
  absl::Status Load(const std::string& name, const std::string& source);
  // NOT_FOUND if unknown; otherwise new calls get NOT_FOUND at once and the model's memory
  // is released once calls in flight drained.
  absl::Status Unload(const std::string& name);
  // Loads the model again from `source` (default: its current source) beside the serving
  // version, warms it up and switches new calls to it; the old version drains. On error
  // the old version keeps serving. A model that is FAILED is simply loaded again.
  absl::Status Reload(const std::string& name, std::optional<std::string> source = {});

  struct RescanResult {
    std::vector<std::string> loaded, unloaded, reloaded;
    std::vector<std::pair<std::string, absl::Status>> failed;
  };
  // Brings the served models in line with --model-dir: every subdirectory that is a model
  // is served under its directory name; added ones load, removed ones unload, changed ones
  // (a file's size or mtime) reload. FAILED_PRECONDITION without --model-dir. A name that
  // is already served from elsewhere (--model, LoadModel) is reported failed, not touched.
  absl::StatusOr<RescanResult> Rescan();
  // The model directories of --model-dir, as (name, path), sorted by name.
  std::vector<std::pair<std::string, std::string>> ListModelDir() const;
  // Rescans every `period` on a background thread until Stop().
  void StartPolling(absl::Duration period);
  // Stops polling (waits for a scan in progress).
  void Stop();

  const std::string& model_dir() const { return model_dir_; }
  const MemoryBudget& budget() const { return *budget_; }

 private:
  // Resolves, estimates, reserves, loads and warms up a new version, then publishes it.
  absl::Status Bring(const std::string& name, const std::string& source);
  absl::Status LoadLocked(const std::string& name, const std::string& source);
  std::shared_ptr<std::mutex> NameLock(const std::string& name);
  void SetServing(const std::string& name, bool serving);

  pipeline::Pipeline* const pipeline_;
  ModelHooks hooks_;
  std::shared_ptr<MemoryBudget> budget_;
  const std::string model_dir_;

  std::mutex mu_;  // guards the maps below and hooks_.set_serving
  std::map<std::string, std::shared_ptr<std::mutex>> name_locks_;
  std::map<std::string, std::shared_ptr<MemoryBudget::Hold>> holds_;  // the serving versions'
  // Models that came from --model-dir: name -> fingerprint of the directory's files.
  std::map<std::string, std::string> from_dir_;

  std::mutex rescan_mu_;  // one scan at a time
  std::mutex poll_mu_;
  std::condition_variable poll_wake_;
  bool stopping_ = false;
  std::thread poller_;
};

// embedserve.v1.AdminService: each call runs on its own thread (loads take seconds) and
// answers when the change is done. Authentication as every other method (the tracker).
class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  // `manager`, `pipeline` and `tracker` must outlive the service.
  AdminServiceImpl(ModelManager* manager, pipeline::Pipeline* pipeline, CallTracker* tracker)
      : manager_(manager), pipeline_(pipeline), tracker_(tracker) {}
  // Waits for calls still running.
  ~AdminServiceImpl() override;

  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context,
                                      const v1::LoadModelRequest* request,
                                      v1::LoadModelResponse* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context,
                                        const v1::UnloadModelRequest* request,
                                        v1::UnloadModelResponse* response) override;
  grpc::ServerUnaryReactor* ReloadModel(grpc::CallbackServerContext* context,
                                        const v1::ReloadModelRequest* request,
                                        v1::ReloadModelResponse* response) override;
  grpc::ServerUnaryReactor* RescanModelDir(grpc::CallbackServerContext* context,
                                           const v1::RescanModelDirRequest* request,
                                           v1::RescanModelDirResponse* response) override;

 private:
  grpc::ServerUnaryReactor* RunInBackground(grpc::CallbackServerContext* context,
                                            const char* method, const std::string& model,
                                            std::function<absl::Status()> work);
  void FillModel(const std::string& name, v1::ModelInfo* out) const;

  ModelManager* const manager_;
  pipeline::Pipeline* const pipeline_;
  CallTracker* const tracker_;
  std::mutex mu_;
  std::condition_variable idle_;
  int running_ = 0;
};

// Makes the next grpc::ServerBuilder constructed in this process register `service` (the
// rpc::Server builds one in Server::Start). Call before Server::Start; `service` must
// outlive the server.
void RegisterWithNextServer(grpc::Service* service);

}  // namespace embedserve::rpc
