// The ColPali forward pass in libtorch: SigLIP -> projector -> Gemma (bidirectional) ->
// retrieval projection -> per-token L2 normalization.
#include "server/models/colpali/colpali_modules.h"

#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/match.h"
#include "server/models/torch_util.h"

namespace embedserve::models::colpali {
namespace {

at::Tensor Gelu(const at::Tensor& x, bool exact) { return exact ? at::gelu(x) : at::gelu(x, "tanh"); }

// A numbered list of submodules named "0", "1", ... under `name`.
template <typename T, typename... Args>
std::vector<std::shared_ptr<T>> RegisterList(torch::nn::Module& parent, const std::string& name,
                                             int count, const Args&... args) {
  auto list = std::make_shared<torch::nn::Module>();
  std::vector<std::shared_ptr<T>> items;
  for (int i = 0; i < count; ++i) {
    items.push_back(list->register_module(std::to_string(i), std::make_shared<T>(args...)));
  }
  parent.register_module(name, list);
  return items;
}

// (x * cos) + (rotate_half(x) * sin), rotate_half(x) = cat(-x2, x1).
at::Tensor ApplyRotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor x1 = x.slice(-1, 0, half), x2 = x.slice(-1, half);
  return x * cos + at::cat({-x2, x1}, -1) * sin;
}

}  // namespace

Linear::Linear(int in, int out, bool has_bias, const at::TensorOptions& options) {
  weight = register_parameter("weight", at::empty({out, in}, options), /*requires_grad=*/false);
  if (has_bias) bias = register_parameter("bias", at::empty({out}, options), false);
}

Linear::Linear(at::IntArrayRef weight_shape, bool has_bias, const at::TensorOptions& options) {
  weight = register_parameter("weight", at::empty(weight_shape, options), false);
  if (has_bias) bias = register_parameter("bias", at::empty({weight_shape[0]}, options), false);
}

RmsNorm::RmsNorm(int width, double eps, const at::TensorOptions& options) : eps(eps) {
  weight = register_parameter("weight", at::empty({width}, options), false);
}

at::Tensor RmsNorm::forward(const at::Tensor& x) const {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor out = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  out = out * (weight.to(at::kFloat) + 1.0);
  return out.to(x.scalar_type());
}

WeightOnly::WeightOnly(at::IntArrayRef shape, const at::TensorOptions& options) {
  weight = register_parameter("weight", at::empty(shape, options), false);
}

// --- SigLIP ---

SiglipAttention::SiglipAttention(const VisionConfig& c, const at::TensorOptions& options)
    : heads(c.num_attention_heads) {
  const int w = c.hidden_size;
  k_proj = register_module("k_proj", std::make_shared<Linear>(w, w, true, options));
  v_proj = register_module("v_proj", std::make_shared<Linear>(w, w, true, options));
  q_proj = register_module("q_proj", std::make_shared<Linear>(w, w, true, options));
  out_proj = register_module("out_proj", std::make_shared<Linear>(w, w, true, options));
}

at::Tensor SiglipAttention::forward(const at::Tensor& x) const {
  const int64_t batch = x.size(0), tokens = x.size(1), width = x.size(2);
  const int64_t head_dim = width / heads;
  auto split = [&](const at::Tensor& t) {
    return t.view({batch, tokens, heads, head_dim}).transpose(1, 2);
  };
  at::Tensor out = Attention(split(q_proj->forward(x)), split(k_proj->forward(x)),
                             split(v_proj->forward(x)), at::Tensor());
  return out_proj->forward(out.transpose(1, 2).reshape({batch, tokens, width}));
}

SiglipMlp::SiglipMlp(const VisionConfig& c, const at::TensorOptions& options)
    : exact_gelu(c.hidden_act == "gelu") {
  fc1 = register_module("fc1", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, true, options));
  fc2 = register_module("fc2", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, true, options));
}

at::Tensor SiglipMlp::forward(const at::Tensor& x) const {
  return fc2->forward(Gelu(fc1->forward(x), exact_gelu));
}

SiglipLayer::SiglipLayer(const VisionConfig& c, const at::TensorOptions& options) {
  layer_norm1 = register_module("layer_norm1", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps, options));
  self_attn = register_module("self_attn", std::make_shared<SiglipAttention>(c, options));
  layer_norm2 = register_module("layer_norm2", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps, options));
  mlp = register_module("mlp", std::make_shared<SiglipMlp>(c, options));
}

at::Tensor SiglipLayer::forward(const at::Tensor& x) const {
  at::Tensor h = x + self_attn->forward(layer_norm1->forward(x));
  return h + mlp->forward(layer_norm2->forward(h));
}

