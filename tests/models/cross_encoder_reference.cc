// Runs the PyTorch cross-encoder reference script through /usr/bin/python3.
#include "tests/models/cross_encoder_reference.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "tests/test_util.h"

namespace embedserve::testing {

namespace fs = std::filesystem;

nlohmann::json RunCrossEncoderReference(const std::string& dir,
                                        const std::vector<models::TextInput>& inputs) {
  const std::string python = "/usr/bin/python3";
  const std::string script =
      std::string(EMBEDSERVE_SOURCE_DIR) + "/tests/tools/cross_encoder_reference.py";
  INFO("the reference needs " << python << " with torch and numpy (Debian python3-torch, "
       "python3-numpy)");
  REQUIRE(fs::exists(python));
  nlohmann::json items = nlohmann::json::array();
  for (const models::TextInput& in : inputs) {
    items.push_back({{"ids", in.token_ids}, {"second_segment_start", in.second_segment_start}});
  }
  const fs::path work = FreshTempDir("cross_encoder_reference");
  {
    std::ofstream out(work / "inputs.json", std::ios::binary | std::ios::trunc);
    out << items.dump();
  }
  const std::string out = (work / "out.json").string(), log = (work / "log.txt").string();
  const int rc = std::system((python + " " + script + " " + dir + " " +
                              (work / "inputs.json").string() + " > " + out + " 2> " + log)
                                 .c_str());
  INFO("cross_encoder_reference.py exited with " << rc << ":\n" << Slurp(log));
  REQUIRE(rc == 0);
  nlohmann::json result = nlohmann::json::parse(Slurp(out));
  fs::remove_all(work);
  return result;
}

void CheckCloseToReference(const std::vector<float>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("pair " << i << ": native " << got[i] << ", reference " << want[i]);
    CHECK(std::abs(got[i] - want[i]) <= 1e-5 * std::abs(want[i]) + 1e-5);
  }
}

}  // namespace embedserve::testing
