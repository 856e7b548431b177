// The dequantization kernel of the large-n path, the launches, and the plan: which kernel,
// tile and split fpx_linear uses (the kernels: fpx_gemv_kernel.cuh, fpx_gemm_kernel.cuh,
// fpx_wgmma_kernel.cuh; docs/kernels.md has the design).
#include <algorithm>
#include <tuple>

#include "backend/cuda/device.h"
#include "backend/cuda/fpx_gemm_kernel.cuh"
#include "backend/cuda/fpx_gemv_kernel.cuh"
#include "backend/cuda/fpx_wgmma_kernel.cuh"

namespace fp6serve::cuda {

namespace {

// Row tiles [rt0, rt1) dequantized and scaled into out[(rt - rt0) * 16 + r, c]: a warp per
// unit, staged through shared memory so that the 16-bit rows go out in 16-byte stores.
constexpr int kDequantWarps = 4;

template <int kE, int kM, bool kBf16>
__global__ void __launch_bounds__(kDequantWarps * 32)
    dequant_kernel(const uint8_t* __restrict__ w, const float* __restrict__ scales, int64_t cols, int64_t col_units,
                   int64_t rt0, int64_t units, uint16_t* __restrict__ out) {
  constexpr fpx::PackPlan plan = fpx::make_pack_plan(fpx::Format{kE, kM}, kBf16 ? DType::kBF16 : DType::kF16);
  __shared__ __align__(16) uint16_t tile[kDequantWarps][fpx::kUnitRows][kXStride];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t unit = static_cast<int64_t>(blockIdx.x) * kDequantWarps + warp;
  if (unit >= units) return;
  const int64_t rt = rt0 + unit / col_units, u = unit % col_units;
  UnitWords<plan.num_segments> words;
  read_unit_words<plan>(w + (rt * col_units + u) * plan.unit_bytes(), lane, words);
  float scale[2];
#pragma unroll
  for (int r = 0; r < 2; ++r)
    scale[r] = scales[rt * fpx::kUnitRows + fpx::unit_row(lane, r)] * (kBf16 ? 1.0f : raw_to_value(plan));
#pragma unroll
  for (int f = 0; f < fpx::kUnitFragments; ++f)
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const uint32_t h = dequant_reg<plan, kBf16>(words, f, r);
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const uint16_t bits = static_cast<uint16_t>(h >> (16 * half));
        const float v = kBf16 ? __bfloat162float(__ushort_as_bfloat16(bits)) : __half2float(__ushort_as_half(bits));
        tile[warp][fpx::unit_row(lane, r)][fpx::unit_col(lane, r, half, f)] = to_bits<kBf16>(v * scale[r & 1]);
      }
    }
  __syncwarp();
  uint16_t* dst = out + (rt - rt0) * fpx::kUnitRows * cols + u * fpx::kUnitCols;
  const int64_t valid = min(static_cast<int64_t>(fpx::kUnitCols), cols - u * fpx::kUnitCols);
  if (cols % 8 == 0) {
#pragma unroll
    for (int c = lane; c < fpx::kUnitRows * 16; c += 32) {
      const int r = c / 16, kc = (c % 16) * 8;
      if (kc < valid)
        *reinterpret_cast<uint4*>(dst + r * cols + kc) = *reinterpret_cast<const uint4*>(&tile[warp][r][kc]);
    }
  } else {
    for (int c = lane; c < fpx::kUnitRows * fpx::kUnitCols; c += 32) {
      const int r = c / fpx::kUnitCols, kc = c % fpx::kUnitCols;
      if (kc < valid) dst[r * cols + kc] = tile[warp][r][kc];
    }
  }
}

// The pipelined mma.sync kernel's tile (fpx_gemm_kernel.cuh) for more tokens where the
// Hopper kernel does not serve the weight: 32 or 64 tokens per CTA (64 past that, in token
// blocks), the CTA shape from the tile sweep of bench/gemm_bench.cc on the H100.
template <typename F>
void dispatch_tile(int64_t n, F&& f) {
  if (n <= 32) return f.template operator()<Tile<32, 8, 1, 4>>();
  return f.template operator()<Tile<64, 8, 1, 3>>();
}

