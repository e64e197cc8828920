// The HTTP API (--http-listen) against the real server with the demo CLIP model: every route
// answers what gRPC answers for the same input, over TCP and a unix socket; bearer tokens;
// OpenAI error objects with their HTTP statuses; and the listener's bounds (body size, header
// flood, idle and slow connections).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "client/embedserve_client.h"
#include "common/tensor_codec.h"
#include "tests/server/server_process.h"
#include "tests/test_util.h"

using embedserve::client::Client;
using embedserve::testing::Cosine;
using embedserve::testing::FreeTcpPort;
using embedserve::testing::ServerProcess;
using embedserve::testing::Slurp;
using nlohmann::json;
namespace v1 = embedserve::v1;

namespace {

const std::string kModel = std::string(EMBEDSERVE_TEST_DATA) + "/openclip-reference/model";
const std::string kImages = std::string(EMBEDSERVE_TEST_DATA) + "/openclip-reference/images/";

std::vector<float> Floats(const json& array) {
  std::vector<float> out;
  for (const json& v : array) out.push_back(v.get<float>());
  return out;
}

std::vector<float> FromBase64(const std::string& text) {
  std::string bytes;
  REQUIRE(absl::Base64Unescape(text, &bytes));
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), out.size() * 4);
  return out;
}

std::vector<std::vector<float>> GrpcEmbeddings(Client& client, const v1::EmbedRequest& request) {
  auto response = client.Embed(request);
  REQUIRE(response.ok());
  std::vector<std::vector<float>> out;
  for (const auto& embedding : response->embeddings()) {
    auto decoded = embedserve::DecodeTensor(embedding.vector());
    REQUIRE(decoded.ok());
    out.push_back(decoded->values);
  }
  return out;
}

// Equal within float32 noise: a batch computed with other rows may differ in the last bits.
bool Close(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || a.empty()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::abs(a[i] - b[i]) > 1e-5f) return false;
  }
  return true;
}

json PostJson(httplib::Client& http, const std::string& path, const json& body, int expect,
              const httplib::Headers& headers = {}) {
  auto result = http.Post(path.c_str(), headers, body.dump(), "application/json");
  REQUIRE(result);
  INFO(result->body);
  REQUIRE(result->status == expect);
  CHECK(result->get_header_value("Content-Type") == "application/json");
  return json::parse(result->body);
}

// A raw TCP connection to 127.0.0.1:port.
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

// Reads until the peer closes or `timeout_s` passes; returns what came, and whether it closed.
std::pair<std::string, bool> ReadUntilClosed(int fd, double timeout_s) {
  std::string got;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(int(timeout_s * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    char buffer[4096];
    const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) return {got, true};
    got.append(buffer, static_cast<size_t>(n));
  }
  return {got, false};
}

}  // namespace

