// The GPU itself: which device this process sees, its facts (SM count, free memory), random
// 16-bit fills (random-weight models, benchmarks) and the read-bandwidth probe that is the
// roofline of every benchmark. CUDA builds only; transformer/device.h answers for any build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace fp6serve::cuda {

// GPUs visible to this process (0 without a driver or a GPU; never throws).
int device_count();
// Throws kUnsupported when no GPU is visible.
void require_device();
// "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.2 GiB, L2 50 MiB", or why there is none.
std::string device_summary(int device = 0);
// SMs of the current device, read once per process (calling cudaGetDeviceProperties per
// launch is what once made FP6-LLM in torchao 20x slower).
int sm_count();
// Free bytes on the current device (0 without one).
size_t free_bytes();
// The read bandwidth in GB/s, measured now (the best of five reads of a 2 GiB buffer).
double read_bandwidth_gbs();

// n 16-bit values ~ N(0, stddev) from a counter-based hash (FP16 or BF16), on the default stream.
void fill_normal(void* p, int64_t n, uint64_t seed, float stddev, bool bf16);
// Reads every byte once (the bandwidth probe); sink: 16 device bytes. On the default stream.
void read_all(const void* p, size_t bytes, void* sink);

}  // namespace fp6serve::cuda
