// Every setting of fp6serve, in two types, each default written here once:
//
//   Options          how a model is loaded, where it runs and how its engine schedules: the
//                    Pipeline, `fp6serve generate|serve|bench` and the server share it, and it
//                    travels unchanged to the loader, the backend and the engine.
//   GenerateOptions  what one request asks for: a Pipeline call, `fp6serve generate`, one
//                    OpenAI request (the server adds only what is HTTP's: n, stream, ...).
//
// A few tuning knobs may also come from the environment, for scripts that cannot pass flags
// (benchmarks): apply_environment() is the one place that reads them, and docs/options.md
// lists them. The HTTP front end's own settings (address, key, limits) are
// server::ServerOptions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace fp6serve {

struct Options {
  // --- Loading
  // wf6af16 (FP6: each linear layer e2m3 or e3m2, whichever quantizes it with less squared
  // error; docs/quality.md), wf5af16 (e2m2), wf4af16 (e2m1), any eXmY format (that format in
  // every layer, e.g. e3m2), or fp16, bf16, fp32 for unquantized weights. Empty: wf6af16, or
  // the mode a prequantized checkpoint was written in (fp6serve quantize).
  std::string quantization_mode;
  // Each row's scale: "min-error" (the default: the scale of least squared error among
  // absmax x 1, 0.99, ..., 0.75) or "absmax" (max |w| / the format's max, as FP6-LLM);
  // docs/quality.md. Applies where weights are quantized (loading, fp6serve quantize).
  std::string quantization_scale = "min-error";
  // lm_head as an FPx linear too (tied embeddings: a quantized copy; the embedding table
  // stays 16-bit). Off by default: docs/quality.md says what it costs.
  bool quantize_lm_head = false;
  bool progress = true;  // a progress bar while loading (when stderr is a terminal)

  // --- Where it runs
  std::string device = "auto";   // auto (the GPU when there is one), cpu, cuda
  int threads = 0;               // CPU threads; 0: every core            [FP6SERVE_THREADS]
  std::string cpu_isa = "best";  // best, avx512, avx2, scalar            [FP6SERVE_CPU_ISA]
  bool cuda_graphs = true;       // record decode passes as CUDA graphs   [FP6SERVE_CUDA_GRAPHS]
  // Tokens above which an FPx linear dequantizes and calls cuBLAS instead of the fused
  // kernel; 0: the crossover measured on the H100 (backend/cuda/linear.h).
  int64_t fpx_crossover = 0;  //                                       [FP6SERVE_FPX_CROSSOVER]
  // Tensor parallelism (docs/tensor_parallel.md): the model split over this many GPUs of this
  // machine, one thread per GPU (at most the GPUs there are). On the CPU the ranks are threads
  // of this process: the same split, to test it, no faster than 1.
  int tensor_parallel_size = 1;

  // --- The engine
  int64_t max_batch_tokens = 768;  // tokens per forward pass (the Dynamic SplitFuse budget)
  int64_t max_num_seqs = 256;      // sequences holding KV blocks at once
  int64_t max_model_len = 0;       // prompt + generated tokens; 0: the model's context length
  int64_t kv_block_size = 16;      // tokens per KV-cache block
  // KV-cache size: kv_cache_blocks when set, else kv_cache_bytes when set, else on the GPU
  // gpu_memory_utilization when set (vLLM's: the fraction of the GPU's memory this process may
  // use for weights, activations and the KV cache, in (0, 1]; the KV cache gets what the
  // weights and 2 GiB for activations leave of it; an error on the CPU), else room for 4
  // full-context sequences (at most 1 GiB) on the CPU and 90% of the GPU memory the weights
  // left free, less 2 GiB, on the GPU (engine/kv_budget.h).
  size_t kv_cache_bytes = 0;
  int64_t kv_cache_blocks = 0;
  double gpu_memory_utilization = 0;  // 0: not set

  // Throws Error(kInvalidArgument) naming the first setting out of its range.
  void validate() const;
};

// The FP6SERVE_* variables marked above override those fields when set; a malformed value is
// Error(kInvalidArgument) naming the variable.
void apply_environment(Options& options);

// Unset sampling options take the model's generation_config.json; without one, greedy.
struct GenerateOptions {
  int64_t max_new_tokens = 128;
  std::optional<double> temperature;         // [0, 100]; 0: greedy
  std::optional<double> top_p;               // (0, 1]
  std::optional<int64_t> top_k;              // >= 0; 0: off
  std::optional<double> min_p;               // [0, 1)
  std::optional<double> repetition_penalty;  // (0, 10]; 1: off (over prompt and output)
  double presence_penalty = 0.0;             // [-2, 2], OpenAI's, over the output
  double frequency_penalty = 0.0;            // [-2, 2]
  std::optional<uint64_t> seed;              // unset: a random seed
  int top_logprobs = -1;                     // -1: no logprobs; n in [0, 20]: the chosen token's and n more
  std::vector<std::string> stop;             // stop strings (not included in the output)
  std::vector<int32_t> stop_token_ids;       // extra stop tokens (not included)
  bool ignore_eos = false;
  bool skip_special_tokens = true;  // in the generated text
  bool add_special_tokens = true;   // e.g. BOS in front of a text prompt

  // Throws Error(kInvalidArgument) naming the first option out of its range.
  void validate() const;
};

}  // namespace fp6serve
