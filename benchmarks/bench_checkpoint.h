// A random OpenCLIP checkpoint in the hub layout for the benchmarks, written once to
// $TMPDIR/embedserve-bench-NAME (F16 weights, seed 1) and reused by every later run.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "server/models/openclip/openclip_config.h"
#include "server/models/openclip/openclip_random_checkpoint.h"

namespace embedserve::bench {

// The checkpoint's directory; writes it first if it is not there.
inline absl::StatusOr<std::string> CachedRandomCheckpoint(
    const models::openclip::OpenClipConfig& config, const std::string& name) {
  namespace fs = std::filesystem;
  const std::string dir = (fs::temp_directory_path() / ("embedserve-bench-" + name)).string();
  if (!fs::exists(fs::path(dir) / "open_clip_model.safetensors")) {
    std::printf("writing a random %s checkpoint to %s ...\n", name.c_str(), dir.c_str());
    std::fflush(stdout);
    if (absl::Status s = models::openclip::WriteRandomCheckpoint(config, dir, "F16", 1); !s.ok()) {
      return s;
    }
  }
  return dir;
}

}  // namespace embedserve::bench
