// The Hopper FPx GEMM for many tokens (included by fpx_gemm.cu): the fused kernel's work
// (Y = X . (scale (.) dequant(W))^T + bias, split-K in one launch) with wgmma instead of
// mma.sync, so that one CTA covers 128 or 256 tokens and reads and dequantizes each weight
// once per 256 tokens instead of once per 64. sm_90a only (fpx_wgmma_supported says where).
//
// Operands. The weights are wgmma's A operand from registers: warp w of a warpgroup holds the
// 16 rows of its row tile as m16n8k16 A fragments, which is exactly what the packed unit
// (fpx/pack_plan.h) gives a warp, so this kernel reads the same packed bytes as the small-n
// kernel. A warpgroup covers 64 output rows, a CTA of two warpgroups 128. X is B, from
// shared memory through a matrix descriptor: per stage the [BN tokens x 128] X tile in the
// no-swizzle K-major layout of 8x8 core matrices (128 contiguous bytes each: token t % 8's 16
// bytes of one 8-column chunk), core matrix (k chunk c, token block b) at (c * BN / 8 + b) *
// 128 bytes; so the leading (K) byte offset is BN * 16 and the stride (token) byte offset 128.
//
// Pipeline. As the small-n kernel: kStages shared-memory stages filled by cp.async, kStages - 1
// units ahead. Per unit, each warp dequantizes its 8 A fragments into registers (bit
// placement, fpx::PackPlan), then its warpgroup issues 8 wgmmas (k16 each) and waits for them
// before the stage is reused. The scale and bias are applied in FP32 in the epilogue.
#pragma once

#include "backend/cuda/fpx_gemm_kernel.cuh"
#include "backend/cuda/ptx.cuh"
#include "backend/cuda/wgmma_ops.cuh"

namespace fp6serve::cuda {

namespace {

// kN tokens per CTA (128 or 256: a wgmma width), two warpgroups of 64 rows, kStages stages.
template <int kN_, int kStages_>
struct WgTile {
  static constexpr int kN = kN_, kStages = kStages_, kWarps = 8, kRows = 128;
  static constexpr int kXBytes = kN * fpx::kUnitCols * 2;
  static constexpr int stage_bytes(int unit_bytes) { return kXBytes + kWarps * unit_bytes; }
  template <int kUnitBytes>
  static constexpr int smem_bytes() {
    return kStages * stage_bytes(kUnitBytes);
  }
};

template <int kE, int kM, bool kBf16, class Cfg>
__global__ void __launch_bounds__(Cfg::kWarps * 32, 1) fpx_wgmma_kernel(const GemmArgs a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kN = Cfg::kN, kWarps = Cfg::kWarps, kStages = Cfg::kStages, kThreads = kWarps * 32;
  constexpr fpx::PackPlan plan = fpx::make_pack_plan(fpx::Format{kE, kM}, kBf16 ? DType::kBF16 : DType::kF16);
  constexpr int kUnitBytes = plan.unit_bytes();
  static_assert(kUnitBytes % 16 == 0, "units must be whole 16-byte chunks");
  constexpr int kXBytes = Cfg::kXBytes;
  constexpr int kStageBytes = Cfg::stage_bytes(kUnitBytes);
  constexpr int kAcc = kN / 2;
  constexpr float kFold = kBf16 ? 1.0f : raw_to_value(plan);
  extern __shared__ __align__(128) uint8_t smem[];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t rt = static_cast<int64_t>(blockIdx.x) * kWarps + warp;  // this warp's row tile
  const bool rt_valid = rt < a.row_tiles;
  const int split = static_cast<int>(blockIdx.y);
  const int64_t n0 = static_cast<int64_t>(blockIdx.z) * kN;
  const int n_here = static_cast<int>(min(static_cast<int64_t>(kN), a.n - n0));
  const int u_begin = static_cast<int>(a.col_units * split / a.splits);
  const int units = static_cast<int>(a.col_units * (split + 1) / a.splits) - u_begin;
  const uint16_t* x = a.x + n0 * a.cols;
  const int64_t tile_bytes = a.col_units * kUnitBytes;

  // Stage `slot` <- unit u of this warp's row tile (after the X tile).
  auto load_weights = [&](int u, int slot) {
    if (!rt_valid) return;
    const uint8_t* src = a.w + rt * tile_bytes + static_cast<int64_t>(u) * kUnitBytes;
    uint8_t* dst = smem + slot * kStageBytes + kXBytes + warp * kUnitBytes;
#pragma unroll
    for (int c = lane; c < kUnitBytes / 16; c += 32) cp_async16(dst + c * 16, src + c * 16, 16);
  };
  // Stage `slot` <- X[tokens, 128u .. 128u + 128) in core matrices; tokens past n and columns
  // past K are zeros. Four neighbouring lanes copy 64 contiguous bytes of one token's row.
  auto load_x = [&](int u, int slot) {
    uint8_t* xs = smem + slot * kStageBytes;
    const int64_t k0 = static_cast<int64_t>(u) * fpx::kUnitCols;
#pragma unroll 4
    for (int c = threadIdx.x; c < kN * 16; c += kThreads) {
      const int tok = (c / 4) % kN, chunk = 4 * (c / (4 * kN)) + c % 4;
      const bool in = tok < n_here && k0 + chunk * 8 < a.cols;  // K % 8 == 0: a chunk is all in or out
      cp_async16(xs + (chunk * (kN / 8) + tok / 8) * 128 + (tok % 8) * 16, in ? x + tok * a.cols + k0 + chunk * 8 : x,
                 in ? 16 : 0);
    }
  };

  float d[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) d[i] = 0.0f;

    // Prologue: the weights of the first stages before griddepcontrol.wait (they do not depend
    // on the previous kernel), X after it.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s)
    if (s < units) load_weights(u_begin + s, s);
  wait_for_previous_grid();
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < units) load_x(u_begin + s, s);
    cp_async_commit();
  }
  for (int i = 0; i < units; ++i) {
    cp_async_wait<kStages - 2>();
    fence_proxy_async_shared();
    __syncthreads();  // stage i is visible to all (and to wgmma); stage i-1 is free
    if (i + kStages - 1 < units) {
      load_weights(u_begin + i + kStages - 1, (i + kStages - 1) % kStages);
      load_x(u_begin + i + kStages - 1, (i + kStages - 1) % kStages);
    }
    cp_async_commit();
    const uint8_t* st = smem + (i % kStages) * kStageBytes;
    UnitWords<plan.num_segments> words;
    if (rt_valid) {
      read_unit_words<plan>(st + kXBytes + warp * kUnitBytes, lane, words);
    } else {
#pragma unroll
      for (int s = 0; s < plan.num_segments; ++s)
#pragma unroll
        for (int j = 0; j < 8; ++j) words.w[s][j] = 0;  // a row tile past the end: zeros, never stored
    }
    uint32_t af[fpx::kUnitFragments][4];
#pragma unroll
    for (int f = 0; f < fpx::kUnitFragments; ++f)
#pragma unroll
      for (int r = 0; r < 4; ++r) af[f][r] = dequant_reg<plan, kBf16>(words, f, r);
#pragma unroll
    for (int j = 0; j < kAcc; ++j) fence_operand(d[j]);
    wgmma_fence();
#pragma unroll
    for (int f = 0; f < fpx::kUnitFragments; ++f)
      Wgmma<kN, kBf16>::mma(d, af[f], smem_descriptor(st + f * 2 * (kN / 8) * 128, kN * 16, 128));
    wgmma_commit();
    wgmma_wait_all();
#pragma unroll
    for (int j = 0; j < kAcc; ++j) fence_operand(d[j]);
  }

