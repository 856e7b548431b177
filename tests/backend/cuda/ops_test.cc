// The CUDA transformer ops against their CPU twins (kernels/cpu/ops.h) on fresh random
// inputs, in FP16 and BF16, with outputs poisoned (NaN) before every launch.
#include "backend/cpu/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "backend/cuda/device.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/ops.h"
#include "core/half.h"
#include "tests/support/random.h"

namespace fp6serve {
namespace {

class CudaOps : public ::testing::TestWithParam<DType> {
 public:  // also used by CudaOpsCheckAttention
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU";
  }
  DType dtype() const { return GetParam(); }
  // Random values rounded to the dtype: returned as the floats the GPU sees, uploaded as 16-bit.
  std::vector<float> random(size_t n, float scale, cuda::DeviceBuffer& dev) {
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> f(n);
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i) {
      h[i] = to_bits(normal(rng_));
      f[i] = from_bits(h[i]);
    }
    dev = cuda::DeviceBuffer(n * 2);
    dev.upload(h.data(), n * 2);
    return f;
  }
  uint16_t to_bits(float v) const { return dtype() == DType::kF16 ? f32_to_f16_bits(v) : f32_to_bf16_bits(v); }
  float from_bits(uint16_t b) const { return dtype() == DType::kF16 ? f16_bits_to_f32(b) : bf16_bits_to_f32(b); }
  cuda::DeviceBuffer poisoned(size_t n) {
    cuda::DeviceBuffer d(n * 2);
    FP6_CUDA_CHECK(cudaMemset(d.data(), 0xFF, n * 2));  // NaN in both formats
    return d;
  }
  std::vector<float> download(const cuda::DeviceBuffer& d, size_t n) const {
    std::vector<uint16_t> h(n);
    FP6_CUDA_CHECK(cudaDeviceSynchronize());
    d.download(h.data(), n * 2);
    std::vector<float> f(n);
    for (size_t i = 0; i < n; ++i) f[i] = from_bits(h[i]);
    return f;
  }
  // ||got - want|| / ||want||, and fails on any NaN.
  static double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (std::isnan(got[i])) return INFINITY;
      num += (got[i] - want[i]) * double(got[i] - want[i]);
      den += want[i] * double(want[i]);
    }
    return std::sqrt(num / std::max(den, 1e-30));
  }
  // Output rounding of one 16-bit value dominates: 2^-11 (f16) or 2^-8 (bf16) relative.
  double bound() const { return dtype() == DType::kF16 ? 2e-3 : 1e-2; }
  std::mt19937 rng_{static_cast<uint32_t>(testing::test_seed())};
};

TEST_P(CudaOps, RmsNormAndFusedResidual) {
  const int64_t rows = 37, dim = 4096;
  cuda::DeviceBuffer dx, dres;
  auto x = random(rows * dim, 1.0f, dx);
  auto res = random(rows * dim, 1.0f, dres);
  std::vector<float> w(dim);
  for (auto& v : w) v = std::uniform_real_distribution<float>(0.5f, 1.5f)(rng_);
  cuda::DeviceBuffer dw(dim * 4);
  dw.upload(w.data(), dim * 4);
  auto out = poisoned(rows * dim);
  cuda::rms_norm(dx.data(), dw.as<float>(), rows, dim, 1e-5, out.data(), dtype(), nullptr);
  std::vector<float> want(rows * dim);
  cpu::rms_norm(x.data(), w.data(), rows, dim, 1e-5, want.data());
  EXPECT_LT(rel_l2(download(out, rows * dim), want), bound());

  auto out2 = poisoned(rows * dim);
  cuda::add_rms_norm(dres.data(), dx.data(), dw.as<float>(), rows, dim, 1e-5, out2.data(), dtype(), nullptr);
  // The GPU stores the residual in 16 bits; the twin gets the same rounding of the sum.
  std::vector<float> r16(rows * dim);
  for (size_t i = 0; i < r16.size(); ++i) r16[i] = from_bits(to_bits(res[i] + x[i]));
  cpu::rms_norm(r16.data(), w.data(), rows, dim, 1e-5, want.data());
  EXPECT_LT(rel_l2(download(out2, rows * dim), want), bound());
  EXPECT_LT(rel_l2(download(dres, rows * dim), r16), 1e-6);
}

// Sequences of a batch at different positions: (first position, new tokens).
struct TestSeq {
  int64_t start, count;
};

// RoPE + KV write + attention of one batch on the GPU against the CPU twin; kGeneral: the
// tile kernel's general form on a decode batch the planner gives the one-token form.
enum class Form { kPlanned, kGeneral };
void CudaOpsCheckAttention(CudaOps& t, int64_t hd, int64_t heads, int64_t kv_heads, int64_t window,
                           const std::vector<TestSeq>& seqs, std::mt19937& rng, Form form = Form::kPlanned);

