// Shared libtorch plumbing for the model families: devices, dtypes, threads, parameter loading.
#include "server/models/torch_util.h"

#include <dlfcn.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <cstring>
#include <new>
#include <thread>

#include <ATen/Config.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/weights/torch_bin.h"

namespace embedserve::models {

DeviceAvailability HostDeviceAvailability() {
  DeviceAvailability available;
  available.cuda_devices = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  available.mps_available = at::hasMPS();
#if defined(AT_MPS_ENABLED)
  available.mps_built = AT_MPS_ENABLED();  // libtorch 2.x says how it was built
#else
  available.mps_built = available.mps_available;  // 1.13 tells only the two together
#endif
  return available;
}

absl::StatusOr<at::Device> ParseDevice(const std::string& device) {
  if (absl::Status usable = CheckDevice(device, HostDeviceAvailability()); !usable.ok()) {
    return usable;
  }
  const std::string d = absl::AsciiStrToLower(device);
  if (d == "mps") return at::Device(at::kMPS);
  if (d == "cpu") return at::Device(at::kCPU);
  int index = 0;
  if (d.size() > 5) (void)absl::SimpleAtoi(d.substr(5), &index);  // checked above
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
}

namespace {

// The CUDA device's compute capability major, from the CUDA runtime libtorch loaded (never a
// second copy); 0 when unknown.
int CudaComputeMajor(const at::Device& device) {
  using GetAttribute = int (*)(int*, int, int);
  auto get = reinterpret_cast<GetAttribute>(dlsym(RTLD_DEFAULT, "cudaDeviceGetAttribute"));
  if (get == nullptr) return 0;
  constexpr int kComputeCapabilityMajor = 75;  // cudaDevAttrComputeCapabilityMajor
  int major = 0;
  if (get(&major, kComputeCapabilityMajor, device.has_index() ? device.index() : 0) != 0) return 0;
  return major;
}

double MatmulGflops(at::ScalarType dtype) {
  RuntimeOptions defaults;
  ConfigureCpuThreads(defaults, dtype);
  c10::InferenceMode guard;
  constexpr int64_t kRows = 256, kInner = 768, kCols = 768;
  const at::Tensor a = at::randn({kRows, kInner}).to(dtype);
  const at::Tensor b = at::randn({kInner, kCols}).to(dtype);
  double best = 0;
  for (int rep = 0; rep < 4; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    const at::Tensor c = at::matmul(a, b);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double gflops = 2.0 * kRows * kInner * kCols / seconds / 1e9;
    // A scalar fallback is told by its first run; otherwise that run only warms caches and
    // thread pools, and the best of the next three counts.
    if (rep == 0 && seconds > 0.25) return gflops;
    if (rep > 0) best = std::max(best, gflops);
  }
  return best;
}

}  // namespace

CpuMatmulRates MeasureCpuMatmulRates() {
  static const CpuMatmulRates rates = [] {
    CpuMatmulRates r;
    r.float32_gflops = MatmulGflops(at::kFloat);
    r.bfloat16_gflops = MatmulGflops(at::kBFloat16);
    return r;
  }();
  return rates;
}

absl::StatusOr<ServingDtype> ResolveServingDtype(const RuntimeOptions& options,
                                                 const at::Device& device) {
  DtypeContext context;
  if (options.dtype_context_for_testing != nullptr) {
    context = *options.dtype_context_for_testing;
  } else {
    context.cpu = HostCpuFeatures();
    context.measure_cpu = MeasureCpuMatmulRates;
  }
  context.device = device.is_cuda() ? DeviceKind::kCuda
                   : device.is_mps() ? DeviceKind::kMps
                                     : DeviceKind::kCpu;
  if (device.is_cuda() && options.dtype_context_for_testing == nullptr) {
    context.cuda_compute_major = CudaComputeMajor(device);
  }
  if (device.is_mps() && options.dtype_context_for_testing == nullptr) {
    context.macos_major = HostMacosMajor();
  }
  absl::StatusOr<DtypeChoice> choice =
      ChooseServingDtype(options.dtype, context, options.allow_slow_bfloat16);
  if (!choice.ok()) return choice.status();
  ServingDtype out;
  out.int8_linears = choice->dtype == "int8";
  out.type = choice->dtype == "bfloat16" ? at::kBFloat16
             : choice->dtype == "float16" ? at::kHalf
                                          : at::kFloat;
  out.reason = choice->reason;
  return out;
}

std::string ServingDtype::name() const {
  return int8_linears ? "int8" : ServingDtypeName(type);
}

std::string ServingDtypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kQInt8: return "int8";
    default: return "float32";
  }
}

