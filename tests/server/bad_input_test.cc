// Hostile and broken input, one row each, against the real server with the demo CLIP
// model: every row gets the expected gRPC status with a message naming the field (and the
// limit where there is one), and the server keeps answering good calls afterwards. The same
// table over HTTP gets the same answers, each with its HTTP status.
#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"

#include "tests/test_util.h"
#include "client/embedserve_client.h"
#include "common/tensor_codec.h"
#include "tests/server/server_process.h"

using embedserve::client::Client;
using embedserve::testing::ServerProcess;
namespace v1 = embedserve::v1;

using embedserve::testing::Cosine;
using embedserve::testing::Slurp;

namespace {

const std::string kImages = std::string(EMBEDSERVE_TEST_DATA) + "/openclip-reference/images/";

void PutU32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

void PngChunk(std::string& png, const char* type, const std::string& data) {
  PutU32(png, static_cast<uint32_t>(data.size()));
  std::string body = std::string(type, 4) + data;
  png += body;
  PutU32(png, static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(body.data()), body.size())));
}

// A valid PNG header claiming width x height (8-bit RGB) with a short zlib stream of zero
// rows: a few KB that would decode to gigabytes.
std::string BombPng(uint32_t width, uint32_t height) {
  std::string png = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  PutU32(ihdr, width);
  PutU32(ihdr, height);
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);
  PngChunk(png, "IHDR", ihdr);
  std::string raw(64 * 1024, '\0');
  uLongf size = compressBound(raw.size());
  std::string compressed(size, '\0');
  compress(reinterpret_cast<Bytef*>(compressed.data()), &size,
           reinterpret_cast<const Bytef*>(raw.data()), raw.size());
  compressed.resize(size);
  PngChunk(png, "IDAT", compressed);
  PngChunk(png, "IEND", "");
  return png;
}

struct Row {
  std::string name;
  std::function<void(v1::EmbedRequest&)> build;
  grpc::StatusCode code;
  std::vector<std::string> message_parts;
};


// The table: each row builds a request from the demo model's valid one.
std::vector<Row> BadEmbedRows(const std::string& jpeg, const std::string& png) {
  return {
      {"zero-byte image", [](auto& r) { r.add_inputs()->set_image(""); },
       grpc::StatusCode::INVALID_ARGUMENT, {"inputs[0]", "empty"}},
      {"truncated JPEG", [jpeg, png](auto& r) { r.add_inputs()->set_image(jpeg.substr(0, jpeg.size() / 3)); },
       grpc::StatusCode::INVALID_ARGUMENT, {"inputs[0]"}},
      {"truncated PNG", [jpeg, png](auto& r) { r.add_inputs()->set_image(png.substr(0, png.size() / 2)); },
       grpc::StatusCode::INVALID_ARGUMENT, {"inputs[0]"}},
      {"corrupt bytes after a JPEG header",
       [jpeg, png](auto& r) {
         std::string broken = jpeg;
         for (size_t i = 600; i < broken.size(); i += 7) broken[i] = static_cast<char>(0xff);
         r.add_inputs()->set_text("ok");
         r.add_inputs()->set_image(broken);
       },
       grpc::StatusCode::INVALID_ARGUMENT, {"inputs[1]"}},
      {"not an image at all", [](auto& r) { r.add_inputs()->set_image("hello, I am text"); },
       grpc::StatusCode::INVALID_ARGUMENT, {"inputs[0]"}},
      {"a 50000 x 50000 PNG bomb of a few KB", [](auto& r) { r.add_inputs()->set_image(BombPng(50000, 50000)); },
       grpc::StatusCode::INVALID_ARGUMENT, {"inputs[0]", "50000", "pixel"}},
      {"a PNG that lies about its size", [](auto& r) { r.add_inputs()->set_image(BombPng(4000, 3000)); },
       grpc::StatusCode::INVALID_ARGUMENT, {"inputs[0]"}},
      // proto3 string fields must be UTF-8: protobuf refuses the message (clients in Python
      // or JSON cannot even build one). It used to be gRPC's UNIMPLEMENTED with no message.
      {"invalid UTF-8", [](auto& r) { r.add_inputs()->set_text(std::string("ab\xff\xfe", 4)); },
       grpc::StatusCode::INVALID_ARGUMENT, {"inputs[0].text", "not valid UTF-8"}},
      {"a UTF-16 surrogate encoded in UTF-8, in the third input",
       [](auto& r) {
         r.add_inputs()->set_text("fine");
         r.add_inputs()->set_image("not looked at");
         r.add_inputs()->set_text(std::string("\xed\xa0\x80", 3));
       },
       grpc::StatusCode::INVALID_ARGUMENT, {"inputs[2].text", "not valid UTF-8"}},
      {"a 10 MB text", [](auto& r) { r.add_inputs()->set_text(std::string(10 << 20, 'a')); },
       grpc::StatusCode::INVALID_ARGUMENT, {"inputs[0]", "1048576", "--max-text-bytes"}},
      {"100,000 inputs",
       [](auto& r) { for (int i = 0; i < 100000; ++i) r.add_inputs()->set_text("a"); },
       grpc::StatusCode::INVALID_ARGUMENT, {"inputs", "100000", "1024", "--max-inputs"}},
      {"an input with no content", [](auto& r) { r.add_inputs(); },
       grpc::StatusCode::INVALID_ARGUMENT, {"inputs[0]", "no content"}},
      {"a long text with truncation off",
       [](auto& r) {
         std::string text;
         for (int i = 0; i < 200; ++i) text += "word ";
         r.add_inputs()->set_text(text);
         r.mutable_options()->set_truncation(v1::TRUNCATION_ERROR);
       },
       grpc::StatusCode::INVALID_ARGUMENT, {"inputs[0]", "77"}},
      {"an unknown model", [](auto& r) { r.set_model("nope"); r.add_inputs()->set_text("a"); },
       grpc::StatusCode::NOT_FOUND, {"nope", "demo"}},
      {"a message over the size limit",
       [](auto& r) { r.add_inputs()->set_image(std::string(33 << 20, 'x')); },
       grpc::StatusCode::RESOURCE_EXHAUSTED, {}},
  };
}

}  // namespace

