// The native ColPali against the reference outputs (tests/data/colpali-reference): prompt
// token ids, per-token vectors, MaxSim; padding invariance, bf16 serving, checkpoint key
// layouts, config validation, truncation and LoRA adapters merged at load.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"
#include "server/models/colpali/colpali_config.h"
#include "server/models/colpali/colpali_model.h"
#include "server/models/colpali/colpali_random_checkpoint.h"
#include "server/models/colpali/colpali_tokenizer.h"
#include "server/weights/safetensors.h"

namespace fs = std::filesystem;
using embedserve::models::Embedding;
using embedserve::models::ImageInput;
using embedserve::models::ImageLimits;
using embedserve::models::Model;
using embedserve::models::RuntimeOptions;
using embedserve::weights::TensorArchive;
using embedserve::weights::TensorDtype;
using embedserve::weights::TensorToWrite;
using embedserve::models::TextInput;
using embedserve::weights::WriteSafetensors;
using namespace embedserve::models::colpali;

using embedserve::testing::Cosine;
using embedserve::testing::Slurp;

namespace {

const std::string kRef = std::string(EMBEDSERVE_TEST_DATA) + "/colpali-reference/";
const std::string kModel = kRef + "model";

void WriteFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

const nlohmann::json& Reference() {
  static const nlohmann::json ref = nlohmann::json::parse(Slurp(kRef + "reference.json"));
  return ref;
}

std::vector<std::string> Queries() { return Reference()["queries"].get<std::vector<std::string>>(); }
std::vector<std::string> PageFiles() { return Reference()["page_order"].get<std::vector<std::string>>(); }

fs::path TempDir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() /
                 ("colpali_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::unique_ptr<Model> Load(const std::string& dir, const std::string& dtype = "float32",
                            ColPaliOptions colpali = {}, bool allow_slow_bfloat16 = false) {
  RuntimeOptions options;
  options.device = embedserve::testing::TestDevice();
  options.dtype = dtype;
  options.allow_slow_bfloat16 = allow_slow_bfloat16;
  auto model = LoadColPali(dir, options, colpali);
  INFO(model.status().ToString());
  REQUIRE(model.ok());
  return *std::move(model);
}

std::vector<Embedding> EmbedQueries(Model& model, const std::vector<std::string>& queries) {
  std::vector<TextInput> inputs;
  for (const auto& q : queries) {
    auto input = model.PrepareText(q, false);
    REQUIRE(input.ok());
    inputs.push_back(*std::move(input));
  }
  std::vector<const TextInput*> ptrs;
  for (const auto& i : inputs) ptrs.push_back(&i);
  auto out = model.EmbedTexts(ptrs);
  INFO(out.status().ToString());
  REQUIRE(out.ok());
  return *std::move(out);
}

std::vector<Embedding> EmbedPages(Model& model, const std::vector<std::string>& files) {
  std::vector<ImageInput> inputs;
  for (const auto& f : files) {
    auto input = model.PrepareImage(Slurp(kRef + "images/" + f), ImageLimits());
    INFO(f << ": " << input.status().ToString());
    REQUIRE(input.ok());
    inputs.push_back(*std::move(input));
  }
  std::vector<const ImageInput*> ptrs;
  for (const auto& i : inputs) ptrs.push_back(&i);
  auto out = model.EmbedImages(ptrs);
  INFO(out.status().ToString());
  REQUIRE(out.ok());
  return *std::move(out);
}

// Lowest row-wise cosine between `e` and a reference [rows x dim] array.
double MinRowCosine(const Embedding& e, const nlohmann::json& rows) {
  REQUIRE(e.rows == static_cast<int>(rows.size()));
  double worst = 1.0;
  for (int r = 0; r < e.rows; ++r) {
    REQUIRE(rows[r].size() == static_cast<size_t>(e.dim));
    double dot = 0, na = 0, nb = 0;
    for (int d = 0; d < e.dim; ++d) {
      const double a = e.values[r * e.dim + d], b = rows[r][d].get<double>();
      dot += a * b;
      na += a * a;
      nb += b * b;
    }
    worst = std::min(worst, dot / std::sqrt(na * nb));
  }
  return worst;
}

double MinRowCosine(const Embedding& a, const Embedding& b) {
  REQUIRE(a.rows == b.rows);
  REQUIRE(a.dim == b.dim);
  double worst = 1.0;
  for (int r = 0; r < a.rows; ++r) {
    double dot = 0, na = 0, nb = 0;
    for (int d = 0; d < a.dim; ++d) {
      const double x = a.values[r * a.dim + d], y = b.values[r * b.dim + d];
      dot += x * y;
      na += x * x;
      nb += y * y;
    }
    worst = std::min(worst, dot / std::sqrt(na * nb));
  }
  return worst;
}

double MaxAbsDiff(const Embedding& a, const Embedding& b) {
  REQUIRE(a.values.size() == b.values.size());
  double worst = 0;
  for (size_t i = 0; i < a.values.size(); ++i) {
    worst = std::max(worst, std::abs(double(a.values[i]) - b.values[i]));
  }
  return worst;
}

double MaxSim(const Embedding& q, const Embedding& p) {
  double total = 0;
  for (int i = 0; i < q.rows; ++i) {
    double best = -1e30;
    for (int j = 0; j < p.rows; ++j) {
      double dot = 0;
      for (int d = 0; d < q.dim; ++d) dot += double(q.values[i * q.dim + d]) * p.values[j * p.dim + d];
      best = std::max(best, dot);
    }
    total += best;
  }
  return total;
}

// A copy of the reference model directory (config, preprocessor, tokenizer) without weights.
fs::path CopyModelFiles(const std::string& name) {
  fs::path dir = TempDir(name);
  for (const char* f : {"config.json", "preprocessor_config.json", "tokenizer.model"}) {
    fs::copy_file(fs::path(kModel) / f, dir / f);
  }
  return dir;
}

// The reference weights as float32 host arrays, by canonical name.
std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> ReferenceWeights() {
  auto archive = TensorArchive::OpenInDir(kModel, "model.safetensors");
  REQUIRE(archive.ok());
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> weights;
  for (const std::string& name : (*archive)->Names()) {
    const auto* view = (*archive)->Find(name);
    REQUIRE(view->dtype == TensorDtype::kBF16);
    std::vector<float> values(view->numel());
    for (int64_t i = 0; i < view->numel(); ++i) {
      uint16_t bits;
      std::memcpy(&bits, view->data + 2 * i, 2);
      uint32_t f = uint32_t(bits) << 16;
      std::memcpy(&values[i], &f, 4);
    }
    auto canonical = CanonicalName(name);
    REQUIRE(canonical.has_value());
    weights[*canonical] = {view->shape, std::move(values)};
  }
  return weights;
}

TensorToWrite F32Tensor(const std::string& name, const std::vector<int64_t>& shape,
                        const std::vector<float>& values) {
  TensorToWrite t;
  t.name = name;
  t.dtype = TensorDtype::kF32;
  t.shape = shape;
  t.bytes.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return t;
}

}  // namespace

