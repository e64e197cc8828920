// The real server binary, over a unix socket and TCP: health, models, error statuses,
// streaming order, socket handling and graceful shutdown.
#include <signal.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <catch2/catch.hpp>
#include <grpcpp/grpcpp.h>

#include "client/embedserve_client.h"
#include "tests/server/server_process.h"

using embedserve::client::Client;
using embedserve::testing::ServerProcess;
namespace v1 = embedserve::v1;

namespace {

// A directory that looks like no model family at all.
std::string NotAModelDir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/embedserve-notamodel-XXXXXX";
    return std::string(mkdtemp(tmpl));
  }();
  return dir;
}

v1::EmbedRequest TextRequest(const std::string& model, const std::string& text) {
  v1::EmbedRequest request;
  request.set_model(model);
  request.add_inputs()->set_text(text);
  return request;
}

}  // namespace

TEST_CASE("the server answers health, models and error statuses on both transports") {
  ServerProcess server({"--model", "broken=" + NotAModelDir(), "--continue-on-model-failure",
                        "--max-message-bytes", "1048576"});
  REQUIRE(server.healthy());

  for (const std::string& target : {server.unix_target(), server.tcp_target()}) {
    INFO("target " << target);
    auto client = Client::Create(target);

    SECTION("health is SERVING for the server and NOT_SERVING for a failed model") {
      auto overall = client->Health("");
      REQUIRE(overall.ok());
      CHECK(*overall == grpc::health::v1::HealthCheckResponse::SERVING);
      auto broken = client->Health("broken");
      REQUIRE(broken.ok());
      CHECK(*broken == grpc::health::v1::HealthCheckResponse::NOT_SERVING);
      auto unknown = client->Health("no-such-service");
      CHECK(unknown.status().code() == absl::StatusCode::kNotFound);
    }

    SECTION("ListModels reports the failed model with its reason") {
      auto models = client->ListModels();
      REQUIRE(models.ok());
      REQUIRE(models->models_size() == 1);
      const v1::ModelInfo& info = models->models(0);
      CHECK(info.name() == "broken");
      CHECK(info.state() == v1::MODEL_STATE_FAILED);
      CHECK_THAT(info.state_message(), Catch::Contains("neither open_clip_config.json"));
      CHECK(client->GetModel("nope").status().code() == absl::StatusCode::kNotFound);
    }

    SECTION("an unknown model is NOT_FOUND and names the models there are") {
      auto response = client->Embed(TextRequest("nope", "a dog"));
      CHECK(response.status().code() == absl::StatusCode::kNotFound);
      CHECK_THAT(std::string(response.status().message()), Catch::Contains("broken"));
    }

    SECTION("an empty request is INVALID_ARGUMENT naming the field") {
      auto response = client->Embed(v1::EmbedRequest());
      CHECK(response.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK_THAT(std::string(response.status().message()), Catch::Contains("model"));
      v1::TokenizeRequest tokenize;
      CHECK(client->Tokenize(tokenize).status().code() == absl::StatusCode::kInvalidArgument);
    }

    SECTION("a model that failed to load is UNAVAILABLE with the reason") {
      auto response = client->Embed(TextRequest("broken", "a dog"));
      CHECK(response.status().code() == absl::StatusCode::kUnavailable);
      CHECK_THAT(std::string(response.status().message()), Catch::Contains("failed to load"));
    }

    SECTION("a message over --max-message-bytes is RESOURCE_EXHAUSTED") {
      v1::EmbedRequest request;
      request.set_model("broken");
      request.add_inputs()->set_image(std::string(2 << 20, 'x'));
      auto response = client->Embed(request);
      CHECK(response.status().code() == absl::StatusCode::kResourceExhausted);
    }
  }
}

TEST_CASE("a unix socket is created with mode 0660, a stale one replaced, and removed on exit") {
  char tmpl[] = "/tmp/embedserve-sock-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string path = dir + "/s.sock";
  {
    // A stale socket file: bound once, nobody listening.
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path.c_str());
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    close(fd);
    REQUIRE(std::filesystem::exists(path));
  }
  ServerProcess server({"--listen", "unix:" + path});
  REQUIRE(server.healthy());
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0660);
  auto client = Client::Create("unix:" + path);
  CHECK(client->ListModels().ok());

  SECTION("a second server on the same live socket refuses to start") {
    ServerProcess second({"--listen", "unix:" + path}, 10);
    CHECK_FALSE(second.healthy());
    CHECK(second.WaitExit() == 1);
    CHECK(std::filesystem::exists(path));  // the live socket was left alone
  }
  CHECK(server.StopWith(SIGTERM) == 0);
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK_FALSE(std::filesystem::exists(server.socket_path()));
  std::filesystem::remove_all(dir);
}

