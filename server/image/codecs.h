// Internal to server/image: the per-format decoders behind DecodeToRgb. Each one re-checks
// the size its codec reports against the limits before allocating the pixel buffer.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/image/decode.h"

namespace embedserve::image::internal {

// INVALID_ARGUMENT unless 0 < width, height and width * height <= limits.max_pixels.
absl::Status CheckDimensions(int64_t width, int64_t height, const DecodeLimits& limits);

// `target_short_side` as in DecodeToRgb (used by JpegDecode::kFastDownscale only).
absl::StatusOr<RgbImage> DecodeJpeg(absl::string_view data, const DecodeLimits& limits,
                                    int target_short_side);
absl::StatusOr<RgbImage> DecodePng(absl::string_view data, const DecodeLimits& limits);
absl::StatusOr<RgbImage> DecodeWebp(absl::string_view data, const DecodeLimits& limits);
absl::StatusOr<RgbImage> DecodeGif(absl::string_view data, const DecodeLimits& limits);
absl::StatusOr<RgbImage> DecodeBmp(absl::string_view data, const DecodeLimits& limits);

// Little/big-endian readers over a bounds-checked view.
inline uint32_t Le16(const unsigned char* p) { return p[0] | (p[1] << 8); }
inline uint32_t Le32(const unsigned char* p) {
  return p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
inline uint32_t Be16(const unsigned char* p) { return (p[0] << 8) | p[1]; }
inline uint32_t Be32(const unsigned char* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
}

}  // namespace embedserve::image::internal