TEST_CASE("page and query prompt ids equal the reference ids") {
  ColPaliConfig config = *ReadColPaliConfig(kModel);
  auto tokenizer = ColPaliTokenizer::Load(kModel, config);
  REQUIRE(tokenizer.ok());
  const auto page = Reference()["page_ids"].get<std::vector<int32_t>>();
  CHECK((*tokenizer)->page_ids() == page);
  auto model = Load(kModel);
  const auto queries = Queries();
  for (size_t i = 0; i < queries.size(); ++i) {
    auto t = model->Tokenize(queries[i], false);
    REQUIRE(t.ok());
    INFO("query " << i << ": '" << queries[i] << "'");
    CHECK(t->ids == Reference()["query_ids"][i].get<std::vector<int32_t>>());
    CHECK(t->tokens.size() == t->ids.size());
  }
}

TEST_CASE("every query's vectors match the reference (row cosine >= 0.9999, float32)") {
  auto model = Load(kModel);
  const auto queries = Queries();
  double worst = 1.0;
  for (size_t i = 0; i < queries.size(); ++i) {
    auto out = EmbedQueries(*model, {queries[i]});
    REQUIRE(out[0].dim == 32);
    worst = std::min(worst, MinRowCosine(out[0], Reference()["query_embeddings"][i]));
  }
  WARN("queries: lowest row cosine vs reference " << worst << " (1 - cos = " << 1 - worst << ")");
  CHECK(worst >= 0.9999);
}

