// How the kernels of a forward pass are launched: every one as a programmatic dependent launch
// (sm_90), so that a kernel's CTAs can be resident, and its weights in flight, while the
// kernel before it finishes; the launch gaps between the ~10 kernels of a layer (each a few
// microseconds at decode) overlap instead of adding up.
//
// The contract, for every kernel launched with launch_kernel:
// - it calls wait_for_previous_grid() (ptx.cuh) before it reads anything an earlier kernel
//   wrote and before it writes anything: the wait returns once the previous kernel has
//   completed and its writes are visible (which implies every kernel before that one: each
//   waited in turn). Only data no kernel writes (weights, their scales, norm weights) may be
//   read before the wait.
// - it may call allow_dependents_to_launch() anywhere; the next kernel's CTAs then start as
//   soon as every CTA of this one has called it (or exited) and there is room on the SMs.
// Plain <<<>>> launches (setup kernels outside a forward pass) need neither.
//
// FP6SERVE_PDL=0 in the environment turns programmatic launches off (a diagnostic: the same
// kernels then run fully serialized).
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "backend/cuda/cuda_check.h"

namespace fp6serve::cuda {

// The compute capability's major number of the current context's device, asked once (0 when
// there is none).
inline int compute_capability_major() {
  static const int major = [] {
    int device = 0, m = 0;
    return cudaGetDevice(&device) == cudaSuccess &&
                   cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess
               ? m
               : 0;
  }();
  return major;
}

// Programmatic dependent launches need sm_90; FP6SERVE_PDL=0 turns them off.
inline bool programmatic_launch_supported() {
  static const bool on = [] {
    const char* v = std::getenv("FP6SERVE_PDL");
    return compute_capability_major() >= 9 && !(v && std::strcmp(v, "0") == 0);
  }();
  return on;
}

// kernel<<<grid, block, smem, stream>>>(args...) as a programmatic dependent launch where the
// GPU has them (see above for what the kernel must do).
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  if (programmatic_launch_supported()) {
    config.attrs = &attribute;
    config.numAttrs = 1;
  }
  FP6_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace fp6serve::cuda
