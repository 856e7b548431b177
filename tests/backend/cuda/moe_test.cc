// The MoE kernels (backend/cuda/moe.h) and qk_norm against their CPU twins (cpu/ops.h,
// moe.cc and norm.cc, and cpu::fpx_linear per expert) on fresh random inputs, in FP16 and
// BF16, every output poisoned (NaN, or -1 for indices) before the launch. Router edge cases:
// ties, every token to one expert, experts without tokens.
#include "backend/cuda/moe.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "backend/cpu/linear.h"
#include "backend/cpu/ops.h"
#include "backend/cuda/device.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/ops.h"
#include "core/half.h"
#include "fpx/pack.h"
#include "fpx/quantize.h"
#include "tests/support/random.h"

namespace fp6serve {
namespace {

class CudaMoe : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU";
  }
  DType dtype() const { return GetParam(); }
  uint16_t bits(float v) const { return dtype() == DType::kF16 ? f32_to_f16_bits(v) : f32_to_bf16_bits(v); }
  float value(uint16_t b) const { return dtype() == DType::kF16 ? f16_bits_to_f32(b) : bf16_bits_to_f32(b); }
  double bound() const { return dtype() == DType::kF16 ? 2e-3 : 1e-2; }  // as the linear test's

  // n values ~ N(0, scale) rounded to the dtype: the floats the GPU sees, and the 16-bit upload.
  std::vector<float> random16(size_t n, float scale, cuda::DeviceBuffer& dev) {
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> f(n);
    for (float& v : f) v = normal(rng_);
    return upload16(f, dev);
  }
  std::vector<float> upload16(std::vector<float> f, cuda::DeviceBuffer& dev) {
    std::vector<uint16_t> h(f.size());
    for (size_t i = 0; i < f.size(); ++i) h[i] = bits(f[i]), f[i] = value(h[i]);
    dev = cuda::DeviceBuffer(std::max<size_t>(h.size(), 1) * 2);
    if (!h.empty()) dev.upload(h.data(), h.size() * 2);
    return f;
  }
  template <typename T>
  cuda::DeviceBuffer upload(const std::vector<T>& v) {
    cuda::DeviceBuffer d(std::max<size_t>(v.size(), 1) * sizeof(T));
    if (!v.empty()) d.upload(v.data(), v.size() * sizeof(T));
    return d;
  }
  static cuda::DeviceBuffer poisoned(size_t bytes) {
    cuda::DeviceBuffer d(std::max<size_t>(bytes, 4));
    FP6_CUDA_CHECK(cudaMemset(d.data(), 0xFF, d.size()));  // NaN as f16, bf16, f32; -1 as int32
    return d;
  }
  template <typename T>
  static std::vector<T> download(const cuda::DeviceBuffer& d, size_t n) {
    std::vector<T> h(n);
    FP6_CUDA_CHECK(cudaDeviceSynchronize());
    if (n) d.download(h.data(), n * sizeof(T));
    return h;
  }
  std::vector<float> download16(const cuda::DeviceBuffer& d, size_t n) {
    const auto h = download<uint16_t>(d, n);
    std::vector<float> f(n);
    for (size_t i = 0; i < n; ++i) f[i] = value(h[i]);
    return f;
  }
  static double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (!std::isfinite(got[i])) return INFINITY;  // unwritten (poisoned)
      num += (got[i] - want[i]) * double(got[i] - want[i]);
      den += want[i] * double(want[i]);
    }
    return std::sqrt(num / std::max(den, 1e-30));
  }
  std::mt19937 rng_{static_cast<uint32_t>(testing::test_seed())};
};

// --- the router ------------------------------------------------------------------------------

struct RouteCase {
  int64_t n, hidden, experts, top_k;
  bool renormalize, shared;
  const char* kind;  // "random", "ties" (x = 0: every logit equal), "one" (every token's first choice expert 3)
};

