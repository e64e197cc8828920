// ClipTokenizer tests: every OpenCLIP reference text to the token id, truncation, invalid
// UTF-8, HF vocab.json/merges.txt equivalence, token strings and concurrent use.
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>
#include <unistd.h>
#include <zlib.h>

#include "server/tokenizers/clip_tokenizer.h"

namespace {

using embedserve::tokenizers::ClipTokenizer;

const ClipTokenizer& Bundled() {
  static const ClipTokenizer* tok = [] {
    auto made = ClipTokenizer::FromBundledVocab();
    REQUIRE(made.ok());
    return made->release();
  }();
  return *tok;
}

struct Reference {
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> ids;
};

const Reference& LoadReference() {
  static const Reference* ref = [] {
    std::ifstream in(std::string(EMBEDSERVE_TEST_DATA) + "/openclip-reference/reference.json");
    REQUIRE(in.good());
    const nlohmann::json json = nlohmann::json::parse(in);
    auto* r = new Reference();
    r->texts = json.at("texts").get<std::vector<std::string>>();
    r->ids = json.at("token_ids").get<std::vector<std::vector<int32_t>>>();
    return r;
  }();
  return *ref;
}

std::string MakeTempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "cliptokXXXXXX").string();
  REQUIRE(mkdtemp(pattern.data()) != nullptr);
  return pattern;
}

}  // namespace

TEST_CASE("bundled vocabulary has OpenCLIP's shape", "[tokenizer]") {
  const ClipTokenizer& tok = Bundled();
  CHECK(tok.vocab_size() == 49408);
  CHECK(tok.start_id() == 49406);
  CHECK(tok.end_id() == 49407);
  CHECK(tok.TokenString(49406) == "<start_of_text>");
  CHECK(tok.TokenString(49407) == "<end_of_text>");
  CHECK(tok.TokenString(0) == "!");
  CHECK(tok.TokenString(256) == "!</w>");
  CHECK(tok.TokenString(320) == "a</w>");
  CHECK(tok.TokenString(-1).empty());
  CHECK(tok.TokenString(49408).empty());
}

TEST_CASE("texts.json and reference.json hold the same texts", "[tokenizer]") {
  std::ifstream in(std::string(EMBEDSERVE_TEST_DATA) + "/openclip-reference/texts.json");
  REQUIRE(in.good());
  const auto texts = nlohmann::json::parse(in).get<std::vector<std::string>>();
  CHECK(texts == LoadReference().texts);
  CHECK(LoadReference().texts.size() == 66);
  CHECK(LoadReference().ids.size() == 66);
}

TEST_CASE("every OpenCLIP reference text gives OpenCLIP's token ids", "[tokenizer][reference]") {
  const Reference& ref = LoadReference();
  const ClipTokenizer& tok = Bundled();
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    DYNAMIC_SECTION("reference text " << i) {
      INFO("text " << i << ": \"" << ref.texts[i] << "\"");
      auto encoded = tok.Encode(ref.texts[i], 77, /*truncate=*/true);
      REQUIRE(encoded.ok());
      CHECK(encoded->ids == ref.ids[i]);
      auto full = tok.Encode(ref.texts[i], 1000, false);
      REQUIRE(full.ok());
      CHECK(encoded->truncated == (full->ids.size() > 77));
    }
  }
}

TEST_CASE("truncation", "[tokenizer]") {
  const ClipTokenizer& tok = Bundled();
  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += "a ";  // 100 words "a</w>"
  SECTION("truncate=true keeps the end token last") {
    auto encoded = tok.Encode(long_text, 77, true);
    REQUIRE(encoded.ok());
    CHECK(encoded->truncated);
    REQUIRE(encoded->ids.size() == 77);
    CHECK(encoded->ids.front() == 49406);
    CHECK(encoded->ids.back() == 49407);
    CHECK(encoded->ids[75] == 320);
  }
  SECTION("truncate=false is INVALID_ARGUMENT with the count") {
    auto encoded = tok.Encode(long_text, 77, false);
    REQUIRE_FALSE(encoded.ok());
    CHECK(encoded.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(encoded.status().message()) ==
          "text has 102 tokens, more than the context length 77 (set truncate to cut it)");
  }
  SECTION("exactly the context length is not truncated") {
    std::string text;
    for (int i = 0; i < 75; ++i) text += "a ";
    auto encoded = tok.Encode(text, 77, false);
    REQUIRE(encoded.ok());
    CHECK(encoded->ids.size() == 77);
    CHECK_FALSE(encoded->truncated);
  }
  SECTION("other context lengths") {
    auto encoded = tok.Encode("a photo of a dog", 4, true);
    REQUIRE(encoded.ok());
    CHECK(encoded->ids == std::vector<int32_t>{49406, 320, 1125, 49407});
    CHECK(encoded->truncated);
    CHECK_FALSE(tok.Encode("a photo of a dog", 0, true).ok());
  }
}

