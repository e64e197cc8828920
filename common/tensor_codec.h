// The tensor wire encoding: float32 rows to an embedserve.v1.Tensor (a JSON-readable float
// list, or packed little-endian float32/float16/bfloat16 bytes) and back.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "embedserve/v1/types.pb.h"

namespace embedserve {

// IEEE half and bfloat16 conversions, round to nearest even; NaN stays NaN.
uint16_t FloatToHalf(float value);
float HalfToFloat(uint16_t bits);
uint16_t FloatToBfloat16(float value);
float Bfloat16ToFloat(uint16_t bits);

// Fills `out` with `values` of the given shape. packed=false writes Tensor.values (dtype must
// be float32); packed=true writes Tensor.data in `dtype`.
void EncodeTensor(absl::Span<const float> values, absl::Span<const int64_t> shape,
                  v1::Dtype dtype, bool packed, v1::Tensor* out);

// A decoded tensor: float32 values and shape.
struct DecodedTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// Reads a Tensor from either representation. Checks that the shape is 1-D or 2-D with
// positive dims, that the element count matches, that the packed byte count matches the
// dtype, and that every value is finite. Errors are INVALID_ARGUMENT naming the problem.
absl::StatusOr<DecodedTensor> DecodeTensor(const v1::Tensor& tensor);

}  // namespace embedserve
