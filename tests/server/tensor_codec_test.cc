// The tensor wire encoding: float16/bfloat16 rounding against hand-computed bit patterns,
// packed round trips, and validation of client-sent tensors.
#include <cmath>
#include <limits>

#include <catch2/catch.hpp>

#include "common/tensor_codec.h"

namespace embedserve {

TEST_CASE("float16 conversion matches IEEE bit patterns and rounds to nearest even") {
  CHECK(FloatToHalf(1.0f) == 0x3c00);
  CHECK(FloatToHalf(-2.0f) == 0xc000);
  CHECK(FloatToHalf(65504.0f) == 0x7bff);          // largest finite half
  CHECK(FloatToHalf(65520.0f) == 0x7c00);          // rounds up to +Inf
  CHECK(FloatToHalf(5.9604644775390625e-08f) == 0x0001);  // smallest subnormal
  CHECK(FloatToHalf(1.0f + 1.0f / 2048) == 0x3c00);       // tie: to even (down)
  CHECK(FloatToHalf(1.0f + 3.0f / 2048) == 0x3c02);       // tie: to even (up)
  CHECK(FloatToHalf(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
  for (uint32_t bits = 0; bits < 0x7c00; ++bits) {  // every finite positive half round-trips
    REQUIRE(FloatToHalf(HalfToFloat(static_cast<uint16_t>(bits))) == bits);
  }
}

TEST_CASE("bfloat16 conversion keeps the high half, rounded to nearest even") {
  CHECK(FloatToBfloat16(1.0f) == 0x3f80);
  CHECK(Bfloat16ToFloat(0x3f80) == 1.0f);
  CHECK(FloatToBfloat16(1.00390625f) == 0x3f80);   // 1 + 2^-8: tie, to even
  CHECK(FloatToBfloat16(1.01171875f) == 0x3f82);   // 1 + 3 * 2^-8: tie, to even (up)
  CHECK(std::isnan(Bfloat16ToFloat(FloatToBfloat16(std::nanf("")))));
}

TEST_CASE("packed tensors round-trip in every dtype within that dtype's precision") {
  const std::vector<float> values = {0.5f, -0.25f, 0.125f, 0.3333f, -0.9f, 0.0f};
  const std::vector<int64_t> shape = {2, 3};
  struct Case { v1::Dtype dtype; double tolerance; size_t bytes; };
  for (Case c : {Case{v1::DTYPE_FLOAT32, 0, 24}, Case{v1::DTYPE_FLOAT16, 1e-3, 12},
                 Case{v1::DTYPE_BFLOAT16, 4e-3, 12}}) {
    v1::Tensor tensor;
    EncodeTensor(values, shape, c.dtype, /*packed=*/true, &tensor);
    CHECK(tensor.data().size() == c.bytes);
    CHECK(tensor.values_size() == 0);
    auto decoded = DecodeTensor(tensor);
    REQUIRE(decoded.ok());
    CHECK(decoded->shape == shape);
    for (size_t i = 0; i < values.size(); ++i) {
      CHECK(std::abs(decoded->values[i] - values[i]) <= c.tolerance * std::abs(values[i]) + 1e-12);
    }
  }
  v1::Tensor list;
  EncodeTensor(values, shape, v1::DTYPE_FLOAT32, /*packed=*/false, &list);
  CHECK(list.values_size() == 6);
  CHECK(list.data().empty());
}

TEST_CASE("client tensors with a bad shape, size or value are refused with the reason") {
  v1::Tensor tensor;
  tensor.add_shape(3);
  tensor.add_values(1);
  tensor.add_values(2);
  CHECK_THAT(std::string(DecodeTensor(tensor).status().message()), Catch::Contains("needs 3"));
  tensor.add_values(std::numeric_limits<float>::quiet_NaN());
  CHECK_THAT(std::string(DecodeTensor(tensor).status().message()), Catch::Contains("not finite"));
  v1::Tensor no_shape;
  CHECK(DecodeTensor(no_shape).status().code() == absl::StatusCode::kInvalidArgument);
  v1::Tensor packed;
  packed.add_shape(4);
  packed.set_dtype(v1::DTYPE_FLOAT16);
  packed.set_data(std::string(6, '\0'));
  CHECK_THAT(std::string(DecodeTensor(packed).status().message()), Catch::Contains("need 8"));
  v1::Tensor negative;
  negative.add_shape(-1);
  CHECK(DecodeTensor(negative).status().code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace embedserve
