// ModelManager: load, unload, reload, --model-dir scans.
#include "server/lifecycle/model_manager.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace embedserve::lifecycle {

namespace fs = std::filesystem;

namespace {

// How long a load waits for unloaded or replaced versions to be freed before refusing.
constexpr absl::Duration kDrainWait = absl::Seconds(10);

absl::Status CheckName(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("name: empty; give the model a name");
  if (name.size() > 200) {
    return absl::InvalidArgumentError(
        absl::StrCat("name: ", name.size(), " characters, over the limit of 200"));
  }
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-' || c == ':' || c == '@' || c == '+';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "name: '", LogQuote(name), "' has a character outside [A-Za-z0-9._:@+-]"));
    }
  }
  return absl::OkStatus();
}

// What changes when a file of the directory changes: every regular file's relative path,
// size and mtime (symlinks followed, as in a Hugging Face snapshot).
std::string Fingerprint(const std::string& dir) {
  std::vector<std::string> parts;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code file_ec;
    if (!fs::is_regular_file(it->path(), file_ec)) continue;
    const auto size = fs::file_size(it->path(), file_ec);
    const auto mtime = fs::last_write_time(it->path(), file_ec);
    parts.push_back(absl::StrCat(fs::relative(it->path(), dir, file_ec).string(), ":", size, ":",
                                 mtime.time_since_epoch().count()));
  }
  std::sort(parts.begin(), parts.end());
  std::string out;
  for (const std::string& part : parts) absl::StrAppend(&out, part, ";");
  return out;
}

}  // namespace

ModelManager::ModelManager(pipeline::Pipeline* pipeline, ModelHooks hooks, int64_t budget_bytes,
                           std::string model_dir)
    : pipeline_(pipeline),
      hooks_(std::move(hooks)),
      budget_(std::make_shared<MemoryBudget>(budget_bytes)),
      model_dir_(std::move(model_dir)) {}

ModelManager::~ModelManager() { Stop(); }

void ModelManager::SetServingHook(std::function<void(const std::string&, bool)> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hooks_.set_serving = std::move(hook);
}

void ModelManager::SetServing(const std::string& name, bool serving) {
  std::function<void(const std::string&, bool)> hook;
  {
    std::lock_guard<std::mutex> lock(mu_);
    hook = hooks_.set_serving;
  }
  if (hook) hook(name, serving);
}

std::shared_ptr<std::mutex> ModelManager::NameLock(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<std::mutex>& slot = name_locks_[name];
  if (!slot) slot = std::make_shared<std::mutex>();
  return slot;
}

absl::Status ModelManager::Bring(const std::string& name, const std::string& source) {
  absl::StatusOr<std::string> dir = hooks_.resolve(source);
  if (!dir.ok()) return dir.status();
  absl::StatusOr<int64_t> estimate = hooks_.estimate(*dir);
  if (!estimate.ok()) return estimate.status();
  absl::StatusOr<std::shared_ptr<MemoryBudget::Hold>> hold =
      budget_->Reserve(name, *estimate, kDrainWait);
  if (!hold.ok()) return hold.status();
  absl::StatusOr<std::unique_ptr<models::Model>> loaded =
      hooks_.load_named ? hooks_.load_named(name, *dir) : hooks_.load(*dir);
  if (!loaded.ok()) {
    budget_->Release(*hold);
    return loaded.status();
  }
  // The reservation is given back when the model is freed: after the last call and batch
  // queue holding this version let go.
  std::shared_ptr<models::Model> model(
      loaded->release(), [budget = budget_, hold = *hold](models::Model* m) {
        delete m;
        budget->Release(hold);
      });
  std::shared_ptr<pipeline::ServingModel> version =
      pipeline_->PrepareVersion(name, std::move(model), *estimate);
  absl::Status warm = pipeline_->WarmupVersion(*version);
  if (!warm.ok()) return warm;  // the unpublished version retires and is freed
  std::shared_ptr<MemoryBudget::Hold> previous;
  {
    std::lock_guard<std::mutex> lock(mu_);
    previous = std::exchange(holds_[name], *hold);
  }
  pipeline_->Publish(std::move(version), source);
  if (previous) budget_->StartDraining(previous);
  return absl::OkStatus();
}

