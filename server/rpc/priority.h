// A call's priority class: the request's field if set, else the `embedserve-priority`
// metadata (for clients that cannot set fields: grpcurl -H, HTTP headers), else normal.
#pragma once

#include <grpcpp/server_context.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "embedserve/v1/embed.pb.h"
#include "server/pipeline/embed_call.h"

namespace embedserve::rpc {

// The metadata key; its value is "bulk", "normal" or "interactive" (case-insensitive).
inline constexpr char kPriorityKey[] = "embedserve-priority";

// INVALID_ARGUMENT naming `field` for an enum value this server does not know, or naming
// the metadata key for a value that is none of the three.
absl::StatusOr<pipeline::Priority> PriorityOf(v1::Priority requested, absl::string_view field,
                                              const grpc::ServerContextBase& context);

// The class a metadata value names; INVALID_ARGUMENT naming the key otherwise.
absl::StatusOr<pipeline::Priority> ParsePriorityName(absl::string_view name);

}  // namespace embedserve::rpc
