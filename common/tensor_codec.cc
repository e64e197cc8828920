// Tensor wire encoding: float16/bfloat16 conversions and Tensor message (de)serialization.
#include "common/tensor_codec.h"

#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace embedserve {
namespace {

uint32_t FloatBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

float BitsFloat(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

size_t ElementSize(v1::Dtype dtype) {
  return dtype == v1::DTYPE_FLOAT16 || dtype == v1::DTYPE_BFLOAT16 ? 2 : 4;
}

v1::Dtype Canonical(v1::Dtype dtype) {
  return dtype == v1::DTYPE_UNSPECIFIED ? v1::DTYPE_FLOAT32 : dtype;
}

}  // namespace

uint16_t FloatToHalf(float value) {
  const uint32_t bits = FloatBits(value);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // Inf or NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to Inf
  if (abs < 0x38800000u) {  // half subnormal or zero
    // value * 2^24 is exact; nearbyint rounds to nearest even (the default rounding mode).
    const uint32_t rounded =
        static_cast<uint32_t>(std::nearbyint(BitsFloat(abs) * 16777216.0f));
    return static_cast<uint16_t>(sign | rounded);
  }
  // Normal: rebias exponent, round mantissa to nearest even.
  uint32_t mantissa_odd = (abs >> 13) & 1u;
  uint32_t value16 = abs + 0xc8000fffu + mantissa_odd;  // rebias (-112 << 23) + rounding
  return static_cast<uint16_t>(sign | (value16 >> 13));
}

float HalfToFloat(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1fu;
  const uint32_t mantissa = half & 0x3ffu;
  if (exponent == 0) {
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-08f;  // 2^-24
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) return BitsFloat(sign | 0x7f800000u | (mantissa << 13));
  return BitsFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

uint16_t FloatToBfloat16(float value) {
  uint32_t bits = FloatBits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float Bfloat16ToFloat(uint16_t bits) { return BitsFloat(static_cast<uint32_t>(bits) << 16); }

void EncodeTensor(absl::Span<const float> values, absl::Span<const int64_t> shape,
                  v1::Dtype dtype, bool packed, v1::Tensor* out) {
  dtype = Canonical(dtype);
  out->Clear();
  for (int64_t d : shape) out->add_shape(d);
  out->set_dtype(dtype);
  if (!packed) {
    out->mutable_values()->Assign(values.begin(), values.end());
    return;
  }
  std::string* data = out->mutable_data();
  data->resize(values.size() * ElementSize(dtype));
  char* dst = data->data();
  // Little-endian hosts only (x86-64, aarch64): memcpy of native values is the wire layout.
  if (dtype == v1::DTYPE_FLOAT32) {
    std::memcpy(dst, values.data(), values.size() * sizeof(float));
    return;
  }
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t bits =
        dtype == v1::DTYPE_FLOAT16 ? FloatToHalf(values[i]) : FloatToBfloat16(values[i]);
    std::memcpy(dst + 2 * i, &bits, 2);
  }
}

absl::StatusOr<DecodedTensor> DecodeTensor(const v1::Tensor& tensor) {
  DecodedTensor decoded;
  if (tensor.shape_size() < 1 || tensor.shape_size() > 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "embedding shape must have 1 ([dim]) or 2 ([tokens, dim]) dimensions, got ",
        tensor.shape_size()));
  }
  int64_t count = 1;
  for (int64_t d : tensor.shape()) {
    if (d <= 0 || d > (int64_t{1} << 24)) {
      return absl::InvalidArgumentError(
          absl::StrCat("embedding shape dimensions must be in [1, 16777216], got ", d));
    }
    count *= d;
    if (count > (int64_t{1} << 26)) {
      return absl::InvalidArgumentError("embedding has more than 67108864 elements");
    }
  }
  decoded.shape.assign(tensor.shape().begin(), tensor.shape().end());
  const v1::Dtype dtype = Canonical(tensor.dtype());
  if (!tensor.data().empty()) {
    if (tensor.values_size() > 0) {
      return absl::InvalidArgumentError("embedding sets both values and data; set one");
    }
    const size_t expected = static_cast<size_t>(count) * ElementSize(dtype);
    if (tensor.data().size() != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "embedding data has ", tensor.data().size(), " bytes; shape and dtype need ",
          expected));
    }
    decoded.values.resize(count);
    const char* src = tensor.data().data();
    if (dtype == v1::DTYPE_FLOAT32) {
      std::memcpy(decoded.values.data(), src, expected);
    } else {
      for (int64_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        decoded.values[i] =
            dtype == v1::DTYPE_FLOAT16 ? HalfToFloat(bits) : Bfloat16ToFloat(bits);
      }
    }
  } else {
    if (tensor.values_size() != count) {
      return absl::InvalidArgumentError(absl::StrCat(
          "embedding has ", tensor.values_size(), " values; its shape needs ", count));
    }
    decoded.values.assign(tensor.values().begin(), tensor.values().end());
  }
  for (size_t i = 0; i < decoded.values.size(); ++i) {
    if (!std::isfinite(decoded.values[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("embedding value ", i, " is not finite (NaN or Inf)"));
    }
  }
  return decoded;
}

}  // namespace embedserve
