// Per-request limits enforced at the gRPC edge; every violation is INVALID_ARGUMENT naming
// the field, the value and the limit (and the flag that sets it).
#pragma once

#include <cstdint>

namespace embedserve::rpc {

struct RequestLimits {
  int max_inputs = 1024;              // --max-inputs: inputs (or candidates) per call
  int64_t max_text_bytes = 1 << 20;   // --max-text-bytes: one text
  int max_labels = 1000;              // --max-labels: Classify labels per call
  int stream_window = 8;              // --stream-window: EmbedStream messages in flight
  int64_t max_message_bytes = 64 << 20;  // --max-message-bytes: one response message
};

}  // namespace embedserve::rpc
