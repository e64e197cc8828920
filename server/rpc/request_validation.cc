// The validation rules of every RPC's request.
#include "server/rpc/request_validation.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/tensor_codec.h"
#include "server/pipeline/pipeline.h"
#include "server/pipeline/scoring.h"

namespace embedserve::rpc {
namespace {

using pipeline::CallInput;
using pipeline::Modality;

absl::Status CheckCount(int count, const std::string& field, const char* noun,
                        const char* flag, int limit) {
  if (count == 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": empty; send at least one ", noun));
  }
  if (count > limit) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", count, " ", noun,
                                                   "s, over the limit of ", limit, " (", flag,
                                                   ")"));
  }
  return absl::OkStatus();
}

// A text or an image the model embeds, named `name`; the model must accept its modality.
absl::StatusOr<CallInput> ToContent(const TargetModel& model, const v1::Input& input,
                                    const std::string& name, const RequestLimits& limits) {
  if (input.content_case() == v1::Input::kText) {
    absl::Status status = CheckText(input.text(), name, limits);
    if (!status.ok()) return status;
    if (!model.description.accepts_text) {
      return pipeline::NotAcceptedError(name, model.name, Modality::kText);
    }
    return CallInput{Modality::kText, input.text(), name};
  }
  if (input.image().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".image: empty (0 bytes)"));
  }
  if (!model.description.accepts_image) {
    return pipeline::NotAcceptedError(name, model.name, Modality::kImage);
  }
  return CallInput{Modality::kImage, input.image(), name};
}

absl::StatusOr<std::vector<CallInput>> ToCallInputs(
    const TargetModel& model, const google::protobuf::RepeatedPtrField<v1::Input>& inputs,
    const std::string& field, const RequestLimits& limits) {
  absl::Status count = CheckCount(inputs.size(), field, "input", "--max-inputs", limits.max_inputs);
  if (!count.ok()) return count;
  std::vector<CallInput> out;
  out.reserve(inputs.size());
  for (int i = 0; i < inputs.size(); ++i) {
    const v1::Input& input = inputs[i];
    const std::string name = absl::StrCat(field, "[", i, "]");
    switch (input.content_case()) {
      case v1::Input::kText:
      case v1::Input::kImage: {
        absl::StatusOr<CallInput> content = ToContent(model, input, name, limits);
        if (!content.ok()) return content.status();
        out.push_back(*std::move(content));
        break;
      }
      case v1::Input::kEmbedding:
        return absl::InvalidArgumentError(absl::StrCat(
            name, ": a precomputed embedding is accepted only by Rerank; send text or image"));
      default:
        return absl::InvalidArgumentError(absl::StrCat(name, ": no content; set text or image"));
    }
  }
  return out;
}

// A precomputed embedding for Rerank: decoded, its shape checked against the model, and its
// rows unit-normalized.
absl::StatusOr<pipeline::HostRows> ToPrecomputedRows(const TargetModel& model,
                                                     const v1::Tensor& tensor,
                                                     const std::string& field) {
  const models::ModelDescription& description = model.description;
  absl::StatusOr<DecodedTensor> decoded = DecodeTensor(tensor);
  if (!decoded.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".embedding: ", decoded.status().message()));
  }
  const int64_t dim = decoded->shape.back();
  const int64_t rows = decoded->shape.size() == 2 ? decoded->shape[0] : 1;
  if (dim != description.embedding_dim) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".embedding: dimension ", dim,
                                                   " does not match the model's ",
                                                   description.embedding_dim));
  }
  if (!description.multi_vector && rows != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".embedding: shape [", rows, ", ", dim, "] is a multi-vector; model '",
        description.architecture, "' scores single vectors [", description.embedding_dim, "]"));
  }
  pipeline::HostRows out{std::move(decoded->values), static_cast<int>(rows),
                         static_cast<int>(dim)};
  pipeline::NormalizeRows(out.values.data(), out.rows, out.dim);
  return out;
}

