// Catch2 tests of server/image: every format decodes to the expected RGB, limits refuse bombs
// before decoding, corrupt input fails cleanly, and the CLIP geometry/normalization by hand.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "server/image/clip_preprocess.h"
#include "server/image/decode.h"

namespace {

using embedserve::image::ClipGeometry;
using embedserve::image::ClipPreprocess;
using embedserve::image::ClipPreprocessConfig;
using embedserve::image::ClipResizeCrop;
using embedserve::image::DecodeLimits;
using embedserve::image::DecodeToRgb;
using embedserve::image::JpegDecode;
using embedserve::image::JpegDownscaleDenominator;
using embedserve::image::ReadImageHeader;
using embedserve::image::ResizeBicubic;
using embedserve::image::RgbImage;

const std::string kData = EMBEDSERVE_TEST_DATA;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string Fixture(const std::string& name) { return ReadFile(kData + "/images/" + name); }
std::string Reference(const std::string& name) {
  return ReadFile(kData + "/openclip-reference/images/" + name);
}

RgbImage MustDecode(const std::string& bytes) {
  auto img = DecodeToRgb(bytes, DecodeLimits{});
  INFO(img.status().ToString());
  REQUIRE(img.ok());
  REQUIRE(img->pixels.size() == static_cast<size_t>(img->width) * img->height * 3);
  return *std::move(img);
}

void RequireSamePixels(const RgbImage& a, const RgbImage& b) {
  REQUIRE(a.width == b.width);
  REQUIRE(a.height == b.height);
  size_t diffs = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) diffs += a.pixels[i] != b.pixels[i];
  REQUIRE(diffs == 0);
}

