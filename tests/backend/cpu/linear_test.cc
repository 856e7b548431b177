#include "backend/cpu/linear.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backend/cpu/linear_reference.h"
#include "core/half.h"
#include "fp6serve/error.h"
#include "tests/support/random.h"

namespace fp6serve::cpu {
namespace {

std::vector<CpuIsa> isas() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512})
    if (isa_available(isa)) out.push_back(isa);
  return out;
}

// x in `act`, returned as the float values the kernel actually sees.
std::vector<float> make_x(std::mt19937& rng, DType act, int64_t n, int64_t k, std::vector<uint16_t>& x16) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n * k);
  x16.resize(n * k);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = normal(rng);
    if (act == DType::kF16) x16[i] = f32_to_f16_bits(x[i]), x[i] = f16_bits_to_f32(x16[i]);
    if (act == DType::kBF16) x16[i] = f32_to_bf16_bits(x[i]), x[i] = bf16_bits_to_f32(x16[i]);
  }
  return x;
}

// |y - ref| <= 2^-16 * sum|x w| (f32 accumulation over <= 4096 terms) plus the rounding of
// the output to the activation dtype.
void expect_close(const std::vector<float>& y, const std::vector<double>& ref, const std::vector<double>& mag,
                  DType act, const std::string& what) {
  const double out_ulp = act == DType::kF32 ? 0.0 : act == DType::kF16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
  for (size_t i = 0; i < y.size(); ++i) {
    const double tol = std::ldexp(mag[i], -16) + out_ulp * std::fabs(ref[i]) + 1e-30;
    ASSERT_LE(std::fabs(y[i] - ref[i]), tol) << what << " at " << i << ": " << y[i] << " vs " << ref[i];
  }
}

std::vector<float> read_y(const std::vector<uint8_t>& raw, DType act, size_t n) {
  std::vector<float> y(n);
  convert_to_f32(raw.data(), act, y.data(), n);
  return y;
}

TEST(CpuLinear, FpxMatchesTheDoubleReference) {
  std::mt19937 rng(static_cast<uint32_t>(testing::test_seed()));
  struct Shape {
    int64_t rows, cols;
  };
  const Shape shapes[] = {{64, 256}, {37, 301}, {16, 128}, {130, 520}, {1, 17}};
  const int64_t ns[] = {1, 2, 3, 5, 8, 9, 16, 33, 64};
  std::normal_distribution<float> normal(0.0f, 0.05f);
  for (fpx::Format f : {fpx::kE3M2, fpx::kE2M2, fpx::kE2M1, fpx::kE2M3, fpx::kE3M1, fpx::kE5M2}) {
    for (auto [rows, cols] : shapes) {
      std::vector<float> w(rows * cols), bias(rows);
      for (float& v : w) v = normal(rng);
      for (float& v : bias) v = normal(rng);
      const fpx::QuantizedMatrix q = fpx::quantize({w.data(), DType::kF32, rows, cols, "w"}, f);
      const fpx::PackedWeight packed = fpx::pack(q, fpx::default_target(f));
      const fpx::Codec codec(f);
      for (int64_t n : ns) {
        for (DType act : {DType::kF32, DType::kF16, DType::kBF16}) {
          std::vector<uint16_t> x16;
          const std::vector<float> x = make_x(rng, act, n, cols, x16);
          const bool with_bias = n % 2 == 1;
          const std::vector<double> ref = fpx_linear_reference(x.data(), n, q, with_bias ? bias.data() : nullptr);
          std::vector<double> mag(n * rows);
          for (int64_t t = 0; t < n; ++t)
            for (int64_t r = 0; r < rows; ++r) {
              double m = 0;
              for (int64_t c = 0; c < cols; ++c) m += std::fabs(x[t * cols + c] * fpx::dequantize(q, codec, r, c));
              mag[t * rows + r] = m;
            }
          for (CpuIsa isa : isas()) {
            std::vector<uint8_t> y(n * rows * dtype_size(act), 0xFF);  // NaN-poisoned
            const void* xin = act == DType::kF32 ? static_cast<const void*>(x.data()) : x16.data();
            fpx_linear(xin, act, n, packed, with_bias ? bias.data() : nullptr, y.data(), isa);
            expect_close(read_y(y, act, n * rows), ref, mag, act,
                         f.name() + " " + std::to_string(rows) + "x" + std::to_string(cols) +
                             " n=" + std::to_string(n) + " " + dtype_name(act) + " " + isa_name(isa));
          }
        }
      }
    }
  }
}

