// Request bytes to messages at the gRPC edge, with errors that name the field: protobuf
// refuses a proto3 `string` that is not valid UTF-8 without saying which, and gRPC's typed
// callback handlers then answer UNIMPLEMENTED with no message before any handler runs (so no
// access log line and no metric). EmbedService therefore takes its requests as raw bytes and
// parses them here.
#pragma once

#include <optional>
#include <string>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <grpcpp/support/byte_buffer.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace embedserve::rpc {

// The path ("inputs[2].text") of the first `string` field of `type`, or of a message nested
// in it, whose value in the serialized `wire` is not valid UTF-8; nullopt if there is none
// or the bytes stop being a message of `type` before one is found.
std::optional<std::string> FindInvalidUtf8Field(const google::protobuf::Descriptor& type,
                                                absl::string_view wire);

// Parses `bytes` into `message`. INVALID_ARGUMENT naming the field when a string is not valid
// UTF-8, else naming the message type when the bytes are not one.
absl::Status ParseRequest(const grpc::ByteBuffer& bytes, google::protobuf::Message* message);

// Serializes `message` into `bytes`. RESOURCE_EXHAUSTED naming the size and the limit (and
// `bytes` left empty) when it is over `max_bytes` (--max-message-bytes), which gRPC would
// refuse to send.
absl::Status SerializeResponse(const google::protobuf::Message& message, int64_t max_bytes,
                               grpc::ByteBuffer* bytes);

}  // namespace embedserve::rpc