TEST_P(CudaMoe, RouterMatchesTheCpuTwin) {
  const RouteCase cases[] = {{1, 4096, 8, 2, true, false, "random"},     {37, 2048, 60, 4, false, true, "random"},
                             {300, 2048, 128, 8, true, false, "random"}, {5, 130, 4, 1, false, false, "random"},
                             {3, 256, 8, 2, true, false, "ties"},        {16, 512, 60, 4, false, true, "ties"},
                             {40, 256, 8, 2, true, false, "one"},        {7, 64, 4, 4, true, false, "random"}};
  for (const RouteCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.kind << " n " << c.n << " hidden " << c.hidden << " experts " << c.experts
                                      << " top-" << c.top_k);
    const int64_t rows = c.experts + (c.shared ? 1 : 0);
    std::normal_distribution<float> normal(0.0f, 1.0f / std::sqrt(static_cast<float>(c.hidden)));
    std::vector<float> router(static_cast<size_t>(rows * c.hidden));
    for (float& v : router) v = normal(rng_);
    std::vector<float> x(static_cast<size_t>(c.n * c.hidden), 0.0f);
    if (std::string(c.kind) == "one") {
      std::fill_n(router.begin() + 3 * c.hidden, c.hidden, 0.5f);
      std::uniform_real_distribution<float> pos(0.25f, 1.0f);
      for (float& v : x) v = pos(rng_);
    } else if (std::string(c.kind) == "random") {
      std::normal_distribution<float> unit(0.0f, 1.0f);
      for (float& v : x) v = unit(rng_);
    }
    cuda::DeviceBuffer dx;
    x = upload16(x, dx);
    // Redraw tokens whose k-th and (k+1)-th logits are within 1e-3 (f32 sums in another
    // order could pick either), except in the ties case, where they are meant to be equal.
    auto margin = [&](int64_t t) {
      std::vector<double> l(static_cast<size_t>(c.experts));
      for (int64_t e = 0; e < c.experts; ++e)
        for (int64_t j = 0; j < c.hidden; ++j) l[e] += double{x[t * c.hidden + j]} * router[e * c.hidden + j];
      std::sort(l.begin(), l.end(), std::greater<>());
      return c.top_k == c.experts ? INFINITY : l[c.top_k - 1] - l[c.top_k];
    };
    if (std::string(c.kind) != "ties") {
      std::normal_distribution<float> unit(0.0f, 1.0f);
      std::uniform_real_distribution<float> pos(0.25f, 1.0f);
      for (int64_t t = 0; t < c.n; ++t)
        for (int tries = 0; margin(t) < 1e-3; ++tries) {
          ASSERT_LT(tries, 1000);
          for (int64_t j = 0; j < c.hidden; ++j)
            x[t * c.hidden + j] = value(bits(std::string(c.kind) == "one" ? pos(rng_) : unit(rng_)));
        }
      x = upload16(x, dx);
    }
    const auto drouter = upload(router);
    const int64_t a = c.n * c.top_k;
    auto ids = poisoned(a * 4), weights = poisoned(a * 4), scale = poisoned(c.n * 4);
    cuda::moe_route(dx.data(), dtype(), c.n, c.hidden, drouter.as<float>(), c.experts, c.top_k, c.renormalize,
                    ids.as<int32_t>(), weights.as<float>(), c.shared ? scale.as<float>() : nullptr, nullptr);
    std::vector<int32_t> want_ids(a);
    std::vector<float> want_w(a), want_s(c.n);
    cpu::moe_route(x.data(), c.n, c.hidden, router.data(), c.experts, c.top_k, c.renormalize, want_ids.data(),
                   want_w.data(), c.shared ? want_s.data() : nullptr);
    EXPECT_EQ(download<int32_t>(ids, a), want_ids);
    const auto got_w = download<float>(weights, a);
    for (int64_t i = 0; i < a; ++i) EXPECT_NEAR(got_w[i], want_w[i], 2e-6 + 1e-5 * want_w[i]) << i;
    if (c.shared) {
      const auto got_s = download<float>(scale, c.n);
      for (int64_t t = 0; t < c.n; ++t) EXPECT_NEAR(got_s[t], want_s[t], 1e-5) << t;
    }
    if (std::string(c.kind) == "ties")  // every logit 0: experts 0 .. k-1, in order
      for (int64_t t = 0; t < c.n; ++t)
        for (int64_t s = 0; s < c.top_k; ++s) EXPECT_EQ(want_ids[t * c.top_k + s], s);
    if (std::string(c.kind) == "one")
      for (int64_t t = 0; t < c.n; ++t) EXPECT_EQ(want_ids[t * c.top_k], 3);
  }
}

// --- the grouping and its work list ----------------------------------------------------------

