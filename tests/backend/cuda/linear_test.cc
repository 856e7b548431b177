// The GPU linear layers against the double-precision CPU reference on fresh random inputs,
// outputs NaN-poisoned before every launch.
//
// Bounds (relative L2 over the output): FP16 2e-3, BF16 1e-2. The output's own rounding is
// 2^-11 (FP16) and 2^-8 (BF16) relative per element, about a quarter of that in L2; products are
// exact and accumulate in FP32, and the dequantize + cuBLAS path adds the rounding of each
// scaled weight to 16 bits (same order, averaging out over K).
#include "backend/cuda/linear.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "backend/cpu/linear_reference.h"
#include "backend/cuda/device.h"
#include "backend/cuda/fpx_gemm.h"
#include "core/half.h"
#include "fpx/pack.h"
#include "tests/support/random.h"

namespace fp6serve {
namespace {

struct Case {
  DType act;
  std::mt19937 rng{static_cast<uint32_t>(testing::test_seed())};

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

// One product on fresh random inputs, its double-precision reference, and device buffers.
struct Problem {
  std::vector<double> ref;
  cuda::DeviceFpxWeight w;
  cuda::DeviceBuffer x, y, bias;
  int64_t n = 0;
  bool with_bias = false;

  Problem(Case& c, fpx::Format f, int64_t rows, int64_t cols, int64_t n_, bool with_bias_)
      : n(n_), with_bias(with_bias_) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> wf(rows * cols), b(rows);
    for (float& v : wf) v = normal(c.rng) * 0.05f;
    for (float& v : b) v = normal(c.rng);
    const fpx::QuantizedMatrix q = fpx::quantize({wf.data(), DType::kF32, rows, cols, "w"}, f);
    w = cuda::upload(fpx::pack(q, c.act));
    std::vector<uint16_t> x16(n * cols);
    std::vector<float> xf(n * cols);
    for (size_t i = 0; i < xf.size(); ++i) x16[i] = c.bits(normal(c.rng)), xf[i] = c.value(x16[i]);
    ref = cpu::fpx_linear_reference(xf.data(), n, q, with_bias ? b.data() : nullptr);
    x = cuda::DeviceBuffer(x16.size() * 2);
    y = cuda::DeviceBuffer(static_cast<size_t>(n * rows) * 2);
    bias = cuda::DeviceBuffer(rows * 4);
    x.upload(x16.data(), x.size());
    bias.upload(b.data(), bias.size());
  }

  // Runs one path into a NaN-poisoned output and returns it. splits: -1 fpx_linear's own
  // choice, 0 the fused kernel with its heuristic split, > 0 the fused kernel with that
  // split, -2 dequantize + cuBLAS. `ws` must be zero-filled (the workspace contract).
  std::vector<uint16_t> run(DType act, int splits, const cuda::DeviceBuffer& ws) {
    FP6_CUDA_CHECK(cudaMemset(y.data(), 0xFF, y.size()));
    const float* b = with_bias ? bias.as<float>() : nullptr;
    if (splits == -1)
      cuda::fpx_linear(x.data(), act, n, w, b, y.data(), ws.data(), ws.size(), nullptr);
    else if (splits == -2)
      cuda::fpx_linear_dequant_gemm(x.data(), act, n, w, b, y.data(), ws.data(), ws.size(), nullptr);
    else
      cuda::fpx_linear_fused(x.data(), act, n, w, b, y.data(), ws.data(), ws.size(), splits, nullptr);
    FP6_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<uint16_t> out(static_cast<size_t>(y.size() / 2));
    y.download(out.data(), y.size());
    return out;
  }
};

cuda::DeviceBuffer zeroed_workspace(size_t bytes) {
  cuda::DeviceBuffer ws(bytes);
  FP6_CUDA_CHECK(cudaMemset(ws.data(), 0, bytes));
  return ws;
}

class CudaFpxLinear : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU";
  }
};

