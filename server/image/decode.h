// Torch-free image decoding (JPEG, PNG, WebP, GIF, BMP) to 8-bit RGB, the way Pillow's
// Image.open(...).convert("RGB") sees the pixels, with limits checked before any pixel decode.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace embedserve::image {

// HWC, 3 channels, 8 bits: pixels.size() == width * height * 3.
struct RgbImage {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;
};

struct DecodeLimits {
  int64_t max_pixels = 64LL << 20;
  int64_t max_bytes = 32LL << 20;
};

struct ImageHeader {
  std::string format;  // "jpeg", "png", "webp", "gif", "bmp"
  int width = 0, height = 0;
};

// Format and size from the header bytes only (no pixel data is decoded or allocated).
absl::StatusOr<ImageHeader> ReadImageHeader(absl::string_view encoded);

// Checks the byte size and the header's pixel count against `limits` before decoding any
// pixels, then decodes to RGB (gray replicated, alpha dropped without compositing, CMYK
// converted like Pillow, first frame of GIF / animated WebP). Every failure is
// INVALID_ARGUMENT with a readable message.
absl::StatusOr<RgbImage> DecodeToRgb(absl::string_view encoded, const DecodeLimits& limits);

}  // namespace embedserve::image