TEST_P(CudaMoe, GroupingAndWorkListMatchTheCpuTwin) {
  struct Case {
    int64_t assignments, experts;
    int block;
    const char* kind;  // "random", "one" (every assignment to expert experts - 1), "half" (odd experts only)
  };
  const Case cases[] = {{2, 8, 8, "random"},     {8, 8, 8, "random"},       {64, 8, 16, "random"},
                        {600, 60, 32, "random"}, {2400, 128, 64, "random"}, {100, 4, 64, "one"},
                        {333, 16, 8, "half"},    {1, 1, 8, "one"},          {70000, 8, 64, "random"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.kind << " assignments " << c.assignments << " experts " << c.experts
                                      << " block " << c.block);
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.experts - 1));
    std::vector<int32_t> ids(c.assignments);
    for (int32_t& e : ids) {
      e = pick(rng_);
      if (std::string(c.kind) == "one") e = static_cast<int32_t>(c.experts - 1);
      if (std::string(c.kind) == "half") e |= 1;
    }
    const auto dids = upload(ids);
    const int64_t max_items = cuda::moe_max_work_items(c.assignments, c.experts, c.block);
    auto offsets = poisoned((c.experts + 1) * 4), order = poisoned(c.assignments * 4),
         row_of = poisoned(c.assignments * 4), work = poisoned(3 * max_items * 4), num = poisoned(4);
    cuda::moe_group(dids.as<int32_t>(), c.assignments, c.experts, c.block, offsets.as<int32_t>(), order.as<int32_t>(),
                    row_of.as<int32_t>(), work.as<int32_t>(), num.as<int32_t>(), nullptr);
    std::vector<int32_t> want_off(c.experts + 1), want_order(c.assignments), want_row(c.assignments);
    cpu::moe_group(ids.data(), c.assignments, c.experts, want_off.data(), want_order.data(), want_row.data());
    EXPECT_EQ(download<int32_t>(offsets, c.experts + 1), want_off);
    EXPECT_EQ(download<int32_t>(order, c.assignments), want_order);
    EXPECT_EQ(download<int32_t>(row_of, c.assignments), want_row);
    // One item per block of each expert's rows, experts in order.
    std::vector<int32_t> want_work;
    for (int64_t e = 0; e < c.experts; ++e)
      for (int32_t r = want_off[e]; r < want_off[e + 1]; r += c.block)
        want_work.insert(want_work.end(), {static_cast<int32_t>(e), r, std::min(c.block, want_off[e + 1] - r)});
    const int32_t items = download<int32_t>(num, 1)[0];
    ASSERT_EQ(items, static_cast<int32_t>(want_work.size() / 3));
    ASSERT_LE(items, max_items);
    EXPECT_EQ(download<int32_t>(work, 3 * items), want_work);
  }
}

// --- the gather and the combine --------------------------------------------------------------

TEST_P(CudaMoe, GatherAndCombineMatchTheCpuTwins) {
  for (const auto [n, hidden, top_k, shared] : {std::tuple{1, 4096, 2, false}, std::tuple{33, 2048, 4, true},
                                                std::tuple{300, 130, 8, false}, std::tuple{7, 64, 1, true}}) {
    SCOPED_TRACE(::testing::Message() << "n " << n << " hidden " << hidden << " top-" << top_k);
    const int64_t a = int64_t{n} * top_k, experts = 9;
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(experts - 1));
    std::vector<int32_t> ids(a), offsets(experts + 1), order(a), row_of(a);
    for (int32_t& e : ids) e = pick(rng_);
    cpu::moe_group(ids.data(), a, experts, offsets.data(), order.data(), row_of.data());
    cuda::DeviceBuffer dx, dys, dshared;
    const auto x = random16(static_cast<size_t>(n) * hidden, 1.0f, dx);
    const auto dorder = upload(order), drow = upload(row_of);
    auto xs = poisoned(a * hidden * 2);
    cuda::moe_gather(dx.data(), hidden, dorder.as<int32_t>(), a, top_k, xs.data(), dtype(), nullptr);
    std::vector<float> want_xs(a * hidden);
    cpu::moe_gather(x.data(), hidden, order.data(), a, top_k, want_xs.data());
    EXPECT_EQ(download16(xs, a * hidden), want_xs);

    const auto ys = random16(a * hidden, 1.0f, dys), sh = random16(static_cast<size_t>(n) * hidden, 1.0f, dshared);
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    std::vector<float> w(a), scale(n);
    for (float& v : w) v = unit(rng_);
    for (float& v : scale) v = unit(rng_);
    const auto dw = upload(w), dscale = upload(scale);
    auto out = poisoned(static_cast<size_t>(n) * hidden * 2);
    cuda::moe_combine(dys.data(), drow.as<int32_t>(), dw.as<float>(), n, top_k, hidden,
                      shared ? dscale.as<float>() : nullptr, dshared.data(), out.data(), dtype(), nullptr);
    std::vector<float> want(static_cast<size_t>(n) * hidden);
    cpu::moe_combine(ys.data(), row_of.data(), w.data(), n, top_k, hidden, shared ? scale.data() : nullptr, sh.data(),
                     want.data());
    EXPECT_LT(rel_l2(download16(out, want.size()), want), bound() / 4);  // one rounding of the f32 sum
  }
}

