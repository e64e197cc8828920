// The interface the serving pipeline drives: one implementation per model family (OpenCLIP,
// ColPali, ...). Torch-free on purpose, so the pipeline and rpc layers never include libtorch.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace embedserve::models {

// What a loaded model is, as reported by the Models RPC and used for validation.
struct ModelDescription {
  std::string family;            // "openclip", "colpali"
  std::string architecture;      // e.g. "ViT-B-32" or "ColPali"; informative
  bool accepts_text = false;
  bool accepts_image = false;
  int embedding_dim = 0;
  bool multi_vector = false;     // true: each input yields [tokens x dim]
  int context_length = 0;        // max tokens per text (after special tokens)
  int image_size = 0;            // square input side in pixels
  std::string dtype;             // serving dtype: "float32", "bfloat16", "float16"
  std::string device;            // "cpu", "cuda:0", "mps"
  bool outputs_normalized = false;  // true if the model already L2-normalizes every row
  float logit_scale = 0.f;       // exp()'d CLIP logit scale; 0 if the family has none
  std::string scoring;           // "cosine" (CLIP), "maxsim" (ColPali)
};

// A text after tokenization, ready for the device. Built on CPU threads.
struct TextInput {
  std::vector<int32_t> token_ids;  // special tokens included, no padding
  bool truncated = false;          // true if the text was cut to context_length
};

// An image after decode + preprocessing, ready for the device: float32, CHW,
// 3 x image_size x image_size. Built on CPU threads.
struct ImageInput {
  std::vector<float> pixels;
};

// One input's output: rows x dim floats, row-major. rows == 1 for dense models.
struct Embedding {
  int rows = 0;
  int dim = 0;
  std::vector<float> values;
};

// A text as the model's tokenizer sees it (the Tokenize RPC).
struct Tokenization {
  std::vector<int32_t> ids;
  std::vector<std::string> tokens;  // may be empty if the family cannot name its tokens
  bool truncated = false;
};

// Limits applied while decoding images (decompression bombs are refused before decoding).
struct ImageLimits {
  int64_t max_pixels = 64LL * 1024 * 1024;  // width * height of the encoded image
  int64_t max_bytes = 32LL * 1024 * 1024;   // encoded size
};

// Contract:
// - description() is immutable after load; safe from any thread.
// - PrepareText/PrepareImage are CPU-only, const and thread-safe: the pipeline calls them
//   from its preprocessing pool concurrently. A bad input returns INVALID_ARGUMENT whose
//   message describes the problem (the caller prefixes the input's index).
// - EmbedTexts/EmbedImages touch the device and the weights; the pipeline calls them from one
//   executor thread only. They return one Embedding per input, in order. A libtorch failure
//   is returned as INTERNAL (or RESOURCE_EXHAUSTED for out-of-memory), never thrown.
// - A modality the model does not accept returns UNIMPLEMENTED.
class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelDescription& description() const = 0;

  virtual absl::StatusOr<TextInput> PrepareText(absl::string_view text, bool truncate) const = 0;
  virtual absl::StatusOr<ImageInput> PrepareImage(absl::string_view encoded,
                                                  const ImageLimits& limits) const = 0;
  // CPU-only, thread-safe. The default reports PrepareText's ids without token strings.
  virtual absl::StatusOr<Tokenization> Tokenize(absl::string_view text, bool truncate) const {
    absl::StatusOr<TextInput> input = PrepareText(text, truncate);
    if (!input.ok()) return input.status();
    Tokenization result;
    result.ids = std::move(input->token_ids);
    result.truncated = input->truncated;
    return result;
  }

  virtual absl::StatusOr<std::vector<Embedding>> EmbedTexts(
      absl::Span<const TextInput* const> texts) = 0;
  virtual absl::StatusOr<std::vector<Embedding>> EmbedImages(
      absl::Span<const ImageInput* const> images) = 0;
};

}  // namespace embedserve::models