SiglipVision::SiglipVision(const VisionConfig& c, const at::TensorOptions& options) : config(c) {
  auto embeddings = std::make_shared<torch::nn::Module>();
  patch_embedding = embeddings->register_module(
      "patch_embedding",
      std::make_shared<Linear>(std::vector<int64_t>{c.hidden_size, 3, c.patch_size, c.patch_size},
                               true, options));
  position_embedding = embeddings->register_module(
      "position_embedding",
      std::make_shared<WeightOnly>(std::vector<int64_t>{c.num_patches(), c.hidden_size}, options));
  register_module("embeddings", embeddings);
  auto encoder = std::make_shared<torch::nn::Module>();
  layers = RegisterList<SiglipLayer>(*encoder, "layers", c.num_hidden_layers, c, options);
  register_module("encoder", encoder);
  post_layernorm = register_module("post_layernorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps, options));
}

at::Tensor SiglipVision::forward(const at::Tensor& pixels) const {
  const int64_t grid = config.grid(), patch = config.patch_size, width = config.hidden_size;
  // The stride-`patch` convolution (with bias) as one matmul over flattened patches.
  at::Tensor patches = FlattenPatches(pixels, grid, patch);
  at::Tensor x = at::linear(patches, patch_embedding->weight.view({width, 3 * patch * patch}),
                            patch_embedding->bias);
  x = x + position_embedding->weight;
  for (const auto& layer : layers) x = layer->forward(x);
  return post_layernorm->forward(x);
}

// --- Gemma ---

GemmaAttention::GemmaAttention(const TextConfig& c, const at::TensorOptions& options)
    : heads(c.num_attention_heads), kv_heads(c.num_key_value_heads), head_dim(c.head_dim) {
  const int h = c.hidden_size;
  q_proj = register_module("q_proj", std::make_shared<Linear>(h, heads * head_dim, false, options));
  k_proj = register_module("k_proj", std::make_shared<Linear>(h, kv_heads * head_dim, false, options));
  v_proj = register_module("v_proj", std::make_shared<Linear>(h, kv_heads * head_dim, false, options));
  o_proj = register_module("o_proj", std::make_shared<Linear>(heads * head_dim, h, false, options));
}

at::Tensor GemmaAttention::forward(const at::Tensor& x, const at::Tensor& cos,
                                   const at::Tensor& sin, const at::Tensor& mask) const {
  const int64_t batch = x.size(0), tokens = x.size(1);
  at::Tensor q = q_proj->forward(x).view({batch, tokens, heads, head_dim}).transpose(1, 2);
  at::Tensor k = k_proj->forward(x).view({batch, tokens, kv_heads, head_dim}).transpose(1, 2);
  at::Tensor v = v_proj->forward(x).view({batch, tokens, kv_heads, head_dim}).transpose(1, 2);
  q = ApplyRotary(q, cos, sin);
  k = ApplyRotary(k, cos, sin);
  if (heads != kv_heads) {
    // Query head h reads key/value head h / (heads / kv_heads) (transformers' repeat_kv).
    const int64_t repeat = heads / kv_heads;
    k = k.unsqueeze(2).expand({batch, kv_heads, repeat, tokens, head_dim})
            .reshape({batch, heads, tokens, head_dim});
    v = v.unsqueeze(2).expand({batch, kv_heads, repeat, tokens, head_dim})
            .reshape({batch, heads, tokens, head_dim});
  }
  at::Tensor out = Attention(q, k, v, mask);  // [B, H, L, hd]
  return o_proj->forward(out.transpose(1, 2).reshape({batch, tokens, heads * head_dim}));
}

GemmaMlp::GemmaMlp(const TextConfig& c, const at::TensorOptions& options)
    : exact_gelu(c.hidden_activation == "gelu") {
  gate_proj = register_module("gate_proj", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, false, options));
  up_proj = register_module("up_proj", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, false, options));
  down_proj = register_module("down_proj", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, false, options));
}

at::Tensor GemmaMlp::forward(const at::Tensor& x) const {
  return down_proj->forward(Gelu(gate_proj->forward(x), exact_gelu) * up_proj->forward(x));
}

GemmaLayer::GemmaLayer(const TextConfig& c, const at::TensorOptions& options) {
  self_attn = register_module("self_attn", std::make_shared<GemmaAttention>(c, options));
  mlp = register_module("mlp", std::make_shared<GemmaMlp>(c, options));
  input_layernorm = register_module("input_layernorm", std::make_shared<RmsNorm>(c.hidden_size, c.rms_norm_eps, options));
  post_attention_layernorm = register_module(
      "post_attention_layernorm", std::make_shared<RmsNorm>(c.hidden_size, c.rms_norm_eps, options));
}