std::string ConfigureCpuThreads(const RuntimeOptions& options, at::ScalarType matmul_dtype) {
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  // Measured on the 2-core build machine (benchmarks/clip_forward_bench): float32 matmuls run
  // in OpenBLAS's own pool, and torch threads on top of it halve throughput; bfloat16 runs in
  // oneDNN on torch's threads, where OpenBLAS's pool only competes; so do int8's Linear layers
  // (their attention matmuls stay float32 in OpenBLAS, on one thread).
  int torch_threads = options.torch_threads;
  int blas_threads = options.blas_threads;
  const bool in_openblas = matmul_dtype == at::kFloat;
  if (torch_threads <= 0) torch_threads = in_openblas ? 1 : cores;
  if (blas_threads <= 0) blas_threads = in_openblas ? cores : 1;
  at::set_num_threads(torch_threads);
  using SetThreads = void (*)(int);
  auto set_blas = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  std::string blas = "unknown BLAS";
  if (set_blas != nullptr) {
    set_blas(blas_threads);
    blas = absl::StrCat("openblas_threads=", blas_threads);
  }
  return absl::StrCat("torch_threads=", torch_threads, " ", blas);
}

absl::StatusOr<WeightDtype> ParseWeightDtype(const std::string& name) {
  if (name == "F32") return WeightDtype{TensorDtype::kF32, at::kFloat};
  if (name == "F16") return WeightDtype{TensorDtype::kF16, at::kHalf};
  if (name == "BF16") return WeightDtype{TensorDtype::kBF16, at::kBFloat16};
  return absl::InvalidArgumentError(
      absl::StrCat("weight dtype '", name, "' is not F32, F16 or BF16"));
}

TensorToWrite ToTensorToWrite(std::string name, const at::Tensor& tensor, WeightDtype dtype) {
  const at::Tensor out = tensor.to(dtype.torch).contiguous();
  TensorToWrite t;
  t.name = std::move(name);
  t.dtype = dtype.file;
  t.shape = tensor.sizes().vec();
  t.bytes.assign(static_cast<const char*>(out.data_ptr()), out.nbytes());
  return t;
}

at::Tensor FlattenPatches(const at::Tensor& pixels, int64_t grid, int64_t patch) {
  // [B, 3, g, p, g, p] -> [B, g, g, 3, p, p] -> [B, g*g, 3*p*p].
  return pixels.reshape({pixels.size(0), 3, grid, patch, grid, patch})
      .permute({0, 2, 4, 1, 3, 5})
      .reshape({pixels.size(0), grid * grid, 3 * patch * patch});
}

std::vector<std::pair<std::string, std::vector<int64_t>>> SortedParameterShapes(
    torch::nn::Module& module) {
  std::map<std::string, std::vector<int64_t>> sorted;
  for (auto& item : module.named_parameters(true)) sorted[item.key()] = item.value().sizes().vec();
  return {sorted.begin(), sorted.end()};
}

absl::StatusOr<at::Tensor> TensorFromView(const TensorView& view) {
  at::ScalarType type;
  switch (view.dtype) {
    case TensorDtype::kF32: type = at::kFloat; break;
    case TensorDtype::kF16: type = at::kHalf; break;
    case TensorDtype::kBF16: type = at::kBFloat16; break;
    case TensorDtype::kF64: type = at::kDouble; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          *view.file, ": tensor '", view.name, "' has dtype ", std::string(DtypeName(view.dtype)),
          "; weights must be F32, F16, BF16 or F64"));
  }
  std::vector<int64_t> shape(view.shape.begin(), view.shape.end());
  const size_t element = at::elementSize(type);
  if (reinterpret_cast<uintptr_t>(view.data) % element != 0) {
    // safetensors does not promise alignment: copy a misaligned tensor out of the mapping.
    at::Tensor copy = at::empty(shape, at::TensorOptions().dtype(type));
    std::memcpy(copy.data_ptr(), view.data, view.nbytes);
    return copy;
  }
  // from_blob wants a mutable pointer; the tensor is only ever read (copied from) here.
  return at::from_blob(const_cast<uint8_t*>(view.data), shape,
                       at::TensorOptions().dtype(type).device(at::kCPU));
}

