// A request's sampling parameters, and the per-request state that turns them into each
// step's SampleRow (kernels/sampling.h defines what a row does to the logits: penalties,
// temperature, top-k, min-p, top-p, the draw, the log-probabilities; the CPU and GPU
// backends carry it out identically).
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <vector>

#include "kernels/sampling.h"

namespace fp6serve {

struct SamplingParams {
  double temperature = 0.0;  // 0: greedy
  double top_p = 1.0;        // (0, 1]
  int64_t top_k = 0;         // 0: off
  double min_p = 0.0;        // [0, 1)
  double repetition_penalty = 1.0;  // > 0; 1: off (divides positive, multiplies negative logits of seen tokens)
  double presence_penalty = 0.0;    // [-2, 2], OpenAI semantics over generated tokens
  double frequency_penalty = 0.0;   // [-2, 2]
  std::optional<uint64_t> seed;
  int top_logprobs = -1;  // -1: no logprobs; n >= 0: the chosen token's and n alternatives

  // Throws Error(kInvalidArgument) naming the first bad parameter and its allowed range.
  void validate() const;
};

// Makes each step's SampleRow for one request: its parameters, a draw from its seeded
// generator, and the penalized tokens of the sequence so far.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // prompt and generated: the sequence so far (penalties look at them).
  SampleRow next_row(std::span<const int32_t> prompt, std::span<const int32_t> generated);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace fp6serve
