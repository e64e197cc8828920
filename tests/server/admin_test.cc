// The model lifecycle against the real server binary: AdminService load/unload/reload (also
// under a stream of concurrent calls), --model-dir scans and polling, the memory budget,
// admin off by default and behind the token, and fair sharing between two loaded models.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "client/embedserve_client.h"
#include "tests/server/server_process.h"

using embedserve::client::Client;
using embedserve::client::ClientOptions;
using embedserve::testing::ServerProcess;
namespace fs = std::filesystem;
namespace v1 = embedserve::v1;
using Serving = grpc::health::v1::HealthCheckResponse;

namespace {

const std::string kDemoModel = std::string(EMBEDSERVE_TEST_DATA) + "/openclip-reference/model";

// A fresh temporary directory, removed at the end of the test.
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/embedserve-admin-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string Sub(const std::string& name) const { return path + "/" + name; }
  std::string path;
};

// A copy of the demo model at `dir` (created).
std::string CopyModel(const std::string& dir) {
  fs::create_directories(dir);
  fs::copy(kDemoModel, dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  return dir;
}

v1::EmbedRequest TextRequest(const std::string& model, int texts = 1) {
  v1::EmbedRequest request;
  request.set_model(model);
  for (int i = 0; i < texts; ++i) request.add_inputs()->set_text("a photo of a dog " + std::to_string(i));
  return request;
}

absl::StatusCode CodeOf(const absl::Status& status) { return status.code(); }

std::vector<std::string> Names(const v1::ListModelsResponse& response) {
  std::vector<std::string> names;
  for (const v1::ModelInfo& m : response.models()) names.push_back(m.name());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> Sorted(const google::protobuf::RepeatedPtrField<std::string>& names) {
  std::vector<std::string> out(names.begin(), names.end());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("AdminService is off by default: UNIMPLEMENTED") {
  ServerProcess server({"--model", "demo=" + kDemoModel});
  REQUIRE(server.healthy());
  auto client = Client::Create(server.unix_target());
  CHECK(CodeOf(client->LoadModel("x", kDemoModel).status()) == absl::StatusCode::kUnimplemented);
  CHECK(CodeOf(client->UnloadModel("demo").status()) == absl::StatusCode::kUnimplemented);
  CHECK(CodeOf(client->ReloadModel("demo").status()) == absl::StatusCode::kUnimplemented);
  CHECK(CodeOf(client->RescanModelDir().status()) == absl::StatusCode::kUnimplemented);
  CHECK(client->Embed(TextRequest("demo")).ok());
}

TEST_CASE("AdminService loads, reloads and unloads models, and health and ListModels follow") {
  TempDir tmp;
  const std::string first = CopyModel(tmp.Sub("first"));
  const std::string second = CopyModel(tmp.Sub("second"));
  const std::string empty = tmp.Sub("empty");
  fs::create_directories(empty);
  ServerProcess server({"--enable-admin", "--continue-on-model-failure"});
  REQUIRE(server.healthy());
  auto client = Client::Create(server.unix_target());

  auto loaded = client->LoadModel("m", first);
  REQUIRE(loaded.ok());
  CHECK(loaded->model().name() == "m");
  CHECK(loaded->model().state() == v1::MODEL_STATE_READY);
  CHECK(loaded->model().source() == first);
  CHECK(loaded->model().estimated_bytes() > 0);
  CHECK(*client->Health("m") == Serving::SERVING);
  auto before = client->Embed(TextRequest("m"));
  REQUIRE(before.ok());
  auto listed = client->ListModels();
  REQUIRE(listed.ok());
  REQUIRE(listed->models_size() == 1);
  CHECK(listed->models(0).estimated_bytes() == loaded->model().estimated_bytes());

  SECTION("a name that serves is ALREADY_EXISTS; bad names and sources are INVALID_ARGUMENT") {
    CHECK(CodeOf(client->LoadModel("m", second).status()) == absl::StatusCode::kAlreadyExists);
    CHECK(CodeOf(client->LoadModel("", second).status()) == absl::StatusCode::kInvalidArgument);
    CHECK(CodeOf(client->LoadModel("a b/c", second).status()) ==
          absl::StatusCode::kInvalidArgument);
    CHECK(CodeOf(client->LoadModel("n", "").status()) == absl::StatusCode::kInvalidArgument);
    CHECK(CodeOf(client->ReloadModel("nope").status()) == absl::StatusCode::kNotFound);
    CHECK(CodeOf(client->UnloadModel("nope").status()) == absl::StatusCode::kNotFound);
    CHECK(CodeOf(client->RescanModelDir().status()) == absl::StatusCode::kFailedPrecondition);
  }

  SECTION("a load error is the status, and the model is listed FAILED with the reason") {
    auto failed = client->LoadModel("broken", empty);
    CHECK(CodeOf(failed.status()) == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(failed.status().message()), Catch::Contains("open_clip_config.json"));
    auto info = client->GetModel("broken");
    REQUIRE(info.ok());
    CHECK(info->model().state() == v1::MODEL_STATE_FAILED);
    CHECK_THAT(info->model().state_message(), Catch::Contains("open_clip_config.json"));
    CHECK(*client->Health("broken") == Serving::NOT_SERVING);
    CHECK(CodeOf(client->Embed(TextRequest("broken")).status()) == absl::StatusCode::kUnavailable);
    // A FAILED model loads again under the same name once its source is fixed.
    auto fixed = client->LoadModel("broken", second);
    REQUIRE(fixed.ok());
    CHECK(*client->Health("broken") == Serving::SERVING);
    CHECK(client->Embed(TextRequest("broken")).ok());
  }

  SECTION("a failed reload leaves the old version serving") {
    auto failed = client->ReloadModel("m", empty);
    CHECK(CodeOf(failed.status()) == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(failed.status().message()), Catch::Contains("keeps serving"));
    auto info = client->GetModel("m");
    REQUIRE(info.ok());
    CHECK(info->model().state() == v1::MODEL_STATE_READY);
    CHECK(info->model().source() == first);
    CHECK(*client->Health("m") == Serving::SERVING);
    CHECK(client->Embed(TextRequest("m")).ok());
  }

  SECTION("a reload switches to the new source; same weights give the same vectors") {
    auto reloaded = client->ReloadModel("m", second);
    REQUIRE(reloaded.ok());
    CHECK(reloaded->model().source() == second);
    CHECK(reloaded->model().state() == v1::MODEL_STATE_READY);
    auto after = client->Embed(TextRequest("m"));
    REQUIRE(after.ok());
    CHECK(after->embeddings(0).vector().values_size() ==
          before->embeddings(0).vector().values_size());
    for (int i = 0; i < after->embeddings(0).vector().values_size(); ++i) {
      CHECK(after->embeddings(0).vector().values(i) ==
            Approx(before->embeddings(0).vector().values(i)).margin(1e-6));
    }
    // Without a source, the current one is used again.
    auto again = client->ReloadModel("m");
    REQUIRE(again.ok());
    CHECK(again->model().source() == second);
  }

  SECTION("an unload makes new calls NOT_FOUND and health NOT_SERVING") {
    REQUIRE(client->UnloadModel("m").ok());
    CHECK(CodeOf(client->Embed(TextRequest("m")).status()) == absl::StatusCode::kNotFound);
    CHECK(CodeOf(client->GetModel("m").status()) == absl::StatusCode::kNotFound);
    CHECK(*client->Health("m") == Serving::NOT_SERVING);
    CHECK(CodeOf(client->UnloadModel("m").status()) == absl::StatusCode::kNotFound);
    // And the name can be loaded again.
    REQUIRE(client->LoadModel("m", second).ok());
    CHECK(client->Embed(TextRequest("m")).ok());
  }
}

TEST_CASE("reloads under a stream of concurrent calls fail none of them") {
  TempDir tmp;
  const std::string first = CopyModel(tmp.Sub("first"));
  const std::string second = CopyModel(tmp.Sub("second"));
  ServerProcess server({"--enable-admin", "--model", "m=" + first, "--max-queue-delay-us", "500"});
  REQUIRE(server.healthy());
  auto admin = Client::Create(server.unix_target());

  std::atomic<bool> stop{false};
  std::atomic<int> ok_calls{0}, stream_messages{0};
  std::mutex mu;
  std::vector<std::string> failures;
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      auto client = Client::Create(server.unix_target());
      while (!stop.load()) {
        auto response = client->Embed(TextRequest("m", 1 + t % 3));
        if (response.ok()) {
          ++ok_calls;
        } else {
          std::lock_guard<std::mutex> lock(mu);
          failures.push_back(std::string(response.status().ToString()));
        }
      }
    });
  }
  // A bidirectional stream stays open across every reload.
  callers.emplace_back([&] {
    auto client = Client::Create(server.unix_target());
    grpc::ClientContext context;
    auto stream = client->embed_stub().EmbedStream(&context);
    int id = 0;
    while (!stop.load()) {
      v1::EmbedStreamRequest request;
      request.set_id(std::to_string(id++));
      request.set_model("m");
      request.add_inputs()->set_text("a streamed text");
      v1::EmbedStreamResponse response;
      if (!stream->Write(request) || !stream->Read(&response)) {
        std::lock_guard<std::mutex> lock(mu);
        failures.push_back("the stream broke");
        return;
      }
      if (response.has_error()) {
        std::lock_guard<std::mutex> lock(mu);
        failures.push_back("stream message: " + response.error().message());
      } else {
        ++stream_messages;
      }
    }
    stream->WritesDone();
    grpc::Status finished = stream->Finish();
    if (!finished.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      failures.push_back("stream finish: " + finished.error_message());
    }
  });

  auto wait_for_calls = [&](int at_least) {
    for (int i = 0; i < 3000 && ok_calls.load() < at_least; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };
  wait_for_calls(20);
  for (int round = 0; round < 6; ++round) {
    const int calls_before = ok_calls.load();
    auto reloaded = admin->ReloadModel("m", round % 2 == 0 ? second : first);
    REQUIRE(reloaded.ok());
    CHECK(reloaded->model().state() == v1::MODEL_STATE_READY);
    auto info = admin->GetModel("m");
    REQUIRE(info.ok());
    CHECK(info->model().state() == v1::MODEL_STATE_READY);
    wait_for_calls(calls_before + 10);  // calls keep flowing on the new version
  }
  stop = true;
  for (std::thread& t : callers) t.join();
  INFO("first failures: " << (failures.empty() ? "" : failures.front()));
  CHECK(failures.empty());
  CHECK(ok_calls.load() > 60);
  CHECK(stream_messages.load() > 0);
  CHECK(*admin->Health("m") == Serving::SERVING);
}

TEST_CASE("a model directory serves its model subdirectories, and RescanModelDir adds, removes and reloads") {
  TempDir tmp;
  const std::string dir = tmp.Sub("models");
  CopyModel(dir + "/alpha");
  fs::create_directories(dir + "/not-a-model");
  std::ofstream(dir + "/README.txt") << "not a directory\n";
  ServerProcess server({"--enable-admin", "--model-dir", dir});
  REQUIRE(server.healthy());
  auto client = Client::Create(server.unix_target());

  auto listed = client->ListModels();
  REQUIRE(listed.ok());
  CHECK(Names(*listed) == std::vector<std::string>{"alpha"});
  CHECK(*client->Health("alpha") == Serving::SERVING);
  CHECK(client->Embed(TextRequest("alpha")).ok());

  // Nothing changed: nothing happens.
  auto idle = client->RescanModelDir();
  REQUIRE(idle.ok());
  CHECK(idle->loaded_size() + idle->unloaded_size() + idle->reloaded_size() +
            idle->failed_size() == 0);

  // Added.
  CopyModel(dir + "/beta");
  auto added = client->RescanModelDir();
  REQUIRE(added.ok());
  CHECK(Sorted(added->loaded()) == std::vector<std::string>{"beta"});
  CHECK(added->failed_size() == 0);
  CHECK(client->Embed(TextRequest("beta")).ok());
  auto beta = client->GetModel("beta");
  REQUIRE(beta.ok());
  CHECK(beta->model().source() == dir + "/beta");

  // Changed: a file's mtime moves.
  const fs::path config = fs::path(dir) / "alpha" / "open_clip_config.json";
  fs::last_write_time(config, fs::last_write_time(config) + std::chrono::hours(1));
  auto changed = client->RescanModelDir();
  REQUIRE(changed.ok());
  CHECK(Sorted(changed->reloaded()) == std::vector<std::string>{"alpha"});
  CHECK(changed->loaded_size() == 0);
  CHECK(client->Embed(TextRequest("alpha")).ok());

  // Removed.
  fs::remove_all(dir + "/beta");
  auto removed = client->RescanModelDir();
  REQUIRE(removed.ok());
  CHECK(Sorted(removed->unloaded()) == std::vector<std::string>{"beta"});
  CHECK(CodeOf(client->Embed(TextRequest("beta")).status()) == absl::StatusCode::kNotFound);
  CHECK(*client->Health("beta") == Serving::NOT_SERVING);

  // A broken model directory is reported FAILED (and not retried until it changes).
  fs::create_directories(dir + "/gamma");
  std::ofstream(dir + "/gamma/open_clip_config.json") << "{not json";
  auto broken = client->RescanModelDir();
  REQUIRE(broken.ok());
  REQUIRE(broken->failed_size() == 1);
  CHECK(broken->failed(0).name() == "gamma");
  auto gamma = client->GetModel("gamma");
  REQUIRE(gamma.ok());
  CHECK(gamma->model().state() == v1::MODEL_STATE_FAILED);
  auto quiet = client->RescanModelDir();
  REQUIRE(quiet.ok());
  CHECK(quiet->failed_size() == 0);
  // Fixed: it loads.
  CopyModel(dir + "/gamma");
  auto fixed = client->RescanModelDir();
  REQUIRE(fixed.ok());
  CHECK(Sorted(fixed->reloaded()) == std::vector<std::string>{"gamma"});
  CHECK(client->Embed(TextRequest("gamma")).ok());
}

TEST_CASE("polling the model directory picks up added and removed models by itself") {
  TempDir tmp;
  const std::string dir = tmp.Sub("models");
  fs::create_directories(dir);
  ServerProcess server({"--model-dir", dir, "--model-dir-poll-s", "0.2"});
  REQUIRE(server.healthy());
  auto client = Client::Create(server.unix_target());
  // Copied under a hidden name, then renamed: a scan never sees a half-copied model.
  CopyModel(dir + "/.incoming");
  fs::rename(dir + "/.incoming", dir + "/polled");
  bool served = false;
  for (int i = 0; i < 600 && !served; ++i) {  // up to 60 s on a loaded machine
    served = client->Embed(TextRequest("polled")).ok();
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(served);
  fs::remove_all(dir + "/polled");
  bool gone = false;
  for (int i = 0; i < 600 && !gone; ++i) {
    gone = CodeOf(client->Embed(TextRequest("polled")).status()) == absl::StatusCode::kNotFound;
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(gone);
}

TEST_CASE("the memory budget refuses a model that does not fit, naming it and what is left") {
  TempDir tmp;
  const std::string first = CopyModel(tmp.Sub("first"));
  const std::string second = CopyModel(tmp.Sub("second"));

  SECTION("a tiny budget refuses every model, at start-up and through the RPC") {
    ServerProcess server({"--enable-admin", "--memory-budget-mb", "1", "--model", "m=" + first,
                          "--continue-on-model-failure"});
    REQUIRE(server.healthy());
    auto client = Client::Create(server.unix_target());
    auto info = client->GetModel("m");
    REQUIRE(info.ok());
    CHECK(info->model().state() == v1::MODEL_STATE_FAILED);
    CHECK_THAT(info->model().state_message(), Catch::Contains("memory budget"));
    auto refused = client->LoadModel("n", second);
    CHECK(CodeOf(refused.status()) == absl::StatusCode::kResourceExhausted);
    const std::string message(refused.status().message());
    CHECK_THAT(message, Catch::Contains("'n'"));
    CHECK_THAT(message, Catch::Contains("needs an estimated"));
    CHECK_THAT(message, Catch::Contains("--memory-budget-mb"));
  }

  SECTION("room for one model: a second is refused until the first is unloaded") {
    // The demo model is about 6.7 MiB in float32: one fits in 10 MiB, two do not.
    ServerProcess server({"--enable-admin", "--memory-budget-mb", "10", "--model", "a=" + first});
    REQUIRE(server.healthy());
    auto client = Client::Create(server.unix_target());
    auto a = client->GetModel("a");
    REQUIRE(a.ok());
    const int64_t estimate = a->model().estimated_bytes();
    CHECK(estimate > (5 << 20));
    CHECK(estimate < (10 << 20));
    auto refused = client->LoadModel("b", second);
    CHECK(CodeOf(refused.status()) == absl::StatusCode::kResourceExhausted);
    CHECK_THAT(std::string(refused.status().message()), Catch::Contains("left"));
    // A reload needs the old and the new version at once: refused, and the old one serves on.
    auto reload = client->ReloadModel("a");
    CHECK(CodeOf(reload.status()) == absl::StatusCode::kResourceExhausted);
    CHECK(client->Embed(TextRequest("a")).ok());
    // Unloaded (and drained), its memory is available again.
    REQUIRE(client->UnloadModel("a").ok());
    auto b = client->LoadModel("b", second);
    REQUIRE(b.ok());
    CHECK(client->Embed(TextRequest("b")).ok());
  }
}

TEST_CASE("with --auth-token-file, AdminService needs the token") {
  TempDir tmp;
  const std::string model = CopyModel(tmp.Sub("model"));
  const std::string token_file = tmp.Sub("tokens");
  std::ofstream(token_file) << "s3cret-admin\n";
  ServerProcess server({"--enable-admin", "--auth-token-file", token_file});
  REQUIRE(server.healthy());
  auto anonymous = Client::Create(server.unix_target());
  CHECK(CodeOf(anonymous->LoadModel("m", model).status()) == absl::StatusCode::kUnauthenticated);
  CHECK(CodeOf(anonymous->RescanModelDir().status()) == absl::StatusCode::kUnauthenticated);
  ClientOptions wrong_options;
  wrong_options.bearer_token = "guess";
  auto wrong = Client::Create(server.unix_target(), wrong_options);
  CHECK(CodeOf(wrong->LoadModel("m", model).status()) == absl::StatusCode::kUnauthenticated);
  CHECK(CodeOf(wrong->UnloadModel("m").status()) == absl::StatusCode::kUnauthenticated);

  ClientOptions options;
  options.bearer_token = "s3cret-admin";
  auto admin = Client::Create(server.unix_target(), options);
  REQUIRE(admin->LoadModel("m", model).ok());
  CHECK(admin->Embed(TextRequest("m")).ok());
  CHECK(CodeOf(anonymous->UnloadModel("m").status()) == absl::StatusCode::kUnauthenticated);
  REQUIRE(admin->UnloadModel("m").ok());
}

TEST_CASE("two loaded models both serve under concurrent load from both: neither starves") {
  TempDir tmp;
  const std::string a = CopyModel(tmp.Sub("a"));
  const std::string b = CopyModel(tmp.Sub("b"));
  ServerProcess server({"--model", "a=" + a, "--model", "b=" + b, "--max-batch-size", "4"});
  REQUIRE(server.healthy());

  constexpr int kThreadsPerModel = 3;
  constexpr int kCallsPerThread = 25;
  std::mutex mu;
  std::vector<char> order;  // completion order: 'a' or 'b'
  std::atomic<int> failures{0};
  std::atomic<int> started{0};
  std::vector<std::thread> threads;
  for (const char model : {'a', 'b'}) {
    for (int t = 0; t < kThreadsPerModel; ++t) {
      threads.emplace_back([&, model] {
        auto client = Client::Create(server.unix_target());
        const v1::EmbedRequest request = TextRequest(std::string(1, model), 4);
        if (!client->Embed(request).ok()) ++failures;  // connected and warm
        ++started;
        while (started.load() < 2 * kThreadsPerModel) std::this_thread::yield();
        for (int i = 0; i < kCallsPerThread; ++i) {
          if (!client->Embed(request).ok()) {
            ++failures;
            continue;
          }
          std::lock_guard<std::mutex> lock(mu);
          order.push_back(model);
        }
      });
    }
  }
  for (std::thread& t : threads) t.join();
  CHECK(failures.load() == 0);
  REQUIRE(order.size() == 2u * kThreadsPerModel * kCallsPerThread);
  // When the first model had completed all its calls, the other had completed some too:
  // the executor served both rather than one after the other.
  const int total = kThreadsPerModel * kCallsPerThread;
  int done_a = 0, done_b = 0;
  size_t first_finished_at = order.size();
  for (size_t i = 0; i < order.size(); ++i) {
    (order[i] == 'a' ? done_a : done_b)++;
    if (done_a == total || done_b == total) {
      first_finished_at = i;
      break;
    }
  }
  const int other = done_a == total ? done_b : done_a;
  INFO("the first model finished at completion " << first_finished_at << "; the other had "
                                                 << other << " of " << total);
  CHECK(other > 0);
  // And the completions interleave.
  int switches = 0;
  for (size_t i = 1; i < order.size(); ++i) switches += order[i] != order[i - 1];
  CHECK(switches >= 2);
}
