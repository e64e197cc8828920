// CrossEncoderModel: the Model interface over CrossEncoderModule; pair tokenization with
// FlagReranker's truncation, batching with padding, checkpoint key names and loading.
#include "server/models/cross_encoder/cross_encoder_model.h"

#include <algorithm>
#include <filesystem>
#include <limits>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/models/cross_encoder/cross_encoder_modules.h"
#include "server/models/cross_encoder/cross_encoder_tokenizer.h"
#include "server/models/torch_model.h"
#include "server/models/torch_util.h"
#include "server/weights/safetensors.h"

namespace embedserve::models::cross_encoder {
namespace {

namespace fs = std::filesystem;

constexpr const char* kNotAText =
    "a cross-encoder scores (query, document) pairs; use Rerank";

// The base model's prefix in the hub's checkpoints.
const char* HubPrefix(Architecture architecture) {
  return architecture == Architecture::kXlmRoberta ? "roberta." : "bert.";
}

// `canonical` under the base-model prefix `prefix` ("roberta.", "bert." or "").
std::string KeyFor(const std::string& canonical, Architecture architecture,
                   const std::string& prefix) {
  if (absl::StartsWith(canonical, "head.")) {
    const std::string rest = canonical.substr(5);  // "dense.weight", "out.bias"
    if (architecture == Architecture::kXlmRoberta) {
      return absl::StrCat("classifier.",
                          absl::StartsWith(rest, "out.") ? "out_proj." + rest.substr(4) : rest);
    }
    return absl::StartsWith(rest, "out.") ? "classifier." + rest.substr(4)
                                          : absl::StrCat(prefix, "pooler.", rest);
  }
  return prefix + canonical;
}

// Buffers older checkpoints saved beside the parameters; XLM-R's pooler, which the
// sequence-classification model builds without (add_pooling_layer=False) and transformers
// skips when a checkpoint carries it.
bool IgnoredKey(const std::string& key, Architecture architecture, const std::string& prefix) {
  if (key == prefix + "embeddings.position_ids" || key == prefix + "embeddings.token_type_ids") {
    return true;
  }
  return architecture == Architecture::kXlmRoberta &&
         absl::StartsWith(key, prefix + "pooler.dense.");
}

bool KeepFp32(const std::string& canonical) { return absl::StrContains(canonical, "LayerNorm"); }

class CrossEncoderModel final : public TorchModel {
 public:
  CrossEncoderModel(CrossEncoderConfig config, int max_length, int query_max_length,
                    std::unique_ptr<CrossEncoderTokenizer> tokenizer,
                    std::shared_ptr<CrossEncoderModule> module, const Placement& placement,
                    ModelDescription description)
      : TorchModel(placement, std::move(description)),
        config_(std::move(config)),
        max_length_(max_length),
        query_max_length_(query_max_length),
        tokenizer_(std::move(tokenizer)),
        module_(std::move(module)) {}

  absl::StatusOr<TextInput> PrepareText(absl::string_view text, bool truncate) const override {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(text);
    if (!ids.ok()) return ids.status();
    const int room = max_length_ - CrossEncoderTokenizer::kSingleSpecialTokens;
    TextInput input;
    if (static_cast<int>(ids->size()) > room) {
      if (!truncate) {
        return absl::InvalidArgumentError(absl::StrCat(
            "text is ", ids->size() + CrossEncoderTokenizer::kSingleSpecialTokens,
            " tokens with its special tokens; the limit is ", max_length_,
            " (set truncate to cut it)"));
      }
      ids->resize(room);
      input.truncated = true;
    }
    input.token_ids = tokenizer_->Single(*ids);
    return input;
  }

