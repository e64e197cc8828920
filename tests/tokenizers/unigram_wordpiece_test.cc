// UnigramTokenizer, XlmRobertaVocab and WordPieceTokenizer: hand-written vocabularies with
// hand-computed ids (Viterbi choices, ties, unknowns, byte fallback, the charsmap, WordPiece's
// greedy splits, accents, CJK, case), malformed inputs, and, tagged [spm_reference], agreement
// with the real sentencepiece library on models spm_train builds at test time
// (spm_unigram_reference.py).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "absl/status/status.h"
#include "server/tokenizers/sentencepiece_model.h"
#include "server/tokenizers/unigram.h"
#include "server/tokenizers/wordpiece.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace embedserve::tokenizers;
using embedserve::testing::Slurp;
using Json = nlohmann::json;
using Ids = std::vector<int32_t>;

namespace {

const std::string kSpace = "\xe2\x96\x81";    // U+2581
const std::string kSnowman = "\xe2\x98\x83";  // U+2603, in no vocabulary below

// --- A ModelProto writer (protobuf wire format), for hand-written sentencepiece models. ---

std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
std::string Bytes(int field, const std::string& payload) {
  return Varint(uint64_t(field) << 3 | 2) + Varint(payload.size()) + payload;
}
std::string Int(int field, uint64_t v) { return Varint(uint64_t(field) << 3) + Varint(v); }
std::string Float(int field, float f) {
  std::string out = Varint(uint64_t(field) << 3 | 5);
  char raw[4];
  std::memcpy(raw, &f, 4);
  return out + std::string(raw, 4);
}

enum Type { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
struct Piece {
  std::string text;
  float score;
  Type type;
};
struct Spec {
  int model_type = 1;
  bool byte_fallback = false;
  std::string charsmap;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
};

std::string ModelProto(const std::vector<Piece>& pieces, const Spec& spec) {
  std::string out;
  for (const Piece& p : pieces) {
    out += Bytes(1, Bytes(1, p.text) + Float(2, p.score) + Int(3, p.type));
  }
  out += Bytes(2, Int(3, spec.model_type) + Int(35, spec.byte_fallback ? 1 : 0));
  std::string normalizer = Bytes(1, "hand");
  if (!spec.charsmap.empty()) normalizer += Bytes(2, spec.charsmap);
  normalizer += Int(3, spec.add_dummy_prefix) + Int(4, spec.remove_extra_whitespaces) +
                Int(5, spec.escape_whitespaces);
  return out + Bytes(3, normalizer);
}

// The hand vocabulary. With every NORMAL score negative, the unknown score is
// min (-5) - 10 = -15 and a user-defined symbol of n bytes scores n * FLT_MIN - 0.1.
std::vector<Piece> HandPieces() {
  return {{"<unk>", 0, kUnknown},   {"<s>", 0, kControl},   {"</s>", 0, kControl},
          {kSpace, -1.0f, kNormal}, {"a", -1.0f, kNormal},   {"b", -2.0f, kNormal},
          {"c", -3.0f, kNormal},    {kSpace + "a", -2.25f, kNormal},
          {"ab", -1.5f, kNormal},   {"bc", -3.5f, kNormal},  {kSpace + "ab", -5.0f, kNormal},
          {"<sep>", 0, kUserDefined}, {"abc", -0.5f, kUnused}};
}
enum HandId { kUnk = 0, kSp = 3, kA = 4, kB = 5, kC = 6, kSpA = 7, kAB = 8, kBC = 9, kSpAB = 10,
              kSep = 11, kABC = 12 };

// A hand-built precompiled charsmap (Darts-clone double array): "A" -> "a", "AB" -> "b".
// Units: 0 root (offset 1); 64 = 1^'A': label 'A', leaf, offset 4 -> 68 holds the value
// of "A"; 6 = 68^'B': label 'B', leaf, offset 1 -> 7 holds the value of "AB".
std::string HandCharsMap() {
  std::vector<uint32_t> units(69, 0);
  units[0] = 1u << 10;
  units[64] = (4u << 10) | (1u << 8) | 'A';
  units[68] = (1u << 31) | 0;  // "a" at offset 0
  units[6] = (1u << 10) | (1u << 8) | 'B';
  units[7] = (1u << 31) | 2;  // "b" at offset 2
  std::string blob;
  const uint32_t size = static_cast<uint32_t>(units.size() * 4);
  blob.append(reinterpret_cast<const char*>(&size), 4);
  blob.append(reinterpret_cast<const char*>(units.data()), size);
  blob.append("a\0b\0", 4);
  return blob;
}

std::string Base64(const std::string& in) {
  static const char* kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t v = uint32_t(static_cast<unsigned char>(in[i])) << 16;
    if (i + 1 < in.size()) v |= uint32_t(static_cast<unsigned char>(in[i + 1])) << 8;
    if (i + 2 < in.size()) v |= static_cast<unsigned char>(in[i + 2]);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back(i + 2 < in.size() ? kAlphabet[v & 63] : '=');
  }
  return out;
}

std::unique_ptr<UnigramTokenizer> FromProto(const std::string& bytes) {
  auto t = UnigramTokenizer::ParseSentencePiece(bytes);
  INFO(t.status().ToString());
  REQUIRE(t.ok());
  return *std::move(t);
}

std::unique_ptr<UnigramTokenizer> FromJson(const Json& j) {
  auto t = UnigramTokenizer::ParseTokenizerJson(j.dump());
  INFO(t.status().ToString());
  REQUIRE(t.ok());
  return *std::move(t);
}

template <typename T>
Ids Encode(const T& t, const std::string& text) {
  auto ids = t.Encode(text);
  INFO(ids.status().ToString());
  REQUIRE(ids.ok());
  return *ids;
}

// A tokenizer.json over the hand vocabulary (the UNUSED "abc" is an ordinary piece there:
// tokenizer.json has no piece types), Metaspace, no normalizer unless given.
Json HandJson(Json normalizer = nullptr) {
  Json vocab = Json::array();
  for (const Piece& p : HandPieces()) vocab.push_back({p.text, p.score});
  vocab.push_back({"<mask>", 0.0});  // id 13
  return {{"version", "1.0"},
          {"added_tokens",
           {{{"id", 13}, {"content", "<mask>"}, {"single_word", false}, {"lstrip", true},
             {"rstrip", false}, {"normalized", false}, {"special", true}}}},
          {"normalizer", normalizer},
          {"pre_tokenizer",
           {{"type", "Metaspace"}, {"replacement", kSpace}, {"prepend_scheme", "always"},
            {"split", true}}},
          {"post_processor", nullptr},
          {"decoder", nullptr},
          {"model",
           {{"type", "Unigram"}, {"unk_id", 0}, {"vocab", vocab}, {"byte_fallback", false}}}};
}

}  // namespace

