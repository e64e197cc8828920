// openclip:ARCH/TAG: tag table -> hub repo -> weights file in the Hugging Face cache ->
// the shipped architecture.
#include "server/openclip_source.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "server/models/openclip/openclip_model.h"
#include "server/models/openclip/openclip_pretrained.h"

namespace embedserve {

namespace oc = models::openclip;

absl::StatusOr<std::string> ResolveModelSpec(const std::string& spec,
                                             const sources::SourceOptions& options) {
  if (oc::IsPretrainedSpec(spec)) return ResolveOpenClipPretrained(spec, options);
  return sources::ResolveModelSource(spec, options);
}

absl::StatusOr<std::string> ResolveOpenClipPretrained(const std::string& spec,
                                                      const sources::SourceOptions& options) {
  absl::StatusOr<oc::PretrainedSpec> parsed = oc::ParsePretrainedSpec(spec);
  if (!parsed.ok()) return parsed.status();
  absl::StatusOr<oc::ResolvedPretrained> resolved = oc::ResolvePretrained(*parsed);
  if (!resolved.ok()) return resolved.status();
  const std::string hub = absl::StrCat("hf:", resolved->tag.hf_hub);
  // open_clip asks for the safetensors file first and falls back to the pickle on any
  // failure; here only "not there" falls back, so that a network error is reported as one.
  sources::SourceOptions only = options;
  only.files = {{{oc::kPretrainedSafetensors}, true}};
  absl::StatusOr<std::string> dir = sources::ResolveModelSource(hub, only);
  if (!dir.ok() && absl::IsNotFound(dir.status())) {
    only.files = {{{oc::kPretrainedBin}, true}};
    absl::StatusOr<std::string> bin = sources::ResolveModelSource(hub, only);
    if (bin.ok() || !absl::IsNotFound(bin.status())) {
      dir = std::move(bin);
    } else {
      const bool same = bin.status().message() == dir.status().message();
      dir = absl::NotFoundError(absl::StrCat(
          "neither ", oc::kPretrainedSafetensors, " nor ", oc::kPretrainedBin, " of tag '",
          resolved->tag.tag, "' (", resolved->tag.hf_hub, ") is available: ",
          dir.status().message(), same ? "" : absl::StrCat("; ", bin.status().message())));
    }
  }
  if (!dir.ok()) {
    return absl::Status(dir.status().code(), absl::StrCat(spec, ": ", dir.status().message()));
  }
  return oc::PretrainedLocator(*parsed, *dir);
}

bool IsOpenClipPretrainedLocator(const std::string& dir) {
  oc::ParsedLocator parsed;
  return oc::ParsePretrainedLocator(dir, &parsed);
}

absl::StatusOr<int64_t> EstimateOpenClipPretrained(const std::string& locator,
                                                   int64_t float_size) {
  oc::ParsedLocator parsed;
  if (!oc::ParsePretrainedLocator(locator, &parsed)) {
    return absl::InvalidArgumentError(absl::StrCat("'", locator, "' is not an openclip: locator"));
  }
  absl::StatusOr<int64_t> count = oc::PretrainedParameterCount(parsed.spec);
  if (!count.ok()) return count.status();
  return *count * float_size;
}

absl::StatusOr<std::unique_ptr<models::Model>> LoadOpenClipPretrainedLocator(
    const std::string& locator, const models::RuntimeOptions& options) {
  oc::ParsedLocator parsed;
  if (!oc::ParsePretrainedLocator(locator, &parsed)) {
    return absl::InvalidArgumentError(absl::StrCat("'", locator, "' is not an openclip: locator"));
  }
  absl::StatusOr<oc::ResolvedPretrained> resolved = oc::ResolvePretrained(parsed.spec);
  if (!resolved.ok()) return resolved.status();
  if (!resolved->warning.empty()) {
    LogEvent(LogLevel::kWarning, "openclip_quickgelu_mismatch",
             absl::StrCat("source=", LogQuote(absl::StrCat("openclip:", parsed.spec.architecture,
                                                           "/", parsed.spec.tag)),
                          " activation=", resolved->activation,
                          " message=", LogQuote(resolved->warning)));
  }
  return oc::LoadOpenClipPretrained(parsed.spec, parsed.dir, options);
}

}  // namespace embedserve
