// The priority class of a call, from its request field or its metadata.
#include "server/rpc/priority.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace embedserve::rpc {

absl::StatusOr<pipeline::Priority> ParsePriorityName(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(name));
  if (lower == "bulk") return pipeline::Priority::kBulk;
  if (lower == "normal") return pipeline::Priority::kNormal;
  if (lower == "interactive") return pipeline::Priority::kInteractive;
  // The value is the client's: echo at most a bounded prefix of it.
  return absl::InvalidArgumentError(absl::StrCat(
      "metadata ", kPriorityKey, ": '", name.substr(0, 64), name.size() > 64 ? "...'" : "'",
      " is not a priority; use bulk, normal or interactive (HTTP: the X-Embedserve-Priority "
      "header)"));
}

absl::StatusOr<pipeline::Priority> PriorityOf(v1::Priority requested, absl::string_view field,
                                              const grpc::ServerContextBase& context) {
  switch (requested) {
    case v1::PRIORITY_BULK: return pipeline::Priority::kBulk;
    case v1::PRIORITY_NORMAL: return pipeline::Priority::kNormal;
    case v1::PRIORITY_INTERACTIVE: return pipeline::Priority::kInteractive;
    case v1::PRIORITY_UNSPECIFIED: break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": ", static_cast<int>(requested),
                       " is not a priority; use PRIORITY_BULK, PRIORITY_NORMAL or "
                       "PRIORITY_INTERACTIVE"));
  }
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kPriorityKey);
  if (it == metadata.end()) return pipeline::Priority::kNormal;
  return ParsePriorityName(absl::string_view(it->second.data(), it->second.size()));
}

}  // namespace embedserve::rpc
