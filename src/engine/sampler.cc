#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace fp6serve {

Sampler::Sampler(const GenerateOptions& o, const model::GenerationDefaults& d)
    : temperature_(o.temperature.value_or(d.do_sample ? d.temperature : 0.0)),
      top_p_(o.top_p.value_or(d.do_sample ? d.top_p : 1.0)),
      min_p_(o.min_p.value_or(0.0)),
      repetition_penalty_(o.repetition_penalty.value_or(d.repetition_penalty)),
      presence_penalty_(o.presence_penalty),
      frequency_penalty_(o.frequency_penalty),
      top_k_(o.top_k.value_or(d.do_sample ? d.top_k : 0)),
      top_logprobs_(o.top_logprobs),
      rng_(o.seed ? *o.seed : std::random_device{}()) {}

SampleRow Sampler::next_row(std::span<const int32_t> prompt, std::span<const int32_t> generated) {
  SampleRow row;
  if (temperature_ > 0.0) {
    row.inv_temperature = static_cast<float>(1.0 / temperature_);
    row.top_k = static_cast<int32_t>(std::min<int64_t>(top_k_, INT32_MAX));
    row.min_p = static_cast<float>(min_p_);
    row.top_p = top_p_;
    row.u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  }
  row.repetition_penalty = repetition_penalty_;
  row.top_logprobs = top_logprobs_;
  // Hugging Face's repetition penalty over prompt and output; OpenAI's presence and
  // frequency penalties over the output.
  const bool repeat = repetition_penalty_ != 1.0;
  const bool counted = presence_penalty_ != 0.0 || frequency_penalty_ != 0.0;
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
    const float subtract = e.second > 0 ? static_cast<float>(presence_penalty_ + frequency_penalty_ * e.second) : 0.0f;
    row.penalties.push_back({t, subtract, repeat ? 1 : 0});
  }
  return row;
}

}  // namespace fp6serve