uint32_t Crc32(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char ch : s) {
    c ^= ch;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

std::string Be32(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string PngChunk(const std::string& type, const std::string& data) {
  return Be32(static_cast<uint32_t>(data.size())) + type + data + Be32(Crc32(type + data));
}

// A PNG that claims width x height RGB pixels but carries only a few bytes of data.
std::string BombPng(uint32_t width, uint32_t height) {
  std::string ihdr = Be32(width) + Be32(height) + std::string("\x08\x02\x00\x00\x00", 5);
  // zlib stream of a few zero bytes (stored block), far short of the claimed size.
  const std::string idat("\x78\x01\x01\x04\x00\xfb\xff\x00\x00\x00\x00", 11);
  return std::string("\x89PNG\r\n\x1a\n", 8) + PngChunk("IHDR", ihdr) + PngChunk("IDAT", idat) +
         PngChunk("IEND", "");
}

const std::vector<std::string> kAllFixtures = {
    "base.png", "rgb16.png", "interlaced.png", "rgba.png", "palette.png", "palette_trns.png", "lossless.webp",
    "rgb24.bmp", "rgba32.bmp", "pal8.bmp", "palette.gif", "interlaced.gif", "animated.gif",
    "animated.webp", "gray.png", "gray16.png", "gray2.png", "gray_alpha.png", "cmyk.jpg",
    "gray.jpg", "progressive.jpg", "small_frame.gif"};

}  // namespace

TEST_CASE("every OpenCLIP reference image decodes with its size") {
  struct Ref {
    const char* name;
    const char* format;
    int w, h;
  };
  const Ref refs[] = {
      {"exact_224.png", "png", 224, 224},          {"gray_640x480.png", "png", 640, 480},
      {"landscape_640x480.png", "png", 640, 480},  {"odd_1999x1001.jpg", "jpeg", 1999, 1001},
      {"photo_800x600.jpg", "jpeg", 800, 600},     {"portrait_300x900.png", "png", 300, 900},
      {"rgba_opaque_320x240.png", "png", 320, 240}, {"small_50x40.png", "png", 50, 40},
      {"webp_512x384.webp", "webp", 512, 384},
  };
  for (const Ref& r : refs) {
    INFO(r.name);
    const std::string bytes = ReadFile(kData + "/openclip-reference/images/" + r.name);
    auto header = ReadImageHeader(bytes);
    REQUIRE(header.ok());
    CHECK(header->format == r.format);
    CHECK(header->width == r.w);
    CHECK(header->height == r.h);
    const RgbImage img = MustDecode(bytes);
    CHECK(img.width == r.w);
    CHECK(img.height == r.h);
  }
}

TEST_CASE("lossless encodings of the same pixels decode to the same RGB") {
  const RgbImage base = MustDecode(Fixture("base.png"));
  REQUIRE(base.width == 23);
  REQUIRE(base.height == 17);
  for (const char* name : {"rgb16.png", "interlaced.png", "rgba.png", "palette.png", "palette_trns.png",
                           "lossless.webp", "rgb24.bmp", "rgba32.bmp", "pal8.bmp", "palette.gif",
                           "interlaced.gif", "animated.gif", "animated.webp"}) {
    INFO(name);
    RequireSamePixels(MustDecode(Fixture(name)), base);
  }
}

TEST_CASE("grayscale is replicated to RGB") {
  const RgbImage expected = MustDecode(Fixture("gray_expected.png"));
  for (const char* name : {"gray.png", "gray16.png", "gray_alpha.png"}) {
    INFO(name);
    RequireSamePixels(MustDecode(Fixture(name)), expected);
  }
  const RgbImage two_bit = MustDecode(Fixture("gray2.png"));
  for (int y = 0; y < two_bit.height; ++y) {
    for (int x = 0; x < two_bit.width; ++x) {
      const uint8_t v = static_cast<uint8_t>(((x + y) % 4) * 85);
      const uint8_t* p = &two_bit.pixels[(static_cast<size_t>(y) * two_bit.width + x) * 3];
      REQUIRE((p[0] == v && p[1] == v && p[2] == v));
    }
  }
}

TEST_CASE("JPEG (CMYK, gray, progressive) and small GIF frames decode like Pillow") {
  for (const char* name : {"cmyk.jpg", "gray.jpg", "progressive.jpg"}) {
    INFO(name);
    const std::string stem = std::string(name).substr(0, std::string(name).size() - 4);
    RequireSamePixels(MustDecode(Fixture(name)), MustDecode(Fixture(stem + "_jpg_expected.png")));
  }
  const RgbImage gif = MustDecode(Fixture("small_frame.gif"));
  CHECK(gif.width == 8);
  CHECK(gif.height == 6);
  RequireSamePixels(gif, MustDecode(Fixture("small_frame_gif_expected.png")));
}

TEST_CASE("decompression bombs are refused from the header, before decoding") {
  const std::string bomb = BombPng(50000, 50000);
  REQUIRE(bomb.size() < 100);
  auto header = ReadImageHeader(bomb);
  REQUIRE(header.ok());
  CHECK(header->width == 50000);
  const auto start = std::chrono::steady_clock::now();
  auto img = DecodeToRgb(bomb, DecodeLimits{});
  const auto elapsed = std::chrono::steady_clock::now() - start;
  REQUIRE_FALSE(img.ok());
  CHECK(img.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(img.status().message()) ==
        "image is 50000x50000 = 2500000000 pixels, over the limit of 67108864");
  CHECK(elapsed < std::chrono::milliseconds(100));

  // Within the pixel limit but the data is missing: an error, not a crash.
  auto small = DecodeToRgb(BombPng(300, 200), DecodeLimits{});
  REQUIRE_FALSE(small.ok());
  CHECK(small.status().code() == absl::StatusCode::kInvalidArgument);

  // Limits apply to every format, and to the byte size.
  DecodeLimits tight;
  tight.max_pixels = 40;
  for (const std::string& name : kAllFixtures) {
    INFO(name);
    auto r = DecodeToRgb(Fixture(name), tight);
    REQUIRE_FALSE(r.ok());
    CHECK(std::string(r.status().message()).find("over the limit of 40") != std::string::npos);
  }
  DecodeLimits few_bytes;
  few_bytes.max_bytes = 10;
  auto r = DecodeToRgb(Fixture("base.png"), few_bytes);
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(r.status().message()).find("bytes, over the limit of 10") != std::string::npos);
}

