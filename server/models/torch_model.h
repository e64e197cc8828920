// What both libtorch families share behind the Model interface: where the model runs (device,
// serving dtype and why, CPU threads), its description, image decoding under the request's
// limits, staging a batch of images for the device, MaxSim on the device, and token strings
// for Tokenize. Included only by model implementation files.
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "server/image/decode.h"
#include "server/models/model.h"
#include "server/models/runtime_options.h"
#include "server/models/torch_util.h"

namespace embedserve::models {

// Where a model is placed, resolved from RuntimeOptions before it is built.
struct Placement {
  at::Device device = at::Device(at::kCPU);
  ServingDtype dtype;
};

// The device (ParseDevice) and the serving dtype (ResolveServingDtype) of `options`; on a
// CPU, also sets the thread pools for that dtype (ConfigureCpuThreads).
absl::StatusOr<Placement> PlaceModel(const RuntimeOptions& options);

// A description with what every family fills the same way: family, device, dtype and why.
ModelDescription DescribePlacement(const std::string& family, const Placement& placement);

class TorchModel : public LaunchingModel {
 public:
  const ModelDescription& description() const final { return description_; }

  // Decodes under `limits` (header checked before any pixel decode), then PreprocessImage.
  absl::StatusOr<ImageInput> PrepareImage(absl::string_view encoded,
                                          const ImageLimits& limits) const final;

  // PrepareText's ids, each named by TokenString.
  absl::StatusOr<Tokenization> Tokenize(absl::string_view text, bool truncate) const final;

  // Model::MaxSim: on the model's device, in float32 (maxsim_torch).
  absl::StatusOr<std::vector<float>> MaxSim(const RowsView& query,
                                            absl::Span<const RowsView> documents) override;

 protected:
  TorchModel(const Placement& placement, ModelDescription description);

  // A decoded image as the family's image processor makes it: 3 x side x side floats.
  virtual absl::StatusOr<ImageInput> PreprocessImage(const image::RgbImage& rgb) const = 0;
  // INVALID_ARGUMENT naming the first image that is not 3 x side x side values.
  static absl::Status CheckPixels(absl::Span<const ImageInput* const> images, int64_t side);
  // The images as one [batch, 3, side, side] tensor in the serving dtype on the device (call
  // inside a LaunchBatch forward, after CheckPixels).
  at::Tensor StagePixels(absl::Span<const ImageInput* const> images, int64_t side) const;
  // The text of one token id, as the family's tokenizer spells it (Tokenize).
  virtual std::string TokenString(int32_t id) const = 0;

  const at::Device device_;
  const at::ScalarType dtype_;

 private:
  const ModelDescription description_;
};

}  // namespace embedserve::models