// --- the grouped FPx GEMM --------------------------------------------------------------------

struct GemmCase {
  fpx::Format format;
  int64_t experts, rows, cols, tokens, top_k;
  const char* kind;  // "random", "one" (every token's choices include expert 1), "sparse" (experts 0..1 only)
  int splits;        // 0: the plan's
};

TEST_P(CudaMoe, ExpertGemmMatchesFpxLinearPerExpert) {
  const GemmCase cases[] = {
      {fpx::kE3M2, 8, 256, 512, 1, 2, "random", 0},    // decode: two experts of one token, the rest empty
      {fpx::kE3M2, 8, 384, 1024, 16, 2, "random", 0},  // decode batch: 16-token tiles, split K
      {fpx::kE2M3, 16, 96, 128, 33, 4, "random", 0},   // rows not a multiple of the CTA's
      {fpx::kE2M2, 4, 130, 4097, 9, 2, "random", 0},   // K not a multiple of 8 (no 16-byte X loads)
      {fpx::kE2M1, 4, 64, 256, 200, 2, "random", 0},   // 64-token tiles, several per expert
      {fpx::kE3M2, 4, 64, 256, 100, 1, "one", 0},      // every token to one expert: items of 64 and 36
      {fpx::kE3M2, 6, 200, 640, 40, 2, "sparse", 3},   // four experts empty; an explicit split of 3
      {fpx::kE3M2, 8, 128, 512, 24, 2, "random", 1}};  // one split: the direct epilogue
  for (const GemmCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.format.name() << " " << c.kind << " experts " << c.experts << " [" << c.rows
                                      << ", " << c.cols << "] tokens " << c.tokens << " top-" << c.top_k);
    // Routing: distinct experts per token.
    const int64_t a = c.tokens * c.top_k;
    std::vector<int32_t> ids(a);
    for (int64_t t = 0; t < c.tokens; ++t) {
      std::vector<int32_t> perm(c.experts);
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng_);
      if (std::string(c.kind) == "one") std::swap(perm[0], *std::find(perm.begin(), perm.end(), 1));
      if (std::string(c.kind) == "sparse") perm = {static_cast<int32_t>(t % 2), static_cast<int32_t>(1 - t % 2)};
      std::copy_n(perm.begin(), c.top_k, ids.begin() + t * c.top_k);
    }
    // The experts, packed for this dtype, in one device buffer as the backend keeps them.
    cuda::DeviceExperts w;
    w.num_experts = c.experts;
    w.rows = c.rows;
    w.cols = c.cols;
    w.plan = fpx::pack_plan(c.format, dtype());
    std::vector<fpx::PackedWeight> host;
    std::normal_distribution<float> normal(0.0f, 0.05f);
    for (int64_t e = 0; e < c.experts; ++e) {
      std::vector<float> wf(c.rows * c.cols);
      for (float& v : wf) v = normal(rng_);
      host.push_back(
          fpx::quantize_pack(fpx::MatrixView{wf.data(), DType::kF32, c.rows, c.cols, "w"}, c.format, dtype()));
    }
    const auto bytes = static_cast<size_t>(w.expert_bytes()), scales = static_cast<size_t>(w.row_tiles() * 16);
    w.data = cuda::DeviceBuffer(bytes * c.experts);
    w.scales = cuda::DeviceBuffer(scales * 4 * c.experts);
    for (int64_t e = 0; e < c.experts; ++e) {
      ASSERT_EQ(host[e].bytes(), bytes);
      w.data.upload(host[e].data.data(), bytes, e * bytes);
      w.scales.upload(host[e].scales.data(), scales * 4, e * scales * 4);
    }
    cuda::ExpertGemmPlan plan = cuda::plan_expert_gemm(w, c.tokens, c.top_k);
    if (c.splits) plan.splits = c.splits;
    // The grouped rows (xs in the grouped order) and the work list, from moe_group.
    std::vector<int32_t> offsets(c.experts + 1), order(a), row_of(a);
    cpu::moe_group(ids.data(), a, c.experts, offsets.data(), order.data(), row_of.data());
    const auto dids = upload(ids);
    cuda::DeviceBuffer doff(offsets.size() * 4), dorder(a * 4), drow(a * 4), num(4), work(3 * plan.max_items * 4);
    cuda::moe_group(dids.as<int32_t>(), a, c.experts, plan.block_tokens, doff.as<int32_t>(), dorder.as<int32_t>(),
                    drow.as<int32_t>(), work.as<int32_t>(), num.as<int32_t>(), nullptr);
    cuda::DeviceBuffer dxs;
    const auto xs = random16(a * c.cols, 1.0f, dxs);
    cuda::DeviceBuffer ws(cuda::expert_gemm_workspace_bytes(w, a, plan));
    FP6_CUDA_CHECK(cudaMemset(ws.data(), 0, ws.size()));
    auto y = poisoned(a * c.rows * 2);
    cuda::expert_gemm(dxs.data(), dtype(), w, work.as<int32_t>(), num.as<int32_t>(), a, plan, y.data(), ws.data(),
                      ws.size(), nullptr);
    std::vector<float> want(a * c.rows);
    for (int64_t e = 0; e < c.experts; ++e) {
      const int64_t r0 = offsets[e], count = offsets[e + 1] - r0;
      if (count)
        cpu::fpx_linear(xs.data() + r0 * c.cols, DType::kF32, count, host[e], nullptr, want.data() + r0 * c.rows);
    }
    const auto got = download16(y, want.size());
    EXPECT_LT(rel_l2(got, want), bound());
    // A second launch on the same workspace: the split-K counters were left at zero.
    y = poisoned(a * c.rows * 2);
    cuda::expert_gemm(dxs.data(), dtype(), w, work.as<int32_t>(), num.as<int32_t>(), a, plan, y.data(), ws.data(),
                      ws.size(), nullptr);
    EXPECT_EQ(download16(y, want.size()), got);
  }
}

