#include "backend/cuda/cuda_check.h"

#include <fmt/format.h>

#include <cstring>

namespace fp6serve::cuda {

namespace {

// __FILE__ from the project's src/ on (its last "/src/"), not the build machine's path.
const char* source_path(const char* file) {
  const char* from = file;
  for (const char* p = std::strstr(file, "/src/"); p; p = std::strstr(p + 1, "/src/")) from = p + 1;
  return from;
}

}  // namespace

void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  cudaGetLastError();  // clear a sticky launch error so the next call starts clean
  throw Error(err == cudaErrorMemoryAllocation ? ErrorKind::kOutOfMemory : ErrorKind::kCuda,
              fmt::format("{}:{}: {}: {}", source_path(file), line, expr, cudaGetErrorString(err)));
}

void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line) {
  throw Error(ErrorKind::kCuda,
              fmt::format("{}:{}: {}: {}", source_path(file), line, expr, cublasGetStatusString(status)));
}

void throw_requirement(ErrorKind kind, const std::string& message, const char* file, int line) {
  throw Error(kind,
              kind == ErrorKind::kInternal ? fmt::format("{} ({}:{})", message, source_path(file), line) : message);
}

}  // namespace fp6serve::cuda
