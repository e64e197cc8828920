// JPEG decoding with libjpeg(-turbo): gray, YCbCr/RGB and CMYK/YCCK (Adobe-inverted, the
// way Pillow reads it) to RGB, at full size or (opt-in) scaled down in the DCT domain.

// libjpeg errors longjmp, so only plain C structs live in the frames that call setjmp
// (JpegStart / JpegDecompressStart / JpegReadRows); C++ allocates between them.
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

// jpeglib.h needs size_t and FILE declared first.
#include <jpeglib.h>
#include <jerror.h>

#include "absl/strings/str_cat.h"
#include "server/image/codecs.h"

namespace embedserve::image::internal {
namespace {

constexpr int kMaxScans = 1000;  // progressive JPEGs with endless scans burn CPU

struct JpegState {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr err;
  jpeg_progress_mgr progress;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool created;
};

extern "C" void OnJpegError(j_common_ptr cinfo) {
  JpegState* st = static_cast<JpegState*>(cinfo->client_data);
  (*cinfo->err->format_message)(cinfo, st->message);
  std::longjmp(st->jump, 1);
}

extern "C" void OnJpegMessage(j_common_ptr cinfo, int level) {
  // Warnings (level -1) are tolerated like Pillow does, except running out of data:
  // Pillow refuses truncated files ("image file is truncated").
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    JpegState* st = static_cast<JpegState*>(cinfo->client_data);
    (*cinfo->err->format_message)(cinfo, st->message);
    std::longjmp(st->jump, 1);
  }
}

extern "C" void OnJpegProgress(j_common_ptr cinfo) {
  if (cinfo->is_decompressor) {
    j_decompress_ptr d = reinterpret_cast<j_decompress_ptr>(cinfo);
    if (d->input_scan_number > kMaxScans) {
      JpegState* st = static_cast<JpegState*>(cinfo->client_data);
      std::snprintf(st->message, sizeof(st->message), "more than %d progressive scans",
                    kMaxScans);
      std::longjmp(st->jump, 1);
    }
  }
}

// Reads the header and starts decompression. Returns false with st->message on error (the
// decompressor is then destroyed). No C++ objects with destructors in this frame.
bool JpegStart(JpegState* st, const unsigned char* data, size_t size) {
  st->cinfo.err = jpeg_std_error(&st->err);
  st->err.error_exit = OnJpegError;
  st->err.emit_message = OnJpegMessage;
  st->cinfo.client_data = st;
  st->created = false;
  if (setjmp(st->jump)) {
    if (st->created) jpeg_destroy_decompress(&st->cinfo);
    st->created = false;
    return false;
  }
  jpeg_create_decompress(&st->cinfo);
  st->created = true;
  st->progress.progress_monitor = OnJpegProgress;
  st->cinfo.progress = &st->progress;
  // No backing store: cap what libjpeg may allocate (coefficient buffers of progressive
  // images are the big ones; the pixel limit bounds them well below this).
  st->cinfo.mem->max_memory_to_use = 2048L * 1024 * 1024;
  jpeg_mem_src(&st->cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&st->cinfo, TRUE);
  switch (st->cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE: st->cinfo.out_color_space = JCS_GRAYSCALE; break;
    case JCS_CMYK:
    case JCS_YCCK: st->cinfo.out_color_space = JCS_CMYK; break;
    default: st->cinfo.out_color_space = JCS_RGB; break;
  }
  return true;
}

bool JpegDecompressStart(JpegState* st) {
  if (setjmp(st->jump)) {
    jpeg_destroy_decompress(&st->cinfo);
    st->created = false;
    return false;
  }
  jpeg_start_decompress(&st->cinfo);
  return true;
}

// Converts `n` pixels of one decoded row (1 or 4 components) to RGB.
using RowConverter = void (*)(const unsigned char* in, unsigned char* out, size_t n);

// Reads every scanline into `out` (output_height rows of `stride` bytes) and finishes. With a
// `convert`, each row is decoded into `scratch` (one row of output_components bytes per pixel)
// and converted into `out` from there, so no second full-size buffer exists.
bool JpegReadRows(JpegState* st, unsigned char* out, size_t stride, unsigned char* scratch,
                  RowConverter convert) {
  if (setjmp(st->jump)) {
    jpeg_destroy_decompress(&st->cinfo);
    st->created = false;
    return false;
  }
  while (st->cinfo.output_scanline < st->cinfo.output_height) {
    unsigned char* dst = out + static_cast<size_t>(st->cinfo.output_scanline) * stride;
    JSAMPROW row = convert != nullptr ? scratch : dst;
    jpeg_read_scanlines(&st->cinfo, &row, 1);
    if (convert != nullptr) convert(scratch, dst, st->cinfo.output_width);
  }
  jpeg_finish_decompress(&st->cinfo);
  jpeg_destroy_decompress(&st->cinfo);
  st->created = false;
  return true;
}

struct JpegStateDeleter {
  void operator()(JpegState* st) const {
    if (st->created) jpeg_destroy_decompress(&st->cinfo);
    delete st;
  }
};

// Pillow's MULDIV255: a * b / 255 rounded, in integers.
inline int MulDiv255(int a, int b) {
  const int t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

void GrayToRgb(const unsigned char* in, unsigned char* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = in[i];
}

// Pillow reads 4-component JPEGs as "CMYK;I" (Adobe's inverted CMYK) and converts
// CMYK -> RGB as nk - c * nk / 255 with nk = 255 - k.
void InvertedCmykToRgb(const unsigned char* in, unsigned char* out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const unsigned char* q = &in[4 * i];
    const int c = 255 - q[0], m = 255 - q[1], y = 255 - q[2], nk = q[3];  // nk = 255 - k
    out[3 * i + 0] = static_cast<uint8_t>(nk - MulDiv255(c, nk));
    out[3 * i + 1] = static_cast<uint8_t>(nk - MulDiv255(m, nk));
    out[3 * i + 2] = static_cast<uint8_t>(nk - MulDiv255(y, nk));
  }
}

}  // namespace

