// libFuzzer target: arbitrary bytes as a safetensors file through the strict header
// validation (in memory, no file IO). Nothing may crash; accepted tensors must lie in the buffer.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "server/weights/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace weights = embedserve::weights;
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto file = weights::SafetensorsFile::FromBuffer("fuzz.safetensors", bytes);
  if (!file.ok()) return 0;
  const uint8_t* end = data + size;
  for (const weights::TensorView& t : (*file)->tensors()) {
    // Every accepted view must be inside the buffer and match shape x dtype.
    if (t.data < data || t.data + t.nbytes > end) std::abort();
    if (static_cast<size_t>(t.numel()) * weights::DtypeSize(t.dtype) != t.nbytes) std::abort();
    if ((*file)->Find(t.name) != &t) std::abort();
    volatile uint8_t sink = 0;
    if (t.nbytes > 0) sink = t.data[0] ^ t.data[t.nbytes - 1];
    (void)sink;
  }
  (void)(*file)->metadata().size();
  return 0;
}
