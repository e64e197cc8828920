// Dynamic int8 Linear layers on the CPU (what PyTorch's quantize_dynamic does to nn.Linear):
// a weight quantized once at load to int8 per output channel and prepacked for libtorch's
// oneDNN quantized engine; the activations stay float32 and are quantized per call.
// Included only by model implementation files.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>
#include <torch/nn/module.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace embedserve::models {

// Makes oneDNN the process's quantized engine (libtorch's choice is global). Debian's
// libtorch 1.13 has onednn and qnnpack, no fbgemm; FAILED_PRECONDITION names the engines
// this libtorch has when onednn is not among them. Idempotent and thread-safe.
// Also probes whether the CPU's int8 kernel adds pairs of u8 x s8 products in 16 bits (AVX2,
// AVX-512 without VNNI), where 8-bit activations can saturate; there activations are then
// quantized to 7 bits (PyTorch's reduce_range), which cannot.
absl::Status SelectInt8Engine();

// Whether activations are quantized to 7 bits on this CPU (selecting the engine first; false
// where it cannot be selected), and that fact in words for dtype_reason.
bool Int8ActivationsReduced();
std::string Int8ActivationsDescription();

// One Linear layer in int8. Immutable after Pack; forward may be called from any thread, one
// call at a time (as the device executor's thread calls it).
class Int8Linear {
 public:
  // `weight` [out, in] and `bias` [out] (or undefined), float, on the CPU. Each output row is
  // quantized symmetrically (zero point 0, scale max|row| / 127: oneDNN's int8 weights are
  // symmetric). Calls SelectInt8Engine first. INTERNAL with libtorch's words if packing fails.
  static absl::StatusOr<std::shared_ptr<const Int8Linear>> Pack(const at::Tensor& weight,
                                                                 const at::Tensor& bias);

  // x [..., in] float32 -> [..., out] float32: x is quantized to uint8 per tensor from its own
  // min and max (7 bits where Int8ActivationsReduced), multiplied with the int8 weight,
  // rescaled, plus the bias.
  at::Tensor forward(const at::Tensor& x) const;

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

 private:
  Int8Linear(c10::IValue packed, int64_t in, int64_t out, bool reduce_range);
  c10::IValue packed_;  // a quantized::LinearPackedParamsBase
  int64_t in_features_ = 0, out_features_ = 0;
  bool reduce_range_ = false;
};

// x @ weight^T + bias in float, or through `int8` when it is set.
inline at::Tensor LinearForward(const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& bias,
                                const std::shared_ptr<const Int8Linear>& int8) {
  return int8 ? int8->forward(x) : at::linear(x, weight, bias);
}

// Packs the float32 `weight` (and `bias`) into `*int8`, then releases the float weight (it
// becomes an empty tensor: nothing may read it afterwards). `name` is for messages.
absl::Status PackLinearInt8(const std::string& name, at::Tensor& weight, const at::Tensor& bias,
                            std::shared_ptr<const Int8Linear>* int8);

// Packs every module of type `LinearModule` (members `weight`, `bias`, `int8`) under `root`
// whose name `include` accepts and whose weight is a matrix; returns how many it packed.
template <typename LinearModule>
absl::StatusOr<int> PackLinearModulesInt8(torch::nn::Module& root,
                                          const std::function<bool(const std::string&)>& include) {
  int packed = 0;
  for (const auto& item : root.named_modules()) {
    auto* linear = dynamic_cast<LinearModule*>(item.value().get());
    if (linear == nullptr || linear->weight.dim() != 2 || !include(item.key())) continue;
    if (absl::Status s = PackLinearInt8(item.key(), linear->weight, linear->bias, &linear->int8);
        !s.ok()) {
      return s;
    }
    ++packed;
  }
  return packed;
}

}  // namespace embedserve::models
