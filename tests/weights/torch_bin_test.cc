// The torch.save (.bin) reader against checkpoints that /usr/bin/python3's torch writes
// (tests/tools/torch_bin_fixtures.py), with torch's own bytes as the expectation; refusals.
#include "server/weights/torch_bin.h"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using embedserve::testing::Slurp;
using embedserve::weights::DtypeName;
using embedserve::weights::OpenTorchBin;
using embedserve::weights::TensorArchive;
using embedserve::weights::TensorView;
using embedserve::weights::TorchBinToSafetensors;

namespace {

// The fixtures, written once per process.
const std::string& Fixtures() {
  static const std::string dir = [] {
    const std::string out = embedserve::testing::FreshTempDir("torch_bin");
    const std::string python = "/usr/bin/python3";
    INFO("the fixtures need " << python << " with torch (Debian python3-torch)");
    REQUIRE(fs::exists(python));
    const std::string log = out + "/log.txt";
    const int rc = std::system((python + " " + EMBEDSERVE_SOURCE_DIR +
                                "/tests/tools/torch_bin_fixtures.py " + out + " > " + log +
                                " 2>&1").c_str());
    INFO("torch_bin_fixtures.py exited with " << rc << ":\n" << Slurp(log));
    REQUIRE(rc == 0);
    return out;
  }();
  return dir;
}

std::string Bin(const std::string& name) { return Fixtures() + "/" + name + ".bin"; }

// The archive holds exactly the tensors NAME.expect.json lists, with their dtypes, shapes
// and bytes.
void CheckMatchesTorch(const TensorArchive& archive, const std::string& name) {
  const nlohmann::json expect =
      nlohmann::json::parse(Slurp(Fixtures() + "/" + name + ".expect.json"));
  CHECK(archive.Names().size() == expect.size());
  for (const auto& [key, want] : expect.items()) {
    INFO("tensor " << key);
    const TensorView* t = archive.Find(key);
    REQUIRE(t != nullptr);
    CHECK(std::string(DtypeName(t->dtype)) == want["dtype"].get<std::string>());
    CHECK(t->shape == want["shape"].get<std::vector<int64_t>>());
    const std::string got(reinterpret_cast<const char*>(t->data), t->nbytes);
    CHECK(absl::BytesToHexString(got) == want["hex"].get<std::string>());
  }
}

std::string OpenError(const std::string& name) {
  auto archive = OpenTorchBin(Bin(name));
  REQUIRE_FALSE(archive.ok());
  return std::string(archive.status().message());
}

}  // namespace

TEST_CASE("a module's state dict with views, float16, bfloat16, int64 and a Parameter",
          "[torch_bin]") {
  auto archive = OpenTorchBin(Bin("basic"));
  INFO(archive.status().ToString());
  REQUIRE(archive.ok());
  CheckMatchesTorch(**archive, "basic");
  // The messages name the .bin.
  CHECK(*(*archive)->Find("half")->file == Bin("basic"));
}

TEST_CASE("OpenCLIP's {state_dict: ...} wrapper is unwrapped and module. stripped",
          "[torch_bin]") {
  auto archive = OpenTorchBin(Bin("wrapped"));
  INFO(archive.status().ToString());
  REQUIRE(archive.ok());
  CheckMatchesTorch(**archive, "wrapped");
  const auto& metadata = (*archive)->files()[0]->metadata();
  CHECK(metadata.at("embedserve.unwrapped") == "state_dict");
  CHECK(metadata.at("embedserve.stripped_prefix") == "module.");
}

TEST_CASE("a plain dict pickled with protocol 4", "[torch_bin]") {
  auto archive = OpenTorchBin(Bin("protocol4"));
  INFO(archive.status().ToString());
  REQUIRE(archive.ok());
  CheckMatchesTorch(**archive, "protocol4");
}

TEST_CASE("foreign globals are refused by name and never run", "[torch_bin][errors]") {
  std::string message = OpenError("custom_class");
  CHECK_THAT(message, Catch::Contains("__main__.Custom"));
  CHECK_THAT(message, Catch::Contains("not allowed"));
  CHECK_THAT(message, Catch::Contains(Bin("custom_class")));
  message = OpenError("os_system");
  CHECK_THAT(message, Catch::Contains("posix.system"));
  message = OpenError("crafted_pickle");
  CHECK_THAT(message, Catch::Contains("posix.system"));
  CHECK_FALSE(fs::exists(Fixtures() + "/pwned"));
}

TEST_CASE("unsupported dtypes, nesting and formats are refused, naming them",
          "[torch_bin][errors]") {
  std::string message = OpenError("float64");
  CHECK_THAT(message, Catch::Contains("'d'"));
  CHECK_THAT(message, Catch::Contains("float64"));
  message = OpenError("nested");
  CHECK_THAT(message, Catch::Contains("'outer'"));
  CHECK_THAT(message, Catch::Contains("nested"));
  CHECK_THAT(OpenError("legacy"), Catch::Contains("legacy"));
  CHECK(OpenTorchBin(Fixtures() + "/absent.bin").status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("a storage entry shorter than its persistent id declares is refused",
          "[torch_bin][errors]") {
  const std::string message = OpenError("short_storage");
  CHECK_THAT(message, Catch::Contains("data/0"));
  CHECK_THAT(message, Catch::Contains("bytes"));
}

TEST_CASE("every truncation and many byte flips of a checkpoint fail cleanly or read",
          "[torch_bin][errors]") {
  const std::string bytes = Slurp(Bin("basic"));
  REQUIRE(TorchBinToSafetensors("basic.bin", bytes).ok());
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto result = TorchBinToSafetensors("cut.bin", bytes.substr(0, n));
    INFO("cut to " << n << " bytes");
    REQUIRE_FALSE(result.ok());
    CHECK_THAT(std::string(result.status().message()), Catch::StartsWith("cut.bin: "));
  }
  // Flipped bytes (the pickle, the headers, the data): no crash; data flips may still read.
  for (size_t i = 0; i < bytes.size(); i += 3) {
    std::string flipped = bytes;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x5a);
    auto result = TorchBinToSafetensors("flip.bin", flipped);
    if (!result.ok()) {
      CHECK_THAT(std::string(result.status().message()), Catch::StartsWith("flip.bin: "));
    }
  }
}

TEST_CASE("the limits bound the pickle", "[torch_bin][errors]") {
  embedserve::weights::TorchBinLimits limits;
  limits.max_objects = 20;
  auto result = TorchBinToSafetensors("basic.bin", Slurp(Bin("basic")), limits);
  REQUIRE_FALSE(result.ok());
  CHECK_THAT(std::string(result.status().message()), Catch::Contains("more than 20 objects"));
  limits = {};
  limits.max_pickle_bytes = 100;
  result = TorchBinToSafetensors("basic.bin", Slurp(Bin("basic")), limits);
  REQUIRE_FALSE(result.ok());
  CHECK_THAT(std::string(result.status().message()), Catch::Contains("data.pkl"));
}
