// Pillow-exact bicubic resize: the algorithm of Pillow's libImaging/Resample.c, rewritten.
#include "server/image/resize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

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

// Pillow's precompute_coeffs for the source box [0, in_extent) of an axis of in_size pixels
// (in_extent == in_size but for a DCT-downscaled JPEG, whose last pixel is partly covered).
Coeffs PrecomputeCoeffs(int in_size, float in_extent, int out_size, int first, int count) {
  Coeffs c;
  // Pillow passes the box as float and subtracts in double; exact for these sizes.
  const double scale = (static_cast<double>(in_extent) - 0.0) / out_size;
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

// The sums below are Pillow's, reordered: integer additions of the same products, which
// cannot overflow (|sum| <= 255 * sum|k| < 2^31), so the results are bit-identical on every
// path. The reordering makes them vectorizable: the vertical pass is compiled for AVX2 and
// for the baseline (GCC target_clones), the horizontal pass has an AVX2 kernel beside the
// portable one; the CPU decides at run time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EMBEDSERVE_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define EMBEDSERVE_VECTOR_CLONES
#endif

// The horizontal pass runs kRows source rows at a time. Their pixels are interleaved column
// by column (block[x][row][channel], kLanes bytes used of kColumnBytes per column), so an
// output pixel's taps walk contiguous memory and each tap is one multiply-add over kLanes
// lanes for all kRows rows.
constexpr int kRows = 8;
constexpr int kLanes = kRows * 3;
constexpr int kColumnBytes = 32;  // kLanes + room for the 4-byte stores of the last row

// Outputs [first, first + count): block holds the interleaved source columns [col0, ...);
// out gets count x kLanes bytes (column-major).
void HorizontalBlockPortable(const uint8_t* block, int col0, const Coeffs& c, int first,
                             int count, uint8_t* out) {
  for (int xx = first; xx < first + count; ++xx) {
    const int xmin = c.bounds[2 * xx] - col0, n = c.bounds[2 * xx + 1];
    const int32_t* k = &c.taps[static_cast<size_t>(xx) * c.ksize];
    const uint8_t* p = block + static_cast<size_t>(xmin) * kColumnBytes;
    int32_t acc[kLanes];
    for (int l = 0; l < kLanes; ++l) acc[l] = 1 << (kPrecisionBits - 1);
    for (int x = 0; x < n; ++x, p += kColumnBytes) {
      const int32_t kx = k[x];
      for (int l = 0; l < kLanes; ++l) acc[l] += p[l] * kx;
    }
    for (int l = 0; l < kLanes; ++l) {
      out[static_cast<size_t>(xx - first) * kLanes + l] = Clip8(acc[l]);
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same sums with AVX2: three 8-lane int32 accumulators, one broadcast tap per column.
__attribute__((target("avx2"))) void HorizontalBlockAvx2(const uint8_t* block, int col0,
                                                         const Coeffs& c, int first, int count,
                                                         uint8_t* out) {
  const __m256i half = _mm256_set1_epi32(1 << (kPrecisionBits - 1));
  alignas(32) int32_t sums[kLanes];
  for (int xx = first; xx < first + count; ++xx) {
    const int xmin = c.bounds[2 * xx] - col0, n = c.bounds[2 * xx + 1];
    const int32_t* k = &c.taps[static_cast<size_t>(xx) * c.ksize];
    const uint8_t* p = block + static_cast<size_t>(xmin) * kColumnBytes;
    __m256i a0 = half, a1 = half, a2 = half;
    for (int x = 0; x < n; ++x, p += kColumnBytes) {
      const __m256i kx = _mm256_set1_epi32(k[x]);
      const __m256i p0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
      const __m256i p1 =
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8)));
      const __m256i p2 =
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 16)));
      a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(p0, kx));
      a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(p1, kx));
      a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(p2, kx));
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums), a0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 8), a1);
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 16), a2);
    for (int l = 0; l < kLanes; ++l) {
      out[static_cast<size_t>(xx - first) * kLanes + l] = Clip8(sums[l]);
    }
  }
}

bool HaveAvx2() {
  static const bool have = __builtin_cpu_supports("avx2");
  return have;
}
#endif

void HorizontalBlock(const uint8_t* block, int col0, const Coeffs& c, int first, int count,
                     uint8_t* out) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (HaveAvx2()) return HorizontalBlockAvx2(block, col0, c, first, count, out);
#endif
  HorizontalBlockPortable(block, col0, c, first, count, out);
}

// Output columns are processed in runs whose source columns span at most this many (or one
// output's window, if wider), so the interleaved block stays small (128 KiB) and cached
// whatever the image width.
constexpr int kMaxBlockColumns = 4096;

struct OutputRun {
  int first, count, col0, cols;
};

std::vector<OutputRun> OutputRuns(const Coeffs& c, int count) {
  std::vector<OutputRun> runs;
  const auto end = [&](int xx) { return c.bounds[2 * xx] + c.bounds[2 * xx + 1]; };
  for (int first = 0; first < count;) {
    const int col0 = c.bounds[2 * first];
    int last = first;  // inclusive
    while (last + 1 < count && end(last + 1) - col0 <= kMaxBlockColumns) ++last;
    runs.push_back(OutputRun{first, last - first + 1, col0, end(last) - col0});
    first = last + 1;
  }
  return runs;
}

