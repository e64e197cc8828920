// ColPali (PaliGemma backbone) as libtorch modules: SigLIP vision tower, the multi-modal
// projector, the Gemma decoder run bidirectionally, and the retrieval projection.
// Parameter names are canonical ("vision.", "projector.", "text.", "proj."); the loader maps
// them to whichever checkpoint layout is present.
#pragma once

#include <memory>
#include <vector>

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include "absl/status/status.h"
#include "server/models/colpali/colpali_config.h"
#include "server/models/int8_linear.h"
#include "server/models/torch_util.h"

namespace embedserve::models::colpali {

// Parameters are created uninitialized (at::empty) with `options`; meta device for shapes.
struct Linear : torch::nn::Module {
  Linear(int in, int out, bool bias, const at::TensorOptions& options);
  // Any weight shape with dim 0 = outputs (the patch convolution's [W, 3, p, p]).
  Linear(at::IntArrayRef weight_shape, bool bias, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const { return LinearForward(x, weight, bias, int8); }
  at::Tensor weight, bias;  // bias undefined when absent
  std::shared_ptr<const Int8Linear> int8;  // set by PackInt8 (serving dtype int8)
};

using LayerNorm = Fp32LayerNorm;  // float32 parameters, computed in float32

struct RmsNorm : torch::nn::Module {  // Gemma: x / rms(x) * (1 + w), in float32
  RmsNorm(int width, double eps, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;
  double eps;
  at::Tensor weight;
};

struct WeightOnly : torch::nn::Module {
  WeightOnly(at::IntArrayRef shape, const at::TensorOptions& options);
  at::Tensor weight;
};

// --- SigLIP ---
struct SiglipAttention : torch::nn::Module {
  SiglipAttention(const VisionConfig& c, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;
  int heads;
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, out_proj;
};

struct SiglipMlp : torch::nn::Module {
  SiglipMlp(const VisionConfig& c, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;
  bool exact_gelu;
  std::shared_ptr<Linear> fc1, fc2;
};

struct SiglipLayer : torch::nn::Module {
  SiglipLayer(const VisionConfig& c, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;
  std::shared_ptr<LayerNorm> layer_norm1, layer_norm2;
  std::shared_ptr<SiglipAttention> self_attn;
  std::shared_ptr<SiglipMlp> mlp;
};

struct SiglipVision : torch::nn::Module {
  SiglipVision(const VisionConfig& c, const at::TensorOptions& options);
  // pixels [B, 3, S, S] -> last hidden state after post_layernorm [B, patches, width].
  at::Tensor forward(const at::Tensor& pixels) const;
  VisionConfig config;
  std::shared_ptr<Linear> patch_embedding;  // weight [W, 3, p, p], bias [W]
  std::shared_ptr<WeightOnly> position_embedding;
  std::vector<std::shared_ptr<SiglipLayer>> layers;
  std::shared_ptr<LayerNorm> post_layernorm;
};

// --- Gemma ---
struct GemmaAttention : torch::nn::Module {
  GemmaAttention(const TextConfig& c, const at::TensorOptions& options);
  // cos/sin: [B, 1, L, head_dim]; mask additive [B, 1, 1, L] or undefined.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     const at::Tensor& mask) const;
  int heads, kv_heads, head_dim;
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;
};

struct GemmaMlp : torch::nn::Module {
  GemmaMlp(const TextConfig& c, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;
  bool exact_gelu;
  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;
};

struct GemmaLayer : torch::nn::Module {
  GemmaLayer(const TextConfig& c, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     const at::Tensor& mask) const;
  std::shared_ptr<RmsNorm> input_layernorm, post_attention_layernorm;
  std::shared_ptr<GemmaAttention> self_attn;
  std::shared_ptr<GemmaMlp> mlp;
};

struct GemmaText : torch::nn::Module {
  GemmaText(const TextConfig& c, const at::TensorOptions& options);
  // inputs_embeds [B, L, H] (not yet scaled by sqrt(H)); positions [B, L] int64 (1-based);
  // mask additive [B, 1, 1, L] or undefined -> final-normed hidden states [B, L, H].
  at::Tensor forward(const at::Tensor& inputs_embeds, const at::Tensor& positions,
                     const at::Tensor& mask) const;
  TextConfig config;
  std::shared_ptr<WeightOnly> embed_tokens;
  std::vector<std::shared_ptr<GemmaLayer>> layers;
  std::shared_ptr<RmsNorm> norm;
};

struct Projector : torch::nn::Module {
  Projector(int in, int out, const at::TensorOptions& options);
  std::shared_ptr<Linear> linear;
};

struct ColPaliModule : torch::nn::Module {
  ColPaliModule(const ColPaliConfig& config, const at::TensorOptions& options);
  // pixels [B, 3, S, S] in the serving dtype -> image features [B, patches, text hidden],
  // already divided by sqrt(text hidden) as PaliGemma does.
  at::Tensor ImageFeatures(const at::Tensor& pixels) const;
  // ids [B, L] int64 (right-padded); the lengths both on the ids' device (`length_t`, [B]
  // int64) and on the host (no device-to-host read inside the forward); `image_features`
  // [B, patches, H] replaces the first `patches` positions of every row (where the page prompt
  // puts its image tokens) when defined.
  // -> [B, L, dim] float32, L2-normalized per token, padding rows zero.
  at::Tensor Embed(const at::Tensor& ids, const at::Tensor& length_t,
                   const std::vector<int64_t>& lengths, const at::Tensor& image_features) const;
  ColPaliConfig config;
  std::shared_ptr<SiglipVision> vision;
  std::shared_ptr<Projector> projector;
  std::shared_ptr<GemmaText> text;
  std::shared_ptr<Linear> proj;
};

// Serving dtype int8: packs the Linear layers of the SigLIP encoder layers and the Gemma
// decoder layers (attention projections, MLPs) as int8 and releases their float weights; the
// patch embedding, embeddings, norms, the multi-modal projector and the output projection
// stay float32. Call once, after loading (and any LoRA merge), on the CPU.
absl::Status PackInt8(ColPaliModule& module);

}  // namespace embedserve::models::colpali