  absl::StatusOr<TextInput> PreparePair(absl::string_view query, absl::string_view document,
                                        bool truncate) const override {
    absl::StatusOr<std::vector<int32_t>> q = tokenizer_->Encode(query);
    if (!q.ok()) return q.status();
    absl::StatusOr<std::vector<int32_t>> d = tokenizer_->Encode(document);
    if (!d.ok()) return d.status();
    const int specials = tokenizer_->pair_special_tokens();
    const PairLengths kept = TruncatePairLengths(static_cast<int>(q->size()),
                                                 static_cast<int>(d->size()), max_length_,
                                                 query_max_length_, specials);
    if (kept.truncated && !truncate) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the pair is ", q->size(), " query tokens + ", d->size(), " document tokens + ",
          specials, " special tokens = ", q->size() + d->size() + specials,
          "; the limit is ", max_length_, " tokens, the query at most ", query_max_length_,
          " (set truncate to cut it)"));
    }
    q->resize(kept.query);
    d->resize(kept.document);
    TextInput input;
    input.token_ids = tokenizer_->Pair(*q, *d);
    input.truncated = kept.truncated;
    input.second_segment_start = CrossEncoderTokenizer::SecondSegmentStart(q->size());
    return input;
  }

  std::string TokenString(int32_t id) const override { return tokenizer_->TokenString(id); }

  absl::StatusOr<ImageInput> PreprocessImage(const image::RgbImage&) const override {
    return absl::UnimplementedError("a cross-encoder takes no images; it scores (query, "
                                    "document) pairs (use Rerank)");
  }

  std::unique_ptr<PendingBatch> LaunchTexts(absl::Span<const TextInput* const>) override {
    return std::make_unique<FinishedBatch>(absl::UnimplementedError(kNotAText));
  }

  std::unique_ptr<PendingBatch> LaunchImages(absl::Span<const ImageInput* const>) override {
    return std::make_unique<FinishedBatch>(absl::UnimplementedError(kNotAText));
  }

  std::unique_ptr<PendingBatch> LaunchPairs(absl::Span<const TextInput* const> pairs) override {
    if (pairs.empty()) return std::make_unique<FinishedBatch>(std::vector<Embedding>());
    int64_t longest = 0;
    for (size_t i = 0; i < pairs.size(); ++i) {
      if (absl::Status s = Check(*pairs[i]); !s.ok()) {
        return std::make_unique<FinishedBatch>(
            absl::Status(s.code(), absl::StrCat("pair input ", i, ": ", s.message())));
      }
      longest = std::max<int64_t>(longest, pairs[i]->token_ids.size());
    }
    const int64_t batch = static_cast<int64_t>(pairs.size());
    return LaunchBatch("cross-encoder forward", device_, [&] {
      const int64_t pad = config_.pad_token_id;
      const bool xlmr = config_.architecture == Architecture::kXlmRoberta;
      at::Tensor ids = NewHostTensor({batch, longest}, at::kLong, device_).fill_(pad);
      at::Tensor positions = NewHostTensor({batch, longest}, at::kLong, device_);
      at::Tensor types = NewHostTensor({batch, longest}, at::kLong, device_).fill_(0);
      at::Tensor mask = NewHostTensor({batch, 1, 1, longest}, at::kFloat, device_).fill_(0.f);
      auto a_ids = ids.accessor<int64_t, 2>();
      auto a_pos = positions.accessor<int64_t, 2>();
      auto a_types = types.accessor<int64_t, 2>();
      auto a_mask = mask.accessor<float, 4>();
      for (int64_t b = 0; b < batch; ++b) {
        const TextInput& in = *pairs[b];
        const int64_t length = static_cast<int64_t>(in.token_ids.size());
        int64_t counted = 0;  // XLM-R: tokens other than <pad> so far
        for (int64_t i = 0; i < longest; ++i) {
          if (i >= length) {
            a_pos[b][i] = xlmr ? pad : i;
            a_mask[b][0][0][i] = std::numeric_limits<float>::lowest();
            continue;
          }
          const int64_t id = in.token_ids[i];
          a_ids[b][i] = id;
          if (xlmr) {
            // transformers' create_position_ids_from_input_ids: cumsum over non-pad ids,
            // pad_token_id where the id is <pad>.
            a_pos[b][i] = id == pad ? pad : pad + (++counted);
          } else {
            a_pos[b][i] = i;
            a_types[b][i] = in.second_segment_start > 0 && i >= in.second_segment_start ? 1 : 0;
          }
        }
      }
      at::Tensor logits = module_->forward(
          StageToDevice(ids, device_), StageToDevice(positions, device_),
          StageToDevice(types, device_), StageToDevice(mask, device_));
      return logits;
    }, [batch](const at::Tensor& out) {
      std::vector<Embedding> result(batch);
      const float* data = out.data_ptr<float>();
      for (int64_t b = 0; b < batch; ++b) {
        result[b].rows = 1;
        result[b].dim = 1;
        result[b].values = {data[b * out.size(1)]};
      }
      return result;
    });
  }

 private:
  // A TextInput the forward can take: non-empty, ids in the vocabulary, within the
  // positions, the segment start inside it.
  absl::Status Check(const TextInput& in) const {
    if (in.token_ids.empty()) return absl::InvalidArgumentError("has no tokens");
    if (static_cast<int>(in.token_ids.size()) > config_.max_sequence_length()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "has ", in.token_ids.size(), " tokens; the model's positions hold ",
          config_.max_sequence_length()));
    }
    for (int32_t id : in.token_ids) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("holds token id ", id, ", outside the vocabulary of ", config_.vocab_size));
      }
    }
    if (in.second_segment_start < 0 ||
        in.second_segment_start > static_cast<int32_t>(in.token_ids.size())) {
      return absl::InvalidArgumentError(absl::StrCat("second_segment_start ", in.second_segment_start,
                                                     " is outside its ", in.token_ids.size(),
                                                     " tokens"));
    }
    return absl::OkStatus();
  }

  const CrossEncoderConfig config_;
  const int max_length_;
  const int query_max_length_;
  const std::unique_ptr<CrossEncoderTokenizer> tokenizer_;
  const std::shared_ptr<CrossEncoderModule> module_;
};

}  // namespace