absl::Status LoadParameters(torch::nn::Module& module, const TensorArchive& archive,
                            const LoadPlan& plan, at::Device device, at::ScalarType dtype) {
  absl::flat_hash_set<std::string> used;
  at::NoGradGuard no_grad;
  for (auto& item : module.named_parameters(/*recurse=*/true)) {
    const std::string key = plan.key_for(item.key());
    at::Tensor& param = item.value();
    absl::StatusOr<const TensorView*> view = archive.Expect(key, param.sizes().vec());
    if (!view.ok()) return view.status();
    used.insert(key);
    absl::StatusOr<at::Tensor> source = TensorFromView(**view);
    if (!source.ok()) return source.status();
    const at::ScalarType target = plan.keep_fp32(item.key()) ? at::kFloat : dtype;
    bool finite = true;
    absl::Status copied = GuardTorch(absl::StrCat("loading tensor '", key, "'"), [&] {
      at::Tensor value = source->to(device, target, /*non_blocking=*/false, /*copy=*/true);
      // In the serving dtype, so a value that overflows the conversion is caught too.
      finite = !at::is_floating_point(value) || at::isfinite(value).all().item<bool>();
      param.set_data(value);
    });
    if (!copied.ok()) return copied;
    if (!finite) {
      return absl::InvalidArgumentError(absl::StrCat(
          *(*view)->file, ": tensor '", key, "' holds non-finite values (NaN or Inf) in ",
          ServingDtypeName(target), "; the checkpoint is corrupt or does not fit this dtype"));
    }
  }
  absl::flat_hash_set<std::string> allowed = used;
  for (const std::string& name : archive.Names()) {
    if (plan.ignore(name)) allowed.insert(name);
  }
  return archive.CheckNoUnexpected(allowed);
}

Fp32LayerNorm::Fp32LayerNorm(int width, double eps, const at::TensorOptions& options)
    : eps(eps) {
  weight = register_parameter("weight", at::empty({width}, options), /*requires_grad=*/false);
  bias = register_parameter("bias", at::empty({width}, options), false);
}

at::Tensor Fp32LayerNorm::forward(const at::Tensor& x) const {
  if (x.scalar_type() == at::kFloat) return at::layer_norm(x, {x.size(-1)}, weight, bias, eps);
  return at::layer_norm(x.to(at::kFloat), {x.size(-1)}, weight, bias, eps).to(x.scalar_type());
}

at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& mask) {
#if TORCH_VERSION_MAJOR >= 2
  // libtorch 2.x on a GPU: the fused kernels (flash / memory-efficient attention), which
  // accumulate in float32 like the path below.
  if (!q.is_cpu()) {
    return mask.defined() ? at::scaled_dot_product_attention(q, k, v, mask.to(q.scalar_type()))
                          : at::scaled_dot_product_attention(q, k, v);
  }
#endif
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor scores = at::matmul(q * scale, k.transpose(-2, -1));
  if (mask.defined()) scores = scores + mask;
  at::Tensor weights = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(weights, v);
}

at::Tensor NewHostTensor(at::IntArrayRef sizes, at::ScalarType dtype, const at::Device& device) {
  // Pinned memory needs the CUDA runtime: only for CUDA (MPS copies from pageable memory).
  return at::empty(sizes, at::TensorOptions().dtype(dtype).pinned_memory(device.is_cuda()));
}

