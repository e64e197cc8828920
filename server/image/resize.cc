// Pillow-exact bicubic resize: the algorithm of Pillow's libImaging/Resample.c, rewritten.
#include "server/image/resize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace embedserve::image {
namespace {

// Pillow keeps 8 bits for the result and 2 for overflow of negative lobes in an int32.
constexpr int kPrecisionBits = 32 - 8 - 2;

double BicubicFilter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
constexpr double kBicubicSupport = 2.0;

// Fixed-point filter taps for output positions [first, first + count) of an axis resized
// from in_size to out_size (full source box). Taps for position i are
// coeffs[i * ksize .. i * ksize + bounds[2i+1]), reading source pixels from bounds[2i].
struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;     // (min, count) per output position
  std::vector<int32_t> taps;   // ksize per output position
};

Coeffs PrecomputeCoeffs(int in_size, int out_size, int first, int count) {
  Coeffs c;
  // Pillow passes the box as float and subtracts in float; exact for these integer sizes.
  const double scale = static_cast<double>(static_cast<float>(in_size) - 0.0f) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = kBicubicSupport * filterscale;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(static_cast<size_t>(count) * 2);
  c.taps.assign(static_cast<size_t>(count) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int i = 0; i < count; ++i) {
    const int xx = first + i;
    const double center = 0.0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = BicubicFilter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x) {
      if (ww != 0.0) k[x] /= ww;
    }
    int32_t* taps = &c.taps[static_cast<size_t>(i) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double v = k[x] * (1 << kPrecisionBits);
      taps[x] = k[x] < 0 ? static_cast<int32_t>(-0.5 + v) : static_cast<int32_t>(0.5 + v);
    }
    c.bounds[2 * i] = xmin;
    c.bounds[2 * i + 1] = xmax;
  }
  return c;
}

inline uint8_t Clip8(int32_t v) {
  const int32_t s = v >> kPrecisionBits;  // arithmetic shift: floors negatives like Pillow
  return static_cast<uint8_t>(s < 0 ? 0 : (s > 255 ? 255 : s));
}

}  // namespace

RgbImage ResizeBicubicCropped(const RgbImage& in, int out_width, int out_height, int left,
                              int top, int crop_w, int crop_h) {
  RgbImage out;
  if (in.width <= 0 || in.height <= 0 || out_width <= 0 || out_height <= 0 || crop_w <= 0 ||
      crop_h <= 0 || left < 0 || top < 0 || left > out_width - crop_w ||
      top > out_height - crop_h ||
      in.pixels.size() != static_cast<size_t>(in.width) * in.height * 3) {
    return out;
  }
  const bool need_h = out_width != in.width;
  const bool need_v = out_height != in.height;

  // Source rows needed: rows [top, top+crop_h) of the vertical pass (or the rows themselves).
  Coeffs vc;
  int row_first = top, row_last = top + crop_h;
  if (need_v) {
    vc = PrecomputeCoeffs(in.height, out_height, top, crop_h);
    row_first = vc.bounds[0];
    row_last = vc.bounds[2 * (crop_h - 1)] + vc.bounds[2 * (crop_h - 1) + 1];
    for (int i = 0; i < crop_h; ++i) vc.bounds[2 * i] -= row_first;
  }
  const int rows = row_last - row_first;

  // Horizontal pass over the needed rows, columns [left, left+crop_w) only.
  std::vector<uint8_t> temp;
  const uint8_t* src;  // rows x crop_w (or in.width when no horizontal pass) RGB
  size_t src_stride;
  int src_col0 = 0;
  if (need_h) {
    const Coeffs hc = PrecomputeCoeffs(in.width, out_width, left, crop_w);
    temp.resize(static_cast<size_t>(rows) * crop_w * 3);
    for (int y = 0; y < rows; ++y) {
      const uint8_t* row = &in.pixels[static_cast<size_t>(y + row_first) * in.width * 3];
      uint8_t* dst = &temp[static_cast<size_t>(y) * crop_w * 3];
      for (int xx = 0; xx < crop_w; ++xx) {
        const int xmin = hc.bounds[2 * xx], xmax = hc.bounds[2 * xx + 1];
        const int32_t* k = &hc.taps[static_cast<size_t>(xx) * hc.ksize];
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        const uint8_t* p = row + static_cast<size_t>(xmin) * 3;
        for (int x = 0; x < xmax; ++x, p += 3) {
          s0 += p[0] * k[x];
          s1 += p[1] * k[x];
          s2 += p[2] * k[x];
        }
        dst[xx * 3 + 0] = Clip8(s0);
        dst[xx * 3 + 1] = Clip8(s1);
        dst[xx * 3 + 2] = Clip8(s2);
      }
    }
    src = temp.data();
    src_stride = static_cast<size_t>(crop_w) * 3;
  } else {
    src = &in.pixels[static_cast<size_t>(row_first) * in.width * 3];
    src_stride = static_cast<size_t>(in.width) * 3;
    src_col0 = left;
  }

  out.width = crop_w;
  out.height = crop_h;
  out.pixels.resize(static_cast<size_t>(crop_w) * crop_h * 3);
  if (need_v) {
    for (int yy = 0; yy < crop_h; ++yy) {
      const int ymin = vc.bounds[2 * yy], ymax = vc.bounds[2 * yy + 1];
      const int32_t* k = &vc.taps[static_cast<size_t>(yy) * vc.ksize];
      uint8_t* dst = &out.pixels[static_cast<size_t>(yy) * crop_w * 3];
      for (int xx = 0; xx < crop_w; ++xx) {
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        const uint8_t* p = src + static_cast<size_t>(ymin) * src_stride +
                           static_cast<size_t>(xx + src_col0) * 3;
        for (int y = 0; y < ymax; ++y, p += src_stride) {
          s0 += p[0] * k[y];
          s1 += p[1] * k[y];
          s2 += p[2] * k[y];
        }
        dst[xx * 3 + 0] = Clip8(s0);
        dst[xx * 3 + 1] = Clip8(s1);
        dst[xx * 3 + 2] = Clip8(s2);
      }
    }
  } else {
    for (int y = 0; y < crop_h; ++y) {
      std::copy_n(src + static_cast<size_t>(y) * src_stride + static_cast<size_t>(src_col0) * 3,
                  static_cast<size_t>(crop_w) * 3,
                  &out.pixels[static_cast<size_t>(y) * crop_w * 3]);
    }
  }
  return out;
}

RgbImage ResizeBicubic(const RgbImage& in, int out_width, int out_height) {
  return ResizeBicubicCropped(in, out_width, out_height, 0, 0, out_width, out_height);
}

}  // namespace embedserve::image
