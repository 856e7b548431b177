// The small-n FPx kernel (1 to 16 tokens: decode; 32 on the layers where it measured faster
// than the Hopper kernel; every token block of the grouped expert GEMM), templated on its tile
// (included by fpx_gemm.cu and moe.cu, which instantiate the tiles they use, and by the GEMM
// benchmark's sweep). docs/kernels.md has the design and the measurements behind it.
//
// At a few tokens the product is a stream of weight bytes: what counts is how many bytes are
// in flight per SM and how few instructions each weight costs. So, unlike the pipelined
// kernel of fpx_gemm_kernel.cuh (which it replaced for n <= 16), the weights never touch
// shared memory and the warps never wait for each other in the main loop:
//
// - A warp owns one row tile (16 output channels) and the CTA's K range (split-K,
//   blockIdx.y). Its lanes load their own words of each unit straight from global memory into
//   registers (16-byte loads, coalesced: a warp's load is 512 contiguous bytes; not allocated
//   in L1), kDepth units ahead of the one being multiplied, in a register ring. The first
//   kDepth units are requested before griddepcontrol.wait (programmatic dependent launch), so
//   they stream in while the previous kernel ends.
// - The CTA's warps share X: the tokens' columns of the K range, staged in shared memory in
//   chunks of kChunkUnits units (one chunk for the K ranges the planner picks; longer ranges
//   take a __syncthreads per chunk), rows padded by 8 halves so that ldmatrix is
//   conflict-free. Token rows past n are never read: their lanes address the last real row,
//   and the outputs of those MMA columns are dropped.
// - Dequantization in registers (dequant_reg, the same bit placement as every FPx kernel)
//   into m16n8k16 A fragments; B fragments by ldmatrix; FP32 accumulators; scale and bias in
//   the epilogue; split-K partials reduced by the last CTA of a row block (finish_split).
#pragma once

#include "backend/cuda/fpx_gemm_kernel.cuh"

