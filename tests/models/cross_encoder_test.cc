// The native cross-encoder (XLM-R and BERT sequence classifiers) against an independent
// PyTorch reference (tests/tools/cross_encoder_reference.py) on tiny random checkpoints:
// logits at batch > 1 with padding, padding invariance, FlagReranker's truncation, the XLM-R
// position offset, BERT token types, config and checkpoint validation, family detection.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "server/models/cross_encoder/cross_encoder_config.h"
#include "server/models/cross_encoder/cross_encoder_model.h"
#include "server/models/cross_encoder/cross_encoder_random_checkpoint.h"
#include "tests/models/cross_encoder_reference.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using embedserve::models::Embedding;
using embedserve::models::Model;
using embedserve::models::RuntimeOptions;
using embedserve::models::TextInput;
using embedserve::testing::CheckCloseToReference;
using embedserve::testing::RunCrossEncoderReference;
using embedserve::testing::Slurp;
using nlohmann::json;
using namespace embedserve::models::cross_encoder;

namespace {

void WriteFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

RuntimeOptions Options(const std::string& dtype = "float32") {
  RuntimeOptions options;
  options.device = embedserve::testing::TestDevice();
  options.dtype = dtype;
  options.allow_slow_bfloat16 = true;
  return options;
}

// A tiny random checkpoint of `config` in a fresh directory named `name`.
std::string WriteTiny(const std::string& name, const CrossEncoderConfig& config, uint64_t seed = 7) {
  const std::string dir = embedserve::testing::FreshTempDir("cross_encoder_" + name);
  absl::Status written = WriteRandomCrossEncoder(config, dir, "F32", seed);
  INFO(written.ToString());
  REQUIRE(written.ok());
  return dir;
}

const std::string& XlmrDir() {
  static const std::string dir = WriteTiny("xlmr", TinyXlmRobertaConfig());
  return dir;
}
const std::string& BertDir() {
  static const std::string dir = WriteTiny("bert", TinyBertConfig());
  return dir;
}

std::unique_ptr<Model> Load(const std::string& dir, const std::string& dtype = "float32") {
  auto model = LoadCrossEncoder(dir, Options(dtype));
  INFO(model.status().ToString());
  REQUIRE(model.ok());
  return *std::move(model);
}

TextInput Pair(const Model& model, const std::string& query, const std::string& document,
               bool truncate = true) {
  auto input = model.PreparePair(query, document, truncate);
  INFO(input.status().ToString());
  REQUIRE(input.ok());
  return *std::move(input);
}

std::vector<float> Score(Model& model, const std::vector<TextInput>& inputs) {
  std::vector<const TextInput*> pointers;
  for (const TextInput& in : inputs) pointers.push_back(&in);
  auto out = model.LaunchPairs(pointers)->Wait();
  INFO(out.status().ToString());
  REQUIRE(out.ok());
  REQUIRE(out->size() == inputs.size());
  std::vector<float> scores;
  for (const Embedding& e : *out) {
    REQUIRE(e.rows == 1);
    REQUIRE(e.dim == 1);
    REQUIRE(e.values.size() == 1);
    scores.push_back(e.values[0]);
  }
  return scores;
}

std::string Repeat(const std::string& word, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += (i ? " " : "") + word;
  return s;
}

const std::vector<std::pair<std::string, std::string>>& Pairs() {
  static const std::vector<std::pair<std::string, std::string>> pairs = {
      {"what is panda?", "hi"},
      {"what is panda?",
       "The giant panda (Ailuropoda melanoleuca), sometimes called a panda bear or simply "
       "panda, is a bear species endemic to China."},
      {"query", "passage"},
      {"what is the capital of France?", "Paris is the capital and city of France."},
      {"how many people live in paris?", Repeat("population of paris", 20)},
  };
  return pairs;
}

// Edits config.json in `dir`.
void EditConfig(const std::string& dir, const std::function<void(json&)>& edit) {
  json config = json::parse(Slurp(dir + "/config.json"));
  edit(config);
  WriteFile(fs::path(dir) / "config.json", config.dump(2));
}

std::string LoadError(const std::string& dir) {
  auto model = LoadCrossEncoder(dir, Options());
  REQUIRE_FALSE(model.ok());
  return std::string(model.status().message());
}

}  // namespace

