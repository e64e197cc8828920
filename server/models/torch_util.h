// What every libtorch model family shares: device and dtype parsing, thread set-up, loading a
// module's parameters from a safetensors archive with shape checks, the attention kernel
// behind one function (its libtorch API differs between 1.13 and 2.x), and turning libtorch
// exceptions into statuses. Included only by model implementation files.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/models/model.h"
#include "server/models/runtime_options.h"
#include "server/weights/safetensors.h"
#include "server/models/device_choice.h"
#include "server/models/serving_dtype.h"

namespace embedserve::models {

// The weight-file types every family reads its checkpoint through (server/weights).
using weights::DtypeSize;
using weights::TensorArchive;
using weights::TensorDtype;
using weights::TensorToWrite;
using weights::ShapeString;
using weights::TensorView;

// What this libtorch build and machine have: CUDA devices, MPS built and MPS available.
DeviceAvailability HostDeviceAvailability();

// "cpu", "cuda", "cuda:N", "mps" -> a device this build and machine can use, or
// FAILED_PRECONDITION naming what is missing (CheckDevice on HostDeviceAvailability()).
absl::StatusOr<at::Device> ParseDevice(const std::string& device);
// The dtype a model serves in on `device`, and why: options.dtype ("auto", "float32",
// "bfloat16", "float16") through ChooseServingDtype (serving_dtype.h), with the host CPU's
// facts (or options.dtype_context_for_testing's) and, where CPUID does not settle it, a
// measured matmul (MeasureCpuMatmulRates).
struct ServingDtype {
  at::ScalarType type = at::kFloat;  // parameters and activations (float32 under int8)
  // "int8": the Linear layers' weights are packed int8 (int8_linear.h) after loading.
  bool int8_linears = false;
  std::string reason;
  // "float32", "bfloat16", "float16" or "int8".
  std::string name() const;
  // The dtype the Linear layers multiply in: `type`, or at::kQInt8 under int8.
  at::ScalarType matmul_type() const { return int8_linears ? at::kQInt8 : type; }
};
absl::StatusOr<ServingDtype> ResolveServingDtype(const RuntimeOptions& options,
                                                 const at::Device& device);
std::string ServingDtypeName(at::ScalarType dtype);

// float32 and bfloat16 matmul throughput on this CPU, each with its serving thread set-up
// (ConfigureCpuThreads' defaults): a [256 x 768] x [768 x 768] product, best of three.
// Measured once per process (about 0.1 s; 0.2 s where bfloat16 is a scalar fallback).
CpuMatmulRates MeasureCpuMatmulRates();

// Sets libtorch's intra-op threads and OpenBLAS's pool from the options (0: the measured
// default for the dtype the Linear layers multiply in: at::kFloat runs in OpenBLAS,
// at::kBFloat16 and at::kQInt8 in oneDNN; see RuntimeOptions). Returns a short description
// for the log.
std::string ConfigureCpuThreads(const RuntimeOptions& options, at::ScalarType matmul_dtype);

// Every parameter of `module` as (name, shape), sorted by name (build the module on the meta
// device to list a full-size model without allocating it).
std::vector<std::pair<std::string, std::vector<int64_t>>> SortedParameterShapes(
    torch::nn::Module& module);

// A torch view of a safetensors tensor (no copy; the archive must outlive it).
absl::StatusOr<at::Tensor> TensorFromView(const TensorView& view);

// "F32", "F16", "BF16": a weight dtype for checkpoints this project writes (random test
// checkpoints), as the safetensors dtype and the torch type whose bytes it holds.
struct WeightDtype {
  TensorDtype file;
  at::ScalarType torch;
};
absl::StatusOr<WeightDtype> ParseWeightDtype(const std::string& name);

// `tensor` converted to `dtype`, as a safetensors entry named `name`.
TensorToWrite ToTensorToWrite(std::string name, const at::Tensor& tensor, WeightDtype dtype);

// The family's checkpoint in `dir`: `safetensors_name` (or its sharded `.index.json`), else
// the torch.save file `bin_name` read through weights::OpenTorchBin (held in memory as
// safetensors bytes). Safetensors wins when both are there; NOT_FOUND names both when
// neither is.
absl::StatusOr<std::unique_ptr<TensorArchive>> OpenCheckpointInDir(const std::string& dir,
                                                                   const std::string& safetensors_name,
                                                                   const std::string& bin_name);

// Copies every parameter of `module` from `archive`. `key_for` maps a parameter's name in the
// module to its key in the checkpoint. Checks each shape and that the checkpoint holds no
// tensor the module does not use (except names for which `ignore` is true). Parameters
// become `dtype` on `device`, except those for which `keep_fp32` is true.
struct LoadPlan {
  std::function<std::string(const std::string&)> key_for = [](const std::string& n) { return n; };
  std::function<bool(const std::string&)> ignore = [](const std::string&) { return false; };
  std::function<bool(const std::string&)> keep_fp32 = [](const std::string&) { return false; };
};
absl::Status LoadParameters(torch::nn::Module& module, const TensorArchive& archive,
                            const LoadPlan& plan, at::Device device, at::ScalarType dtype);

// LayerNorm whose parameters stay float32 in every serving dtype and which computes in
// float32, returning the input's dtype (OpenCLIP's LayerNormFp32 behaviour; SigLIP too).
struct Fp32LayerNorm : torch::nn::Module {
  Fp32LayerNorm(int width, double eps, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;
  double eps;
  at::Tensor weight, bias;
};

// Scaled dot-product attention over [batch, heads, tokens, head_dim]; `mask` is additive
// ([tokens, tokens] or broadcastable) or undefined. Softmax runs in float32. With libtorch
// 2.x on a GPU it is the fused scaled_dot_product_attention.
at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& mask);

// [B, 3, grid*patch, grid*patch] pixels as [B, grid*grid, 3*patch*patch] flattened patches
// (channel, then row, then column within a patch): a stride-`patch` convolution becomes one
// matmul with its weight viewed as [width, 3*patch*patch].
at::Tensor FlattenPatches(const at::Tensor& pixels, int64_t grid, int64_t patch);

// Host memory for a batch's inputs: page-locked when `device` is CUDA, so that its copy to
// the device runs asynchronously.
at::Tensor NewHostTensor(at::IntArrayRef sizes, at::ScalarType dtype, const at::Device& device);

// `host` on `device`. CPU: `host` itself. CUDA: the copy is queued on a side stream (through
// pinned staging when `host` is not pinned) and the current stream waits for it on the
// device, not on the host: the copy overlaps the compute queued before it. Other devices: a
// plain copy.
at::Tensor StageToDevice(const at::Tensor& host, const at::Device& device);

// Launches one batch: `forward` queues the device work and returns the device output;
// `convert` turns the output, copied to host float32, into embeddings. CPU: all of it runs
// now. Other devices: the output's copy back is queued without blocking, and the returned
// batch's Wait() waits for it, then converts. Exceptions become statuses (GuardTorch).
std::unique_ptr<PendingBatch> LaunchBatch(
    const std::string& what, const at::Device& device, const std::function<at::Tensor()>& forward,
    std::function<std::vector<Embedding>(const at::Tensor& host_output)> convert);

// Runs `body`, turning libtorch exceptions into INTERNAL (RESOURCE_EXHAUSTED for out of
// memory), with `what` in the message.
absl::Status GuardTorch(const std::string& what, const std::function<void()>& body);

}  // namespace embedserve::models
