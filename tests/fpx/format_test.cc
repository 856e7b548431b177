#include "fpx/format.h"

#include <gtest/gtest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <random>
#include <vector>

#include "fp6serve/error.h"
#include "tests/support/random.h"

namespace fp6serve::fpx {
namespace {

const Format kListed[] = {kE3M2, kE2M3,        kE2M2,        kE3M1,        kE2M1,        kE4M3,
                          kE5M2, Format{1, 1}, Format{2, 0}, Format{6, 1}, Format{7, 0}, Format{3, 4}};

// The value of a code straight from the definition, in double.
double value_of(Format f, int code) {
  const int m_bits = f.man_bits;
  const int sign = (code >> (f.exp_bits + m_bits)) & 1;
  const int e = (code >> m_bits) & ((1 << f.exp_bits) - 1);
  const int m = code & ((1 << m_bits) - 1);
  const double frac = static_cast<double>(m) / std::pow(2.0, m_bits);
  const double v = e == 0 ? frac * std::pow(2.0, 1 - f.bias()) : (1.0 + frac) * std::pow(2.0, e - f.bias());
  return sign ? -v : v;
}

TEST(Format, KnownConstantsOfFp6) {
  EXPECT_EQ(kE3M2.bits(), 6);
  EXPECT_EQ(kE3M2.bias(), 3);
  EXPECT_EQ(kE3M2.max_value(), 28.0);
  EXPECT_EQ(kE3M2.min_normal(), 0.25);
  EXPECT_EQ(kE3M2.min_subnormal(), 0.0625);
  EXPECT_EQ(kE2M2.max_value(), 7.0);
  EXPECT_EQ(kE2M3.max_value(), 7.5);
  EXPECT_EQ(kE2M1.max_value(), 6.0);
  EXPECT_EQ(kE3M1.max_value(), 24.0);
  EXPECT_EQ(kE4M3.max_value(), 480.0);  // no NaN code: the top binade is ordinary
  EXPECT_EQ(kE5M2.max_value(), 114688.0);
  const Codec c(kE3M2);
  EXPECT_EQ(c.decode(0b011111), 28.0f);
  EXPECT_EQ(c.decode(0b111111), -28.0f);
  EXPECT_EQ(c.decode(0b000001), 0.0625f);
  EXPECT_EQ(c.decode(0b000100), 0.25f);
  EXPECT_EQ(c.decode(0b001110), 1.5f);
  EXPECT_EQ(c.decode(0b001011), 0.875f);
}

TEST(Format, EveryCodeDecodesExactlyAndEncodesBackToItself) {
  for (Format f : kListed) {
    ASSERT_TRUE(f.valid()) << f.name();
    const Codec codec(f);
    for (int code = 0; code < f.num_codes(); ++code) {
      const float v = codec.decode(static_cast<uint8_t>(code));
      EXPECT_EQ(static_cast<double>(v), value_of(f, code)) << f.name() << " code " << code;
      EXPECT_EQ(codec.encode(v), code) << f.name() << " code " << code << " value " << v;
    }
    // Both zeros exist and keep their sign.
    EXPECT_EQ(codec.encode(0.0f), 0);
    EXPECT_EQ(codec.encode(-0.0f), f.sign_bit());
  }
}

// Compares |a - x| with |b - x| exactly (a plain double subtraction loses the difference
// when x is huge): -1 if a is nearer, 1 if b is, 0 on a tie.
int compare_distance(double a, double b, double x) {
  if (a == b) return 0;
  const bool swap = a > b;
  const double lo = swap ? b : a, hi = swap ? a : b;
  int r;
  if (x <= lo)
    r = -1;
  else if (x >= hi)
    r = 1;
  else {
    const double dl = x - lo, dh = hi - x;  // exact: x lies between two nearby values
    r = dl < dh ? -1 : dl > dh ? 1 : 0;
  }
  return swap ? -r : r;
}

// Nearest code by exhaustive search, ties to the even code, sign of x kept.
uint8_t brute_force_encode(const Codec& codec, float x) {
  const Format f = codec.format();
  const uint32_t sign = std::signbit(x) ? f.sign_bit() : 0u;
  uint32_t best = 0;
  for (uint32_t mag = 1; mag <= f.max_magnitude_code(); ++mag) {
    const int cmp = compare_distance(codec.decode(static_cast<uint8_t>(sign | mag)),
                                     codec.decode(static_cast<uint8_t>(sign | best)), x);
    if (cmp < 0 || (cmp == 0 && (mag & 1) == 0)) best = mag;
  }
  return static_cast<uint8_t>(sign | best);
}

TEST(Format, RoundToNearestEvenMatchesBruteForce) {
  std::mt19937 rng(static_cast<uint32_t>(testing::test_seed()));
  int64_t total = 0;
  for (Format f : kListed) {
    const Codec codec(f);
    std::vector<float> inputs = {0.0f, -0.0f, 1e-45f, -1e-45f, 1e30f, -1e30f, FLT_MAX, -FLT_MAX};
    EXPECT_EQ(codec.encode(INFINITY), f.max_magnitude_code());  // saturates
    // Every midpoint between neighbouring magnitudes (the ties), and a hair either side.
    for (uint32_t mag = 0; mag < f.max_magnitude_code(); ++mag) {
      const float a = codec.decode(static_cast<uint8_t>(mag)), b = codec.decode(static_cast<uint8_t>(mag + 1));
      const float mid = (a + b) / 2;
      for (float v : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
        inputs.push_back(v);
        inputs.push_back(-v);
      }
    }
    // Log-uniform magnitudes from far below the smallest subnormal to far above the max.
    const double lo = std::log2(f.min_subnormal()) - 4, hi = std::log2(f.max_value()) + 4;
    std::uniform_real_distribution<double> exponent(lo, hi);
    std::bernoulli_distribution negative(0.5);
    while (inputs.size() < 1000000) {
      const auto v = static_cast<float>(std::exp2(exponent(rng)));
      inputs.push_back(negative(rng) ? -v : v);
    }
    for (float x : inputs) {
      ASSERT_EQ(codec.encode(x), brute_force_encode(codec, x))
          << f.name() << " x=" << x << " (bits 0x" << std::hex << std::bit_cast<uint32_t>(x) << ")";
    }
    total += static_cast<int64_t>(inputs.size());
  }
  EXPECT_GE(total, 1000000);
}

TEST(Format, ParsesNamesAndRejectsOthers) {
  EXPECT_EQ(parse_format("fp6"), kE3M2);
  EXPECT_EQ(parse_format("FP5"), kE2M2);
  EXPECT_EQ(parse_format("fp4"), kE2M1);
  EXPECT_EQ(parse_format("e2m3"), kE2M3);
  EXPECT_EQ(parse_format("e5m2"), kE5M2);
  EXPECT_EQ(kE3M2.name(), "e3m2");
  for (const char* bad : {"", "fp7x", "e0m3", "e5m3", "e1m0", "e3m", "int6"}) {
    try {
      parse_format(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("e3m2"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(Codec(Format{0, 3}), Error);
}

}  // namespace
}  // namespace fp6serve::fpx
