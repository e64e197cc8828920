// Reads PyTorch `torch.save` checkpoints (zip archives: pytorch_model.bin,
// open_clip_pytorch_model.bin) as a flat state dict, through a restricted pickle interpreter
// that executes nothing and libtorch's zip reader. Needs libtorch (library embedserve_torch_bin).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/weights/safetensors.h"

namespace embedserve::weights {

// What a checkpoint may hold and how big it may get.
struct TorchBinLimits {
  // data.pkl: a state dict's pickle is ~100 bytes a tensor plus its name.
  uint64_t max_pickle_bytes = 32ull << 20;
  // Objects the pickle may create (each opcode makes at most one) and container slots it
  // may fill: bounds the interpreter's memory on hostile input.
  uint64_t max_objects = 2'000'000;
  uint64_t max_slots = 16'000'000;
  // Tensor dimensions.
  int max_dims = 16;
};

// Converts the torch.save archive `bytes` to safetensors bytes holding its flat state dict
// (name -> tensor, in the checkpoint's order). `name` (the path) starts every message.
//
// The pickle may only use these globals (nothing is called: each is interpreted):
//   collections.OrderedDict       state dicts are OrderedDicts (and backward-hook slots are
//                                 empty ones); an OrderedDict's BUILD state (the state
//                                 dict's `_metadata` versions) is dropped.
//   torch._utils._rebuild_tensor_v2   how torch.save writes every tensor: (storage, offset,
//                                 size, stride, requires_grad, hooks[, metadata]).
//   torch._utils._rebuild_parameter   nn.Parameter (state_dict(keep_vars=True)): the tensor.
//   torch.<Type>Storage           the storage's element type inside a persistent id
//                                 ('storage', type, key, location, numel); never called.
// Any other global (os.system, a custom class, TorchScript's __torch__ types) is refused
// naming it, as are opcodes outside protocol 2-5's plain-data subset (INST, OBJ, NEWOBJ,
// EXT*, PERSID, sets, ...). A legacy (pre-1.6, non-zip) torch.save file is refused.
//
// The result: float32, float16, bfloat16 tensors, and int64 ones (buffers such as BERT's
// `position_ids`, which the families ignore); any other dtype is refused naming the tensor.
// Views (storage offsets, strides, shared storages) come out as contiguous copies after
// every extent is checked against its storage, and every storage's size against its zip
// entry. Where the top level is a dict with a "state_dict" dict (OpenCLIP's training
// checkpoints), that dict is taken and the rest ignored; where every name starts with
// "module." (a DistributedDataParallel save), the prefix is stripped, as open_clip does.
// Both are recorded in the safetensors metadata ("embedserve.unwrapped",
// "embedserve.stripped_prefix"). Errors are INVALID_ARGUMENT naming `name` and the problem.
absl::StatusOr<std::string> TorchBinToSafetensors(const std::string& name,
                                                  absl::string_view bytes,
                                                  const TorchBinLimits& limits = {});

// The file at `path` (memory-mapped while it is read) as a TensorArchive held in memory.
// NOT_FOUND for a missing file.
absl::StatusOr<std::unique_ptr<TensorArchive>> OpenTorchBin(const std::string& path,
                                                            const TorchBinLimits& limits = {});

}  // namespace embedserve::weights
