// Cross-encoder rerankers end to end: replicas of BAAI/bge-reranker-v2-m3, -large (safetensors
// and .bin), -base (.bin only) (XLM-R) and cross-encoder/ms-marco-MiniLM-L-6-v2 (BERT) in a
// fake Hugging Face cache, served by their real names (hf:ORG/REPO, offline), rerank with the
// scores of the independent PyTorch reference; sigmoid, top_k, truncation per candidate, and
// what a cross-encoder refuses.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "client/embedserve_client.h"
#include "server/models/cross_encoder/cross_encoder_model.h"
#include "server/models/cross_encoder/cross_encoder_random_checkpoint.h"
#include "tests/models/cross_encoder_reference.h"
#include "tests/server/server_process.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
namespace v1 = embedserve::v1;
using embedserve::client::Client;
using embedserve::testing::ServerProcess;
using namespace embedserve::models::cross_encoder;

namespace {

constexpr const char* kSnapshot = "0123456789abcdef0123456789abcdef01234567";

// Copies the files of `model_dir` into `cache` as huggingface_hub lays out `repo_id`:
// blobs/<name>, snapshots/<sha>/<file> as relative links to them, refs/main holding the sha.
void AddToHubCache(const std::string& cache, const std::string& repo_id,
                   const std::string& model_dir) {
  const size_t slash = repo_id.find('/');
  const fs::path repo = fs::path(cache) / ("models--" + repo_id.substr(0, slash) + "--" +
                                           repo_id.substr(slash + 1));
  fs::create_directories(repo / "blobs");
  fs::create_directories(repo / "refs");
  fs::create_directories(repo / "snapshots" / kSnapshot);
  int n = 0;
  for (const auto& entry : fs::directory_iterator(model_dir)) {
    const std::string blob = "blob" + std::to_string(n++);
    fs::copy_file(entry.path(), repo / "blobs" / blob);
    fs::create_symlink("../../blobs/" + blob,
                       repo / "snapshots" / kSnapshot / entry.path().filename());
  }
  std::ofstream(repo / "refs" / "main") << kSnapshot;
}

struct Replicas {
  std::string cache;
  std::string xlmr_dir;  // the files as written, for the in-process tokenizer and reference
  std::string bert_dir;
};

// `dir`'s model.safetensors as pytorch_model.bin, written by Debian's PyTorch
// (torch.save, as the hub's .bin files are); `keep_safetensors` false removes the original.
void AddTorchBin(const std::string& dir, bool keep_safetensors) {
  const std::string command = "/usr/bin/python3 " + std::string(EMBEDSERVE_SOURCE_DIR) +
                              "/tests/tools/safetensors_to_bin.py " + dir + "/model.safetensors " +
                              dir + "/pytorch_model.bin roberta.embeddings.position_ids";
  REQUIRE(std::system(command.c_str()) == 0);
  if (!keep_safetensors) fs::remove(dir + "/model.safetensors");
}

const Replicas& HubReplicas() {
  static const Replicas replicas = [] {
    Replicas r;
    const std::string root = embedserve::testing::FreshTempDir("cross_encoder_e2e");
    r.cache = root + "/hub";
    r.xlmr_dir = root + "/xlmr";
    r.bert_dir = root + "/bert";
    REQUIRE(WriteRandomCrossEncoder(TinyXlmRobertaConfig(), r.xlmr_dir, "F32", 11).ok());
    REQUIRE(WriteRandomCrossEncoder(TinyBertConfig(), r.bert_dir, "F32", 12).ok());
    AddToHubCache(r.cache, "BAAI/bge-reranker-v2-m3", r.xlmr_dir);
    AddToHubCache(r.cache, "cross-encoder/ms-marco-MiniLM-L-6-v2", r.bert_dir);
    // bge-reranker-large ships model.safetensors and pytorch_model.bin; bge-reranker-base's
    // main branch only pytorch_model.bin. Same weights as the v2-m3 replica, so same scores.
    const std::string both = root + "/large", bin_only = root + "/base";
    fs::copy(r.xlmr_dir, both);
    fs::copy(r.xlmr_dir, bin_only);
    AddTorchBin(both, /*keep_safetensors=*/true);
    AddTorchBin(bin_only, /*keep_safetensors=*/false);
    AddToHubCache(r.cache, "BAAI/bge-reranker-large", both);
    AddToHubCache(r.cache, "BAAI/bge-reranker-base", bin_only);
    return r;
  }();
  return replicas;
}

// The server reads the cache from its environment (inherited), offline.
bool PointAtHubReplicas() {
  const Replicas& r = HubReplicas();
  setenv("HF_HUB_CACHE", r.cache.c_str(), 1);
  setenv("HF_HUB_OFFLINE", "1", 1);
  return true;
}

ServerProcess& RerankerServer() {
  static const bool pointed = PointAtHubReplicas();
  (void)pointed;
  static ServerProcess server({"--model", "bge=hf:BAAI/bge-reranker-v2-m3", "--model",
                               "minilm=hf:cross-encoder/ms-marco-MiniLM-L-6-v2", "--model",
                               "large=hf:BAAI/bge-reranker-large", "--model",
                               "base=hf:BAAI/bge-reranker-base"});
  return server;
}

std::string Words(const std::string& word, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += (i ? " " : "") + word;
  return s;
}

const std::string kQuery = "what is a panda";
const std::vector<std::string>& Candidates() {
  static const std::vector<std::string> candidates = {
      "hi",
      "the giant panda is a bear species endemic to china",
      "pandas eat bamboo",
      Words("bamboo", 700),  // over 512 tokens: cut to fit the pair
      "a bear",
  };
  return candidates;
}

v1::RerankRequest Request(const std::string& model) {
  v1::RerankRequest request;
  request.set_model(model);
  request.mutable_query()->set_text(kQuery);
  for (const std::string& c : Candidates()) request.add_candidates()->set_text(c);
  return request;
}

// The reference logit of every candidate, from the ids the family's own tokenizer gives
// the pair (the tokenizers are checked against real libraries in tests/tokenizers).
std::vector<double> ReferenceLogits(const std::string& dir) {
  embedserve::models::RuntimeOptions options;
  options.device = "cpu";
  options.dtype = "float32";
  auto model = LoadCrossEncoder(dir, options);
  REQUIRE(model.ok());
  std::vector<embedserve::models::TextInput> pairs;
  for (const std::string& c : Candidates()) {
    auto pair = (*model)->PreparePair(kQuery, c, /*truncate=*/true);
    REQUIRE(pair.ok());
    pairs.push_back(*std::move(pair));
  }
  return embedserve::testing::RunCrossEncoderReference(dir, pairs)["single"]
      .get<std::vector<double>>();
}

// The response's scores back in candidate order.
std::vector<float> InCandidateOrder(const v1::RerankResponse& response) {
  std::vector<float> scores(Candidates().size(), NAN);
  for (const v1::RerankResult& r : response.results()) scores.at(r.index()) = r.score();
  return scores;
}

}  // namespace

