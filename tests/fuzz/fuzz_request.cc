// libFuzzer target: arbitrary bytes as Embed/Rerank/Classify/Tokenize requests through the
// request validation unit, against an embedding model and a cross-encoder. Nothing may crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "common/tensor_codec.h"
#include "embedserve/v1/embed.pb.h"
#include "server/rpc/request_validation.h"

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
  embedserve::models::ModelDescription clip;
  clip.family = "openclip";
  clip.accepts_text = clip.accepts_image = true;
  clip.embedding_dim = 4;
  clip.scoring = "cosine";
  clip.capabilities.classify = true;
  embedserve::models::ModelDescription reranker;
  reranker.family = "cross_encoder";
  reranker.accepts_pairs = true;
  reranker.scoring = "cross_encoder";
  for (const embedserve::models::ModelDescription* description : {&clip, &reranker}) {
    const embedserve::rpc::TargetModel model{"m", *description};
    v1::EmbedRequest embed;
    if (embed.ParseFromString(bytes)) {
      (void)embedserve::rpc::ValidateEmbed(model, embed.inputs(), embed.options(), limits);
    }
    v1::RerankRequest rerank;
    if (rerank.ParseFromString(bytes)) (void)embedserve::rpc::ValidateRerank(model, rerank, limits);
    v1::ClassifyRequest classify;
    if (classify.ParseFromString(bytes)) {
      (void)embedserve::rpc::ValidateClassify(model, classify, limits);
    }
    v1::TokenizeRequest tokenize;
    if (tokenize.ParseFromString(bytes)) {
      (void)embedserve::rpc::ValidateTokenize(model, tokenize, limits);
    }
  }
  v1::Tensor tensor;
  if (tensor.ParseFromString(bytes)) (void)embedserve::DecodeTensor(tensor);
  return 0;
}
