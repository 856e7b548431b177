// The pipelined TC-FPx kernel, templated on its tile (included by fpx_gemm.cu, which
// instantiates the tiles fpx_linear uses, and by the tile sweep of the GEMM benchmark): 17-64
// tokens where the Hopper kernel does not serve the weight. Its pieces (reading a unit's
// words, the dequantization, the split-K finish, the launch) are shared by the small-n
// kernel (fpx_gemv_kernel.cuh) and the Hopper kernel.
//
// Y = X . (scale (.) dequant(W))^T + bias with W in
// fp6serve's prepacked FPx layout (docs/format.md), Tensor Cores for the products, SIMT for
// the dequantization. docs/kernels.md has the design and the measurements behind it.
//
// Data layout. W is a grid of 16x128 units, row-tile-major (the units of one row tile are
// contiguous); a unit is eight m16n8k16 A fragments, and each lane's words of a segment are
// one 16-byte chunk per 512 bytes (FP6: 48 bytes per lane per unit), so reading a unit from
// shared memory is conflict-free 16-byte loads. X is [n, K] row-major FP16 or BF16.
//
// Tile (struct Tile below). A CTA is kWarps warps; a warp owns kRowTilesPerWarp row tiles
// (16 output channels each) and the CTA one K range (split-K, blockIdx.y) and up to kN <= 64
// tokens (blockIdx.z). The warps share the CTA's X tile: per K unit, [kN tokens x 128] 16-bit
// values in shared memory, rows padded to 136 halves so that the ldmatrix reads of B
// fragments (8 rows of 16 bytes per phase) hit 32 different banks.
//
// Pipeline. kStages shared-memory stages, each one unit per row tile (1.5 KB for FP6) plus
// the X tile, filled with cp.async (L2 only: the weights are read once) kStages - 1 units
// ahead of the one being multiplied, with no register cost.
// Each warp reads its unit's words into registers, and for each of the 8 fragments turns
// them into four half2 registers (the pack plan, fpx/pack_plan.h, is a constexpr template
// argument: every rotation and mask is an immediate; FP6 is two funnel shifts and two masks
// per half2), then multiplies them with each of the kN/8 token tiles.
//
// Dequantization. The codes land in the 16-bit registers as value * 2^raw_exponent_offset;
// FP16 takes that as it is (2^-offset is multiplied into the per-row scale in the epilogue);
// BF16 multiplies by 2^-offset in bf16 (exact) so that tensor-core inputs are normal. The
// scale is applied once per output, in FP32, with the bias.
//
// Split-K in one launch. With one split a warp writes its outputs directly. With more, each
// CTA stores FP32 partials to the workspace, and the last CTA of a (row block, token block)
// to arrive (a counter in the workspace) adds them in split order, writes Y and resets the
// counter: no memset, no second kernel, deterministic sums. The split is chosen on the host
// (linear.cc).
//
// Architectures: mma.sync m16n8k16 and cp.async, sm_80 and newer (built for sm_80 and
// sm_90a). Large n goes to dequantize + cuBLAS off Hopper (linear.cc).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <utility>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/fpx_gemm.h"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ptx.cuh"