TEST_CASE("XLM-R and BERT logits match the PyTorch reference in a padded batch",
          "[cross_encoder][reference]") {
  for (const std::string* dir : {&XlmrDir(), &BertDir()}) {
    auto model = Load(*dir);
    INFO(model->description().architecture);
    std::vector<TextInput> inputs;
    for (const auto& [q, d] : Pairs()) inputs.push_back(Pair(*model, q, d));
    // Different lengths, so the batch pads.
    CHECK(inputs[0].token_ids.size() < inputs[1].token_ids.size());
    const std::vector<float> scores = Score(*model, inputs);
    const json ref = RunCrossEncoderReference(*dir, inputs);
    CheckCloseToReference(scores, ref["single"].get<std::vector<double>>());
    CheckCloseToReference(scores, ref["batched"].get<std::vector<double>>());
    // Not a constant: the pairs score differently.
    CHECK(*std::max_element(scores.begin(), scores.end()) -
              *std::min_element(scores.begin(), scores.end()) > 1e-3);
  }
}

TEST_CASE("a batch scores each pair as it scores alone", "[cross_encoder]") {
  for (const std::string* dir : {&XlmrDir(), &BertDir()}) {
    auto model = Load(*dir);
    std::vector<TextInput> inputs;
    for (const auto& [q, d] : Pairs()) inputs.push_back(Pair(*model, q, d));
    const std::vector<float> batched = Score(*model, inputs);
    for (size_t i = 0; i < inputs.size(); ++i) {
      const float alone = Score(*model, {inputs[i]})[0];
      INFO("pair " << i);
      // Only the matmul shapes differ: float32 rounding.
      CHECK(batched[i] == Approx(alone).epsilon(1e-5).margin(1e-5));
    }
  }
}

TEST_CASE("the description says what a cross-encoder is", "[cross_encoder]") {
  auto xlmr = Load(XlmrDir());
  const auto& d = xlmr->description();
  CHECK(d.family == "cross_encoder");
  CHECK(d.architecture == "XLMRobertaForSequenceClassification");
  CHECK(d.accepts_pairs);
  CHECK_FALSE(d.accepts_text);
  CHECK_FALSE(d.accepts_image);
  CHECK(d.embedding_dim == 1);
  CHECK(d.context_length == 512);  // min(512, 514 - 2)
  CHECK(d.scoring == "cross_encoder");
  CHECK_FALSE(d.outputs_normalized);
  CHECK(d.dtype == "float32");
  auto bert = Load(BertDir());
  CHECK(bert->description().architecture == "BertForSequenceClassification");
  CHECK(bert->description().context_length == 512);  // min(512, 512 - 0)
}

TEST_CASE("texts and images are refused: a cross-encoder scores pairs", "[cross_encoder]") {
  auto model = Load(XlmrDir());
  TextInput text = *model->PrepareText("hi", true);
  const TextInput* texts[] = {&text};
  auto out = model->LaunchTexts(texts)->Wait();
  REQUIRE_FALSE(out.ok());
  CHECK(out.status().code() == absl::StatusCode::kUnimplemented);
  CHECK_THAT(std::string(out.status().message()), Catch::Contains("Rerank"));
  CHECK(model->EmbedImages({}).status().code() == absl::StatusCode::kUnimplemented);
  CHECK(model->PrepareImage("not an image", {}).status().code() != absl::StatusCode::kOk);
}