TEST_CASE("empty, unknown, truncated and corrupt input fail cleanly") {
  auto empty = DecodeToRgb("", DecodeLimits{});
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.status().code() == absl::StatusCode::kInvalidArgument);

  auto unknown = DecodeToRgb("hello world", DecodeLimits{});
  REQUIRE_FALSE(unknown.ok());
  CHECK(std::string(unknown.status().message()) ==
        "not a supported image (JPEG, PNG, WebP, GIF, BMP); first bytes 0x68656c6c6f20776f");

  std::vector<std::string> inputs;
  for (const std::string& name : kAllFixtures) inputs.push_back(Fixture(name));
  inputs.push_back(ReadFile(kData + "/openclip-reference/images/photo_800x600.jpg"));
  inputs.push_back(ReadFile(kData + "/openclip-reference/images/webp_512x384.webp"));
  for (size_t idx = 0; idx < inputs.size(); ++idx) {
    const std::string& full = inputs[idx];
    // Cut at the half: always an error (except animations, whose first frame may be whole).
    const bool animated = idx < kAllFixtures.size() && kAllFixtures[idx].rfind("animated", 0) == 0;
    if (animated) continue;
    auto half = DecodeToRgb(full.substr(0, full.size() / 2), DecodeLimits{});
    REQUIRE_FALSE(half.ok());
    CHECK(half.status().code() == absl::StatusCode::kInvalidArgument);
    // Every other cut and some byte flips: never a crash, errors are INVALID_ARGUMENT.
    const size_t step = std::max<size_t>(1, full.size() / 97);
    for (size_t n = 0; n < full.size(); n += step) {
      auto cut = DecodeToRgb(full.substr(0, n), DecodeLimits{});
      if (!cut.ok()) CHECK(cut.status().ToString() == absl::Status(absl::StatusCode::kInvalidArgument, cut.status().message()).ToString());
      std::string flipped = full;
      flipped[n] = static_cast<char>(flipped[n] ^ 0x5A);
      auto bad = DecodeToRgb(flipped, DecodeLimits{});
      if (!bad.ok()) CHECK(bad.status().ToString() == absl::Status(absl::StatusCode::kInvalidArgument, bad.status().message()).ToString());
    }
  }
  auto jpeg = DecodeToRgb(Fixture("cmyk.jpg").substr(0, 400), DecodeLimits{});
  REQUIRE_FALSE(jpeg.ok());
  CHECK(std::string(jpeg.status().message()).rfind("corrupt JPEG: ", 0) == 0);
}

TEST_CASE("CLIP geometry by hand") {
  // 1999x1001 at 64: long side int(64 * 1999 / 1001) = int(127.808...) = 127,
  // crop left round((127 - 64) / 2) = round(31.5) = 32 (half to even), top 0.
  auto g = ClipGeometry(1999, 1001, 64);
  CHECK(g.resized_w == 127);
  CHECK(g.resized_h == 64);
  CHECK(g.crop_left == 32);
  CHECK(g.crop_top == 0);
  // Portrait 300x900 at 224: 672 tall, crop top 224.
  g = ClipGeometry(300, 900, 224);
  CHECK((g.resized_w == 224 && g.resized_h == 672 && g.crop_left == 0 && g.crop_top == 224));
  // Upscaling 50x40 at 224: int(224 * 50 / 40) = 280, left round(28) = 28.
  g = ClipGeometry(50, 40, 224);
  CHECK((g.resized_w == 280 && g.resized_h == 224 && g.crop_left == 28 && g.crop_top == 0));
  // round(0.5) = 0 and round(2.5) = 2 (half to even): widths 65 and 69 at 64.
  g = ClipGeometry(65, 64, 64);
  CHECK((g.resized_w == 65 && g.crop_left == 0));
  g = ClipGeometry(69, 64, 64);
  CHECK((g.resized_w == 69 && g.crop_left == 2));
  g = ClipGeometry(67, 64, 64);  // round(1.5) = 2
  CHECK((g.resized_w == 67 && g.crop_left == 2));
  // Truncation, not rounding: 224 * 641 / 480 = 299.13 -> 299; 224 * 1001 / 999 = 224.448.
  CHECK(ClipGeometry(641, 480, 224).resized_w == 299);
  CHECK(ClipGeometry(1001, 999, 224).resized_w == 224);
  // Square.
  g = ClipGeometry(224, 224, 224);
  CHECK((g.resized_w == 224 && g.resized_h == 224 && g.crop_left == 0 && g.crop_top == 0));
}