at::Tensor StageToDevice(const at::Tensor& host, const at::Device& device) {
  if (device.is_cpu()) return host;
  if (!device.is_cuda()) return host.to(device, /*non_blocking=*/true);
  // Only the device-generic c10 stream/event API is used, so this builds against a CPU-only
  // libtorch and runs with whatever device backend the runtime libtorch registers.
  const c10::impl::VirtualGuardImpl impl(device.type());
  const c10::Stream compute = impl.getStream(device);
  const c10::Stream copy = impl.getStreamFromGlobalPool(device, /*isHighPriority=*/false);
  const at::Tensor pinned = host.is_pinned() ? host : host.pin_memory();
  // Allocated while the compute stream is current: the caching allocator ties the block to
  // the stream that uses it; the copy stream only writes it before the compute stream reads.
  at::Tensor on_device = at::empty(host.sizes(), host.options().device(device).pinned_memory(false));
  {
    const c10::StreamGuard on_copy_stream(copy);
    on_device.copy_(pinned, /*non_blocking=*/true);
  }
  c10::Event copied(device.type());
  copied.record(copy);
  copied.block(compute);
  return on_device;
}

namespace {

// A batch whose output is on its way to pinned host memory.
class DeviceBatch : public PendingBatch {
 public:
  DeviceBatch(std::string what, at::Tensor host_output, c10::Event done,
              std::function<std::vector<Embedding>(const at::Tensor&)> convert)
      : what_(std::move(what)), host_output_(std::move(host_output)), done_(std::move(done)),
        convert_(std::move(convert)) {}

  bool done() const override { return done_.query(); }

  absl::StatusOr<std::vector<Embedding>> Wait() override {
    std::vector<Embedding> result;
    absl::Status status = GuardTorch(what_, [&] {
      // c10::Event has no blocking wait in every libtorch version: poll (one cudaEventQuery
      // each), yielding at first and then sleeping in short steps.
      for (int polls = 0; !done_.query(); ++polls) {
        if (polls < 64) {
          std::this_thread::yield();
        } else {
          std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
      }
      c10::InferenceMode inference;
      result = convert_(host_output_);
    });
    if (!status.ok()) return status;
    return result;
  }

 private:
  const std::string what_;
  const at::Tensor host_output_;
  c10::Event done_;
  const std::function<std::vector<Embedding>(const at::Tensor&)> convert_;
};

}  // namespace

std::unique_ptr<PendingBatch> LaunchBatch(
    const std::string& what, const at::Device& device, const std::function<at::Tensor()>& forward,
    std::function<std::vector<Embedding>(const at::Tensor& host_output)> convert) {
  std::unique_ptr<PendingBatch> pending;
  absl::Status status = GuardTorch(what, [&] {
    c10::InferenceMode inference;
    const at::Tensor output = forward().to(at::kFloat);
    if (device.is_cpu()) {
      pending = std::make_unique<FinishedBatch>(convert(output.contiguous()));
      return;
    }
    at::Tensor host = NewHostTensor(output.sizes(), at::kFloat, device);
    host.copy_(output, /*non_blocking=*/true);
    const c10::impl::VirtualGuardImpl impl(device.type());
    c10::Event done(device.type());
    done.record(impl.getStream(device));
    pending = std::make_unique<DeviceBatch>(what, std::move(host), std::move(done), std::move(convert));
  });
  if (!status.ok()) return std::make_unique<FinishedBatch>(status);
  return pending;
}

absl::Status GuardTorch(const std::string& what, const std::function<void()>& body) {
  try {
    body();
    return absl::OkStatus();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory"));
  } catch (const std::exception& e) {
    std::string message = e.what();
    // libtorch messages carry a C++ backtrace after the first line: keep the first line.
    if (size_t nl = message.find('\n'); nl != std::string::npos) message.resize(nl);
    if (absl::StrContains(absl::AsciiStrToLower(message), "out of memory")) {
      return absl::ResourceExhaustedError(absl::StrCat(what, ": ", message));
    }
    return absl::InternalError(absl::StrCat(what, ": ", message));
  }
}

absl::StatusOr<std::unique_ptr<TensorArchive>> OpenCheckpointInDir(const std::string& dir,
                                                                   const std::string& safetensors_name,
                                                                   const std::string& bin_name) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path root(dir);
  if (fs::exists(root / safetensors_name, ec) ||
      fs::exists(root / (safetensors_name + ".index.json"), ec)) {
    return TensorArchive::OpenInDir(dir, safetensors_name);
  }
  if (fs::exists(root / bin_name, ec)) return weights::OpenTorchBin((root / bin_name).string());
  return absl::NotFoundError(absl::StrCat(dir, ": found neither ", safetensors_name, " (or ",
                                          safetensors_name, ".index.json) nor ", bin_name));
}

}  // namespace embedserve::models