// --- qk_norm ---------------------------------------------------------------------------------

TEST_P(CudaMoe, QkNormMatchesTheCpuTwin) {
  for (const auto [n, heads, kv_heads, head_dim] :
       {std::tuple{1, 32, 4, 128}, std::tuple{37, 16, 2, 64}, std::tuple{5, 6, 6, 36}}) {
    const int64_t width = (heads + 2 * kv_heads) * head_dim;
    cuda::DeviceBuffer dqkv;
    auto qkv = random16(static_cast<size_t>(n) * width, 2.0f, dqkv);
    std::uniform_real_distribution<float> near_one(0.5f, 1.5f);
    std::vector<float> qw(head_dim), kw(head_dim);
    for (float& v : qw) v = near_one(rng_);
    for (float& v : kw) v = near_one(rng_);
    const auto dqw = upload(qw), dkw = upload(kw);
    cuda::qk_norm(dqkv.data(), n, heads, kv_heads, head_dim, dqw.as<float>(), dkw.as<float>(), 1e-6, dtype(), nullptr);
    cpu::qk_norm(qkv.data(), n, heads, kv_heads, head_dim, qw.data(), kw.data(), 1e-6);
    const auto got = download16(dqkv, qkv.size());
    EXPECT_LT(rel_l2(got, qkv), bound() / 2);
    for (int64_t i = 0; i < n; ++i)  // v untouched
      for (int64_t j = (heads + kv_heads) * head_dim; j < width; ++j) ASSERT_EQ(got[i * width + j], qkv[i * width + j]);
  }
}

INSTANTIATE_TEST_SUITE_P(, CudaMoe, ::testing::Values(DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace fp6serve