// ------------------------------------------------------------------------------------------
// UnigramTokenizer from a hand-written .model.

TEST_CASE("the unigram Viterbi picks the best-scoring segmentation, not the longest piece",
          "[unigram]") {
  auto t = FromProto(ModelProto(HandPieces(), {}));
  // "ab" -> "▁ab": ▁ab = -5, ▁a + b = -4.25, ▁ + a + b = -4, ▁ + ab = -2.5.
  CHECK(Encode(*t, "ab") == Ids{kSp, kAB});
  // "▁a" alone: ▁a = -2.25 < ▁ + a = -2.
  CHECK(Encode(*t, "a") == Ids{kSp, kA});
  // "abc": ▁ + a + bc = -5.5 ties ▁ + ab + c = -5.5; the path found first (bc, starting
  // before c) is kept, as sentencepiece keeps it. The UNUSED "abc" (▁ + abc = -1.5) is skipped.
  CHECK(Encode(*t, "abc") == Ids{kSp, kA, kBC});
  CHECK(Encode(*t, "c") == Ids{kSp, kC});
}

TEST_CASE("the unigram encoder merges consecutive unknown characters into one unknown id",
          "[unigram]") {
  auto t = FromProto(ModelProto(HandPieces(), {}));
  CHECK(Encode(*t, "a" + kSnowman + kSnowman + "b") == Ids{kSp, kA, kUnk, kB});
  CHECK(Encode(*t, kSnowman + " " + kSnowman) == Ids{kSp, kUnk, kSp, kUnk});
  // Malformed UTF-8 becomes U+FFFD per byte (unknown here), as in sentencepiece.
  CHECK(Encode(*t, std::string("a\xff\xfe") + "b") == Ids{kSp, kA, kUnk, kB});
}

TEST_CASE("the unigram encoder keeps user-defined symbols whole", "[unigram]") {
  auto t = FromProto(ModelProto(HandPieces(), {}));
  // '<', 's', 'e', 'p', '>' are unknown alone; <sep> scores 5 * FLT_MIN - 0.1.
  CHECK(Encode(*t, "a<sep>b") == Ids{kSp, kA, kSep, kB});
  CHECK(Encode(*t, "<sep>") == Ids{kSp, kSep});
}

TEST_CASE("the unigram normalizer follows the model's whitespace options", "[unigram]") {
  SECTION("defaults: dummy prefix, whitespace runs collapsed, ends trimmed") {
    auto t = FromProto(ModelProto(HandPieces(), {}));
    CHECK(Encode(*t, "  a   b  ") == Ids{kSp, kA, kSp, kB});
    CHECK(Encode(*t, "").empty());
    CHECK(Encode(*t, "   ").empty());
  }
  SECTION("no dummy prefix, whitespace kept") {
    Spec spec;
    spec.add_dummy_prefix = false;
    spec.remove_extra_whitespaces = false;
    auto t = FromProto(ModelProto(HandPieces(), spec));
    CHECK(Encode(*t, " a  b ") == Ids{kSp, kA, kSp, kSp, kB, kSp});
    CHECK(Encode(*t, "a") == Ids{kA});
  }
  SECTION("spaces not escaped: ' ' is then an unknown character") {
    Spec spec;
    spec.escape_whitespaces = false;
    auto t = FromProto(ModelProto(HandPieces(), spec));
    CHECK(Encode(*t, "a b") == Ids{kUnk, kA, kUnk, kB});
  }
}

