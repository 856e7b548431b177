#include "fpx/pack.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <set>

#include "core/half.h"
#include "fp6serve/error.h"
#include "tests/support/random.h"

namespace fp6serve::fpx {
namespace {

const Format kFormats[] = {kE3M2, kE2M3,        kE2M2,        kE3M1,        kE2M1,       kE4M3,
                           kE5M2, Format{1, 1}, Format{2, 0}, Format{3, 4}, Format{7, 0}};

std::vector<PackPlan> all_plans() {
  std::vector<PackPlan> plans;
  for (Format f : kFormats)
    for (DType t : {DType::kF16, DType::kBF16})
      if (target_supported(f, t)) plans.push_back(pack_plan(f, t));
  return plans;
}

std::string describe(const PackPlan& p) {
  return p.format.name() + "/" + dtype_name(p.target);
}

TEST(PackPlan, Fp6IsFourPlusTwoWithTheBitsInPlace) {
  constexpr PackPlan p = make_pack_plan(kE3M2, DType::kF16);  // evaluated at compile time
  static_assert(p.num_segments == 2);
  static_assert(p.segments[0].width == 4 && p.segments[1].width == 2);
  static_assert(p.unit_bytes() == 1536);
  // Low 4 code bits (e1 e0 m1 m0) -> half bits 8..11; sign and e2 -> 15 and 12.
  for (int k = 0; k < 4; ++k) {
    EXPECT_EQ(p.segments[0].code_bits[k], k);
    EXPECT_EQ(p.segments[0].targets[k], 8 + k);
  }
  EXPECT_EQ(p.segments[1].code_bits[0], 4);
  EXPECT_EQ(p.segments[1].targets[0], 12);
  EXPECT_EQ(p.segments[1].code_bits[1], 5);
  EXPECT_EQ(p.segments[1].targets[1], 15);
  EXPECT_EQ(p.raw_exponent_offset(), -12);
  const PackPlan b = pack_plan(kE3M2, DType::kBF16);
  EXPECT_EQ(b.num_segments, 2);
  EXPECT_EQ(b.segments[1].targets[0], 9);
  EXPECT_EQ(b.raw_exponent_offset(), -124);
}

TEST(PackPlan, SegmentWidthsPerFormat) {
  auto widths = [](Format f, DType t) {
    const PackPlan p = pack_plan(f, t);
    std::string s;
    for (int i = 0; i < p.num_segments; ++i) s += (i ? "+" : "") + std::to_string(p.segments[i].width);
    return s;
  };
  EXPECT_EQ(widths(kE2M2, DType::kF16), "4+1");
  EXPECT_EQ(widths(kE3M1, DType::kF16), "4+1");
  EXPECT_EQ(widths(kE2M3, DType::kF16), "4+2");
  EXPECT_EQ(widths(kE2M1, DType::kF16), "2+2");  // {9,10,11,15} does not tile Z16
  EXPECT_EQ(widths(kE2M1, DType::kBF16), "2+2");
  EXPECT_EQ(widths(Format{2, 0}, DType::kF16), "2+1");
  EXPECT_EQ(widths(kE4M3, DType::kF16), "4+2+2");  // no 4-set with the sign tiles
  EXPECT_EQ(widths(kE4M3, DType::kBF16), "4+4");
  EXPECT_EQ(widths(Format{3, 4}, DType::kF16), "4+2+2");
}

TEST(PackPlan, UnsupportedTargetsAreClearErrors) {
  EXPECT_FALSE(target_supported(kE5M2, DType::kF16));
  try {
    pack_plan(kE5M2, DType::kF16);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("e5m2"), std::string::npos);
  }
  EXPECT_EQ(default_target(kE5M2), DType::kBF16);
  EXPECT_EQ(default_target(kE3M2), DType::kF16);
  EXPECT_THROW(pack_plan(kE3M2, DType::kF32), Error);
}

TEST(PackPlan, EveryPlanPartitionsCodeBitsAndWordBits) {
  for (const PackPlan& p : all_plans()) {
    uint32_t code_bits = 0;
    int total = 0;
    for (int s = 0; s < p.num_segments; ++s) {
      const Segment& seg = p.segments[s];
      total += seg.width;
      uint32_t word_bits = 0;
      for (int h = 0; h < seg.slots(); ++h)
        for (int k = 0; k < seg.width; ++k)
          for (int half = 0; half < 2; ++half) {
            const uint32_t bit = 1u << ((seg.targets[k] + seg.translates[h] + 16 * half) % 32);
            EXPECT_FALSE(word_bits & bit) << describe(p);
            word_bits |= bit;
          }
      EXPECT_EQ(word_bits, 0xFFFFFFFFu) << describe(p) << " segment " << s;
      for (int k = 0; k < seg.width; ++k) code_bits |= 1u << seg.code_bits[k];
    }
    EXPECT_EQ(total, p.format.bits()) << describe(p);
    EXPECT_EQ(code_bits, (1u << p.format.bits()) - 1) << describe(p);
    // Word offsets are a bijection onto the unit's 32-bit words.
    std::set<int> offsets;
    for (int s = 0; s < p.num_segments; ++s)
      for (int lane = 0; lane < kWarpLanes; ++lane)
        for (int w = 0; w < p.segments[s].words_per_lane(); ++w) offsets.insert(p.word_offset(s, lane, w));
    EXPECT_EQ(static_cast<int>(offsets.size()) * 4, p.unit_bytes()) << describe(p);
    EXPECT_EQ(*offsets.rbegin(), p.unit_bytes() - 4);
  }
}

std::vector<uint8_t> random_codes(std::mt19937& rng, Format f, int64_t rows, int64_t cols) {
  std::uniform_int_distribution<int> code(0, f.num_codes() - 1);
  std::vector<uint8_t> codes(rows * cols);
  for (auto& c : codes) c = static_cast<uint8_t>(code(rng));
  return codes;
}

// Emulates what a GPU thread does: per fragment and register, OR the rotated and masked
// segment words. The half it gets must be the raw placement of the right element's code,
// and that half's value must be the code's value times 2^raw_exponent_offset.
TEST(PackPlan, EmulatedGpuLanesGetTheirFragmentsInPlace) {
  std::mt19937 rng(static_cast<uint32_t>(testing::test_seed()));
  for (const PackPlan& plan : all_plans()) {
    const Format f = plan.format;
    const Codec codec(f);
    const int64_t rows = 32, cols = 256;
    const auto codes = random_codes(rng, f, rows, cols);
    const std::vector<float> scales(rows, 1.0f);
    const PackedWeight p = pack(codes.data(), scales.data(), rows, cols, f, plan.target);
    const int base = (plan.target == DType::kF16 ? 10 : 7) - f.man_bits;
    for (int64_t rt = 0; rt < p.row_tiles(); ++rt)
      for (int64_t u = 0; u < p.col_units(); ++u)
        for (int lane = 0; lane < kWarpLanes; ++lane)
          for (int frag = 0; frag < kUnitFragments; ++frag)
            for (int reg = 0; reg < 4; ++reg) {
              uint32_t h2 = 0;
              for (int s = 0; s < plan.num_segments; ++s) {
                const Segment& seg = plan.segments[s];
                const int word = frag / seg.fragments_per_word();
                const int slot = (frag % seg.fragments_per_word()) * 4 + reg;
                uint32_t w;
                std::memcpy(&w, p.unit(rt, u) + plan.word_offset(s, lane, word), 4);
                h2 |= std::rotl(w, seg.rotation(slot)) & seg.half2_mask();
              }
              for (int half = 0; half < 2; ++half) {
                const int64_t row = rt * kUnitRows + unit_row(lane, reg);
                const int64_t col = u * kUnitCols + unit_col(lane, reg, half, frag);
                const uint8_t code = codes[row * cols + col];
                const uint32_t raw = ((code & f.sign_bit()) ? 0x8000u : 0u) | ((code & f.max_magnitude_code()) << base);
                const uint16_t got = static_cast<uint16_t>(h2 >> (16 * half));
                ASSERT_EQ(got, raw) << describe(plan) << " lane " << lane << " frag " << frag << " reg " << reg;
                const float value = plan.target == DType::kF16 ? f16_bits_to_f32(got) : bf16_bits_to_f32(got);
                ASSERT_EQ(std::ldexp(static_cast<double>(value), -plan.raw_exponent_offset()),
                          static_cast<double>(codec.decode(code)))
                    << describe(plan) << " code " << int(code);
              }
            }
  }
}

TEST(Pack, UnpackIsTheExactInverseOnRandomShapes) {
  std::mt19937 rng(static_cast<uint32_t>(testing::test_seed()));
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1},    {15, 127}, {16, 128}, {17, 129},
                                                {33, 300}, {64, 256}, {5, 1000}, {100, 7}};
  for (const PackPlan& plan : all_plans()) {
    for (auto [rows, cols] : shapes) {
      const auto codes = random_codes(rng, plan.format, rows, cols);
      std::vector<float> scales(rows);
      for (auto& s : scales) s = std::uniform_real_distribution<float>(0.1f, 2.0f)(rng);
      const PackedWeight p = pack(codes.data(), scales.data(), rows, cols, plan.format, plan.target);
      EXPECT_EQ(p.rows_padded() % kUnitRows, 0);
      EXPECT_EQ(p.cols_padded() % kUnitCols, 0);
      EXPECT_EQ(p.bytes(), static_cast<size_t>(p.rows_padded() * p.cols_padded() * plan.format.bits() / 8));
      const QuantizedMatrix q = unpack(p);
      ASSERT_EQ(q.codes, codes) << describe(plan) << " " << rows << "x" << cols;
      ASSERT_EQ(q.scales, scales);
      // Padding is +0 with scale 0.
      uint8_t unit_codes[kUnitRows * kUnitCols];
      unpack_unit(plan, p.unit(p.row_tiles() - 1, p.col_units() - 1), unit_codes);
      const int64_t r0 = (p.row_tiles() - 1) * kUnitRows, c0 = (p.col_units() - 1) * kUnitCols;
      for (int r = 0; r < kUnitRows; ++r)
        for (int c = 0; c < kUnitCols; ++c)
          if (r0 + r >= rows || c0 + c >= cols) ASSERT_EQ(unit_codes[r * kUnitCols + c], 0);
      for (int64_t r = rows; r < p.rows_padded(); ++r) EXPECT_EQ(p.scales[r], 0.0f);
    }
  }
}

TEST(Pack, QuantizePackEqualsPackOfQuantize) {
  std::mt19937 rng(static_cast<uint32_t>(testing::test_seed()));
  std::normal_distribution<float> normal;
  const int64_t rows = 45, cols = 390;
  std::vector<uint16_t> w(rows * cols);
  for (auto& v : w) v = f32_to_bf16_bits(normal(rng));
  const MatrixView view{w.data(), DType::kBF16, rows, cols, "w"};
  for (Format f : {kE3M2, kE2M2, kE2M1})
    for (DType t : {DType::kF16, DType::kBF16}) {
      const PackedWeight a = quantize_pack(view, f, t);
      const PackedWeight b = pack(quantize(view, f), t);
      ASSERT_EQ(a.bytes(), b.bytes());
      EXPECT_EQ(std::memcmp(a.data.data(), b.data.data(), a.bytes()), 0) << f.name();
      EXPECT_EQ(a.scales, b.scales);
    }
}

}  // namespace
}  // namespace fp6serve::fpx
