// The cross-encoder forward in libtorch: embeddings -> LayerNorm -> post-LN encoder layers
// -> dense -> tanh -> out on the first token.
#include "server/models/cross_encoder/cross_encoder_modules.h"

#include <string>

#include "absl/strings/match.h"

namespace embedserve::models::cross_encoder {

Dense::Dense(int in, int out, const at::TensorOptions& options) {
  weight = register_parameter("weight", at::empty({out, in}, options), /*requires_grad=*/false);
  bias = register_parameter("bias", at::empty({out}, options), false);
}

Table::Table(int rows, int width, const at::TensorOptions& options) {
  weight = register_parameter("weight", at::empty({rows, width}, options), false);
}

EncoderLayer::EncoderLayer(const CrossEncoderConfig& c, const at::TensorOptions& options)
    : heads(c.num_attention_heads) {
  const int h = c.hidden_size, i = c.intermediate_size;
  const at::TensorOptions fp32 = options.dtype(at::kFloat);
  auto attention = register_module("attention", std::make_shared<torch::nn::Module>());
  auto self = attention->register_module("self", std::make_shared<torch::nn::Module>());
  query = self->register_module("query", std::make_shared<Dense>(h, h, options));
  key = self->register_module("key", std::make_shared<Dense>(h, h, options));
  value = self->register_module("value", std::make_shared<Dense>(h, h, options));
  auto attention_output = attention->register_module("output", std::make_shared<torch::nn::Module>());
  attention_dense = attention_output->register_module("dense", std::make_shared<Dense>(h, h, options));
  attention_norm = attention_output->register_module(
      "LayerNorm", std::make_shared<LayerNorm>(h, c.layer_norm_eps, fp32));
  auto inter = register_module("intermediate", std::make_shared<torch::nn::Module>());
  intermediate = inter->register_module("dense", std::make_shared<Dense>(h, i, options));
  auto out = register_module("output", std::make_shared<torch::nn::Module>());
  output = out->register_module("dense", std::make_shared<Dense>(i, h, options));
  output_norm = out->register_module("LayerNorm",
                                      std::make_shared<LayerNorm>(h, c.layer_norm_eps, fp32));
}

at::Tensor EncoderLayer::forward(const at::Tensor& x, const at::Tensor& mask) const {
  const int64_t batch = x.size(0), tokens = x.size(1), width = x.size(2);
  const int64_t head_dim = width / heads;
  auto split = [&](const at::Tensor& t) {
    return t.view({batch, tokens, heads, head_dim}).transpose(1, 2);
  };
  at::Tensor context = Attention(split(query->forward(x)), split(key->forward(x)),
                                 split(value->forward(x)), mask);
  context = context.transpose(1, 2).reshape({batch, tokens, width});
  const at::Tensor a = attention_norm->forward(x + attention_dense->forward(context));
  // hidden_act "gelu": the exact erf form.
  return output_norm->forward(a + output->forward(at::gelu(intermediate->forward(a))));
}

CrossEncoderModule::CrossEncoderModule(const CrossEncoderConfig& c, const at::TensorOptions& options)
    : config(c) {
  const int h = c.hidden_size;
  auto embeddings = register_module("embeddings", std::make_shared<torch::nn::Module>());
  word_embeddings = embeddings->register_module(
      "word_embeddings", std::make_shared<Table>(c.vocab_size, h, options));
  position_embeddings = embeddings->register_module(
      "position_embeddings", std::make_shared<Table>(c.max_position_embeddings, h, options));
  token_type_embeddings = embeddings->register_module(
      "token_type_embeddings", std::make_shared<Table>(c.type_vocab_size, h, options));
  embeddings_norm = embeddings->register_module(
      "LayerNorm", std::make_shared<LayerNorm>(h, c.layer_norm_eps, options.dtype(at::kFloat)));
  auto encoder = register_module("encoder", std::make_shared<torch::nn::Module>());
  auto list = encoder->register_module("layer", std::make_shared<torch::nn::Module>());
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(list->register_module(std::to_string(i), std::make_shared<EncoderLayer>(c, options)));
  }
  auto head = register_module("head", std::make_shared<torch::nn::Module>());
  head_dense = head->register_module("dense", std::make_shared<Dense>(h, h, options));
  head_out = head->register_module("out", std::make_shared<Dense>(h, c.num_labels, options));
}

at::Tensor CrossEncoderModule::forward(const at::Tensor& ids, const at::Tensor& positions,
                                       const at::Tensor& types, const at::Tensor& mask) const {
  at::Tensor x = at::embedding(word_embeddings->weight, ids) +
                 at::embedding(token_type_embeddings->weight, types) +
                 at::embedding(position_embeddings->weight, positions);
  x = embeddings_norm->forward(x);
  for (const auto& layer : layers) x = layer->forward(x, mask);
  // XLM-R's classification head and BERT's pooler + classifier are the same shape.
  const at::Tensor first = x.select(1, 0);
  return head_out->forward(at::tanh(head_dense->forward(first))).to(at::kFloat);
}

absl::Status PackInt8(CrossEncoderModule& module) {
  absl::StatusOr<int> packed = PackLinearModulesInt8<Dense>(
      module, [](const std::string& name) { return absl::StartsWith(name, "encoder."); });
  return packed.status();
}

}  // namespace embedserve::models::cross_encoder