  // d[4 nt + e]: row g + 8 (e / 2) of the warp's row tile, token 8 nt + 2 t + e % 2.
  if (a.splits == 1) {
    if (!rt_valid) return;
#pragma unroll
    for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int tok = nt * 8 + 2 * t + (e & 1);
        const int64_t row = rt * fpx::kUnitRows + g + 8 * (e >> 1);
        if (tok >= n_here || row >= a.rows) continue;
        const float v = d[nt * 4 + e] * (a.scales[row] * kFold) + (a.bias ? a.bias[row] : 0.0f);
        a.y[(n0 + tok) * a.rows + row] = to_bits<kBf16>(v);
      }
    return;
  }
  float* part = a.partials + (static_cast<int64_t>(split) * a.n + n0) * a.ld;
  if (rt_valid) {
#pragma unroll
    for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int tok = nt * 8 + 2 * t + (e & 1);
        if (tok < n_here) part[tok * a.ld + rt * fpx::kUnitRows + g + 8 * (e >> 1)] = d[nt * 4 + e];
      }
  }
  finish_split<kBf16, Cfg::kRows, kThreads>(a, n0, n_here, kFold);
#endif
}

// One launch of the Hopper kernel with tile Cfg (X rows 16-byte aligned, K % 8 == 0).
template <int kE, int kM, bool kBf16, class Cfg>
void launch_wgmma_tile(const FpxLaunch& l) {
  constexpr fpx::PackPlan plan = fpx::make_pack_plan(fpx::Format{kE, kM}, kBf16 ? DType::kBF16 : DType::kF16);
  constexpr int kSmem = Cfg::template smem_bytes<plan.unit_bytes()>();
  auto* kernel = fpx_wgmma_kernel<kE, kM, kBf16, Cfg>;
  static const bool once = [&] {
    FP6_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    return true;
  }();
  (void)once;
  launch_gemm<Cfg>(kernel, kSmem, l, true);
}

}  // namespace

}  // namespace fp6serve::cuda