TEST_P(CudaOps, RopeKvWriteAndPagedAttentionMatchTheCpu) {
  // Prompt chunks (40 tokens after 700 cached, a fresh 33-token prompt, 150 tokens = three
  // tiles after 64 cached) with a decode token at position 1500 and a 5-token chunk
  // (one-token tiles) in the same batch.
  const std::vector<TestSeq> mixed = {{700, 40}, {1500, 1}, {0, 33}, {64, 150}, {90, 5}};
  // 128, 64, 32, 16, 80, 96: the Tensor-Core kernel; 36, 200: the split-context kernel
  // (scalar keys for 36).
  for (const int64_t hd : {128, 64, 32, 16, 80, 96, 36, 200}) CudaOpsCheckAttention(*this, hd, 8, 2, 0, mixed, rng_);
  // A sliding window shorter than the chunks, and MHA (kv_heads == heads).
  CudaOpsCheckAttention(*this, 128, 4, 4, 100, mixed, rng_);
  CudaOpsCheckAttention(*this, 64, 8, 1, 37, {{0, 300}, {2000, 1}, {500, 64}}, rng_);
  // A decode batch big enough for one-token tiles (40 x 8 heads >= 2 CTAs per SM), long
  // contexts, with and without a window.
  std::vector<TestSeq> decode;
  for (int i = 0; i < 40; ++i) decode.push_back({300 + 37 * i, 1});
  // The one-token form (planned for a decode step) walks up to 55 key blocks of 32, 14 rounds
  // of four; the general form on the same batches.
  CudaOpsCheckAttention(*this, 128, 8, 2, 0, decode, rng_);
  CudaOpsCheckAttention(*this, 64, 8, 2, 500, decode, rng_);
  CudaOpsCheckAttention(*this, 96, 4, 4, 0, decode, rng_);
  CudaOpsCheckAttention(*this, 128, 8, 2, 0, decode, rng_, Form::kGeneral);
  CudaOpsCheckAttention(*this, 64, 8, 2, 500, decode, rng_, Form::kGeneral);
  // A small decode step (the one-token form): split keys (8 splits of 256 positions), with and
  // without a window that starts inside a split, and a context shorter than one split.
  const std::vector<TestSeq> few = {{1999, 1}, {1200, 1}, {40, 1}};
  CudaOpsCheckAttention(*this, 128, 8, 2, 0, few, rng_);
  CudaOpsCheckAttention(*this, 128, 8, 8, 700, few, rng_);
  CudaOpsCheckAttention(*this, 32, 4, 2, 0, few, rng_);
}

TEST(AttentionPlan, TilesForPromptsAndDecodeSplitsWhenTheGpuIsNotFull) {
  // Chunks of >= kAttentionMinTileTokens become tiles of <= kAttentionTileTokens, other tokens
  // one-token tiles, the longest key range first; no split with prompt tiles in the batch.
  const auto plan = cuda::plan_attention({700, 1500, 0, 64}, {40, 1, 7, 150}, 8, 128, 132);
  EXPECT_EQ(plan.tiles, (std::vector<int32_t>{40, 1, 0,  40, 176, 22, 112, 64, 48, 64, 47, 1,
                                              46, 1, 45, 1,  44,  1,  43,  1,  42, 1,  41, 1}));
  EXPECT_TRUE(plan.singles.empty());
  EXPECT_EQ(plan.splits, 1);
  EXPECT_FALSE(plan.one_token_tiles);  // prompt tiles in the batch: the kernel's general form
  // A head dim without a Tensor-Core instance: every token single.
  const auto none = cuda::plan_attention({0}, {100}, 8, 36, 132);
  EXPECT_TRUE(none.tiles.empty());
  EXPECT_EQ(none.singles.size(), 100u);
  EXPECT_FALSE(none.one_token_tiles);
  // Decode: 32 tokens x 8 heads < 2 CTAs per SM: keys split in 5 (ceil(8 x 132 / 256)), 448 each.
  const auto small = cuda::plan_attention(std::vector<int64_t>(32, 2000), std::vector<int64_t>(32, 1), 8, 128, 132);
  EXPECT_EQ(small.tiles.size(), 64u);
  EXPECT_EQ(small.splits, 5);
  EXPECT_EQ(small.split_keys, 448);
  EXPECT_TRUE(small.one_token_tiles);  // a decode step: the one-token form
  // Batch 1 at 2001 positions: 8 splits of 256 (ceil(2001 / 256) = 8 < 8 x 132 / 8).
  const auto one = cuda::plan_attention({2000}, {1}, 8, 128, 132);
  EXPECT_EQ(one.splits, 8);
  EXPECT_EQ(one.split_keys, 256);
  EXPECT_TRUE(one.one_token_tiles);
  // A decode step over fewer than 1024 positions in all keeps the general form.
  EXPECT_FALSE(cuda::plan_attention({100, 200}, {1, 1}, 8, 128, 132).one_token_tiles);
  // 33 tokens x 8 heads fill the GPU: no split; short contexts: no split either.
  EXPECT_EQ(cuda::plan_attention(std::vector<int64_t>(33, 2000), std::vector<int64_t>(33, 1), 8, 128, 132).splits, 1);
  EXPECT_EQ(cuda::plan_attention({100}, {1}, 8, 128, 132).splits, 1);
}