TEST_CASE("a constant image stays constant through resize and preprocess") {
  RgbImage img;
  img.width = 37;
  img.height = 91;
  img.pixels.resize(static_cast<size_t>(img.width) * img.height * 3);
  for (size_t i = 0; i < img.pixels.size(); i += 3) {
    img.pixels[i] = 200;
    img.pixels[i + 1] = 13;
    img.pixels[i + 2] = 255;
  }
  for (auto [w, h] : {std::pair{5, 7}, std::pair{224, 224}, std::pair{100, 300}}) {
    const RgbImage out = ResizeBicubic(img, w, h);
    REQUIRE(out.width == w);
    REQUIRE(out.height == h);
    for (size_t i = 0; i < out.pixels.size(); i += 3) {
      REQUIRE((out.pixels[i] == 200 && out.pixels[i + 1] == 13 && out.pixels[i + 2] == 255));
    }
  }
  ClipPreprocessConfig config;
  config.image_size = 64;
  const std::vector<float> t = ClipPreprocess(img, config);
  REQUIRE(t.size() == 3u * 64 * 64);
  const float expected[3] = {(200.0f / 255.0f - 0.48145466f) / 0.26862954f,
                             (13.0f / 255.0f - 0.4578275f) / 0.26130258f,
                             (255.0f / 255.0f - 0.40821073f) / 0.27577711f};
  CHECK(expected[0] == Approx(1.127420).epsilon(1e-5));
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < 64 * 64; ++i) REQUIRE(t[static_cast<size_t>(c) * 64 * 64 + i] == expected[c]);
  }
}

TEST_CASE("resize edge cases") {
  RgbImage one;
  one.width = one.height = 1;
  one.pixels = {10, 20, 30};
  const RgbImage big = ResizeBicubic(one, 5, 3);
  REQUIRE(big.pixels.size() == 45u);
  for (size_t i = 0; i < big.pixels.size(); i += 3) {
    REQUIRE((big.pixels[i] == 10 && big.pixels[i + 1] == 20 && big.pixels[i + 2] == 30));
  }
  CHECK(ResizeBicubic(one, 0, 3).pixels.empty());
  CHECK(ResizeBicubic(RgbImage{}, 3, 3).pixels.empty());
  RgbImage inconsistent = one;
  inconsistent.width = 2;
  CHECK(ResizeBicubic(inconsistent, 3, 3).pixels.empty());
  CHECK(ClipPreprocess(RgbImage{}, ClipPreprocessConfig{}).empty());
  // Same size: an exact copy.
  const RgbImage base = MustDecode(Fixture("base.png"));
  RequireSamePixels(ResizeBicubic(base, base.width, base.height), base);
}

TEST_CASE("the fast JPEG decode picks the largest DCT scale that keeps 2x the target") {
  // ceil(short / d) >= 2 * target, d in {8, 4, 2}, else 1.
  CHECK(JpegDownscaleDenominator(4000, 3000, 224) == 4);  // 750 >= 448; 375 < 448
  CHECK(JpegDownscaleDenominator(3000, 4000, 224) == 4);  // orientation does not matter
  CHECK(JpegDownscaleDenominator(800, 600, 224) == 1);    // 300 < 448
  CHECK(JpegDownscaleDenominator(800, 600, 64) == 4);     // 150 >= 128; 75 < 128
  CHECK(JpegDownscaleDenominator(1999, 1001, 224) == 2);  // ceil(1001 / 2) = 501 >= 448
  CHECK(JpegDownscaleDenominator(895, 2000, 224) == 2);   // ceil(895 / 2) = 448, just enough
  CHECK(JpegDownscaleDenominator(894, 2000, 224) == 1);   // 447
  CHECK(JpegDownscaleDenominator(8000, 8000, 224) == 8);
  CHECK(JpegDownscaleDenominator(800, 600, 0) == 1);      // target unknown: full size
}

TEST_CASE("the fast JPEG decode is opt-in and touches only JPEGs with a target") {
  CHECK(DecodeLimits{}.jpeg == JpegDecode::kExact);
  DecodeLimits fast;
  fast.jpeg = JpegDecode::kFastDownscale;
  const std::string jpeg = Reference("photo_800x600.jpg");
  const RgbImage exact = MustDecode(jpeg);
  SECTION("no target: full size, same pixels") {
    auto img = DecodeToRgb(jpeg, fast);
    REQUIRE(img.ok());
    CHECK(img->downscale == 1);
    RequireSamePixels(*img, exact);
  }
  SECTION("a PNG is decoded exactly whatever the mode") {
    const std::string png = Reference("landscape_640x480.png");
    auto img = DecodeToRgb(png, fast, 64);
    REQUIRE(img.ok());
    CHECK(img->downscale == 1);
    RequireSamePixels(*img, MustDecode(png));
  }
  SECTION("the exact mode ignores the target") {
    auto img = DecodeToRgb(jpeg, DecodeLimits{}, 64);
    REQUIRE(img.ok());
    RequireSamePixels(*img, exact);
  }
}

