// TorchModel and model placement.
#include "server/models/torch_model.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/models/int8_linear.h"
#include "server/models/maxsim_torch.h"

namespace embedserve::models {

absl::StatusOr<Placement> PlaceModel(const RuntimeOptions& options) {
  absl::StatusOr<at::Device> device = ParseDevice(options.device);
  if (!device.ok()) return device.status();
  absl::StatusOr<ServingDtype> dtype = ResolveServingDtype(options, *device);
  if (!dtype.ok()) return dtype.status();
  if (dtype->int8_linears) {
    if (absl::Status engine = SelectInt8Engine(); !engine.ok()) return engine;
    dtype->reason = absl::StrCat(dtype->reason, "; ", Int8ActivationsDescription());
  }
  if (device->is_cpu()) ConfigureCpuThreads(options, dtype->matmul_type());
  return Placement{*device, *std::move(dtype)};
}

ModelDescription DescribePlacement(const std::string& family, const Placement& placement) {
  ModelDescription d;
  d.family = family;
  d.dtype = placement.dtype.name();
  d.dtype_reason = placement.dtype.reason;
  d.device = placement.device.str();
  return d;
}

TorchModel::TorchModel(const Placement& placement, ModelDescription description)
    : device_(placement.device),
      dtype_(placement.dtype.type),
      description_(std::move(description)) {}

absl::StatusOr<std::vector<float>> TorchModel::MaxSim(const RowsView& query,
                                                      absl::Span<const RowsView> documents) {
  return MaxSimOnDevice(query, documents, device_);
}

absl::StatusOr<ImageInput> TorchModel::PrepareImage(absl::string_view encoded,
                                                     const ImageLimits& limits) const {
  absl::StatusOr<image::RgbImage> rgb =
      image::DecodeToRgb(encoded, limits, description_.image_size);
  if (!rgb.ok()) return rgb.status();
  return PreprocessImage(*rgb);
}

absl::Status TorchModel::CheckPixels(absl::Span<const ImageInput* const> images, int64_t side) {
  const size_t per_image = static_cast<size_t>(3 * side * side);
  for (size_t i = 0; i < images.size(); ++i) {
    if (images[i]->pixels.size() != per_image) {
      return absl::InvalidArgumentError(absl::StrCat("image input ", i, " has ",
                                                     images[i]->pixels.size(),
                                                     " values, expected ", per_image));
    }
  }
  return absl::OkStatus();
}

at::Tensor TorchModel::StagePixels(absl::Span<const ImageInput* const> images,
                                   int64_t side) const {
  const int64_t batch = static_cast<int64_t>(images.size());
  const size_t per_image = static_cast<size_t>(3 * side * side);
  at::Tensor pixels = NewHostTensor({batch, 3, side, side}, at::kFloat, device_);
  float* dst = pixels.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    std::memcpy(dst + b * per_image, images[b]->pixels.data(), per_image * sizeof(float));
  }
  return StageToDevice(pixels, device_).to(dtype_);
}

absl::StatusOr<Tokenization> TorchModel::Tokenize(absl::string_view text, bool truncate) const {
  absl::StatusOr<TextInput> input = PrepareText(text, truncate);
  if (!input.ok()) return input.status();
  Tokenization result;
  result.truncated = input->truncated;
  result.tokens.reserve(input->token_ids.size());
  for (int32_t id : input->token_ids) result.tokens.push_back(TokenString(id));
  result.ids = std::move(input->token_ids);
  return result;
}

}  // namespace embedserve::models