TEST_CASE("hub replicas load by their real names and rerank with the reference's logits") {
  ServerProcess& server = RerankerServer();
  REQUIRE(server.healthy());
  auto client = Client::Create(server.unix_target());
  const std::string& xlmr = HubReplicas().xlmr_dir;
  for (const auto& [name, dir] : {std::pair<std::string, std::string>{"bge", xlmr},
                                  {"minilm", HubReplicas().bert_dir},
                                  {"large", xlmr},
                                  {"base", xlmr}}) {
    INFO("model " << name);
    auto response = client->Rerank(Request(name));
    INFO(response.status().ToString());
    REQUIRE(response.ok());
    CHECK(response->scoring() == "cross_encoder");
    REQUIRE(response->results_size() == static_cast<int>(Candidates().size()));
    // Best first, ties in candidate order.
    for (int i = 1; i < response->results_size(); ++i) {
      CHECK(response->results(i - 1).score() >= response->results(i).score());
    }
    embedserve::testing::CheckCloseToReference(InCandidateOrder(*response), ReferenceLogits(dir));
    // Only the 700-word candidate was cut.
    for (const v1::RerankResult& r : response->results()) {
      CHECK(r.truncated() == (r.index() == 3));
    }
  }
}

TEST_CASE("sigmoid maps each logit into (0, 1); top_k keeps the best") {
  ServerProcess& server = RerankerServer();
  REQUIRE(server.healthy());
  auto client = Client::Create(server.unix_target());
  auto raw = client->Rerank(Request("bge"));
  REQUIRE(raw.ok());
  v1::RerankRequest request = Request("bge");
  request.set_sigmoid(true);
  request.set_top_k(2);
  auto mapped = client->Rerank(request);
  REQUIRE(mapped.ok());
  REQUIRE(mapped->results_size() == 2);
  for (int i = 0; i < 2; ++i) {
    const v1::RerankResult& best = raw->results(i);
    CHECK(mapped->results(i).index() == best.index());
    CHECK(mapped->results(i).score() ==
          Approx(1.0 / (1.0 + std::exp(-static_cast<double>(best.score())))).epsilon(1e-6));
  }
}

TEST_CASE("a cross-encoder refuses what it cannot score, naming why") {
  ServerProcess& server = RerankerServer();
  REQUIRE(server.healthy());
  auto client = Client::Create(server.unix_target());

  v1::EmbedRequest embed;
  embed.set_model("bge");
  embed.add_inputs()->set_text("a panda");
  auto embedded = client->Embed(embed);
  CHECK(embedded.status().code() == absl::StatusCode::kUnimplemented);
  CHECK_THAT(std::string(embedded.status().message()), Catch::Contains("call Rerank"));

  v1::RerankRequest image = Request("bge");
  image.mutable_candidates(1)->set_image("not a text");
  auto refused = client->Rerank(image);
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(refused.status().message()),
             Catch::Contains("candidates[1]: model 'bge' is a cross-encoder"));

  v1::RerankRequest strict = Request("minilm");
  strict.set_truncation(v1::TRUNCATION_ERROR);
  auto too_long = client->Rerank(strict);
  CHECK(too_long.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(too_long.status().message()), Catch::StartsWith("candidates[3]: "));

  v1::ClassifyRequest classify;
  classify.set_model("bge");
  classify.add_inputs()->set_text("a panda");
  classify.add_labels("bear");
  classify.add_labels("cat");
  CHECK(client->Classify(classify).status().code() == absl::StatusCode::kUnimplemented);

  // ModelService describes it.
  auto info = client->GetModel("minilm");
  REQUIRE(info.ok());
  CHECK(info->model().family() == "cross_encoder");
  CHECK(info->model().scoring() == "cross_encoder");
  REQUIRE(info->model().modalities_size() == 1);
  CHECK(info->model().modalities(0) == v1::MODALITY_PAIR);
}