PairLengths TruncatePairLengths(int query_tokens, int document_tokens, int max_length,
                                int query_max_length, int pair_special_tokens) {
  PairLengths kept;
  kept.query = std::min(query_tokens, query_max_length);
  kept.document = std::min(document_tokens, max_length);
  const int excess = kept.query + kept.document + pair_special_tokens - max_length;
  // transformers' only_second cuts only when the document is longer than the excess.
  if (excess > 0 && kept.document > excess) kept.document -= excess;
  kept.truncated = kept.query < query_tokens || kept.document < document_tokens;
  return kept;
}

std::string CheckpointKey(const std::string& canonical, Architecture architecture) {
  return KeyFor(canonical, architecture, HubPrefix(architecture));
}

std::vector<std::pair<std::string, std::vector<int64_t>>> ParameterShapes(
    const CrossEncoderConfig& config) {
  CrossEncoderModule module(config, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = SortedParameterShapes(module);
  for (auto& [name, shape] : shapes) name = CheckpointKey(name, config.architecture);
  return shapes;
}

absl::StatusOr<std::unique_ptr<Model>> LoadCrossEncoder(const std::string& dir,
                                                        const RuntimeOptions& options,
                                                        const CrossEncoderOptions& ce_options) {
  absl::StatusOr<CrossEncoderConfig> config = ReadCrossEncoderConfig(dir);
  if (!config.ok()) return config.status();
  if (ce_options.max_length < 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("cross-encoder max_length ", ce_options.max_length, " is below 8"));
  }
  const int max_length = std::min(ce_options.max_length, config->max_sequence_length());
  const int query_max_length =
      ce_options.query_max_length > 0 ? ce_options.query_max_length : max_length * 3 / 4;

  absl::StatusOr<std::unique_ptr<CrossEncoderTokenizer>> tokenizer =
      CrossEncoderTokenizer::Load(dir, *config);
  if (!tokenizer.ok()) return tokenizer.status();
  if (query_max_length + (*tokenizer)->pair_special_tokens() >= max_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cross-encoder query_max_length ", query_max_length, " plus the ",
        (*tokenizer)->pair_special_tokens(), " special tokens of a pair leaves no room for a "
        "document within max_length ", max_length));
  }

  absl::StatusOr<std::unique_ptr<TensorArchive>> archive =
      OpenCheckpointInDir(dir, "model.safetensors", "pytorch_model.bin");
  if (!archive.ok()) return archive.status();

  absl::StatusOr<Placement> placement = PlaceModel(options);
  if (!placement.ok()) return placement.status();

  std::shared_ptr<CrossEncoderModule> module;
  absl::Status built = GuardTorch("building the cross-encoder module", [&] {
    module = std::make_shared<CrossEncoderModule>(*config, at::TensorOptions().dtype(at::kFloat));
  });
  if (!built.ok()) return built;
  // The hub's checkpoints keep the base model under "roberta." / "bert."; a bare base-model
  // save has no prefix.
  const Architecture arch = config->architecture;
  std::string prefix = HubPrefix(arch);
  if ((*archive)->Find(prefix + "embeddings.word_embeddings.weight") == nullptr &&
      (*archive)->Find("embeddings.word_embeddings.weight") != nullptr) {
    prefix.clear();
  }
  LoadPlan plan;
  plan.key_for = [arch, prefix](const std::string& name) { return KeyFor(name, arch, prefix); };
  plan.ignore = [arch, prefix](const std::string& key) { return IgnoredKey(key, arch, prefix); };
  plan.keep_fp32 = KeepFp32;
  if (absl::Status s = LoadParameters(*module, **archive, plan, placement->device,
                                      placement->dtype.type);
      !s.ok()) {
    return s;
  }
  if (placement->dtype.int8_linears) {
    if (absl::Status s = PackInt8(*module); !s.ok()) return s;
  }

  ModelDescription d = DescribePlacement("cross_encoder", *placement);
  d.architecture = config->architecture_name();
  d.accepts_text = false;
  d.accepts_image = false;
  d.accepts_pairs = true;
  d.embedding_dim = 1;  // one score per pair (Embedding dim 1)
  d.multi_vector = false;
  d.context_length = max_length;
  d.outputs_normalized = false;
  d.scoring = "cross_encoder";
  return std::unique_ptr<Model>(new CrossEncoderModel(*std::move(config), max_length,
                                                      query_max_length, *std::move(tokenizer),
                                                      std::move(module), *placement,
                                                      std::move(d)));
}

}  // namespace embedserve::models::cross_encoder
