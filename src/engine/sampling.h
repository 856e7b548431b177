// Turning logits into the next token: repetition/presence/frequency penalties, temperature,
// top-k, top-p, min-p, then a draw from a per-request seeded generator (or argmax when
// temperature is 0), in Hugging Face's processor order. Also the log-probabilities the
// OpenAI API reports (of the unprocessed model distribution).
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <vector>

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

struct TokenLogprob {
  int32_t token;
  float logprob;
};

struct Sample {
  int32_t token = -1;
  float logprob = 0.0f;              // when requested
  std::vector<TokenLogprob> top;     // most likely alternatives, when requested
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // prompt and generated: the sequence so far (penalties look at them).
  Sample sample(std::span<const float> logits, std::span<const int32_t> prompt, std::span<const int32_t> generated);

 private:
  int32_t draw();

  struct Candidate {
    float weight;  // scaled logit, then unnormalized probability
    int32_t token;
  };
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> work_;
  std::vector<int32_t> order_;
  std::vector<Candidate> cand_;
};

}  // namespace fp6serve
