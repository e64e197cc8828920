// Tests for server/models/safetensors: the reference checkpoints, write/read round trips,
// every header validation error, and sharded archives (index json).
#include "server/weights/safetensors.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"

namespace {

using embedserve::weights::SafetensorsFile;
using embedserve::weights::TensorArchive;
using embedserve::weights::TensorDtype;
using embedserve::weights::TensorToWrite;
using embedserve::weights::TensorView;
using embedserve::weights::WriteSafetensors;

const std::string kData = EMBEDSERVE_TEST_DATA;
const std::string kClipDir = kData + "/openclip-reference/model";
const std::string kColpaliDir = kData + "/colpali-reference/model";

// Removes every directory made by TempDir when the test binary exits.
struct TempDirs {
  std::vector<std::string> dirs;
  ~TempDirs() {
    std::error_code ignored;
    for (const std::string& d : dirs) std::filesystem::remove_all(d, ignored);
  }
};
TempDirs temp_dirs;

// A fresh temporary directory per use.
std::string TempDir() {
  char tmpl[] = "/tmp/safetensors_test.XXXXXX";
  char* dir = ::mkdtemp(tmpl);
  REQUIRE(dir != nullptr);
  temp_dirs.dirs.push_back(dir);
  return dir;
}

void WriteRaw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string ReadRaw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string LengthPrefix(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out;
}

// A raw safetensors image: length, header text (as given), data.
std::string Raw(const std::string& header, const std::string& data) {
  return LengthPrefix(header.size()) + header + data;
}

std::string OpenError(const std::string& bytes) {
  auto file = SafetensorsFile::FromBuffer("bad.safetensors", bytes);
  REQUIRE_FALSE(file.ok());
  CHECK(file.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message(file.status().message());
  CHECK_THAT(message, Catch::Contains("bad.safetensors"));
  // The same bytes through the mmap path give the same verdict.
  const std::string dir = TempDir();
  const std::string path = dir + "/bad.safetensors";
  WriteRaw(path, bytes);
  auto mapped = SafetensorsFile::Open(path);
  REQUIRE_FALSE(mapped.ok());
  CHECK(mapped.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(mapped.status().message()), Catch::Contains(path));
  return message;
}

std::string Bytes(size_t n, char fill = 'x') { return std::string(n, fill); }

}  // namespace

TEST_CASE("dtype names and sizes", "[safetensors]") {
  using embedserve::weights::DtypeName;
  using embedserve::weights::DtypeSize;
  using embedserve::weights::ParseDtypeName;
  CHECK(DtypeName(TensorDtype::kBF16) == "BF16");
  CHECK(DtypeName(TensorDtype::kBool) == "BOOL");
  CHECK(DtypeSize(TensorDtype::kF64) == 8);
  CHECK(DtypeSize(TensorDtype::kF16) == 2);
  CHECK(DtypeSize(TensorDtype::kBool) == 1);
  for (TensorDtype d : {TensorDtype::kF32, TensorDtype::kF16, TensorDtype::kBF16,
                        TensorDtype::kF64, TensorDtype::kI64, TensorDtype::kI32,
                        TensorDtype::kI16, TensorDtype::kI8, TensorDtype::kU8,
                        TensorDtype::kBool}) {
    TensorDtype parsed;
    REQUIRE(ParseDtypeName(DtypeName(d), &parsed));
    CHECK(parsed == d);
  }
  TensorDtype unused;
  CHECK_FALSE(ParseDtypeName("F8_E4M3", &unused));
  CHECK(embedserve::weights::ShapeString({64, 3, 16, 16}) == "[64, 3, 16, 16]");
  CHECK(embedserve::weights::ShapeString({}) == "[]");
}

TEST_CASE("reads the OpenCLIP reference checkpoint", "[safetensors]") {
  const std::string path = kClipDir + "/open_clip_model.safetensors";
  auto file = SafetensorsFile::Open(path);
  REQUIRE(file.ok());
  CHECK((*file)->path() == path);
  CHECK((*file)->tensors().size() == 62);
  CHECK((*file)->metadata().empty());

  const TensorView* conv = (*file)->Find("visual.conv1.weight");
  REQUIRE(conv != nullptr);
  CHECK(conv->dtype == TensorDtype::kF16);
  CHECK(conv->shape == std::vector<int64_t>{64, 3, 16, 16});
  CHECK(conv->numel() == 64 * 3 * 16 * 16);
  CHECK(conv->nbytes == 64 * 3 * 16 * 16 * 2);
  CHECK(conv->file == &(*file)->path());

  const TensorView* scale = (*file)->Find("logit_scale");
  REQUIRE(scale != nullptr);
  CHECK(scale->shape.empty());
  CHECK(scale->numel() == 1);
  CHECK(scale->nbytes == 2);

  // Tensors come in data order and tile the data section exactly.
  size_t total = 0;
  const uint8_t* expected = (*file)->tensors().front().data;
  for (const TensorView& t : (*file)->tensors()) {
    CHECK(t.data == expected);
    expected += t.nbytes;
    total += t.nbytes;
  }
  CHECK(total == 3525186);

  auto archive = TensorArchive::OpenInDir(kClipDir, "open_clip_model.safetensors");
  REQUIRE(archive.ok());
  CHECK((*archive)->Names().size() == 62);
  CHECK((*archive)->Names().front() == "ln_final.bias");
  CHECK((*archive)->total_bytes() == 3525186);
  auto token = (*archive)->Expect("token_embedding.weight", {49408, 32});
  REQUIRE(token.ok());
  CHECK((*token)->dtype == TensorDtype::kF16);
  auto pos = (*archive)->Expect("positional_embedding", {77, 32});
  REQUIRE(pos.ok());

  // The view's bytes are the file's bytes.
  const std::string raw = ReadRaw(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(raw[i]);
  CHECK(header_len == 6344);
  const size_t offset = 130;  // positional_embedding's data_offsets begin
  CHECK(std::memcmp(raw.data() + 8 + header_len + offset, (*pos)->data, (*pos)->nbytes) == 0);
}

TEST_CASE("reads the sharded ColPali reference checkpoint", "[safetensors]") {
  auto archive = TensorArchive::OpenInDir(kColpaliDir, "model.safetensors");
  REQUIRE(archive.ok());
  CHECK((*archive)->source() == kColpaliDir + "/model.safetensors.index.json");
  CHECK((*archive)->files().size() == 2);
  CHECK((*archive)->Names().size() == 61);
  CHECK((*archive)->total_bytes() == 335648);
  for (const auto& file : (*archive)->files()) {
    CHECK(file->metadata().at("format") == "pt");
  }
  const TensorView* proj = (*archive)->Find("embedding_proj_layer.weight");
  REQUIRE(proj != nullptr);
  CHECK(proj->dtype == TensorDtype::kBF16);
  CHECK(proj->shape == std::vector<int64_t>{32, 64});
  CHECK_THAT(*proj->file, Catch::EndsWith("model-00002-of-00002.safetensors"));
  auto patch = (*archive)->Expect(
      "vlm.vision_tower.vision_model.embeddings.patch_embedding.weight", {48, 3, 14, 14});
  REQUIRE(patch.ok());
  CHECK_THAT(*(*patch)->file, Catch::EndsWith("model-00001-of-00002.safetensors"));
  CHECK((*archive)->Find("no.such.tensor") == nullptr);

  // Opening the index directly is the same.
  auto direct = TensorArchive::OpenIndex(kColpaliDir + "/model.safetensors.index.json");
  REQUIRE(direct.ok());
  CHECK((*direct)->Names() == (*archive)->Names());
}

TEST_CASE("Expect and CheckNoUnexpected report names and shapes", "[safetensors]") {
  auto archive = TensorArchive::OpenInDir(kClipDir, "open_clip_model.safetensors");
  REQUIRE(archive.ok());
  auto wrong = (*archive)->Expect("visual.conv1.weight", {64, 3, 32, 32});
  REQUIRE_FALSE(wrong.ok());
  CHECK(wrong.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(wrong.status().message()),
             Catch::Contains("open_clip_model.safetensors: tensor 'visual.conv1.weight' has "
                             "shape [64, 3, 16, 16], expected [64, 3, 32, 32]"));
  auto missing = (*archive)->Expect("visual.proj2", {64, 32});
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(std::string(missing.status().message()),
             Catch::Contains("missing tensor 'visual.proj2' (expected shape [64, 32])"));

  absl::flat_hash_set<std::string> used;
  for (const std::string& name : (*archive)->Names()) used.insert(name);
  CHECK((*archive)->CheckNoUnexpected(used).ok());
  used.erase("logit_scale");
  absl::Status one = (*archive)->CheckNoUnexpected(used);
  CHECK(one.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(one.message()), Catch::Contains("1 unexpected tensor: 'logit_scale'"));
  absl::Status many = (*archive)->CheckNoUnexpected({});
  CHECK_THAT(std::string(many.message()), Catch::Contains("62 unexpected tensors"));
  CHECK_THAT(std::string(many.message()), Catch::Contains("and 52 more"));
  CHECK_THAT(std::string(many.message()), Catch::Contains("'ln_final.bias'"));
}

TEST_CASE("OpenInDir and Open report missing files as NOT_FOUND", "[safetensors]") {
  const std::string dir = TempDir();
  auto archive = TensorArchive::OpenInDir(dir, "model.safetensors");
  REQUIRE_FALSE(archive.ok());
  CHECK(archive.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(archive.status().message()), Catch::Contains("model.safetensors.index.json"));
  CHECK_THAT(std::string(archive.status().message()), Catch::Contains(dir));

  auto file = SafetensorsFile::Open(dir + "/nope.safetensors");
  REQUIRE_FALSE(file.ok());
  CHECK(file.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(file.status().message()), Catch::Contains("nope.safetensors"));

  auto index = TensorArchive::OpenIndex(dir + "/nope.index.json");
  REQUIRE_FALSE(index.ok());
  CHECK(index.status().code() == absl::StatusCode::kNotFound);

  auto directory = SafetensorsFile::Open(dir);
  REQUIRE_FALSE(directory.ok());
  CHECK(directory.status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("write then read round trips every dtype", "[safetensors]") {
  const std::string dir = TempDir();
  const std::string path = dir + "/model.safetensors";
  std::vector<TensorToWrite> tensors;
  float f32[6] = {1.f, -2.5f, 3.25f, 0.f, 1e-3f, 7.f};
  tensors.push_back({"a.weight", TensorDtype::kF32, {2, 3},
                     std::string(reinterpret_cast<const char*>(f32), sizeof(f32))});
  tensors.push_back({"b.half", TensorDtype::kF16, {3}, std::string("\x00\x3c\x00\xc0\x00\x00", 6)});
  tensors.push_back({"c.bf16", TensorDtype::kBF16, {1, 2}, std::string("\x80\x3f\x00\x40", 4)});
  tensors.push_back({"d.ids", TensorDtype::kI64, {2}, Bytes(16, '\x01')});
  tensors.push_back({"e.mask", TensorDtype::kBool, {5}, std::string("\x01\x00\x01\x01\x00", 5)});
  tensors.push_back({"f.scalar", TensorDtype::kF64, {}, Bytes(8, '\x02')});
  tensors.push_back({"g.empty", TensorDtype::kI32, {0, 4}, ""});
  tensors.push_back({"h.u8", TensorDtype::kU8, {3}, "abc"});
  tensors.push_back({"i.i8", TensorDtype::kI8, {1}, "z"});
  tensors.push_back({"j.i16", TensorDtype::kI16, {2}, "wxyz"});
  tensors.push_back({"k.i32", TensorDtype::kI32, {1}, "1234"});
  tensors.push_back({"l.f16", TensorDtype::kF16, {0}, ""});
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "héllo"}};
  REQUIRE(WriteSafetensors(path, tensors, metadata).ok());

  // The header is space-padded to a multiple of 8 and nothing temporary is left behind.
  const std::string raw = ReadRaw(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(raw[i]);
  CHECK(header_len % 8 == 0);
  CHECK(raw.size() >= 8 + header_len);
  int entries = 0;
  auto file = SafetensorsFile::Open(path);
  REQUIRE(file.ok());
  CHECK((*file)->metadata() == metadata);
  REQUIRE((*file)->tensors().size() == tensors.size());
  for (const TensorToWrite& w : tensors) {
    const TensorView* t = (*file)->Find(w.name);
    REQUIRE(t != nullptr);
    CHECK(t->dtype == w.dtype);
    CHECK(t->shape == w.shape);
    REQUIRE(t->nbytes == w.bytes.size());
    CHECK(std::string(reinterpret_cast<const char*>(t->data), t->nbytes) == w.bytes);
    ++entries;
  }
  CHECK(entries == 12);
  // Data is laid out in the order given.
  CHECK((*file)->tensors().front().name == "a.weight");

  // The same bytes parse from memory too, and overwriting replaces the file atomically.
  auto in_memory = SafetensorsFile::FromBuffer("mem", raw);
  REQUIRE(in_memory.ok());
  CHECK((*in_memory)->tensors().size() == tensors.size());
  REQUIRE(WriteSafetensors(path, {{"only", TensorDtype::kU8, {1}, "q"}}).ok());
  auto rewritten = TensorArchive::OpenFile(path);
  REQUIRE(rewritten.ok());
  CHECK((*rewritten)->Names() == std::vector<std::string>{"only"});
  CHECK((*rewritten)->total_bytes() == 1);
}

TEST_CASE("writer rejects bad input", "[safetensors]") {
  const std::string dir = TempDir();
  const std::string path = dir + "/w.safetensors";
  absl::Status size = WriteSafetensors(path, {{"t", TensorDtype::kF32, {2, 2}, Bytes(15)}});
  CHECK(size.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(size.message()), Catch::Contains("'t'"));
  CHECK_THAT(std::string(size.message()), Catch::Contains("needs 16 bytes, got 15"));
  absl::Status dup = WriteSafetensors(
      path, {{"t", TensorDtype::kU8, {1}, "a"}, {"t", TensorDtype::kU8, {1}, "b"}});
  CHECK(dup.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(dup.message()), Catch::Contains("'t' is given twice"));
  CHECK_FALSE(WriteSafetensors(path, {{"", TensorDtype::kU8, {1}, "a"}}).ok());
  CHECK_FALSE(WriteSafetensors(path, {{"__metadata__", TensorDtype::kU8, {1}, "a"}}).ok());
  CHECK_FALSE(WriteSafetensors(path, {{"neg", TensorDtype::kU8, {-1}, ""}}).ok());
  CHECK_FALSE(WriteSafetensors(path, {{"bad\xff", TensorDtype::kU8, {1}, "a"}}).ok());
  struct stat st;
  CHECK(::stat(path.c_str(), &st) != 0);  // nothing was written
  absl::Status no_dir = WriteSafetensors(dir + "/missing/dir/x.safetensors", {});
  CHECK_FALSE(no_dir.ok());
}

TEST_CASE("validation errors name the file, the tensor and the expectation", "[safetensors]") {
  SECTION("file shorter than the length prefix") {
    CHECK_THAT(OpenError("\x01\x02\x03"), Catch::Contains("too short"));
    CHECK_THAT(OpenError(""), Catch::Contains("0 bytes"));
  }
  SECTION("header length past the end of the file") {
    const std::string msg = OpenError(LengthPrefix(100) + "{}");
    CHECK_THAT(msg, Catch::Contains("header length 100 runs past the end"));
    CHECK_THAT(OpenError(LengthPrefix(UINT64_MAX) + "{}"), Catch::Contains("runs past the end"));
  }
  SECTION("header that is not JSON") {
    CHECK_THAT(OpenError(Raw("{\"a\": ", "")), Catch::Contains("not valid UTF-8 JSON"));
    CHECK_THAT(OpenError(Raw("{\"a\xff\": {}}", "")), Catch::Contains("not valid UTF-8 JSON"));
  }
  SECTION("header that is not an object") {
    CHECK_THAT(OpenError(Raw("[1, 2]", "")), Catch::Contains("must be a JSON object, got array"));
  }
  SECTION("entry that is not an object") {
    CHECK_THAT(OpenError(Raw(R"({"w": 3})", "")),
               Catch::Contains("tensor 'w': expected an object"));
  }
  SECTION("unknown dtype") {
    const std::string msg =
        OpenError(Raw(R"({"enc.w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}})",
                      Bytes(2)));
    CHECK_THAT(msg, Catch::Contains("tensor 'enc.w': unknown dtype 'F8_E4M3'"));
    CHECK_THAT(msg, Catch::Contains("BF16"));
    CHECK_THAT(OpenError(Raw(R"({"enc.w": {"dtype": 5, "shape": [2], "data_offsets": [0, 2]}})",
                             Bytes(2))),
               Catch::Contains("tensor 'enc.w': dtype must be a string"));
  }
  SECTION("missing fields") {
    CHECK_THAT(OpenError(Raw(R"({"m": {"shape": [1], "data_offsets": [0, 1]}})", "x")),
               Catch::Contains("tensor 'm': missing \"dtype\""));
    CHECK_THAT(OpenError(Raw(R"({"m": {"dtype": "U8", "data_offsets": [0, 1]}})", "x")),
               Catch::Contains("tensor 'm': missing \"shape\""));
    CHECK_THAT(OpenError(Raw(R"({"m": {"dtype": "U8", "shape": [1]}})", "x")),
               Catch::Contains("tensor 'm': missing \"data_offsets\""));
  }
  SECTION("negative or non-integer shape") {
    CHECK_THAT(OpenError(Raw(R"({"neg": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 0]}})",
                             "")),
               Catch::Contains("tensor 'neg': shape [-1,4] must hold non-negative integers, got -1"));
    CHECK_THAT(OpenError(Raw(R"({"flt": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})",
                             Bytes(4))),
               Catch::Contains("tensor 'flt': shape"));
    CHECK_THAT(OpenError(Raw(R"({"str": {"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}})",
                             Bytes(16))),
               Catch::Contains("tensor 'str': shape must be an array"));
  }
  SECTION("shape product overflow") {
    const std::string msg = OpenError(Raw(
        R"({"big": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})",
        ""));
    CHECK_THAT(msg, Catch::Contains("tensor 'big': shape [4294967296, 4294967296] has too many"));
    CHECK_THAT(OpenError(Raw(
                   R"({"big2": {"dtype": "F64", "shape": [2305843009213693952], "data_offsets": [0, 0]}})",
                   "")),
               Catch::Contains("tensor 'big2'"));
    CHECK_THAT(OpenError(Raw(
                   R"({"huge": {"dtype": "U8", "shape": [18446744073709551615], "data_offsets": [0, 0]}})",
                   "")),
               Catch::Contains("tensor 'huge'"));
  }
  SECTION("bad data_offsets") {
    CHECK_THAT(OpenError(Raw(R"({"o": {"dtype": "U8", "shape": [1], "data_offsets": [0]}})", "x")),
               Catch::Contains("tensor 'o': data_offsets must be [begin, end]"));
    CHECK_THAT(OpenError(Raw(R"({"o": {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}})",
                             "x")),
               Catch::Contains("tensor 'o': data_offsets must be"));
    CHECK_THAT(OpenError(Raw(R"({"o": {"dtype": "U8", "shape": [0], "data_offsets": [1, 0]}})",
                             "x")),
               Catch::Contains("tensor 'o': data_offsets [1, 0] has begin after end"));
  }
  SECTION("offsets past the end of the data") {
    const std::string msg = OpenError(
        Raw(R"({"tail": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", Bytes(12)));
    CHECK_THAT(msg, Catch::Contains("tensor 'tail': data_offsets [0, 16] run past the end of the "
                                    "data (12 bytes after the header)"));
  }
  SECTION("size mismatch") {
    const std::string msg = OpenError(Raw(
        R"({"visual.conv1.weight": {"dtype": "F16", "shape": [64, 3, 16, 16], "data_offsets": [0, 100]}})",
        Bytes(100)));
    CHECK_THAT(msg, Catch::Contains("bad.safetensors: tensor 'visual.conv1.weight': data_offsets "
                                    "[0, 100] hold 100 bytes, but F16 shape [64, 3, 16, 16] "
                                    "needs 98304"));
  }
  SECTION("overlapping tensors") {
    const std::string msg = OpenError(
        Raw(R"({"first": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
            R"( "second": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
            Bytes(12)));
    CHECK_THAT(msg, Catch::Contains("tensor 'second': data_offsets [4, 12] overlap tensor "
                                    "'first' at [0, 8]"));
    // Identical ranges overlap too.
    CHECK_THAT(OpenError(Raw(R"({"x1": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},)"
                             R"( "x2": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}})",
                             Bytes(4))),
               Catch::Contains("overlap tensor 'x1'"));
  }
  SECTION("duplicate tensor names") {
    const std::string msg = OpenError(
        Raw(R"({"twice": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},)"
            R"( "twice": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})",
            Bytes(2)));
    CHECK_THAT(msg, Catch::Contains("key 'twice' appears twice"));
    CHECK_THAT(OpenError(Raw(R"({"f": {"dtype": "U8", "dtype": "F32", "shape": [1], "data_offsets": [0, 1]}})",
                             Bytes(1))),
               Catch::Contains("key 'dtype' appears twice inside 'f'"));
  }
  SECTION("bad metadata") {
    CHECK_THAT(OpenError(Raw(R"({"__metadata__": {"total": 5}})", "")),
               Catch::Contains("__metadata__ entry 'total' must be a string"));
    CHECK_THAT(OpenError(Raw(R"({"__metadata__": [1]})", "")),
               Catch::Contains("__metadata__ must be an object"));
  }
}

