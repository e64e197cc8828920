// colpali-engine's checkpoints as users have them: tiny replicas of vidore/colpaligemma-3b-pt-448-base,
// vidore/colpali-v1.2 (LoRA adapter naming the base by hub id) and vidore/colpali-v1.2-merged in
// a fake Hugging Face cache, loaded by name offline; detection; the prompt profiles' token ids.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "server/model_loader.h"
#include "server/models/colpali/colpali_config.h"
#include "server/models/colpali/colpali_model.h"
#include "server/models/colpali/colpali_random_checkpoint.h"
#include "server/models/colpali/colpali_tokenizer.h"
#include "server/sources/hf_hub.h"
#include "server/weights/safetensors.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using embedserve::models::Embedding;
using embedserve::models::ImageInput;
using embedserve::models::ImageLimits;
using embedserve::models::Model;
using embedserve::models::RuntimeOptions;
using embedserve::models::TextInput;
using embedserve::weights::TensorArchive;
using embedserve::weights::TensorDtype;
using embedserve::weights::TensorToWrite;
using embedserve::weights::WriteSafetensors;
using namespace embedserve::models::colpali;
using embedserve::testing::Slurp;

namespace {

const std::string kRef = std::string(EMBEDSERVE_TEST_DATA) + "/colpali-reference/";
const std::string kTokenizerJson = kRef + "hf/tokenizer.json";
constexpr const char* kSnapshot = "0123456789abcdef0123456789abcdef01234567";
constexpr const char* kBaseId = "vidore/colpaligemma-3b-pt-448-base";
constexpr const char* kAdapterId = "vidore/colpali-v1.2";
constexpr const char* kMergedId = "vidore/colpali-v1.2-merged";
constexpr int kRank = 4;
constexpr double kAlpha = 8;  // scale alpha / r = 2

void WriteFile(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// The tiny sizes of tests/data/colpali-reference (vocabulary 400, <image> = 4, 16 image
// tokens), colpali-engine's 128-d output.
ColPaliConfig TinyConfig() {
  absl::StatusOr<ColPaliConfig> c = ReadColPaliConfig(kRef + "model");
  REQUIRE(c.ok());
  c->embedding_dim = 128;
  return *c;
}

// Puts every file of `dir` into `cache` as repo `repo_id` at kSnapshot (blobs + relative
// symlinks + refs/main), the layout huggingface_hub writes.
void AddToHubCache(const fs::path& cache, const std::string& repo_id, const fs::path& dir) {
  const size_t slash = repo_id.find('/');
  const fs::path repo = cache / ("models--" + repo_id.substr(0, slash) + "--" + repo_id.substr(slash + 1));
  fs::create_directories(repo / "blobs");
  fs::create_directories(repo / "refs");
  fs::create_directories(repo / "snapshots" / kSnapshot);
  int n = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string blob = "blob" + std::to_string(n++);
    fs::copy_file(entry.path(), repo / "blobs" / blob);
    fs::create_symlink("../../blobs/" + blob, repo / "snapshots" / kSnapshot / entry.path().filename());
  }
  std::ofstream(repo / "refs" / "main") << kSnapshot;
}

std::map<std::string, at::Tensor> ReadTensors(const std::string& file) {
  auto archive = TensorArchive::OpenFile(file);
  REQUIRE(archive.ok());
  std::map<std::string, at::Tensor> out;
  for (const std::string& name : (*archive)->Names()) {
    const auto* view = (*archive)->Find(name);
    REQUIRE(view->dtype == TensorDtype::kF32);
    out[name] = at::from_blob(const_cast<uint8_t*>(view->data), view->shape, at::kFloat).clone();
  }
  return out;
}

TensorToWrite ToWrite(const std::string& name, const at::Tensor& t) {
  const at::Tensor c = t.to(at::kFloat).contiguous();
  TensorToWrite w;
  w.name = name;
  w.shape = c.sizes().vec();
  w.bytes.assign(reinterpret_cast<const char*>(c.data_ptr<float>()), c.numel() * sizeof(float));
  return w;
}

// Two shards and model.safetensors.index.json, as the real base and -merged repos ship.
void WriteSharded(const std::map<std::string, at::Tensor>& tensors, const fs::path& dir) {
  std::vector<TensorToWrite> shard[2];
  nlohmann::json map = nlohmann::json::object();
  int64_t total = 0;
  size_t i = 0;
  for (const auto& [name, t] : tensors) {
    const int s = i++ < tensors.size() / 2 ? 0 : 1;
    shard[s].push_back(ToWrite(name, t));
    total += static_cast<int64_t>(shard[s].back().bytes.size());
    map[name] = s == 0 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  REQUIRE(WriteSafetensors((dir / "model-00001-of-00002.safetensors").string(), shard[0]).ok());
  REQUIRE(WriteSafetensors((dir / "model-00002-of-00002.safetensors").string(), shard[1]).ok());
  WriteFile(dir / "model.safetensors.index.json",
            nlohmann::json({{"metadata", {{"total_size", total}}}, {"weight_map", map}}).dump(2));
}

void WriteTokenizerFiles(const fs::path& dir) {
  fs::copy_file(kTokenizerJson, dir / "tokenizer.json");
  WriteFile(dir / "special_tokens_map.json",
            R"({"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"})");
  WriteFile(dir / "tokenizer_config.json",
            R"({"add_bos_token": true, "add_eos_token": false, "tokenizer_class": "GemmaTokenizer"})");
}

// The language-model linears and custom_text_proj: colpali-v1.2's target_modules.
bool Adapted(const std::string& key) {
  if (key.rfind("custom_text_proj.", 0) == 0) return key == "custom_text_proj.weight";
  if (key.find("language_model") == std::string::npos || key.size() < 7 ||
      key.compare(key.size() - 7, 7, ".weight") != 0) {
    return false;
  }
  for (const char* m : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}) {
    if (key.find(std::string(".") + m + ".") != std::string::npos) return true;
  }
  return false;
}

struct Replicas {
  fs::path root, cache, base_local;
};

// Base (random, colpali-engine layout, sharded), adapter (LoRA over every target module,
// naming the base by hub id) and -merged (W + alpha/r * B @ A, merged here in double).
const Replicas& HubReplicas() {
  static const Replicas r = [] {
    Replicas out;
    out.root = embedserve::testing::FreshTempDir("colpali_checkpoints");
    out.cache = out.root / "hub";
    const fs::path single = out.root / "single";
    REQUIRE(WriteRandomColPaliEngineCheckpoint(TinyConfig(), single.string(), "F32", 21).ok());
    const std::map<std::string, at::Tensor> base = ReadTensors((single / "model.safetensors").string());

    out.base_local = out.root / "base";
    fs::create_directories(out.base_local);
    for (const char* f : {"config.json", "preprocessor_config.json"}) {
      fs::copy_file(single / f, out.base_local / f);
    }
    WriteTokenizerFiles(out.base_local);
    WriteSharded(base, out.base_local);

    const fs::path adapter = out.root / "adapter";
    fs::create_directories(adapter);
    WriteFile(adapter / "adapter_config.json",
              nlohmann::json({{"alpha_pattern", nlohmann::json::object()},
                              {"auto_mapping", nullptr},
                              {"base_model_name_or_path", kBaseId},
                              {"bias", "none"},
                              {"fan_in_fan_out", false},
                              {"inference_mode", true},
                              {"init_lora_weights", "gaussian"},
                              {"layers_pattern", nullptr},
                              {"layers_to_transform", nullptr},
                              {"lora_alpha", kAlpha},
                              {"lora_dropout", 0.1},
                              {"modules_to_save", nullptr},
                              {"peft_type", "LORA"},
                              {"r", kRank},
                              {"rank_pattern", nlohmann::json::object()},
                              {"revision", nullptr},
                              {"target_modules",
                               "(.*(language_model).*(down_proj|gate_proj|up_proj|k_proj|q_proj|"
                               "v_proj|o_proj).*$|.*(custom_text_proj).*$)"},
                              {"task_type", "FEATURE_EXTRACTION"},
                              {"use_dora", false},
                              {"use_rslora", false}})
                  .dump(2));
    fs::copy_file(single / "preprocessor_config.json", adapter / "preprocessor_config.json");
    WriteTokenizerFiles(adapter);
    std::map<std::string, at::Tensor> merged = base;
    std::vector<TensorToWrite> lora;
    at::manual_seed(5);
    for (const auto& [key, w] : base) {
      if (!Adapted(key)) continue;
      const at::Tensor a = at::randn({kRank, w.size(1)}) * 0.3;
      const at::Tensor b = at::randn({w.size(0), kRank}) * 0.3;
      const std::string stem = "base_model.model." + key.substr(0, key.size() - 7);
      lora.push_back(ToWrite(stem + ".lora_A.weight", a));
      lora.push_back(ToWrite(stem + ".lora_B.weight", b));
      merged[key] = (w.to(at::kDouble) +
                     at::matmul(b.to(at::kDouble), a.to(at::kDouble)) * (kAlpha / kRank))
                        .to(at::kFloat);
    }
    REQUIRE(lora.size() == 2 * (7 * 2 + 1));  // 2 layers x 7 linears + custom_text_proj
    REQUIRE(WriteSafetensors((adapter / "adapter_model.safetensors").string(), lora).ok());

    const fs::path merged_dir = out.root / "merged";
    fs::create_directories(merged_dir);
    for (const char* f : {"config.json", "preprocessor_config.json"}) {
      fs::copy_file(single / f, merged_dir / f);
    }
    WriteTokenizerFiles(merged_dir);
    WriteSharded(merged, merged_dir);

    AddToHubCache(out.cache, kBaseId, out.base_local);
    AddToHubCache(out.cache, kAdapterId, adapter);
    AddToHubCache(out.cache, kMergedId, merged_dir);
    return out;
  }();
  return r;
}

// hf:ID offline from the replica cache, as the server resolves --model NAME=hf:ID.
std::string Resolve(const std::string& repo_id) {
  const Replicas& r = HubReplicas();
  setenv("HF_HUB_CACHE", r.cache.c_str(), 1);
  setenv("HF_HUB_OFFLINE", "1", 1);
  absl::StatusOr<std::string> dir = embedserve::sources::ResolveModelSource("hf:" + repo_id);
  INFO(dir.status().ToString());
  REQUIRE(dir.ok());
  return *dir;
}

std::unique_ptr<Model> LoadByName(const std::string& repo_id, const std::string& profile = "") {
  const std::string dir = Resolve(repo_id);
  RuntimeOptions options;
  options.device = embedserve::testing::TestDevice();
  options.colpali_prompt_profile = profile;
  auto model = embedserve::LoadModel(dir, options);
  INFO(repo_id << ": " << model.status().ToString());
  REQUIRE(model.ok());
  return *std::move(model);
}

std::vector<Embedding> Embed(Model& model, const std::vector<std::string>& queries,
                             const std::vector<std::string>& pages) {
  std::vector<TextInput> texts;
  for (const auto& q : queries) {
    auto t = model.PrepareText(q, false);
    REQUIRE(t.ok());
    texts.push_back(*std::move(t));
  }
  std::vector<const TextInput*> tp;
  for (const auto& t : texts) tp.push_back(&t);
  auto q = model.EmbedTexts(tp);
  REQUIRE(q.ok());
  std::vector<ImageInput> images;
  for (const auto& f : pages) {
    auto i = model.PrepareImage(Slurp(kRef + "images/" + f), ImageLimits());
    REQUIRE(i.ok());
    images.push_back(*std::move(i));
  }
  std::vector<const ImageInput*> ip;
  for (const auto& i : images) ip.push_back(&i);
  auto p = model.EmbedImages(ip);
  REQUIRE(p.ok());
  std::vector<Embedding> all = *std::move(q);
  all.insert(all.end(), p->begin(), p->end());
  return all;
}

double MaxAbsDiff(const Embedding& a, const Embedding& b) {
  REQUIRE(a.rows == b.rows);
  REQUIRE(a.dim == b.dim);
  double worst = 0;
  for (size_t i = 0; i < a.values.size(); ++i) {
    worst = std::max(worst, std::abs(double(a.values[i]) - b.values[i]));
  }
  return worst;
}

// Token ids of the tiny reference tokenizer (tests/data/colpali-reference/hf/tokenizer.json),
// looked up by hand: <pad> 0, <bos> 2, <image> 4, "\n" 5; "Question" 338, ":" 384, "▁" 351;
// "Query" is BPE'd as "Qu" 286 "er" 275 "y" 378; "Describe the image." as "D" 386 "es" 263
// "cr" 349 "i" 356 "be" 345 "▁the" 266 "▁im" 326 "age" 318 "." 367.
const std::vector<int32_t> kPad10(10, 0);
std::vector<int32_t> Cat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
const std::vector<int32_t> kDescribe = {386, 263, 349, 356, 345, 266, 326, 318, 367};
const std::vector<int32_t> kImages(16, 4);

}  // namespace