// The Hopper tiles (tokens, consumer warpgroups of 64 rows, X half tiles per X slot, X slots,
// weight slots: as many as fit in 227 KB) fpx_gemm_plan chooses from, by index: for up to 64
// tokens, up to 256, and more. Three warpgroups (192 rows) fill the last wave of CTAs better
// on some layers; whole-unit X slots (fewer barrier waits) for the small tiles, half-unit ones
// to give the 256-token tile five stages (bench/results/2026-11-24-hopper-gemm-h100.md).
using HopperTiles = std::tuple<WgTile<64, 2, 2, 6, 8>, WgTile<64, 3, 2, 6, 6>, WgTile<128, 2, 2, 4, 6>,
                               WgTile<128, 3, 2, 4, 4>, WgTile<256, 2, 1, 5, 4>>;
constexpr int kHopperTiles = std::tuple_size_v<HopperTiles>;

template <typename F, int kI = 0>
void dispatch_hopper_tile(int index, F&& f) {
  if constexpr (kI < kHopperTiles) {
    if (index == kI) return f.template operator()<std::tuple_element_t<kI, HopperTiles>>();
    dispatch_hopper_tile<F, kI + 1>(index, std::forward<F>(f));
  }
}

// Tiles [first, last] of HopperTiles are the candidates for n tokens.
std::pair<int, int> hopper_candidates(int64_t n) {
  if (n <= 64) return {0, 1};
  if (n <= 128) return {2, 3};
  if (n <= 512) return {2, 4};
  return {4, 4};
}

// The best Hopper tile and split measured on the H100 (132 SMs) for the Llama-2-7B and 70B
// layers, per token bucket up to 512 (n up to `tokens`, above half of it; above 512 the
// 256-token tile without a split wins on every one of them): `fp6serve_bench_gemm --hopper`,
// bench/results/2026-11-24-hopper-gemm-h100.md. Other shapes and GPUs take the rule in
// fpx_gemm_plan.
struct MeasuredHopperPlan {
  int64_t rows, cols, tokens;
  int tile, splits;
};
constexpr int kMeasuredSms = 132;
constexpr MeasuredHopperPlan kMeasuredHopperPlans[] = {
    {12288, 4096, 32, 1, 2},  {12288, 4096, 64, 0, 1},  {12288, 4096, 128, 2, 1}, {12288, 4096, 256, 4, 1},
    {12288, 4096, 512, 3, 1}, {4096, 4096, 32, 0, 4},   {4096, 4096, 64, 0, 4},   {4096, 4096, 128, 0, 2},
    {4096, 4096, 256, 0, 1},  {4096, 4096, 512, 2, 1},  {22016, 4096, 32, 1, 1},  {22016, 4096, 64, 1, 1},
    {22016, 4096, 128, 3, 1}, {22016, 4096, 256, 3, 1}, {22016, 4096, 512, 4, 1}, {4096, 11008, 32, 0, 4},
    {4096, 11008, 64, 0, 4},  {4096, 11008, 128, 2, 4}, {4096, 11008, 256, 2, 2}, {4096, 11008, 512, 2, 1},
    {10240, 8192, 32, 1, 2},  {10240, 8192, 64, 1, 2},  {10240, 8192, 128, 3, 2}, {10240, 8192, 256, 4, 1},
    {10240, 8192, 512, 3, 1}, {8192, 8192, 32, 0, 2},   {8192, 8192, 64, 0, 2},   {8192, 8192, 128, 2, 2},
    {8192, 8192, 256, 2, 1},  {8192, 8192, 512, 4, 1},  {57344, 8192, 32, 1, 2},  {57344, 8192, 64, 1, 1},
    {57344, 8192, 128, 2, 1}, {57344, 8192, 256, 4, 1}, {57344, 8192, 512, 4, 1}, {8192, 28672, 32, 0, 2},
    {8192, 28672, 64, 0, 2},  {8192, 28672, 128, 2, 2}, {8192, 28672, 256, 4, 2}, {8192, 28672, 512, 4, 1}};