TEST_CASE("the fast JPEG decode scales in the DCT domain and keeps the source size") {
  DecodeLimits fast;
  fast.jpeg = JpegDecode::kFastDownscale;
  auto img = DecodeToRgb(Reference("odd_1999x1001.jpg"), fast, 64);
  REQUIRE(img.ok());
  CHECK(img->downscale == 4);
  CHECK(img->width == 500);   // ceil(1999 / 4)
  CHECK(img->height == 251);  // ceil(1001 / 4)
  CHECK(img->source_width == 1999);
  CHECK(img->source_height == 1001);
  CHECK(img->pixels.size() == size_t{500} * 251 * 3);
  // Limits apply to the encoded size, not the scaled one.
  fast.max_pixels = int64_t{1999} * 1001 - 1;
  auto refused = DecodeToRgb(Reference("odd_1999x1001.jpg"), fast, 64);
  REQUIRE_FALSE(refused.ok());
  CHECK(std::string(refused.status().message()).find("over the limit") != std::string::npos);
}

TEST_CASE("the fast JPEG decode preprocesses close to the Pillow-exact path") {
  // Bound: mean |difference| <= 1 level of 255 and max <= 24 over the crop's values. Measured
  // on these images: mean 0.22-0.51, max 7-14 (pil_compare.py further checks the fast path
  // equals Pillow's own draft() + resize(box) bit for bit). A crop shifted by one output
  // pixel, the typical geometry mistake, gives a mean of 9-16 levels.
  DecodeLimits fast;
  fast.jpeg = JpegDecode::kFastDownscale;
  struct Case {
    const char* name;
    int size;
    int denominator;
  };
  for (const Case& c : {Case{"photo_800x600.jpg", 64, 4}, Case{"photo_800x600.jpg", 100, 2},
                        Case{"odd_1999x1001.jpg", 64, 4}, Case{"odd_1999x1001.jpg", 224, 2}}) {
    INFO(c.name << " at " << c.size);
    const std::string bytes = Reference(c.name);
    auto exact = DecodeToRgb(bytes, DecodeLimits{}, c.size);
    auto scaled = DecodeToRgb(bytes, fast, c.size);
    REQUIRE(exact.ok());
    REQUIRE(scaled.ok());
    CHECK(scaled->downscale == c.denominator);
    const RgbImage a = ClipResizeCrop(*exact, c.size);
    const RgbImage b = ClipResizeCrop(*scaled, c.size);
    REQUIRE(a.width == c.size);
    REQUIRE(b.width == c.size);
    REQUIRE(b.height == c.size);
    int max_diff = 0;
    double sum = 0;
    for (size_t i = 0; i < a.pixels.size(); ++i) {
      const int d = std::abs(static_cast<int>(a.pixels[i]) - static_cast<int>(b.pixels[i]));
      max_diff = std::max(max_diff, d);
      sum += d;
    }
    const double mean = sum / a.pixels.size();
    INFO("max " << max_diff << ", mean " << mean);
    CHECK(max_diff > 0);  // the scaled decode did change the pixels
    CHECK(max_diff <= 24);
    CHECK(mean <= 1.0);
    // A one-pixel shift of the exact crop, for scale: far outside the bound (measured 9-16).
    const RgbImage shifted = embedserve::image::ResizeBicubicCropped(
        *exact, ClipGeometry(exact->width, exact->height, c.size).resized_w,
        ClipGeometry(exact->width, exact->height, c.size).resized_h,
        ClipGeometry(exact->width, exact->height, c.size).crop_left + 1, 0, c.size, c.size);
    double shifted_sum = 0;
    for (size_t i = 0; i < a.pixels.size(); ++i) {
      shifted_sum += std::abs(static_cast<int>(a.pixels[i]) - static_cast<int>(shifted.pixels[i]));
    }
    CHECK(shifted_sum / a.pixels.size() > 4.0);
  }
}
