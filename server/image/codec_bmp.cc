// BMP decoding with our own small bounds-checked parser: 1/4/8-bit palette, 16/24/32-bit
// BI_RGB and BI_BITFIELDS, top-down or bottom-up, alpha dropped; RLE refused.

// Why not a library: none is on the base image, and stb_image would add a broad attack
// surface for a format this simple. Every offset is checked before it is read.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/image/codecs.h"

namespace embedserve::image::internal {
namespace {

absl::Status Bad(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("corrupt BMP: ", why));
}

struct Channel {
  uint32_t mask = 0;
  int shift = 0;
  int bits = 0;
};

Channel MakeChannel(uint32_t mask) {
  Channel c;
  c.mask = mask;
  if (mask == 0) return c;
  while (((mask >> c.shift) & 1u) == 0) ++c.shift;
  while (c.shift + c.bits < 32 && ((mask >> (c.shift + c.bits)) & 1u)) ++c.bits;
  return c;
}

inline uint8_t Extract(const Channel& c, uint32_t px) {
  if (c.mask == 0) return 0;
  const uint32_t v = (px & c.mask) >> c.shift;
  if (c.bits == 8) return static_cast<uint8_t>(v);
  if (c.bits > 8) return static_cast<uint8_t>(v >> (c.bits - 8));
  const uint32_t maxv = (1u << c.bits) - 1;
  return static_cast<uint8_t>((v * 255 + maxv / 2) / maxv);
}

}  // namespace

absl::StatusOr<RgbImage> DecodeBmp(absl::string_view data, const DecodeLimits& limits) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const size_t size = data.size();
  if (size < 14 + 12) return Bad("truncated header");
  const uint32_t pixel_offset = Le32(p + 10);
  const uint32_t hsize = Le32(p + 14);
  int64_t width = 0, height = 0;
  int bpp = 0;
  uint32_t compression = 0, colors_used = 0;
  bool top_down = false;
  int palette_entry = 4;
  if (hsize == 12) {  // OS/2 BITMAPCOREHEADER
    width = Le16(p + 18);
    height = Le16(p + 20);
    bpp = static_cast<int>(Le16(p + 24));
    palette_entry = 3;
  } else {
    if (hsize < 40 || hsize > 256) return Bad(absl::StrCat("header size ", hsize));
    if (size < 14 + static_cast<size_t>(hsize)) return Bad("truncated header");
    width = static_cast<int32_t>(Le32(p + 18));
    const int32_t h = static_cast<int32_t>(Le32(p + 22));
    if (h == INT32_MIN) return Bad("height");
    top_down = h < 0;
    height = top_down ? -static_cast<int64_t>(h) : h;
    if (Le16(p + 26) != 1) return Bad("planes != 1");
    bpp = static_cast<int>(Le16(p + 28));
    compression = Le32(p + 30);
    colors_used = Le32(p + 46);
  }
  if (absl::Status s = CheckDimensions(width, height, limits); !s.ok()) return s;

  // Masks: BI_BITFIELDS (3) / BI_ALPHABITFIELDS (6) keep them after the 40-byte header
  // (inside it for V4/V5 headers).
  uint32_t masks[3] = {0, 0, 0};
  size_t header_end = 14 + hsize;
  if (compression == 0) {
    if (bpp == 16) {
      masks[0] = 0x7C00; masks[1] = 0x03E0; masks[2] = 0x001F;
    } else if (bpp == 32) {
      masks[0] = 0xFF0000; masks[1] = 0xFF00; masks[2] = 0xFF;
    }
  } else if (compression == 3 || compression == 6) {
    if (bpp != 16 && bpp != 32) return Bad("bitfields need 16 or 32 bits per pixel");
    if (hsize == 40) {
      const size_t n = compression == 6 ? 4 : 3;
      if (size < 14 + 40 + 4 * n) return Bad("truncated bitfield masks");
      header_end += 4 * n;
    } else if (hsize < 52) {  // V2 (52 bytes) and later hold the masks inside the header
      return Bad(absl::StrCat("header size ", hsize, " has no room for bitfield masks"));
    }
    for (int i = 0; i < 3; ++i) masks[i] = Le32(p + 14 + 40 + 4 * i);
  } else if (compression == 1 || compression == 2) {
    return absl::InvalidArgumentError("unsupported BMP: RLE compression");
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unsupported BMP compression ", compression));
  }
  if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported BMP: ", bpp, " bits per pixel"));
  }

  // Palette (indexes past its end read as black).
  uint8_t palette[256][3] = {};
  if (bpp <= 8) {
    const uint32_t max_colors = 1u << bpp;
    uint32_t n = colors_used == 0 ? max_colors : std::min(colors_used, max_colors);
    const size_t available = header_end <= size ? (size - header_end) / palette_entry : 0;
    if (n > available) return Bad("truncated palette");
    for (uint32_t i = 0; i < n; ++i) {
      const unsigned char* e = p + header_end + static_cast<size_t>(i) * palette_entry;
      palette[i][0] = e[2];
      palette[i][1] = e[1];
      palette[i][2] = e[0];
    }
  }

  const size_t stride = ((static_cast<size_t>(width) * bpp + 31) / 32) * 4;
  if (pixel_offset > size || stride * static_cast<size_t>(height) > size - pixel_offset) {
    return Bad("truncated pixel data");
  }
  const Channel ch[3] = {MakeChannel(masks[0]), MakeChannel(masks[1]), MakeChannel(masks[2])};

  RgbImage img;
  img.width = static_cast<int>(width);
  img.height = static_cast<int>(height);
  img.pixels.resize(static_cast<size_t>(width) * height * 3);
  for (int64_t y = 0; y < height; ++y) {
    const int64_t src_row = top_down ? y : height - 1 - y;
    const unsigned char* row = p + pixel_offset + static_cast<size_t>(src_row) * stride;
    uint8_t* out = &img.pixels[static_cast<size_t>(y) * width * 3];
    for (int64_t x = 0; x < width; ++x, out += 3) {
      switch (bpp) {
        case 1:
        case 4:
        case 8: {
          const size_t bit = static_cast<size_t>(x) * bpp;
          const int shift = 8 - bpp - static_cast<int>(bit % 8);
          const int idx = (row[bit / 8] >> shift) & ((1 << bpp) - 1);
          std::memcpy(out, palette[idx], 3);
          break;
        }
        case 24:
          out[0] = row[3 * x + 2];
          out[1] = row[3 * x + 1];
          out[2] = row[3 * x + 0];
          break;
        case 16:
        case 32: {
          const uint32_t px = bpp == 16 ? Le16(row + 2 * x) : Le32(row + 4 * x);
          out[0] = Extract(ch[0], px);
          out[1] = Extract(ch[1], px);
          out[2] = Extract(ch[2], px);
          break;
        }
      }
    }
  }
  return img;
}

}  // namespace embedserve::image::internal
