// How many KV-cache blocks an engine allocates, decided once when it starts, from the options
// and the facts of the device: pure functions (no device is asked here), so that every rule,
// the GPU's included, is tested on any machine (tests/engine/kv_budget_test.cc).
//
// In order of precedence (Options, include/fp6serve/options.h; docs/options.md):
//   kv_cache_blocks         that many blocks;
//   kv_cache_bytes          that many bytes (--kv-cache-gib): at least one block, at most the
//                           device's free memory;
//   gpu_memory_utilization  vLLM's --gpu-memory-utilization, on the GPU only: this process may
//                           use that fraction of the GPU's memory for weights, activations and
//                           the KV cache; the KV cache gets what the weights and
//                           kGpuActivationReserve leave of it (never more than is free less the
//                           reserve: other processes keep what they hold);
//   neither                 on the CPU room for 4 full-context sequences, at most 1 GiB; on
//                           the GPU 90% of the memory the weights left free, less the reserve.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "fp6serve/options.h"

namespace fp6serve {

// Activations, workspaces (cuBLAS, the GEMM's split-K), CUDA graphs and the CUDA context,
// which the KV cache must leave free on the GPU.
inline constexpr size_t kGpuActivationReserve = size_t{2} << 30;

// What the device reports once the weights are loaded.
struct KvDeviceFacts {
  Device device = Device::kCpu;
  size_t total = 0;         // the device's memory
  size_t free = 0;          // free now (the weights already resident)
  size_t weight_bytes = 0;  // this model's weights on the device
  size_t block_bytes = 0;   // one KV block over all layers
};

struct KvBudget {
  int64_t blocks = 0;
  std::string how;               // how the size was chosen, for the start-up line
  bool limited_by_free = false;  // gpu_memory_utilization asked for more than is free
};

// The KV-cache bytes --gpu-memory-utilization gives on a GPU of `total` bytes with `free` bytes
// free after `weight_bytes` of weights were loaded: utilization x total, less the weights and
// kGpuActivationReserve, at most free less the reserve. `utilization` in (0, 1]. Throws
// Error(kInvalidArgument) when that leaves nothing (naming the flag and each amount), or
// kOutOfMemory when the budget is there but the GPU's free memory is not.
struct GpuKvBytes {
  size_t bytes = 0;
  size_t budget = 0;             // utilization x total
  bool limited_by_free = false;  // free memory, not the budget, set the size
};
GpuKvBytes gpu_kv_cache_bytes(double utilization, size_t total, size_t free, size_t weight_bytes);

// The number of blocks of `block_size` tokens the options ask for (the rules above). Errors:
// kInvalidArgument for a size that cannot work (less than one block, gpu_memory_utilization
// on the CPU), kOutOfMemory for one the device has not got.
KvBudget kv_cache_budget(const Options& options, const KvDeviceFacts& facts, int64_t block_size, int64_t max_model_len);

}  // namespace fp6serve