TEST_P(CudaFpxLinear, MatchesTheReferenceOnOddShapesAllPathsAndFormats) {
  Case c{GetParam()};
  // K % 8 == 0 shapes take the Hopper kernel above 64 tokens on an sm_90 GPU: a partial
  // 128-row block (300, 1000 rows), K not a multiple of 128 (392), one and several token
  // blocks of 128 and 256 (65 ... 1024).
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1},      {17, 64},    {100, 130},  {4095, 257}, {64, 4097},
                                                {512, 1024}, {100, 8197}, {300, 2048}, {1000, 392}};
  const int64_t ns[] = {1, 2, 3, 7, 8, 9, 16, 17, 33, 64, 65, 128, 200, 257, 300, 1024};
  for (fpx::Format f : {fpx::kE3M2, fpx::kE2M3, fpx::kE2M2, fpx::kE2M1})
    for (auto [rows, cols] : shapes)
      for (int64_t n : ns) {
        if (rows * cols * n > int64_t{1} << 28) continue;  // keep the double reference quick
        Problem p(c, f, rows, cols, n, n % 2 == 1);
        const auto ws = zeroed_workspace(std::max({cuda::fpx_linear_workspace_bytes(p.w, n),
                                                   cuda::fpx_fused_workspace_bytes(p.w, n, cuda::fpx_splits(p.w, n)),
                                                   cuda::fpx_dequant_workspace_bytes(p.w)}));
        for (int path : {-1, 0, -2})
          ASSERT_LT(rel_l2(p.run(c.act, path, ws), p.ref, c), c.bound())
              << f.name() << " " << rows << "x" << cols << " n=" << n << " " << dtype_name(c.act) << " path "
              << (path == -1  ? "dispatch"
                  : path == 0 ? "fused"
                              : "dequant+cuBLAS");
      }
}

TEST_P(CudaFpxLinear, EverySplitOfKGivesTheSameProduct) {
  Case c{GetParam()};
  // The small-n kernel (one and two token tiles, X staged in one and several chunks); on sm_90
  // the Hopper kernel, one and two token blocks.
  for (int64_t n : {5, 13, 100, 300}) {
    Problem p(c, fpx::kE3M2, 256, 4096, n, true);
    for (int splits : {1, 2, 3, 7, 32, 64}) {
      const auto ws = zeroed_workspace(cuda::fpx_fused_workspace_bytes(p.w, n, splits));
      EXPECT_LT(rel_l2(p.run(c.act, splits, ws), p.ref, c), c.bound()) << "n " << n << " splits " << splits;
    }
  }
}

// fpx_linear picks a Hopper tile by how well its CTAs fill the GPU, so a test shape may never
// reach some tiles: run each directly, both FP6 formats, one and several token blocks, K not
// a multiple of 128, a partial row block, with and without a split.
TEST_P(CudaFpxLinear, EveryHopperTileMatchesTheReference) {
  Case c{GetParam()};
  const std::pair<int64_t, int64_t> shapes[] = {{300, 2048}, {17, 64}, {1000, 392}};
  for (fpx::Format f : {fpx::kE3M2, fpx::kE2M3})
    for (auto [rows, cols] : shapes)
      for (int64_t n : {17, 100, 300}) {
        Problem p(c, f, rows, cols, n, n % 2 == 1);
        if (!cuda::fpx_wgmma_supported(p.w.plan, cols)) GTEST_SKIP() << "no Hopper kernel on this GPU";
        for (int tile = 0; tile < static_cast<int>(cuda::fpx_hopper_tiles().size()); ++tile)
          for (int splits : {1, 3}) {
            const auto ws = zeroed_workspace(cuda::fpx_fused_workspace_bytes(p.w, n, splits));
            FP6_CUDA_CHECK(cudaMemset(p.y.data(), 0xFF, p.y.size()));
            cuda::FpxLaunch l = cuda::fpx_launch_for(p.w, p.x.data(), n, p.with_bias ? p.bias.as<float>() : nullptr,
                                                     p.y.data(), ws.data(), nullptr);
            l.splits = std::min<int>(splits, static_cast<int>(p.w.col_units()));
            cuda::launch_fpx_gemm_hopper_tile(l, tile);
            FP6_CUDA_CHECK(cudaDeviceSynchronize());
            std::vector<uint16_t> out(static_cast<size_t>(p.y.size() / 2));
            p.y.download(out.data(), p.y.size());
            const cuda::FpxHopperTile& t = cuda::fpx_hopper_tiles()[static_cast<size_t>(tile)];
            ASSERT_LT(rel_l2(out, p.ref, c), c.bound())
                << f.name() << " " << rows << "x" << cols << " n=" << n << " tile (" << t.tokens << ", " << t.consumers
                << ", " << t.x_stages << ", " << t.w_stages << ") splits " << l.splits;
          }
      }
}

