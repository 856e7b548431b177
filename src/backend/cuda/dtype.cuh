// 16-bit element types in CUDA kernels: conversions to and from f32 (and from raw bits, and
// packed pairs) for the CUDA types of fp6serve's dtypes, and the host-side dispatch from a
// DType to its CUDA type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "core/dtype.h"

namespace fp6serve::cuda {

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float to_float(float v) {
  return v;
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ float from_float(float v) {
  return v;
}

// A 16-bit value given as its bits, as f32 (T: __half or __nv_bfloat16).
template <typename T>
__device__ __forceinline__ float bits_to_float(uint16_t b) {
  if constexpr (std::is_same_v<T, __half>)
    return __half2float(__ushort_as_half(b));
  else
    return __bfloat162float(__ushort_as_bfloat16(b));
}

// Two floats rounded to T and packed into one 32-bit register, lo in the low half.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}

// Calls f.template operator()<T>() with T the CUDA type of a 16-bit (or f32) dtype.
template <typename F>
void dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF16:
      f.template operator()<__half>();
      return;
    case DType::kBF16:
      f.template operator()<__nv_bfloat16>();
      return;
    case DType::kF32:
      f.template operator()<float>();
      return;
    default:
      FP6_CUDA_REQUIRE(false, kInvalidArgument,
                       std::string("CUDA ops take f16, bf16 or f32, not ") + dtype_name(dtype));
  }
}

}  // namespace fp6serve::cuda
