// OpenClipModel: the Model interface over ClipModule, and loading it from a hub-format
// directory.
#include "server/models/openclip/openclip_model.h"

#include <cmath>
#include <filesystem>
#include <functional>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/nn/module.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/image/clip_preprocess.h"
#include "server/models/openclip/openclip_modules.h"
#include "server/models/openclip/openclip_pretrained.h"
#include "server/weights/safetensors.h"
#include "server/models/torch_model.h"
#include "server/models/torch_util.h"
#include "server/tokenizers/clip_tokenizer.h"

namespace embedserve::models::openclip {
namespace {

namespace fs = std::filesystem;

// LayerNorm parameters and the logit scale stay float32 in every serving dtype.
bool KeepFp32(const std::string& name) {
  return name == "logit_scale" || name.find("ln_") != std::string::npos;
}

// Older checkpoints may carry the text tower's causal mask buffer; it is rebuilt here.
bool IgnoredKey(const std::string& name) { return absl::EndsWith(name, "attn_mask"); }

class OpenClipModel final : public TorchModel {
 public:
  OpenClipModel(OpenClipConfig config, std::unique_ptr<tokenizers::ClipTokenizer> tokenizer,
                std::shared_ptr<ClipModule> module, const Placement& placement,
                ModelDescription description)
      : TorchModel(placement, std::move(description)),
        config_(std::move(config)),
        tokenizer_(std::move(tokenizer)),
        module_(std::move(module)) {
    preprocess_.image_size = config_.vision.image_size;
    preprocess_.mean = config_.preprocess.mean;
    preprocess_.std = config_.preprocess.std;
  }

  absl::StatusOr<TextInput> PrepareText(absl::string_view text, bool truncate) const override {
    absl::StatusOr<tokenizers::ClipTokenizer::Encoded> encoded =
        tokenizer_->Encode(text, config_.text.context_length, truncate);
    if (!encoded.ok()) return encoded.status();
    return TextInput{std::move(encoded->ids), encoded->truncated};
  }

  std::string TokenString(int32_t id) const override { return tokenizer_->TokenString(id); }

  absl::StatusOr<ImageInput> PreprocessImage(const image::RgbImage& rgb) const override {
    ImageInput input;
    input.pixels = image::ClipPreprocess(rgb, preprocess_);
    return input;
  }

  std::unique_ptr<PendingBatch> LaunchTexts(absl::Span<const TextInput* const> texts) override {
    if (texts.empty()) return std::make_unique<FinishedBatch>(std::vector<Embedding>());
    return LaunchBatch("text forward", device_, [&] {
      const int64_t batch = static_cast<int64_t>(texts.size());
      // OpenCLIP pools at argmax(ids): the first occurrence of the highest id, which is the
      // end token unless the text itself spells "<end_of_text>" earlier. The tower is causal,
      // so positions after the last pooling position in the batch cannot change any output:
      // they are not computed.
      std::vector<int64_t> pools(batch, 0);
      int64_t longest = 1;
      for (int64_t b = 0; b < batch; ++b) {
        const auto& tokens = texts[b]->token_ids;
        const int64_t n = std::min<int64_t>(tokens.size(), config_.text.context_length);
        for (int64_t i = 0; i < n; ++i) {
          if (tokens[i] > tokens[pools[b]]) pools[b] = i;
        }
        longest = std::max(longest, pools[b] + 1);
      }
      at::Tensor ids = NewHostTensor({batch, longest}, at::kLong, device_).zero_();
      at::Tensor eot = NewHostTensor({batch}, at::kLong, device_);
      auto ids_a = ids.accessor<int64_t, 2>();
      auto eot_a = eot.accessor<int64_t, 1>();
      for (int64_t b = 0; b < batch; ++b) {
        const auto& tokens = texts[b]->token_ids;
        for (int64_t i = 0; i <= pools[b] && i < static_cast<int64_t>(tokens.size()); ++i) {
          ids_a[b][i] = tokens[i];
        }
        eot_a[b] = pools[b];
      }
      return module_->EncodeText(StageToDevice(ids, device_), StageToDevice(eot, device_));
    }, &ToEmbeddings);
  }

  std::unique_ptr<PendingBatch> LaunchImages(absl::Span<const ImageInput* const> images) override {
    if (images.empty()) return std::make_unique<FinishedBatch>(std::vector<Embedding>());
    const int64_t side = config_.vision.image_size;
    if (absl::Status checked = CheckPixels(images, side); !checked.ok()) {
      return std::make_unique<FinishedBatch>(checked);
    }
    return LaunchBatch("image forward", device_, [&] {
      return module_->EncodeImage(StagePixels(images, side));
    }, &ToEmbeddings);
  }

 private:
  static std::vector<Embedding> ToEmbeddings(const at::Tensor& out) {
    const at::Tensor host = out.contiguous();  // float32, on the host
    const int64_t rows = host.size(0), dim = host.size(1);
    const float* data = host.data_ptr<float>();
    std::vector<Embedding> result(rows);
    for (int64_t r = 0; r < rows; ++r) {
      result[r].rows = 1;
      result[r].dim = static_cast<int>(dim);
      result[r].values.assign(data + r * dim, data + (r + 1) * dim);
    }
    return result;
  }