TEST_CASE("HTTP routes answer what gRPC answers, over TCP and a unix socket") {
  const int port = FreeTcpPort();
  const std::string unix_path = "/tmp/embedserve-http-test-" + std::to_string(getpid()) + ".sock";
  ServerProcess server({"--model", "demo=" + kModel, "--http-listen",
                        "127.0.0.1:" + std::to_string(port), "--http-listen", "unix:" + unix_path});
  REQUIRE(server.healthy());
  auto client = Client::Create(server.unix_target());
  httplib::Client http("127.0.0.1", port);
  http.set_read_timeout(60, 0);
  const std::vector<std::string> texts = {"a photo of a dog", "a diagram", ""};
  const std::string jpeg = Slurp(kImages + "photo_800x600.jpg");

  v1::EmbedRequest text_request;
  text_request.set_model("demo");
  for (const auto& t : texts) text_request.add_inputs()->set_text(t);
  const auto expected_texts = GrpcEmbeddings(*client, text_request);

  SECTION("embeddings of texts, as floats and as base64, with usage") {
    const json floats = PostJson(http, "/v1/embeddings", {{"model", "demo"}, {"input", texts}}, 200);
    const json packed = PostJson(
        http, "/v1/embeddings",
        {{"model", "demo"}, {"input", texts}, {"encoding_format", "base64"}}, 200);
    CHECK(floats["object"] == "list");
    CHECK(floats["model"] == "demo");
    REQUIRE(floats["data"].size() == texts.size());
    REQUIRE(packed["data"].size() == texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      CHECK(floats["data"][i]["index"] == i);
      CHECK(Close(Floats(floats["data"][i]["embedding"]), expected_texts[i]));
      CHECK(Close(FromBase64(packed["data"][i]["embedding"]), expected_texts[i]));
    }
    auto grpc_response = client->Embed(text_request);
    REQUIRE(grpc_response.ok());
    int tokens = 0;
    for (const auto& e : grpc_response->embeddings()) tokens += e.token_count();
    CHECK(tokens > 0);
    CHECK(floats["usage"]["prompt_tokens"] == tokens);
    CHECK(floats["usage"]["total_tokens"] == tokens);

    const json single = PostJson(http, "/v1/embeddings", {{"model", "demo"}, {"input", texts[0]}}, 200);
    CHECK(Close(Floats(single["data"][0]["embedding"]), expected_texts[0]));
  }

  SECTION("embeddings of images from base64 data URLs") {
    v1::EmbedRequest request;
    request.set_model("demo");
    request.add_inputs()->set_image(jpeg);
    const auto expected = GrpcEmbeddings(*client, request);
    const json out = PostJson(
        http, "/v1/embeddings",
        {{"model", "demo"},
         {"modality", "image"},
         {"input", {"data:image/jpeg;base64," + absl::Base64Escape(jpeg)}}},
        200);
    CHECK(Close(Floats(out["data"][0]["embedding"]), expected[0]));
    const json remote = PostJson(http, "/v1/embeddings",
                                 {{"model", "demo"}, {"modality", "image"},
                                  {"input", "http://127.0.0.1:1/a.jpg"}},
                                 400);
    CHECK_THAT(remote["error"]["message"].get<std::string>(), Catch::Contains("never fetched"));
  }

  SECTION("the same answers over the unix socket") {
    httplib::Client local(unix_path);
    local.set_address_family(AF_UNIX);
    const json out = PostJson(local, "/v1/embeddings", {{"model", "demo"}, {"input", texts}}, 200);
    for (size_t i = 0; i < texts.size(); ++i) {
      CHECK(Close(Floats(out["data"][i]["embedding"]), expected_texts[i]));
    }
    auto health = local.Get("/health");
    REQUIRE(health);
    CHECK(health->status == 200);
  }

  SECTION("rerank: the gRPC scores and order, top_n, documents") {
    v1::RerankRequest request;
    request.set_model("demo");
    request.mutable_query()->set_text("a dog");
    const std::vector<std::string> documents = {"a cat", "a dog", "a car", "a puppy"};
    for (const auto& d : documents) request.add_candidates()->set_text(d);
    request.set_top_k(3);
    auto expected = client->Rerank(request);
    REQUIRE(expected.ok());
    const json out = PostJson(http, "/v1/rerank",
                              {{"model", "demo"}, {"query", "a dog"}, {"documents", documents},
                               {"top_n", 3}, {"return_documents", true}},
                              200);
    REQUIRE(out["results"].size() == 3);
    for (int i = 0; i < 3; ++i) {
      const int index = expected->results(i).index();
      CHECK(out["results"][i]["index"] == index);
      CHECK(out["results"][i]["relevance_score"].get<float>() ==
            Approx(expected->results(i).score()).margin(1e-5));
      CHECK(out["results"][i]["document"]["text"] == documents[index]);
    }
  }

  SECTION("models, health, metrics; the calls are counted and logged as gRPC's") {
    auto models = http.Get("/v1/models");
    REQUIRE(models);
    REQUIRE(models->status == 200);
    const json list = json::parse(models->body);
    CHECK(list["object"] == "list");
    REQUIRE(list["data"].size() == 1);
    CHECK(list["data"][0]["id"] == "demo");
    CHECK(list["data"][0]["object"] == "model");
    CHECK(list["data"][0]["embedding_dim"] == 32);
    auto health = http.Get("/health");
    REQUIRE(health);
    CHECK(health->status == 200);
    PostJson(http, "/v1/embeddings", {{"model", "demo"}, {"input", "counted"}}, 200);
    auto metrics = http.Get("/metrics");
    REQUIRE(metrics);
    CHECK(metrics->status == 200);
    CHECK_THAT(metrics->body,
               Catch::Contains("embedserve_requests_total{method=\"Embed\",model=\"demo\",code=\"OK\"}"));
    CHECK_THAT(metrics->body, Catch::Contains("method=\"ListModels\""));
  }

  SECTION("the X-Embedserve-Priority header sets the call's class; a bad one is a 400") {
    const json interactive = PostJson(http, "/v1/embeddings", {{"model", "demo"}, {"input", texts}},
                                      200, {{"X-Embedserve-Priority", "interactive"}});
    REQUIRE(interactive["data"].size() == texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      CHECK(Close(Floats(interactive["data"][i]["embedding"]), expected_texts[i]));
    }
    const json reranked =
        PostJson(http, "/v1/rerank", {{"model", "demo"}, {"query", "q"}, {"documents", {"a", "b"}}},
                 200, {{"X-Embedserve-Priority", "bulk"}});
    CHECK(reranked["results"].size() == 2);
    const json bad = PostJson(http, "/v1/embeddings", {{"model", "demo"}, {"input", "a"}}, 400,
                              {{"X-Embedserve-Priority", "urgent"}});
    CHECK_THAT(bad["error"]["message"].get<std::string>(),
               Catch::Contains("X-Embedserve-Priority") && Catch::Contains("'urgent'"));
  }

  SECTION("errors are OpenAI error objects with the status of their gRPC code") {
    const json unknown = PostJson(http, "/v1/embeddings", {{"model", "nope"}, {"input", "a"}}, 404);
    CHECK(unknown["error"]["code"] == "not_found");
    CHECK_THAT(unknown["error"]["message"].get<std::string>(), Catch::Contains("nope"));
    const json long_text = PostJson(
        http, "/v1/embeddings",
        {{"model", "demo"}, {"input", {"ok", std::string(2 << 20, 'a')}}}, 400);
    CHECK_THAT(long_text["error"]["message"].get<std::string>(),
               Catch::Contains("input[1]") && Catch::Contains("--max-text-bytes"));
    CHECK(long_text["error"]["param"] == "input");
    const json dims = PostJson(
        http, "/v1/embeddings", {{"model", "demo"}, {"input", "a"}, {"dimensions", 16}}, 400);
    CHECK(dims["error"]["param"] == "dimensions");
    const json top = PostJson(http, "/v1/rerank",
                              {{"model", "demo"}, {"query", "q"}, {"documents", {"a"}}, {"top_n", 0}},
                              400);
    CHECK(top["error"]["param"] == "top_n");
    auto not_json = http.Post("/v1/embeddings", "{", "application/json");
    REQUIRE(not_json);
    CHECK(not_json->status == 400);
    auto no_route = http.Get("/v1/chat/completions");
    REQUIRE(no_route);
    CHECK(no_route->status == 404);
    CHECK(json::parse(no_route->body)["error"]["type"] == "not_found_error");
  }

  SECTION("SIGTERM: health turns 503 or the listener closes, and the unix socket goes") {
    REQUIRE(server.StopWith(SIGTERM) == 0);
    CHECK(access(unix_path.c_str(), F_OK) != 0);
  }
}