TEST_CASE("prompt profile names map to colpali-engine's constructions") {
  CHECK(*ParsePromptProfile("transformers") == PromptProfile::kTransformers);
  CHECK(*ParsePromptProfile("colpali-engine") == PromptProfile::kColPaliEngine0313);
  CHECK(*ParsePromptProfile("colpali-engine-0.3.0") == PromptProfile::kColPaliEngine030);
  CHECK(*ParsePromptProfile("colpali-engine-0.3.3") == PromptProfile::kColPaliEngine030);
  CHECK(*ParsePromptProfile("colpali-engine-0.3.4") == PromptProfile::kColPaliEngine034);
  CHECK(*ParsePromptProfile("colpali-engine-0.3.6") == PromptProfile::kColPaliEngine034);
  CHECK(*ParsePromptProfile("colpali-engine-0.3.7") == PromptProfile::kColPaliEngine037);
  CHECK(*ParsePromptProfile("colpali-engine-0.3.10") == PromptProfile::kColPaliEngine037);
  CHECK(*ParsePromptProfile("colpali-engine-0.3.11") == PromptProfile::kColPaliEngine0311);
  CHECK(*ParsePromptProfile("colpali-engine-0.3.12") == PromptProfile::kColPaliEngine0311);
  CHECK(*ParsePromptProfile("colpali-engine-0.3.13") == PromptProfile::kColPaliEngine0313);
  CHECK(*ParsePromptProfile("colpali-engine-0.4.0") == PromptProfile::kColPaliEngine0313);
  for (const char* bad : {"", "engine", "colpali-engine-0.2.2", "colpali-engine-0.3", "colpali-engine-0.3.4x"}) {
    auto p = ParsePromptProfile(bad);
    INFO(bad);
    REQUIRE_FALSE(p.ok());
    CHECK(std::string(p.status().message()).find("transformers") != std::string::npos);
  }
  CHECK(PromptProfileName(*ParsePromptProfile("colpali-engine-0.3.5")) == "colpali-engine-0.3.4");
  CHECK(PromptProfileName(*ParsePromptProfile("colpali-engine-0.3.9")) == "colpali-engine-0.3.7");
}

