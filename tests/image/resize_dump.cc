// Test tool for pil_compare.py: decodes an image with embedserve_image and writes the decoded,
// resized, CLIP-cropped (PPM; exact or with the fast JPEG decode) or CLIP-preprocessed (raw
// float32 CHW) result.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>

#include "server/image/clip_preprocess.h"
#include "server/image/decode.h"

namespace {

using embedserve::image::RgbImage;

bool WritePpm(const std::string& path, const RgbImage& img) {
  std::ofstream out(path, std::ios::binary);
  out << "P6\n" << img.width << " " << img.height << "\n255\n";
  out.write(reinterpret_cast<const char*>(img.pixels.data()),
            static_cast<std::streamsize>(img.pixels.size()));
  return static_cast<bool>(out);
}

int Usage() {
  std::cerr << "usage: resize_dump decode IN OUT.ppm\n"
               "       resize_dump resize IN WIDTH HEIGHT OUT.ppm\n"
               "       resize_dump clip IN SIZE OUT.ppm\n"
               "       resize_dump preprocess IN SIZE OUT.f32\n"
               "       resize_dump clipfast IN SIZE OUT.ppm  (JPEG: --image-decode fast)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return Usage();
  const std::string mode = argv[1];
  std::ifstream in(argv[2], std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  embedserve::image::DecodeLimits limits;
  int target = 0;
  if (mode == "clipfast" && argc == 5) {
    limits.jpeg = embedserve::image::JpegDecode::kFastDownscale;
    target = std::atoi(argv[3]);
  }
  auto decoded = embedserve::image::DecodeToRgb(bytes, limits, target);
  if (!decoded.ok()) {
    std::cerr << argv[2] << ": " << decoded.status() << "\n";
    return 1;
  }
  if (mode == "decode" && argc == 4) return WritePpm(argv[3], *decoded) ? 0 : 1;
  if (mode == "resize" && argc == 6) {
    const RgbImage out =
        embedserve::image::ResizeBicubic(*decoded, std::atoi(argv[3]), std::atoi(argv[4]));
    return WritePpm(argv[5], out) ? 0 : 1;
  }
  if ((mode == "clip" || mode == "clipfast") && argc == 5) {
    return WritePpm(argv[4], embedserve::image::ClipResizeCrop(*decoded, std::atoi(argv[3]))) ? 0
                                                                                              : 1;
  }
  if (mode == "preprocess" && argc == 5) {
    embedserve::image::ClipPreprocessConfig config;
    config.image_size = std::atoi(argv[3]);
    const std::vector<float> t = embedserve::image::ClipPreprocess(*decoded, config);
    std::ofstream out(argv[4], std::ios::binary);
    out.write(reinterpret_cast<const char*>(t.data()),
              static_cast<std::streamsize>(t.size() * sizeof(float)));
    return out ? 0 : 1;
  }
  return Usage();
}
