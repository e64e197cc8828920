// Encodes the pipeline's results as v1 API messages (request validation is in
// request_validation.h).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "embedserve/v1/embed.pb.h"
#include "server/models/model.h"
#include "server/pipeline/embed_call.h"
#include "server/rpc/request_validation.h"

namespace embedserve::rpc {

// Writes one result, normalizing its rows first if asked and the model does not already.
void EncodeEmbedding(models::Embedding& embedding, const models::ModelDescription& model,
                     const OutputOptions& options, bool truncated, int token_count,
                     v1::Embedding* out);

void EncodeTimings(const pipeline::CallTimings& timings, v1::Timing* out);

}  // namespace embedserve::rpc