TEST_CASE("each prompt profile gives its hand-written page and query ids") {
  struct Case {
    const char* profile;
    std::vector<int32_t> page, query;  // query text "Question"
  };
  const std::vector<Case> cases = {
      {"transformers", Cat({kImages, {2}, kDescribe, {5}}), Cat({{2, 338, 384, 351, 338}, kPad10, {5}})},
      {"colpali-engine-0.3.0", Cat({kImages, {2}, kDescribe, {5}}),
       Cat({{2, 338, 384, 351, 338}, kPad10, {5}})},
      {"colpali-engine-0.3.4", Cat({kImages, {2}, kDescribe, {5}}),
       Cat({{2, 286, 275, 378, 384, 351, 338}, kPad10, {5}})},
      // 0.3.7 - 0.3.10: 0.3.4's strings (processing_colpali.py unchanged but for context
      // prompts), under transformers >= 4.47, whose processor writes its own <bos> after the
      // expanded <image>s and so keeps the literal one too (NOTES.md, "Prompt profiles").
      {"colpali-engine-0.3.7", Cat({kImages, {2, 2}, kDescribe, {5}}),
       Cat({{2, 286, 275, 378, 384, 351, 338}, kPad10, {5}})},
      {"colpali-engine-0.3.10", Cat({kImages, {2, 2}, kDescribe, {5}}),
       Cat({{2, 286, 275, 378, 384, 351, 338}, kPad10, {5}})},
      {"colpali-engine-0.3.12", Cat({kImages, {2, 2}, kDescribe, {5}}),
       Cat({{2, 286, 275, 378, 384, 351, 338}, kPad10})},
      {"colpali-engine-0.3.13", Cat({kImages, {2, 2}, kDescribe, {5}}), Cat({{2, 338}, kPad10})},
  };
  const fs::path dir = embedserve::testing::FreshTempDir("colpali_profiles");
  fs::copy_file(kTokenizerJson, dir / "tokenizer.json");
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.profile) {
      for (CheckpointKind kind : {CheckpointKind::kTransformers, CheckpointKind::kColPaliEngine}) {
        ColPaliConfig config = TinyConfig();
        config.kind = kind;
        ApplyPromptProfile(DefaultPromptProfile(kind), &config);
        ApplyPromptProfile(*ParsePromptProfile(c.profile), &config);
        auto t = ColPaliTokenizer::Load(dir.string(), config);
        REQUIRE(t.ok());
        CHECK((*t)->page_ids() == c.page);
        auto q = (*t)->EncodeQuery("Question", 512, false);
        REQUIRE(q.ok());
        CHECK(q->ids == c.query);
      }
    }
  }
}

