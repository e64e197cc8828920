// WebP decoding with libwebp: still images (lossy, lossless, with alpha dropped) and the first
// composited frame of animated ones (via WebPAnimDecoder, as Pillow reads them).
#include <webp/decode.h>
#include <webp/demux.h>

#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "server/image/codecs.h"

namespace embedserve::image::internal {
namespace {

struct AnimDecoderDeleter {
  void operator()(WebPAnimDecoder* d) const { WebPAnimDecoderDelete(d); }
};

}  // namespace

absl::StatusOr<RgbImage> DecodeWebp(absl::string_view data, const DecodeLimits& limits) {
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(data.data());
  WebPBitstreamFeatures f;
  const VP8StatusCode rc = WebPGetFeatures(bytes, data.size(), &f);
  if (rc != VP8_STATUS_OK) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt WebP (status ", rc, ")"));
  }
  if (absl::Status s = CheckDimensions(f.width, f.height, limits); !s.ok()) return s;
  RgbImage img;
  img.width = f.width;
  img.height = f.height;
  if (!f.has_animation) {
    const size_t stride = static_cast<size_t>(f.width) * 3;
    img.pixels.resize(stride * f.height);
    if (WebPDecodeRGBInto(bytes, data.size(), img.pixels.data(), img.pixels.size(),
                          static_cast<int>(stride)) == nullptr) {
      return absl::InvalidArgumentError("corrupt WebP: the image data does not decode");
    }
    return img;
  }
  WebPData wd{bytes, data.size()};
  WebPAnimDecoderOptions opts;
  if (!WebPAnimDecoderOptionsInit(&opts)) return absl::InternalError("libwebp version mismatch");
  opts.color_mode = MODE_RGBA;
  opts.use_threads = 0;
  std::unique_ptr<WebPAnimDecoder, AnimDecoderDeleter> dec(WebPAnimDecoderNew(&wd, &opts));
  if (!dec) return absl::InvalidArgumentError("corrupt animated WebP: cannot parse its frames");
  WebPAnimInfo info;
  if (!WebPAnimDecoderGetInfo(dec.get(), &info)) {
    return absl::InvalidArgumentError("corrupt animated WebP: no animation info");
  }
  if (static_cast<int>(info.canvas_width) != f.width ||
      static_cast<int>(info.canvas_height) != f.height) {
    return absl::InvalidArgumentError("corrupt animated WebP: inconsistent canvas size");
  }
  uint8_t* rgba = nullptr;
  int timestamp = 0;
  if (!WebPAnimDecoderHasMoreFrames(dec.get()) ||
      !WebPAnimDecoderGetNext(dec.get(), &rgba, &timestamp) || rgba == nullptr) {
    return absl::InvalidArgumentError("corrupt animated WebP: the first frame does not decode");
  }
  const size_t n = static_cast<size_t>(f.width) * f.height;
  img.pixels.resize(n * 3);
  for (size_t i = 0; i < n; ++i) std::memcpy(&img.pixels[3 * i], rgba + 4 * i, 3);
  return img;
}

}  // namespace embedserve::image::internal