TEST_CASE("invalid UTF-8 is INVALID_ARGUMENT naming the byte offset", "[tokenizer]") {
  const ClipTokenizer& tok = Bundled();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {std::string("abc\xff"), "byte offset 3"},
      {std::string("ab\xc3"), "byte offset 2"},            // truncated
      {std::string("\xc0\xaf"), "byte offset 0"},          // overlong
      {std::string("x\xe0\x80\xaf"), "byte offset 1"},     // overlong 3-byte
      {std::string("xy\xed\xa0\x80"), "byte offset 2"},    // surrogate
      {std::string("\xf4\x90\x80\x80"), "byte offset 0"},  // above U+10FFFF
      {std::string("caf\xc3\xa9 \x80"), "byte offset 6"},  // lone continuation
  };
  for (const auto& [text, where] : cases) {
    auto encoded = tok.Encode(text, 77, true);
    REQUIRE_FALSE(encoded.ok());
    CHECK(encoded.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(encoded.status().message()), Catch::Contains(where));
  }
  CHECK(tok.Encode(std::string("nul\0byte", 8), 77, true).ok());
}

TEST_CASE("TokenString round trip", "[tokenizer]") {
  const ClipTokenizer& tok = Bundled();
  auto encoded = tok.Encode("a photo of a dog", 77, true);
  REQUIRE(encoded.ok());
  std::vector<std::string> strings;
  for (int32_t id : encoded->ids) strings.push_back(tok.TokenString(id));
  CHECK(strings == std::vector<std::string>{"<start_of_text>", "a</w>", "photo</w>", "of</w>",
                                            "a</w>", "dog</w>", "<end_of_text>"});
  // Every id has a token string.
  for (int id = 0; id < tok.vocab_size(); ++id) {
    if (tok.TokenString(id).empty()) FAIL("empty token " << id);
  }
  // Words made of one merged token encode back to that token.
  for (int id : {320, 1125, 539, 1929}) {
    std::string s = tok.TokenString(id);
    REQUIRE(s.size() > 4);
    REQUIRE(s.substr(s.size() - 4) == "</w>");
    s.resize(s.size() - 4);
    auto again = tok.Encode(s, 77, true);
    REQUIRE(again.ok());
    CHECK(again->ids == std::vector<int32_t>{49406, id, 49407});
  }
}