TEST_CASE("every kind of bad input gets its status, and the server keeps serving") {
  ServerProcess server({"--model", "demo=" + std::string(EMBEDSERVE_TEST_DATA) +
                                       "/openclip-reference/model",
                        "--max-message-bytes", std::to_string(32 << 20)});
  REQUIRE(server.healthy());
  auto client = Client::Create(server.unix_target());
  const std::string jpeg = Slurp(kImages + "photo_800x600.jpg");
  const std::string png = Slurp(kImages + "landscape_640x480.png");

  const std::vector<Row> rows = BadEmbedRows(jpeg, png);
  for (const Row& row : rows) {
    DYNAMIC_SECTION(row.name) {
      v1::EmbedRequest request;
      request.set_model("demo");
      row.build(request);
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      v1::EmbedResponse response;
      grpc::Status status = client->embed_stub().Embed(&context, request, &response);
      CHECK(status.error_code() == row.code);
      for (const std::string& part : row.message_parts) {
        CHECK_THAT(status.error_message(), Catch::Contains(part));
      }
    }
  }

  SECTION("a string that is not UTF-8 is named in every method and in a stream's message") {
    const std::string latin1("caf\xe9", 4);
    v1::RerankRequest rerank;
    rerank.set_model("demo");
    rerank.mutable_query()->set_text("a dog");
    rerank.add_candidates()->set_text("a cat");
    rerank.add_candidates()->set_text(latin1);
    const absl::Status reranked = client->Rerank(rerank).status();
    CHECK(reranked.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(reranked.message()),
               Catch::StartsWith("candidates[1].text: not valid UTF-8"));
    v1::ClassifyRequest classify;
    classify.set_model("demo");
    classify.add_inputs()->set_text("a dog");
    classify.add_labels("dog");
    classify.add_labels(latin1);
    const absl::Status classified = client->Classify(classify).status();
    CHECK(classified.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(classified.message()), Catch::StartsWith("labels[1]: not valid UTF-8"));
    v1::TokenizeRequest tokenize;
    tokenize.set_model(latin1);
    tokenize.add_texts("a dog");
    const absl::Status tokenized = client->Tokenize(tokenize).status();
    CHECK(tokenized.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(tokenized.message()), Catch::StartsWith("model: not valid UTF-8"));

    // In a stream the message is answered with its error (its id could not be read, so the
    // answer's is empty; answers keep the order of messages) and the stream goes on.
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto stream = client->embed_stub().EmbedStream(&context);
    v1::EmbedStreamRequest message;
    message.set_id("1");
    message.set_model("demo");
    message.add_inputs()->set_text(latin1);
    REQUIRE(stream->Write(message));
    v1::EmbedStreamResponse answer;
    REQUIRE(stream->Read(&answer));
    CHECK(answer.id().empty());
    CHECK(answer.error().code() == static_cast<int>(absl::StatusCode::kInvalidArgument));
    CHECK_THAT(answer.error().message(), Catch::StartsWith("inputs[0].text: not valid UTF-8"));
    message.set_id("2");
    message.mutable_inputs(0)->set_text("caf\xc3\xa9");
    REQUIRE(stream->Write(message));
    REQUIRE(stream->Read(&answer));
    CHECK(answer.id() == "2");
    CHECK(answer.embeddings_size() == 1);
    stream->WritesDone();
    CHECK(stream->Finish().ok());
  }

  SECTION("priority: the request field, else the metadata; a bad value of either is named") {
    auto embed = [&](std::function<void(v1::EmbedRequest&)> build, const char* metadata,
                     v1::EmbedResponse* response) {
      v1::EmbedRequest request;
      request.set_model("demo");
      request.add_inputs()->set_text("a diagram of a bicycle");
      build(request);
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      if (metadata != nullptr) context.AddMetadata("embedserve-priority", metadata);
      return client->embed_stub().Embed(&context, request, response);
    };
    v1::EmbedResponse plain, interactive, bulk, field_wins;
    REQUIRE(embed([](auto&) {}, nullptr, &plain).ok());
    REQUIRE(embed([](auto& r) { r.mutable_options()->set_priority(v1::PRIORITY_INTERACTIVE); },
                  nullptr, &interactive).ok());
    REQUIRE(embed([](auto&) {}, "Bulk", &bulk).ok());  // case-insensitive
    // A field that is set wins: the metadata is not read.
    REQUIRE(embed([](auto& r) { r.mutable_options()->set_priority(v1::PRIORITY_BULK); },
                  "urgent", &field_wins).ok());
    // The class changes when a call runs, never what it computes.
    for (const v1::EmbedResponse* other : {&interactive, &bulk, &field_wins}) {
      REQUIRE(other->embeddings_size() == 1);
      const auto& got = other->embeddings(0).vector().values();
      const auto& want = plain.embeddings(0).vector().values();
      CHECK(std::vector<float>(got.begin(), got.end()) ==
            std::vector<float>(want.begin(), want.end()));
      CHECK(!want.empty());
    }
    v1::EmbedResponse unused;
    grpc::Status bad_metadata = embed([](auto&) {}, "urgent", &unused);
    CHECK(bad_metadata.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(bad_metadata.error_message(), Catch::Contains("embedserve-priority"));
    CHECK_THAT(bad_metadata.error_message(), Catch::Contains("'urgent'"));
    grpc::Status long_metadata = embed([](auto&) {}, std::string(4000, 'x').c_str(), &unused);
    CHECK(long_metadata.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(long_metadata.error_message().size() < 300);  // the value is cut, not echoed whole
    grpc::Status bad_field = embed(
        [](auto& r) { r.mutable_options()->set_priority(static_cast<v1::Priority>(42)); },
        nullptr, &unused);
    CHECK(bad_field.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(bad_field.error_message(), Catch::StartsWith("options.priority: 42"));

    v1::RerankRequest rerank;
    rerank.set_model("demo");
    rerank.mutable_query()->set_text("a dog");
    rerank.add_candidates()->set_text("a cat");
    rerank.set_priority(v1::PRIORITY_INTERACTIVE);
    CHECK(client->Rerank(rerank).ok());
    rerank.set_priority(static_cast<v1::Priority>(7));
    const absl::Status bad_rerank = client->Rerank(rerank).status();
    CHECK(bad_rerank.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(bad_rerank.message()), Catch::StartsWith("priority: 7"));
    v1::ClassifyRequest classify;
    classify.set_model("demo");
    classify.add_inputs()->set_text("a dog");
    classify.add_labels("dog");
    classify.add_labels("cat");
    classify.set_priority(v1::PRIORITY_BULK);
    CHECK(client->Classify(classify).ok());
    classify.set_priority(static_cast<v1::Priority>(-1));
    const absl::Status bad_classify = client->Classify(classify).status();
    CHECK(bad_classify.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(bad_classify.message()), Catch::StartsWith("priority: -1"));
  }

  SECTION("odd but valid input is answered") {
    v1::EmbedRequest request;
    request.set_model("demo");
    request.add_inputs()->set_text("");
    request.add_inputs()->set_text("   \t\n ");
    request.add_inputs()->set_image(Slurp(kImages + "gray_640x480.png"));
    auto response = client->Embed(request);
    REQUIRE(response.ok());
    CHECK(response->embeddings_size() == 3);
  }

  SECTION("rerank inputs: bad embeddings and top_k") {
    auto rerank = [&](std::function<void(v1::RerankRequest&)> build) {
      v1::RerankRequest request;
      request.set_model("demo");
      request.mutable_query()->set_text("a dog");
      build(request);
      return client->Rerank(request).status();
    };
    auto wrong_dim = rerank([](auto& r) {
      auto* t = r.add_candidates()->mutable_embedding();
      t->add_shape(3);
      for (int i = 0; i < 3; ++i) t->add_values(1);
    });
    CHECK(wrong_dim.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(wrong_dim.message()), Catch::Contains("candidates[0]") && Catch::Contains("32"));
    auto nan = rerank([](auto& r) {
      auto* t = r.add_candidates()->mutable_embedding();
      t->add_shape(32);
      for (int i = 0; i < 32; ++i) t->add_values(i == 5 ? std::numeric_limits<float>::quiet_NaN() : 1);
    });
    CHECK(nan.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(nan.message()), Catch::Contains("not finite"));
    auto multi = rerank([](auto& r) {
      auto* t = r.add_candidates()->mutable_embedding();
      t->add_shape(2);
      t->add_shape(32);
      for (int i = 0; i < 64; ++i) t->add_values(1);
    });
    CHECK(multi.code() == absl::StatusCode::kInvalidArgument);
    for (int k : {0, 3}) {
      auto top = rerank([k](auto& r) {
        r.add_candidates()->set_text("a");
        r.add_candidates()->set_text("b");
        r.set_top_k(k);
      });
      CHECK(top.code() == absl::StatusCode::kInvalidArgument);
      CHECK_THAT(std::string(top.message()), Catch::Contains("top_k"));
    }
  }

  SECTION("a 1 microsecond deadline is DEADLINE_EXCEEDED") {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::microseconds(1));
    v1::EmbedRequest request;
    request.set_model("demo");
    request.add_inputs()->set_image(jpeg);
    v1::EmbedResponse response;
    CHECK(client->embed_stub().Embed(&context, request, &response).error_code() ==
          grpc::StatusCode::DEADLINE_EXCEEDED);
  }

  SECTION("callers that cancel mid-batch or vanish do not disturb the others") {
    std::vector<std::thread> vanishing;
    for (int i = 0; i < 8; ++i) {
      vanishing.emplace_back([&] {
        grpc::ClientContext context;
        v1::EmbedRequest request;
        request.set_model("demo");
        for (int j = 0; j < 16; ++j) request.add_inputs()->set_image(jpeg);
        v1::EmbedResponse response;
        std::thread canceller([&] {
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
          context.TryCancel();
        });
        client->embed_stub().Embed(&context, request, &response);
        canceller.join();
      });
    }
    for (auto& t : vanishing) t.join();
  }

  // After all of it, good calls still work.
  v1::EmbedRequest good;
  good.set_model("demo");
  good.add_inputs()->set_text("a photo of a dog");
  good.add_inputs()->set_image(jpeg);
  auto response = client->Embed(good);
  INFO(response.status().ToString());
  REQUIRE(response.ok());
  CHECK(response->embeddings_size() == 2);
}

namespace {

// A JSON string literal of `text` as a careless client writes it: quotes, backslashes and
// control characters escaped, every other byte sent as it is (invalid UTF-8 included).
std::string RawJsonString(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
      out += escaped;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// The /v1/embeddings body for a gRPC EmbedRequest (texts as strings, images as {"image":
// data URL} items, TRUNCATION_ERROR as "truncate": false), or "" when HTTP cannot say it (an
// input with no content).
std::string HttpBodyFor(const v1::EmbedRequest& request) {
  std::string input;
  for (const v1::Input& item : request.inputs()) {
    if (!input.empty()) input += ',';
    if (item.has_text()) {
      input += RawJsonString(item.text());
    } else if (item.has_image()) {
      input += "{\"image\":\"data:application/octet-stream;base64," +
               absl::Base64Escape(item.image()) + "\"}";
    } else {
      return "";
    }
  }
  std::string body = "{\"model\":" + RawJsonString(request.model()) + ",\"input\":[" + input + "]";
  if (request.options().truncation() == v1::TRUNCATION_ERROR) body += ",\"truncate\":false";
  return body + "}";
}

// What the HTTP API answers for a row's gRPC code: the status each code maps to, and the
// message with the JSON's field names. A message over --max-message-bytes is 413. Invalid
// UTF-8 cannot be inside a JSON string at all: the body is refused before any field is read.
int HttpStatusOf(const Row& row) {
  if (row.name.find("UTF") != std::string::npos) return 400;
  switch (row.code) {
    case grpc::StatusCode::INVALID_ARGUMENT: return 400;
    case grpc::StatusCode::NOT_FOUND: return 404;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return 413;
    default: return 500;
  }
}
std::vector<std::string> HttpPartsOf(const Row& row) {
  if (row.name.find("UTF") != std::string::npos) return {"body", "not valid JSON"};
  std::vector<std::string> parts;
  for (std::string part : row.message_parts) {
    if (part.rfind("inputs", 0) == 0) part = "input" + part.substr(6);
    parts.push_back(part);
  }
  return parts;
}

}  // namespace

TEST_CASE("every bad input of the table gets the same answer over HTTP, with its HTTP status") {
  const int http_port = embedserve::testing::FreeTcpPort();
  ServerProcess server({"--model", "demo=" + std::string(EMBEDSERVE_TEST_DATA) +
                                       "/openclip-reference/model",
                        "--max-message-bytes", std::to_string(32 << 20), "--http-listen",
                        "127.0.0.1:" + std::to_string(http_port)});
  REQUIRE(server.healthy());
  httplib::Client http("127.0.0.1", http_port);
  http.set_read_timeout(60, 0);
  const std::string jpeg = Slurp(kImages + "photo_800x600.jpg");
  const std::string png = Slurp(kImages + "landscape_640x480.png");
  int sent = 0;
  for (const Row& row : BadEmbedRows(jpeg, png)) {
    v1::EmbedRequest request;
    request.set_model("demo");
    row.build(request);
    const std::string body = HttpBodyFor(request);
    if (body.empty()) continue;  // "an input with no content": JSON has no such item
    ++sent;
    INFO(row.name);
    auto result = http.Post("/v1/embeddings", body, "application/json");
    REQUIRE(result);
    CHECK(result->status == HttpStatusOf(row));
    const auto error = nlohmann::json::parse(result->body, nullptr, false);
    REQUIRE(error.is_object());
    REQUIRE(error.contains("error"));
    const std::string message = error["error"]["message"].get<std::string>();
    for (const std::string& part : HttpPartsOf(row)) CHECK_THAT(message, Catch::Contains(part));
    if (result->status == 400 && message.rfind("input", 0) == 0) {
      CHECK(error["error"]["param"] == "input");
    }
  }
  CHECK(sent >= 13);
  // After all of it, a good call is answered.
  auto good = http.Post("/v1/embeddings", R"({"model":"demo","input":"a dog"})", "application/json");
  REQUIRE(good);
  CHECK(good->status == 200);
}