TEST_CASE("PrepareText and Tokenize use the single-sequence template", "[cross_encoder]") {
  SECTION("XLM-R: <s> X </s>") {
    auto model = Load(XlmrDir());
    auto t = model->Tokenize("what is panda?", true);
    REQUIRE(t.ok());
    REQUIRE(t->ids.size() >= 3);
    CHECK(t->ids.front() == 0);
    CHECK(t->ids.back() == 2);
    CHECK(t->tokens.front() == "<s>");
    CHECK(t->tokens[1] == "\xe2\x96\x81what");
    CHECK(t->tokens.back() == "</s>");
    auto long_text = model->PrepareText(Repeat("panda", 600), false);
    REQUIRE_FALSE(long_text.ok());
    CHECK_THAT(std::string(long_text.status().message()), Catch::Contains("602"));
    auto cut = model->PrepareText(Repeat("panda", 600), true);
    REQUIRE(cut.ok());
    CHECK(cut->truncated);
    CHECK(cut->token_ids.size() == 512);
    CHECK(cut->token_ids.back() == 2);
  }
  SECTION("BERT: [CLS] X [SEP], lower-cased") {
    auto model = Load(BertDir());
    auto t = model->Tokenize("What is PANDA?", true);
    REQUIRE(t.ok());
    CHECK(t->tokens == std::vector<std::string>{"[CLS]", "what", "is", "panda", "?", "[SEP]"});
  }
}

TEST_CASE("pairs are truncated as FlagReranker truncates them", "[cross_encoder][truncation]") {
  SECTION("the arithmetic") {
    // Query cut to 384, document to 512, then the document's tail to fit 512 with 4 specials.
    PairLengths p = TruncatePairLengths(400, 600, 512, 384, 4);
    CHECK(p.query == 384);
    CHECK(p.document == 124);
    CHECK(p.truncated);
    p = TruncatePairLengths(100, 500, 512, 384, 4);
    CHECK(p.query == 100);
    CHECK(p.document == 408);
    CHECK(p.truncated);
    p = TruncatePairLengths(400, 20, 512, 384, 3);  // only the query cap cuts
    CHECK(p.query == 384);
    CHECK(p.document == 20);
    CHECK(p.truncated);
    p = TruncatePairLengths(100, 408, 512, 384, 4);  // exactly 512: nothing cut
    CHECK(p.query == 100);
    CHECK(p.document == 408);
    CHECK_FALSE(p.truncated);
  }
  SECTION("XLM-R: <s> q[:384] </s></s> p[:124] </s>") {
    auto model = Load(XlmrDir());
    const std::string query = Repeat("panda", 400), document = Repeat("bear", 600);
    TextInput in = Pair(*model, query, document);
    CHECK(in.truncated);
    REQUIRE(in.token_ids.size() == 512);
    const int32_t panda = in.token_ids[1], bear = in.token_ids[388];
    CHECK(panda != bear);
    CHECK(in.token_ids[0] == 0);
    CHECK(std::count(in.token_ids.begin() + 1, in.token_ids.begin() + 385, panda) == 384);
    CHECK(in.token_ids[385] == 2);
    CHECK(in.token_ids[386] == 2);
    CHECK(in.second_segment_start == 386);
    CHECK(std::count(in.token_ids.begin() + 387, in.token_ids.begin() + 511, bear) == 124);
    CHECK(in.token_ids[511] == 2);
    // The full-length pair runs (positions 2..513 of 514) and matches the reference.
    const std::vector<TextInput> inputs = {in, Pair(*model, "hi", "query")};
    CheckCloseToReference(Score(*model, inputs), RunCrossEncoderReference(XlmrDir(), inputs)["batched"].get<std::vector<double>>());
  }
  SECTION("XLM-R: a short query keeps every token, the document fills the rest") {
    auto model = Load(XlmrDir());
    TextInput in = Pair(*model, Repeat("panda", 100), Repeat("bear", 500));
    CHECK(in.truncated);
    CHECK(in.token_ids.size() == 512);  // 1 + 100 + 2 + 408 + 1
    CHECK(in.second_segment_start == 102);
    TextInput fits = Pair(*model, Repeat("panda", 100), Repeat("bear", 408), false);
    CHECK_FALSE(fits.truncated);
    CHECK(fits.token_ids.size() == 512);
  }
  SECTION("BERT: [CLS] q[:384] [SEP] p[:125] [SEP]") {
    auto model = Load(BertDir());
    TextInput in = Pair(*model, Repeat("panda", 400), Repeat("bear", 600));
    CHECK(in.truncated);
    REQUIRE(in.token_ids.size() == 512);
    CHECK(in.token_ids[385] == 3);  // [SEP]
    CHECK(in.second_segment_start == 386);
    CHECK(in.token_ids[511] == 3);
  }
  SECTION("truncate=false refuses a pair that would be cut, naming the counts and the limit") {
    auto model = Load(XlmrDir());
    auto too_long = model->PreparePair(Repeat("panda", 100), Repeat("bear", 500), false);
    REQUIRE_FALSE(too_long.ok());
    CHECK(too_long.status().code() == absl::StatusCode::kInvalidArgument);
    const std::string message(too_long.status().message());
    CHECK_THAT(message, Catch::Contains("100 query tokens"));
    CHECK_THAT(message, Catch::Contains("500 document tokens"));
    CHECK_THAT(message, Catch::Contains("604"));
    CHECK_THAT(message, Catch::Contains("limit is 512"));
    // A query over 384 tokens is cut even when the pair would fit.
    CHECK_FALSE(model->PreparePair(Repeat("panda", 390), "bear", false).ok());
    auto ok = model->PreparePair("what is panda?", "hi", false);
    REQUIRE(ok.ok());
    CHECK_FALSE(ok->truncated);
  }
}

