// HfTokenizerJson (Hugging Face tokenizer.json, BPE) on hand-written files with hand-computed
// ids; ColPaliTokenizer over tokenizer.json; and, tagged [hf_fixture], agreement with the ids
// the real `tokenizers` library gives for the reference tiny ColPali (tests/data/colpali-reference/hf).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "server/models/colpali/colpali_config.h"
#include "server/models/colpali/colpali_tokenizer.h"
#include "server/tokenizers/hf_tokenizer_json.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using embedserve::models::colpali::ColPaliConfig;
using embedserve::models::colpali::ColPaliTokenizer;
using embedserve::tokenizers::HfTokenizerJson;
using embedserve::models::colpali::ReadColPaliConfig;
using embedserve::testing::Slurp;
using Json = nlohmann::json;
using Ids = std::vector<int32_t>;

namespace {

const std::string kRef = std::string(EMBEDSERVE_TEST_DATA) + "/colpali-reference/";
const std::string kModel = kRef + "model";
const std::string kSpace = "\xe2\x96\x81";  // U+2581, what Gemma's normalizer puts for " "

// Gemma-shaped: Replace(" " -> U+2581), no pre-tokenizer, BPE with byte fallback and fused
// unknowns. Pieces: a=5 b=6 c=7 U+2581=8 ab=9 bc=10 abc=11 U+2581b=12, bytes E2 82 AC C3 =
// 13..16. Merges by rank: "b c" (0), "a b" (1), "U+2581 b" (2).
Json Gemmaish() {
  Json vocab = {{"<pad>", 0}, {"<eos>", 1}, {"<bos>", 2}, {"<unk>", 3}, {"<image>", 4},
                {"a", 5},     {"b", 6},     {"c", 7},     {kSpace, 8},  {"ab", 9},
                {"bc", 10},   {"abc", 11},  {kSpace + "b", 12},         {"<0xE2>", 13},
                {"<0x82>", 14}, {"<0xAC>", 15}, {"<0xC3>", 16}};
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", Json::array()},
      {"normalizer", {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}}},
      {"pre_tokenizer", nullptr},
      {"post_processor", nullptr},
      {"decoder", nullptr},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", {"b c", "a b", kSpace + " b"}}}}};
}

Json Added(int id, const std::string& content, bool special, bool normalized = false) {
  return {{"id", id},         {"content", content},       {"single_word", false},
          {"lstrip", false},  {"rstrip", false},          {"normalized", normalized},
          {"special", special}};
}

std::unique_ptr<HfTokenizerJson> Make(const Json& j) {
  auto t = HfTokenizerJson::Parse(j.dump());
  INFO(t.status().ToString());
  REQUIRE(t.ok());
  return *std::move(t);
}

Ids Encode(const HfTokenizerJson& t, const std::string& text) {
  auto ids = t.Encode(text);
  INFO(ids.status().ToString());
  REQUIRE(ids.ok());
  return *ids;
}

void WriteFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