namespace fp6serve::cuda {

namespace {

constexpr int kXStride = fpx::kUnitCols + 8;  // halves per X row in shared memory

// The CTA shape: kN tokens (blockIdx.z), kWarps warps of kRowTilesPerWarp row tiles each
// (every B fragment read from shared memory feeds kRowTilesPerWarp MMAs; the X tile is read
// from L2 once per kRows rows), kStages shared-memory stages.
template <int kN_, int kWarps_, int kRowTilesPerWarp_, int kStages_>
struct Tile {
  static constexpr int kN = kN_, kWarps = kWarps_, kRowTilesPerWarp = kRowTilesPerWarp_, kStages = kStages_;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRows = kWarps * kRowTilesPerWarp * fpx::kUnitRows;
  static_assert(kN % 8 == 0 && kN <= kFpxGemmMaxTokens, "token tiles are whole m16n8k16 B tiles");
  static constexpr int stage_bytes(int unit_bytes) {
    return kWarps * kRowTilesPerWarp * unit_bytes + kN * kXStride * 2;
  }
  template <int kUnitBytes>
  static constexpr int smem_bytes() {
    return kStages * stage_bytes(kUnitBytes);
  }
};

// 2^-raw_exponent_offset: multiplies a raw half back to the FPx value (exact power of two).
constexpr float raw_to_value(const fpx::PackPlan& plan) {
  return __builtin_bit_cast(float, static_cast<uint32_t>(127 - plan.raw_exponent_offset()) << 23);
}

template <bool kBf16>
__device__ __forceinline__ uint16_t to_bits(float v) {
  if constexpr (kBf16)
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  else
    return __half_as_ushort(__float2half_rn(v));
}

// One lane's words of a unit, per segment (a 4-bit segment has 8 per lane).
template <int kSegs>
struct UnitWords {
  uint32_t w[kSegs][8];
};

// Reads one lane's words of a unit (global or shared memory) with 16-byte loads (8-byte for
// 1-bit segments); kStream: from global memory, not allocated in L1 (ldg_stream16). The plan
// is a template argument so every offset and loop bound is a constant: the words stay in
// registers.
template <fpx::PackPlan kPlan, bool kStream = false>
__device__ __forceinline__ void read_unit_words(const uint8_t* unit, int lane, UnitWords<kPlan.num_segments>& out) {
#pragma unroll
  for (int s = 0; s < kPlan.num_segments; ++s) {
    const int words = kPlan.segments[s].words_per_lane();
    const int per_chunk = kPlan.segments[s].chunk_bytes() / 4;
#pragma unroll
    for (int j = 0; j < 8; j += 2) {
      if (j >= words || j % per_chunk != 0) continue;
      const uint8_t* p = unit + kPlan.word_offset(s, lane, j);
      if (per_chunk == 4) {
        const uint4 v = kStream ? ldg_stream16(p) : *reinterpret_cast<const uint4*>(p);
        out.w[s][j] = v.x, out.w[s][j + 1] = v.y, out.w[s][j + 2] = v.z, out.w[s][j + 3] = v.w;
      } else {
        const uint2 v = kStream ? ldg_stream8(p) : *reinterpret_cast<const uint2*>(p);
        out.w[s][j] = v.x, out.w[s][j + 1] = v.y;
      }
    }
  }
}

// Register i (0..3) of A fragment f of a unit, as a half2 of raw values (times 2^-offset
// for BF16, see above).
template <fpx::PackPlan kPlan, bool kBf16>
__device__ __forceinline__ uint32_t dequant_reg(const UnitWords<kPlan.num_segments>& words, int f, int i) {
  uint32_t h = 0;
#pragma unroll
  for (int s = 0; s < kPlan.num_segments; ++s) {
    const fpx::Segment& seg = kPlan.segments[s];
    const int fpw = seg.fragments_per_word();
    const uint32_t word = words.w[s][f / fpw];
    h |= __funnelshift_l(word, word, seg.rotation((f % fpw) * 4 + i)) & seg.half2_mask();
  }
  if constexpr (kBf16) {
    const __nv_bfloat162 m = __float2bfloat162_rn(raw_to_value(kPlan));
    const __nv_bfloat162 v = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&h), m);
    h = *reinterpret_cast<const uint32_t*>(&v);
  }
  return h;
}

struct GemmArgs {
  const uint8_t* w;
  const uint16_t* x;
  const float* scales;
  const float* bias;
  uint16_t* y;
  int* counters;
  float* partials;  // [splits][n][ld]
  int64_t n, rows, cols, col_units, row_tiles, ld;
  int splits;
  bool x_vec;  // X rows 16-byte aligned (K % 8 == 0 and X aligned): cp.async for X too
};

