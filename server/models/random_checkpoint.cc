// WriteRandomCheckpointFiles.
#include "server/models/random_checkpoint.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "server/models/torch_util.h"
#include "server/weights/safetensors.h"

namespace embedserve::models {

absl::Status WriteRandomCheckpointFiles(
    const std::string& dir, const std::string& weight_dtype, uint64_t seed,
    const std::function<void(const EmitTensor& emit)>& generate, const std::string& weights_file,
    const std::vector<std::pair<std::string, std::string>>& text_files) {
  namespace fs = std::filesystem;
  absl::StatusOr<WeightDtype> file_dtype = ParseWeightDtype(weight_dtype);
  if (!file_dtype.ok()) return file_dtype.status();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  std::vector<TensorToWrite> tensors;
  absl::Status made = GuardTorch("random initialisation", [&] {
    at::NoGradGuard no_grad;
    at::manual_seed(seed);
    generate([&](const std::string& key, const at::Tensor& values) {
      tensors.push_back(ToTensorToWrite(key, values, *file_dtype));
    });
  });
  if (!made.ok()) return made;
  if (absl::Status s = weights::WriteSafetensors((fs::path(dir) / weights_file).string(), tensors,
                                                 {{"format", "pt"}});
      !s.ok()) {
    return s;
  }
  for (const auto& [name, text] : text_files) {
    std::ofstream out(fs::path(dir) / name, std::ios::binary | std::ios::trunc);
    out << text << "\n";
    if (!out) return absl::InternalError(absl::StrCat(dir, ": cannot write ", name));
  }
  return absl::OkStatus();
}

}  // namespace embedserve::models
