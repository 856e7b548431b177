// Error checks for CUDA code that throw fp6serve::Error with file:line. Usable from .cu files:
// nothing here includes {fmt} (nvcc cannot compile {fmt} 9 in C++20 mode); messages are
// formatted by functions compiled by the host compiler (cuda_check.cc).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "fp6serve/error.h"

namespace fp6serve::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line);
// A failed requirement in CUDA code; `message` says what and where.
[[noreturn]] void throw_requirement(ErrorKind kind, const std::string& message, const char* file, int line);

}  // namespace fp6serve::cuda

#define FP6_CUDA_CHECK(expr)                                                                              \
  do {                                                                                                    \
    const cudaError_t fp6_err_ = (expr);                                                                  \
    if (fp6_err_ != cudaSuccess) ::fp6serve::cuda::throw_cuda_error(fp6_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define FP6_CUBLAS_CHECK(expr)                                                                                      \
  do {                                                                                                              \
    const cublasStatus_t fp6_st_ = (expr);                                                                          \
    if (fp6_st_ != CUBLAS_STATUS_SUCCESS) ::fp6serve::cuda::throw_cublas_error(fp6_st_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a <<<...>>> launch: configuration errors surface here, not at the next sync.
#define FP6_CUDA_CHECK_LAUNCH() FP6_CUDA_CHECK(cudaGetLastError())

// FP6_CUDA_REQUIRE(cond, kind, message-as-std::string)
#define FP6_CUDA_REQUIRE(cond, kind, message)                                                                     \
  do {                                                                                                            \
    if (!(cond)) ::fp6serve::cuda::throw_requirement(::fp6serve::ErrorKind::kind, (message), __FILE__, __LINE__); \
  } while (0)