TEST_CASE("every page's vectors match the reference (row cosine >= 0.9999, float32)") {
  auto model = Load(kModel);
  double worst = 1.0;
  for (const auto& f : PageFiles()) {
    auto out = EmbedPages(*model, {f});
    INFO(f);
    REQUIRE(out[0].rows == 27);
    worst = std::min(worst, MinRowCosine(out[0], Reference()["pages"][f]));
  }
  WARN("pages: lowest row cosine vs reference " << worst << " (1 - cos = " << 1 - worst << ")");
  CHECK(worst >= 0.9999);
}

TEST_CASE("MaxSim scores match the reference, and batching changes nothing") {
  auto model = Load(kModel);
  const auto queries = Queries();
  const auto files = PageFiles();
  auto q = EmbedQueries(*model, queries);  // one padded batch
  auto p = EmbedPages(*model, files);
  double worst_rel = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    for (size_t j = 0; j < p.size(); ++j) {
      const double ref = Reference()["maxsim"][i][j].get<double>();
      worst_rel = std::max(worst_rel, std::abs(MaxSim(q[i], p[j]) - ref) / std::abs(ref));
    }
  }
  WARN("MaxSim: largest relative error vs reference " << worst_rel);
  CHECK(worst_rel < 1e-4);

  // Batched (right-padded) vs each alone.
  double worst_q = 0, worst_p = 0;
  for (size_t i = 0; i < queries.size(); ++i) {
    auto alone = EmbedQueries(*model, {queries[i]});
    REQUIRE(alone[0].rows == q[i].rows);
    worst_q = std::max(worst_q, MaxAbsDiff(alone[0], q[i]));
  }
  for (size_t j = 0; j < files.size(); ++j) {
    auto alone = EmbedPages(*model, {files[j]});
    worst_p = std::max(worst_p, MaxAbsDiff(alone[0], p[j]));
  }
  WARN("batched vs alone: max |diff| queries " << worst_q << ", pages " << worst_p);
  CHECK(worst_q < 1e-5);
  CHECK(worst_p < 1e-5);
}

TEST_CASE("the model describes itself as a multi-vector MaxSim model") {
  auto model = Load(kModel);
  const auto& d = model->description();
  CHECK(d.family == "colpali");
  CHECK(d.multi_vector);
  CHECK(d.scoring == "maxsim");
  CHECK(d.outputs_normalized);
  CHECK(d.accepts_text);
  CHECK(d.accepts_image);
  CHECK(d.embedding_dim == 32);
  CHECK(d.image_size == 56);
  CHECK(d.context_length == 512);
  CHECK(d.dtype == "float32");
}

TEST_CASE("bfloat16 serving agrees with float32 (row cosine >= 0.99)") {
  auto fp32 = Load(kModel);
  // A numerics check on a tiny model: bfloat16 is asked for even where it is a fallback.
  auto bf16 = Load(kModel, "bfloat16", {}, /*allow_slow_bfloat16=*/true);
  CHECK(bf16->description().dtype == "bfloat16");
  const auto queries = Queries();
  const auto files = PageFiles();
  auto q32 = EmbedQueries(*fp32, queries), q16 = EmbedQueries(*bf16, queries);
  auto p32 = EmbedPages(*fp32, files), p16 = EmbedPages(*bf16, files);
  double worst_q = 1, worst_p = 1;
  for (size_t i = 0; i < q32.size(); ++i) worst_q = std::min(worst_q, MinRowCosine(q32[i], q16[i]));
  for (size_t i = 0; i < p32.size(); ++i) worst_p = std::min(worst_p, MinRowCosine(p32[i], p16[i]));
  WARN("bf16 vs fp32: lowest row cosine queries " << worst_q << ", pages " << worst_p);
  CHECK(worst_q >= 0.99);
  CHECK(worst_p >= 0.99);
}

