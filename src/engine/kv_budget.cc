#include "engine/kv_budget.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/check.h"

namespace fp6serve {

namespace {

double gib(size_t bytes) {
  return static_cast<double>(bytes) / static_cast<double>(size_t{1} << 30);
}

}  // namespace

GpuKvBytes gpu_kv_cache_bytes(double utilization, size_t total, size_t free, size_t weight_bytes) {
  FP6_CHECK(utilization > 0 && utilization <= 1, kInvalidArgument,
            "gpu_memory_utilization must be in (0, 1] (a fraction of the GPU's memory), got {}", utilization);
  GpuKvBytes out;
  out.budget = static_cast<size_t>(utilization * static_cast<double>(total));
  const size_t needed = weight_bytes + kGpuActivationReserve;
  FP6_CHECK(out.budget > needed, kInvalidArgument,
            "gpu_memory_utilization {} lets this process use {:.2f} GiB of the GPU's {:.2f} GiB, but the weights take "
            "{:.2f} GiB and activations {:.2f} GiB: nothing is left for the KV cache ({})",
            utilization, gib(out.budget), gib(total), gib(weight_bytes), gib(kGpuActivationReserve),
            utilization < 1 ? "raise it, at most 1" : "the model does not fit this GPU with a KV cache");
  const size_t wanted = out.budget - needed;
  FP6_CHECK(free > kGpuActivationReserve, kOutOfMemory,
            "the GPU has {:.2f} GiB free once the weights are loaded, not more than the {:.2f} GiB activations need: "
            "no room for a KV cache (other processes hold {:.2f} GiB of it)",
            gib(free), gib(kGpuActivationReserve), gib(total > free + weight_bytes ? total - free - weight_bytes : 0));
  const size_t room = free - kGpuActivationReserve;
  out.bytes = std::min(wanted, room);
  out.limited_by_free = room < wanted;
  return out;
}

KvBudget kv_cache_budget(const Options& o, const KvDeviceFacts& d, int64_t block_size, int64_t max_model_len) {
  KvBudget out;
  if (o.kv_cache_blocks > 0) {
    out.blocks = o.kv_cache_blocks;
    out.how = "as asked";
    return out;
  }
  const size_t block = d.block_bytes;
  size_t bytes = o.kv_cache_bytes;
  if (bytes > 0) {
    FP6_CHECK(bytes >= block, kInvalidArgument,
              "a KV cache of {} bytes holds not one block of {} tokens ({} bytes for this model)", bytes, block_size,
              block);
    FP6_CHECK(bytes <= d.free, kOutOfMemory, "a KV cache of {:.2f} GiB does not fit: {} has {:.2f} GiB free",
              gib(bytes), device_name(d.device), gib(d.free));
    out.how = "as asked";
  } else if (o.gpu_memory_utilization > 0) {
    FP6_CHECK(d.device == Device::kCuda, kInvalidArgument,
              "gpu_memory_utilization applies to the GPU, and this model runs on the {} (--device cpu, or no GPU "
              "visible): size its KV cache with --kv-cache-gib, or leave the default (room for 4 sequences of "
              "--max-model-len tokens, at most 1 GiB)",
              device_name(d.device));
    const GpuKvBytes g = gpu_kv_cache_bytes(o.gpu_memory_utilization, d.total, d.free, d.weight_bytes);
    if (g.bytes < block)
      throw_error(g.limited_by_free ? ErrorKind::kOutOfMemory : ErrorKind::kInvalidArgument,
                  "gpu_memory_utilization {} leaves {} bytes for the KV cache: not one block of {} tokens ({} bytes)",
                  o.gpu_memory_utilization, g.bytes, block_size, block);
    bytes = g.bytes;
    out.limited_by_free = g.limited_by_free;
    out.how = fmt::format(
        "gpu_memory_utilization {}: {:.2f} of {:.2f} GiB, less {:.2f} GiB of weights and {:.2f} GiB "
        "for activations{}",
        o.gpu_memory_utilization, gib(g.budget), gib(d.total), gib(d.weight_bytes), gib(kGpuActivationReserve),
        g.limited_by_free ? fmt::format(", cut to the {:.2f} GiB free", gib(d.free)) : "");
  } else if (d.device == Device::kCpu) {
    const size_t blocks_per_seq = static_cast<size_t>((max_model_len + block_size - 1) / block_size);
    bytes = std::min(size_t{1} << 30, 4 * blocks_per_seq * block);
    out.how = "the CPU's default, at most 1 GiB";
  } else {
    const double usable = 0.9 * static_cast<double>(d.free) - static_cast<double>(kGpuActivationReserve);
    bytes = std::max<size_t>(size_t{256} << 20, usable > 0 ? static_cast<size_t>(usable) : 0);
    out.how = "the GPU's default, 90% of the free memory less 2 GiB";
  }
  out.blocks = std::max<int64_t>(1, static_cast<int64_t>(bytes / block));
  return out;
}

}  // namespace fp6serve
