// The cross-encoder's forward pass as libtorch modules: BERT-style embeddings, post-LN
// encoder layers and the sequence-classification head on the first token. Parameter names
// are canonical ("embeddings.", "encoder.layer.N.", "head.dense.", "head.out."); the loader
// maps them to the checkpoint's keys (cross_encoder_model.h: CheckpointKey).
#pragma once

#include <memory>
#include <vector>

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include "absl/status/status.h"
#include "server/models/cross_encoder/cross_encoder_config.h"
#include "server/models/int8_linear.h"
#include "server/models/torch_util.h"

namespace embedserve::models::cross_encoder {

// Parameters are created uninitialized (at::empty) with `options`; meta device for shapes.
struct Dense : torch::nn::Module {
  Dense(int in, int out, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const { return LinearForward(x, weight, bias, int8); }
  at::Tensor weight, bias;
  std::shared_ptr<const Int8Linear> int8;  // set by PackInt8 (serving dtype int8)
};

struct Table : torch::nn::Module {  // an embedding table: weight [rows, width]
  Table(int rows, int width, const at::TensorOptions& options);
  at::Tensor weight;
};

// LayerNorm parameters stay float32 and it computes in float32 (torch_util.h).
using LayerNorm = Fp32LayerNorm;

// attention.self.{query,key,value}, attention.output.{dense,LayerNorm},
// intermediate.dense, output.{dense,LayerNorm}:
//   a = LN(x + dense_o(attn(x))), y = LN(a + dense_2(gelu(dense_1(a)))).
struct EncoderLayer : torch::nn::Module {
  EncoderLayer(const CrossEncoderConfig& c, const at::TensorOptions& options);
  // x [B, L, H]; mask additive [B, 1, 1, L] float32.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask) const;
  int heads;
  std::shared_ptr<Dense> query, key, value, attention_dense, intermediate, output;
  std::shared_ptr<LayerNorm> attention_norm, output_norm;
};

struct CrossEncoderModule : torch::nn::Module {
  CrossEncoderModule(const CrossEncoderConfig& config, const at::TensorOptions& options);
  // ids, positions, types: [B, L] int64 on the module's device; mask additive [B, 1, 1, L]
  // float32 (0 for tokens, a large negative for padding). Computes in the dtype of the
  // weights; returns the logits [B, num_labels] as float32.
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& positions, const at::Tensor& types,
                     const at::Tensor& mask) const;
  CrossEncoderConfig config;
  std::shared_ptr<Table> word_embeddings, position_embeddings, token_type_embeddings;
  std::shared_ptr<LayerNorm> embeddings_norm;
  std::vector<std::shared_ptr<EncoderLayer>> layers;
  std::shared_ptr<Dense> head_dense, head_out;
};

// Serving dtype int8: packs the encoder layers' Linear layers (query, key, value, attention
// output, intermediate, output) as int8 and releases their float weights; the embeddings,
// LayerNorms and the classification head stay float32. Call once, after loading, on the CPU.
absl::Status PackInt8(CrossEncoderModule& module);

}  // namespace embedserve::models::cross_encoder