TEST_CASE("a path that is not a socket is never replaced") {
  char tmpl[] = "/tmp/embedserve-file-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string path = dir + "/precious.txt";
  std::ofstream(path) << "keep me";
  ServerProcess server({"--listen", "unix:" + path}, 10);
  CHECK_FALSE(server.healthy());
  CHECK(server.WaitExit() == 1);
  std::ifstream in(path);
  std::string content;
  std::getline(in, content);
  CHECK(content == "keep me");
  std::filesystem::remove_all(dir);
}

TEST_CASE("EmbedStream answers every message in order and keeps going after errors") {
  ServerProcess server({});
  REQUIRE(server.healthy());
  auto client = Client::Create(server.unix_target());
  grpc::ClientContext context;
  auto stream = client->embed_stub().EmbedStream(&context);
  for (int i = 0; i < 20; ++i) {
    v1::EmbedStreamRequest request;
    request.set_id("m" + std::to_string(i));
    request.set_model(i % 2 == 0 ? "nope" : "");
    request.add_inputs()->set_text("x");
    REQUIRE(stream->Write(request));
  }
  stream->WritesDone();
  for (int i = 0; i < 20; ++i) {
    v1::EmbedStreamResponse response;
    REQUIRE(stream->Read(&response));
    CHECK(response.id() == "m" + std::to_string(i));
    CHECK(response.error().code() ==
          (i % 2 == 0 ? grpc::StatusCode::NOT_FOUND : grpc::StatusCode::INVALID_ARGUMENT));
  }
  v1::EmbedStreamResponse extra;
  CHECK_FALSE(stream->Read(&extra));
  CHECK(stream->Finish().ok());
}

