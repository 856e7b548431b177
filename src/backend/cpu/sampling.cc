#include "backend/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/thread_pool.h"

namespace fp6serve::cpu {

namespace {

// The largest key K with sum(mass of keys >= K) >= target, over candidates (key, mass): the
// most likely candidates are sorted a growing prefix at a time (64, 256, ...), not all.
uint32_t threshold_by_mass(std::vector<std::pair<uint32_t, uint64_t>>& cand, uint64_t target) {
  auto by_key = [](const auto& a, const auto& b) { return a.first > b.first; };
  for (size_t k = std::min<size_t>(64, cand.size());; k = std::min(cand.size(), k * 4)) {
    std::partial_sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(k), cand.end(), by_key);
    uint64_t cum = 0;
    for (size_t i = 0; i < k; ++i) {
      cum += cand[i].second;
      if (cum >= target) return cand[i].first;
    }
    if (k == cand.size()) return cand.empty() ? 0 : cand.back().first;
  }
}

}  // namespace

Sample sample_row(const float* logits, int64_t vocab, const SampleRow& row, SampleScratch& scratch) {
  std::vector<float>& work = scratch.work;
  Sample out;
  double lse = 0;  // log-sum-exp of the raw logits, for log-probabilities
  if (row.top_logprobs >= 0) {
    const float mx = *std::max_element(logits, logits + vocab);
    double z = 0;
    for (int64_t i = 0; i < vocab; ++i) z += std::exp(static_cast<double>(logits[i] - mx));
    lse = mx + std::log(z);
    std::vector<int32_t>& order = scratch.order;
    order.resize(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    const auto n = static_cast<std::ptrdiff_t>(std::min<int64_t>(row.top_logprobs, vocab));
    std::partial_sort(order.begin(), order.begin() + n, order.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    for (std::ptrdiff_t i = 0; i < n; ++i) out.top.push_back({order[i], static_cast<float>(logits[order[i]] - lse)});
  }

  work.assign(logits, logits + vocab);
  for (const PenaltyEntry& e : row.penalties)
    if (e.token >= 0 && e.token < vocab) work[e.token] = sampling::penalize(work[e.token], e, row.repetition_penalty);
  const auto best = static_cast<int32_t>(std::max_element(work.begin(), work.end()) - work.begin());  // first max
  if (row.inv_temperature == 0.0f) {
    out.token = best;
  } else {
    const float mx = work[best];
    for (float& v : work) v = (v - mx) * row.inv_temperature;  // z <= 0
    uint32_t k_floor = 0;                                      // top-k: keys below the k-th largest go
    if (row.top_k > 0 && row.top_k < vocab) {
      std::vector<uint32_t>& keys = scratch.keys;
      keys.resize(static_cast<size_t>(vocab));
      for (int64_t i = 0; i < vocab; ++i) keys[i] = sampling::order_key(work[i]);
      std::nth_element(keys.begin(), keys.begin() + (row.top_k - 1), keys.end(), std::greater<>());
      k_floor = keys[row.top_k - 1];
    }
    uint64_t total = 0;
    for (float& v : work) {
      const float w = sampling::order_key(v) >= k_floor ? sampling::exp_nonpositive(v) : 0.0f;
      v = w < row.min_p ? 0.0f : w;
      total += sampling::mass(v);
    }
    if (row.top_p < 1.0) {
      std::vector<std::pair<uint32_t, uint64_t>>& cand = scratch.cand;
      cand.clear();
      for (float v : work)
        if (v > 0.0f) cand.emplace_back(sampling::order_key(v), sampling::mass(v));
      const uint32_t p_floor = threshold_by_mass(cand, sampling::top_p_target(row.top_p, total));
      total = 0;
      for (float& v : work) {
        if (sampling::order_key(v) < p_floor) v = 0.0f;
        total += sampling::mass(v);
      }
    }
    const uint64_t r = sampling::draw_point(row.u, total);
    uint64_t cum = 0;
    out.token = best;
    for (int64_t i = 0; i < vocab; ++i) {
      cum += sampling::mass(work[i]);
      if (cum > r) {
        out.token = static_cast<int32_t>(i);
        break;
      }
    }
  }
  if (row.top_logprobs >= 0) out.logprob = static_cast<float>(logits[out.token] - lse);
  return out;
}

std::vector<Sample> sample_rows(const float* logits, int64_t vocab, const std::vector<SampleRow>& rows) {
  std::vector<Sample> out(rows.size());
  ThreadPool::global()->parallel_for(static_cast<int64_t>(rows.size()), [&](int64_t b, int64_t e) {
    SampleScratch scratch;
    for (int64_t r = b; r < e; ++r) out[r] = sample_row(logits + r * vocab, vocab, rows[r], scratch);
  });
  return out;
}

}  // namespace fp6serve::cpu