TEST_CASE("the unigram encoder falls back to bytes for unknown characters", "[unigram]") {
  std::vector<Piece> pieces = HandPieces();
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    pieces.push_back({name, 0, kByte});  // id 13 + b
  }
  Spec spec;
  spec.byte_fallback = true;
  auto t = FromProto(ModelProto(pieces, spec));
  CHECK(Encode(*t, "a" + kSnowman) == Ids{kSp, kA, 13 + 0xE2, 13 + 0x98, 13 + 0x83});
  CHECK(Encode(*t, kSnowman + kSnowman) ==
        Ids{kSp, 13 + 0xE2, 13 + 0x98, 13 + 0x83, 13 + 0xE2, 13 + 0x98, 13 + 0x83});
  SECTION("byte pieces must all be there") {
    pieces.pop_back();
    auto missing = UnigramTokenizer::ParseSentencePiece(ModelProto(pieces, spec));
    CHECK(missing.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(missing.status().message()), Catch::Contains("256 byte pieces"));
  }
}

TEST_CASE("the precompiled charsmap: longest rule in a .model, per grapheme in tokenizer.json",
          "[unigram]") {
  Spec spec;
  spec.charsmap = HandCharsMap();
  auto sp = FromProto(ModelProto(HandPieces(), spec));
  // sentencepiece: "AB" (the longest rule) -> "b", "A" -> "a": "▁b▁a".
  CHECK(Encode(*sp, "AB A") == Ids{kSp, kB, kSp, kA});
  // A + U+0301: "A" -> "a", the combining mark stays (unknown).
  CHECK(Encode(*sp, "A\xcc\x81") == Ids{kSp, kA, kUnk});

  auto json = FromJson(HandJson({{"type", "Precompiled"},
                                 {"precompiled_charsmap", Base64(HandCharsMap())}}));
  // The tokenizers library looks up each grapheme alone: "A" -> "a", "B" has no rule:
  // "aB a" -> words "▁aB" (▁, a, unknown B), "▁a".
  CHECK(Encode(*json, "AB A") == Ids{kSp, kA, kUnk, kSp, kA});
  // A grapheme under 6 bytes is replaced whole by its first (shortest) rule: "A" + U+0301 is
  // one grapheme, and the rule for "A" drops the mark.
  CHECK(Encode(*json, "A\xcc\x81") == Ids{kSp, kA});
}

TEST_CASE("a tokenizer.json Unigram: pieces without types, fused unknowns, added tokens",
          "[unigram][json]") {
  auto t = FromJson(HandJson());
  CHECK(t->source() == UnigramTokenizer::Source::kTokenizerJson);
  CHECK(t->size() == 14);
  // "abc" is an ordinary piece here: ▁ + abc = -1.5.
  CHECK(Encode(*t, "abc") == Ids{kSp, kABC});
  CHECK(Encode(*t, "ab") == Ids{kSp, kAB});
  CHECK(Encode(*t, kSnowman + kSnowman + "a") == Ids{kSp, kUnk, kA});
  // <mask> has lstrip: the space before it goes with it.
  CHECK(Encode(*t, "a <mask>b") == Ids{kSp, kA, 13, kSp, kB});
  CHECK(Encode(*t, "<mask>") == Ids{13});
  // Metaspace always prepends; words split before each ▁.
  CHECK(Encode(*t, " a  b") == Ids{kSp, kA, kSp, kSp, kB});
  CHECK(Encode(*t, "").empty());
  CHECK(t->PieceToId("<mask>") == 13);
  CHECK(t->IdToPiece(kBC) == "bc");
  CHECK(t->PieceToId("zzz") == -1);
  CHECK(t->Encode("bad \xff").status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a tokenizer.json Unigram: Strip, Replace (Regex), WhitespaceSplit, byte fallback",
          "[unigram][json]") {
  SECTION("transformers' current XLM-R normalizer") {
    Json normalizer = {{"type", "Sequence"},
                       {"normalizers",
                        {{{"type", "Strip"}, {"strip_left", false}, {"strip_right", true}},
                         {{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}},
                          {"content", kSpace}}}}};
    auto t = FromJson(HandJson(normalizer));
    CHECK(Encode(*t, "a   b  ") == Ids{kSp, kA, kSp, kB});
  }
  SECTION("the 2020 files' WhitespaceSplit then Metaspace (add_prefix_space)") {
    Json j = HandJson();
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers",
                           {{{"type", "WhitespaceSplit"}},
                            {{"type", "Metaspace"}, {"replacement", kSpace},
                             {"add_prefix_space", true}}}}};
    auto t = FromJson(j);
    CHECK(Encode(*t, "  a \t\n b ") == Ids{kSp, kA, kSp, kB});
  }
  SECTION("byte_fallback: an unknown run becomes its bytes when all are pieces") {
    Json j = HandJson();
    j["model"]["byte_fallback"] = true;
    for (const char* b : {"<0xE2>", "<0x98>", "<0x83>"}) j["model"]["vocab"].push_back({b, 0.0});
    j["added_tokens"] = Json::array();
    auto t = FromJson(j);
    CHECK(Encode(*t, kSnowman) == Ids{kSp, 14, 15, 16});
    CHECK(Encode(*t, "\xc3\xa9") == Ids{kSp, kUnk});  // é: <0xC3>, <0xA9> are not pieces
  }
}