TEST_CASE("HTTP bearer tokens are the gRPC ones; /health stays open") {
  const std::string token_file = "/tmp/embedserve-http-token-" + std::to_string(getpid());
  std::ofstream(token_file) << "s3cret\n";
  const int port = FreeTcpPort();
  ServerProcess server({"--model", "demo=" + kModel, "--auth-token-file", token_file,
                        "--http-listen", "127.0.0.1:" + std::to_string(port)});
  REQUIRE(server.healthy());
  httplib::Client http("127.0.0.1", port);
  const json body = {{"model", "demo"}, {"input", "a"}};
  const json missing = PostJson(http, "/v1/embeddings", body, 401);
  CHECK(missing["error"]["type"] == "authentication_error");
  PostJson(http, "/v1/embeddings", body, 401, {{"Authorization", "Bearer wrong"}});
  PostJson(http, "/v1/embeddings", body, 200, {{"Authorization", "Bearer s3cret"}});
  auto models = http.Get("/v1/models");
  REQUIRE(models);
  CHECK(models->status == 401);
  auto health = http.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);
  std::remove(token_file.c_str());
}

TEST_CASE("the HTTP listener's bounds: body size, header flood, idle and slow clients") {
  const int port = FreeTcpPort();
  ServerProcess server({"--model", "demo=" + kModel, "--http-listen",
                        "127.0.0.1:" + std::to_string(port), "--http-max-body-bytes", "100000",
                        "--http-idle-timeout-s", "1", "--http-read-timeout-s", "2",
                        "--http-max-connections", "4"});
  REQUIRE(server.healthy());
  httplib::Client http("127.0.0.1", port);
  const json good = {{"model", "demo"}, {"input", "still serving"}};

  SECTION("a body over --http-max-body-bytes is 413, with an error naming the limit") {
    const json out = PostJson(http, "/v1/embeddings",
                              {{"model", "demo"}, {"input", std::string(200000, 'a')}}, 413);
    CHECK_THAT(out["error"]["message"].get<std::string>(), Catch::Contains("--http-max-body-bytes"));
  }
  SECTION("a megabyte of header lines is cut off, not buffered") {
    const int fd = Connect(port);
    std::string head = "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; i < 20000; ++i) head += "X-Flood-" + std::to_string(i) + ": aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    // The server stops reading at its head budget: the send may fail part-way.
    (void)send(fd, head.data(), head.size(), MSG_NOSIGNAL);
    const auto [answer, closed] = ReadUntilClosed(fd, 10);
    CHECK(closed);
    if (!answer.empty()) CHECK_THAT(answer, Catch::StartsWith("HTTP/1.1 400"));
    close(fd);
  }
  SECTION("idle connections are closed after the idle timeout and do not hold the workers") {
    std::vector<int> idle;
    for (int i = 0; i < 8; ++i) idle.push_back(Connect(port));  // twice the workers
    for (int fd : idle) {
      const auto [answer, closed] = ReadUntilClosed(fd, 15);
      CHECK(closed);
      CHECK(answer.empty());
      close(fd);
    }
  }
  SECTION("a request trickling in slower than the read timeout is cut off") {
    const int fd = Connect(port);
    const std::string head = "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n";
    REQUIRE(send(fd, head.data(), head.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(head.size()));
    bool closed = false;
    for (int i = 0; i < 100 && !closed; ++i) {  // a byte every 100 ms: 1000 bytes = 100 s
      if (send(fd, "a", 1, MSG_NOSIGNAL) != 1) closed = true;
      closed = closed || ReadUntilClosed(fd, 0.1).second;
    }
    CHECK(closed);  // the 2 s read timeout ended it, long before the body was complete
    close(fd);
  }
  // Whatever happened above, a good request is served.
  PostJson(http, "/v1/embeddings", good, 200);
}