TEST_CASE("colpali-engine's paligemma config (vidore/colpali-v1.2-merged) parses with PaliGemma's defaults") {
  // The fields of the real config.json, as transformers' convert_colpali_weights_to_hf.py quotes it.
  const std::string real = R"({
    "_name_or_path": "vidore/colpaligemma-3b-pt-448-base", "architectures": ["ColPali"],
    "bos_token_id": 2, "eos_token_id": 1, "hidden_size": 2048, "ignore_index": -100,
    "image_token_index": 257152, "model_type": "paligemma", "pad_token_id": 0, "projection_dim": 2048,
    "text_config": {"hidden_size": 2048, "intermediate_size": 16384, "model_type": "gemma",
      "num_attention_heads": 8, "num_hidden_layers": 18, "num_image_tokens": 1024,
      "num_key_value_heads": 1, "torch_dtype": "float32", "vocab_size": 257216},
    "torch_dtype": "bfloat16", "transformers_version": "4.44.0",
    "vision_config": {"hidden_size": 1152, "image_size": 448, "intermediate_size": 4304,
      "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
      "num_image_tokens": 1024, "patch_size": 14, "projection_dim": 2048,
      "projector_hidden_act": "gelu_fast", "vision_use_head": false}})";
  auto c = ParseColPaliConfig(real, "config.json");
  INFO(c.status().ToString());
  REQUIRE(c.ok());
  CHECK(c->kind == CheckpointKind::kColPaliEngine);
  CHECK(c->embedding_dim_from_weights);
  CHECK(c->prompt.profile == PromptProfile::kColPaliEngine0313);
  CHECK(c->text.hidden_size == 2048);
  CHECK(c->text.head_dim == 256);
  CHECK(c->text.num_key_value_heads == 1);
  CHECK(c->text.vocab_size == 257216);
  CHECK(c->vision.hidden_size == 1152);
  CHECK(c->vision.num_hidden_layers == 27);
  CHECK(c->preprocess.image_seq_length == 1024);
  CHECK(c->image_token_index == 257152);

  nlohmann::json plain = nlohmann::json::parse(real);
  plain["architectures"] = {"PaliGemmaForConditionalGeneration"};
  auto refused = ParseColPaliConfig(plain.dump(), "config.json");
  REQUIRE_FALSE(refused.ok());
  CHECK(std::string(refused.status().message()).find("config.json: architectures") != std::string::npos);
  nlohmann::json bad = nlohmann::json::parse(real);
  bad["text_config"]["model_type"] = "gemma2";
  auto gemma2 = ParseColPaliConfig(bad.dump(), "config.json");
  REQUIRE_FALSE(gemma2.ok());
  CHECK(std::string(gemma2.status().message()).find("text_config.model_type") != std::string::npos);
}

