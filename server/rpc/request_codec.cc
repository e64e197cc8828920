// Pipeline results -> API messages.
#include "server/rpc/request_codec.h"

#include "absl/strings/str_cat.h"
#include "common/tensor_codec.h"
#include "server/pipeline/scoring.h"

namespace embedserve::rpc {

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