fs::path TempDir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() /
                 ("colpali_tokjson_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// The reference model's config and preprocessor (no weights, no tokenizer).
fs::path ConfigDir(const std::string& name) {
  fs::path dir = TempDir(name);
  for (const char* f : {"config.json", "preprocessor_config.json"}) {
    fs::copy_file(fs::path(kModel) / f, dir / f);
  }
  return dir;
}

// A tokenizer.json fit for the reference config: the reference tokenizer.model's first ids
// (<pad> 0, <eos> 1, <bos> 2, <unk> 3, <image> 4, "\n" 5, <0x00>..<0xFF> 6..261) and no
// other piece, so every other character is byte fallback: id = byte + 6.
Json ByteLevelColPali() {
  Json vocab = {{"<pad>", 0}, {"<eos>", 1}, {"<bos>", 2}, {"<unk>", 3}, {"<image>", 4}, {"\n", 5}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 6 + b;
  }
  Json j = Gemmaish();
  j["model"]["vocab"] = vocab;
  j["model"]["merges"] = Json::array();
  j["added_tokens"] = {Added(0, "<pad>", true), Added(1, "<eos>", true), Added(2, "<bos>", true),
                       Added(3, "<unk>", true), Added(4, "<image>", false),
                       Added(5, "\n", false)};
  return j;
}

Ids Bytes(const std::string& s) {
  Ids ids;
  for (unsigned char c : s) ids.push_back(6 + c);
  return ids;
}

Ids Concat(std::initializer_list<Ids> parts) {
  Ids out;
  for (const Ids& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace

TEST_CASE("merges apply by rank, not by the length of the piece they make") {
  // "abc" is a piece, but no merge makes it: b+c (rank 0) wins over a+b (rank 1).
  CHECK(Encode(*Make(Gemmaish()), "abc") == Ids{5, 10});
  Json swapped = Gemmaish();
  swapped["model"]["merges"] = {"a b", "b c"};
  CHECK(Encode(*Make(swapped), "abc") == Ids{9, 7});
  Json chained = Gemmaish();
  chained["model"]["merges"] = {"a b", "b c", "ab c"};
  CHECK(Encode(*Make(chained), "abc") == Ids{11});
  // Equal ranks go left to right.
  CHECK(Encode(*Make(swapped), "abab") == Ids{9, 9});
  CHECK(Encode(*Make(Gemmaish()), "").empty());
}

TEST_CASE("merges read the same as \"a b\" strings and as [a, b] pairs") {
  Json pairs = Gemmaish();
  // (Json::array: a brace list of string pairs would read as an object.)
  pairs["model"]["merges"] = Json::array({Json::array({"b", "c"}), Json::array({"a", "b"}),
                                          Json::array({kSpace, "b"})});
  Json versioned = Gemmaish();
  versioned["model"]["merges"] = {"#version: 0.2", "b c", "a b", kSpace + " b"};
  for (const std::string text : {"abc", "a b", "cab b", " ab"}) {
    INFO(text);
    const Ids expected = Encode(*Make(Gemmaish()), text);
    CHECK(Encode(*Make(pairs), text) == expected);
    CHECK(Encode(*Make(versioned), text) == expected);
  }
  CHECK(Encode(*Make(pairs), "abc") == Ids{5, 10});
}

TEST_CASE("an unknown character falls back to its UTF-8 bytes, else to one fused <unk>") {
  auto t = Make(Gemmaish());
  CHECK(Encode(*t, "a\xe2\x82\xac") == Ids{5, 13, 14, 15});  // "a€": E2 82 AC
  // "é" is C3 A9 and <0xA9> is missing: the whole character is unknown.
  CHECK(Encode(*t, "\xc3\xa9") == Ids{3});
  CHECK(Encode(*t, "\xc3\xa9\xc3\xa9" "a") == Ids{3, 5});  // fused
  Json unfused = Gemmaish();
  unfused["model"]["fuse_unk"] = false;
  CHECK(Encode(*Make(unfused), "\xc3\xa9\xc3\xa9" "a") == Ids{3, 3, 5});
  Json no_fallback = Gemmaish();
  no_fallback["model"]["byte_fallback"] = false;
  CHECK(Encode(*Make(no_fallback), "\xe2\x82\xac") == Ids{3});
  CHECK_FALSE(t->Encode("a\xff").ok());  // not UTF-8
}

TEST_CASE("the normalizer turns spaces into U+2581 before BPE") {
  auto t = Make(Gemmaish());
  CHECK(Encode(*t, "a b") == Ids{5, 12});
  CHECK(Encode(*t, "  b") == Ids{8, 12});
  CHECK(Encode(*t, "b ") == Ids{6, 8});
  Json prepend = Gemmaish();
  prepend["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Prepend"}, {"prepend", kSpace}},
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}}}}};
  CHECK(Encode(*Make(prepend), "b c") == Ids{12, 8, 7});
  CHECK(Encode(*Make(prepend), "").empty());  // Prepend leaves an empty text empty
  Json none = Gemmaish();
  none["normalizer"] = nullptr;
  CHECK(Encode(*Make(none), "a" + kSpace + "b") == Ids{5, 12});
}

