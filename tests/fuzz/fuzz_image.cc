// libFuzzer target: arbitrary bytes through DecodeToRgb (every format's header checks and
// decoder) and, when they decode, through the CLIP resize/crop/normalize. Nothing may crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/image/clip_preprocess.h"
#include "server/image/decode.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)embedserve::image::ReadImageHeader(bytes);
  embedserve::image::DecodeLimits limits;
  limits.max_pixels = 1 << 20;  // keep each run fast; the limit logic is the same
  auto image = embedserve::image::DecodeToRgb(bytes, limits);
  if (image.ok()) {
    embedserve::image::ClipPreprocessConfig config;
    config.image_size = 32;
    (void)embedserve::image::ClipPreprocess(*image, config);
  }
  return 0;
}
