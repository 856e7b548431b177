// 16-bit element types in CUDA kernels: conversions to and from f32 for the CUDA types of
// fp6serve's dtypes, and the host-side dispatch from a DType to its CUDA type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "core/dtype.h"
#include "kernels/cuda/cuda_check.h"

namespace fp6serve::cuda {

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_float(float v) { return v; }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ float from_float(float v) { return v; }

// Calls f.template operator()<T>() with T the CUDA type of a 16-bit (or f32) dtype.
template <typename F>
void dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF16: f.template operator()<__half>(); return;
    case DType::kBF16: f.template operator()<__nv_bfloat16>(); return;
    case DType::kF32: f.template operator()<float>(); return;
    default: FP6_CUDA_REQUIRE(false, kInvalidArgument, std::string("CUDA ops take f16, bf16 or f32, not ") + dtype_name(dtype));
  }
}


}  // namespace fp6serve::cuda
