// Prints the token ids our tokenizers give for a JSON list of texts and (query, passage) pairs,
// loaded the way the server loads them, for tests that compare them with another library's:
//   tokenizer_ids cross-encoder MODEL_DIR JOB.json     (CrossEncoderTokenizer, config.json)
//   tokenizer_ids colpali TOKENIZER_DIR CONFIG_DIR JOB.json   (ColPaliTokenizer)
// JOB.json: {"texts": [str, ...], "pairs": [[str, str], ...]}. Prints one JSON object:
//   {"source": the file the ids come from,
//    "encode": per text, its ids without special tokens, or {"error": message},
//    "single", "single_types": per text, the server's one-text template and its type ids
//    (cross-encoder only), "pair", "pair_types": per pair, the template the reranker scores
//    (untruncated) and its type ids (cross-encoder only)}.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "server/models/colpali/colpali_config.h"
#include "server/models/colpali/colpali_tokenizer.h"
#include "server/models/cross_encoder/cross_encoder_config.h"
#include "server/models/cross_encoder/cross_encoder_tokenizer.h"

namespace {

using nlohmann::json;
namespace ce = embedserve::models::cross_encoder;
namespace cp = embedserve::models::colpali;

// The job's shape: "texts" an array of strings, "pairs" (optional) an array of two strings each.
bool ValidJob(const json& job) {
  if (!job.is_object() || !job.contains("texts") || !job["texts"].is_array()) return false;
  for (const json& text : job["texts"]) {
    if (!text.is_string()) return false;
  }
  const json pairs = job.value("pairs", json::array());
  if (!pairs.is_array()) return false;
  for (const json& pair : pairs) {
    if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string() || !pair[1].is_string()) {
      return false;
    }
  }
  return true;
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "tokenizer_ids: %s\n", what.c_str());
  return 1;
}

json IdsOrError(const absl::StatusOr<std::vector<int32_t>>& ids) {
  if (!ids.ok()) return json{{"error", ids.status().ToString()}};
  return json(*ids);
}

// The server's type ids: BERT's 1 from the second segment on (CrossEncoderModel), XLM-R's 0.
std::vector<int32_t> TypeIds(size_t length, int32_t second_segment_start, bool bert) {
  std::vector<int32_t> types(length, 0);
  if (!bert || second_segment_start < 0) return types;
  for (size_t i = static_cast<size_t>(second_segment_start); i < length; ++i) types[i] = 1;
  return types;
}

json CrossEncoderIds(const std::string& dir, const json& job) {
  absl::StatusOr<ce::CrossEncoderConfig> config = ce::ReadCrossEncoderConfig(dir);
  if (!config.ok()) return json{{"fatal", config.status().ToString()}};
  auto tokenizer = ce::CrossEncoderTokenizer::Load(dir, *config);
  if (!tokenizer.ok()) return json{{"fatal", tokenizer.status().ToString()}};
  const ce::CrossEncoderTokenizer& t = **tokenizer;
  const bool bert = config->architecture == ce::Architecture::kBert;
  json out = {{"source", t.source()}, {"encode", json::array()}, {"single", json::array()},
              {"single_types", json::array()}, {"pair", json::array()},
              {"pair_types", json::array()}};
  for (const json& text : job.at("texts")) {
    absl::StatusOr<std::vector<int32_t>> ids = t.Encode(text.get<std::string>());
    out["encode"].push_back(IdsOrError(ids));
    if (!ids.ok()) {
      out["single"].push_back(nullptr);
      out["single_types"].push_back(nullptr);
      continue;
    }
    const std::vector<int32_t> single = t.Single(*ids);
    out["single"].push_back(single);
    out["single_types"].push_back(TypeIds(single.size(), -1, bert));
  }
  for (const json& pair : job.value("pairs", json::array())) {
    absl::StatusOr<std::vector<int32_t>> a = t.Encode(pair.at(0).get<std::string>());
    absl::StatusOr<std::vector<int32_t>> b = t.Encode(pair.at(1).get<std::string>());
    if (!a.ok() || !b.ok()) {
      out["pair"].push_back(json{{"error", (a.ok() ? b : a).status().ToString()}});
      out["pair_types"].push_back(nullptr);
      continue;
    }
    const std::vector<int32_t> ids = t.Pair(*a, *b);
    out["pair"].push_back(ids);
    out["pair_types"].push_back(
        TypeIds(ids.size(), ce::CrossEncoderTokenizer::SecondSegmentStart(a->size()), bert));
  }
  return out;
}

json ColPaliIds(const std::string& tokenizer_dir, const std::string& config_dir, const json& job) {
  absl::StatusOr<cp::ColPaliConfig> config = cp::ReadColPaliConfig(config_dir);
  if (!config.ok()) return json{{"fatal", config.status().ToString()}};
  auto tokenizer = cp::ColPaliTokenizer::Load(tokenizer_dir, *config);
  if (!tokenizer.ok()) return json{{"fatal", tokenizer.status().ToString()}};
  json out = {{"source", (*tokenizer)->source()}, {"encode", json::array()}};
  for (const json& text : job.at("texts")) {
    out["encode"].push_back(IdsOrError((*tokenizer)->Encode(text.get<std::string>())));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string kind = argc > 1 ? argv[1] : "";
  const int job_arg = kind == "colpali" ? 4 : 3;
  if ((kind != "cross-encoder" && kind != "colpali") || argc != job_arg + 1) {
    std::fprintf(stderr,
                 "usage: %s cross-encoder MODEL_DIR JOB.json\n"
                 "       %s colpali TOKENIZER_DIR CONFIG_DIR JOB.json\n",
                 argv[0], argv[0]);
    return 2;
  }
  std::ifstream file(argv[job_arg], std::ios::binary);
  if (!file) return Fail(std::string(argv[job_arg]) + ": cannot open");
  std::stringstream bytes;
  bytes << file.rdbuf();
  const json job = json::parse(bytes.str(), nullptr, /*allow_exceptions=*/false);
  if (!ValidJob(job)) {
    return Fail(std::string(argv[job_arg]) +
                ": expected {\"texts\": [string, ...], \"pairs\": [[string, string], ...]}");
  }
  const json out =
      kind == "colpali" ? ColPaliIds(argv[2], argv[3], job) : CrossEncoderIds(argv[2], job);
  if (out.contains("fatal")) return Fail(out["fatal"].get<std::string>());
  // Invalid UTF-8 never reaches here (the job is JSON); replace rather than throw anyway.
  std::cout << out.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  return 0;
}