TEST_CASE("every checkpoint key layout loads to the same model") {
  auto base = Load(kModel);
  const auto base_q = EmbedQueries(*base, {"signature"});
  const auto base_p = EmbedPages(*base, {"exact_224.png"});
  auto archive = TensorArchive::OpenInDir(kModel, "model.safetensors");
  REQUIRE(archive.ok());
  for (KeyLayout layout : {KeyLayout::kTransformers, KeyLayout::kTransformersNew,
                           KeyLayout::kColPaliEngine, KeyLayout::kColPaliEngineNew}) {
    DYNAMIC_SECTION("layout " << static_cast<int>(layout)) {
      fs::path dir = CopyModelFiles("layout" + std::to_string(static_cast<int>(layout)));
      std::vector<TensorToWrite> tensors;
      std::string embed_key;
      for (const std::string& name : (*archive)->Names()) {
        const auto* view = (*archive)->Find(name);
        TensorToWrite t;
        t.name = CheckpointKey(*CanonicalName(name), layout);
        t.dtype = view->dtype;
        t.shape = view->shape;
        t.bytes.assign(reinterpret_cast<const char*>(view->data), view->nbytes);
        if (t.name.find("embed_tokens") != std::string::npos) embed_key = t.name;
        tensors.push_back(std::move(t));
      }
      // A tied language-model head is ignored.
      TensorToWrite head = tensors.back();
      for (const auto& t : tensors) {
        if (t.name == embed_key) head = t;
      }
      head.name = layout == KeyLayout::kColPaliEngine ? "model.language_model.lm_head.weight"
                                                      : "vlm.lm_head.weight";
      tensors.push_back(head);
      REQUIRE(WriteSafetensors((dir / "model.safetensors").string(), tensors).ok());
      auto model = Load(dir.string());
      CHECK(MaxAbsDiff(EmbedQueries(*model, {"signature"})[0], base_q[0]) == 0);
      CHECK(MaxAbsDiff(EmbedPages(*model, {"exact_224.png"})[0], base_p[0]) == 0);
      fs::remove_all(dir);
    }
  }
}

TEST_CASE("configs the native ColPali cannot run fail at load, naming the field") {
  const nlohmann::json original = nlohmann::json::parse(Slurp(kModel + "/config.json"));
  struct Case {
    std::string name;
    std::function<void(nlohmann::json&)> edit;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"gemma2", [](auto& j) { j["vlm_config"]["text_config"]["model_type"] = "gemma2"; },
       "vlm_config.text_config.model_type"},
      {"bias", [](auto& j) { j["vlm_config"]["text_config"]["attention_bias"] = true; },
       "vlm_config.text_config.attention_bias"},
      {"act", [](auto& j) { j["vlm_config"]["vision_config"]["hidden_act"] = "relu"; },
       "vlm_config.vision_config.hidden_act"},
      {"rope", [](auto& j) { j["vlm_config"]["text_config"]["rope_scaling"] = {{"type", "linear"}}; },
       "vlm_config.text_config.rope_scaling"},
      {"kv", [](auto& j) { j["vlm_config"]["text_config"]["num_key_value_heads"] = 3; },
       "vlm_config.text_config.num_key_value_heads"},
      {"projection", [](auto& j) { j["vlm_config"]["projection_dim"] = 32; },
       "vlm_config.projection_dim"},
      {"vlm", [](auto& j) { j["vlm_config"]["model_type"] = "qwen2_vl"; }, "vlm_config.model_type"},
  };
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.name) {
      fs::path dir = CopyModelFiles("config_" + c.name);
      for (const char* f : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                            "model.safetensors.index.json"}) {
        fs::copy_file(fs::path(kModel) / f, dir / f);
      }
      nlohmann::json edited = original;
      c.edit(edited);
      WriteFile(dir / "config.json", edited.dump());
      auto model = LoadColPali(dir.string(), RuntimeOptions());
      REQUIRE_FALSE(model.ok());
      INFO(model.status().ToString());
      CHECK(model.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK(std::string(model.status().message()).find(c.field) != std::string::npos);
      fs::remove_all(dir);
    }
  }
}

