// Format sniffing, header-only size reading and the limit checks of DecodeToRgb; the
// per-format decoders live in codec_*.cc.
#include "server/image/decode.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/image/codecs.h"
#include "webp/decode.h"

namespace embedserve::image {
namespace internal {

absl::Status CheckDimensions(int64_t width, int64_t height, const DecodeLimits& limits) {
  if (width <= 0 || height <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("image has an empty size ", width, "x", height));
  }
  const int64_t pixels = width * height;  // both < 2^32: no overflow
  if (pixels > limits.max_pixels) {
    return absl::InvalidArgumentError(absl::StrCat("image is ", width, "x", height, " = ",
                                                   pixels, " pixels, over the limit of ",
                                                   limits.max_pixels));
  }
  return absl::OkStatus();
}

}  // namespace internal

namespace {
using internal::Be16;
using internal::Be32;
using internal::Le16;
using internal::Le32;

const unsigned char* U(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

absl::Status Truncated(absl::string_view format) {
  return absl::InvalidArgumentError(absl::StrCat("truncated ", format, " header"));
}

enum class Format { kUnknown, kJpeg, kPng, kWebp, kGif, kBmp };

Format Sniff(absl::string_view d) {
  const unsigned char* p = U(d);
  if (d.size() >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return Format::kJpeg;
  if (d.size() >= 8 && d.substr(0, 8) == absl::string_view("\x89PNG\r\n\x1a\n", 8)) {
    return Format::kPng;
  }
  if (d.size() >= 12 && d.substr(0, 4) == "RIFF" && d.substr(8, 4) == "WEBP") {
    return Format::kWebp;
  }
  if (d.size() >= 6 && (d.substr(0, 6) == "GIF87a" || d.substr(0, 6) == "GIF89a")) {
    return Format::kGif;
  }
  if (d.size() >= 2 && d.substr(0, 2) == "BM") return Format::kBmp;
  return Format::kUnknown;
}

absl::Status Unsupported(absl::string_view d) {
  if (d.empty()) return absl::InvalidArgumentError("empty image (0 bytes)");
  std::string hex;
  for (size_t i = 0; i < std::min<size_t>(d.size(), 8); ++i) {
    absl::StrAppendFormat(&hex, "%02x", static_cast<unsigned char>(d[i]));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "not a supported image (JPEG, PNG, WebP, GIF, BMP); first bytes 0x", hex));
}

absl::StatusOr<ImageHeader> JpegHeader(absl::string_view d) {
  const unsigned char* p = U(d);
  size_t i = 2;  // after SOI
  while (true) {
    // Markers: one or more 0xFF then the code.
    if (i >= d.size()) return Truncated("JPEG");
    if (p[i] != 0xFF) {
      return absl::InvalidArgumentError("corrupt JPEG: expected a marker before the frame header");
    }
    while (i < d.size() && p[i] == 0xFF) ++i;
    if (i >= d.size()) return Truncated("JPEG");
    const unsigned char m = p[i++];
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;  // no payload
    if (m == 0xD9 || m == 0xDA) {
      return absl::InvalidArgumentError("corrupt JPEG: no frame header before the scan data");
    }
    if (i + 2 > d.size()) return Truncated("JPEG");
    const size_t len = Be16(p + i);
    if (len < 2) return absl::InvalidArgumentError("corrupt JPEG: bad marker length");
    const bool sof = (m >= 0xC0 && m <= 0xCF) && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof) {
      if (i + 7 > d.size() || len < 7) return Truncated("JPEG");
      ImageHeader h;
      h.format = "jpeg";
      h.height = static_cast<int>(Be16(p + i + 3));
      h.width = static_cast<int>(Be16(p + i + 5));
      return h;
    }
    i += len;
  }
}

absl::StatusOr<ImageHeader> PngHeader(absl::string_view d) {
  if (d.size() < 8 + 8 + 13) return Truncated("PNG");
  const unsigned char* p = U(d);
  if (Be32(p + 8) != 13 || d.substr(12, 4) != "IHDR") {
    return absl::InvalidArgumentError("corrupt PNG: the first chunk is not IHDR");
  }
  const uint32_t w = Be32(p + 16), h = Be32(p + 20);
  if (w > 0x7FFFFFFFu || h > 0x7FFFFFFFu) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt PNG: size ", w, "x", h));
  }
  ImageHeader hd;
  hd.format = "png";
  hd.width = static_cast<int>(w);
  hd.height = static_cast<int>(h);
  return hd;
}

