// The CLIP forward passes (ViT image tower, causal text transformer) in libtorch.
#include "server/models/openclip/openclip_modules.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "server/models/torch_util.h"

namespace embedserve::models::openclip {

constexpr double kLayerNormEps = 1e-5;  // torch.nn.LayerNorm's default, which OpenCLIP uses

WeightOnly::WeightOnly(at::IntArrayRef shape, const at::TensorOptions& options) {
  weight = register_parameter("weight", at::empty(shape, options), false);
}

LinearParams::LinearParams(int in, int out, const at::TensorOptions& options) {
  weight = register_parameter("weight", at::empty({out, in}, options), false);
  bias = register_parameter("bias", at::empty({out}, options), false);
}

SelfAttention::SelfAttention(int width, int heads, const at::TensorOptions& options)
    : heads(heads) {
  in_proj_weight = register_parameter("in_proj_weight", at::empty({3 * width, width}, options), false);
  in_proj_bias = register_parameter("in_proj_bias", at::empty({3 * width}, options), false);
  out_proj = register_module("out_proj", std::make_shared<LinearParams>(width, width, options));
}

at::Tensor SelfAttention::forward(const at::Tensor& x, const at::Tensor& mask) const {
  const int64_t batch = x.size(0), tokens = x.size(1), width = x.size(2);
  const int64_t head_dim = width / heads;
  // [B, L, 3W] -> [3, B, H, L, hd]
  at::Tensor qkv = LinearForward(x, in_proj_weight, in_proj_bias, in_proj_int8)
                       .view({batch, tokens, 3, heads, head_dim})
                       .permute({2, 0, 3, 1, 4});
  at::Tensor out = Attention(qkv[0], qkv[1], qkv[2], mask);  // [B, H, L, hd]
  return out_proj->forward(out.transpose(1, 2).reshape({batch, tokens, width}));
}

Mlp::Mlp(int width, int hidden, bool quick_gelu, const at::TensorOptions& options)
    : quick_gelu(quick_gelu) {
  c_fc = register_module("c_fc", std::make_shared<LinearParams>(width, hidden, options));
  c_proj = register_module("c_proj", std::make_shared<LinearParams>(hidden, width, options));
}

at::Tensor Mlp::forward(const at::Tensor& x) const {
  at::Tensor h = c_fc->forward(x);
  h = quick_gelu ? h * at::sigmoid(h * 1.702) : at::gelu(h);
  return c_proj->forward(h);
}

ResidualBlock::ResidualBlock(int width, int heads, int mlp_width, bool quick_gelu,
                             const at::TensorOptions& options) {
  ln_1 = register_module("ln_1", std::make_shared<Fp32LayerNorm>(width, kLayerNormEps, options));
  attn = register_module("attn", std::make_shared<SelfAttention>(width, heads, options));
  ln_2 = register_module("ln_2", std::make_shared<Fp32LayerNorm>(width, kLayerNormEps, options));
  mlp = register_module("mlp", std::make_shared<Mlp>(width, mlp_width, quick_gelu, options));
}

at::Tensor ResidualBlock::forward(const at::Tensor& x, const at::Tensor& mask) const {
  at::Tensor h = x + attn->forward(ln_1->forward(x), mask);
  return h + mlp->forward(ln_2->forward(h));
}

Transformer::Transformer(int width, int layers, int heads, int mlp_width, bool quick_gelu,
                         const at::TensorOptions& options) {
  auto list = std::make_shared<torch::nn::Module>();
  for (int i = 0; i < layers; ++i) {
    blocks.push_back(list->register_module(
        std::to_string(i),
        std::make_shared<ResidualBlock>(width, heads, mlp_width, quick_gelu, options)));
  }
  register_module("resblocks", list);
}

at::Tensor Transformer::forward(at::Tensor x, const at::Tensor& mask) const {
  for (const auto& block : blocks) x = block->forward(x, mask);
  return x;
}

VisionTower::VisionTower(const VisionConfig& c, int embed_dim, bool quick_gelu,
                         const at::TensorOptions& options)
    : config(c) {
  const int tokens = c.grid() * c.grid() + 1;
  conv1 = register_module("conv1", std::make_shared<WeightOnly>(
                                       std::vector<int64_t>{c.width, 3, c.patch_size, c.patch_size},
                                       options));
  class_embedding = register_parameter("class_embedding", at::empty({c.width}, options), false);
  positional_embedding =
      register_parameter("positional_embedding", at::empty({tokens, c.width}, options), false);
  ln_pre = register_module("ln_pre", std::make_shared<Fp32LayerNorm>(c.width, kLayerNormEps, options));
  transformer = register_module(
      "transformer", std::make_shared<Transformer>(c.width, c.layers, c.heads(), c.mlp_width(),
                                                   quick_gelu, options));
  ln_post = register_module("ln_post", std::make_shared<Fp32LayerNorm>(c.width, kLayerNormEps, options));
  proj = register_parameter("proj", at::empty({c.width, embed_dim}, options), false);
}

at::Tensor VisionTower::forward(const at::Tensor& pixels) const {
  const int64_t batch = pixels.size(0);
  const int64_t grid = config.grid(), patch = config.patch_size, width = config.width;
  // The stride-`patch` convolution (no bias) as one matmul over flattened patches.
  at::Tensor patches = FlattenPatches(pixels, grid, patch);
  at::Tensor x = at::matmul(patches, conv1->weight.view({width, 3 * patch * patch}).t());
  at::Tensor cls = class_embedding.view({1, 1, width}).expand({batch, 1, width});
  x = at::cat({cls, x}, 1) + positional_embedding;
  x = ln_pre->forward(x);
  x = transformer->forward(x, at::Tensor());
  at::Tensor pooled = ln_post->forward(x.select(1, 0));  // the class token
  return at::matmul(pooled, proj);
}

ClipModule::ClipModule(const OpenClipConfig& c, const at::TensorOptions& options) : config(c) {
  const auto& t = c.text;
  transformer = register_module(
      "transformer", std::make_shared<Transformer>(t.width, t.layers, t.heads, t.mlp_width(),
                                                   c.quick_gelu, options));
  token_embedding = register_module(
      "token_embedding",
      std::make_shared<WeightOnly>(std::vector<int64_t>{t.vocab_size, t.width}, options));
  positional_embedding =
      register_parameter("positional_embedding", at::empty({t.context_length, t.width}, options), false);
  ln_final = register_module("ln_final", std::make_shared<Fp32LayerNorm>(t.width, kLayerNormEps, options));
  text_projection = register_parameter("text_projection", at::empty({t.width, c.embed_dim}, options), false);
  logit_scale = register_parameter("logit_scale", at::empty({}, options), false);
  visual = register_module("visual", std::make_shared<VisionTower>(c.vision, c.embed_dim,
                                                                   c.quick_gelu, options));
}

at::Tensor ClipModule::EncodeText(const at::Tensor& ids, const at::Tensor& eot_positions) const {
  const int64_t batch = ids.size(0), tokens = ids.size(1);
  at::Tensor x = at::embedding(token_embedding->weight, ids) +
                 positional_embedding.slice(0, 0, tokens);
  // Causal mask: position i attends to positions <= i.
  at::Tensor mask = at::full({tokens, tokens}, -std::numeric_limits<float>::infinity(),
                             x.options()).triu(1);
  x = transformer->forward(x, mask);
  at::Tensor flat_index = at::arange(batch, eot_positions.options()) * tokens + eot_positions;
  at::Tensor at_eot = x.reshape({batch * tokens, x.size(2)}).index_select(0, flat_index);
  at::Tensor pooled = ln_final->forward(at_eot);
  return at::matmul(pooled, text_projection);
}

absl::Status PackInt8(ClipModule& module) {
  const std::pair<const char*, Transformer*> towers[] = {
      {"transformer", module.transformer.get()}, {"visual.transformer", module.visual->transformer.get()}};
  for (const auto& [tower, transformer] : towers) {
    for (size_t i = 0; i < transformer->blocks.size(); ++i) {
      ResidualBlock& block = *transformer->blocks[i];
      const std::string name = absl::StrCat(tower, ".resblocks.", i, ".attn.in_proj");
      if (absl::Status s = PackLinearInt8(name, block.attn->in_proj_weight,
                                          block.attn->in_proj_bias, &block.attn->in_proj_int8);
          !s.ok()) {
        return s;
      }
    }
    absl::StatusOr<int> packed =
        PackLinearModulesInt8<LinearParams>(*transformer, [](const std::string&) { return true; });
    if (!packed.ok()) return packed.status();
  }
  return absl::OkStatus();
}

}  // namespace embedserve::models::openclip