// A rerank query or candidate for an embedding model: content, or precomputed rows.
absl::StatusOr<pipeline::RerankItem> ToRerankItem(const TargetModel& model,
                                                  const v1::Input& input,
                                                  const std::string& field,
                                                  const RequestLimits& limits) {
  pipeline::RerankItem item;
  switch (input.content_case()) {
    case v1::Input::kText:
    case v1::Input::kImage: {
      absl::StatusOr<CallInput> content = ToContent(model, input, field, limits);
      if (!content.ok()) return content.status();
      item.content = *std::move(content);
      return item;
    }
    case v1::Input::kEmbedding: {
      absl::StatusOr<pipeline::HostRows> rows = ToPrecomputedRows(model, input.embedding(), field);
      if (!rows.ok()) return rows.status();
      item.precomputed = *std::move(rows);
      return item;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": no content; set text, image or embedding"));
  }
}

// A rerank query or candidate for a cross-encoder: a text, nothing else.
absl::StatusOr<pipeline::RerankItem> ToPairText(const TargetModel& model, const v1::Input& input,
                                                const std::string& field,
                                                const RequestLimits& limits) {
  switch (input.content_case()) {
    case v1::Input::kText: {
      absl::Status status = CheckText(input.text(), field, limits);
      if (!status.ok()) return status;
      pipeline::RerankItem item;
      item.content = CallInput{Modality::kPair, input.text(), field};
      return item;
    }
    case v1::Input::kImage:
    case v1::Input::kEmbedding:
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": model '", model.name, "' is a cross-encoder and scores texts only; send text"));
    default:
      return absl::InvalidArgumentError(absl::StrCat(field, ": no content; set text"));
  }
}

}  // namespace

absl::Status CheckText(const std::string& text, const std::string& field,
                       const RequestLimits& limits) {
  if (static_cast<int64_t>(text.size()) > limits.max_text_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": text is ", text.size(), " bytes, over the limit of ",
                     limits.max_text_bytes, " (--max-text-bytes)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<OutputOptions> ResolveOptions(const v1::EmbedOptions& options) {
  OutputOptions out;
  out.normalize = options.has_normalize() ? options.normalize() : true;
  switch (options.dtype()) {
    case v1::DTYPE_UNSPECIFIED:
    case v1::DTYPE_FLOAT32:
      out.dtype = v1::DTYPE_FLOAT32;
      break;
    case v1::DTYPE_FLOAT16:
    case v1::DTYPE_BFLOAT16:
      out.dtype = options.dtype();
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("options.dtype: unknown value ", options.dtype()));
  }
  switch (options.encoding()) {
    case v1::ENCODING_UNSPECIFIED:
      out.packed = out.dtype != v1::DTYPE_FLOAT32;
      break;
    case v1::ENCODING_FLOAT_LIST:
      if (out.dtype != v1::DTYPE_FLOAT32) {
        return absl::InvalidArgumentError(
            "options.encoding: ENCODING_FLOAT_LIST carries float32 only; use ENCODING_PACKED "
            "for float16/bfloat16");
      }
      out.packed = false;
      break;
    case v1::ENCODING_PACKED:
      out.packed = true;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("options.encoding: unknown value ", options.encoding()));
  }
  switch (options.truncation()) {
    case v1::TRUNCATION_UNSPECIFIED:
    case v1::TRUNCATION_END:
      out.truncate = true;
      break;
    case v1::TRUNCATION_ERROR:
      out.truncate = false;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("options.truncation: unknown value ", options.truncation()));
  }
  return out;
}

absl::StatusOr<ValidEmbed> ValidateEmbed(const TargetModel& model,
                                         const google::protobuf::RepeatedPtrField<v1::Input>& inputs,
                                         const v1::EmbedOptions& options,
                                         const RequestLimits& limits) {
  if (!model.description.accepts_text && !model.description.accepts_image) {
    return absl::UnimplementedError(absl::StrCat(
        "model '", model.name, "' (", model.description.family,
        ") scores (query, document) pairs and has no embeddings; call Rerank with a text query "
        "and text candidates"));
  }
  ValidEmbed out;
  absl::StatusOr<OutputOptions> resolved = ResolveOptions(options);
  if (!resolved.ok()) return resolved.status();
  out.options = *resolved;
  absl::StatusOr<std::vector<CallInput>> converted = ToCallInputs(model, inputs, "inputs", limits);
  if (!converted.ok()) return converted.status();
  out.inputs = *std::move(converted);
  return out;
}

