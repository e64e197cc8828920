// libFuzzer target: arbitrary bytes as Embed/Rerank/Classify requests through the edge's
// validation (input conversion, options, precomputed tensors). Nothing may crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "common/tensor_codec.h"
#include "embedserve/v1/embed.pb.h"
#include "server/rpc/request_codec.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Invalid UTF-8 in string fields is expected here; keep the output readable.
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace v1 = embedserve::v1;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  embedserve::rpc::RequestLimits limits;
  limits.max_inputs = 64;
  limits.max_text_bytes = 4096;
  v1::EmbedRequest embed;
  if (embed.ParseFromString(bytes)) {
    (void)embedserve::rpc::ToCallInputs(embed.inputs(), "inputs", limits);
    (void)embedserve::rpc::ResolveOptions(embed.options());
  }
  v1::RerankRequest rerank;
  if (rerank.ParseFromString(bytes)) {
    for (const v1::Input& candidate : rerank.candidates()) {
      if (candidate.has_embedding()) (void)embedserve::DecodeTensor(candidate.embedding());
    }
  }
  v1::Tensor tensor;
  if (tensor.ParseFromString(bytes)) (void)embedserve::DecodeTensor(tensor);
  return 0;
}
