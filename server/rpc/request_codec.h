// Converts between the v1 API messages and the pipeline's call inputs and results:
// validation of inputs and options (naming fields and limits), and encoding of outputs.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "embedserve/v1/embed.pb.h"
#include "server/models/model.h"
#include "server/pipeline/embed_call.h"
#include "server/rpc/limits.h"

namespace embedserve::rpc {

// Checks the inputs' count and content and copies them into call inputs. Precomputed
// embeddings are refused here (they belong to Rerank). `field` names the repeated field.
absl::StatusOr<std::vector<pipeline::CallInput>> ToCallInputs(
    const google::protobuf::RepeatedPtrField<v1::Input>& inputs, const std::string& field,
    const RequestLimits& limits);

// Checks one text against the byte limit and UTF-8 validity is left to the tokenizer.
absl::Status CheckText(const std::string& text, const std::string& field,
                       const RequestLimits& limits);

// Output settings resolved from EmbedOptions.
struct OutputOptions {
  bool normalize = true;
  v1::Dtype dtype = v1::DTYPE_FLOAT32;
  bool packed = false;
  bool truncate = true;
};
absl::StatusOr<OutputOptions> ResolveOptions(const v1::EmbedOptions& options);

// Writes one result, normalizing its rows first if asked and the model does not already.
void EncodeEmbedding(models::Embedding& embedding, const models::ModelDescription& model,
                     const OutputOptions& options, bool truncated, int token_count,
                     v1::Embedding* out);

void EncodeTimings(const pipeline::CallTimings& timings, v1::Timing* out);

}  // namespace embedserve::rpc
