// The interface the serving pipeline drives: one implementation per model family (OpenCLIP,
// ColPali, ...). Torch-free on purpose, so the pipeline and rpc layers never include libtorch.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/image/decode.h"

namespace embedserve::models {

// The kinds of input a model takes. Each is a lane of the pipeline (its own batch queue):
// texts and images are embedded; a pair (a query and a document, for a cross-encoder) is
// scored as one sequence.
enum class Modality { kText, kImage, kPair };
inline constexpr int kModalityCount = 3;
inline constexpr Modality kModalities[kModalityCount] = {Modality::kText, Modality::kImage,
                                                         Modality::kPair};
// "text", "image", "pair": metric labels and messages.
inline const char* ModalityName(Modality modality) {
  switch (modality) {
    case Modality::kText: return "text";
    case Modality::kImage: return "image";
    case Modality::kPair: return "pair";
  }
  return "unknown";
}

// What a loaded model is, as reported by the Models RPC and used for validation.
struct ModelDescription {
  std::string family;            // "openclip", "colpali", "cross_encoder"
  std::string architecture;      // e.g. "ViT-B-32" or "ColPali"; informative
  bool accepts_text = false;
  bool accepts_image = false;
  bool accepts_pairs = false;    // scores (query, document) pairs (a cross-encoder)
  int embedding_dim = 0;
  bool multi_vector = false;     // true: each input yields [tokens x dim]
  // Multi-vector: the fewest rows an image's embedding has (its image tokens), known before
  // computing it, so a response too large to send is refused early; 0: unknown.
  int min_image_rows = 0;
  int context_length = 0;        // max tokens per text (after special tokens)
  int image_size = 0;            // square input side in pixels
  std::string dtype;             // serving dtype: "float32", "bfloat16", "float16"
  std::string dtype_reason;      // why that dtype (requested, or what auto weighed)
  std::string device;            // "cpu", "cuda:0", "mps"
  bool outputs_normalized = false;  // true if the model already L2-normalizes every row
  float logit_scale = 0.f;       // exp()'d CLIP logit scale; 0 if the family has none
  std::string scoring;           // "cosine" (CLIP), "maxsim" (ColPali), "cross_encoder"
  std::string activation;        // "gelu" or "quick_gelu" (OpenCLIP); "" when not reported
  // Where the weights were found when the source spec names them indirectly (openclip:ARCH/TAG:
  // "REPO@SHA/FILE"); "" otherwise.
  std::string resolved_source;
  // What the model can be asked for beyond embedding the modalities it accepts, declared by
  // its family rather than guessed from other fields.
  struct Capabilities {
    // Zero-shot Classify: texts and images in one space, scored with logit_scale.
    bool classify = false;
  };
  Capabilities capabilities;

  // Whether the model has a lane for `modality`.
  bool Accepts(Modality modality) const {
    switch (modality) {
      case Modality::kText: return accepts_text;
      case Modality::kImage: return accepts_image;
      case Modality::kPair: return accepts_pairs;
    }
    return false;
  }
};

// A text (or a pair of texts joined by the tokenizer's pair template) after tokenization,
// ready for the device. Built on CPU threads.
struct TextInput {
  std::vector<int32_t> token_ids;  // special tokens included, no padding
  bool truncated = false;          // true if the text (a pair: either text) was cut
  // A pair: the index of the first token of the second segment (the template's tokens from
  // there on belong to it; BERT gives them token type 1). 0 for a single text.
  int32_t second_segment_start = 0;
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

// A borrowed row-major [rows x dim] float matrix (a query's or a document's vectors); the
// caller keeps `data` alive for the call it is passed to.
struct RowsView {
  const float* data = nullptr;
  int rows = 0;
  int dim = 0;
};

// A text as the model's tokenizer sees it (the Tokenize RPC).
struct Tokenization {
  std::vector<int32_t> ids;
  std::vector<std::string> tokens;  // may be empty if the family cannot name its tokens
  bool truncated = false;
};

// Limits applied while decoding images (decompression bombs are refused before decoding).
using ImageLimits = image::DecodeLimits;

// A batch whose device work has been queued (Model::LaunchTexts/LaunchImages). Wait() blocks
// until the device is done with it and returns one Embedding per input, in order (or the
// forward's failure). Used on the executor thread only; Wait() is called once.
class PendingBatch {
 public:
  virtual ~PendingBatch() = default;
  // True when Wait() would not block (a synchronous device finished at launch).
  virtual bool done() const = 0;
  virtual absl::StatusOr<std::vector<Embedding>> Wait() = 0;
};

// A PendingBatch that is already finished (what a synchronous device returns).
class FinishedBatch : public PendingBatch {
 public:
  explicit FinishedBatch(absl::StatusOr<std::vector<Embedding>> outputs)
      : outputs_(std::move(outputs)) {}
  bool done() const override { return true; }
  absl::StatusOr<std::vector<Embedding>> Wait() override { return std::move(outputs_); }