at::Tensor GemmaLayer::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                               const at::Tensor& mask) const {
  at::Tensor h = x + self_attn->forward(input_layernorm->forward(x), cos, sin, mask);
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

GemmaText::GemmaText(const TextConfig& c, const at::TensorOptions& options) : config(c) {
  embed_tokens = register_module(
      "embed_tokens",
      std::make_shared<WeightOnly>(std::vector<int64_t>{c.vocab_size, c.hidden_size}, options));
  layers = RegisterList<GemmaLayer>(*this, "layers", c.num_hidden_layers, c, options);
  norm = register_module("norm", std::make_shared<RmsNorm>(c.hidden_size, c.rms_norm_eps, options));
}

at::Tensor GemmaText::forward(const at::Tensor& inputs_embeds, const at::Tensor& positions,
                              const at::Tensor& mask) const {
  // Gemma scales the embeddings by sqrt(hidden), as a tensor of the activations' dtype.
  const at::Tensor normalizer =
      at::scalar_tensor(std::sqrt(static_cast<double>(config.hidden_size)),
                        inputs_embeds.options().dtype(at::kFloat))
          .to(inputs_embeds.scalar_type());
  at::Tensor x = inputs_embeds * normalizer;
  // Rotary tables in float32: inv_freq = 1 / theta^(2i / head_dim), angle = position * inv_freq.
  const int64_t dim = config.head_dim;
  at::Tensor exponent =
      at::arange(0, dim, 2, positions.options().dtype(at::kLong)).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv_freq = 1.0 / at::pow(config.rope_theta, exponent);
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, L, dim/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(1);           // [B, 1, L, dim]
  at::Tensor cos = emb.cos().to(x.scalar_type()), sin = emb.sin().to(x.scalar_type());
  for (const auto& layer : layers) x = layer->forward(x, cos, sin, mask);
  return norm->forward(x);
}

Projector::Projector(int in, int out, const at::TensorOptions& options) {
  linear = register_module("linear", std::make_shared<Linear>(in, out, true, options));
}

ColPaliModule::ColPaliModule(const ColPaliConfig& c, const at::TensorOptions& options) : config(c) {
  vision = register_module("vision", std::make_shared<SiglipVision>(c.vision, options));
  projector = register_module("projector", std::make_shared<Projector>(c.vision.hidden_size, c.projection_dim, options));
  text = register_module("text", std::make_shared<GemmaText>(c.text, options));
  proj = register_module("proj", std::make_shared<Linear>(c.text.hidden_size, c.embedding_dim, true, options));
}

at::Tensor ColPaliModule::ImageFeatures(const at::Tensor& pixels) const {
  at::Tensor features = projector->linear->forward(vision->forward(pixels));
  return features / std::sqrt(static_cast<double>(config.text.hidden_size));
}

at::Tensor ColPaliModule::Embed(const at::Tensor& ids, const at::Tensor& length_t,
                                const std::vector<int64_t>& lengths,
                                const at::Tensor& image_features) const {
  const int64_t batch = ids.size(0), tokens = ids.size(1);
  at::Tensor embeds = at::embedding(text->embed_tokens->weight, ids);
  if (image_features.defined()) {
    // The page prompt puts the image tokens first: the features replace those rows. (A
    // masked_scatter would do the same for any layout, at the price of a boolean mask and a
    // data-dependent kernel that may synchronise with the host on a GPU.)
    const int64_t patches = image_features.size(1);
    embeds = at::cat({image_features.to(embeds.scalar_type()), embeds.slice(1, patches)}, 1);
  }
  at::Tensor valid = at::arange(tokens, ids.options()).unsqueeze(0) < length_t.unsqueeze(1);  // [B, L]
  at::Tensor mask;
  bool padded = false;
  for (int64_t n : lengths) padded |= n != tokens;
  if (padded) {
    // Padding keys are masked; padding rows compute garbage that is dropped below.
    mask = at::zeros({batch, 1, 1, tokens}, embeds.options())
               .masked_fill(valid.logical_not().view({batch, 1, 1, tokens}),
                            -std::numeric_limits<float>::infinity());
  }
  // Right padding: positions 1..n for every row's real tokens.
  at::Tensor positions = (at::arange(tokens, ids.options()) + 1).unsqueeze(0).expand({batch, tokens});
  at::Tensor hidden = text->forward(embeds, positions, mask);
  at::Tensor out = proj->forward(hidden).to(at::kFloat);
  out = out / out.norm(2, {-1}, /*keepdim=*/true);
  return out * valid.unsqueeze(-1).to(at::kFloat);
}

absl::Status PackInt8(ColPaliModule& module) {
  absl::StatusOr<int> packed = PackLinearModulesInt8<Linear>(
      module, [](const std::string& name) { return absl::StrContains(name, "layers."); });
  return packed.status();
}

}  // namespace embedserve::models::colpali