// Split-K in one launch: after each CTA stored its FP32 partials, the last CTA of its (row
// block, token block) to arrive adds them in split order, writes Y (scale, bias) and resets
// the counter. Shared by the mma.sync and the wgmma kernel: kThreads threads numbered tid
// take part, synchronized by __syncthreads (kBarrier 0) or named barrier kBarrier.
template <bool kBf16, int kRows, int kThreads, int kBarrier = 0>
__device__ __forceinline__ void finish_split(const GemmArgs& a, int64_t n0, int n_here, float fold,
                                             int tid = static_cast<int>(threadIdx.x)) {
  __shared__ bool last;
  auto sync = [] {
    if constexpr (kBarrier == 0)
      __syncthreads();
    else
      named_barrier_sync(kBarrier, kThreads);
  };
  __threadfence();
  sync();
  int* counter = a.counters + static_cast<int64_t>(blockIdx.z) * gridDim.x + blockIdx.x;
  if (tid == 0) last = atomicAdd(counter, 1) == a.splits - 1;
  sync();
  if (!last) return;
  __threadfence();
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kRows, split_stride = a.n * a.ld;
  auto output = [&](float v, int64_t row) {
    return to_bits<kBf16>(v * (a.scales[row] * fold) + (a.bias ? a.bias[row] : 0.0f));
  };
  if (a.rows % 4 == 0 && reinterpret_cast<uintptr_t>(a.y) % 8 == 0) {
    // Four rows per thread: 16-byte partial loads (ld is a multiple of 16), 8-byte stores,
    // and the splits' loads unrolled so that several are in flight.
    for (int e = tid; e < n_here * (kRows / 4); e += kThreads) {
      const int tok = e / (kRows / 4);
      const int64_t row = r0 + 4 * (e % (kRows / 4));
      if (row >= a.rows) continue;
      const float* p = a.partials + (n0 + tok) * a.ld + row;
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
      for (int s = 0; s < a.splits; ++s) {
        const float4 q = __ldcg(reinterpret_cast<const float4*>(p + s * split_stride));
        v.x += q.x, v.y += q.y, v.z += q.z, v.w += q.w;
      }
      const uint2 out{output(v.x, row) | static_cast<uint32_t>(output(v.y, row + 1)) << 16,
                      output(v.z, row + 2) | static_cast<uint32_t>(output(v.w, row + 3)) << 16};
      *reinterpret_cast<uint2*>(a.y + (n0 + tok) * a.rows + row) = out;
    }
  } else {
    for (int e = tid; e < n_here * kRows; e += kThreads) {
      const int tok = e / kRows;
      const int64_t row = r0 + e % kRows;
      if (row >= a.rows) continue;
      const float* p = a.partials + (n0 + tok) * a.ld + row;
      float v = 0;
#pragma unroll 4
      for (int s = 0; s < a.splits; ++s) v += __ldcg(p + s * split_stride);
      a.y[(n0 + tok) * a.rows + row] = output(v, row);
    }
  }
  if (tid == 0) *counter = 0;  // ready for the next launch
}