TEST_CASE("accepts edge cases the format allows", "[safetensors]") {
  // Empty header object, padding spaces, trailing data, zero-size tensors sharing offsets.
  auto empty = SafetensorsFile::FromBuffer("e", Raw("{}      ", ""));
  REQUIRE(empty.ok());
  CHECK((*empty)->tensors().empty());
  auto zero = SafetensorsFile::FromBuffer(
      "z", Raw(R"({"a": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},)"
               R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
               Bytes(8)));
  REQUIRE(zero.ok());
  CHECK((*zero)->tensors().size() == 2);
  CHECK((*zero)->tensors().front().name == "b");
  const std::string limit_msg =
      std::string(SafetensorsFile::FromBuffer("big", LengthPrefix(100'000'001) + Bytes(100'000'001))
                      .status()
                      .message());
  CHECK_THAT(limit_msg, Catch::Contains("exceeds the limit"));
}

namespace {

// Writes a two-shard checkpoint and returns the index path; `weight_map` is the JSON body.
std::string WriteShards(const std::string& dir, const std::string& weight_map) {
  REQUIRE(WriteSafetensors(dir + "/s1.safetensors",
                           {{"enc.a", TensorDtype::kF32, {2}, Bytes(8)},
                            {"enc.b", TensorDtype::kF32, {1}, Bytes(4)}})
              .ok());
  REQUIRE(WriteSafetensors(dir + "/s2.safetensors",
                           {{"dec.c", TensorDtype::kBF16, {3}, Bytes(6)}})
              .ok());
  const std::string index = dir + "/model.safetensors.index.json";
  WriteRaw(index, absl::StrCat(R"({"metadata": {"total_size": 18}, "weight_map": )", weight_map,
                               "}"));
  return index;
}

std::string IndexError(const std::string& weight_map,
                       absl::StatusCode code = absl::StatusCode::kInvalidArgument) {
  const std::string dir = TempDir();
  const std::string index = WriteShards(dir, weight_map);
  auto archive = TensorArchive::OpenIndex(index);
  REQUIRE_FALSE(archive.ok());
  CHECK(archive.status().code() == code);
  return std::string(archive.status().message());
}

}  // namespace

