// Model lifecycle at run time: the ModelManager loads, reloads and unloads models of the
// pipeline while it serves (memory budget, warm-up, --model-dir scans and polling). The
// admin RPCs (rpc/admin_service) and main drive it. No gRPC, no torch: families come in
// through ModelHooks.
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
#include "absl/time/time.h"
#include "server/lifecycle/memory_budget.h"
#include "server/models/model.h"
#include "server/pipeline/pipeline.h"

namespace embedserve::lifecycle {

// What the manager needs from the rest of the daemon (kept as functions so this library
// does not depend on the model families or torch).
struct ModelHooks {
  // A source spec (directory or hf:ORG/REPO[@REV]) -> a local directory.
  std::function<absl::StatusOr<std::string>(const std::string& source)> resolve;
  // The estimated memory of the model in a directory (errors: not a model).
  std::function<absl::StatusOr<int64_t>(const std::string& dir)> estimate;
  std::function<absl::StatusOr<std::unique_ptr<models::Model>>(const std::string& dir)> load;
  // Like load, also given the model's name (for per-model options); used instead when set.
  std::function<absl::StatusOr<std::unique_ptr<models::Model>>(const std::string& name,
                                                               const std::string& dir)>
      load_named;
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

}  // namespace embedserve::lifecycle