TEST_CASE("transformers' defaults fill fields a config omits (real colpali-v1.3-hf shape)") {
  // The hub config omits head_dim, rms_norm_eps, rope_theta and the vision eps/act.
  const std::string text = R"({"model_type": "colpali", "embedding_dim": 128,
    "vlm_config": {"model_type": "paligemma", "image_token_index": 257152, "projection_dim": 2048,
      "hidden_size": 2048,
      "text_config": {"hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2048,
        "intermediate_size": 16384, "model_type": "gemma", "num_attention_heads": 8,
        "num_hidden_layers": 18, "num_image_tokens": 1024, "num_key_value_heads": 1,
        "torch_dtype": "float32", "vocab_size": 257216},
      "vision_config": {"hidden_size": 1152, "image_size": 448, "intermediate_size": 4304,
        "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
        "num_image_tokens": 1024, "num_positions": 1024, "patch_size": 14,
        "projection_dim": 2048, "projector_hidden_act": "gelu_fast", "vision_use_head": false}}})";
  auto c = ParseColPaliConfig(text, "config.json");
  INFO(c.status().ToString());
  REQUIRE(c.ok());
  CHECK(c->text.head_dim == 256);
  CHECK(c->text.rms_norm_eps == 1e-6);
  CHECK(c->text.rope_theta == 10000.0);
  CHECK(c->vision.layer_norm_eps == 1e-6);
  CHECK(c->vision.num_patches() == 1024);
  CHECK(c->preprocess.image_seq_length == 1024);
  CHECK(c->image_token_index == 257152);
  // ~2.9B parameters, computed without allocating them.
  int64_t total = 0;
  for (const auto& [name, shape] : ParameterShapes(*c)) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    total += n;
  }
  WARN("colpali-v1.3 parameter count " << total);
  CHECK(total > 2'900'000'000LL);
  CHECK(total < 3'000'000'000LL);
}

TEST_CASE("long queries are refused or cut, keeping the prompt's suffix; <image> is refused") {
  ColPaliOptions small;
  small.max_text_tokens = 20;
  auto model = Load(kModel, "float32", small);
  const std::string long_query = Queries().back();
  auto refused = model->PrepareText(long_query, false);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  auto cut = model->PrepareText(long_query, true);
  REQUIRE(cut.ok());
  CHECK(cut->truncated);
  REQUIRE(cut->token_ids.size() == 20);
  const auto full = Reference()["query_ids"].back().get<std::vector<int32_t>>();
  CHECK(std::equal(cut->token_ids.begin(), cut->token_ids.begin() + 9, full.begin()));
  CHECK(std::equal(cut->token_ids.end() - 11, cut->token_ids.end(), full.end() - 11));
  auto out = EmbedQueries(*model, {long_query.substr(0, 3)});
  CHECK(out[0].rows > 0);

  auto image = model->PrepareText("look at <image> here", false);
  REQUIRE_FALSE(image.ok());
  CHECK(image.status().code() == absl::StatusCode::kInvalidArgument);
  // Other special strings are recognised, as the processor does.
  auto bos = model->Tokenize("<eos>", false);
  REQUIRE(bos.ok());
  CHECK(std::count(bos->ids.begin(), bos->ids.end(), 1) == 1);
}

TEST_CASE("bad inputs are errors, not crashes") {
  auto model = Load(kModel);
  CHECK_FALSE(model->PrepareImage("not an image", ImageLimits()).ok());
  TextInput empty;
  const TextInput* ptr = &empty;
  CHECK_FALSE(model->EmbedTexts({&ptr, 1}).ok());
  TextInput bad;
  bad.token_ids = {2, 100000};
  ptr = &bad;
  CHECK_FALSE(model->EmbedTexts({&ptr, 1}).ok());
  ImageInput small;
  small.pixels.resize(10);
  const ImageInput* iptr = &small;
  CHECK_FALSE(model->EmbedImages({&iptr, 1}).ok());
}

TEST_CASE("a broken tokenizer.json fails the load, naming the file, with no fallback") {
  fs::path dir = CopyModelFiles("tokjson");
  WriteFile(dir / "tokenizer.json", "{}");  // tokenizer.model is still there
  auto model = LoadColPali(dir.string(), RuntimeOptions());
  REQUIRE_FALSE(model.ok());
  CHECK_THAT(std::string(model.status().message()), Catch::Contains("tokenizer.json"));
  fs::remove_all(dir);
}

TEST_CASE("a hub-style directory with only tokenizer.json serves the reference vectors") {
  // The hub's ColPali repositories ship tokenizer.json, not tokenizer.model; this one is the
  // reference tokenizer converted by transformers (tests/data/colpali-reference/hf).
  fs::path dir = TempDir("tokjson_only");
  for (const auto& entry : fs::directory_iterator(kModel)) {
    if (entry.path().filename() != "tokenizer.model") fs::copy_file(entry.path(), dir / entry.path().filename());
  }
  fs::copy_file(fs::path(kModel).parent_path() / "hf" / "tokenizer.json", dir / "tokenizer.json");
  auto from_json = Load(dir.string());
  auto from_model = Load(kModel);
  const std::vector<std::string> queries = {"Which page shows the quarterly revenue table?",
                                            "Umsatz drittes Quartal", "signature"};
  auto a = EmbedQueries(*from_json, queries);
  auto b = EmbedQueries(*from_model, queries);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].rows == b[i].rows);
    CHECK(a[i].values == b[i].values);
  }
  auto pa = EmbedPages(*from_json, {"small_50x40.png"});
  auto pb = EmbedPages(*from_model, {"small_50x40.png"});
  CHECK(pa[0].values == pb[0].values);
  fs::remove_all(dir);
}

