// TC-FPx on Hopper (and Ampere): Y = X . (scale (.) dequant(W))^T + bias with W in
// fp6serve's prepacked FPx layout (docs/format.md), Tensor Cores for the products, SIMT for
// the dequantization. docs/kernels.md has the design and the measurements behind it.
//
// Data layout. W is a grid of 16x128 units, row-tile-major (the units of one row tile are
// contiguous); a unit is eight m16n8k16 A fragments, and each lane's words of a segment are
// one 16-byte chunk per 512 bytes (FP6: 48 bytes per lane per unit), so reading a unit from
// shared memory is conflict-free 16-byte loads. X is [n, K] row-major FP16 or BF16.
//
// Tile. A CTA is 4 warps; warp w owns row tile 4*blockIdx.x + w (16 output channels) and the
// CTA owns one K range (split-K, blockIdx.y) and up to kN <= 64 tokens (blockIdx.z). The
// four warps share the CTA's X tile: per K unit, [kN tokens x 128] 16-bit values in shared
// memory, rows padded to 136 halves so that the B-fragment reads (token g, column 2t) hit
// 32 different banks.
//
// Pipeline. kStages = 4 shared-memory stages, each one unit per warp (1.5 KB for FP6) plus
// the X tile, filled with cp.async (L2 only: the weights are read once) three units ahead
// of the one being multiplied: ~18 KB of weights in flight per CTA with no register cost.
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
// (fpx_linear.cc) from the SM count and this kernel's occupancy to fill whole waves.
//
// Architectures: mma.sync m16n8k16 and cp.async, sm_80 and newer (built for sm_80 and
// sm_90a; the H100 runs this path). Large n goes to dequantize + cuBLAS (fpx_linear.cc).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/fpx_gemm.h"

namespace fp6serve::cuda {

namespace {

constexpr int kXStride = fpx::kUnitCols + 8;  // halves per X row in shared memory

// The CTA shape for a token tile of kN: more tokens, more row tiles per warp (each B
// fragment read from shared memory feeds kRowTilesPerWarp MMAs) and per CTA (the X tile is
// re-read from L2 once per kRows rows), fewer stages to stay within shared memory.
template <int kN>
struct TileConfig {
  static constexpr int kWarps = kN >= 64 ? 8 : 4;
  static constexpr int kRowTilesPerWarp = kN <= 8 ? 1 : kN == 32 ? 4 : 2;
  static constexpr int kStages = kN >= 32 ? 3 : 4;
  static constexpr int kRows = kWarps * kRowTilesPerWarp * fpx::kUnitRows;
  static constexpr int stage_bytes(int unit_bytes) {
    return kWarps * kRowTilesPerWarp * unit_bytes + kN * kXStride * 2;
  }
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const auto s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending));
}