TEST_CASE("sharded archives are validated against the index", "[safetensors]") {
  SECTION("a good index") {
    const std::string dir = TempDir();
    WriteShards(dir, R"({"enc.a": "s1.safetensors", "enc.b": "s1.safetensors",)"
                     R"( "dec.c": "s2.safetensors"})");
    auto archive = TensorArchive::OpenInDir(dir, "model.safetensors");
    REQUIRE(archive.ok());
    CHECK((*archive)->Names() == std::vector<std::string>{"dec.c", "enc.a", "enc.b"});
    CHECK((*archive)->total_bytes() == 18);
    CHECK((*archive)->Find("dec.c")->dtype == TensorDtype::kBF16);
  }
  SECTION("the index names a tensor its shard lacks") {
    const std::string msg =
        IndexError(R"({"enc.a": "s1.safetensors", "enc.zzz": "s1.safetensors",)"
                   R"( "dec.c": "s2.safetensors"})");
    CHECK_THAT(msg, Catch::Contains("tensor 'enc.zzz' in shard 's1.safetensors', but no shard "
                                    "defines it"));
  }
  SECTION("the index puts a tensor in the wrong shard") {
    const std::string msg = IndexError(R"({"enc.a": "s2.safetensors", "dec.c": "s2.safetensors",)"
                                       R"( "enc.b": "s1.safetensors"})");
    CHECK_THAT(msg, Catch::Contains("tensor 'enc.a' in shard 's2.safetensors', but it is "
                                    "defined in"));
  }
  SECTION("the index names a missing shard file") {
    const std::string msg = IndexError(
        R"({"enc.a": "s1.safetensors", "lost.w": "s3.safetensors"})", absl::StatusCode::kNotFound);
    CHECK_THAT(msg, Catch::Contains("shard 's3.safetensors' (holding tensor 'lost.w') does not "
                                    "exist"));
  }
  SECTION("two shards define the same tensor") {
    const std::string dir = TempDir();
    const std::string index = WriteShards(dir, R"({"enc.a": "s1.safetensors", "dec.c": "s2.safetensors"})");
    REQUIRE(WriteSafetensors(dir + "/s2.safetensors",
                             {{"dec.c", TensorDtype::kBF16, {3}, Bytes(6)},
                              {"enc.a", TensorDtype::kF32, {2}, Bytes(8)}})
                .ok());
    auto archive = TensorArchive::OpenIndex(index);
    REQUIRE_FALSE(archive.ok());
    CHECK_THAT(std::string(archive.status().message()),
               Catch::Contains("tensor 'enc.a' is defined in both"));
  }
  SECTION("a bad shard propagates its own error") {
    const std::string dir = TempDir();
    const std::string index = WriteShards(dir, R"({"enc.a": "s1.safetensors"})");
    WriteRaw(dir + "/s1.safetensors", Raw("{", ""));
    auto archive = TensorArchive::OpenIndex(index);
    REQUIRE_FALSE(archive.ok());
    CHECK_THAT(std::string(archive.status().message()), Catch::Contains("s1.safetensors"));
  }
  SECTION("malformed indexes") {
    CHECK_THAT(IndexError(R"({"enc.a": 3})"), Catch::Contains("entry for tensor 'enc.a' must be"));
    CHECK_THAT(IndexError(R"({"enc.a": "../s1.safetensors"})"),
               Catch::Contains("not a relative path"));
    CHECK_THAT(IndexError(R"({"enc.a": "/etc/passwd"})"), Catch::Contains("not a relative path"));
    CHECK_THAT(IndexError(R"({})"), Catch::Contains("weight_map is empty"));
    CHECK_THAT(IndexError(R"([1])"), Catch::Contains("\"weight_map\" object"));
    CHECK_THAT(IndexError(R"({"enc.a": "s1.safetensors", "enc.a": "s2.safetensors"})"),
               Catch::Contains("'enc.a' appears twice"));
    CHECK_THAT(IndexError(R"({"enc.a": )"), Catch::Contains("not valid JSON"));
  }
}
