// Pillow-exact bicubic resizing of RGB images (what OpenCLIP's and SigLIP's processors both
// run). Torch-free.
#pragma once

#include "server/image/decode.h"

namespace embedserve::image {

// Pillow-exact Image.resize((out_width, out_height), Image.BICUBIC) of an RGB image:
// antialiased bicubic (a = -0.5), horizontal pass then vertical pass, each rounding to uint8
// with 22-bit fixed-point coefficients. Returns an empty image if a size is not positive
// or `in` is empty/inconsistent.
RgbImage ResizeBicubic(const RgbImage& in, int out_width, int out_height);

// The same resize, but only the window [left, left+crop_w) x [top, top+crop_h) of the
// out_width x out_height result is computed (bit-identical to resizing then cropping).
RgbImage ResizeBicubicCropped(const RgbImage& in, int out_width, int out_height, int left,
                              int top, int crop_w, int crop_h);

}  // namespace embedserve::image