absl::StatusOr<pipeline::RerankRequest> ValidateRerank(const TargetModel& model,
                                                       const v1::RerankRequest& request,
                                                       const RequestLimits& limits) {
  const int n = request.candidates_size();
  absl::Status count = CheckCount(n, "candidates", "candidate", "--max-inputs", limits.max_inputs);
  if (!count.ok()) return count;
  if (request.has_top_k() && (request.top_k() < 1 || request.top_k() > n)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "top_k: ", request.top_k(), " is outside [1, ", n,
        "] (the number of candidates); leave it unset for all"));
  }
  const bool pairs = model.description.accepts_pairs;
  if (request.has_sigmoid() && !pairs) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sigmoid: only a cross-encoder's logits are mapped through a sigmoid; model '",
        model.name, "' scores with ", model.description.scoring, "; leave it unset"));
  }
  pipeline::RerankRequest out;
  out.top_k = request.has_top_k() ? request.top_k() : 0;
  out.truncate = request.truncation() != v1::TRUNCATION_ERROR;
  out.sigmoid = request.has_sigmoid() && request.sigmoid();
  out.candidates.reserve(n);
  for (int slot = 0; slot <= n; ++slot) {
    const v1::Input& input = slot == 0 ? request.query() : request.candidates(slot - 1);
    const std::string field =
        slot == 0 ? std::string("query") : absl::StrCat("candidates[", slot - 1, "]");
    absl::StatusOr<pipeline::RerankItem> item = pairs ? ToPairText(model, input, field, limits)
                                                      : ToRerankItem(model, input, field, limits);
    if (!item.ok()) return item.status();
    if (slot == 0) out.query = *std::move(item);
    else out.candidates.push_back(*std::move(item));
  }
  return out;
}

absl::StatusOr<pipeline::ClassifyRequest> ValidateClassify(const TargetModel& model,
                                                           const v1::ClassifyRequest& request,
                                                           const RequestLimits& limits) {
  if (!model.description.capabilities.classify) {
    return absl::UnimplementedError(absl::StrCat(
        "model '", model.name, "' (", model.description.family,
        ") has no zero-shot classification; use a CLIP model"));
  }
  const int num_labels = request.labels_size();
  if (num_labels < 2 || num_labels > limits.max_labels) {
    return absl::InvalidArgumentError(absl::StrCat("labels: ", num_labels,
                                                   " labels; send between 2 and ",
                                                   limits.max_labels, " (--max-labels)"));
  }
  const std::string& prompt_template = request.prompt_template();
  if (!prompt_template.empty() && prompt_template.find("{}") == std::string::npos) {
    return absl::InvalidArgumentError(
        "prompt_template: must contain \"{}\" where the label goes, e.g. \"a photo of a {}.\"");
  }
  pipeline::ClassifyRequest out;
  absl::StatusOr<std::vector<CallInput>> inputs =
      ToCallInputs(model, request.inputs(), "inputs", limits);
  if (!inputs.ok()) return inputs.status();
  out.inputs = *std::move(inputs);
  out.label_prompts.reserve(num_labels);
  for (int j = 0; j < num_labels; ++j) {
    const std::string field = absl::StrCat("labels[", j, "]");
    if (request.labels(j).empty()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": empty label"));
    }
    std::string prompt = prompt_template.empty()
                             ? request.labels(j)
                             : absl::StrReplaceAll(prompt_template, {{"{}", request.labels(j)}});
    absl::Status status = CheckText(prompt, field, limits);
    if (!status.ok()) return status;
    out.label_prompts.push_back(std::move(prompt));
  }
  return out;
}

absl::StatusOr<ValidTokenize> ValidateTokenize(const TargetModel& model,
                                               const v1::TokenizeRequest& request,
                                               const RequestLimits& limits) {
  absl::Status count =
      CheckCount(request.texts_size(), "texts", "text", "--max-inputs", limits.max_inputs);
  if (!count.ok()) return count;
  if (!model.description.accepts_text && !model.description.accepts_pairs) {
    return pipeline::NotAcceptedError("texts", model.name, Modality::kText);
  }
  for (int i = 0; i < request.texts_size(); ++i) {
    absl::Status status = CheckText(request.texts(i), absl::StrCat("texts[", i, "]"), limits);
    if (!status.ok()) return status;
  }
  return ValidTokenize{request.truncation() != v1::TRUNCATION_ERROR};
}

}  // namespace embedserve::rpc