// The small-n kernel's best split measured on the H100 for the Llama-2-7B and 70B layers, with
// fpx_gemm.cu's tile for 8 and for 16 tokens, and for 32 tokens on the layers where that tile
// beat the Hopper kernel at 32 tokens (the four 70B layers and 7B o; 17-32 tokens of those
// layers take it): `fp6serve_bench_gemm --gemv`, bench/results/2026-11-24-decode-h100.md.
// Other shapes and GPUs take the rule in fpx_gemm_plan.
struct MeasuredGemvSplit {
  int64_t rows, cols, tokens;
  int splits;
};
constexpr MeasuredGemvSplit kMeasuredGemvSplits[] = {
    {12288, 4096, 8, 4},  {4096, 4096, 8, 8},    {22016, 4096, 8, 3},  {4096, 11008, 8, 12}, {10240, 8192, 8, 6},
    {8192, 8192, 8, 8},   {57344, 8192, 8, 8},   {8192, 28672, 8, 8},  {12288, 4096, 16, 4}, {4096, 4096, 16, 8},
    {22016, 4096, 16, 8}, {4096, 11008, 16, 12}, {10240, 8192, 16, 3}, {8192, 8192, 16, 6},  {57344, 8192, 16, 2},
    {8192, 28672, 16, 4}, {4096, 4096, 32, 4},   {10240, 8192, 32, 3}, {8192, 8192, 32, 4},  {57344, 8192, 32, 2},
    {8192, 28672, 32, 4}};

// The Hopper kernel is built for sm_90a only.
bool sm90() {
  return compute_capability_major() == 9;
}

template <int kE, int kM, bool kBf16>
void launch_dequant(const FpxLaunch& l, int64_t rt0, int64_t rt1, uint16_t* out) {
  const int64_t units = (rt1 - rt0) * l.col_units;
  dequant_kernel<kE, kM, kBf16>
      <<<static_cast<unsigned>((units + kDequantWarps - 1) / kDequantWarps), kDequantWarps * 32, 0, l.stream>>>(
          l.w, l.scales, l.cols, l.col_units, rt0, units, out);
  FP6_CUDA_CHECK_LAUNCH();
}

// The formats compiled into the GPU kernels: FP6 e3m2 and e2m3, FP5 e2m2, FP4 e2m1.
template <typename F>
void dispatch_format(const FpxLaunch& l, F&& f) {
  const fpx::Format fmt = l.plan.format;
  const bool bf16 = l.plan.target == DType::kBF16;
  auto pick = [&]<int kE, int kM>() {
    if (bf16)
      f.template operator()<kE, kM, true>();
    else
      f.template operator()<kE, kM, false>();
  };
  if (fmt == fpx::kE3M2) return pick.template operator()<3, 2>();
  if (fmt == fpx::kE2M2) return pick.template operator()<2, 2>();
  if (fmt == fpx::kE2M1) return pick.template operator()<2, 1>();
  if (fmt == fpx::kE2M3) return pick.template operator()<2, 3>();
  FP6_CUDA_REQUIRE(false, kUnsupported,
                   "the GPU kernels are built for e3m2, e2m3, e2m2 and e2m1 (FP6, FP6, FP5, FP4), not " + fmt.name());
}

}  // namespace

bool fpx_gpu_format_supported(fpx::Format f) {
  return f == fpx::kE3M2 || f == fpx::kE2M3 || f == fpx::kE2M2 || f == fpx::kE2M1;
}

bool fpx_wgmma_supported(const fpx::PackPlan& plan, int64_t cols) {
  return (plan.format == fpx::kE3M2 || plan.format == fpx::kE2M3) && cols % 8 == 0 && sm90();
}

