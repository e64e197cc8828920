// OpenCLIP's image preprocessing, matching Pillow/torchvision bit for bit: Pillow's bicubic
// resize (shortest side), torchvision's center crop, /255 and mean/std normalization.
#pragma once

#include <array>
#include <vector>

#include "server/image/decode.h"
#include "server/image/resize.h"

namespace embedserve::image {

struct ClipPreprocessConfig {
  int image_size = 224;
  std::array<float, 3> mean{0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> std{0.26862954f, 0.26130258f, 0.27577711f};
};

// torchvision Resize(image_size) + CenterCrop(image_size) geometry: the short side becomes
// image_size, the long side int(image_size * long / short); crop offsets
// int(round((resized - image_size) / 2)) with Python's round-half-to-even.
struct ResizeCrop {
  int resized_w = 0, resized_h = 0, crop_left = 0, crop_top = 0;
};
ResizeCrop ClipGeometry(int width, int height, int image_size);

// Resize + center crop as uint8 RGB (image_size x image_size), before normalization.
RgbImage ClipResizeCrop(const RgbImage& image, int image_size);

// torchvision ToTensor + Normalize of a uint8 RGB image: float32 CHW, (v / 255 - mean) / std.
std::vector<float> NormalizeToChw(const RgbImage& image, const ClipPreprocessConfig& config);

// Resize shortest side + center crop + normalize: float32 CHW, 3 x size x size.
// Returns an empty vector for an empty image or a non-positive image_size.
std::vector<float> ClipPreprocess(const RgbImage& image, const ClipPreprocessConfig& config);

}  // namespace embedserve::image