namespace fp6serve::cuda {

namespace {

// kN tokens per CTA (8 or 16; blockIdx.z for more), kWarps warps (one row tile each), kDepth
// units in flight per warp, kMinBlocks CTAs per SM the registers are allocated for.
template <int kN_, int kWarps_, int kDepth_, int kMinBlocks_>
struct GemvTile {
  static constexpr int kN = kN_, kWarps = kWarps_, kDepth = kDepth_, kMinBlocks = kMinBlocks_;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRows = kWarps * fpx::kUnitRows;
  // X is staged this many units at a time (a whole number of ring turns): 2048 columns up to
  // 16 tokens, fewer for more tokens (about 64 KB of shared memory).
  static constexpr int kChunkTarget = kN <= 16 ? 16 : 256 / kN;
  static constexpr int kChunkUnits = kDepth * ((kChunkTarget + kDepth - 1) / kDepth);
  static constexpr int kXStride = kChunkUnits * fpx::kUnitCols + 8;  // halves per staged X row
  static_assert(kN == 8 || kN % 16 == 0, "one m16n8k16 B tile, or pairs of them");
  static constexpr int smem_bytes(int64_t n) { return static_cast<int>(n < kN ? n : kN) * kXStride * 2; }
};

// A grouped call (the experts of a mixture-of-experts layer, moe.cu): CTA z takes item z of a
// work list of (expert, first row, rows <= kN) triples that the previous kernel wrote
// (moe_group); that expert's units and scales lie expert_bytes and expert_scales after the
// previous expert's. work == nullptr: a plain call, blockIdx.z numbering blocks of kN tokens.
struct GemvItems {
  const int32_t* work = nullptr;
  const int32_t* num_work = nullptr;
  int64_t expert_bytes = 0, expert_scales = 0;
};

template <int kE, int kM, bool kBf16, class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks)
    fpx_gemv_kernel(const GemmArgs args, const GemvItems items) {
  constexpr int kN = Cfg::kN, kWarps = Cfg::kWarps, kDepth = Cfg::kDepth, kThreads = Cfg::kThreads;
  constexpr int kChunk = Cfg::kChunkUnits, kXStride = Cfg::kXStride;
  constexpr fpx::PackPlan plan = fpx::make_pack_plan(fpx::Format{kE, kM}, kBf16 ? DType::kBF16 : DType::kF16);
  static_assert(plan.num_segments >= 1 && plan.num_segments <= 3, "plan not supported by this kernel");
  constexpr int kUnitBytes = plan.unit_bytes();
  constexpr int kNTiles = kN / 8;
  constexpr float kFold = kBf16 ? 1.0f : raw_to_value(plan);  // FP16 MMAs ran on raw values
  extern __shared__ __align__(16) uint8_t smem[];
  uint16_t* xs = reinterpret_cast<uint16_t*>(smem);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  GemmArgs a = args;
  int64_t n0;
  int n_here;
  if (items.work) {
    // The work list is the previous kernel's output: wait for it before taking this CTA's
    // item (so no weights are requested ahead of the wait here).
    wait_for_previous_grid();
    const int item = static_cast<int>(blockIdx.z);
    if (item >= items.num_work[0]) return;
    const int expert = items.work[3 * item];
    n0 = items.work[3 * item + 1], n_here = items.work[3 * item + 2];
    a.w += expert * items.expert_bytes;
    a.scales += expert * items.expert_scales;
  } else {
    n0 = static_cast<int64_t>(blockIdx.z) * kN;
    n_here = static_cast<int>(min(static_cast<int64_t>(kN), a.n - n0));
  }
  const int64_t rt = static_cast<int64_t>(blockIdx.x) * kWarps + warp;  // this warp's row tile
  const bool active = rt < a.row_tiles;
  const int split = static_cast<int>(blockIdx.y);
  const int u_begin = static_cast<int>(a.col_units * split / a.splits);
  const int units = static_cast<int>(a.col_units * (split + 1) / a.splits) - u_begin;
  const uint8_t* wp = a.w + ((active ? rt : 0) * a.col_units + u_begin) * kUnitBytes;

  UnitWords<plan.num_segments> ring[kDepth];
#pragma unroll
  for (int d = 0; d < kDepth; ++d)
    if (active && d < units) read_unit_words<plan, true>(wp + d * kUnitBytes, lane, ring[d]);
  allow_dependents_to_launch();
  if (!items.work) wait_for_previous_grid();  // X, the workspace and Y only from here on

  // X columns of units [u_begin + c0, + kChunk) of the CTA's tokens into shared memory.
  const uint16_t* x = a.x + n0 * a.cols;
  auto stage_x = [&](int c0) {
    const int64_t k0 = static_cast<int64_t>(u_begin + c0) * fpx::kUnitCols;
    const int span = min(kChunk, units - c0) * fpx::kUnitCols;
    if (a.x_vec) {
      for (int c = threadIdx.x; c < n_here * (span / 8); c += kThreads) {
        const int r = c / (span / 8), kc = (c % (span / 8)) * 8;
        const bool in = k0 + kc < a.cols;  // K % 8 == 0: a chunk is all in or all out
        cp_async16(xs + r * kXStride + kc, in ? x + r * a.cols + k0 + kc : x, in ? 16 : 0);
      }
      cp_async_commit();
      cp_async_wait<0>();
    } else {
      for (int c = threadIdx.x; c < n_here * span; c += kThreads) {
        const int r = c / span, kc = c % span;
        xs[r * kXStride + kc] = k0 + kc < a.cols ? x[r * a.cols + k0 + kc] : uint16_t{0};
      }
    }
    __syncthreads();
  };

  // ldmatrix rows: for the B tiles 2p and 2p + 1, lane l addresses token 16 p + 8 (l / 16) +
  // l % 8 (the last real token past n_here: rows past it are not staged), columns 8 (l / 8 % 2)
  // on.
  constexpr int kPairs = kNTiles > 1 ? kNTiles / 2 : 1;
  const uint16_t* xb[kPairs];
#pragma unroll
  for (int q = 0; q < kPairs; ++q)
    xb[q] = xs + min(16 * q + 8 * (lane / 16) + lane % 8, n_here - 1) * kXStride + 8 * (lane / 8 % 2);
  float c[kNTiles][4] = {};
  for (int c0 = 0; c0 < units; c0 += kChunk) {
    if (c0 > 0) __syncthreads();  // every warp is done with the previous chunk
    stage_x(c0);
    for (int i0 = c0; i0 < min(c0 + kChunk, units); i0 += kDepth) {
#pragma unroll
      for (int d = 0; d < kDepth; ++d) {
        const int i = i0 + d;
        if (!active || i >= units) break;
        const int col = (i - c0) * fpx::kUnitCols;
#pragma unroll
        for (int f = 0; f < fpx::kUnitFragments; ++f) {
          uint32_t b[kNTiles][2] = {};
          if constexpr (kNTiles == 1) {
            ldmatrix_x2(b[0], xb[0] + col + 16 * f);
          } else {
#pragma unroll
            for (int nt = 0; nt < kNTiles; nt += 2) {
              if (nt * 8 >= n_here) break;  // the same for the whole warp
              uint32_t r[4];
              ldmatrix_x4(r, xb[nt / 2] + col + 16 * f);
              b[nt][0] = r[0], b[nt][1] = r[1], b[nt + 1][0] = r[2], b[nt + 1][1] = r[3];
            }
          }
          uint32_t af[4];
#pragma unroll
          for (int r = 0; r < 4; ++r) af[r] = dequant_reg<plan, kBf16>(ring[d], f, r);
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt)
            if (nt * 8 < n_here) mma<kBf16>(c[nt], af, b[nt][0], b[nt][1]);
        }
        if (i + kDepth < units) read_unit_words<plan, true>(wp + (i + kDepth) * kUnitBytes, lane, ring[d]);
      }
    }
  }

