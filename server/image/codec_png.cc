// PNG decoding with libpng: 1-16-bit gray, gray+alpha, palette, RGB, RGBA to 8-bit RGB
// (high byte of 16-bit samples, alpha and tRNS dropped, like Pillow's convert("RGB")).

// libpng errors longjmp: only C structs live in the setjmp frames PngStart / PngReadRows.
#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/image/codecs.h"

namespace embedserve::image::internal {
namespace {

struct PngState {
  png_structp png;
  png_infop info;
  const unsigned char* data;
  size_t size;
  size_t pos;
  char message[256];
  png_uint_32 width, height;
  int interlace_passes;
  size_t rowbytes;
};

extern "C" void OnPngError(png_structp png, png_const_charp msg) {
  PngState* st = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(st->message, sizeof(st->message), "%s", msg ? msg : "unknown error");
  png_longjmp(png, 1);
}

extern "C" void OnPngWarning(png_structp, png_const_charp) {}

extern "C" void OnPngRead(png_structp png, png_bytep out, png_size_t n) {
  PngState* st = static_cast<PngState*>(png_get_io_ptr(png));
  if (n > st->size - st->pos) png_error(png, "truncated data");
  std::memcpy(out, st->data + st->pos, n);
  st->pos += n;
}

// Reads the header and sets up the RGB8 transforms. No C++ objects in this frame.
bool PngStart(PngState* st) {
  if (setjmp(png_jmpbuf(st->png))) return false;
  png_set_read_fn(st->png, st, OnPngRead);
  png_set_user_limits(st->png, 0x7FFFFFFF, 0x7FFFFFFF);
  // Ancillary chunks (text, ICC, ...) are not needed; bound what they may allocate.
  png_set_chunk_cache_max(st->png, 1000);
  png_set_chunk_malloc_max(st->png, 8u << 20);
  png_read_info(st->png, st->info);
  int bit_depth = 0, color_type = 0, interlace = 0;
  png_get_IHDR(st->png, st->info, &st->width, &st->height, &bit_depth, &color_type, &interlace,
               nullptr, nullptr);
  if (bit_depth == 16) png_set_strip_16(st->png);  // high byte, like Pillow's ";16B" unpack
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(st->png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(st->png);
  if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) {
    png_set_gray_to_rgb(st->png);
  }
  // Palette expansion also turns tRNS into alpha; drop it with any real alpha channel.
  if ((color_type & PNG_COLOR_MASK_ALPHA) || png_get_valid(st->png, st->info, PNG_INFO_tRNS)) {
    png_set_strip_alpha(st->png);
  }
  st->interlace_passes = png_set_interlace_handling(st->png);
  png_read_update_info(st->png, st->info);
  st->rowbytes = png_get_rowbytes(st->png, st->info);
  return true;
}

bool PngReadRows(PngState* st, unsigned char* out, size_t stride) {
  if (setjmp(png_jmpbuf(st->png))) return false;
  for (int pass = 0; pass < st->interlace_passes; ++pass) {
    for (png_uint_32 y = 0; y < st->height; ++y) {
      png_read_row(st->png, out + static_cast<size_t>(y) * stride, nullptr);
    }
  }
  // Like Pillow, chunks after the image data are not needed (nor checked).
  return true;
}

struct PngStateDeleter {
  void operator()(PngState* st) const {
    if (st->png) png_destroy_read_struct(&st->png, st->info ? &st->info : nullptr, nullptr);
    delete st;
  }
};

}  // namespace

absl::StatusOr<RgbImage> DecodePng(absl::string_view data, const DecodeLimits& limits) {
  std::unique_ptr<PngState, PngStateDeleter> st(new PngState());
  st->data = reinterpret_cast<const unsigned char*>(data.data());
  st->size = data.size();
  st->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, st.get(), OnPngError, OnPngWarning);
  if (!st->png) return absl::InternalError("png_create_read_struct failed");
  st->info = png_create_info_struct(st->png);
  if (!st->info) return absl::InternalError("png_create_info_struct failed");
  const auto fail = [&]() {
    return absl::InvalidArgumentError(absl::StrCat("corrupt PNG: ", st->message));
  };
  if (!PngStart(st.get())) return fail();
  if (absl::Status s = CheckDimensions(st->width, st->height, limits); !s.ok()) return s;
  const size_t stride = static_cast<size_t>(st->width) * 3;
  if (st->rowbytes != stride) {
    return absl::InternalError(
        absl::StrCat("PNG transforms gave ", st->rowbytes, " bytes per row, expected ", stride));
  }
  RgbImage img;
  img.width = static_cast<int>(st->width);
  img.height = static_cast<int>(st->height);
  img.pixels.resize(stride * st->height);
  if (!PngReadRows(st.get(), img.pixels.data(), stride)) return fail();
  return img;
}

}  // namespace embedserve::image::internal