// On the H100 the small-n kernel's 32-token tile serves 17-32 tokens of the layers where it
// measured faster than the Hopper kernel (fpx_gemm.cu's kMeasuredGemvSplits): 7B o is one.
TEST_P(CudaFpxLinear, MeasuredLayersTakeTheSmallNKernelUpTo32Tokens) {
  Case c{GetParam()};
  for (int64_t n : {17, 32}) {
    Problem p(c, fpx::kE3M2, 4096, 4096, n, n % 2 == 1);
    const cuda::FpxGemmPlan plan =
        cuda::fpx_gemm_plan(p.w.plan, p.w.row_tiles(), p.w.col_units(), p.w.cols, n, cuda::sm_count());
    if (cuda::sm_count() == 132 && cuda::fpx_wgmma_supported(p.w.plan, p.w.cols)) EXPECT_TRUE(plan.gemv) << n;
    const auto ws = zeroed_workspace(cuda::fpx_linear_workspace_bytes(p.w, n));
    EXPECT_LT(rel_l2(p.run(c.act, -1, ws), p.ref, c), c.bound()) << "n " << n;
  }
}

TEST_P(CudaFpxLinear, SplitKIsDeterministicAndLeavesTheWorkspaceReusable) {
  Case c{GetParam()};
  Problem p(c, fpx::kE3M2, 1000, 3000, 40, true);
  const auto ws = zeroed_workspace(cuda::fpx_fused_workspace_bytes(p.w, 40, 5));
  const auto first = p.run(c.act, 5, ws);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(p.run(c.act, 5, ws), first) << "call " << i + 2;
  std::vector<int> counters(cuda::kFpxCounterBytes / sizeof(int));
  ws.download(counters.data(), cuda::kFpxCounterBytes);
  EXPECT_EQ(std::count(counters.begin(), counters.end(), 0), static_cast<long>(counters.size()));
  EXPECT_LT(rel_l2(first, p.ref, c), c.bound());
}

TEST_P(CudaFpxLinear, DequantizePathWorksInRowBlocksAsSmallAsTheWorkspaceAllows) {
  Case c{GetParam()};
  Problem p(c, fpx::kE3M2, 4095, 257, 33, true);
  for (int64_t rows : {16, 48, 1000}) {  // 256, 86 and 5 blocks, the last one partial
    const auto ws = zeroed_workspace(cuda::kFpxCounterBytes + static_cast<size_t>(rows * 257) * 2);
    EXPECT_LT(rel_l2(p.run(c.act, -2, ws), p.ref, c), c.bound()) << rows << "-row blocks";
  }
  cuda::DeviceBuffer small(cuda::kFpxCounterBytes + 15 * 257 * 2);
  EXPECT_THROW(cuda::fpx_linear_dequant_gemm(p.x.data(), c.act, 33, p.w, nullptr, p.y.data(), small.data(),
                                             small.size(), nullptr),
               Error);
}

TEST_P(CudaFpxLinear, RejectsAWorkspaceTooSmallAndTheWrongActivationType) {
  Case c{GetParam()};
  Problem p(c, fpx::kE3M2, 64, 256, 3, false);
  cuda::DeviceBuffer small(16);
  EXPECT_THROW(
      cuda::fpx_linear_fused(p.x.data(), c.act, 3, p.w, nullptr, p.y.data(), small.data(), small.size(), 4, nullptr),
      Error);
  // No tokens: nothing to do, and no division by zero in sizing the call.
  EXPECT_EQ(cuda::fpx_splits(p.w, 0), 1);
  EXPECT_GT(cuda::fpx_linear_workspace_bytes(p.w, 0), 0u);
  const DType other = c.act == DType::kF16 ? DType::kBF16 : DType::kF16;
  const auto ws = zeroed_workspace(cuda::fpx_linear_workspace_bytes(p.w, 3));
  EXPECT_THROW(cuda::fpx_linear(p.x.data(), other, 3, p.w, nullptr, p.y.data(), ws.data(), ws.size(), nullptr), Error);
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
