// Torch-free image decoding (JPEG, PNG, WebP, GIF, BMP) to 8-bit RGB, the way Pillow's
// Image.open(...).convert("RGB") sees the pixels, with limits checked before any pixel decode.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace embedserve::image {

// An allocator whose resize() leaves new bytes uninitialized: a decoder writes every byte of
// its output, so zero-filling a full-resolution buffer first (36 MB for a 12-megapixel photo)
// is a wasted pass over memory.
template <typename T>
struct UninitializedAllocator : std::allocator<T> {
  static_assert(std::is_trivial_v<T>);
  template <typename U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  UninitializedAllocator() = default;
  template <typename U>
  UninitializedAllocator(const UninitializedAllocator<U>&) {}
  template <typename U>
  void construct(U* p) {
    ::new (static_cast<void*>(p)) U;  // default-initialization: no write
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

// Pixel bytes; resize(n) does not zero them (see UninitializedAllocator), resize(n, v) does.
using PixelBuffer = std::vector<uint8_t, UninitializedAllocator<uint8_t>>;

// HWC, 3 channels, 8 bits: pixels.size() == width * height * 3.
struct RgbImage {
  int width = 0, height = 0;
  PixelBuffer pixels;
  // Set when JpegDecode::kFastDownscale decoded at 1/downscale of the encoded
  // source_width x source_height (width = ceil(source_width / downscale), likewise height).
  // Resizing then maps the source's extent (source_width / downscale pixels, the last one
  // partly covered) onto the output, and CLIP's geometry comes from the source size, as
  // Pillow's draft() + resize(box=...) would do. 1 and 0, 0: decoded at full size.
  int downscale = 1;
  int source_width = 0, source_height = 0;
};

// How a JPEG is decoded (--image-decode).
enum class JpegDecode {
  // Every pixel at full resolution, as Pillow decodes it (the default: OpenCLIP's pixels).
  kExact,
  // Opt-in: when the caller resizes the shorter side to `target_short_side` (DecodeToRgb) and
  // the JPEG is at least 4x that, libjpeg scales it down by 1/2, 1/4 or 1/8 in the DCT domain
  // while decoding, keeping the shorter side at least 2x the target (Pillow's thumbnail()
  // reducing_gap of 2), so the antialiased resize still sees >= 2 source pixels per output
  // pixel. Not bit-identical to Pillow; other formats are decoded exactly either way.
  kFastDownscale,
};

// Limits checked while decoding, and the decoding mode.
struct DecodeLimits {
  int64_t max_pixels = 64LL << 20;
  int64_t max_bytes = 32LL << 20;
  JpegDecode jpeg = JpegDecode::kExact;
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
// INVALID_ARGUMENT with a readable message. `target_short_side` (0: not known) is the size the
// caller will resize the shorter side to; only JpegDecode::kFastDownscale uses it, and the
// limits are always checked against the full (unscaled) size.
absl::StatusOr<RgbImage> DecodeToRgb(absl::string_view encoded, const DecodeLimits& limits,
                                     int target_short_side = 0);

// The DCT scale denominator (1, 2, 4 or 8) kFastDownscale picks for a width x height JPEG
// resized to `target_short_side`: the largest whose scaled shorter side (rounded up, as
// libjpeg rounds) stays >= 2 * target_short_side. 1 when target_short_side <= 0.
int JpegDownscaleDenominator(int width, int height, int target_short_side);

}  // namespace embedserve::image