absl::Status ModelManager::LoadLocked(const std::string& name, const std::string& source) {
  const absl::Time start = absl::Now();
  pipeline_->AddLoading(name, source);
  SetServing(name, false);
  absl::Status status = Bring(name, source);
  if (!status.ok()) {
    pipeline_->SetFailed(name, status);
    LogEvent(LogLevel::kError, "model_failed",
             absl::StrCat("model=", name, " source=", LogQuote(source),
                          " error=", LogQuote(status.message())));
    return status;
  }
  SetServing(name, true);
  LogEvent(LogLevel::kInfo, "model_ready",
           absl::StrCat("model=", name, " source=", LogQuote(source),
                        " load_and_warmup_s=", absl::ToDoubleSeconds(absl::Now() - start)));
  return absl::OkStatus();
}

absl::Status ModelManager::Load(const std::string& name, const std::string& source) {
  if (absl::Status valid = CheckName(name); !valid.ok()) return valid;
  if (source.empty()) {
    return absl::InvalidArgumentError("source: empty; give a model directory or hf:ORG/REPO");
  }
  std::shared_ptr<std::mutex> name_lock = NameLock(name);
  std::lock_guard<std::mutex> lock(*name_lock);
  absl::StatusOr<pipeline::ModelSnapshot> existing = pipeline_->Snapshot(name);
  if (existing.ok() && existing->state == pipeline::ModelState::kReady) {
    return absl::AlreadyExistsError(absl::StrCat(
        "model '", name, "' is already loaded (from ", existing->source,
        "); use ReloadModel to replace it or UnloadModel first"));
  }
  return LoadLocked(name, source);
}

absl::Status ModelManager::Unload(const std::string& name) {
  std::shared_ptr<std::mutex> name_lock = NameLock(name);
  std::lock_guard<std::mutex> lock(*name_lock);
  if (!pipeline_->Remove(name)) {
    return absl::NotFoundError(absl::StrCat("no model named '", name, "'"));
  }
  SetServing(name, false);
  std::shared_ptr<MemoryBudget::Hold> hold;
  {
    std::lock_guard<std::mutex> map_lock(mu_);
    auto it = holds_.find(name);
    if (it != holds_.end()) {
      hold = std::move(it->second);
      holds_.erase(it);
    }
    from_dir_.erase(name);
  }
  if (hold) budget_->StartDraining(hold);
  LogEvent(LogLevel::kInfo, "model_unloaded", absl::StrCat("model=", name));
  return absl::OkStatus();
}

absl::Status ModelManager::Reload(const std::string& name, std::optional<std::string> source) {
  if (source && source->empty()) {
    return absl::InvalidArgumentError("source: empty; leave it unset to reload from the current source");
  }
  std::shared_ptr<std::mutex> name_lock = NameLock(name);
  std::lock_guard<std::mutex> lock(*name_lock);
  absl::StatusOr<pipeline::ModelSnapshot> existing = pipeline_->Snapshot(name);
  if (!existing.ok()) {
    return absl::NotFoundError(
        absl::StrCat("no model named '", name, "'; use LoadModel for a new one"));
  }
  const std::string from = source ? *source : existing->source;
  if (existing->state != pipeline::ModelState::kReady) return LoadLocked(name, from);
  const absl::Time start = absl::Now();
  absl::Status status = Bring(name, from);
  if (!status.ok()) {
    LogEvent(LogLevel::kError, "reload_failed",
             absl::StrCat("model=", name, " source=", LogQuote(from),
                          " error=", LogQuote(status.message())));
    return absl::Status(status.code(),
                        absl::StrCat("reload of '", name, "' from ", from,
                                     " failed (the previous version keeps serving): ",
                                     status.message()));
  }
  SetServing(name, true);
  LogEvent(LogLevel::kInfo, "model_reloaded",
           absl::StrCat("model=", name, " source=", LogQuote(from),
                        " load_and_warmup_s=", absl::ToDoubleSeconds(absl::Now() - start)));
  return absl::OkStatus();
}