template <int kE, int kM, bool kBf16, class Cfg>
__global__ void __launch_bounds__(Cfg::kWarps * 32) fpx_gemm_kernel(const GemmArgs a) {
  constexpr int kN = Cfg::kN, kWarps = Cfg::kWarps, kRT = Cfg::kRowTilesPerWarp, kStages = Cfg::kStages;
  constexpr int kThreads = kWarps * 32;
  constexpr fpx::PackPlan plan = fpx::make_pack_plan(fpx::Format{kE, kM}, kBf16 ? DType::kBF16 : DType::kF16);
  static_assert(plan.num_segments >= 1 && plan.num_segments <= 3, "plan not supported by this kernel");
  constexpr int kUnitBytes = plan.unit_bytes();
  static_assert(kUnitBytes % 16 == 0, "units must be whole 16-byte chunks");
  constexpr int kWeightBytes = kWarps * kRT * kUnitBytes;  // per stage
  constexpr int kStageBytes = Cfg::stage_bytes(kUnitBytes);
  constexpr int kNTiles = kN / 8;
  constexpr float kFold = kBf16 ? 1.0f : raw_to_value(plan);  // FP16 MMAs ran on raw values
  extern __shared__ __align__(16) uint8_t smem[];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t rt0 = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kRT;  // this warp's first row tile
  const int split = static_cast<int>(blockIdx.y);
  const int64_t n0 = static_cast<int64_t>(blockIdx.z) * kN;
  const int n_here = static_cast<int>(min(static_cast<int64_t>(kN), a.n - n0));
  const int u_begin = static_cast<int>(a.col_units * split / a.splits);
  const int units = static_cast<int>(a.col_units * (split + 1) / a.splits) - u_begin;
  const uint16_t* x = a.x + n0 * a.cols;
  const int64_t tile_bytes = a.col_units * kUnitBytes;

  // Stage `slot` <- unit u of each of the CTA's row tiles, and the X tile of columns
  // [128u, 128u + 128).
  auto load_weights = [&](int u, int slot) {
    uint8_t* st = smem + slot * kStageBytes;
#pragma unroll
    for (int j = 0; j < kRT; ++j) {
      if (rt0 + j >= a.row_tiles) break;
      const uint8_t* src = a.w + (rt0 + j) * tile_bytes + static_cast<int64_t>(u) * kUnitBytes;
      uint8_t* dst = st + (warp * kRT + j) * kUnitBytes;
#pragma unroll
      for (int c = lane; c < kUnitBytes / 16; c += 32) cp_async16(dst + c * 16, src + c * 16, 16);
    }
  };
  auto load_x = [&](int u, int slot) {
    uint16_t* xs = reinterpret_cast<uint16_t*>(smem + slot * kStageBytes + kWeightBytes);
    const int64_t k0 = static_cast<int64_t>(u) * fpx::kUnitCols;
    if (a.x_vec) {
      for (int c = threadIdx.x; c < n_here * 16; c += kThreads) {
        const int r = c / 16, kc = (c % 16) * 8;
        const bool in = k0 + kc < a.cols;  // K % 8 == 0: a chunk is all in or all out
        cp_async16(xs + r * kXStride + kc, in ? x + r * a.cols + k0 + kc : x, in ? 16 : 0);
      }
    } else {
      for (int c = threadIdx.x; c < n_here * fpx::kUnitCols; c += kThreads) {
        const int r = c / fpx::kUnitCols, kc = c % fpx::kUnitCols;
        xs[r * kXStride + kc] = k0 + kc < a.cols ? x[r * a.cols + k0 + kc] : uint16_t{0};
      }
    }
  };

  auto load_stage = [&](int u, int slot) {
    load_weights(u, slot);
    load_x(u, slot);
  };

  float c[kRT][kNTiles][4] = {};
  // Prologue. The weights of the first stages do not depend on the previous kernel: with a
  // programmatic dependent launch (launch_fused_tile on sm_90) they stream in while that
  // kernel finishes; X, the workspace and Y are touched only after griddepcontrol.wait.
  // Group 0 holds every prologue weight and X of stage 0; group s, X of stage s.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s)
    if (s < units) load_weights(u_begin + s, s);
  allow_dependents_to_launch();
  wait_for_previous_grid();
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < units) load_x(u_begin + s, s);
    cp_async_commit();
  }
  for (int i = 0; i < units; ++i) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage i is visible to all; stage i-1 is free
    if (i + kStages - 1 < units) load_stage(u_begin + i + kStages - 1, (i + kStages - 1) % kStages);
    cp_async_commit();
    if (rt0 >= a.row_tiles) continue;
    const uint8_t* st = smem + (i % kStages) * kStageBytes;
    UnitWords<plan.num_segments> words[kRT];
#pragma unroll
    for (int j = 0; j < kRT; ++j) read_unit_words<plan>(st + (warp * kRT + j) * kUnitBytes, lane, words[j]);
    // ldmatrix rows: lane l addresses token 8 * (l / 16) + l % 8, columns 8 * (l / 8 % 2) on.
    const uint16_t* xb = reinterpret_cast<const uint16_t*>(st + kWeightBytes) +
                         (8 * (lane / 16) + lane % 8) * kXStride + 8 * (lane / 8 % 2);
#pragma unroll
    for (int f = 0; f < fpx::kUnitFragments; ++f) {
      // B fragments of this k16 slice, read once and used by every row tile of the warp.
      uint32_t b[kNTiles][2];
      if constexpr (kNTiles == 1) {
        ldmatrix_x2(b[0], xb + 16 * f);
      } else {
#pragma unroll
        for (int nt = 0; nt < kNTiles; nt += 2) {
          uint32_t r[4];
          ldmatrix_x4(r, xb + nt * 8 * kXStride + 16 * f);
          b[nt][0] = r[0], b[nt][1] = r[1], b[nt + 1][0] = r[2], b[nt + 1][1] = r[3];
        }
      }
#pragma unroll
      for (int j = 0; j < kRT; ++j) {
        uint32_t af[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) af[r] = dequant_reg<plan, kBf16>(words[j], f, r);
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          if (nt * 8 >= n_here) break;
          mma<kBf16>(c[j][nt], af, b[nt][0], b[nt][1]);
        }
      }
    }
  }

  // C fragment: c0, c1 = row g, tokens 2t, 2t+1; c2, c3 = row g+8.
  if (a.splits == 1) {
#pragma unroll
    for (int j = 0; j < kRT; ++j)
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int tok = nt * 8 + 2 * t + (e & 1);
          const int64_t row = (rt0 + j) * fpx::kUnitRows + g + 8 * (e >> 1);
          if (tok >= n_here || row >= a.rows) continue;
          const float v = c[j][nt][e] * (a.scales[row] * kFold) + (a.bias ? a.bias[row] : 0.0f);
          a.y[(n0 + tok) * a.rows + row] = to_bits<kBf16>(v);
        }
    return;
  }
  float* part = a.partials + (static_cast<int64_t>(split) * a.n + n0) * a.ld;