TEST_CASE("SIGTERM lets an in-flight call complete, then the server exits 0 and removes its socket") {
  ServerProcess server({"--drain-timeout-s", "20"});
  REQUIRE(server.healthy());
  auto client = Client::Create(server.unix_target());
  grpc::ClientContext context;
  auto stream = client->embed_stub().EmbedStream(&context);
  v1::EmbedStreamRequest request;
  request.set_id("before");
  request.set_model("nope");
  request.add_inputs()->set_text("x");
  REQUIRE(stream->Write(request));
  v1::EmbedStreamResponse response;
  REQUIRE(stream->Read(&response));
  CHECK(response.id() == "before");

  // The call is still open when the drain starts; it keeps working until it ends.
  kill(server.pid(), SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  request.set_id("during-drain");
  REQUIRE(stream->Write(request));
  REQUIRE(stream->Read(&response));
  CHECK(response.id() == "during-drain");
  stream->WritesDone();
  CHECK(stream->Finish().ok());

  CHECK(server.WaitExit(30) == 0);
  CHECK_FALSE(std::filesystem::exists(server.socket_path()));
}

namespace {


}  // namespace

TEST_CASE("Prometheus metrics count calls by method, model and code") {
  const int metrics_port = embedserve::testing::FreeTcpPort();
  ServerProcess server({"--metrics-listen", "127.0.0.1:" + std::to_string(metrics_port)});
  REQUIRE(server.healthy());
  auto client = Client::Create(server.unix_target());
  for (int i = 0; i < 3; ++i) CHECK_FALSE(client->Embed(TextRequest("nope", "x")).ok());
  CHECK_FALSE(client->Tokenize(v1::TokenizeRequest()).ok());
  CHECK(client->GetModel("nope").status().code() == absl::StatusCode::kNotFound);
  const std::string page = embedserve::testing::HttpGetLocalContaining(
      metrics_port, "/metrics",
      {"embedserve_requests_total{method=\"Embed\",model=\"unknown\",code=\"NOT_FOUND\"} 3",
       "embedserve_requests_total{method=\"Tokenize\",model=\"\",code=\"INVALID_ARGUMENT\"} 1"});
  // GetModel records its real outcome (it used to count NOT_FOUND answers as OK).
  CHECK_THAT(page, Catch::Contains(
      "embedserve_requests_total{method=\"GetModel\",model=\"unknown\",code=\"NOT_FOUND\"} 1"));
  CHECK_THAT(page, Catch::StartsWith("HTTP/1.1 200 OK"));
  // A name the server does not serve is counted as "unknown" (labels stay a bounded set).
  CHECK_THAT(page, Catch::Contains(
      "embedserve_requests_total{method=\"Embed\",model=\"unknown\",code=\"NOT_FOUND\"} 3"));
  CHECK_THAT(page, Catch::Contains(
      "embedserve_requests_total{method=\"Tokenize\",model=\"\",code=\"INVALID_ARGUMENT\"} 1"));
  CHECK_THAT(page, Catch::Contains("# TYPE embedserve_request_seconds histogram"));
  CHECK_THAT(page, Catch::Contains(
      "embedserve_request_seconds_count{method=\"Embed\",model=\"unknown\"} 3"));
  CHECK_THAT(page, !Catch::Contains("nope"));
  CHECK_THAT(embedserve::testing::HttpGetLocal(metrics_port, "/other"), Catch::StartsWith("HTTP/1.1 404"));
}

TEST_CASE("idle connections to /metrics do not hold up a scrape") {
  // Issue 19: one connection at a time with a 2 s wait made 64 idle connections time a
  // scrape out. Now idle connections wait on a pool with a short read timeout.
  const int metrics_port = embedserve::testing::FreeTcpPort();
  ServerProcess server({"--metrics-listen", "127.0.0.1:" + std::to_string(metrics_port)});
  REQUIRE(server.healthy());
  std::vector<int> idle;
  for (int i = 0; i < 64; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(metrics_port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    idle.push_back(fd);  // connected, sends nothing
  }
  CHECK_THAT(embedserve::testing::HttpGetLocal(metrics_port, "/metrics"), Catch::StartsWith("HTTP/1.1 200 OK"));
  // A request head over the limit is refused, not buffered without end.
  CHECK_THAT(embedserve::testing::HttpGetLocal(metrics_port, "/metrics?" + std::string(20000, 'a')),
             Catch::StartsWith("HTTP/1.1 414"));
  for (const int fd : idle) close(fd);
}

namespace {

// How many series of embedserve_requests_total a /metrics page holds.
int RequestSeries(const std::string& page) {
  int n = 0;
  for (size_t at = page.find("\nembedserve_requests_total{"); at != std::string::npos;
       at = page.find("\nembedserve_requests_total{", at + 1)) {
    ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("unknown model names cannot grow the metrics or the log with or without auth") {
  char tmpl[] = "/tmp/embedserve-labels-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  std::ofstream(dir + "/tokens") << "tok\n";
  const int metrics_port = embedserve::testing::FreeTcpPort();
  for (const bool with_auth : {false, true}) {
    DYNAMIC_SECTION((with_auth ? "with" : "without") << " --auth-token-file") {
      std::vector<std::string> args = {
          "--metrics-listen", "127.0.0.1:" + std::to_string(metrics_port), "--model",
          "demo=" + std::string(EMBEDSERVE_TEST_DATA) + "/openclip-reference/model"};
      if (with_auth) {
        args.push_back("--auth-token-file");
        args.push_back(dir + "/tokens");
      }
      ServerProcess server(args);
      REQUIRE(server.healthy());
      auto client = Client::Create(server.unix_target());
      CHECK_FALSE(client->Embed(TextRequest("first-unknown", "a")).ok());
      const std::string before = embedserve::testing::HttpGetLocal(metrics_port, "/metrics");
      // 200 calls, each naming a different 10 KB model.
      for (int i = 0; i < 200; ++i) {
        const std::string name = std::to_string(i) + std::string(10000, 'x');
        auto answer = client->Embed(TextRequest(name, "a"));
        CHECK(answer.status().code() == (with_auth ? absl::StatusCode::kUnauthenticated
                                                   : absl::StatusCode::kNotFound));
      }
      const std::string after = embedserve::testing::HttpGetLocal(metrics_port, "/metrics");
      CHECK(RequestSeries(after) <= RequestSeries(before) + 1);
      CHECK(after.size() < before.size() + 2000);
      CHECK(after.find("xxxxxxxxxx") == std::string::npos);
      CHECK_THAT(after, Catch::Contains("model=\"unknown\""));
      if (!with_auth) {
        // A 20,000-character unknown name: NOT_FOUND with a short message (it used to
        // overflow the metadata limit and arrive as RESOURCE_EXHAUSTED).
        auto long_name = client->Embed(TextRequest(std::string(20000, 'y'), "a"));
        CHECK(long_name.status().code() == absl::StatusCode::kNotFound);
        CHECK(long_name.status().message().size() < 600);
        CHECK_THAT(std::string(long_name.status().message()), Catch::Contains("(20000 bytes)"));
        // A served model keeps its own label.
        CHECK(client->Embed(TextRequest("demo", "a")).ok());
        const std::string served =
            "embedserve_requests_total{method=\"Embed\",model=\"demo\",code=\"OK\"} 1";
        CHECK_THAT(embedserve::testing::HttpGetLocalContaining(metrics_port, "/metrics", {served}),
                   Catch::Contains(served));
      }
    }
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("the per-client concurrency limit refuses a client's extra calls only") {
  ServerProcess server({"--max-concurrent-per-client", "1"});
  REQUIRE(server.healthy());
  auto client = Client::Create(server.unix_target());
  // An open stream holds the client's one slot.
  grpc::ClientContext stream_context;
  stream_context.AddMetadata("x-embedserve-client", "worker-a");
  auto stream = client->embed_stub().EmbedStream(&stream_context);
  v1::EmbedStreamRequest message;
  message.set_model("nope");
  message.add_inputs()->set_text("x");
  REQUIRE(stream->Write(message));
  v1::EmbedStreamResponse reply;
  REQUIRE(stream->Read(&reply));

  auto call_as = [&](const std::string& who) {
    grpc::ClientContext context;
    context.AddMetadata("x-embedserve-client", who);
    v1::EmbedResponse response;
    return client->embed_stub().Embed(&context, TextRequest("nope", "x"), &response);
  };
  grpc::Status refused = call_as("worker-a");
  CHECK(refused.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK_THAT(refused.error_message(), Catch::Contains("--max-concurrent-per-client"));
  CHECK(call_as("worker-b").error_code() == grpc::StatusCode::NOT_FOUND);  // admitted
  stream->WritesDone();
  CHECK(stream->Finish().ok());
  CHECK(call_as("worker-a").error_code() == grpc::StatusCode::NOT_FOUND);  // slot freed
}

// Issue 19, row 2: the drain deadline holds while a model load is stuck. The load here
// downloads from a hub endpoint that accepts connections and never answers (as a stalled
// proxy would): without a bound, SIGTERM waited for the download's own timeouts (a minute or
// more per attempt) and the process outlived its drain by far.
TEST_CASE("SIGTERM ends the process soon after the drain even while a model load is stuck") {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(listener >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(listen(listener, 16) == 0);
  socklen_t size = sizeof addr;
  REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &size) == 0);
  const int port = ntohs(addr.sin_port);
  // Connections are accepted by the kernel (backlog) and never read from or answered.
  const std::string cache = "/tmp/embedserve-stuck-load-" + std::to_string(getpid());
  std::filesystem::create_directories(cache);
  setenv("HF_ENDPOINT", ("http://127.0.0.1:" + std::to_string(port)).c_str(), 1);
  setenv("HF_HUB_CACHE", cache.c_str(), 1);
  unsetenv("HF_HUB_OFFLINE");
  {
    ServerProcess server({"--model", "stuck=hf:example/never-answers", "--drain-timeout-s", "1"},
                         /*startup_s=*/3);
    CHECK_FALSE(server.healthy());  // still loading: the download is stuck
    const auto start = std::chrono::steady_clock::now();
    const int code = server.StopWith(SIGTERM, /*timeout_s=*/45);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    INFO("exit code " << code << " after " << seconds << " s");
    CHECK(code == 1);         // ended by the exit bound, not SIGKILLed by the harness (-1)
    CHECK(seconds < 30);      // drain 1 s + the 10 s exit grace, with room for a slow machine
  }
  unsetenv("HF_ENDPOINT");
  unsetenv("HF_HUB_CACHE");
  close(listener);
  std::filesystem::remove_all(cache);
}
