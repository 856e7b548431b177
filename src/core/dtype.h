// Element types of tensors in fp6serve and the conversions between them and float.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace fp6serve {

enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kI64, kU8 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
// "f32"/"float32", "f16"/"float16"/"fp16"/"half", "bf16"/"bfloat16"; throws kInvalidArgument.
DType parse_float_dtype(std::string_view name);
bool is_float_dtype(DType dtype);

// Converts n elements of a float dtype (F32, F16, BF16) to float, and back with RNE.
void convert_to_f32(const void* src, DType src_dtype, float* dst, size_t n);
void convert_from_f32(const float* src, void* dst, DType dst_dtype, size_t n);

}  // namespace fp6serve