TEST_CASE("XLM-R positions start after the pad id", "[cross_encoder]") {
  // A checkpoint whose positions hold 40 tokens after the offset 2: a 40-token pair fits
  // (its last position is row 41), and the context length is 40.
  CrossEncoderConfig config = TinyXlmRobertaConfig();
  config.max_position_embeddings = 42;
  const std::string dir = WriteTiny("xlmr_short", config, 11);
  auto model = Load(dir);
  CHECK(model->description().context_length == 40);
  TextInput in = Pair(*model, Repeat("panda", 10), Repeat("bear", 100));
  CHECK(in.token_ids.size() == 40);
  const std::vector<TextInput> inputs = {in, Pair(*model, "hi", "hi")};
  CheckCloseToReference(Score(*model, inputs), RunCrossEncoderReference(dir, inputs)["single"].get<std::vector<double>>());
  // Longer than the positions: refused at launch, not an out-of-range read.
  TextInput too_long = in;
  too_long.token_ids.push_back(2);
  const TextInput* batch[] = {&too_long};
  CHECK(model->LaunchPairs(batch)->Wait().status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("BERT gives the second segment token type 1", "[cross_encoder]") {
  auto model = Load(BertDir());
  TextInput in = Pair(*model, "what is panda?", "the giant panda");
  // [CLS] what is panda ? [SEP] | the giant panda [SEP]
  CHECK(in.second_segment_start == 6);
  CHECK(in.token_ids[5] == 3);
  TextInput all_zero = in;
  all_zero.second_segment_start = 0;
  const std::vector<TextInput> inputs = {in, all_zero};
  const std::vector<float> scores = Score(*model, inputs);
  CheckCloseToReference(scores, RunCrossEncoderReference(BertDir(), inputs)["batched"].get<std::vector<double>>());
  CHECK(std::abs(scores[0] - scores[1]) > 1e-4);  // the types reach the model
}

TEST_CASE("BERT from vocab.txt tokenizes as from tokenizer.json", "[cross_encoder]") {
  const std::string dir = WriteTiny("bert_vocab", TinyBertConfig());
  auto with_json = Load(dir);
  const TextInput a = Pair(*with_json, "What is PANDA?", "The giant panda, a bear.");
  fs::remove(fs::path(dir) / "tokenizer.json");
  auto with_vocab = Load(dir);
  const TextInput b = Pair(*with_vocab, "What is PANDA?", "The giant panda, a bear.");
  CHECK(a.token_ids == b.token_ids);
  CHECK(a.second_segment_start == b.second_segment_start);
}

TEST_CASE("bfloat16 serving stays close to float32", "[cross_encoder]") {
  auto fp32 = Load(XlmrDir());
  auto bf16 = Load(XlmrDir(), "bfloat16");
  CHECK(bf16->description().dtype == "bfloat16");
  std::vector<TextInput> inputs;
  for (const auto& [q, d] : Pairs()) inputs.push_back(Pair(*fp32, q, d));
  const std::vector<float> a = Score(*fp32, inputs), b = Score(*bf16, inputs);
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("pair " << i);
    // bfloat16 keeps 8 bits of mantissa; through 2 layers a logit of O(1) moves by < 0.1.
    CHECK(std::abs(a[i] - b[i]) < 0.1);
  }
}

TEST_CASE("bad configs and checkpoints are refused, naming the field or tensor",
          "[cross_encoder][errors]") {
  const std::string dir = WriteTiny("errors", TinyXlmRobertaConfig());
  const std::string good_config = Slurp(dir + "/config.json");
  auto restore = [&] { WriteFile(fs::path(dir) / "config.json", good_config); };
  SECTION("num_labels 2") {
    EditConfig(dir, [](json& c) { c["num_labels"] = 2; });
    const std::string message = LoadError(dir);
    CHECK_THAT(message, Catch::Contains("num_labels"));
    CHECK_THAT(message, Catch::Contains("2 labels"));
  }
  SECTION("two labels in id2label") {
    EditConfig(dir, [](json& c) { c["id2label"] = {{"0", "no"}, {"1", "yes"}}; });
    CHECK_THAT(LoadError(dir), Catch::Contains("id2label"));
  }
  SECTION("hidden_act relu") {
    EditConfig(dir, [](json& c) { c["hidden_act"] = "relu"; });
    const std::string message = LoadError(dir);
    CHECK_THAT(message, Catch::Contains("hidden_act"));
    CHECK_THAT(message, Catch::Contains("relu"));
  }
  SECTION("a model_type that does not go with the architecture") {
    EditConfig(dir, [](json& c) { c["model_type"] = "bert"; });
    CHECK_THAT(LoadError(dir), Catch::Contains("model_type"));
  }
  SECTION("a missing tensor") {
    EditConfig(dir, [](json& c) { c["num_hidden_layers"] = 3; });
    CHECK_THAT(LoadError(dir), Catch::Contains("roberta.encoder.layer.2."));
  }
  SECTION("an unexpected tensor") {
    EditConfig(dir, [](json& c) { c["num_hidden_layers"] = 1; });
    CHECK_THAT(LoadError(dir), Catch::Contains("roberta.encoder.layer.1."));
  }
  SECTION("only pytorch_model.bin") {
    // torch converts the safetensors twin (tests/tools/safetensors_to_bin.py: transposed
    // views, an int64 position_ids buffer); the logits must be the twin's, bit for bit.
    const fs::path st = fs::path(dir) / "model.safetensors", bin = fs::path(dir) / "pytorch_model.bin";
    std::vector<float> want;
    {
      auto twin = Load(dir);
      std::vector<TextInput> inputs;
      for (const auto& [q, d] : Pairs()) inputs.push_back(Pair(*twin, q, d));
      want = Score(*twin, inputs);
    }
    const std::string command = std::string("/usr/bin/python3 ") + EMBEDSERVE_SOURCE_DIR +
                                "/tests/tools/safetensors_to_bin.py " + st.string() + " " +
                                bin.string() + " roberta.embeddings.position_ids";
    REQUIRE(std::system(command.c_str()) == 0);
    // Both present: safetensors wins (a damaged .bin beside it is never read).
    WriteFile(fs::path(dir) / "pytorch_model.bin.good", Slurp(bin.string()));
    WriteFile(bin, "not a checkpoint");
    CHECK(LoadCrossEncoder(dir, Options()).ok());
    fs::rename(fs::path(dir) / "pytorch_model.bin.good", bin);
    fs::rename(st, fs::path(dir) / "model.safetensors.off");
    {
      auto model = Load(dir);
      std::vector<TextInput> inputs;
      for (const auto& [q, d] : Pairs()) inputs.push_back(Pair(*model, q, d));
      CHECK(Score(*model, inputs) == want);
    }
    // Neither: the error names both.
    fs::remove(bin);
    const std::string message = LoadError(dir);
    CHECK_THAT(message, Catch::Contains("pytorch_model.bin"));
    CHECK_THAT(message, Catch::Contains("model.safetensors"));
    fs::rename(fs::path(dir) / "model.safetensors.off", st);
  }
  SECTION("no tokenizer") {
    fs::rename(fs::path(dir) / "tokenizer.json", fs::path(dir) / "tokenizer.json.off");
    const std::string message = LoadError(dir);
    CHECK_THAT(message, Catch::Contains("sentencepiece.bpe.model"));
    fs::rename(fs::path(dir) / "tokenizer.json.off", fs::path(dir) / "tokenizer.json");
  }
  restore();
  REQUIRE(LoadCrossEncoder(dir, Options()).ok());
}

TEST_CASE("the family claims its configs and no ColPali or OpenCLIP directory",
          "[cross_encoder][family]") {
  const auto& family = CrossEncoderFamily();
  CHECK(family.name == "cross_encoder");
  CHECK(family.weight_files ==
        std::vector<std::string>{"model.safetensors", "pytorch_model.bin"});
  CHECK(family.detect(XlmrDir()));
  CHECK(family.detect(BertDir()));
  const std::string data = EMBEDSERVE_TEST_DATA;
  CHECK_FALSE(family.detect(data + "/colpali-reference/model"));
  CHECK_FALSE(family.detect(data + "/colpali-reference"));
  CHECK_FALSE(family.detect(data + "/openclip-reference/model"));
  CHECK_FALSE(family.detect(data + "/openclip-reference"));
  auto loaded = family.load(XlmrDir(), Options());
  REQUIRE(loaded.ok());
  CHECK((*loaded)->description().family == "cross_encoder");
}

TEST_CASE("the full-size presets have the real rerankers' geometry", "[cross_encoder]") {
  const CrossEncoderConfig m3 = BgeRerankerV2M3Config();
  CHECK(m3.max_sequence_length() == 8192);
  auto parsed = ParseCrossEncoderConfig(CrossEncoderConfigToJson(m3), "m3");
  REQUIRE(parsed.ok());
  CHECK(parsed->hidden_size == 1024);
  CHECK(parsed->num_hidden_layers == 24);
  CHECK(parsed->vocab_size == 250002);
  CHECK(parsed->type_vocab_size == 1);
  CHECK(parsed->layer_norm_eps == 1e-5);
  CHECK(BgeRerankerBaseConfig().max_sequence_length() == 512);
  CHECK(MsMarcoMiniLmL6Config().max_sequence_length() == 512);
  // Hub key names.
  std::vector<std::string> keys;
  for (const auto& [key, shape] : ParameterShapes(TinyBertConfig())) keys.push_back(key);
  for (const char* k : {"bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight",
                        "classifier.weight", "bert.encoder.layer.1.attention.self.query.bias",
                        "bert.encoder.layer.0.output.LayerNorm.weight"}) {
    CHECK(std::find(keys.begin(), keys.end(), k) != keys.end());
  }
  keys.clear();
  for (const auto& [key, shape] : ParameterShapes(TinyXlmRobertaConfig())) keys.push_back(key);
  for (const char* k : {"roberta.embeddings.position_embeddings.weight",
                        "classifier.dense.weight", "classifier.out_proj.bias"}) {
    CHECK(std::find(keys.begin(), keys.end(), k) != keys.end());
  }
}