void CudaOpsCheckAttention(CudaOps& t, int64_t hd, int64_t heads, int64_t kv_heads, int64_t window,
                           const std::vector<TestSeq>& seqs, std::mt19937& rng, Form form) {
  SCOPED_TRACE(::testing::Message() << "head_dim " << hd << ", heads " << heads << "/" << kv_heads << ", window "
                                    << window);
  const int64_t block = 16;
  std::vector<std::vector<int32_t>> tables;
  int64_t total_blocks = 0, n = 0, max_blocks = 0, max_context = 0;
  for (const TestSeq& s : seqs) total_blocks += (s.start + s.count + block - 1) / block;
  const int64_t num_blocks = total_blocks + 3;
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  int64_t next = 0;
  std::vector<int64_t> starts, counts;
  for (const TestSeq& s : seqs) {
    const int64_t blocks = (s.start + s.count + block - 1) / block;
    tables.emplace_back(ids.begin() + next, ids.begin() + next + blocks);
    next += blocks;
    n += s.count;
    max_blocks = std::max(max_blocks, blocks);
    max_context = std::max(max_context, s.start + s.count);
    starts.push_back(s.start);
    counts.push_back(s.count);
  }
  const int64_t width = (heads + 2 * kv_heads) * hd, kv_row = kv_heads * hd;
  // Cache contents for the earlier positions, and the new tokens' qkv.
  cuda::DeviceBuffer dk, dv, dqkv;
  auto k = t.random(num_blocks * block * kv_row, 1.0f, dk);
  auto v = t.random(num_blocks * block * kv_row, 1.0f, dv);
  auto qkv = t.random(n * width, 1.0f, dqkv);
  std::vector<int32_t> positions, slots, seq_of_token, flat_tables(seqs.size() * max_blocks, 0);
  std::vector<cpu::AttentionSeq> cseqs;
  int64_t row = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    std::copy(tables[s].begin(), tables[s].end(), flat_tables.begin() + s * max_blocks);
    cseqs.push_back({row, seqs[s].count, seqs[s].start, tables[s].data(), static_cast<int64_t>(tables[s].size())});
    for (int64_t i = 0; i < seqs[s].count; ++i, ++row) {
      const int64_t p = seqs[s].start + i;
      positions.push_back(static_cast<int32_t>(p));
      slots.push_back(static_cast<int32_t>(tables[s][p / block] * block + p % block));
      seq_of_token.push_back(static_cast<int32_t>(s));
    }
  }
  std::vector<float> inv(hd / 2);
  for (int64_t j = 0; j < hd / 2; ++j) inv[j] = 1.0f / std::pow(500000.0f, 2.0f * j / hd);
  auto up = [](const auto& host) {
    cuda::DeviceBuffer d(std::max<size_t>(host.size(), 1) * sizeof(host[0]));
    if (!host.empty()) d.upload(host.data(), host.size() * sizeof(host[0]));
    return d;
  };
  auto dpos = up(positions), dslots = up(slots), dseq = up(seq_of_token), dtables = up(flat_tables), dinv = up(inv);
  const cuda::PagedKvView view{dk.data(), dv.data(), block, kv_heads, hd};
  cuda::rope_write_kv(dqkv.data(), n, heads, dpos.as<int32_t>(), dslots.as<int32_t>(), dinv.as<float>(), view,
                      t.dtype(), nullptr);
  const cuda::AttentionPlan plan = cuda::plan_attention(starts, counts, heads, hd, 132);
  auto dtiles = up(plan.tiles), dsingles = up(plan.singles);
  cuda::AttentionWork work{dtiles.as<int32_t>(),
                           static_cast<int64_t>(plan.tiles.size() / 2),
                           dsingles.as<int32_t>(),
                           static_cast<int64_t>(plan.singles.size()),
                           plan.splits,
                           plan.split_keys,
                           plan.one_token_tiles};
  // The general form on a decode batch, which the planner gives the one-token form.
  if (form == Form::kGeneral) {
    ASSERT_TRUE(plan.one_token_tiles);
    work.one_token_tiles = false;
  }
  const bool tiled = hd == 16 || hd == 32 || hd == 64 || hd == 80 || hd == 96 || hd == 128;
  EXPECT_EQ(work.num_tiles > 0, tiled);  // the kernel under test is the one planned
  EXPECT_EQ(work.num_singles > 0, !tiled);
  const size_t ws = cuda::paged_attention_workspace(work, heads, hd, max_context);
  cuda::DeviceBuffer dws(std::max<size_t>(ws, 1) * 4);
  auto out = t.poisoned(n * heads * hd);
  cuda::paged_attention(dqkv.data(), work, heads, dpos.as<int32_t>(), dseq.as<int32_t>(), dtables.as<int32_t>(),
                        max_blocks, view, window, max_context, out.data(), dws.as<float>(), ws, t.dtype(), nullptr);

  // CPU twin on the same (16-bit) values; the GPU's rotated q, k and the cache are 16-bit, so
  // round the twin's at the same points.
  cpu::rope(qkv.data(), n, width, heads + kv_heads, hd, positions.data(), inv.data());
  for (auto& x : qkv) x = t.from_bits(t.to_bits(x));
  const cpu::PagedKv ckv{k.data(), v.data(), num_blocks, block, kv_heads, hd};
  for (int64_t i = 0; i < n; ++i) {  // the cache write of cpu::rope_write_kv, after the rounding
    std::copy_n(qkv.begin() + i * width + heads * hd, kv_row, k.begin() + slots[i] * kv_row);
    std::copy_n(qkv.begin() + i * width + (heads + kv_heads) * hd, kv_row, v.begin() + slots[i] * kv_row);
  }
  std::vector<float> want(n * heads * hd);
  cpu::attention(qkv.data(), width, heads, cseqs.data(), static_cast<int64_t>(cseqs.size()), ckv, window, want.data());
  const std::vector<float> got = t.download(out, n * heads * hd);
  // Per token, so that a wrong row of either kernel cannot hide in the batch's norm.
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<float> g(got.begin() + i * heads * hd, got.begin() + (i + 1) * heads * hd);
    const std::vector<float> w(want.begin() + i * heads * hd, want.begin() + (i + 1) * heads * hd);
    ASSERT_LT(CudaOps::rel_l2(g, w), 2 * t.bound()) << "attention of token " << i;
  }
  EXPECT_LT(CudaOps::rel_l2(got, want), t.bound()) << "attention";
  // The rotated q/k as left in qkv.
  EXPECT_LT(CudaOps::rel_l2(t.download(dqkv, n * width), qkv), t.bound()) << "rope";
}

