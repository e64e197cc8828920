// OpenCLIP's CLIP as libtorch modules: the ViT image tower and the causal text transformer,
// with parameter names equal to OpenCLIP's state_dict keys so checkpoints load by name.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include "absl/status/status.h"
#include "server/models/int8_linear.h"
#include "server/models/openclip/openclip_config.h"
#include "server/models/torch_util.h"

namespace embedserve::models::openclip {

// Parameters are created uninitialized (at::empty) with `options`: on the meta device to
// inspect shapes without memory, on CPU before loading or random initialization.

// A module holding one tensor named "weight" (conv1, token_embedding).
struct WeightOnly : torch::nn::Module {
  WeightOnly(at::IntArrayRef shape, const at::TensorOptions& options);
  at::Tensor weight;
};

struct LinearParams : torch::nn::Module {
  LinearParams(int in, int out, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const { return LinearForward(x, weight, bias, int8); }
  at::Tensor weight, bias;
  std::shared_ptr<const Int8Linear> int8;  // set by PackInt8 (serving dtype int8)
};

// nn.MultiheadAttention's layout: packed q/k/v projection + out_proj.
struct SelfAttention : torch::nn::Module {
  SelfAttention(int width, int heads, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask) const;  // x: [B, L, W]
  int heads;
  at::Tensor in_proj_weight, in_proj_bias;
  std::shared_ptr<const Int8Linear> in_proj_int8;  // set by PackInt8 (serving dtype int8)
  std::shared_ptr<LinearParams> out_proj;
};

struct Mlp : torch::nn::Module {
  Mlp(int width, int hidden, bool quick_gelu, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;
  bool quick_gelu;
  std::shared_ptr<LinearParams> c_fc, c_proj;
};

struct ResidualBlock : torch::nn::Module {
  ResidualBlock(int width, int heads, int mlp_width, bool quick_gelu,
                const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask) const;
  std::shared_ptr<Fp32LayerNorm> ln_1, ln_2;
  std::shared_ptr<SelfAttention> attn;
  std::shared_ptr<Mlp> mlp;
};

struct Transformer : torch::nn::Module {
  Transformer(int width, int layers, int heads, int mlp_width, bool quick_gelu,
              const at::TensorOptions& options);
  at::Tensor forward(at::Tensor x, const at::Tensor& mask) const;
  std::vector<std::shared_ptr<ResidualBlock>> blocks;
};

struct VisionTower : torch::nn::Module {
  VisionTower(const VisionConfig& config, int embed_dim, bool quick_gelu,
              const at::TensorOptions& options);
  // pixels: [B, 3, S, S] normalized -> [B, embed_dim], not normalized.
  at::Tensor forward(const at::Tensor& pixels) const;
  VisionConfig config;
  at::Tensor class_embedding, positional_embedding, proj;
  std::shared_ptr<WeightOnly> conv1;  // [width, 3, patch, patch], no bias
  std::shared_ptr<Fp32LayerNorm> ln_pre, ln_post;
  std::shared_ptr<Transformer> transformer;
};

// The whole CLIP: the text tower's parameters live at the top level, as in OpenCLIP.
struct ClipModule : torch::nn::Module {
  ClipModule(const OpenClipConfig& config, const at::TensorOptions& options);
  // ids: [B, L] int64, zero-padded; eot_positions: [B] int64 (the end token of each row).
  // Only positions < L are computed: the causal tower makes later ones irrelevant.
  at::Tensor EncodeText(const at::Tensor& ids, const at::Tensor& eot_positions) const;
  at::Tensor EncodeImage(const at::Tensor& pixels) const { return visual->forward(pixels); }
  OpenClipConfig config;
  at::Tensor positional_embedding, text_projection, logit_scale;
  std::shared_ptr<WeightOnly> token_embedding;
  std::shared_ptr<Transformer> transformer;
  std::shared_ptr<Fp32LayerNorm> ln_final;
  std::shared_ptr<VisionTower> visual;
};

// Serving dtype int8: packs the Linear layers of both towers' transformer blocks (attention
// in/out projections, MLP) as int8 and releases their float weights. The patch convolution,
// embeddings, LayerNorms and the two output projections stay float32. Call once, after the
// weights are loaded, on the CPU.
absl::Status PackInt8(ClipModule& module);

}  // namespace embedserve::models::openclip