absl::StatusOr<ImageHeader> WebpHeader(absl::string_view d) {
  WebPBitstreamFeatures f;
  const VP8StatusCode rc = WebPGetFeatures(U(d), d.size(), &f);
  if (rc == VP8_STATUS_NOT_ENOUGH_DATA) return Truncated("WebP");
  if (rc != VP8_STATUS_OK) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt WebP header (status ", rc, ")"));
  }
  ImageHeader h;
  h.format = "webp";
  h.width = f.width;
  h.height = f.height;
  return h;
}

absl::StatusOr<ImageHeader> GifHeader(absl::string_view d) {
  if (d.size() < 10) return Truncated("GIF");
  ImageHeader h;
  h.format = "gif";
  h.width = static_cast<int>(Le16(U(d) + 6));
  h.height = static_cast<int>(Le16(U(d) + 8));
  return h;
}

absl::StatusOr<ImageHeader> BmpHeader(absl::string_view d) {
  if (d.size() < 14 + 4) return Truncated("BMP");
  const unsigned char* p = U(d);
  const uint32_t hsize = Le32(p + 14);
  ImageHeader h;
  h.format = "bmp";
  if (hsize == 12) {
    if (d.size() < 14 + 12) return Truncated("BMP");
    h.width = static_cast<int>(Le16(p + 18));
    h.height = static_cast<int>(Le16(p + 20));
    return h;
  }
  if (hsize < 40 || hsize > 256) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported BMP header size ", hsize));
  }
  if (d.size() < 14 + 40) return Truncated("BMP");
  const int32_t w = static_cast<int32_t>(Le32(p + 18));
  const int32_t hh = static_cast<int32_t>(Le32(p + 22));
  if (w <= 0 || hh == INT32_MIN) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt BMP: size ", w, "x", hh));
  }
  h.width = w;
  h.height = hh < 0 ? -hh : hh;
  return h;
}

}  // namespace

absl::StatusOr<ImageHeader> ReadImageHeader(absl::string_view encoded) {
  switch (Sniff(encoded)) {
    case Format::kJpeg: return JpegHeader(encoded);
    case Format::kPng: return PngHeader(encoded);
    case Format::kWebp: return WebpHeader(encoded);
    case Format::kGif: return GifHeader(encoded);
    case Format::kBmp: return BmpHeader(encoded);
    case Format::kUnknown: break;
  }
  return Unsupported(encoded);
}

int JpegDownscaleDenominator(int width, int height, int target_short_side) {
  if (target_short_side <= 0 || width <= 0 || height <= 0) return 1;
  const int64_t shorter = std::min(width, height);
  const int64_t need = 2 * static_cast<int64_t>(target_short_side);
  for (const int denom : {8, 4, 2}) {
    if ((shorter + denom - 1) / denom >= need) return denom;
  }
  return 1;
}

absl::StatusOr<RgbImage> DecodeToRgb(absl::string_view encoded, const DecodeLimits& limits,
                                     int target_short_side) {
  if (static_cast<int64_t>(encoded.size()) > limits.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image is ", encoded.size(), " bytes, over the limit of ", limits.max_bytes));
  }
  absl::StatusOr<ImageHeader> header = ReadImageHeader(encoded);
  if (!header.ok()) return header.status();
  if (absl::Status s = internal::CheckDimensions(header->width, header->height, limits);
      !s.ok()) {
    return s;
  }
  const Format f = Sniff(encoded);
  switch (f) {
    case Format::kJpeg: return internal::DecodeJpeg(encoded, limits, target_short_side);
    case Format::kPng: return internal::DecodePng(encoded, limits);
    case Format::kWebp: return internal::DecodeWebp(encoded, limits);
    case Format::kGif: return internal::DecodeGif(encoded, limits);
    case Format::kBmp: return internal::DecodeBmp(encoded, limits);
    case Format::kUnknown: break;
  }
  return Unsupported(encoded);
}

}  // namespace embedserve::image