TEST_CASE("random checkpoints write and load (any size the config allows)") {
  ColPaliConfig c = *ReadColPaliConfig(kModel);
  c.vision.num_hidden_layers = 1;
  c.text.num_hidden_layers = 3;
  c.text.num_key_value_heads = 2;
  fs::path dir = TempDir("random");
  REQUIRE(WriteRandomCheckpoint(c, dir.string(), "BF16", 7, KeyLayout::kColPaliEngine).ok());
  fs::copy_file(fs::path(kModel) / "tokenizer.model", dir / "tokenizer.model");
  auto model = Load(dir.string());
  auto q = EmbedQueries(*model, {"hello", "a longer query with more words"});
  auto p = EmbedPages(*model, {"small_50x40.png"});
  CHECK(p[0].rows == 27);
  for (float v : q[1].values) REQUIRE(std::isfinite(v));
  fs::remove_all(dir);
}

TEST_CASE("LoRA adapters merge into the base at load") {
  auto weights = ReferenceWeights();
  const std::string target = "text.layers.0.self_attn.q_proj.weight";
  const std::string target2 = "text.layers.1.mlp.down_proj.weight";
  const int r = 4;
  const double alpha = 8;
  fs::path root = TempDir("lora");
  fs::path base = root / "base";
  fs::create_directories(base);
  for (const auto& entry : fs::directory_iterator(kModel)) {
    fs::copy_file(entry.path(), base / entry.path().filename());
  }
  auto base_model = Load(base.string());
  const auto queries = Queries();
  const auto base_q = EmbedQueries(*base_model, queries);
  const auto base_p = EmbedPages(*base_model, {"photo_800x600.jpg"});

  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.f, 0.3f);
  auto write_adapter = [&](const fs::path& dir, bool zero_b,
                           std::map<std::string, std::vector<float>>* deltas) {
    fs::create_directories(dir);
    nlohmann::json config = {{"peft_type", "LORA"}, {"r", r}, {"lora_alpha", alpha},
                             {"base_model_name_or_path", "../base"},
                             {"target_modules", {"q_proj", "down_proj"}}};
    WriteFile(dir / "adapter_config.json", config.dump());
    std::vector<TensorToWrite> tensors;
    for (const std::string& name : {target, target2}) {
      const auto& shape = weights[name].first;
      const int64_t out = shape[0], in = shape[1];
      std::vector<float> a(r * in), b(out * r, 0.f);
      for (float& v : a) v = normal(rng);
      if (!zero_b) {
        for (float& v : b) v = normal(rng);
      }
      std::vector<float> delta(out * in, 0.f);
      for (int64_t i = 0; i < out; ++i) {
        for (int64_t j = 0; j < in; ++j) {
          double s = 0;
          for (int k = 0; k < r; ++k) s += double(b[i * r + k]) * a[k * in + j];
          delta[i * in + j] = static_cast<float>(s * alpha / r);
        }
      }
      if (deltas != nullptr) (*deltas)[name] = delta;
      // colpali-engine's PEFT naming.
      const std::string module = CheckpointKey(name, KeyLayout::kColPaliEngine);
      const std::string stem = "base_model.model." + module.substr(0, module.size() - 7);
      tensors.push_back(F32Tensor(stem + ".lora_A.weight", {r, in}, a));
      tensors.push_back(F32Tensor(stem + ".lora_B.weight", {out, r}, b));
    }
    REQUIRE(WriteSafetensors((dir / "adapter_model.safetensors").string(), tensors).ok());
  };

  SECTION("a zero B matrix leaves the base model unchanged") {
    write_adapter(root / "zero", true, nullptr);
    auto model = Load((root / "zero").string());
    auto q = EmbedQueries(*model, queries);
    for (size_t i = 0; i < q.size(); ++i) CHECK(MaxAbsDiff(q[i], base_q[i]) == 0);
  }
  SECTION("a nonzero adapter changes outputs and equals pre-merged weights") {
    std::map<std::string, std::vector<float>> deltas;
    write_adapter(root / "lora", false, &deltas);
    auto model = Load((root / "lora").string());
    auto q = EmbedQueries(*model, queries);
    auto p = EmbedPages(*model, {"photo_800x600.jpg"});
    CHECK(MaxAbsDiff(q[0], base_q[0]) > 1e-3);
    CHECK(MaxAbsDiff(p[0], base_p[0]) > 1e-3);
    // The same merge written out as a plain float32 checkpoint.
    fs::path merged = root / "merged";
    fs::create_directories(merged);
    for (const char* f : {"config.json", "preprocessor_config.json", "tokenizer.model"}) {
      fs::copy_file(fs::path(kModel) / f, merged / f);
    }
    std::vector<TensorToWrite> tensors;
    for (auto& [name, entry] : weights) {
      std::vector<float> values = entry.second;
      if (deltas.count(name)) {
        for (size_t i = 0; i < values.size(); ++i) values[i] += deltas[name][i];
      }
      tensors.push_back(F32Tensor(CheckpointKey(name, KeyLayout::kTransformers), entry.first, values));
    }
    REQUIRE(WriteSafetensors((merged / "model.safetensors").string(), tensors).ok());
    auto premerged = Load(merged.string());
    auto mq = EmbedQueries(*premerged, queries);
    auto mp = EmbedPages(*premerged, {"photo_800x600.jpg"});
    double worst = 0;
    for (size_t i = 0; i < q.size(); ++i) worst = std::max(worst, MaxAbsDiff(q[i], mq[i]));
    worst = std::max(worst, MaxAbsDiff(p[0], mp[0]));
    WARN("LoRA merged at load vs pre-merged checkpoint: max |diff| " << worst);
    CHECK(worst < 1e-5);
  }
  SECTION("a base that is not a local directory fails clearly") {
    fs::path dir = root / "nobase";
    write_adapter(dir, true, nullptr);
    WriteFile(dir / "adapter_config.json",
              nlohmann::json({{"peft_type", "LORA"}, {"r", r}, {"lora_alpha", alpha},
                              {"base_model_name_or_path", "vidore/colpaligemma-3b-pt-448-base"}})
                  .dump());
    auto model = LoadColPali(dir.string(), RuntimeOptions());
    REQUIRE_FALSE(model.ok());
    CHECK(model.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK(std::string(model.status().message()).find("base_model_name_or_path") != std::string::npos);
  }
  fs::remove_all(root);
}
