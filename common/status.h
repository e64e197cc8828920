// Conversions between absl::Status (used everywhere inside) and grpc::Status (the wire).
// Canonical codes map one-to-one.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace embedserve {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// The canonical name of a code, e.g. "INVALID_ARGUMENT", for logs, metrics and the CLI.
const char* StatusCodeName(absl::StatusCode code);

}  // namespace embedserve