FpxGemmPlan fpx_gemm_plan(const fpx::PackPlan& plan, int64_t row_tiles, int64_t col_units, int64_t cols, int64_t n,
                          int sms) {
  FpxGemmPlan p;
  // At least 4 K units (512 columns) per split.
  const int64_t max_splits = std::max<int64_t>(1, col_units / 4);
  auto measured_gemv = [&](int64_t tokens) -> const MeasuredGemvSplit* {
    if (sms != kMeasuredSms) return nullptr;
    for (const MeasuredGemvSplit& m : kMeasuredGemvSplits)
      if (m.rows == row_tiles * fpx::kUnitRows && m.cols == cols && m.tokens == tokens) return &m;
    return nullptr;
  };
  // 17-32 tokens of a layer where the small-n kernel's 32-token tile measured faster.
  const bool gemv32 =
      n > kFpxGemvMaxTokens && n <= 32 && fpx_wgmma_supported(plan, cols) && measured_gemv(32) != nullptr;
  if (n >= kFpxHopperMinTokens && fpx_wgmma_supported(plan, cols) && !gemv32) {
    p.hopper = true;
    auto take = [&](int t, int64_t s) {
      dispatch_hopper_tile(t, [&]<class Cfg>() { p.rows_per_cta = Cfg::kRows, p.tokens_per_cta = Cfg::kN; });
      p.tile = t, p.splits = static_cast<int>(std::min(s, max_splits));
    };
    if (sms == kMeasuredSms)
      for (const MeasuredHopperPlan& m : kMeasuredHopperPlans)
        if (m.rows == row_tiles * fpx::kUnitRows && m.cols == cols && n <= m.tokens && n > m.tokens / 2) {
          take(m.tile, m.splits);
          return p;
        }
    // Otherwise: one CTA per SM (a CTA takes most of its shared memory), so pick the tile
    // whose CTAs fill their last wave best; split K only to bring a grid of less than half
    // the SMs up to one wave (splits cost their partial sums, their reduction and a shorter
    // pipeline: each must gain 10%). Ties go to the smaller tile index.
    double best = -1;
    const auto [first, last] = hopper_candidates(n);
    for (int t = first; t <= last; ++t)
      dispatch_hopper_tile(t, [&]<class Cfg>() {
        const int64_t blocks =
            (row_tiles * fpx::kUnitRows + Cfg::kRows - 1) / Cfg::kRows * ((n + Cfg::kN - 1) / Cfg::kN);
        const int64_t s = 2 * blocks <= sms ? std::min<int64_t>(sms / blocks, max_splits) : 1;
        const int64_t ctas = blocks * s, waves = (ctas + sms - 1) / sms;
        // At an equal fill the 256-token tile is faster (five X stages, half the dequantization
        // per token): +10%.
        const double score = static_cast<double>(ctas) / static_cast<double>(waves * sms) / (1.0 + 0.1 * (s - 1)) *
                             (Cfg::kN == 256 ? 1.1 : 1.0);
        if (score > best + 1e-9) best = score, take(t, s);
      });
    return p;
  }
  if (n <= kFpxGemvMaxTokens || gemv32) {
    p.gemv = true;
    int64_t resident = 0;
    dispatch_gemv_tile<32>(n, [&]<class Cfg>() {
      p.rows_per_cta = Cfg::kRows, p.tokens_per_cta = Cfg::kN, resident = int64_t{Cfg::kMinBlocks} * sms;
    });
    if (n <= 0) return p;  // nothing to split
    if (const MeasuredGemvSplit* m = measured_gemv(p.tokens_per_cta)) {
      p.splits = static_cast<int>(std::min<int64_t>(m->splits, max_splits));
      return p;
    }
    // Otherwise: the most splits that keep the CTAs in one wave (the registers of the tile
    // allow kMinBlocks per SM; a partial second wave cost up to 17%), at least 4 units each.
    const int64_t ctas = (row_tiles * fpx::kUnitRows + p.rows_per_cta - 1) / p.rows_per_cta;
    p.splits = static_cast<int>(std::clamp<int64_t>(resident / std::max<int64_t>(ctas, 1), 1, max_splits));
    return p;
  }
  dispatch_tile(n, [&]<class Cfg>() { p.rows_per_cta = Cfg::kRows, p.tokens_per_cta = Cfg::kN; });
  // The pipelined kernel is latency-bound: the best splits put about two CTAs on every SM.
  const int64_t ctas = (row_tiles * fpx::kUnitRows + p.rows_per_cta - 1) / p.rows_per_cta *
                       ((n + p.tokens_per_cta - 1) / p.tokens_per_cta);
  p.splits = static_cast<int>(std::clamp<int64_t>((2 * sms + ctas / 2) / ctas, 1, max_splits));
  return p;
}

