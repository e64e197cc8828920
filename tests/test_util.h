// Small helpers the Catch2 tests share: a file's whole contents, a fresh temp directory,
// cosine similarity, the device model tests run on.
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace embedserve::testing {

// The device model tests run on: $EMBEDSERVE_TEST_DEVICE ("cuda:0" on a GPU machine), else
// "cpu" (what CI has).
inline std::string TestDevice() {
  const char* device = std::getenv("EMBEDSERVE_TEST_DEVICE");
  return device != nullptr && *device != '\0' ? device : "cpu";
}

inline std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A fresh empty directory under the system's temp directory, named after `name` and this
// process (so parallel test processes never share one).
inline std::string FreshTempDir(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      ("embedserve_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Cosine of two equally long vectors, accumulated in double.
template <typename A, typename B>
double Cosine(const std::vector<A>& a, const std::vector<B>& b) {
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    dot += static_cast<double>(a[i]) * static_cast<double>(b[i]);
    na += static_cast<double>(a[i]) * static_cast<double>(a[i]);
    nb += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  return dot / std::sqrt(na * nb);
}

}  // namespace embedserve::testing
