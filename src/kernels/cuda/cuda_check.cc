#include "kernels/cuda/cuda_check.h"

#include <fmt/format.h>

namespace fp6serve::cuda {

void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  cudaGetLastError();  // clear a sticky launch error so the next call starts clean
  throw Error(err == cudaErrorMemoryAllocation ? ErrorKind::kOutOfMemory : ErrorKind::kCuda,
              fmt::format("{}:{}: {}: {}", file, line, expr, cudaGetErrorString(err)));
}

void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line) {
  throw Error(ErrorKind::kCuda, fmt::format("{}:{}: {}: {}", file, line, expr, cublasGetStatusString(status)));
}

void throw_requirement(ErrorKind kind, const std::string& message, const char* file, int line) {
  throw Error(kind, kind == ErrorKind::kInternal ? fmt::format("{} ({}:{})", message, file, line) : message);
}

}  // namespace fp6serve::cuda