#pragma unroll
  for (int j = 0; j < kRT; ++j) {
    if (rt0 + j >= a.row_tiles) break;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int tok = nt * 8 + 2 * t + (e & 1);
        if (tok < n_here) part[tok * a.ld + (rt0 + j) * fpx::kUnitRows + g + 8 * (e >> 1)] = c[j][nt][e];
      }
  }
  finish_split<kBf16, Cfg::kRows, kThreads>(a, n0, n_here, kFold);
}

template <int kE, int kM, bool kBf16, class Cfg>
std::pair<void (*)(GemmArgs), int> gemm_kernel_configured() {
  constexpr fpx::PackPlan plan = fpx::make_pack_plan(fpx::Format{kE, kM}, kBf16 ? DType::kBF16 : DType::kF16);
  constexpr int kSmem = Cfg::template smem_bytes<plan.unit_bytes()>();
  auto* kernel = fpx_gemm_kernel<kE, kM, kBf16, Cfg>;
  static const bool once = [&] {
    FP6_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    return true;
  }();
  (void)once;
  return {kernel, kSmem};
}

// One launch of the fused kernel with tile Cfg; l.n may exceed Cfg::kN (token blocks).
// Launches `kernel` (kernel<Cfg> of the FPx GEMM, smem bytes of dynamic shared memory, the
// arguments after GemmArgs in `extra`) for l: row blocks of Cfg::kRows, the splits, token
// blocks of Cfg::kN, Cfg::kThreads threads; a programmatic dependent launch where the GPU has
// them. Shared by the mma.sync and the wgmma kernel.
template <class Cfg, class... Extra>
void launch_gemm(void (*kernel)(GemmArgs, Extra...), int smem, const FpxLaunch& l, bool x_vec, Extra... extra) {
  GemmArgs a{};
  a.w = l.w;
  a.x = static_cast<const uint16_t*>(l.x);
  a.scales = l.scales;
  a.bias = l.bias;
  a.y = static_cast<uint16_t*>(l.y);
  a.counters = static_cast<int*>(l.workspace);
  a.partials = reinterpret_cast<float*>(static_cast<uint8_t*>(l.workspace) + kFpxCounterBytes);
  a.n = l.n;
  a.rows = l.rows;
  a.cols = l.cols;
  a.col_units = l.col_units;
  a.row_tiles = l.row_tiles;
  a.ld = l.row_tiles * fpx::kUnitRows;
  a.splits = l.splits;
  a.x_vec = x_vec;
  constexpr int kRowTiles = Cfg::kRows / fpx::kUnitRows;
  const dim3 grid(static_cast<unsigned>((l.row_tiles + kRowTiles - 1) / kRowTiles), static_cast<unsigned>(l.splits),
                  static_cast<unsigned>((l.n + Cfg::kN - 1) / Cfg::kN));
  FP6_CUDA_REQUIRE(l.splits == 1 || static_cast<size_t>(grid.x) * grid.z * sizeof(int) <= kFpxCounterBytes, kInternal,
                   "fpx gemm: too many row blocks for split-K counters");
  launch_kernel(kernel, grid, dim3(Cfg::kThreads), static_cast<size_t>(smem), l.stream, a, extra...);
}

// One launch of the fused kernel with tile Cfg; l.n may exceed Cfg::kN (token blocks).
template <int kE, int kM, bool kBf16, class Cfg>
void launch_fused_tile(const FpxLaunch& l) {
  auto [kernel, smem] = gemm_kernel_configured<kE, kM, kBf16, Cfg>();
  launch_gemm<Cfg>(kernel, smem, l, l.cols % 8 == 0 && reinterpret_cast<uintptr_t>(l.x) % 16 == 0);
}

}  // namespace

}  // namespace fp6serve::cuda