TEST(CpuLinear, BothTargetsGiveTheSameProducts) {
  std::mt19937 rng(static_cast<uint32_t>(testing::test_seed()));
  std::normal_distribution<float> normal;
  const int64_t rows = 48, cols = 384, n = 4;
  std::vector<float> w(rows * cols), x(n * cols);
  for (float& v : w) v = normal(rng);
  for (float& v : x) v = normal(rng);
  const auto q = fpx::quantize({w.data(), DType::kF32, rows, cols, "w"}, fpx::kE3M2);
  std::vector<float> a(n * rows), b(n * rows);
  fpx_linear(x.data(), DType::kF32, n, fpx::pack(q, DType::kF16), nullptr, a.data());
  fpx_linear(x.data(), DType::kF32, n, fpx::pack(q, DType::kBF16), nullptr, b.data());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-3 * (1 + std::fabs(a[i])));
}

TEST(CpuLinear, DenseMatchesTheDoubleReference) {
  std::mt19937 rng(static_cast<uint32_t>(testing::test_seed()));
  std::normal_distribution<float> normal(0.0f, 0.05f);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{33, 100}, {64, 256}, {5, 3}}) {
    for (DType wd : {DType::kF32, DType::kF16, DType::kBF16}) {
      std::vector<float> wf(rows * cols);
      std::vector<uint16_t> w16(rows * cols);
      for (size_t i = 0; i < wf.size(); ++i) {
        wf[i] = normal(rng);
        if (wd == DType::kF16) w16[i] = f32_to_f16_bits(wf[i]), wf[i] = f16_bits_to_f32(w16[i]);
        if (wd == DType::kBF16) w16[i] = f32_to_bf16_bits(wf[i]), wf[i] = bf16_bits_to_f32(w16[i]);
      }
      const void* wp = wd == DType::kF32 ? static_cast<const void*>(wf.data()) : w16.data();
      for (int64_t n : {1, 4, 7, 64}) {
        for (DType act : {DType::kF32, DType::kBF16}) {
          std::vector<uint16_t> x16;
          const auto x = make_x(rng, act, n, cols, x16);
          const auto ref = dense_linear_reference(x.data(), n, wf.data(), rows, cols, nullptr);
          std::vector<double> mag(n * rows);
          for (int64_t t = 0; t < n; ++t)
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t c = 0; c < cols; ++c) mag[t * rows + r] += std::fabs(x[t * cols + c] * wf[r * cols + c]);
          for (CpuIsa isa : isas()) {
            std::vector<uint8_t> y(n * rows * dtype_size(act), 0xFF);
            const void* xin = act == DType::kF32 ? static_cast<const void*>(x.data()) : x16.data();
            dense_linear(xin, act, n, wp, wd, rows, cols, nullptr, y.data(), isa);
            expect_close(read_y(y, act, n * rows), ref, mag, act,
                         std::string("dense ") + dtype_name(wd) + " " + isa_name(isa));
          }
        }
      }
    }
  }
}

TEST(CpuLinear, BadArgumentsAreErrors) {
  std::vector<float> w(16 * 128, 0.1f), x(128), y(16);
  const auto p = fpx::pack(fpx::quantize({w.data(), DType::kF32, 16, 128, "w"}, fpx::kE3M2), DType::kF16);
  EXPECT_THROW(fpx_linear(x.data(), DType::kI32, 1, p, nullptr, y.data()), Error);
  EXPECT_THROW(fpx_linear(x.data(), DType::kF32, -1, p, nullptr, y.data()), Error);
  EXPECT_THROW(dense_linear(x.data(), DType::kF32, 1, w.data(), DType::kU8, 16, 128, nullptr, y.data()), Error);
}

}  // namespace
}  // namespace fp6serve::cpu
