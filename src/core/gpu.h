// What this build and this machine offer on the GPU side. Safe to call in any build: a
// CPU-only build answers "not built" instead of failing to link.
#pragma once

#include <cstddef>
#include <string>

namespace fp6serve {

bool cuda_built();       // the CUDA backend was compiled in
int cuda_device_count();  // 0 without a driver or GPU (never throws)
// Throws kUnsupported saying why the CUDA backend cannot be used (not built, no GPU).
void require_cuda();
// "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.2 GiB" or the reason there is none.
std::string cuda_device_summary(int device = 0);
// Free bytes on the current device (0 without one).
size_t cuda_free_bytes();
// The device's read bandwidth in GB/s, measured now (reading a 2 GiB buffer several times):
// the roofline of the benchmarks. Needs the CUDA backend and a GPU.
double cuda_read_bandwidth_gbs();

}  // namespace fp6serve
