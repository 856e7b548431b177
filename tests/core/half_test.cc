#include "core/half.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>

#include "tests/support/random.h"

namespace fp6serve {
namespace {

// The compiler's _Float16 is the reference; clang before 15 lacks it on x86 (the GCC build,
// which CI runs first, covers these two tests there).
#ifdef __FLT16_MAX__
#define FP6_REFERENCE_F16 1
using ReferenceF16 = _Float16;
#else
#define FP6_REFERENCE_F16 0
using ReferenceF16 = uint16_t;  // never converted: the tests skip
#endif

TEST(Half, EveryF16DecodesLikeTheCompiler) {
  if (!FP6_REFERENCE_F16) GTEST_SKIP() << "this compiler has no _Float16";
  for (uint32_t h = 0; h < 65536; ++h) {
    const auto expected = static_cast<float>(std::bit_cast<ReferenceF16>(static_cast<uint16_t>(h)));
    const float got = f16_bits_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(got)) << h;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(expected)) << h;
    }
  }
}

TEST(Half, F32ToF16RoundsLikeTheCompiler) {
  if (!FP6_REFERENCE_F16) GTEST_SKIP() << "this compiler has no _Float16";
  std::mt19937 rng(static_cast<uint32_t>(testing::test_seed()));
  std::uniform_int_distribution<uint32_t> bits;
  auto check = [](uint32_t u) {
    const float f = std::bit_cast<float>(u);
    const auto expected = std::bit_cast<uint16_t>(static_cast<ReferenceF16>(f));
    const uint16_t got = f32_to_f16_bits(f);
    if (std::isnan(f)) {
      EXPECT_EQ(got & 0x7E00u, 0x7E00u) << u;
    } else {
      ASSERT_EQ(got, expected) << "float bits 0x" << std::hex << u;
    }
  };
  for (int i = 0; i < 2000000; ++i) check(bits(rng));
  // Dense sweep of the FP16 range, including every rounding boundary near subnormals.
  for (uint32_t u = 0x33000000u; u < 0x47800000u; u += 0x1FFu) check(u), check(u | 0x80000000u);
  for (uint32_t u : {0u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x477FF000u, 0x477FEFFFu, 0x38800000u, 0x387FFFFFu})
    check(u);
}

TEST(Half, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16_bits(1.0f), 0x3F80);
  EXPECT_EQ(f32_to_bf16_bits(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie -> even
  EXPECT_EQ(f32_to_bf16_bits(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie -> even (up)
  EXPECT_EQ(f32_to_bf16_bits(std::bit_cast<float>(0x3F808001u)), 0x3F81);
  EXPECT_EQ(f32_to_bf16_bits(std::bit_cast<float>(0x7F7FFFFFu)), 0x7F80);  // overflow to Inf
  EXPECT_TRUE(std::isnan(bf16_bits_to_f32(f32_to_bf16_bits(NAN))));
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_bits_to_f32(static_cast<uint16_t>(h));
    if (!std::isnan(f)) EXPECT_EQ(f32_to_bf16_bits(f), h);
  }
}

}  // namespace
}  // namespace fp6serve
