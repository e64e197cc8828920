// Parsing requests and serializing answers at the gRPC edge, with field-naming errors.
#include "server/rpc/request_parsing.h"

#include <cstdint>
#include <map>
#include <vector>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include "absl/strings/str_cat.h"

namespace embedserve::rpc {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::internal::WireFormatLite;

// Well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past U+10FFFF.
bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int extra;
    unsigned char low = 0x80, high = 0xBF;  // the allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      extra = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      extra = 2;
      if (c == 0xE0) low = 0xA0;
      if (c == 0xED) high = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      extra = 3;
      if (c == 0xF0) low = 0x90;
      if (c == 0xF4) high = 0x8F;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;  // cut short
    for (int k = 1; k <= extra; ++k) {
      const unsigned char b = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (b < low || b > high) : (b < 0x80 || b > 0xBF)) return false;
    }
    i += extra + 1;
  }
  return true;
}

constexpr int kMaxDepth = 32;

// Reads fields of `type` until the stream's current limit; see FindInvalidUtf8Field.
// `complete` is set false when the bytes stopped being a message of `type`.
std::optional<std::string> FindIn(const Descriptor& type,
                                  google::protobuf::io::CodedInputStream* in,
                                  const std::string& prefix, int depth, bool* complete) {
  std::map<int, int> repeated_index;
  while (true) {
    const uint32_t tag = in->ReadTag();
    if (tag == 0) {
      *complete = in->ConsumedEntireMessage() || in->BytesUntilLimit() == 0;
      return std::nullopt;
    }
    const FieldDescriptor* field = type.FindFieldByNumber(WireFormatLite::GetTagFieldNumber(tag));
    const bool nested = field != nullptr && field->type() == FieldDescriptor::TYPE_MESSAGE;
    const bool text = field != nullptr && field->type() == FieldDescriptor::TYPE_STRING;
    if ((!nested && !text) ||
        WireFormatLite::GetTagWireType(tag) != WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      if (!WireFormatLite::SkipField(in, tag)) {
        *complete = false;
        return std::nullopt;
      }
      continue;
    }
    std::string path = prefix.empty() ? field->name() : absl::StrCat(prefix, ".", field->name());
    if (field->is_repeated()) absl::StrAppend(&path, "[", repeated_index[field->number()]++, "]");
    uint32_t length;
    if (!in->ReadVarint32(&length) || length > static_cast<uint32_t>(INT32_MAX)) {
      *complete = false;
      return std::nullopt;
    }
    if (text) {
      std::string value;
      if (!in->ReadString(&value, static_cast<int>(length))) {
        *complete = false;
        return std::nullopt;
      }
      if (!IsValidUtf8(value)) return path;
      continue;
    }
    if (depth >= kMaxDepth) {
      *complete = false;
      return std::nullopt;
    }
    const auto limit = in->PushLimit(static_cast<int>(length));
    bool inner_complete = true;
    std::optional<std::string> found =
        FindIn(*field->message_type(), in, path, depth + 1, &inner_complete);
    if (found.has_value()) return found;
    if (!inner_complete || in->BytesUntilLimit() != 0) {
      *complete = false;
      return std::nullopt;
    }
    in->PopLimit(limit);
  }
}

std::string Flatten(const grpc::ByteBuffer& bytes) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!bytes.Dump(&slices).ok()) return out;
  out.reserve(bytes.Length());
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

}  // namespace

std::optional<std::string> FindInvalidUtf8Field(const Descriptor& type, absl::string_view wire) {
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(wire.data()),
                                            static_cast<int>(wire.size()));
  bool complete = true;
  return FindIn(type, &in, "", 0, &complete);
}

absl::Status ParseRequest(const grpc::ByteBuffer& bytes, google::protobuf::Message* message) {
  grpc::ByteBuffer copy(bytes);  // the reader consumes it; slices are shared, not copied
  grpc::ProtoBufferReader reader(&copy);
  if (reader.status().ok() && message->ParseFromZeroCopyStream(&reader)) return absl::OkStatus();
  const Descriptor& type = *message->GetDescriptor();
  message->Clear();
  if (std::optional<std::string> field = FindInvalidUtf8Field(type, Flatten(bytes))) {
    return absl::InvalidArgumentError(absl::StrCat(
        *field, ": not valid UTF-8; protobuf string fields must be UTF-8 (send an image's "
        "bytes in `image`, and texts encoded as UTF-8)"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "the request is not a valid ", type.full_name(), " message (", bytes.Length(), " bytes)"));
}

absl::Status SerializeResponse(const google::protobuf::Message& message, int64_t max_bytes,
                               grpc::ByteBuffer* bytes) {
  const size_t size = message.ByteSizeLong();
  if (size > static_cast<size_t>(max_bytes)) {
    bytes->Clear();
    return absl::ResourceExhaustedError(absl::StrCat(
        "the response is ", size, " bytes, over the limit of ", max_bytes,
        " bytes (--max-message-bytes); send fewer inputs per call, ask for dtype float16 or "
        "bfloat16 with packed encoding, or raise the server's --max-message-bytes"));
  }
  bool own_buffer;
  grpc::Status status =
      grpc::SerializationTraits<google::protobuf::Message>::Serialize(message, bytes, &own_buffer);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("serializing the response: ", status.error_message()));
  }
  return absl::OkStatus();
}

}  // namespace embedserve::rpc
