// The checks of include/fp6serve/options.h and the one reader of the environment's knobs.
#include "fp6serve/options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <string_view>

#include "core/check.h"

namespace fp6serve {

void Options::validate() const {
  FP6_CHECK(device == "auto" || device == "cpu" || device == "cuda", kInvalidArgument,
            "device '{}' is not one of auto, cpu, cuda", device);
  FP6_CHECK(threads >= 0 && threads <= 4096, kInvalidArgument, "threads must be in [0, 4096] (0: every core), got {}",
            threads);
  FP6_CHECK(cpu_isa == "best" || cpu_isa == "avx512" || cpu_isa == "avx2" || cpu_isa == "scalar", kInvalidArgument,
            "cpu_isa '{}' is not one of best, avx512, avx2, scalar", cpu_isa);
  FP6_CHECK(quantization_scale == "absmax" || quantization_scale == "min-error", kInvalidArgument,
            "quantization_scale '{}' is not one of absmax, min-error", quantization_scale);
  FP6_CHECK(fpx_crossover >= 0, kInvalidArgument, "fpx_crossover must be >= 0 (0: the measured one), got {}",
            fpx_crossover);
  FP6_CHECK(tensor_parallel_size >= 1 && tensor_parallel_size <= 64, kInvalidArgument,
            "tensor_parallel_size must be in [1, 64], got {}", tensor_parallel_size);
  FP6_CHECK(max_batch_tokens >= 1, kInvalidArgument, "max_batch_tokens must be at least 1, got {}", max_batch_tokens);
  FP6_CHECK(max_num_seqs >= 1, kInvalidArgument, "max_num_seqs must be at least 1, got {}", max_num_seqs);
  FP6_CHECK(max_model_len >= 0, kInvalidArgument, "max_model_len must be >= 0 (0: the model's), got {}", max_model_len);
  FP6_CHECK(kv_block_size >= 1 && kv_block_size <= 1024, kInvalidArgument, "kv_block_size must be in [1, 1024], got {}",
            kv_block_size);
  FP6_CHECK(kv_cache_blocks >= 0, kInvalidArgument, "kv_cache_blocks must be >= 0, got {}", kv_cache_blocks);
  FP6_CHECK(gpu_memory_utilization == 0 || (gpu_memory_utilization > 0 && gpu_memory_utilization <= 1),
            kInvalidArgument, "gpu_memory_utilization must be in (0, 1] (a fraction of the GPU's memory), got {}",
            gpu_memory_utilization);
  FP6_CHECK(gpu_memory_utilization == 0 || kv_cache_bytes == 0, kInvalidArgument,
            "give the KV cache's size (kv_cache_bytes, --kv-cache-gib) or gpu_memory_utilization, not both");
  FP6_CHECK(gpu_memory_utilization == 0 || device != "cpu", kInvalidArgument,
            "gpu_memory_utilization applies to the GPU, not to device cpu: size the KV cache with kv_cache_bytes "
            "(--kv-cache-gib), or leave the default");
}

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

int64_t env_integer(const char* name, const char* value, int64_t lo, int64_t hi) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(value, &end, 10);
  FP6_CHECK(errno == 0 && end && *end == '\0' && v >= lo && v <= hi, kInvalidArgument,
            "environment variable {}='{}' is not an integer in [{}, {}]", name, value, lo, hi);
  return v;
}

}  // namespace

void apply_environment(Options& o) {
  if (const char* v = env("FP6SERVE_THREADS"))
    o.threads = static_cast<int>(env_integer("FP6SERVE_THREADS", v, 0, 4096));
  if (const char* v = env("FP6SERVE_CPU_ISA")) o.cpu_isa = v;
  if (const char* v = env("FP6SERVE_CUDA_GRAPHS")) o.cuda_graphs = env_integer("FP6SERVE_CUDA_GRAPHS", v, 0, 1) != 0;
  if (const char* v = env("FP6SERVE_FPX_CROSSOVER"))
    o.fpx_crossover = env_integer("FP6SERVE_FPX_CROSSOVER", v, 0, int64_t{1} << 30);
}

void GenerateOptions::validate() const {
  auto in = [](const std::optional<double>& v, double lo, double hi, bool lo_open, bool hi_open) {
    if (!v) return true;
    const double x = *v;
    return std::isfinite(x) && (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi);
  };
  FP6_CHECK(max_new_tokens >= 1, kInvalidArgument, "max_new_tokens must be at least 1, got {}", max_new_tokens);
  FP6_CHECK(in(temperature, 0, 100, false, false), kInvalidArgument, "temperature must be in [0, 100], got {}",
            temperature.value_or(0));
  FP6_CHECK(in(top_p, 0, 1, true, false), kInvalidArgument, "top_p must be in (0, 1], got {}", top_p.value_or(0));
  FP6_CHECK(!top_k || *top_k >= 0, kInvalidArgument, "top_k must be >= 0 (0 disables it), got {}", top_k.value_or(0));
  FP6_CHECK(in(min_p, 0, 1, false, true), kInvalidArgument, "min_p must be in [0, 1), got {}", min_p.value_or(0));
  FP6_CHECK(in(repetition_penalty, 0, 10, true, false), kInvalidArgument,
            "repetition_penalty must be in (0, 10], got {}", repetition_penalty.value_or(0));
  FP6_CHECK(in(presence_penalty, -2, 2, false, false), kInvalidArgument, "presence_penalty must be in [-2, 2], got {}",
            presence_penalty);
  FP6_CHECK(in(frequency_penalty, -2, 2, false, false), kInvalidArgument,
            "frequency_penalty must be in [-2, 2], got {}", frequency_penalty);
  FP6_CHECK(top_logprobs >= -1 && top_logprobs <= 20, kInvalidArgument, "logprobs must be in [0, 20], got {}",
            top_logprobs);
  for (const std::string& s : stop) FP6_CHECK(!s.empty(), kInvalidArgument, "stop strings must not be empty");
  for (int32_t id : stop_token_ids)
    FP6_CHECK(id >= 0, kInvalidArgument, "stop_token_ids must be non-negative token ids, got {}", id);
}

}  // namespace fp6serve
