#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
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

// Temperature, top-k, min-p and top-p over work_, in O(vocab) plus small partial sorts: the
// nucleus is found by sorting a growing prefix (64, 256, ... candidates), not the vocabulary.
int32_t Sampler::draw() {
  const auto vocab = static_cast<int32_t>(work_.size());
  const auto inv_t = static_cast<float>(1.0 / params_.temperature);
  cand_.clear();
  float mx = -INFINITY;
  for (float l : work_) mx = std::max(mx, l);
  for (int32_t i = 0; i < vocab; ++i) cand_.push_back({(work_[i] - mx) * inv_t, i});
  auto by_logit = [](const Candidate& a, const Candidate& b) { return a.weight > b.weight; };
  if (params_.top_k > 0 && params_.top_k < vocab) {
    std::nth_element(cand_.begin(), cand_.begin() + params_.top_k - 1, cand_.end(), by_logit);
    cand_.resize(static_cast<size_t>(params_.top_k));
  }
  for (Candidate& c : cand_) c.weight = std::exp(c.weight);  // the best candidate has weight 1
  if (params_.min_p > 0.0) {
    const auto floor = static_cast<float>(params_.min_p);
    std::erase_if(cand_, [&](const Candidate& c) { return c.weight < floor; });
  }
  double total = 0;
  for (const Candidate& c : cand_) total += c.weight;
  if (params_.top_p < 1.0) {
    const double target = params_.top_p * total;
    for (size_t k = std::min<size_t>(64, cand_.size());; k = std::min(cand_.size(), k * 4)) {
      std::partial_sort(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(k), cand_.end(), by_logit);
      double cum = 0;
      size_t cut = 0;
      while (cut < k && cum < target) cum += cand_[cut++].weight;
      if (cum >= target || k == cand_.size()) {
        cand_.resize(cut);
        total = cum;
        break;
      }
    }
  }
  double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  for (const Candidate& c : cand_) {
    r -= c.weight;
    if (r < 0) return c.token;
  }
  return cand_.back().token;
}

Sample Sampler::sample(std::span<const float> logits, std::span<const int32_t> prompt,
                       std::span<const int32_t> generated) {
  const auto vocab = static_cast<int32_t>(logits.size());
  Sample out;
  float lse = 0.0f;  // log-sum-exp of the raw logits, for log-probabilities
  if (params_.top_logprobs >= 0) {
    const float mx = *std::max_element(logits.begin(), logits.end());
    double z = 0;
    for (float l : logits) z += std::exp(static_cast<double>(l - mx));
    lse = static_cast<float>(mx + std::log(z));
    order_.resize(static_cast<size_t>(vocab));
    std::iota(order_.begin(), order_.end(), 0);
    const auto n = static_cast<std::ptrdiff_t>(std::min<int64_t>(params_.top_logprobs, vocab));
    std::partial_sort(order_.begin(), order_.begin() + n, order_.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    for (std::ptrdiff_t i = 0; i < n; ++i) out.top.push_back({order_[i], logits[order_[i]] - lse});
  }
  work_.assign(logits.begin(), logits.end());

  // Penalties (Hugging Face's repetition penalty over prompt and output; OpenAI's presence
  // and frequency penalties over the output).
  if (params_.repetition_penalty != 1.0) {
    auto penalize = [&](int32_t t) {
      if (t < 0 || t >= vocab) return;
      float& l = work_[t];
      l = l > 0 ? static_cast<float>(l / params_.repetition_penalty) : static_cast<float>(l * params_.repetition_penalty);
    };
    std::vector<bool> seen(static_cast<size_t>(vocab), false);
    for (auto span : {prompt, generated})
      for (int32_t t : span)
        if (t >= 0 && t < vocab && !seen[t]) seen[t] = true, penalize(t);
  }
  if (params_.presence_penalty != 0.0 || params_.frequency_penalty != 0.0) {
    std::unordered_map<int32_t, int> counts;
    for (int32_t t : generated) ++counts[t];
    for (const auto& [t, c] : counts)
      if (t >= 0 && t < vocab)
        work_[t] -= static_cast<float>(params_.presence_penalty + params_.frequency_penalty * c);
  }

  if (params_.temperature == 0.0) {
    out.token = static_cast<int32_t>(std::max_element(work_.begin(), work_.end()) - work_.begin());
  } else {
    out.token = draw();
  }
  if (params_.top_logprobs >= 0) out.logprob = logits[out.token] - lse;
  return out;
}

}  // namespace fp6serve
