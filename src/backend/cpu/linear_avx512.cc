// The avx512 instantiation of the SIMD linear bodies (compiled with avx512 flags, see
// src/CMakeLists.txt; linear.cc calls it only after a run-time CPU check).
#define FP6_SIMD_WIDTH 16
#define FP6_SIMD_NS avx512
#include "backend/cpu/linear_simd.h"

namespace fp6serve::cpu {

const IsaKernels* isa_kernels_avx512() {
  return &avx512::kKernels;
}

}  // namespace fp6serve::cpu
