// GIF decoding with giflib: the first frame on its (grown, like Pillow) logical screen,
// mapped through its palette to RGB.

// Uncovered pixels are palette index 0 or the frame's transparent index; palette entries
// past the map are Pillow's default gray ramp.
#include <gif_lib.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/image/codecs.h"

namespace embedserve::image::internal {
namespace {

struct MemReader {
  const unsigned char* data;
  size_t size;
  size_t pos;
};

extern "C" int ReadGifBytes(GifFileType* gif, GifByteType* out, int n) {
  MemReader* r = static_cast<MemReader*>(gif->UserData);
  if (n <= 0) return 0;
  const size_t take = std::min(static_cast<size_t>(n), r->size - r->pos);
  std::memcpy(out, r->data + r->pos, take);
  r->pos += take;
  return static_cast<int>(take);
}

struct GifCloser {
  void operator()(GifFileType* g) const {
    int err = 0;
    DGifCloseFile(g, &err);
  }
};

absl::Status GifError(int code, absl::string_view what) {
  const char* msg = GifErrorString(code);
  return absl::InvalidArgumentError(
      absl::StrCat("corrupt GIF: ", what, ": ", msg ? msg : "unknown error"));
}

}  // namespace

absl::StatusOr<RgbImage> DecodeGif(absl::string_view data, const DecodeLimits& limits) {
  MemReader reader{reinterpret_cast<const unsigned char*>(data.data()), data.size(), 0};
  int err = 0;
  std::unique_ptr<GifFileType, GifCloser> gif(DGifOpen(&reader, ReadGifBytes, &err));
  if (!gif) return GifError(err, "header");

  int transparent = -1;
  while (true) {
    GifRecordType type;
    if (DGifGetRecordType(gif.get(), &type) == GIF_ERROR) {
      return GifError(gif->Error, "record");
    }
    if (type == TERMINATE_RECORD_TYPE) {
      return absl::InvalidArgumentError("corrupt GIF: no image frame");
    }
    if (type == EXTENSION_RECORD_TYPE) {
      int code = 0;
      GifByteType* ext = nullptr;
      if (DGifGetExtension(gif.get(), &code, &ext) == GIF_ERROR) {
        return GifError(gif->Error, "extension");
      }
      bool first = true;
      while (ext != nullptr) {
        if (first && code == GRAPHICS_EXT_FUNC_CODE && ext[0] >= 4 && (ext[1] & 1)) {
          transparent = ext[4];
        }
        first = false;
        if (DGifGetExtensionNext(gif.get(), &ext) == GIF_ERROR) {
          return GifError(gif->Error, "extension");
        }
      }
      continue;
    }
    if (type != IMAGE_DESC_RECORD_TYPE) continue;

    if (DGifGetImageDesc(gif.get()) == GIF_ERROR) return GifError(gif->Error, "image header");
    const GifImageDesc& desc = gif->Image;
    const int64_t left = desc.Left, top = desc.Top, fw = desc.Width, fh = desc.Height;
    if (fw <= 0 || fh <= 0) return absl::InvalidArgumentError("corrupt GIF: empty frame");
    const int64_t width = std::max<int64_t>(gif->SWidth, left + fw);
    const int64_t height = std::max<int64_t>(gif->SHeight, top + fh);
    if (absl::Status s = CheckDimensions(width, height, limits); !s.ok()) return s;

    // Palette: Pillow's default is a gray ramp, overwritten by the GIF's colors.
    uint8_t palette[256][3];
    for (int i = 0; i < 256; ++i) palette[i][0] = palette[i][1] = palette[i][2] = i;
    const ColorMapObject* cmap = desc.ColorMap ? desc.ColorMap : gif->SColorMap;
    if (cmap != nullptr && cmap->Colors != nullptr) {
      const int n = std::min(cmap->ColorCount, 256);
      for (int i = 0; i < n; ++i) {
        palette[i][0] = cmap->Colors[i].Red;
        palette[i][1] = cmap->Colors[i].Green;
        palette[i][2] = cmap->Colors[i].Blue;
      }
    }

    const uint8_t fill = static_cast<uint8_t>(transparent >= 0 ? transparent : 0);
    std::vector<uint8_t> index(static_cast<size_t>(width) * height, fill);
    std::vector<GifPixelType> line(static_cast<size_t>(fw));
    auto read_row = [&](int64_t y) -> absl::Status {
      if (DGifGetLine(gif.get(), line.data(), static_cast<int>(fw)) == GIF_ERROR) {
        return GifError(gif->Error, "image data");
      }
      std::memcpy(&index[static_cast<size_t>(top + y) * width + left], line.data(),
                  static_cast<size_t>(fw));
      return absl::OkStatus();
    };
    if (desc.Interlace) {
      static constexpr int kStart[4] = {0, 4, 2, 1}, kStep[4] = {8, 8, 4, 2};
      for (int pass = 0; pass < 4; ++pass) {
        for (int64_t y = kStart[pass]; y < fh; y += kStep[pass]) {
          if (absl::Status s = read_row(y); !s.ok()) return s;
        }
      }
    } else {
      for (int64_t y = 0; y < fh; ++y) {
        if (absl::Status s = read_row(y); !s.ok()) return s;
      }
    }

    RgbImage img;
    img.width = static_cast<int>(width);
    img.height = static_cast<int>(height);
    img.pixels.resize(index.size() * 3);
    for (size_t i = 0; i < index.size(); ++i) {
      std::memcpy(&img.pixels[3 * i], palette[index[i]], 3);
    }
    return img;
  }
}

}  // namespace embedserve::image::internal