TEST_CASE("added tokens are split out first, longest match, the rest normalized per piece") {
  Json j = Gemmaish();
  j["added_tokens"] = {Added(0, "<pad>", true), Added(1, "<eos>", true), Added(2, "<bos>", true),
                       Added(4, "<image>", false), Added(17, "<ima", false),
                       Added(18, "c c", false, /*normalized=*/true)};
  auto t = Make(j);
  CHECK(Encode(*t, "a<image>b<bos>") == Ids{5, 4, 6, 2});
  CHECK(Encode(*t, "<imab") == Ids{17, 6});
  CHECK(Encode(*t, "<bos><bos>") == Ids{2, 2});
  CHECK(Encode(*t, "a <bos> b") == Ids{5, 8, 2, 12});
  CHECK(Encode(*t, "c c") == Ids{18});  // matched as "c\u2581c" in the normalized text
  CHECK(t->TokenToId("<ima") == 17);
  CHECK(t->IdToToken(18) == "c c");
  CHECK(t->size() == 19);
  CHECK(t->IsSpecialToken(2));
  CHECK_FALSE(t->IsSpecialToken(4));

  // Normalization runs on each piece between tokens: Prepend applies to each.
  Json prepend = j;
  prepend["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Prepend"}, {"prepend", kSpace}},
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}}}}};
  CHECK(Encode(*Make(prepend), "b<bos>b") == Ids{12, 2, 12});

  // lstrip/rstrip take the spaces around the token with it.
  Json strip = Gemmaish();
  strip["added_tokens"] = {Added(1, "<eos>", true)};
  strip["added_tokens"][0]["lstrip"] = true;
  strip["added_tokens"][0]["rstrip"] = true;
  CHECK(Encode(*Make(strip), "a <eos> b") == Ids{5, 1, 6});

  // single_word: only where no word character touches it.
  Json single = Gemmaish();
  single["added_tokens"] = {Added(9, "ab", false)};
  single["added_tokens"][0]["single_word"] = true;
  CHECK(Encode(*Make(single), "ab c") == Ids{9, 8, 7});
  CHECK(Encode(*Make(single), "abc") == Ids{5, 10});
}

TEST_CASE("a Split pre-tokenizer cuts words by its behavior") {
  Json j = {{"added_tokens", Json::array()},
            {"normalizer", nullptr},
            {"pre_tokenizer", nullptr},
            {"model",
             {{"type", "BPE"},
              {"unk_token", "<unk>"},
              {"vocab", {{"<unk>", 0}, {"a", 1}, {"b", 2}, {" ", 3}, {" b", 4}, {"  ", 5}}},
              {"merges", Json::array({Json::array({" ", "b"}), Json::array({" ", " "})})}}}};
  CHECK(Encode(*Make(j), "a b") == Ids{1, 4});
  auto with = [&](const std::string& behavior, bool invert = false) {
    Json k = j;
    k["pre_tokenizer"] = {{"type", "Split"},
                          {"pattern", {{"String", " "}}},
                          {"behavior", behavior},
                          {"invert", invert}};
    return Make(k);
  };
  CHECK(Encode(*with("MergedWithPrevious"), "a b") == Ids{1, 3, 2});
  CHECK(Encode(*with("MergedWithNext"), "a b") == Ids{1, 4});
  CHECK(Encode(*with("Removed"), "a b") == Ids{1, 2});
  CHECK(Encode(*with("Isolated"), "a  b") == Ids{1, 3, 3, 2});
  CHECK(Encode(*with("Contiguous"), "a  b") == Ids{1, 5, 2});
  CHECK(Encode(*with("Removed", /*invert=*/true), "a b") == Ids{3});
  // Gemma's newer files: Split(" ", MergedWithPrevious) after Replace(" " -> U+2581) never
  // finds a space, so it changes nothing.
  Json gemma = Gemmaish();
  gemma["pre_tokenizer"] = {{"type", "Sequence"},
                            {"pretokenizers",
                             {{{"type", "Split"},
                               {"pattern", {{"String", " "}}},
                               {"behavior", "MergedWithPrevious"},
                               {"invert", false}}}}};
  CHECK(Encode(*Make(gemma), "a b abc") == Encode(*Make(Gemmaish()), "a b abc"));
}

