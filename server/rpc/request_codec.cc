// API message <-> pipeline conversions and request validation.
#include "server/rpc/request_codec.h"

#include "absl/strings/str_cat.h"
#include "common/tensor_codec.h"
#include "server/pipeline/scoring.h"

namespace embedserve::rpc {

absl::Status CheckText(const std::string& text, const std::string& field,
                       const RequestLimits& limits) {
  if (static_cast<int64_t>(text.size()) > limits.max_text_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": text is ", text.size(), " bytes, over the limit of ",
                     limits.max_text_bytes, " (--max-text-bytes)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<pipeline::CallInput>> ToCallInputs(
    const google::protobuf::RepeatedPtrField<v1::Input>& inputs, const std::string& field,
    const RequestLimits& limits) {
  if (inputs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": empty; send at least one input"));
  }
  if (inputs.size() > limits.max_inputs) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", inputs.size(),
                                                   " inputs, over the limit of ",
                                                   limits.max_inputs, " (--max-inputs)"));
  }
  std::vector<pipeline::CallInput> out;
  out.reserve(inputs.size());
  for (int i = 0; i < inputs.size(); ++i) {
    const v1::Input& input = inputs[i];
    std::string name = absl::StrCat(field, "[", i, "]");
    switch (input.content_case()) {
      case v1::Input::kText: {
        absl::Status status = CheckText(input.text(), name, limits);
        if (!status.ok()) return status;
        out.push_back({pipeline::Modality::kText, input.text(), std::move(name)});
        break;
      }
      case v1::Input::kImage:
        if (input.image().empty()) {
          return absl::InvalidArgumentError(absl::StrCat(name, ".image: empty (0 bytes)"));
        }
        out.push_back({pipeline::Modality::kImage, input.image(), std::move(name)});
        break;
      case v1::Input::kEmbedding:
        return absl::InvalidArgumentError(absl::StrCat(
            name, ": a precomputed embedding is accepted only by Rerank; send text or image"));
      default:
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": no content; set text or image"));
    }
  }
  return out;
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

void EncodeEmbedding(models::Embedding& embedding, const models::ModelDescription& model,
                     const OutputOptions& options, bool truncated, int token_count,
                     v1::Embedding* out) {
  if (options.normalize && !model.outputs_normalized) {
    pipeline::NormalizeRows(embedding.values.data(), embedding.rows, embedding.dim);
  }
  std::vector<int64_t> shape;
  if (model.multi_vector) shape.push_back(embedding.rows);
  shape.push_back(embedding.dim);
  EncodeTensor(embedding.values, shape, options.dtype, options.packed, out->mutable_vector());
  out->set_truncated(truncated);
  out->set_token_count(token_count);
}

void EncodeTimings(const pipeline::CallTimings& timings, v1::Timing* out) {
  out->set_preprocess_us(timings.preprocess_us);
  out->set_queue_us(timings.queue_us);
  out->set_inference_us(timings.inference_us);
  out->set_total_us(timings.total_us);
}

}  // namespace embedserve::rpc