TEST_CASE("FromVocabAndMerges matches the bundled vocabulary", "[tokenizer]") {
  const ClipTokenizer& bundled = Bundled();
  const std::string dir = MakeTempDir();
  const std::string vocab_path = dir + "/vocab.json";
  const std::string merges_path = dir + "/merges.txt";
  {
    nlohmann::json vocab = nlohmann::json::object();
    for (int id = 0; id < bundled.vocab_size(); ++id) {
      std::string token = bundled.TokenString(id);
      if (id == bundled.start_id()) token = "<|startoftext|>";
      if (id == bundled.end_id()) token = "<|endoftext|>";
      vocab[token] = id;
    }
    std::ofstream(vocab_path) << vocab.dump();
  }
  // merges.txt: OpenCLIP's merges (lines 1..48894 of the bundled asset) in rank order.
  {
    gzFile gz = gzopen((std::string(EMBEDSERVE_SOURCE_DIR) +
                        "/assets/bpe_simple_vocab_16e6.txt.gz").c_str(), "rb");
    REQUIRE(gz != nullptr);
    std::string text;
    char buffer[1 << 16];
    int got;
    while ((got = gzread(gz, buffer, sizeof(buffer))) > 0) text.append(buffer, got);
    gzclose(gz);
    std::ofstream merges(merges_path);
    merges << "#version: 0.2\n";
    std::istringstream lines(text);
    std::string line;
    std::getline(lines, line);  // header
    for (int i = 0; i < 49152 - 256 - 2 && std::getline(lines, line); ++i) merges << line << "\n";
  }
  auto hf = ClipTokenizer::FromVocabAndMerges(vocab_path, merges_path);
  REQUIRE(hf.ok());
  CHECK((*hf)->vocab_size() == bundled.vocab_size());
  CHECK((*hf)->start_id() == 49406);
  CHECK((*hf)->end_id() == 49407);
  const Reference& ref = LoadReference();
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    INFO("reference text " << i);
    auto a = bundled.Encode(ref.texts[i], 77, true);
    auto b = (*hf)->Encode(ref.texts[i], 77, true);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK(a->ids == b->ids);
  }
  std::filesystem::remove_all(dir);
  CHECK(ClipTokenizer::FromVocabAndMerges("/nonexistent/vocab.json", merges_path).status().code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("FromBpeFile reads the gzip merges", "[tokenizer]") {
  auto tok = ClipTokenizer::FromBpeFile(std::string(EMBEDSERVE_SOURCE_DIR) +
                                        "/assets/bpe_simple_vocab_16e6.txt.gz");
  REQUIRE(tok.ok());
  auto encoded = (*tok)->Encode("a photo of a dog", 77, true);
  REQUIRE(encoded.ok());
  CHECK(encoded->ids == std::vector<int32_t>{49406, 320, 1125, 539, 320, 1929, 49407});
  CHECK(ClipTokenizer::FromBpeFile("/nonexistent.txt.gz").status().code() ==
        absl::StatusCode::kNotFound);
  // Not a merges file.
  const std::string dir = MakeTempDir();
  std::ofstream(dir + "/bad.txt") << "header\nonly three lines\n";
  CHECK(ClipTokenizer::FromBpeFile(dir + "/bad.txt").status().code() ==
        absl::StatusCode::kInvalidArgument);
  std::ofstream(dir + "/bad.gz") << "\x1f\x8b garbage";
  CHECK_FALSE(ClipTokenizer::FromBpeFile(dir + "/bad.gz").ok());
  std::filesystem::remove_all(dir);
}

TEST_CASE("concurrent encoding gives the same ids", "[tokenizer][threads]") {
  const ClipTokenizer& tok = Bundled();
  const Reference& ref = LoadReference();
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < ref.texts.size(); ++i) {
          const size_t k = (i * 7 + static_cast<size_t>(t) * 13 + round) % ref.texts.size();
          auto encoded = tok.Encode(ref.texts[k], 77, true);
          if (!encoded.ok() || encoded->ids != ref.ids[k]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(mismatches == std::vector<int>(4, 0));
}

TEST_CASE("the hand-written split is the pattern's split", "[tokenizer]") {
  const ClipTokenizer& tok = Bundled();
  std::vector<std::string> texts = {
      "don't can't won't it's we're they've i'd you'll 'll 's '",
      "a photo of a <start_of_text> token <END_OF_TEXT> x<start_of_text>",
      "!<start_of_text> '<end_of_text>' ''s 'x 'r 're 'lL 'D",
      "c++ and c# 3.14159 -42 1e10 {\"json\": [1, 2, 3]} \t\f\r\n",
      "path/to/file.png c:\\windows\\system32 #hashtag @mention $cashtag",
      "na\u00efve caf\u00e9 '\u017f x\u0345y \u0345 !\u2026 \u00e9! 1\u0663 <\u017ftart_of_text>"};
  std::mt19937 rng(7);
  const std::vector<std::string> alphabet = {
      "a", "b", "'", "s", "l", "t", "e", "v", "r", "d", "m", "<", ">", "_", "o", "f", "0", "1",
      " ", "!", "?", ".", "\t", "\n", "<start_of_text>", "<end_of_text>", "\u00e9", "\u017f",
      "\u0345", "\u2026", "\u0663", "\u65e5", "\U0001F600", "\u0301", "\u212a"};
  for (int i = 0; i < 3000; ++i) {
    std::string text;
    const int len = static_cast<int>(rng() % 40);
    for (int k = 0; k < len; ++k) text += alphabet[rng() % alphabet.size()];
    texts.push_back(text);
  }
  for (const std::string& text : texts) {
    INFO("text \"" << text << "\"");
    CHECK(tok.SplitForTest(text, false) == tok.SplitForTest(text, true));
  }
}

TEST_CASE("pattern quirks of OpenCLIP's case-insensitive regex", "[tokenizer]") {
  // Expected ids from OpenCLIP's pipeline (ftfy 6.3.1, regex 2026.5.9).
  const ClipTokenizer& tok = Bundled();
  const std::vector<std::pair<std::string, std::vector<int32_t>>> cases = {
      {"a\u0345b !\u0345! x", {49406, 320, 321, 256, 256, 343, 49407}},
      {"it'\u017f '\u017fa <\u017ftart_of_text>",
       {49406, 585, 6, 129, 379, 6, 129, 379, 320, 27, 129, 123, 16707, 62, 684, 62, 18169, 285,
        49407}},
      {"\u03a3\u0391\u03a3 \u0130stanbul \u01c5 \ufb05 \u0149",
       {49406, 139, 225, 138, 109, 139, 480, 328, 16384, 11231, 67, 129, 378, 129, 123, 339, 262,
        333, 49407}},
      {"&amp;amp;amp; &NTILDE; &#x2019;s", {49406, 261, 127, 365, 568, 49407}},
  };
  for (const auto& [text, ids] : cases) {
    INFO("text \"" << text << "\"");
    auto encoded = tok.Encode(text, 77, true);
    REQUIRE(encoded.ok());
    CHECK(encoded->ids == ids);
  }
}