TEST_P(CudaOps, SiluMulEmbeddingGatherAdd) {
  const int64_t n = 19, inter = 1000, vocab = 500, dim = 256;
  cuda::DeviceBuffer dgu, dtab, da, db;
  auto gu = random(n * 2 * inter, 2.0f, dgu);
  auto out = poisoned(n * inter);
  cuda::silu_mul(dgu.data(), n, inter, out.data(), dtype(), nullptr);
  std::vector<float> want(n * inter);
  cpu::silu_mul(gu.data(), n, inter, want.data());
  EXPECT_LT(rel_l2(download(out, n * inter), want), bound());

  auto table = random(vocab * dim, 1.0f, dtab);
  std::vector<int32_t> tokens(n);
  for (auto& t : tokens) t = std::uniform_int_distribution<int32_t>(0, vocab - 1)(rng_);
  cuda::DeviceBuffer dtok(n * 4);
  dtok.upload(tokens.data(), n * 4);
  auto emb = poisoned(n * dim);
  cuda::embedding(dtab.data(), dtype(), dim, dtok.as<int32_t>(), n, emb.data(), dtype(), nullptr);
  std::vector<float> e(n * dim);
  for (int64_t i = 0; i < n; ++i) std::copy_n(table.begin() + tokens[i] * dim, dim, e.begin() + i * dim);
  EXPECT_EQ(download(emb, n * dim), e);

  auto a = random(n * dim, 1.0f, da);
  auto b = random(n * dim, 1.0f, db);
  cuda::add(da.data(), db.data(), n * dim, dtype(), nullptr);
  std::vector<float> sum(n * dim);
  for (size_t i = 0; i < sum.size(); ++i) sum[i] = from_bits(to_bits(a[i] + b[i]));
  EXPECT_EQ(download(da, n * dim), sum);

  const std::vector<int64_t> rows = {5, 0, 18};
  cuda::DeviceBuffer drows(rows.size() * 8);
  drows.upload(rows.data(), drows.size());
  auto g = poisoned(rows.size() * dim);
  cuda::gather_rows(db.data(), dim, drows.as<int64_t>(), 3, g.data(), dtype(), nullptr);
  std::vector<float> gw;
  for (int64_t r : rows) gw.insert(gw.end(), b.begin() + r * dim, b.begin() + (r + 1) * dim);
  EXPECT_EQ(download(g, rows.size() * dim), gw);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaOps, ::testing::Values(DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace fp6serve