// Horizontal pass of rows [row_first, row_first + rows) of `in` into `dst` (rows x count RGB).
void HorizontalPass(const RgbImage& in, int row_first, int rows, const Coeffs& c, int count,
                    uint8_t* dst) {
  const std::vector<OutputRun> runs = OutputRuns(c, count);
  int widest_run = 0, widest_span = 0;
  for (const OutputRun& run : runs) {
    widest_run = std::max(widest_run, run.count);
    widest_span = std::max(widest_span, run.cols);
  }
  std::vector<uint8_t> block(static_cast<size_t>(widest_span) * kColumnBytes);
  std::vector<uint8_t> out(static_cast<size_t>(widest_run) * kLanes);
  const size_t in_stride = static_cast<size_t>(in.width) * 3;
  const uint8_t* const in_end = in.pixels.data() + in.pixels.size();
  for (int y0 = 0; y0 < rows; y0 += kRows) {
    const int n = std::min(kRows, rows - y0);
    for (const OutputRun& run : runs) {
      const uint8_t* row[kRows];
      for (int r = 0; r < kRows; ++r) {
        // A short last block repeats its last row; those lanes are not written back.
        row[r] = &in.pixels[static_cast<size_t>(row_first + y0 + std::min(r, n - 1)) * in_stride +
                            static_cast<size_t>(run.col0) * 3];
      }
      uint8_t* to = block.data();
      for (int x = 0; x < run.cols; ++x, to += kColumnBytes) {
        const size_t at = static_cast<size_t>(x) * 3;
        for (int r = 0; r < kRows; ++r) {
          // 4-byte moves in ascending order: each one's 4th byte is overwritten by the next
          // row's (or lands in the column's padding); the image's last pixel has no 4th byte.
          if (row[r] + at + 4 <= in_end) {
            std::memcpy(to + r * 3, row[r] + at, 4);
          } else {
            std::memcpy(to + r * 3, row[r] + at, 3);
          }
        }
      }
      HorizontalBlock(block.data(), run.col0, c, run.first, run.count, out.data());
      for (int r = 0; r < n; ++r) {
        uint8_t* o = dst + (static_cast<size_t>(y0 + r) * count + run.first) * 3;
        const uint8_t* from = &out[static_cast<size_t>(r) * 3];
        for (int xx = 0; xx < run.count; ++xx, o += 3, from += kLanes) {
          o[0] = from[0];
          o[1] = from[1];
          o[2] = from[2];
        }
      }
    }
  }
}

// One output row of the vertical pass: `n` source rows (`stride` apart) weighted by `k`,
// accumulated a whole row at a time.
EMBEDSERVE_VECTOR_CLONES
void VerticalRow(const uint8_t* src, size_t stride, const int32_t* k, int n, int bytes,
                 int32_t* acc, uint8_t* dst) {
  for (int j = 0; j < bytes; ++j) acc[j] = 1 << (kPrecisionBits - 1);
  for (int y = 0; y < n; ++y) {
    const uint8_t* row = src + static_cast<size_t>(y) * stride;
    const int32_t ky = k[y];
    for (int j = 0; j < bytes; ++j) acc[j] += row[j] * ky;
  }
  for (int j = 0; j < bytes; ++j) dst[j] = Clip8(acc[j]);
}

// The source extent along an axis: the decoded size, or for a DCT-downscaled JPEG the
// encoded size / downscale (in (size - 1, size]).
float Extent(int size, int source_size, int downscale) {
  if (downscale <= 1 || source_size <= 0) return static_cast<float>(size);
  const double extent = static_cast<double>(source_size) / downscale;
  if (extent <= size - 1 || extent > size) return static_cast<float>(size);
  return static_cast<float>(extent);
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
  const float extent_w = Extent(in.width, in.source_width, in.downscale);
  const float extent_h = Extent(in.height, in.source_height, in.downscale);
  const bool need_h = out_width != in.width || extent_w != static_cast<float>(in.width);
  const bool need_v = out_height != in.height || extent_h != static_cast<float>(in.height);

  // Source rows needed: rows [top, top+crop_h) of the vertical pass (or the rows themselves).
  Coeffs vc;
  int row_first = top, row_last = top + crop_h;
  if (need_v) {
    vc = PrecomputeCoeffs(in.height, extent_h, out_height, top, crop_h);
    row_first = vc.bounds[0];
    row_last = vc.bounds[2 * (crop_h - 1)] + vc.bounds[2 * (crop_h - 1) + 1];
    for (int i = 0; i < crop_h; ++i) vc.bounds[2 * i] -= row_first;
  }
  const int rows = row_last - row_first;

  // Horizontal pass over the needed rows, columns [left, left+crop_w) only.
  PixelBuffer temp;  // every byte is written by the pass
  const uint8_t* src;  // rows x crop_w (or in.width when no horizontal pass) RGB
  size_t src_stride;
  int src_col0 = 0;
  if (need_h) {
    const Coeffs hc = PrecomputeCoeffs(in.width, extent_w, out_width, left, crop_w);
    temp.resize(static_cast<size_t>(rows) * crop_w * 3);
    HorizontalPass(in, row_first, rows, hc, crop_w, temp.data());
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
    std::vector<int32_t> acc(static_cast<size_t>(crop_w) * 3);
    for (int yy = 0; yy < crop_h; ++yy) {
      const int ymin = vc.bounds[2 * yy], ymax = vc.bounds[2 * yy + 1];
      VerticalRow(src + static_cast<size_t>(ymin) * src_stride + static_cast<size_t>(src_col0) * 3,
                  src_stride, &vc.taps[static_cast<size_t>(yy) * vc.ksize], ymax, crop_w * 3,
                  acc.data(), &out.pixels[static_cast<size_t>(yy) * crop_w * 3]);
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
