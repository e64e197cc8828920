// Request validation, in one place: each RPC's request and the model it names become a
// validated struct or an error that names the field and the limit. Pure functions (no
// pipeline, no I/O), so a table-driven test covers every rule.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "embedserve/v1/embed.pb.h"
#include "server/models/model.h"
#include "server/pipeline/embed_call.h"
#include "server/pipeline/ranking.h"
#include "server/rpc/limits.h"

namespace embedserve::rpc {

// Output settings resolved from EmbedOptions.
struct OutputOptions {
  bool normalize = true;
  v1::Dtype dtype = v1::DTYPE_FLOAT32;
  bool packed = false;
  bool truncate = true;
};

// The model a request names, as validation sees it.
struct TargetModel {
  std::string name;
  const models::ModelDescription& description;
};

struct ValidEmbed {
  std::vector<pipeline::CallInput> inputs;
  OutputOptions options;
};
// Embed and each EmbedStream message (the same fields).
absl::StatusOr<ValidEmbed> ValidateEmbed(const TargetModel& model,
                                         const google::protobuf::RepeatedPtrField<v1::Input>& inputs,
                                         const v1::EmbedOptions& options,
                                         const RequestLimits& limits);

absl::StatusOr<pipeline::RerankRequest> ValidateRerank(const TargetModel& model,
                                                       const v1::RerankRequest& request,
                                                       const RequestLimits& limits);

absl::StatusOr<pipeline::ClassifyRequest> ValidateClassify(const TargetModel& model,
                                                           const v1::ClassifyRequest& request,
                                                           const RequestLimits& limits);

struct ValidTokenize {
  bool truncate = true;  // the texts are the request's own, each checked
};
absl::StatusOr<ValidTokenize> ValidateTokenize(const TargetModel& model,
                                               const v1::TokenizeRequest& request,
                                               const RequestLimits& limits);

// The rules the validators share, also for callers with their own messages.
// One text against the byte limit (UTF-8 validity is the tokenizer's to judge).
absl::Status CheckText(const std::string& text, const std::string& field,
                       const RequestLimits& limits);
absl::StatusOr<OutputOptions> ResolveOptions(const v1::EmbedOptions& options);

}  // namespace embedserve::rpc
