// The sampling semantics of kernels/sampling.h, on the CPU reference: the exact exponential,
// thresholds that keep ties, the draw in vocabulary order. (tests/engine/sampling_test.cc
// covers the request-level behaviour; tests/cuda/sampling_test.cc the GPU twin.)
#include "backend/cpu/sampling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "tests/support/random.h"

namespace fp6serve {
namespace {

TEST(SamplingMath, ExpNonpositiveIsAccurateAndZeroBelowItsRange) {
  std::mt19937 rng(static_cast<uint32_t>(testing::test_seed()));
  std::uniform_real_distribution<float> z(-86.99f, 0.0f);  // above the cut to 0 at -87
  for (int i = 0; i < 100000; ++i) {
    const float x = i == 0 ? 0.0f : z(rng);
    const double want = std::exp(static_cast<double>(x));
    EXPECT_NEAR(sampling::exp_nonpositive(x) / want, 1.0, 2.5e-7) << x;
  }
  EXPECT_EQ(sampling::exp_nonpositive(-87.0f), 0.0f);
  EXPECT_EQ(sampling::exp_nonpositive(-INFINITY), 0.0f);
  EXPECT_EQ(sampling::exp_nonpositive(NAN), 0.0f);
}

TEST(SamplingMath, OrderKeysSortLikeTheFloats) {
  const std::vector<float> v = {-INFINITY, -3.5f, -1e-30f, -0.0f, 0.0f, 1e-30f, 2.0f, INFINITY};
  for (size_t i = 0; i + 1 < v.size(); ++i) EXPECT_LE(sampling::order_key(v[i]), sampling::order_key(v[i + 1]));
  EXPECT_LT(sampling::order_key(-3.5f), sampling::order_key(-1e-30f));
  EXPECT_LT(sampling::order_key(1e-30f), sampling::order_key(2.0f));
}

Sample sample(const std::vector<float>& logits, const SampleRow& row) {
  cpu::SampleScratch work;
  return cpu::sample_row(logits.data(), static_cast<int64_t>(logits.size()), row, work);
}

TEST(SamplingRow, TheDrawWalksTheKeptTokensInVocabularyOrder) {
  // Equal weights: u in [k/4, (k+1)/4) picks token k.
  SampleRow row;
  row.inv_temperature = 1.0f;
  for (int k = 0; k < 4; ++k) {
    row.u = (k + 0.5) / 4;
    EXPECT_EQ(sample({2.0f, 2.0f, 2.0f, 2.0f}, row).token, k);
  }
  // Top-k 2 keeps the tokens tied with the second largest: 1, 2 and 3 (not 0).
  row.top_k = 2;
  for (double u : {0.01, 0.5, 0.99}) {
    row.u = u;
    EXPECT_NE(sample({1.0f, 5.0f, 4.0f, 4.0f}, row).token, 0);
  }
  row.u = 0.999;
  EXPECT_EQ(sample({1.0f, 5.0f, 4.0f, 4.0f}, row).token, 3);
  // Top-p: weights 1, e^-1, e^-1 of total ~1.74; p = 0.6 needs token 1 only.
  row.top_k = 0;
  row.top_p = 0.5;
  for (double u : {0.0, 0.5, 0.999}) {
    row.u = u;
    EXPECT_EQ(sample({0.0f, 3.0f, 2.0f, 2.0f}, row).token, 1);
  }
  // p = 0.7 reaches into the tie at e^-1: both tied tokens are kept.
  row.top_p = 0.7;
  row.u = 0.999;
  EXPECT_EQ(sample({0.0f, 3.0f, 2.0f, 2.0f}, row).token, 3);
}

TEST(SamplingRow, GreedyTakesTheLowestIdAmongTies) {
  EXPECT_EQ(sample({1.0f, 3.0f, 0.0f, 3.0f}, SampleRow{}).token, 1);
}

}  // namespace
}  // namespace fp6serve
