// CUDA and cuBLAS error checks that throw fp6serve::Error(kCuda) with file:line, and the
// launch check used after every kernel launch.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/check.h"

#define FP6_CUDA_CHECK(expr)                                                                        \
  do {                                                                                              \
    const cudaError_t fp6_err_ = (expr);                                                            \
    if (fp6_err_ != cudaSuccess) {                                                                  \
      if (fp6_err_ == cudaErrorMemoryAllocation)                                                    \
        FP6_THROW(kOutOfMemory, "{}:{}: {}: {}", __FILE__, __LINE__, #expr, cudaGetErrorString(fp6_err_)); \
      FP6_THROW(kCuda, "{}:{}: {}: {}", __FILE__, __LINE__, #expr, cudaGetErrorString(fp6_err_));  \
    }                                                                                               \
  } while (0)

#define FP6_CUBLAS_CHECK(expr)                                                                          \
  do {                                                                                                  \
    const cublasStatus_t fp6_st_ = (expr);                                                              \
    if (fp6_st_ != CUBLAS_STATUS_SUCCESS)                                                               \
      FP6_THROW(kCuda, "{}:{}: {}: {}", __FILE__, __LINE__, #expr, cublasGetStatusString(fp6_st_));     \
  } while (0)

// After a <<<...>>> launch: configuration errors surface here, not at the next sync.
#define FP6_CUDA_CHECK_LAUNCH() FP6_CUDA_CHECK(cudaGetLastError())
