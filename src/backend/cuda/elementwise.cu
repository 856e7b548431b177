// The elementwise ops (the CUDA twins of cpu/elementwise.cc): a block per row for the
// embedding lookup and the row gather, grid-stride loops for SwiGLU, the add and the f32 copy.
// Targets: sm_80 and sm_90 (no architecture-specific instructions but griddepcontrol).
#include <algorithm>

#include "backend/cuda/dtype.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/ptx.cuh"

namespace fp6serve::cuda {

namespace {

template <typename Tin, typename Tout>
__global__ void embedding_kernel(const Tin* __restrict__ table, int64_t dim, const int32_t* __restrict__ tokens,
                                 Tout* __restrict__ out) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  const int64_t row = blockIdx.x;
  const Tin* src = table + static_cast<int64_t>(tokens[row]) * dim;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) out[row * dim + j] = from_float<Tout>(to_float(src[j]));
}

template <typename T>
__global__ void silu_mul_kernel(const T* __restrict__ gate_up, int64_t inter, T* __restrict__ out) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  const int64_t row = blockIdx.y;
  for (int64_t j = blockIdx.x * blockDim.x + threadIdx.x; j < inter; j += gridDim.x * blockDim.x) {
    const float g = to_float(gate_up[row * 2 * inter + j]), u = to_float(gate_up[row * 2 * inter + inter + j]);
    out[row * inter + j] = from_float<T>(g / (1.0f + __expf(-g)) * u);
  }
}

template <typename T>
__global__ void add_kernel(T* __restrict__ acc, const T* __restrict__ x, int64_t n) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    acc[i] = from_float<T>(to_float(acc[i]) + to_float(x[i]));
}

template <typename T>
__global__ void gather_rows_kernel(const T* __restrict__ x, int64_t cols, const int64_t* __restrict__ rows,
                                   T* __restrict__ out) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  const int64_t r = blockIdx.x;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) out[r * cols + j] = x[rows[r] * cols + j];
}

template <typename T>
__global__ void to_f32_kernel(const T* x, int64_t n, float* out) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    out[i] = to_float(x[i]);
}

unsigned elementwise_blocks(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65535));
}

}  // namespace

void embedding(const void* table, DType table_dtype, int64_t dim, const int32_t* tokens, int64_t n, void* out,
               DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(table_dtype, [&]<typename Tin>() {
    dispatch(dtype, [&]<typename Tout>() {
      launch_kernel(embedding_kernel<Tin, Tout>, static_cast<unsigned>(n), 256, 0, stream,
                    static_cast<const Tin*>(table), dim, tokens, static_cast<Tout*>(out));
    });
  });
  FP6_CUDA_CHECK_LAUNCH();
}

void silu_mul(const void* gate_up, int64_t n, int64_t inter, void* out, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(dtype, [&]<typename T>() {
    const dim3 grid(static_cast<unsigned>(std::min<int64_t>((inter + 255) / 256, 1024)), static_cast<unsigned>(n));
    launch_kernel(silu_mul_kernel<T>, grid, 256, 0, stream, static_cast<const T*>(gate_up), inter,
                  static_cast<T*>(out));
  });
  FP6_CUDA_CHECK_LAUNCH();
}

void add(void* acc, const void* x, int64_t n, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(dtype, [&]<typename T>() {
    launch_kernel(add_kernel<T>, elementwise_blocks(n), 256, 0, stream, static_cast<T*>(acc), static_cast<const T*>(x),
                  n);
  });
  FP6_CUDA_CHECK_LAUNCH();
}

void gather_rows(const void* x, int64_t cols, const int64_t* rows, int64_t n, void* out, DType dtype,
                 cudaStream_t stream) {
  if (n == 0) return;
  dispatch(dtype, [&]<typename T>() {
    launch_kernel(gather_rows_kernel<T>, static_cast<unsigned>(n), 256, 0, stream, static_cast<const T*>(x), cols, rows,
                  static_cast<T*>(out));
  });
  FP6_CUDA_CHECK_LAUNCH();
}

void to_f32(const void* x, int64_t n, float* out, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(dtype, [&]<typename T>() {
    launch_kernel(to_f32_kernel<T>, elementwise_blocks(n), 256, 0, stream, static_cast<const T*>(x), n, out);
  });
  FP6_CUDA_CHECK_LAUNCH();
}

}  // namespace fp6serve::cuda
