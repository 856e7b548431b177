// Measurement helpers on the GPU: random 16-bit fills (random-weight models, benchmarks) and
// a read-bandwidth probe (the roofline of every benchmark).
#pragma once

#include <cstddef>
#include <cstdint>

namespace fp6serve::cuda {

// n 16-bit values ~ N(0, stddev) from a counter-based hash (FP16 or BF16).
void fill_normal(void* p, int64_t n, uint64_t seed, float stddev, bool bf16);
// Reads every byte once (a read-bandwidth probe); sink: 16 device bytes. Asynchronous on the
// default stream.
void read_all(const void* p, size_t bytes, void* sink, int sms);

}  // namespace fp6serve::cuda