const std::vector<FpxHopperTile>& fpx_hopper_tiles() {
  static const std::vector<FpxHopperTile> tiles = [] {
    std::vector<FpxHopperTile> v;
    for (int t = 0; t < kHopperTiles; ++t)
      dispatch_hopper_tile(t, [&]<class Cfg>() {
        v.push_back({Cfg::kN, Cfg::kConsumers, Cfg::kXHalves * Cfg::kXStages, Cfg::kWStages});
      });
    return v;
  }();
  return tiles;
}

void launch_fpx_gemm_hopper_tile(const FpxLaunch& l, int tile) {
  FP6_CUDA_REQUIRE(fpx_wgmma_supported(l.plan, l.cols) && reinterpret_cast<uintptr_t>(l.x) % 16 == 0 && tile >= 0 &&
                       tile < kHopperTiles,
                   kInvalidArgument, "fpx gemm: no Hopper tile " + std::to_string(tile) + " for this call");
  dispatch_format(l, [&]<int kE, int kM, bool kBf16>() {
    if constexpr (kE == 3 && kM == 2 || kE == 2 && kM == 3)
      dispatch_hopper_tile(tile, [&]<class Cfg>() { launch_wgmma_tile<kE, kM, kBf16, Cfg>(l); });
  });
}

void launch_fpx_gemm(const FpxLaunch& l) {
  const FpxGemmPlan p = fpx_gemm_plan(l.plan, l.row_tiles, l.col_units, l.cols, l.n, sm_count());
  const bool hopper = p.hopper && reinterpret_cast<uintptr_t>(l.x) % 16 == 0;
  dispatch_format(l, [&]<int kE, int kM, bool kBf16>() {
    if (p.gemv) return dispatch_gemv_tile<32>(l.n, [&]<class Cfg>() { launch_gemv_tile<kE, kM, kBf16, Cfg>(l); });
    if constexpr (kE == 3 && kM == 2 || kE == 2 && kM == 3) {
      if (hopper) return dispatch_hopper_tile(p.tile, [&]<class Cfg>() { launch_wgmma_tile<kE, kM, kBf16, Cfg>(l); });
    }
    dispatch_tile(l.n, [&]<class Cfg>() { launch_fused_tile<kE, kM, kBf16, Cfg>(l); });
  });
}

void launch_fpx_dequant(const FpxLaunch& l, int64_t rt0, int64_t rt1, void* out) {
  dispatch_format(l, [&]<int kE, int kM, bool kBf16>() {
    launch_dequant<kE, kM, kBf16>(l, rt0, rt1, static_cast<uint16_t*>(out));
  });
}

namespace {

template <typename T>
__global__ void add_bias_kernel(T* y, const float* bias, int64_t rows, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    float v;
    if constexpr (std::is_same_v<T, __half>)
      v = __half2float(y[i]) + bias[i % rows], y[i] = __float2half_rn(v);
    else
      v = __bfloat162float(y[i]) + bias[i % rows], y[i] = __float2bfloat16_rn(v);
  }
}

}  // namespace

void launch_add_bias(void* y, DType dtype, const float* bias, int64_t rows, int64_t n, cudaStream_t stream) {
  const int64_t total = rows * n;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 4096));
  if (dtype == DType::kBF16)
    add_bias_kernel<<<blocks, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(y), bias, rows, total);
  else
    add_bias_kernel<<<blocks, 256, 0, stream>>>(static_cast<__half*>(y), bias, rows, total);
  FP6_CUDA_CHECK_LAUNCH();
}

}  // namespace fp6serve::cuda