TEST_CASE("detection claims ColPali's three checkpoint kinds and nothing else") {
  const fs::path root = embedserve::testing::FreshTempDir("colpali_detect");
  const auto& detect = ColPaliFamily().detect;
  CHECK(detect(Resolve(kBaseId)));
  CHECK(detect(Resolve(kAdapterId)));
  CHECK(detect(Resolve(kMergedId)));
  CHECK(detect(kRef + "model"));  // transformers' -hf layout
  CHECK(*embedserve::DetectFamily(Resolve(kAdapterId)) == "colpali");
  auto write_config = [&](const std::string& name, const nlohmann::json& config) {
    WriteFile(root / name / "config.json", config.dump());
    return (root / name).string();
  };
  CHECK_FALSE(detect(write_config("xlmr", {{"architectures", {"XLMRobertaForSequenceClassification"}},
                                           {"model_type", "xlm-roberta"}})));
  CHECK_FALSE(detect(write_config("bert", {{"architectures", {"BertForSequenceClassification"}},
                                           {"model_type", "bert"}})));
  CHECK_FALSE(detect(write_config("paligemma", {{"architectures", {"PaliGemmaForConditionalGeneration"}},
                                                {"model_type", "paligemma"}})));
  WriteFile(root / "openclip" / "open_clip_config.json", R"({"model_cfg": {}})");
  CHECK_FALSE(detect((root / "openclip").string()));
  WriteFile(root / "llama_lora" / "adapter_config.json",
            R"({"base_model_name_or_path": "meta-llama/Llama-3.1-8B", "peft_type": "LORA", "r": 8,
                "target_modules": ["q_proj", "v_proj"]})");
  CHECK_FALSE(detect((root / "llama_lora").string()));
}