TEST_CASE("tokenizer.json errors name the field", "[unigram][json]") {
  auto error = [](const Json& j) {
    auto t = UnigramTokenizer::ParseTokenizerJson(j.dump());
    REQUIRE_FALSE(t.ok());
    return t.status();
  };
  CHECK(UnigramTokenizer::ParseTokenizerJson("{not json").status().code() ==
        absl::StatusCode::kInvalidArgument);
  Json j = HandJson();
  j["model"]["type"] = "BPE";
  CHECK(error(j).code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(error(j).message()), Catch::Contains("model.type"));
  j = HandJson({{"type", "BertNormalizer"}});
  CHECK(error(j).code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(error(j).message()), Catch::Contains("normalizer.type"));
  j = HandJson({{"type", "Precompiled"}, {"precompiled_charsmap", "@@not base64@@"}});
  CHECK_THAT(std::string(error(j).message()), Catch::Contains("precompiled_charsmap"));
  j = HandJson({{"type", "Precompiled"}, {"precompiled_charsmap", Base64("abc")}});
  CHECK(error(j).code() == absl::StatusCode::kInvalidArgument);
  j = HandJson({{"type", "Replace"}, {"pattern", {{"Regex", "a(?=b)"}}}, {"content", ""}});
  CHECK(error(j).code() == absl::StatusCode::kFailedPrecondition);
  j = HandJson();
  j["model"]["unk_id"] = 99;
  CHECK_THAT(std::string(error(j).message()), Catch::Contains("model.unk_id"));
  j = HandJson();
  j["model"]["vocab"][2] = "not a pair";
  CHECK_THAT(std::string(error(j).message()), Catch::Contains("model.vocab[2]"));
  j = HandJson();
  j["added_tokens"][0]["id"] = 7;
  CHECK_THAT(std::string(error(j).message()), Catch::Contains("added_tokens[0].id"));
  j = HandJson();
  j["pre_tokenizer"] = {{"type", "ByteLevel"}};
  CHECK_THAT(std::string(error(j).message()), Catch::Contains("pre_tokenizer.type"));
  j = HandJson();
  j["pre_tokenizer"]["prepend_scheme"] = "sometimes";
  CHECK_THAT(std::string(error(j).message()), Catch::Contains("prepend_scheme"));
  CHECK(UnigramTokenizer::LoadTokenizerJson("/nonexistent/tokenizer.json").status().code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("a .model that is not a usable unigram model is refused with the reason",
          "[unigram]") {
  auto code = [](const std::string& bytes) {
    return UnigramTokenizer::ParseSentencePiece(bytes).status().code();
  };
  CHECK(code("this is not a protobuf \xff\xff\xff") == absl::StatusCode::kInvalidArgument);
  Spec bpe;
  bpe.model_type = 2;
  auto refused = UnigramTokenizer::ParseSentencePiece(ModelProto(HandPieces(), bpe));
  CHECK(refused.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(refused.status().message()), Catch::Contains("model_type"));
  std::vector<Piece> no_unk = HandPieces();
  no_unk[0].type = kControl;
  CHECK(code(ModelProto(no_unk, {})) == absl::StatusCode::kInvalidArgument);
  std::vector<Piece> duplicate = HandPieces();
  duplicate.push_back({"ab", -1.0f, kNormal});
  CHECK_THAT(std::string(UnigramTokenizer::ParseSentencePiece(ModelProto(duplicate, {}))
                             .status()
                             .message()),
             Catch::Contains("already defined"));
  std::vector<Piece> byte = HandPieces();
  byte.push_back({"<0x41>", 0, kByte});
  CHECK(code(ModelProto(byte, {})) == absl::StatusCode::kInvalidArgument);
  std::vector<Piece> empty = HandPieces();
  empty.push_back({"", -1.0f, kNormal});
  CHECK(code(ModelProto(empty, {})) == absl::StatusCode::kInvalidArgument);
  Spec broken;
  broken.charsmap = "\x10\x00\x00";
  CHECK(code(ModelProto(HandPieces(), broken)) == absl::StatusCode::kInvalidArgument);
  CHECK(UnigramTokenizer::LoadSentencePiece("/nonexistent.model").status().code() ==
        absl::StatusCode::kNotFound);
  // SentencePieceModel (BPE) still refuses unigram models, pointing here.
  std::string error;
  CHECK(SentencePieceModel::Parse(ModelProto(HandPieces(), {}), &error) == nullptr);
  CHECK_THAT(error, Catch::Contains("UnigramTokenizer"));
}

TEST_CASE("corrupt charsmaps and truncated models never crash", "[unigram]") {
  std::mt19937 rng(1234);
  const std::string texts[] = {"AB A", "hello world", "A\xcc\x81 \xe4\xb8\xad\xe6\x96\x87",
                               std::string("\0A\0B", 4), "\xff\xfe mixed \xc3"};
  for (int trial = 0; trial < 50; ++trial) {
    std::string charsmap = HandCharsMap();
    for (int k = 0; k < 20; ++k) {
      charsmap[4 + rng() % (charsmap.size() - 4)] = static_cast<char>(rng());
    }
    Spec spec;
    spec.charsmap = charsmap;
    auto sp = UnigramTokenizer::ParseSentencePiece(ModelProto(HandPieces(), spec));
    if (sp.ok()) {
      for (const std::string& text : texts) CHECK((*sp)->Encode(text).ok());
    }
    auto json = UnigramTokenizer::ParseTokenizerJson(
        HandJson({{"type", "Precompiled"}, {"precompiled_charsmap", Base64(charsmap)}}).dump());
    if (json.ok()) {
      for (const std::string& text : texts) (void)(*json)->Encode(text);
    }
  }
  Spec spec;
  spec.charsmap = HandCharsMap();
  const std::string model = ModelProto(HandPieces(), spec);
  for (size_t n = 0; n < model.size(); ++n) {
    auto t = UnigramTokenizer::ParseSentencePiece(model.substr(0, n));
    if (t.ok()) CHECK((*t)->Encode("abc").ok());
  }
  for (int trial = 0; trial < 300; ++trial) {
    std::string flipped = model;
    for (int k = 0; k < 4; ++k) flipped[rng() % flipped.size()] = static_cast<char>(rng());
    auto t = UnigramTokenizer::ParseSentencePiece(flipped);
    if (t.ok()) {
      for (const std::string& text : texts) CHECK((*t)->Encode(text).ok());
    }
  }
}

// ------------------------------------------------------------------------------------------
// XlmRobertaVocab.

TEST_CASE("XLM-R ids over a .model carry fairseq's offset; the pair template doubles </s>",
          "[xlmr]") {
  auto t = FromProto(ModelProto(HandPieces(), {}));
  auto v = XlmRobertaVocab::For(*t);
  REQUIRE(v.ok());
  CHECK(v->bos_id() == 0);
  CHECK(v->pad_id() == 1);
  CHECK(v->eos_id() == 2);
  CHECK(v->unk_id() == 3);
  CHECK(v->mask_id() == 14);  // 13 sentencepiece pieces + 1
  CHECK(v->size() == 15);
  CHECK(v->ToModelIds(Encode(*t, "a" + kSnowman + "bc")) == Ids{4, 5, 3, 10});
  CHECK(v->Single(Ids{4, 5}) == Ids{0, 4, 5, 2});
  CHECK(v->Pair(Ids{4, 5}, Ids{6}) == Ids{0, 4, 5, 2, 2, 6, 2});
  CHECK(v->Pair(Ids{}, Ids{}) == Ids{0, 2, 2, 2});
}

TEST_CASE("XLM-R ids over a tokenizer.json are the file's; specials looked up by name",
          "[xlmr]") {
  Json j = HandJson();
  // The XLM-R layout: <s> <pad> </s> <unk> first, <mask> last.
  Json vocab = Json::array();
  for (const auto& [piece, score] :
       std::vector<std::pair<std::string, double>>{{"<s>", 0.0}, {"<pad>", 0.0}, {"</s>", 0.0},
                                                   {"<unk>", 0.0}, {kSpace, -1.0}, {"a", -1.0},
                                                   {"<mask>", 0.0}}) {
    vocab.push_back(Json::array({piece, score}));
  }
  j["model"]["vocab"] = vocab;
  j["model"]["unk_id"] = 3;
  j["added_tokens"][0]["id"] = 6;
  auto t = FromJson(j);
  auto v = XlmRobertaVocab::For(*t);
  REQUIRE(v.ok());
  CHECK(v->mask_id() == 6);
  CHECK(v->ToModelIds(Encode(*t, "a <mask>")) == Ids{4, 5, 6});
  CHECK(v->Pair(Ids{5}, Ids{5}) == Ids{0, 5, 2, 2, 5, 2});
  j["model"]["vocab"][0][0] = "<bos>";
  auto no_bos = XlmRobertaVocab::For(*FromJson(j));
  CHECK(no_bos.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(no_bos.status().message()), Catch::Contains("<s>"));
}

// ------------------------------------------------------------------------------------------
// WordPieceTokenizer.

namespace {

const char kVocab[] =
    "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"  // 0-4
    "un\n##aff\n##able\nthe\n,\n"           // 5-9
    "!\ncafe\n##s\n\xe4\xb8\xad\n\xe6\x96\x87\n"  // 10-14: 中 文
    "hello\n##ll\nhe\n##o\na\n"             // 15-19
    "##ff\nresume\ncafé\n[\n]\n"            // 20-24
    "cls\n";                                // 25

std::unique_ptr<WordPieceTokenizer> Bert(const WordPieceOptions& options = {}) {
  auto t = WordPieceTokenizer::ParseVocabTxt(kVocab, options);
  INFO(t.status().ToString());
  REQUIRE(t.ok());
  return *std::move(t);
}

Json BertJson(Json normalizer) {
  Json vocab = Json::object();
  std::istringstream lines(kVocab);
  std::string line;
  for (int id = 0; std::getline(lines, line); ++id) vocab[line] = id;
  Json added = Json::array();
  for (auto [id, content] : {std::pair<int, const char*>{0, "[PAD]"}, {1, "[UNK]"}, {2, "[CLS]"},
                             {3, "[SEP]"}, {4, "[MASK]"}}) {
    added.push_back({{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  }
  auto special = [](const char* name) {
    return Json{{"SpecialToken", {{"id", name}, {"type_id", 0}}}};
  };
  auto sequence = [](const char* name, int type) {
    return Json{{"Sequence", {{"id", name}, {"type_id", type}}}};
  };
  Json sep1 = {{"SpecialToken", {{"id", "[SEP]"}, {"type_id", 1}}}};
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", normalizer},
          {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single", {special("[CLS]"), sequence("A", 0), special("[SEP]")}},
            {"pair",
             {special("[CLS]"), sequence("A", 0), special("[SEP]"), sequence("B", 1), sep1}},
            {"special_tokens",
             {{"[CLS]", {{"id", "[CLS]"}, {"ids", {2}}, {"tokens", {"[CLS]"}}}},
              {"[SEP]", {{"id", "[SEP]"}, {"ids", {3}}, {"tokens", {"[SEP]"}}}}}}}},
          {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
          {"model",
           {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"continuing_subword_prefix", "##"},
            {"max_input_chars_per_word", 100}, {"vocab", vocab}}}};
}

Json BertNormalizerJson(Json strip_accents, bool lowercase) {
  return {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", true},
          {"strip_accents", strip_accents}, {"lowercase", lowercase}};
}

}  // namespace

TEST_CASE("WordPiece splits greedily, longest match first, with ## continuations",
          "[wordpiece]") {
  auto t = Bert();
  CHECK(Encode(*t, "unaffable") == Ids{5, 6, 7});
  CHECK(Encode(*t, "hello") == Ids{15});
  CHECK(Encode(*t, "hellos") == Ids{15, 12});
  CHECK(Encode(*t, "heo") == Ids{17, 18});
  CHECK(Encode(*t, "aff") == Ids{19, 20});
  // "helo": "he" then no "##l..." piece: the whole word is unknown (no backtracking).
  CHECK(Encode(*t, "helo") == Ids{1});
  CHECK(Encode(*t, "the helo hello") == Ids{8, 1, 15});
  CHECK(Encode(*t, "hello,the!") == Ids{15, 9, 8, 10});
  CHECK(Encode(*t, "").empty());
}

TEST_CASE("WordPiece's BertNormalizer lowercases, strips accents, isolates CJK, cleans text",
          "[wordpiece]") {
  auto t = Bert();
  CHECK(Encode(*t, "UNAFFABLE!") == Ids{5, 6, 7, 10});
  CHECK(Encode(*t, "Café") == Ids{11});                  // é -> e + U+0301 -> e
  CHECK(Encode(*t, "CAFE\xcc\x81S") == Ids{11, 12});      // decomposed input too
  CHECK(Encode(*t, "Résumé") == Ids{21});
  CHECK(Encode(*t, "\xe4\xb8\xad\xe6\x96\x87") == Ids{13, 14});  // 中文, split apart
  CHECK(Encode(*t, "the\xe4\xb8\xadthe") == Ids{8, 13, 8});
  CHECK(Encode(*t, std::string("hel\x01l\xe2\x80\x8bo\0", 10)) == Ids{15});  // Cc, Cf removed
  CHECK(Encode(*t, "hello\xc2\xa0the\xe3\x80\x80un\taff") == Ids{15, 8, 5, 19, 20});
  SECTION("cased: no lowercase, and strip_accents follows it") {
    WordPieceOptions cased;
    cased.lowercase = false;
    auto c = Bert(cased);
    CHECK(Encode(*c, "Café") == Ids{1});
    CHECK(Encode(*c, "café") == Ids{22});
    CHECK(Encode(*c, "cafe") == Ids{11});
  }
  SECTION("lowercase with strip_accents=false keeps the accent") {
    WordPieceOptions keep;
    keep.strip_accents = false;
    auto k = Bert(keep);
    CHECK(Encode(*k, "CAFÉ") == Ids{22});
  }
  SECTION("max_input_chars_per_word") {
    WordPieceOptions short_words;
    short_words.max_input_chars_per_word = 4;
    auto s = Bert(short_words);
    CHECK(Encode(*s, "the hello") == Ids{8, 1});
  }
}

TEST_CASE("WordPiece splits special tokens out of the raw text", "[wordpiece]") {
  auto t = Bert();
  CHECK(Encode(*t, "[CLS] hello[SEP]the") == Ids{2, 15, 3, 8});
  CHECK(Encode(*t, "[MASK]") == Ids{4});
  // Lowercase "[cls]" is no special token: "[", "cls", "]".
  CHECK(Encode(*t, "[cls]") == Ids{23, 25, 24});
}

TEST_CASE("BERT's templates: [CLS] A [SEP] B [SEP] with type ids 0 then 1", "[wordpiece]") {
  auto t = Bert();
  CHECK(t->cls_id() == 2);
  CHECK(t->sep_id() == 3);
  CHECK(t->pad_id() == 0);
  CHECK(t->mask_id() == 4);
  CHECK(t->unk_id() == 1);
  auto single = t->Single(Ids{15});
  CHECK(single.ids == Ids{2, 15, 3});
  CHECK(single.type_ids == Ids{0, 0, 0});
  auto pair = t->Pair(Ids{15, 8}, Ids{5, 6});
  CHECK(pair.ids == Ids{2, 15, 8, 3, 5, 6, 3});
  CHECK(pair.type_ids == Ids{0, 0, 0, 0, 1, 1, 1});
}

TEST_CASE("WordPiece from tokenizer.json equals WordPiece from vocab.txt", "[wordpiece][json]") {
  auto txt = Bert();
  auto json =
      WordPieceTokenizer::ParseTokenizerJson(BertJson(BertNormalizerJson(nullptr, true)).dump());
  INFO(json.status().ToString());
  REQUIRE(json.ok());
  for (const char* text : {"unaffable", "UNAFFABLE!", "Café", "Résumé", "[CLS] hello[SEP]the",
                           "\xe4\xb8\xad\xe6\x96\x87", "the helo hello", "[cls]", "hellos,heo"}) {
    INFO(text);
    CHECK(Encode(**json, text) == Encode(*txt, text));
  }
  CHECK((*json)->Pair(Ids{15}, Ids{8}).type_ids == Ids{0, 0, 0, 1, 1});
  CHECK((*json)->size() == 26);
  CHECK((*json)->IdToToken(6) == "##aff");
  CHECK((*json)->TokenToId("[SEP]") == 3);
  auto cased = WordPieceTokenizer::ParseTokenizerJson(
      BertJson(BertNormalizerJson(false, true)).dump());
  REQUIRE(cased.ok());
  CHECK(Encode(**cased, "CAFÉ") == Ids{22});
}

TEST_CASE("WordPiece vocab.txt and tokenizer.json errors", "[wordpiece]") {
  CHECK(WordPieceTokenizer::ParseVocabTxt("a\nb\n").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(WordPieceTokenizer::LoadVocabTxt("/nonexistent/vocab.txt").status().code() ==
        absl::StatusCode::kNotFound);
  // CRLF lines and trailing spaces are trimmed.
  auto crlf = WordPieceTokenizer::ParseVocabTxt("[UNK]\r\n[CLS] \r\n[SEP]\r\nhi\r\n");
  REQUIRE(crlf.ok());
  CHECK(Encode(**crlf, "HI") == Ids{3});
  Json j = BertJson(BertNormalizerJson(nullptr, true));
  j["normalizer"] = {{"type", "Precompiled"}};
  auto bad = WordPieceTokenizer::ParseTokenizerJson(j.dump());
  CHECK(bad.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(bad.status().message()), Catch::Contains("normalizer.type"));
  j = BertJson(BertNormalizerJson(nullptr, true));
  j["model"]["unk_token"] = "[NOPE]";
  CHECK_THAT(std::string(WordPieceTokenizer::ParseTokenizerJson(j.dump()).status().message()),
             Catch::Contains("model.unk_token"));
  j = BertJson(BertNormalizerJson(nullptr, true));
  j["post_processor"]["pair"].erase(4);
  CHECK_THAT(std::string(WordPieceTokenizer::ParseTokenizerJson(j.dump()).status().message()),
             Catch::Contains("post_processor.pair"));
  j = BertJson(BertNormalizerJson(nullptr, true));
  j["post_processor"] = {{"type", "RobertaProcessing"}};
  CHECK(WordPieceTokenizer::ParseTokenizerJson(j.dump()).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(WordPieceTokenizer::ParseTokenizerJson("[]").status().code() ==
        absl::StatusCode::kInvalidArgument);
  auto t = Bert();
  CHECK(t->Encode("\xc3").status().code() == absl::StatusCode::kInvalidArgument);
}

// ------------------------------------------------------------------------------------------
// The real library.

namespace {

struct SpmReference {
  std::vector<std::string> texts;
  struct Model {
    std::string name;
    std::unique_ptr<UnigramTokenizer> tokenizer;
    std::vector<Ids> ids;
  };
  std::vector<Model> models;     // from the .model files, ids as sentencepiece gives them
  std::vector<Model> json;       // from XLM-R tokenizer.json files, XLM-R ids
  std::unique_ptr<UnigramTokenizer> xlmr_model;  // the .model the json files came from
};

// Runs spm_unigram_reference.py (spm_train, Python's sentencepiece) in a temporary
// directory, loads what it wrote, removes the directory.
const SpmReference& LoadSpmReference() {
  static const SpmReference* reference = [] {
    const std::string python = "/usr/bin/python3";
    const std::string script =
        std::string(EMBEDSERVE_SOURCE_DIR) + "/tests/tokenizers/spm_unigram_reference.py";
    INFO("the [spm_reference] case needs " << python << " with the sentencepiece module "
         "(Debian python3-sentencepiece) and spm_train (Debian sentencepiece); "
         "scripts/install-deps installs both");
    REQUIRE(fs::exists(python));
    std::string pattern = (fs::temp_directory_path() / "spmrefXXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    const fs::path dir = pattern;
    const std::string log = (dir / "log.txt").string();
    const int rc = std::system(
        (python + " " + script + " " + dir.string() + " > " + log + " 2>&1").c_str());
    INFO("spm_unigram_reference.py exited with " << rc << ":\n" << Slurp(log));
    REQUIRE(rc == 0);
    const Json json = Json::parse(Slurp((dir / "reference.json").string()));
    auto* r = new SpmReference;
    r->texts = json.at("texts").get<std::vector<std::string>>();
    for (const Json& m : json.at("models")) {
      auto t = UnigramTokenizer::LoadSentencePiece(m.at("path").get<std::string>());
      INFO(t.status().ToString());
      REQUIRE(t.ok());
      if (m.at("name") == "nmt_nfkc") {
        r->xlmr_model = *UnigramTokenizer::LoadSentencePiece(m.at("path").get<std::string>());
      }
      r->models.push_back({m.at("name"), *std::move(t), m.at("ids").get<std::vector<Ids>>()});
    }
    for (const Json& m : json.at("tokenizer_json")) {
      auto t = UnigramTokenizer::LoadTokenizerJson(m.at("path").get<std::string>());
      INFO(t.status().ToString());
      REQUIRE(t.ok());
      r->json.push_back({m.at("name"), *std::move(t), m.at("ids").get<std::vector<Ids>>()});
    }
    fs::remove_all(dir);
    return r;
  }();
  return *reference;
}

}  // namespace

TEST_CASE("unigram ids equal the sentencepiece library's on models spm_train builds",
          "[spm_reference]") {
  const SpmReference& ref = LoadSpmReference();
  REQUIRE(ref.texts.size() >= 40);
  REQUIRE(ref.models.size() == 3);
  for (const SpmReference::Model& model : ref.models) {
    REQUIRE(model.ids.size() == ref.texts.size());
    size_t matched = 0;
    for (size_t i = 0; i < ref.texts.size(); ++i) {
      INFO("model " << model.name << ", text " << i << ": \"" << ref.texts[i] << "\"");
      const Ids ids = Encode(*model.tokenizer, ref.texts[i]);
      CHECK(ids == model.ids[i]);
      matched += ids == model.ids[i];
    }
    CHECK(matched == ref.texts.size());
  }
}

TEST_CASE("XLM-R tokenizer.json files give XLMRobertaTokenizer's ids", "[spm_reference]") {
  const SpmReference& ref = LoadSpmReference();
  REQUIRE(ref.json.size() == 2);
  auto fairseq = XlmRobertaVocab::For(*ref.xlmr_model);
  REQUIRE(fairseq.ok());
  for (const SpmReference::Model& model : ref.json) {
    auto vocab = XlmRobertaVocab::For(*model.tokenizer);
    REQUIRE(vocab.ok());
    CHECK(vocab->mask_id() == fairseq->mask_id());
    CHECK(vocab->size() == fairseq->size());
    for (size_t i = 0; i < ref.texts.size(); ++i) {
      const std::string& text = ref.texts[i];
      INFO("tokenizer.json " << model.name << ", text " << i << ": \"" << text << "\"");
      // XLMRobertaVocab over the .model gives the slow tokenizer's ids.
      CHECK(fairseq->ToModelIds(Encode(*ref.xlmr_model, text)) == model.ids[i]);
      const Ids ids = Encode(*model.tokenizer, text);
      const size_t specials = text.find(" <unk> <s> </s>");
      if (specials != std::string::npos) {
        // Special tokens in the text: the tokenizer.json splits them out (<unk> 3, <s> 0,
        // </s> 2); sentencepiece (so the slow tokenizer's reference) encodes their characters.
        Ids want = fairseq->ToModelIds(Encode(*ref.xlmr_model, text.substr(0, specials)));
        want.insert(want.end(), {3, 0, 2});
        CHECK(ids == want);
        continue;
      }
      CHECK(ids == model.ids[i]);
    }
  }
}

TEST_CASE("UnigramTokenizer is safe to use from several threads", "[spm_reference]") {
  const SpmReference& ref = LoadSpmReference();
  const UnigramTokenizer& json = *ref.json[0].tokenizer;
  const UnigramTokenizer& model = *ref.models[0].tokenizer;
  std::vector<Ids> want_json, want_model;
  for (const std::string& text : ref.texts) {
    want_json.push_back(*json.Encode(text));
    want_model.push_back(*model.Encode(text));
  }
  std::vector<int> failures(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = 0; i < ref.texts.size(); ++i) {
          failures[k] += *json.Encode(ref.texts[i]) != want_json[i];
          failures[k] += *model.Encode(ref.texts[i]) != want_model[i];
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(failures == std::vector<int>(4, 0));
}