TEST_CASE("malformed or unsupported tokenizer.json files are refused, naming the field") {
  struct Case {
    const char* name;
    std::function<void(Json&)> edit;
    absl::StatusCode code;
    std::vector<std::string> mentions;
  };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  const auto kUnsupported = absl::StatusCode::kFailedPrecondition;
  const std::vector<Case> cases = {
      {"no model", [](Json& j) { j.erase("model"); }, kInvalid, {"model"}},
      {"unigram", [](Json& j) { j["model"]["type"] = "Unigram"; }, kUnsupported, {"model.type", "Unigram"}},
      {"vocab not an object", [](Json& j) { j["model"]["vocab"] = Json::array(); }, kInvalid, {"model.vocab"}},
      {"negative id", [](Json& j) { j["model"]["vocab"]["a"] = -1; }, kInvalid, {"model.vocab", "'a'"}},
      {"no merges", [](Json& j) { j["model"].erase("merges"); }, kInvalid, {"model.merges"}},
      {"merge of unknown piece", [](Json& j) { j["model"]["merges"][1] = "a z"; }, kInvalid, {"model.merges[1]", "'z'"}},
      {"merged piece missing", [](Json& j) { j["model"]["merges"][0] = "c a"; }, kInvalid, {"model.merges[0]", "'ca'"}},
      {"merge without space", [](Json& j) { j["model"]["merges"][0] = "bc"; }, kInvalid, {"model.merges[0]"}},
      {"merge triple", [](Json& j) { j["model"]["merges"][0] = {"a", "b", "c"}; }, kInvalid, {"model.merges[0]"}},
      {"unk not in vocab", [](Json& j) { j["model"]["unk_token"] = "<oov>"; }, kInvalid, {"model.unk_token"}},
      {"dropout", [](Json& j) { j["model"]["dropout"] = 0.1; }, kUnsupported, {"model.dropout"}},
      {"subword prefix", [](Json& j) { j["model"]["continuing_subword_prefix"] = "##"; }, kUnsupported, {"model.continuing_subword_prefix"}},
      {"fuse_unk not bool", [](Json& j) { j["model"]["fuse_unk"] = "yes"; }, kInvalid, {"model.fuse_unk"}},
      {"normalizer NFKC", [](Json& j) { j["normalizer"] = {{"type", "NFKC"}}; }, kUnsupported, {"normalizer.type", "NFKC"}},
      {"nested normalizer", [](Json& j) { j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "Lowercase"}}}}}; }, kUnsupported, {"normalizer.normalizers[0].type", "Lowercase"}},
      {"regex replace", [](Json& j) { j["normalizer"]["pattern"] = {{"Regex", " +"}}; }, kUnsupported, {"normalizer.pattern", "Regex"}},
      {"replace without content", [](Json& j) { j["normalizer"].erase("content"); }, kInvalid, {"normalizer.content"}},
      {"metaspace", [](Json& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", kSpace}}; }, kUnsupported, {"pre_tokenizer.type", "Metaspace"}},
      {"split behavior", [](Json& j) { j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Sideways"}, {"invert", false}}; }, kInvalid, {"pre_tokenizer.behavior", "Sideways"}},
      {"added token id", [](Json& j) { j["added_tokens"] = {Added(7, "<bos>", true)}; }, kInvalid, {"added_tokens[0].id", "<bos>"}},
      {"added token after vocab", [](Json& j) { j["added_tokens"] = {Added(40, "<new>", true)}; }, kInvalid, {"added_tokens[0].id", "17"}},
      {"added token content", [](Json& j) { j["added_tokens"] = {{{"id", 2}}}; }, kInvalid, {"added_tokens[0].content"}},
      {"added tokens not a list", [](Json& j) { j["added_tokens"] = 3; }, kInvalid, {"added_tokens"}},
      {"version", [](Json& j) { j["version"] = "2.0"; }, kUnsupported, {"version"}},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    Json j = Gemmaish();
    c.edit(j);
    auto t = HfTokenizerJson::Parse(j.dump());
    REQUIRE_FALSE(t.ok());
    INFO(t.status().ToString());
    CHECK(t.status().code() == c.code);
    for (const std::string& m : c.mentions) {
      CHECK(std::string(t.status().message()).find(m) != std::string::npos);
    }
  }
  for (const std::string bad : {"", "{", "[]", "{\"model\": 3}", "null"}) {
    INFO(bad);
    auto t = HfTokenizerJson::Parse(bad);
    CHECK(t.status().code() == kInvalid);
  }
  CHECK(HfTokenizerJson::Load("/nonexistent/tokenizer.json").status().code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("ColPaliTokenizer reads tokenizer.json, preferring it over tokenizer.model") {
  const ColPaliConfig config = *ReadColPaliConfig(kModel);
  fs::path dir = ConfigDir("prompts");
  WriteFile(dir / "tokenizer.json", ByteLevelColPali().dump());
  auto t = ColPaliTokenizer::Load(dir.string(), config);
  INFO(t.status().ToString());
  REQUIRE(t.ok());
  CHECK((*t)->source() == "tokenizer.json");
  const Ids page = Concat({Ids(config.preprocess.image_seq_length, 4), {2},
                           Bytes("Describe" + kSpace + "the" + kSpace + "image."), {5}});
  CHECK((*t)->page_ids() == page);
  auto q = (*t)->EncodeQuery("a <bos>", 512, false);
  REQUIRE(q.ok());
  CHECK(q->ids == Concat({{2}, Bytes("Question:" + kSpace + "a" + kSpace), {2}, Ids(10, 0), {5}}));
  CHECK((*t)->TokenString(4) == "<image>");
  CHECK((*t)->vocab_size() == 262);
  CHECK_FALSE((*t)->EncodeQuery("x<image>", 512, false).ok());

  fs::copy_file(fs::path(kModel) / "tokenizer.model", dir / "tokenizer.model");
  auto both = ColPaliTokenizer::Load(dir.string(), config);
  REQUIRE(both.ok());
  CHECK((*both)->source() == "tokenizer.json");
  CHECK((*both)->page_ids() == page);

  WriteFile(dir / "tokenizer.json", "{\"model\": {\"type\": \"WordPiece\"}}");
  auto broken = ColPaliTokenizer::Load(dir.string(), config);
  REQUIRE_FALSE(broken.ok());
  CHECK(broken.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(broken.status().message()).find("WordPiece") != std::string::npos);
  CHECK(std::string(broken.status().message()).find("remove tokenizer.json") != std::string::npos);

  fs::remove(dir / "tokenizer.json");
  auto sp = ColPaliTokenizer::Load(dir.string(), config);
  REQUIRE(sp.ok());
  CHECK((*sp)->source() == "tokenizer.model");

  fs::remove(dir / "tokenizer.model");
  CHECK(ColPaliTokenizer::Load(dir.string(), config).status().code() ==
        absl::StatusCode::kNotFound);
  fs::remove_all(dir);
}

TEST_CASE("a tokenizer.json without the config's special tokens is refused at load") {
  const ColPaliConfig config = *ReadColPaliConfig(kModel);
  fs::path dir = ConfigDir("specials");
  Json j = ByteLevelColPali();
  j["model"]["vocab"].erase("<image>");
  j["added_tokens"].erase(4);
  j["model"]["vocab"]["<im>"] = 4;  // keep ids dense; the config's <image> id 4 is now <im>...
  WriteFile(dir / "tokenizer.json", j.dump());
  CHECK(ColPaliTokenizer::Load(dir.string(), config).ok());  // ...which only needs to exist
  j["model"]["vocab"].erase("<im>");
  WriteFile(dir / "tokenizer.json", j.dump());
  auto t = ColPaliTokenizer::Load(dir.string(), config);
  REQUIRE_FALSE(t.ok());
  CHECK(t.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(t.status().message()).find("special token id 4") != std::string::npos);

  Json big = ByteLevelColPali();
  big["model"]["vocab"]["zz"] = config.text.vocab_size;  // one id past the embedding table
  WriteFile(dir / "tokenizer.json", big.dump());
  auto too_big = ColPaliTokenizer::Load(dir.string(), config);
  REQUIRE_FALSE(too_big.ok());
  CHECK(std::string(too_big.status().message()).find("vocab_size") != std::string::npos);
  fs::remove_all(dir);
}

// The fixture comes from tests/tools/make_hf_tokenizer_fixture.py run where transformers and
// tokenizers are installed: the reference tokenizer.model converted by transformers'
// GemmaConverter and saved as tokenizer.json, and the ids `tokenizers` gives for a set of
// texts (the files were made by tests/tools/make_hf_tokenizer_fixture.py with transformers
// 5.17 / tokenizers 0.23.2 on the GPU machine; see tests/data/colpali-reference/hf/README.md).
TEST_CASE("the reference tokenizer.json gives the Hugging Face library's ids", "[hf_fixture]") {
  const fs::path hf = fs::path(kRef) / "hf";
  const fs::path json_path = hf / "tokenizer.json";
  const fs::path ids_path = hf / "hf_expected_ids.json";
  if (!fs::exists(json_path) || !fs::exists(ids_path)) {
    FAIL("missing " << json_path.string() << " or " << ids_path.string()
                    << ": run tests/tools/make_hf_tokenizer_fixture.py --model "
                    << kModel << "/tokenizer.model --out " << hf.string()
                    << " where transformers and tokenizers are installed");
  }
  auto t = HfTokenizerJson::Load(json_path.string());
  INFO(t.status().ToString());
  REQUIRE(t.ok());
  const Json expected = Json::parse(Slurp(ids_path.string()));
  REQUIRE(expected.contains("texts"));
  REQUIRE(expected.contains("ids"));
  const auto texts = expected["texts"].get<std::vector<std::string>>();
  const auto ids = expected["ids"].get<std::vector<Ids>>();
  REQUIRE(texts.size() == ids.size());
  REQUIRE_FALSE(texts.empty());
  for (size_t i = 0; i < texts.size(); ++i) {
    INFO("text " << i << ": '" << texts[i] << "'");
    auto ours = (*t)->Encode(texts[i]);
    REQUIRE(ours.ok());
    CHECK(*ours == ids[i]);
  }

  // ColPaliTokenizer from tokenizer.json and from tokenizer.model: the same prompts.
  const ColPaliConfig config = *ReadColPaliConfig(kModel);
  fs::path dir = ConfigDir("hf_fixture");
  fs::copy_file(json_path, dir / "tokenizer.json");
  auto from_json = ColPaliTokenizer::Load(dir.string(), config);
  auto from_model = ColPaliTokenizer::Load(kModel, config);
  INFO(from_json.status().ToString());
  REQUIRE(from_json.ok());
  REQUIRE(from_model.ok());
  REQUIRE((*from_json)->source() == "tokenizer.json");
  REQUIRE((*from_model)->source() == "tokenizer.model");
  const Json reference = Json::parse(Slurp(kRef + "reference.json"));
  CHECK((*from_json)->page_ids() == reference["page_ids"].get<Ids>());
  CHECK((*from_json)->page_ids() == (*from_model)->page_ids());
  std::vector<std::string> queries = reference["queries"].get<std::vector<std::string>>();
  queries.insert(queries.end(), texts.begin(), texts.end());
  for (const std::string& query : queries) {
    INFO("query '" << query << "'");
    auto a = (*from_json)->EncodeQuery(query, 512, true);
    auto b = (*from_model)->EncodeQuery(query, 512, true);
    REQUIRE(a.ok() == b.ok());
    if (a.ok()) CHECK(a->ids == b->ids);
  }
  fs::remove_all(dir);
}
