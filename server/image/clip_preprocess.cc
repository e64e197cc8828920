// OpenCLIP's resize / center crop / normalize on top of the Pillow-exact resize (resize.h).
#include "server/image/clip_preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace embedserve::image {

namespace {
// int(round(d / 2)) for d >= 0 with Python's round-half-to-even.
int HalfRoundEven(int d) {
  const int m = d / 2;
  if (d % 2 == 0) return m;
  return (m % 2 == 0) ? m : m + 1;
}
}  // namespace

ResizeCrop ClipGeometry(int width, int height, int image_size) {
  ResizeCrop g;
  if (width <= 0 || height <= 0 || image_size <= 0) return g;
  const int shorter = std::min(width, height), longer = std::max(width, height);
  // Python: int(size * long / short) -- true division in double, then truncation.
  const double ratio = static_cast<double>(static_cast<int64_t>(image_size) * longer) / shorter;
  const int new_long = static_cast<int>(std::min(ratio, 2147483647.0));
  if (width <= height) {
    g.resized_w = image_size;
    g.resized_h = new_long;
  } else {
    g.resized_w = new_long;
    g.resized_h = image_size;
  }
  g.crop_left = HalfRoundEven(g.resized_w - image_size);
  g.crop_top = HalfRoundEven(g.resized_h - image_size);
  return g;
}

RgbImage ClipResizeCrop(const RgbImage& image, int image_size) {
  // A DCT-downscaled JPEG is resized with the geometry of its full size (see RgbImage).
  const bool scaled = image.downscale > 1 && image.source_width > 0 && image.source_height > 0;
  const ResizeCrop g = ClipGeometry(scaled ? image.source_width : image.width,
                                    scaled ? image.source_height : image.height, image_size);
  if (g.resized_w <= 0) return RgbImage{};
  return ResizeBicubicCropped(image, g.resized_w, g.resized_h, g.crop_left, g.crop_top,
                              image_size, image_size);
}

std::vector<float> NormalizeToChw(const RgbImage& crop, const ClipPreprocessConfig& config) {
  const size_t plane = static_cast<size_t>(std::max(crop.width, 0)) * std::max(crop.height, 0);
  if (plane == 0 || crop.pixels.size() != plane * 3) return {};
  // torchvision: ToTensor divides by 255 in float32, Normalize subtracts and divides; one
  // table per channel, filled in one pass over the HWC pixels.
  float lut[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      lut[c][v] = (static_cast<float>(v) / 255.0f - config.mean[c]) / config.std[c];
    }
  }
  std::vector<float> out(plane * 3);
  float* r = out.data();
  float* g = r + plane;
  float* b = g + plane;
  const uint8_t* p = crop.pixels.data();
  for (size_t i = 0; i < plane; ++i, p += 3) {
    r[i] = lut[0][p[0]];
    g[i] = lut[1][p[1]];
    b[i] = lut[2][p[2]];
  }
  return out;
}

std::vector<float> ClipPreprocess(const RgbImage& image, const ClipPreprocessConfig& config) {
  const RgbImage crop = ClipResizeCrop(image, config.image_size);
  if (crop.pixels.empty()) return {};
  return NormalizeToChw(crop, config);
}

}  // namespace embedserve::image
