// GPU sampling against the CPU reference (kernels/sampling.h): the same token for every row,
// bit for bit, over fresh random logits and parameters; log-probabilities to rounding.
#include "backend/cuda/sampling.h"

#include <gtest/gtest.h>

#include <random>

#include "backend/cpu/sampling.h"
#include "backend/cuda/device.h"
#include "core/half.h"
#include "tests/support/random.h"

namespace fp6serve {
namespace {

TEST(CudaSampling, EqualsTheCpuReferenceRowForRow) {
  if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU";
  std::mt19937_64 rng(testing::test_seed());
  for (const DType dtype : {DType::kF16, DType::kBF16})
    for (const int64_t vocab : {int64_t{1000}, int64_t{32000}, int64_t{128256}}) {
      SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << ", vocab " << vocab);
      const int rows = 48;
      // Logits of a real model's spread, rounded to the dtype; some exact ties.
      std::normal_distribution<float> normal(0.0f, 3.0f);
      std::vector<uint16_t> bits(static_cast<size_t>(rows * vocab));
      std::vector<float> logits(bits.size());
      for (size_t i = 0; i < bits.size(); ++i) {
        const float v = i % 97 == 0 ? 4.0f : normal(rng);
        bits[i] = dtype == DType::kF16 ? f32_to_f16_bits(v) : f32_to_bf16_bits(v);
        logits[i] = dtype == DType::kF16 ? f16_bits_to_f32(bits[i]) : bf16_bits_to_f32(bits[i]);
      }
      std::vector<SampleRow> specs(rows);
      std::uniform_real_distribution<double> uni(0.0, 1.0);
      for (int r = 0; r < rows; ++r) {
        SampleRow& s = specs[r];
        const int kind = r % 8;  // greedy, plain, top-k, top-p, min-p, all, penalties, logprobs
        if (kind != 0) s.inv_temperature = static_cast<float>(1.0 / (0.3 + 1.5 * uni(rng)));
        if (kind == 2 || kind == 5) s.top_k = 1 + static_cast<int32_t>(rng() % 200);
        if (kind == 3 || kind == 5) s.top_p = 0.05 + 0.9 * uni(rng);
        if (kind == 4 || kind == 5) s.min_p = static_cast<float>(0.2 * uni(rng));
        if (kind == 6) {
          s.repetition_penalty = 1.3;
          for (int k = 0; k < 300; ++k)
            s.penalties.push_back({static_cast<int32_t>(rng() % vocab), static_cast<float>(uni(rng)), k % 2});
          std::sort(s.penalties.begin(), s.penalties.end(), [](auto& a, auto& b) { return a.token < b.token; });
          s.penalties.erase(
              std::unique(s.penalties.begin(), s.penalties.end(), [](auto& a, auto& b) { return a.token == b.token; }),
              s.penalties.end());
        }
        if (kind == 7 || r % 5 == 0) s.top_logprobs = static_cast<int32_t>(rng() % 21);
        s.u = uni(rng);
      }
      cuda::DeviceBuffer dlogits(bits.size() * 2), scratch;
      dlogits.upload(bits.data(), bits.size() * 2);
      const std::vector<Sample> got = cuda::sample_rows(dlogits.data(), dtype, vocab, specs, scratch, nullptr);
      const std::vector<Sample> want = cpu::sample_rows(logits.data(), vocab, specs);
      ASSERT_EQ(got.size(), want.size());
      for (int r = 0; r < rows; ++r) {
        SCOPED_TRACE(::testing::Message() << "row " << r << " (kind " << r % 8 << ")");
        EXPECT_EQ(got[r].token, want[r].token);
        if (specs[r].top_logprobs < 0) continue;
        EXPECT_NEAR(got[r].logprob, want[r].logprob, 1e-4);
        ASSERT_EQ(got[r].top.size(), want[r].top.size());
        for (size_t k = 0; k < got[r].top.size(); ++k) {
          EXPECT_EQ(got[r].top[k].token, want[r].top[k].token);
          EXPECT_NEAR(got[r].top[k].logprob, want[r].top[k].logprob, 1e-4);
        }
      }
    }
}

}  // namespace
}  // namespace fp6serve