 private:
  absl::StatusOr<std::vector<Embedding>> outputs_;
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

  // Pairs (description().accepts_pairs): a query and a document tokenized as one sequence
  // with the family's pair template and truncation rule (CPU-only, const, thread-safe, as
  // PrepareText; with `truncate` false, a pair over the length limit is INVALID_ARGUMENT).
  // LaunchPairs scores them: one Embedding per pair, rows 1 and dim 1, holding the raw
  // score (a cross-encoder's logit). The defaults are UNIMPLEMENTED.
  virtual absl::StatusOr<TextInput> PreparePair(absl::string_view query,
                                                absl::string_view document,
                                                bool truncate) const {
    (void)query;
    (void)document;
    (void)truncate;
    return absl::UnimplementedError("this model family does not score pairs");
  }
  virtual std::unique_ptr<PendingBatch> LaunchPairs(absl::Span<const TextInput* const> pairs);

  // Late-interaction scores on the model's device: for each document, for each query row the
  // best dot product over the document's rows, summed over query rows (pipeline::MaxSim's
  // definition, computed in float32). Returns one score per document, in order. Called only
  // from the executor thread, like EmbedTexts; the views are read during the call only.
  // Documents with no rows and a query with no rows score 0; a document with rows whose dim
  // differs from the query's is INVALID_ARGUMENT. libtorch failures as for EmbedTexts. The
  // default is UNIMPLEMENTED (the caller may then score on the host).
  virtual absl::StatusOr<std::vector<float>> MaxSim(const RowsView& query,
                                                    absl::Span<const RowsView> documents) {
    (void)query;
    (void)documents;
    return absl::UnimplementedError("this model family does not score MaxSim on its device");
  }

  // The same forwards in two phases, so the executor can queue the next batch while the
  // device still runs this one (CUDA: its input copy overlaps this batch's compute). Launch
  // copies what it needs out of the inputs before returning. A failure to launch (bad input,
  // out of memory) is returned here; a failure while running comes from Wait(). The default
  // runs the forward now and returns a finished batch.
  virtual std::unique_ptr<PendingBatch> LaunchTexts(absl::Span<const TextInput* const> texts) {
    return std::make_unique<FinishedBatch>(EmbedTexts(texts));
  }
  virtual std::unique_ptr<PendingBatch> LaunchImages(absl::Span<const ImageInput* const> images) {
    return std::make_unique<FinishedBatch>(EmbedImages(images));
  }
};

inline std::unique_ptr<PendingBatch> Model::LaunchPairs(absl::Span<const TextInput* const> pairs) {
  (void)pairs;
  return std::make_unique<FinishedBatch>(
      absl::UnimplementedError("this model family does not score pairs"));
}

// A model whose forwards are natively two-phase (both libtorch families): EmbedTexts and
// EmbedImages launch and wait, so a family writes each forward once, as Launch*.
class LaunchingModel : public Model {
 public:
  absl::StatusOr<std::vector<Embedding>> EmbedTexts(
      absl::Span<const TextInput* const> texts) final {
    return LaunchTexts(texts)->Wait();
  }
  absl::StatusOr<std::vector<Embedding>> EmbedImages(
      absl::Span<const ImageInput* const> images) final {
    return LaunchImages(images)->Wait();
  }
  std::unique_ptr<PendingBatch> LaunchTexts(absl::Span<const TextInput* const> texts) override = 0;
  std::unique_ptr<PendingBatch> LaunchImages(
      absl::Span<const ImageInput* const> images) override = 0;
};

}  // namespace embedserve::models