absl::StatusOr<RgbImage> DecodeJpeg(absl::string_view data, const DecodeLimits& limits,
                                    int target_short_side) {
  std::unique_ptr<JpegState, JpegStateDeleter> st(new JpegState());
  const auto fail = [&]() {
    return absl::InvalidArgumentError(absl::StrCat("corrupt JPEG: ", st->message));
  };
  if (!JpegStart(st.get(), reinterpret_cast<const unsigned char*>(data.data()), data.size())) {
    return fail();
  }
  if (absl::Status s = CheckDimensions(st->cinfo.image_width, st->cinfo.image_height, limits);
      !s.ok()) {
    return s;
  }
  if (limits.jpeg == JpegDecode::kFastDownscale) {
    // Scaled IDCT: libjpeg computes output_width = ceil(image_width / denom), and likewise
    // for the height, in jpeg_start_decompress.
    st->cinfo.scale_num = 1;
    st->cinfo.scale_denom = static_cast<unsigned int>(JpegDownscaleDenominator(
        static_cast<int>(st->cinfo.image_width), static_cast<int>(st->cinfo.image_height),
        target_short_side));
  }
  if (!JpegDecompressStart(st.get())) return fail();
  const int w = static_cast<int>(st->cinfo.output_width);
  const int h = static_cast<int>(st->cinfo.output_height);
  const int comps = st->cinfo.output_components;
  if (absl::Status s = CheckDimensions(w, h, limits); !s.ok()) return s;
  if (comps != 1 && comps != 3 && comps != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported JPEG with ", comps, " output components"));
  }
  RgbImage img;
  img.width = w;
  img.height = h;
  if (st->cinfo.scale_denom > 1) {
    img.downscale = static_cast<int>(st->cinfo.scale_denom);
    img.source_width = static_cast<int>(st->cinfo.image_width);
    img.source_height = static_cast<int>(st->cinfo.image_height);
  }
  img.pixels.resize(static_cast<size_t>(w) * h * 3);
  std::vector<unsigned char> scratch;
  RowConverter convert = nullptr;
  if (comps != 3) {
    scratch.resize(static_cast<size_t>(w) * comps);
    convert = comps == 1 ? &GrayToRgb : &InvertedCmykToRgb;
  }
  if (!JpegReadRows(st.get(), img.pixels.data(), static_cast<size_t>(w) * 3, scratch.data(),
                    convert)) {
    return fail();
  }
  return img;
}

}  // namespace embedserve::image::internal