std::vector<std::pair<std::string, std::string>> ModelManager::ListModelDir() const {
  std::vector<std::pair<std::string, std::string>> out;
  if (model_dir_.empty()) return out;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(model_dir_, ec)) {
    std::error_code dir_ec;
    if (!fs::is_directory(entry.path(), dir_ec)) continue;
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.') continue;  // hidden: e.g. a copy in progress
    if (hooks_.is_model_dir && !hooks_.is_model_dir(entry.path().string())) continue;
    out.emplace_back(name, entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<ModelManager::RescanResult> ModelManager::Rescan() {
  if (model_dir_.empty()) {
    return absl::FailedPreconditionError("the server has no --model-dir to rescan");
  }
  std::error_code ec;
  if (!fs::is_directory(model_dir_, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--model-dir ", model_dir_, " is not a directory (any more)"));
  }
  std::lock_guard<std::mutex> scan_lock(rescan_mu_);
  RescanResult result;
  const std::vector<std::pair<std::string, std::string>> found = ListModelDir();
  std::map<std::string, std::string> managed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    managed = from_dir_;
  }
  // Removed directories unload.
  for (const auto& [name, fingerprint] : managed) {
    const bool present = std::any_of(found.begin(), found.end(),
                                     [&name = name](const auto& f) { return f.first == name; });
    if (present) continue;
    absl::Status status = Unload(name);
    if (status.ok() || status.code() == absl::StatusCode::kNotFound) {
      result.unloaded.push_back(name);
    } else {
      result.failed.emplace_back(name, status);
    }
    std::lock_guard<std::mutex> lock(mu_);
    from_dir_.erase(name);
  }
  for (const auto& [name, path] : found) {
    const std::string fingerprint = Fingerprint(path);
    auto known = managed.find(name);
    if (known == managed.end()) {
      if (absl::Status valid = CheckName(name); !valid.ok()) {
        result.failed.emplace_back(name, valid);
        continue;
      }
      absl::StatusOr<pipeline::ModelSnapshot> existing = pipeline_->Snapshot(name);
      if (existing.ok() && existing->source != path) {
        result.failed.emplace_back(
            name, absl::AlreadyExistsError(absl::StrCat(
                      "a model named '", name, "' is already served from ", existing->source,
                      "; the directory ", path, " is ignored")));
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        from_dir_[name] = fingerprint;  // a failed load is retried only once it changes
      }
      absl::Status status = Load(name, path);
      if (status.ok()) result.loaded.push_back(name);
      else result.failed.emplace_back(name, status);
    } else if (known->second != fingerprint) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        from_dir_[name] = fingerprint;
      }
      absl::Status status = Reload(name, path);
      if (status.ok()) result.reloaded.push_back(name);
      else result.failed.emplace_back(name, status);
    }
  }
  if (!result.loaded.empty() || !result.unloaded.empty() || !result.reloaded.empty() ||
      !result.failed.empty()) {
    LogEvent(LogLevel::kInfo, "model_dir_scanned",
             absl::StrCat("dir=", LogQuote(model_dir_), " loaded=", result.loaded.size(),
                          " unloaded=", result.unloaded.size(),
                          " reloaded=", result.reloaded.size(),
                          " failed=", result.failed.size()));
  }
  return result;
}

void ModelManager::StartPolling(absl::Duration period) {
  if (poller_.joinable() || model_dir_.empty() || period <= absl::ZeroDuration()) return;
  poller_ = std::thread([this, period] {
    std::unique_lock<std::mutex> lock(poll_mu_);
    while (!stopping_) {
      if (poll_wake_.wait_for(lock, absl::ToChronoNanoseconds(period),
                              [this] { return stopping_; })) {
        break;
      }
      lock.unlock();
      absl::StatusOr<RescanResult> scanned = Rescan();
      if (!scanned.ok()) {
        LogEvent(LogLevel::kWarning, "model_dir_scan_failed",
                 absl::StrCat("error=", LogQuote(scanned.status().message())));
      }
      lock.lock();
    }
  });
}

void ModelManager::Stop() {
  {
    std::lock_guard<std::mutex> lock(poll_mu_);
    stopping_ = true;
  }
  poll_wake_.notify_all();
  if (poller_.joinable()) poller_.join();
}

// ---------------------------------------------------------------------------------------
// AdminService.

}  // namespace embedserve::lifecycle
