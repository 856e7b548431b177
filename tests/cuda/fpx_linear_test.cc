// The GPU linear layers against the double-precision CPU reference on fresh random inputs,
// outputs NaN-poisoned before every launch.
//
// Bounds (relative L2 over the output): FP16 2e-3, BF16 1e-2. The output's own rounding is
// 2^-11 (FP16) and 2^-8 (BF16) relative per element, about a quarter of that in L2; products are
// exact and accumulate in FP32, and the dequantize + cuBLAS path adds the rounding of each
// scaled weight to 16 bits (same order, averaging out over K).
#include "kernels/cuda/fpx_linear.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/gpu.h"
#include "core/half.h"
#include "fpx/pack.h"
#include "kernels/cpu/linear_reference.h"

namespace fp6serve {
namespace {

struct Case {
  DType act;
  std::mt19937 rng{std::random_device{}()};

  uint16_t bits(float v) const { return act == DType::kF16 ? f32_to_f16_bits(v) : f32_to_bf16_bits(v); }
  float value(uint16_t b) const { return act == DType::kF16 ? f16_bits_to_f32(b) : bf16_bits_to_f32(b); }
  double bound() const { return act == DType::kF16 ? 2e-3 : 1e-2; }
};

double rel_l2(const std::vector<uint16_t>& y, const std::vector<double>& ref, const Case& c) {
  double num = 0, den = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const float v = c.value(y[i]);
    if (!std::isfinite(v)) return INFINITY;  // an unwritten (NaN-poisoned) element
    num += (v - ref[i]) * (v - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Runs fpx_linear (or the fused kernel with `splits`) and returns its relative L2 error.
double run_fpx(Case& c, fpx::Format f, int64_t rows, int64_t cols, int64_t n, bool with_bias, int splits = -1) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(rows * cols), bias(rows);
  for (float& v : w) v = normal(c.rng) * 0.05f;
  for (float& v : bias) v = normal(c.rng);
  const fpx::QuantizedMatrix q = fpx::quantize({w.data(), DType::kF32, rows, cols, "w"}, f);
  const cuda::DeviceFpxWeight dw = cuda::upload(fpx::pack(q, c.act));
  std::vector<uint16_t> x16(n * cols);
  std::vector<float> x(n * cols);
  for (size_t i = 0; i < x.size(); ++i) x16[i] = c.bits(normal(c.rng)), x[i] = c.value(x16[i]);
  const auto ref = cpu::fpx_linear_reference(x.data(), n, q, with_bias ? bias.data() : nullptr);

  cuda::DeviceBuffer dx(x16.size() * 2), dy(static_cast<size_t>(n * rows) * 2), db(rows * 4);
  dx.upload(x16.data(), dx.size());
  db.upload(bias.data(), db.size());
  FP6_CUDA_CHECK(cudaMemset(dy.data(), 0xFF, dy.size()));
  const size_t ws = std::max(cuda::fpx_linear_workspace_bytes(dw, n),
                             static_cast<size_t>(n * dw.row_tiles() * fpx::kUnitRows) * 4);
  cuda::DeviceBuffer dws(std::max<size_t>(ws, 4));
  const float* b = with_bias ? db.as<float>() : nullptr;
  if (splits < 0)
    cuda::fpx_linear(dx.data(), c.act, n, dw, b, dy.data(), dws.data(), ws, nullptr);
  else
    cuda::fpx_linear_fused(dx.data(), c.act, n, dw, b, dy.data(), dws.data(), ws, splits, nullptr);
  FP6_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<uint16_t> y(n * rows);
  dy.download(y.data(), dy.size());
  return rel_l2(y, ref, c);
}

class CudaFpxLinear : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  }
};

TEST_P(CudaFpxLinear, MatchesTheReferenceOnOddShapesAllPathsAndFormats) {
  Case c{GetParam()};
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1}, {17, 64}, {100, 130}, {4095, 257}, {64, 4097}, {512, 1024}};
  const int64_t ns[] = {1, 2, 3, 7, 8, 9, 16, 17, 33, 64, 65, 128, 300, 1024};
  for (fpx::Format f : {fpx::kE3M2, fpx::kE2M2, fpx::kE2M1})
    for (auto [rows, cols] : shapes)
      for (int64_t n : ns) {
        if (rows * cols * n > int64_t{1} << 28) continue;  // keep the double reference quick
        const double err = run_fpx(c, f, rows, cols, n, n % 2 == 1);
        ASSERT_LT(err, c.bound()) << f.name() << " " << rows << "x" << cols << " n=" << n << " "
                                  << dtype_name(GetParam());
      }
}

TEST_P(CudaFpxLinear, EverySplitOfKGivesTheSameProduct) {
  Case c{GetParam()};
  for (int splits : {1, 2, 3, 7, 32, 64})
    EXPECT_LT(run_fpx(c, fpx::kE3M2, 256, 4096, 5, true, splits), c.bound()) << "splits " << splits;
}

TEST_P(CudaFpxLinear, DenseMatchesTheReference) {
  Case c{GetParam()};
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto [rows, cols, n] : {std::tuple<int64_t, int64_t, int64_t>{100, 130, 1}, {512, 256, 37}, {33, 4097, 300}}) {
    std::vector<uint16_t> w16(rows * cols), x16(n * cols);
    std::vector<float> w(rows * cols), x(n * cols), bias(rows);
    for (size_t i = 0; i < w.size(); ++i) w16[i] = c.bits(normal(c.rng) * 0.05f), w[i] = c.value(w16[i]);
    for (size_t i = 0; i < x.size(); ++i) x16[i] = c.bits(normal(c.rng)), x[i] = c.value(x16[i]);
    for (float& v : bias) v = normal(c.rng);
    const auto ref = cpu::dense_linear_reference(x.data(), n, w.data(), rows, cols, bias.data());
    const cuda::DeviceDenseWeight dw = cuda::upload_dense(w16.data(), GetParam(), rows, cols);
    cuda::DeviceBuffer dx(x16.size() * 2), dy(static_cast<size_t>(n * rows) * 2), db(rows * 4);
    dx.upload(x16.data(), dx.size());
    db.upload(bias.data(), db.size());
    FP6_CUDA_CHECK(cudaMemset(dy.data(), 0xFF, dy.size()));
    cuda::dense_linear(dx.data(), GetParam(), n, dw, db.as<float>(), dy.data(), nullptr, 0, nullptr);
    FP6_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<uint16_t> y(n * rows);
    dy.download(y.data(), dy.size());
    EXPECT_LT(rel_l2(y, ref, c), c.bound()) << rows << "x" << cols << " n=" << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaFpxLinear, ::testing::Values(DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace fp6serve
