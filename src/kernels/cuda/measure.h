// Facts and measurement helpers on the GPU: the SM count the launch heuristics use, random
// 16-bit fills (random-weight models, benchmarks) and a read-bandwidth probe (the roofline of
// every benchmark).
#pragma once

#include <cstddef>
#include <cstdint>

namespace fp6serve::cuda {

// SMs of the current device, read once per process (calling cudaGetDeviceProperties per
// launch is what once made FP6-LLM in torchao 20x slower).
int sm_count();
// n 16-bit values ~ N(0, stddev) from a counter-based hash (FP16 or BF16).
void fill_normal(void* p, int64_t n, uint64_t seed, float stddev, bool bf16);
// Reads every byte once (a read-bandwidth probe); sink: 16 device bytes. Asynchronous on the
// default stream.
void read_all(const void* p, size_t bytes, void* sink);

}  // namespace fp6serve::cuda
