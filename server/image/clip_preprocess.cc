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
  const ResizeCrop g = ClipGeometry(image.width, image.height, image_size);
  if (g.resized_w <= 0) return RgbImage{};
  return ResizeBicubicCropped(image, g.resized_w, g.resized_h, g.crop_left, g.crop_top,
                              image_size, image_size);
}

std::vector<float> ClipPreprocess(const RgbImage& image, const ClipPreprocessConfig& config) {
  const RgbImage crop = ClipResizeCrop(image, config.image_size);
  if (crop.pixels.empty()) return {};
  const size_t plane = static_cast<size_t>(crop.width) * crop.height;
  std::vector<float> out(plane * 3);
  for (int c = 0; c < 3; ++c) {
    // torchvision: ToTensor divides by 255 in float32, Normalize subtracts and divides.
    float lut[256];
    for (int v = 0; v < 256; ++v) {
      lut[v] = (static_cast<float>(v) / 255.0f - config.mean[c]) / config.std[c];
    }
    float* dst = &out[plane * c];
    for (size_t i = 0; i < plane; ++i) dst[i] = lut[crop.pixels[i * 3 + c]];
  }
  return out;
}

}  // namespace embedserve::image
