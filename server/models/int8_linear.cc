// Int8Linear: per-channel int8 weights prepacked for oneDNN, through libtorch's dispatcher ops
// quantized::linear_prepack and quantized::linear_dynamic (boxed calls: the packed-parameter
// class stays an IValue, so no quantized-backend header is needed in 1.13 or 2.x).
#include "server/models/int8_linear.h"

#include <cmath>
#include <utility>
#include <vector>

#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/QEngine.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/models/torch_util.h"

namespace embedserve::models {
namespace {

const c10::OperatorHandle& PrepackOp() {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("quantized::linear_prepack", "");
  return op;
}

const c10::OperatorHandle& DynamicLinearOp() {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("quantized::linear_dynamic", "");
  return op;
}

// The engine's state for this process: whether it could be selected, and how activations
// are quantized.
struct Int8Engine {
  absl::Status status;
  bool reduce_range = false;
};

// 64 ones (quantized to 255, the maximum of a non-negative tensor) times a weight of 64 ones
// (quantized to 127) is 64, unless the kernel adds pairs of u8 x s8 products in 16 bits
// (AVX2 and AVX-512 without VNNI: vpmaddubsw), where each pair (2 x 255 x 127 = 64770)
// saturates at 32767 and the sum about halves.
bool SaturatesInt16() {
  c10::InferenceMode inference;
  constexpr int64_t kInner = 64;
  const at::Tensor quantized = at::quantize_per_channel(
      at::ones({1, kInner}), at::full({1}, 1.0 / 127, at::kDouble), at::zeros({1}, at::kLong),
      /*axis=*/0, at::kQInt8);
  std::vector<c10::IValue> pack{quantized, c10::optional<at::Tensor>()};
  PrepackOp().callBoxed(&pack);
  std::vector<c10::IValue> call{at::ones({1, kInner}), pack.at(0), /*reduce_range=*/false};
  DynamicLinearOp().callBoxed(&call);
  const double y = call.at(0).toTensor().item<double>();
  return std::abs(y - kInner) > 0.01 * kInner;
}

const Int8Engine& Engine() {
  static const Int8Engine engine = [] {
    Int8Engine e;
    std::vector<std::string> names;
    bool has_onednn = false;
    for (const at::QEngine q : at::globalContext().supportedQEngines()) {
      if (q == at::QEngine::NoQEngine) continue;
      names.push_back(c10::toString(q));
      has_onednn = has_onednn || q == at::QEngine::ONEDNN;
    }
    if (!has_onednn) {
      e.status = absl::FailedPreconditionError(absl::StrCat(
          "dtype int8 needs libtorch's onednn quantized engine; this libtorch has ",
          names.empty() ? std::string("none") : absl::StrJoin(names, ", "),
          ". Serve float32 or bfloat16"));
      return e;
    }
    e.status = GuardTorch("selecting the onednn quantized engine", [&] {
      at::globalContext().setQEngine(at::QEngine::ONEDNN);
      e.reduce_range = SaturatesInt16();
    });
    return e;
  }();
  return engine;
}

}  // namespace

absl::Status SelectInt8Engine() { return Engine().status; }

bool Int8ActivationsReduced() { return Engine().status.ok() && Engine().reduce_range; }

std::string Int8ActivationsDescription() {
  return Int8ActivationsReduced()
             ? "activations quantized to 7 bits, as this CPU's int8 kernel (no VNNI or "
               "AMX-INT8) adds pairs of products in 16 bits, which 8-bit activations overflow"
             : "activations quantized to 8 bits (this CPU's int8 kernel accumulates in 32 bits)";
}

Int8Linear::Int8Linear(c10::IValue packed, int64_t in, int64_t out, bool reduce_range)
    : packed_(std::move(packed)), in_features_(in), out_features_(out),
      reduce_range_(reduce_range) {}

absl::StatusOr<std::shared_ptr<const Int8Linear>> Int8Linear::Pack(const at::Tensor& weight,
                                                                   const at::Tensor& bias) {
  if (absl::Status engine = SelectInt8Engine(); !engine.ok()) return engine;
  if (weight.dim() != 2 || !weight.is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an int8 linear needs a 2-d weight on the CPU; got ", weight.dim(), " dimensions on ",
        weight.device().str()));
  }
  std::shared_ptr<const Int8Linear> result;
  absl::Status packed = GuardTorch("packing an int8 linear weight", [&] {
    c10::InferenceMode inference;
    const at::Tensor w = weight.to(at::kFloat).contiguous();
    // A row of zeros keeps a tiny positive scale (its codes are all 0).
    const at::Tensor scales = w.abs().amax(1).div(127.0).clamp_min(1e-12).to(at::kDouble);
    const at::Tensor zero_points = at::zeros({w.size(0)}, at::kLong);
    const at::Tensor quantized =
        at::quantize_per_channel(w, scales, zero_points, /*axis=*/0, at::kQInt8);
    c10::optional<at::Tensor> float_bias;
    if (bias.defined()) float_bias = bias.to(at::kFloat).contiguous();
    std::vector<c10::IValue> stack{quantized, float_bias};
    PrepackOp().callBoxed(&stack);
    result = std::shared_ptr<const Int8Linear>(
        new Int8Linear(std::move(stack.at(0)), w.size(1), w.size(0), Engine().reduce_range));
  });
  if (!packed.ok()) return packed;
  return result;
}

at::Tensor Int8Linear::forward(const at::Tensor& x) const {
  std::vector<c10::IValue> stack{x.to(at::kFloat).contiguous(), packed_, reduce_range_};
  DynamicLinearOp().callBoxed(&stack);
  return std::move(stack.at(0)).toTensor();
}

absl::Status PackLinearInt8(const std::string& name, at::Tensor& weight, const at::Tensor& bias,
                            std::shared_ptr<const Int8Linear>* int8) {
  absl::StatusOr<std::shared_ptr<const Int8Linear>> packed = Int8Linear::Pack(weight, bias);
  if (!packed.ok()) {
    return absl::Status(packed.status().code(),
                        absl::StrCat("linear '", name, "': ", packed.status().message()));
  }
  *int8 = *std::move(packed);
  return GuardTorch(absl::StrCat("releasing the float weight of '", name, "'"), [&] {
    at::NoGradGuard no_grad;
    weight.set_data(at::empty({0}, weight.options()));
  });
}

}  // namespace embedserve::models
