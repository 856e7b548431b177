// The avx2 instantiation of the SIMD linear bodies (compiled with avx2 flags, see
// src/CMakeLists.txt; linear.cc calls it only after a run-time CPU check).
#define FP6_SIMD_WIDTH 8
#define FP6_SIMD_NS avx2
#include "backend/cpu/linear_simd.h"

namespace fp6serve::cpu {

const IsaKernels* isa_kernels_avx2() {
  return &avx2::kKernels;
}

}  // namespace fp6serve::cpu