// D = A . B + D for one m16n8k16 tile, FP32 accumulators. kBf16 picks the input type.
template <bool kBf16>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (kBf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// 2^-raw_exponent_offset: multiplies a raw half back to the FPx value (exact power of two).
constexpr float raw_to_value(const fpx::PackPlan& plan) {
  return __builtin_bit_cast(float, static_cast<uint32_t>(127 - plan.raw_exponent_offset()) << 23);
}

template <bool kBf16>
__device__ __forceinline__ uint16_t to_bits(float v) {
  if constexpr (kBf16) return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  else return __half_as_ushort(__float2half_rn(v));
}

// One lane's words of a unit, per segment (a 4-bit segment has 8 per lane).
template <int kSegs>
struct UnitWords {
  uint32_t w[kSegs][8];
};

// Reads one lane's words of a unit (global or shared memory) with 16-byte loads (8-byte for
// 1-bit segments). The plan is a template argument so every offset and loop bound is a
// constant: the words stay in registers.
template <fpx::PackPlan kPlan>
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
        const uint4 v = *reinterpret_cast<const uint4*>(p);
        out.w[s][j] = v.x, out.w[s][j + 1] = v.y, out.w[s][j + 2] = v.z, out.w[s][j + 3] = v.w;
      } else {
        const uint2 v = *reinterpret_cast<const uint2*>(p);
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

template <int kE, int kM, bool kBf16, int kN>
__global__ void __launch_bounds__(TileConfig<kN>::kWarps * 32) fpx_gemm_kernel(const GemmArgs a) {
  using Cfg = TileConfig<kN>;
  constexpr int kWarps = Cfg::kWarps, kRT = Cfg::kRowTilesPerWarp, kStages = Cfg::kStages;
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
  auto load_stage = [&](int u, int slot) {
    uint8_t* st = smem + slot * kStageBytes;
#pragma unroll
    for (int j = 0; j < kRT; ++j) {
      if (rt0 + j >= a.row_tiles) break;
      const uint8_t* src = a.w + (rt0 + j) * tile_bytes + static_cast<int64_t>(u) * kUnitBytes;
      uint8_t* dst = st + (warp * kRT + j) * kUnitBytes;
#pragma unroll
      for (int c = lane; c < kUnitBytes / 16; c += 32) cp_async16(dst + c * 16, src + c * 16, 16);
    }
    uint16_t* xs = reinterpret_cast<uint16_t*>(st + kWeightBytes);
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

  float c[kRT][kNTiles][4] = {};
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < units) load_stage(u_begin + s, s);
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
    const uint16_t* xs = reinterpret_cast<const uint16_t*>(st + kWeightBytes) + g * kXStride + 2 * t;
#pragma unroll
    for (int f = 0; f < fpx::kUnitFragments; ++f) {
      // B fragments of this k16 slice, read once and used by every row tile of the warp.
      uint32_t b[kNTiles][2];
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        const uint16_t* p = xs + nt * 8 * kXStride + 16 * f;
        b[nt][0] = *reinterpret_cast<const uint32_t*>(p);
        b[nt][1] = *reinterpret_cast<const uint32_t*>(p + 8);
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
  // The last CTA of this (row block, token block) to arrive adds the partials, in split order.
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  int* counter = a.counters + static_cast<int64_t>(blockIdx.z) * gridDim.x + blockIdx.x;
  if (threadIdx.x == 0) last = atomicAdd(counter, 1) == a.splits - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  constexpr int kRows = Cfg::kRows;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kRows;
  for (int e = threadIdx.x; e < n_here * kRows; e += kThreads) {
    const int tok = e / kRows;
    const int64_t row = r0 + e % kRows;
    if (row >= a.rows) continue;
    const float* p = a.partials + (n0 + tok) * a.ld + row;
    float v = 0;
    for (int s = 0; s < a.splits; ++s) v += __ldcg(p + static_cast<int64_t>(s) * a.n * a.ld);
    a.y[(n0 + tok) * a.rows + row] = to_bits<kBf16>(v * (a.scales[row] * kFold) + (a.bias ? a.bias[row] : 0.0f));
  }
  if (threadIdx.x == 0) *counter = 0;  // ready for the next launch
}

// Row tiles [rt0, rt1) dequantized and scaled into out[(rt - rt0) * 16 + r, c]: a warp per
// unit, staged through shared memory so that the 16-bit rows go out in 16-byte stores.
constexpr int kDequantWarps = 4;

template <int kE, int kM, bool kBf16>
__global__ void __launch_bounds__(kDequantWarps * 32) dequant_kernel(const uint8_t* __restrict__ w,
                                                            const float* __restrict__ scales, int64_t cols,
                                                            int64_t col_units, int64_t rt0, int64_t units,
                                                            uint16_t* __restrict__ out) {
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

template <int kE, int kM, bool kBf16, int kN>
auto gemm_kernel_configured() {
  constexpr fpx::PackPlan plan = fpx::make_pack_plan(fpx::Format{kE, kM}, kBf16 ? DType::kBF16 : DType::kF16);
  constexpr int kSmem = TileConfig<kN>::kStages * TileConfig<kN>::stage_bytes(plan.unit_bytes());
  auto* kernel = fpx_gemm_kernel<kE, kM, kBf16, kN>;
  static const bool once = [&] {
    FP6_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    return true;
  }();
  (void)once;
  return std::pair{kernel, kSmem};
}

// The token tile for n tokens: the smallest of 8, 16, 32, 64 that holds them (64 past that).
template <typename F>
void dispatch_tokens(int64_t n, F&& f) {
  if (n <= 8) return f.template operator()<8>();
  if (n <= 16) return f.template operator()<16>();
  if (n <= 32) return f.template operator()<32>();
  return f.template operator()<64>();
}

template <int kE, int kM, bool kBf16>
void launch_fused(const FpxLaunch& l) {
  dispatch_tokens(l.n, [&]<int kN>() {
    auto [kernel, smem] = gemm_kernel_configured<kE, kM, kBf16, kN>();
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
    a.x_vec = l.cols % 8 == 0 && reinterpret_cast<uintptr_t>(l.x) % 16 == 0;
    constexpr int kRowTiles = TileConfig<kN>::kRows / fpx::kUnitRows;
    const dim3 grid(static_cast<unsigned>((l.row_tiles + kRowTiles - 1) / kRowTiles), static_cast<unsigned>(l.splits),
                    static_cast<unsigned>((l.n + kN - 1) / kN));
    FP6_CUDA_REQUIRE(l.splits == 1 || static_cast<size_t>(grid.x) * grid.z * sizeof(int) <= kFpxCounterBytes,
                     kInternal, "fpx gemm: too many row blocks for split-K counters");
    kernel<<<grid, TileConfig<kN>::kWarps * 32, smem, l.stream>>>(a);
    FP6_CUDA_CHECK_LAUNCH();
  });
}

template <int kE, int kM, bool kBf16>
int ctas_per_sm(int64_t n) {
  int ctas = 0;
  dispatch_tokens(n, [&]<int kN>() {
    auto [kernel, smem] = gemm_kernel_configured<kE, kM, kBf16, kN>();
    FP6_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, kernel, TileConfig<kN>::kWarps * 32, smem));
  });
  return ctas;
}

template <int kE, int kM, bool kBf16>
void launch_dequant(const FpxLaunch& l, int64_t rt0, int64_t rt1, uint16_t* out) {
  const int64_t units = (rt1 - rt0) * l.col_units;
  dequant_kernel<kE, kM, kBf16><<<static_cast<unsigned>((units + kDequantWarps - 1) / kDequantWarps), kDequantWarps * 32, 0, l.stream>>>(
      l.w, l.scales, l.cols, l.col_units, rt0, units, out);
  FP6_CUDA_CHECK_LAUNCH();
}

// The formats compiled into the GPU kernels: FP6 e3m2, FP5 e2m2, FP4 e2m1.
template <typename F>
void dispatch_format(const FpxLaunch& l, F&& f) {
  const fpx::Format fmt = l.plan.format;
  const bool bf16 = l.plan.target == DType::kBF16;
  auto pick = [&]<int kE, int kM>() {
    if (bf16) f.template operator()<kE, kM, true>();
    else f.template operator()<kE, kM, false>();
  };
  if (fmt == fpx::kE3M2) return pick.template operator()<3, 2>();
  if (fmt == fpx::kE2M2) return pick.template operator()<2, 2>();
  if (fmt == fpx::kE2M1) return pick.template operator()<2, 1>();
  FP6_CUDA_REQUIRE(false, kUnsupported,
                   "the GPU kernels are built for e3m2, e2m2 and e2m1 (FP6, FP5, FP4), not " + fmt.name());
}

}  // namespace

bool fpx_gpu_format_supported(fpx::Format f) { return f == fpx::kE3M2 || f == fpx::kE2M2 || f == fpx::kE2M1; }

void launch_fpx_gemm(const FpxLaunch& l) {
  dispatch_format(l, [&]<int kE, int kM, bool kBf16>() { launch_fused<kE, kM, kBf16>(l); });
}

int fpx_gemm_rows_per_cta(int64_t n) {
  int rows = 0;
  dispatch_tokens(n, [&]<int kN>() { rows = TileConfig<kN>::kRows; });
  return rows;
}

int fpx_gemm_ctas_per_sm(const fpx::PackPlan& plan, int64_t n) {
  FpxLaunch l{};
  l.plan = plan;
  int ctas = 0;
  dispatch_format(l, [&]<int kE, int kM, bool kBf16>() { ctas = ctas_per_sm<kE, kM, kBf16>(n); });
  return ctas;
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
    if constexpr (std::is_same_v<T, __half>) v = __half2float(y[i]) + bias[i % rows], y[i] = __float2half_rn(v);
    else v = __bfloat162float(y[i]) + bias[i % rows], y[i] = __float2bfloat16_rn(v);
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
