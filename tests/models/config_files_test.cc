// Model config files are read only when they are regular files under a size cap: a FIFO, a
// device (/dev/zero behind a symlink) or an oversized file is refused with the file's name,
// at once, by the reader, by a family's loader and by family detection (--model-dir scans).
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <catch2/catch.hpp>

#include "server/model_loader.h"
#include "server/models/config_json.h"
#include "server/models/openclip/openclip_model.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using embedserve::models::config_json::kMaxConfigBytes;
using embedserve::models::config_json::ReadConfigFile;

namespace {

const std::string kRefModel = std::string(EMBEDSERVE_TEST_DATA) + "/openclip-reference/model";

fs::path TempDir(const std::string& name) {
  return embedserve::testing::FreshTempDir("config_files_" + name);
}

}  // namespace

TEST_CASE("ReadConfigFile reads regular files and refuses everything else by name") {
  const fs::path dir = TempDir("reader");
  {
    std::ofstream(dir / "ok.json") << "{\"a\": 1}";
  }
  auto ok = ReadConfigFile((dir / "ok.json").string());
  REQUIRE(ok.ok());
  CHECK(*ok == "{\"a\": 1}");

  CHECK(ReadConfigFile((dir / "missing.json").string()).status().code() ==
        absl::StatusCode::kNotFound);

  REQUIRE(mkfifo((dir / "fifo.json").c_str(), 0600) == 0);
  auto fifo = ReadConfigFile((dir / "fifo.json").string());  // must not wait for a writer
  CHECK(fifo.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(fifo.status().message()), Catch::Contains("fifo.json") &&
                                                       Catch::Contains("not a regular file"));

  fs::create_symlink("/dev/zero", dir / "zero.json");
  auto zero = ReadConfigFile((dir / "zero.json").string());
  CHECK(zero.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(zero.status().message()), Catch::Contains("not a regular file"));

  CHECK(ReadConfigFile(dir.string()).status().code() == absl::StatusCode::kInvalidArgument);

  {
    std::ofstream big(dir / "big.json");
  }
  fs::resize_file(dir / "big.json", kMaxConfigBytes + 1);  // sparse: no real 16 MiB written
  auto big = ReadConfigFile((dir / "big.json").string());
  CHECK(big.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(big.status().message()), Catch::Contains("over the limit of 16777216"));
  fs::resize_file(dir / "big.json", kMaxConfigBytes);  // at the cap: read
  CHECK(ReadConfigFile((dir / "big.json").string()).ok());
  fs::remove_all(dir);
}

TEST_CASE("a FIFO or /dev/zero as a model's config fails the load and the detection at once") {
  for (const std::string kind : {"fifo", "zero"}) {
    DYNAMIC_SECTION(kind) {
      const fs::path dir = TempDir("model_" + kind);
      for (const auto& entry : fs::directory_iterator(kRefModel)) {
        if (entry.path().filename() != "open_clip_config.json") {
          fs::copy(entry.path(), dir / entry.path().filename(), fs::copy_options::recursive);
        }
      }
      const fs::path config = dir / "open_clip_config.json";
      if (kind == "fifo") {
        REQUIRE(mkfifo(config.c_str(), 0600) == 0);
      } else {
        fs::create_symlink("/dev/zero", config);
      }
      embedserve::models::RuntimeOptions options;
      auto loaded = embedserve::models::openclip::LoadOpenClip(dir.string(), options);
      CHECK(loaded.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK_THAT(std::string(loaded.status().message()),
                 Catch::Contains("open_clip_config.json") && Catch::Contains("not a regular file"));
      // A config.json that is a FIFO: detection (what a --model-dir scan runs) answers too.
      fs::remove(config);
      if (kind == "fifo") {
        REQUIRE(mkfifo((dir / "config.json").c_str(), 0600) == 0);
      } else {
        fs::create_symlink("/dev/zero", dir / "config.json");
      }
      auto family = embedserve::DetectFamily(dir.string());
      CHECK(family.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK_THAT(std::string(family.status().message()), Catch::Contains("config.json"));
      fs::remove_all(dir);
    }
  }
}
