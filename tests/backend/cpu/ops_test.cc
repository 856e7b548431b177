// CPU transformer ops on cases whose answers are known independently.
#include "backend/cpu/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "tests/support/random.h"

namespace fp6serve::cpu {
namespace {

// Sliding-window attention equals full attention over a cache that holds only the window.
TEST(CpuOps, SlidingWindowAttentionSeesOnlyTheWindow) {
  const int64_t heads = 4, kv_heads = 2, d = 16, block = 4, ctx = 40, window = 7;
  std::mt19937 rng(static_cast<uint32_t>(testing::test_seed()));
  std::normal_distribution<float> normal;
  std::vector<float> k(16 * block * kv_heads * d), v(k.size()), q(heads * d);
  for (auto* vec : {&k, &v, &q})
    for (float& x : *vec) x = normal(rng);
  std::vector<int32_t> table(10);
  std::iota(table.begin(), table.end(), 0);
  const PagedKv kv{k.data(), v.data(), 16, block, kv_heads, d};
  const AttentionSeq seq{0, 1, ctx - 1, table.data(), 10};
  std::vector<float> windowed(heads * d), reference(heads * d);
  attention(q.data(), heads * d, heads, &seq, 1, kv, window, windowed.data());
  // The same query at position window-1 over a cache rebuilt from the last `window` slots.
  std::vector<float> k2(k.size(), 0.0f), v2(v.size(), 0.0f);
  const int64_t row = kv_heads * d;
  for (int64_t j = 0; j < window; ++j) {
    std::copy_n(k.begin() + (ctx - window + j) * row, row, k2.begin() + j * row);
    std::copy_n(v.begin() + (ctx - window + j) * row, row, v2.begin() + j * row);
  }
  const PagedKv kv2{k2.data(), v2.data(), 16, block, kv_heads, d};
  const AttentionSeq seq2{0, 1, window - 1, table.data(), 10};
  attention(q.data(), heads * d, heads, &seq2, 1, kv2, 0, reference.data());
  for (size_t i = 0; i < windowed.size(); ++i) EXPECT_NEAR(windowed[i], reference[i], 1e-6f);
}

// RoPE rotates each pair by pos * inv_freq: position 0 is the identity, and two positions
// compose.
TEST(CpuOps, RopeIsARotationByPositionTimesFrequency) {
  const int64_t d = 8;
  std::vector<float> inv = {1.0f, 0.5f, 0.25f, 0.125f};
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8}, y = x;
  const int32_t zero = 0, three = 3;
  rope(y.data(), 1, d, 1, d, &zero, inv.data());
  EXPECT_EQ(y, x);
  rope(y.data(), 1, d, 1, d, &three, inv.data());
  for (int j = 0; j < 4; ++j) {
    const float a = 3.0f * inv[j];
    EXPECT_NEAR(y[j], x[j] * std::cos(a) - x[j + 4] * std::sin(a), 1e-6f);
    EXPECT_NEAR(y[j + 4], x[j + 4] * std::cos(a) + x[j] * std::sin(a), 1e-6f);
  }
}

}  // namespace
}  // namespace fp6serve::cpu