TEST_CASE("the replicas load by their hub names offline; adapter + base equals -merged") {
  auto base = LoadByName(kBaseId);
  auto adapter = LoadByName(kAdapterId);
  auto merged = LoadByName(kMergedId);
  CHECK(merged->description().embedding_dim == 128);
  CHECK(merged->description().scoring == "maxsim");
  const std::vector<std::string> queries = {"Question", "what is the revenue in 2023?", ""};
  const std::vector<std::string> pages = {"photo_800x600.jpg"};
  const auto a = Embed(*adapter, queries, pages);
  const auto m = Embed(*merged, queries, pages);
  const auto b = Embed(*base, queries, pages);
  double worst = 0, moved = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, MaxAbsDiff(a[i], m[i]));
    moved = std::max(moved, MaxAbsDiff(a[i], b[i]));
  }
  WARN("adapter+base vs -merged: max |diff| " << worst << "; vs base alone " << moved);
  CHECK(worst < 1e-5);
  CHECK(moved > 1e-2);  // the adapter did something

  // Tokenize's view: colpali-engine checkpoints default to the newest construction.
  auto ids = adapter->PrepareText("Question", false);
  REQUIRE(ids.ok());
  CHECK(ids->token_ids == Cat({{2, 338}, kPad10}));
  auto tokens = adapter->Tokenize("Question", false);  // the Tokenize RPC's view
  REQUIRE(tokens.ok());
  CHECK(tokens->ids == ids->token_ids);
  REQUIRE(tokens->tokens.size() == 12);
  CHECK(tokens->tokens[0] == "<bos>");
  CHECK(tokens->tokens[1] == "Question");
  CHECK(tokens->tokens[11] == "<pad>");
}

TEST_CASE("the prompt profile is chosen per model through RuntimeOptions") {
  auto old = LoadByName(kAdapterId, "colpali-engine-0.3.4");
  auto ids = old->PrepareText("Question", false);
  REQUIRE(ids.ok());
  CHECK(ids->token_ids == Cat({{2, 286, 275, 378, 384, 351, 338}, kPad10, {5}}));
  auto hf = LoadByName(kMergedId, "transformers");
  ids = hf->PrepareText("Question", false);
  REQUIRE(ids.ok());
  CHECK(ids->token_ids == Cat({{2, 338, 384, 351, 338}, kPad10, {5}}));

  RuntimeOptions options;
  options.colpali_prompt_profile = "colpali-engine-0.2.0";
  auto refused = embedserve::LoadModel(Resolve(kMergedId), options);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(refused.status().message()).find("colpali-engine-0.2.0") != std::string::npos);
}

TEST_CASE("an adapter's hub base: a named directory wins; a base missing offline is NOT_FOUND") {
  const Replicas& r = HubReplicas();
  const std::string adapter_dir = Resolve(kAdapterId);
  SECTION("EMBEDSERVE_BASE_MODEL_DIRS points the hub id at a local directory") {
    const fs::path empty_cache = r.root / "empty_hub";
    fs::create_directories(empty_cache);
    setenv("HF_HUB_CACHE", empty_cache.c_str(), 1);
    setenv("EMBEDSERVE_BASE_MODEL_DIRS", (std::string(kBaseId) + "=" + r.base_local.string()).c_str(), 1);
    RuntimeOptions options;
    auto model = embedserve::LoadModel(adapter_dir, options);
    unsetenv("EMBEDSERVE_BASE_MODEL_DIRS");
    INFO(model.status().ToString());
    CHECK(model.ok());
  }
  SECTION("not in the cache, offline") {
    const fs::path empty_cache = r.root / "empty_hub2";
    fs::create_directories(empty_cache);
    setenv("HF_HUB_CACHE", empty_cache.c_str(), 1);
    auto model = embedserve::LoadModel(adapter_dir, RuntimeOptions());
    REQUIRE_FALSE(model.ok());
    CHECK(model.status().code() == absl::StatusCode::kNotFound);
    const std::string message(model.status().message());
    CHECK(message.find("base_model_name_or_path 'vidore/colpaligemma-3b-pt-448-base'") != std::string::npos);
  }
  SECTION("LoadColPali without a resolver keeps refusing hub ids") {
    auto model = LoadColPali(adapter_dir, RuntimeOptions());
    REQUIRE_FALSE(model.ok());
    CHECK(model.status().code() == absl::StatusCode::kFailedPrecondition);
  }
  setenv("HF_HUB_CACHE", r.cache.c_str(), 1);
}