  const OpenClipConfig config_;
  const std::unique_ptr<tokenizers::ClipTokenizer> tokenizer_;
  const std::shared_ptr<ClipModule> module_;
  image::ClipPreprocessConfig preprocess_;
};

absl::StatusOr<std::unique_ptr<tokenizers::ClipTokenizer>> LoadTokenizer(const std::string& dir) {
  const fs::path vocab = fs::path(dir) / "vocab.json";
  const fs::path merges = fs::path(dir) / "merges.txt";
  std::error_code ec;
  if (fs::exists(vocab, ec) && fs::exists(merges, ec)) {
    return tokenizers::ClipTokenizer::FromVocabAndMerges(vocab.string(), merges.string());
  }
  return tokenizers::ClipTokenizer::FromBundledVocab();
}

}  // namespace

namespace {

// Builds the model of `config` from the weights in `dir` (open_clip_model.safetensors, else
// open_clip_pytorch_model.bin), with `tokenizer`; `describe` completes the description.
absl::StatusOr<std::unique_ptr<Model>> Build(
    const std::string& dir, OpenClipConfig config,
    std::unique_ptr<tokenizers::ClipTokenizer> tokenizer, const RuntimeOptions& options,
    const std::function<void(ModelDescription&)>& describe) {
  absl::StatusOr<Placement> placement = PlaceModel(options);
  if (!placement.ok()) return placement.status();
  if (config.text.vocab_size <= 49407) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, ": text_cfg.vocab_size ", config.text.vocab_size,
        " cannot hold CLIP's end-of-text token 49407"));
  }

  absl::StatusOr<std::unique_ptr<TensorArchive>> archive =
      OpenCheckpointInDir(dir, kPretrainedSafetensors, kPretrainedBin);
  if (!archive.ok()) return archive.status();

  std::shared_ptr<ClipModule> module;
  absl::Status built = GuardTorch("building the OpenCLIP module", [&] {
    module = std::make_shared<ClipModule>(config, at::TensorOptions().dtype(at::kFloat));
  });
  if (!built.ok()) return built;
  LoadPlan plan;
  plan.ignore = IgnoredKey;
  plan.keep_fp32 = KeepFp32;
  if (absl::Status s = LoadParameters(*module, **archive, plan, placement->device,
                                      placement->dtype.type);
      !s.ok()) {
    return s;
  }
  if (placement->dtype.int8_linears) {
    if (absl::Status s = PackInt8(*module); !s.ok()) return s;
  }

  ModelDescription d = DescribePlacement("openclip", *placement);
  d.architecture = config.ArchitectureName();
  d.activation = config.quick_gelu ? "quick_gelu" : "gelu";
  d.accepts_text = true;
  d.accepts_image = true;
  d.embedding_dim = config.embed_dim;
  d.multi_vector = false;
  d.context_length = config.text.context_length;
  d.image_size = config.vision.image_size;
  d.outputs_normalized = false;
  d.logit_scale = std::exp(module->logit_scale.item<float>());
  d.scoring = "cosine";
  d.capabilities.classify = d.logit_scale > 0;
  if (describe) describe(d);
  return std::unique_ptr<Model>(new OpenClipModel(std::move(config), std::move(tokenizer),
                                                  std::move(module), *placement,
                                                  std::move(d)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> LoadOpenClip(const std::string& dir,
                                                    const RuntimeOptions& options) {
  absl::StatusOr<OpenClipConfig> config = ReadOpenClipConfig(dir);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::unique_ptr<tokenizers::ClipTokenizer>> tokenizer = LoadTokenizer(dir);
  if (!tokenizer.ok()) return tokenizer.status();
  return Build(dir, *std::move(config), *std::move(tokenizer), options, nullptr);
}

absl::StatusOr<std::unique_ptr<Model>> LoadOpenClipPretrained(const PretrainedSpec& spec,
                                                              const std::string& dir,
                                                              const RuntimeOptions& options) {
  absl::StatusOr<ResolvedPretrained> resolved = ResolvePretrained(spec);
  if (!resolved.ok()) return resolved.status();
  const PretrainedTag& tag = resolved->tag;
  const std::string where = absl::StrCat("openclip:", spec.architecture, "/", spec.tag);
  // The native preprocessing is torchvision's bicubic shortest-side resize and center crop.
  if (tag.interpolation != "bicubic") {
    return absl::UnimplementedError(absl::StrCat(
        where, ": the tag's preprocessing uses interpolation '", tag.interpolation,
        "'; the native OpenCLIP runs bicubic only"));
  }
  if (tag.resize_mode != "shortest") {
    return absl::UnimplementedError(absl::StrCat(
        where, ": the tag's preprocessing uses resize_mode '", tag.resize_mode,
        "'; the native OpenCLIP runs 'shortest' (resize the short side, center crop) only"));
  }
  // open_clip's tokenizer for a built-in architecture: its bundled BPE vocabulary, whatever
  // files the repo holds.
  absl::StatusOr<std::unique_ptr<tokenizers::ClipTokenizer>> tokenizer =
      tokenizers::ClipTokenizer::FromBundledVocab();
  if (!tokenizer.ok()) return tokenizer.status();
  std::error_code ec;
  const std::string file =
      fs::exists(fs::path(dir) / kPretrainedSafetensors, ec) ? kPretrainedSafetensors : kPretrainedBin;
  const std::string origin = absl::StrCat(tag.hf_hub, "@", fs::path(dir).filename().string(), "/", file);
  const std::string architecture = spec.architecture;
  return Build(dir, resolved->config, *std::move(tokenizer), options,
               [&](ModelDescription& d) {
                 d.architecture = architecture;
                 d.resolved_source = origin;
               });
}

absl::StatusOr<int64_t> PretrainedParameterCount(const PretrainedSpec& spec) {
  absl::StatusOr<ResolvedPretrained> resolved = ResolvePretrained(spec);
  if (!resolved.ok()) return resolved.status();
  int64_t total = 0;
  for (const auto& [name, shape] : ParameterShapes(resolved->config)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    total += n;
  }
  return total;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> ParameterShapes(
    const OpenClipConfig& config) {
  ClipModule module(config, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
  return SortedParameterShapes(module);
}

}  // namespace embedserve::models::openclip