  // C fragment: c0, c1 = row g, tokens 2t, 2t+1; c2, c3 = row g+8.
  if (a.splits == 1) {
    if (!active) return;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int tok = nt * 8 + 2 * t + (e & 1);
        const int64_t row = rt * fpx::kUnitRows + g + 8 * (e >> 1);
        if (tok >= n_here || row >= a.rows) continue;
        const float v = c[nt][e] * (a.scales[row] * kFold) + (a.bias ? a.bias[row] : 0.0f);
        a.y[(n0 + tok) * a.rows + row] = to_bits<kBf16>(v);
      }
    return;
  }
  if (active) {
    float* part = a.partials + (static_cast<int64_t>(split) * a.n + n0) * a.ld + rt * fpx::kUnitRows;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int tok = nt * 8 + 2 * t + (e & 1);
        if (tok < n_here) part[tok * a.ld + g + 8 * (e >> 1)] = c[nt][e];
      }
  }
  finish_split<kBf16, Cfg::kRows, kThreads>(a, n0, n_here, kFold);
}

// The tile for calls (or experts' items) of up to n tokens: 8, 16, 32 or 64 per CTA, from the
// sweep of `fp6serve_bench_gemm --gemv` on the H100 (bench/results/2026-11-24-decode-h100.md).
// fpx_gemm_plan uses it up to kFpxGemvMaxTokens (32 on measured layers), the grouped expert
// GEMM for every token block. kMaxTile: the largest tile a caller instantiates (more tokens
// run in blocks of it).
template <int kMaxTile = 64, typename F>
void dispatch_gemv_tile(int64_t n, F&& f) {
  if (n <= 8) return f.template operator()<GemvTile<8, 8, 2, 4>>();
  if (n <= 16) return f.template operator()<GemvTile<16, 8, 2, 3>>();
  if constexpr (kMaxTile > 32)
    if (n > 32) return f.template operator()<GemvTile<64, 8, 2, 2>>();
  return f.template operator()<GemvTile<32, 8, 2, 2>>();
}

template <int kE, int kM, bool kBf16, class Cfg>
void launch_gemv_tile(const FpxLaunch& l) {
  auto* kernel = fpx_gemv_kernel<kE, kM, kBf16, Cfg>;
  static const bool once = [&] {
    FP6_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::smem_bytes(Cfg::kN)));
    return true;
  }();
  (void)once;
  launch_gemm<Cfg>(kernel, Cfg::smem_bytes(l.n), l, l.cols % 8 == 0 && reinterpret_cast<uintptr_t>(l.x) % 16 == 0,
                   GemvItems{});
}

}  // namespace

}  // namespace fp6serve::cuda
