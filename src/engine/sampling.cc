#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "core/check.h"

namespace fp6serve {

void SamplingParams::validate() const {
  FP6_CHECK(std::isfinite(temperature) && temperature >= 0 && temperature <= 100, kInvalidArgument,
            "temperature must be in [0, 100], got {}", temperature);
  FP6_CHECK(std::isfinite(top_p) && top_p > 0 && top_p <= 1, kInvalidArgument, "top_p must be in (0, 1], got {}", top_p);
  FP6_CHECK(top_k >= 0, kInvalidArgument, "top_k must be >= 0 (0 disables it), got {}", top_k);
  FP6_CHECK(std::isfinite(min_p) && min_p >= 0 && min_p < 1, kInvalidArgument, "min_p must be in [0, 1), got {}", min_p);
  FP6_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0 && repetition_penalty <= 10, kInvalidArgument,
            "repetition_penalty must be in (0, 10], got {}", repetition_penalty);
  FP6_CHECK(std::isfinite(presence_penalty) && presence_penalty >= -2 && presence_penalty <= 2, kInvalidArgument,
            "presence_penalty must be in [-2, 2], got {}", presence_penalty);
  FP6_CHECK(std::isfinite(frequency_penalty) && frequency_penalty >= -2 && frequency_penalty <= 2, kInvalidArgument,
            "frequency_penalty must be in [-2, 2], got {}", frequency_penalty);
  FP6_CHECK(top_logprobs >= -1 && top_logprobs <= 20, kInvalidArgument, "logprobs must be in [0, 20], got {}",
            top_logprobs);
}

Sampler::Sampler(const SamplingParams& params) : params_(params) {
  params_.validate();
  rng_.seed(params.seed ? *params.seed : std::random_device{}());
}

SampleRow Sampler::next_row(std::span<const int32_t> prompt, std::span<const int32_t> generated) {
  SampleRow row;
  if (params_.temperature > 0.0) {
    row.inv_temperature = static_cast<float>(1.0 / params_.temperature);
    row.top_k = static_cast<int32_t>(std::min<int64_t>(params_.top_k, INT32_MAX));
    row.min_p = static_cast<float>(params_.min_p);
    row.top_p = params_.top_p;
    row.u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  }
  row.repetition_penalty = params_.repetition_penalty;
  row.top_logprobs = params_.top_logprobs;
  // Hugging Face's repetition penalty over prompt and output; OpenAI's presence and
  // frequency penalties over the output.
  const bool repeat = params_.repetition_penalty != 1.0;
  const bool counted = params_.presence_penalty != 0.0 || params_.frequency_penalty != 0.0;
  if (!repeat && !counted) return row;
  std::unordered_map<int32_t, std::pair<bool, int>> seen;  // token -> (in prompt or output, count in output)
  if (repeat)
    for (int32_t t : prompt) seen[t].first = true;
  for (int32_t t : generated) {
    auto& e = seen[t];
    e.first = true;
    ++e.second;
  }
  for (const auto& [t, e] : seen) {
    const float subtract =
        e.second > 0 ? static_cast<float>(params_.presence_penalty + params_.frequency_penalty * e.second) : 0.0f;
    row.penalties.push_back({t, subtract, repeat ? 1 : 0});
  }
  return row;
}

}  // namespace fp6serve
