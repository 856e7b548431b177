// TC-FPx on Hopper (and Ampere): Y = X . (scale (.) dequant(W))^T with W in fp6serve's
// prepacked FPx layout (docs/format.md), Tensor Cores for the products, SIMT for dequant.
//
// Data layout. W is a grid of 16x128 units, row-tile-major; a unit is eight m16n8k16 A
// fragments, and each lane's 16-byte loads are exactly its own fragment words (FP6: 48
// bytes per lane per unit, three 512-byte coalesced warp loads). X is [n, K] row-major FP16 or
// BF16; its B fragments (k16 x n8, "col" layout) are two 32-bit loads per lane straight from
// global memory — X is small and every CTA re-reads it, so it lives in L1/L2.
//
// Dequantization. The pack plan (fpx/pack_plan.h, constexpr, so every rotation and mask below
// is an immediate) places each code's bits so that one funnel rotation and one mask per
// segment give a half2 register already holding value * 2^raw_exponent_offset: FP6 takes two
// rotations and two LOP3 per two weights. FP16 needs nothing more (2^-12 is folded into the
// per-row scale); BF16 multiplies by 2^-raw_exponent_offset in bf16 (exact) so that
// tensor-core inputs are normal. The scale is applied once per output, in FP32.
//
// Tiling and parallelism. One warp owns one 16-row tile and a contiguous range of K units
// (split-K); a CTA is 4 warps. The split is chosen so that about kWarpsPerSm warps run per SM
// (132 SMs on the H100, read from the device once). Each warp streams its units with a
// register double buffer (the next unit's words are in flight while the current one is
// dequantized and multiplied). Partial sums are added into an FP32 workspace with atomics;
// a finishing kernel applies scale and bias and writes Y. N is covered by kNTiles n8 tiles
// per warp (1, 2, 4, 8: n <= 64); larger n goes to dequantize + cuBLAS (fpx_linear.cc).
//
// Architectures: mma.sync.m16n8k16 (sm_80+), ld.global.nc with an L1 no-allocate hint for
// the weights, which are read exactly once.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/fpx_gemm.h"

namespace fp6serve::cuda {

namespace {

// Streaming 16-byte / 8-byte loads of weight words: read once, so keep them out of L1.
__device__ __forceinline__ uint4 load_stream16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
__device__ __forceinline__ uint2 load_stream8(const void* p) {
  uint2 v;
  asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
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

// Two consecutive 16-bit X values of row n at column k (zero past n or K) as one register.
__device__ __forceinline__ uint32_t load_x_pair(const uint16_t* x, int64_t n_rows, int64_t k_cols, int64_t n,
                                                int64_t k, bool aligned) {
  if (n >= n_rows || k >= k_cols) return 0;
  const uint16_t* p = x + n * k_cols + k;
  if (aligned && k + 1 < k_cols) return *reinterpret_cast<const uint32_t*>(p);
  const uint32_t lo = p[0], hi = k + 1 < k_cols ? p[1] : 0;
  return lo | (hi << 16);
}

constexpr int kWarps = 4;

// 2^-raw_exponent_offset: multiplies a raw half back to the FPx value (exact power of two).
constexpr float raw_to_value(const fpx::PackPlan& plan) {
  return __builtin_bit_cast(float, static_cast<uint32_t>(127 - plan.raw_exponent_offset()) << 23);
}

// One lane's words of a unit, per segment (a 4-bit segment has 8 per lane).
template <int kSegs>
struct UnitWords {
  uint32_t w[kSegs][8];
};

// Loads one lane's words of a unit with 16-byte (8-byte for 1-bit segments) streaming loads.
// The plan is a template argument so every offset and loop bound is a constant: the words
// stay in registers.
template <fpx::PackPlan kPlan>
__device__ __forceinline__ void load_unit_words(const uint8_t* unit, int lane, UnitWords<kPlan.num_segments>& out) {
#pragma unroll
  for (int s = 0; s < kPlan.num_segments; ++s) {
    const int words = kPlan.segments[s].words_per_lane();
    const int per_chunk = kPlan.segments[s].chunk_bytes() / 4;
#pragma unroll
    for (int j = 0; j < 8; j += 2) {
      if (j >= words || j % per_chunk != 0) continue;
      const uint8_t* p = unit + kPlan.word_offset(s, lane, j);
      if (per_chunk == 4) {
        const uint4 v = load_stream16(p);
        out.w[s][j] = v.x, out.w[s][j + 1] = v.y, out.w[s][j + 2] = v.z, out.w[s][j + 3] = v.w;
      } else {
        const uint2 v = load_stream8(p);
        out.w[s][j] = v.x, out.w[s][j + 1] = v.y;
      }
    }
  }
}

template <int kE, int kM, bool kBf16, int kNTiles>
__global__ void __launch_bounds__(kWarps * 32) fpx_gemm_kernel(const uint8_t* __restrict__ w,
                                                               const uint16_t* __restrict__ x, int64_t n_rows,
                                                               int64_t k_cols, int64_t col_units, int64_t row_tiles,
                                                               int splits, float* __restrict__ acc, int64_t ld_acc) {
  constexpr fpx::PackPlan plan = fpx::make_pack_plan(fpx::Format{kE, kM}, kBf16 ? DType::kBF16 : DType::kF16);
  static_assert(plan.num_segments >= 1 && plan.num_segments <= 3, "plan not supported by this kernel");
  constexpr int kUnitBytes = plan.unit_bytes();
  constexpr int kSegs = plan.num_segments;
  constexpr float kRawToValue = raw_to_value(plan);

  const int lane = threadIdx.x % 32;
  const int64_t gw = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (gw >= row_tiles * splits) return;
  const int64_t rt = gw / splits;
  const int split = static_cast<int>(gw % splits);
  const int64_t u_begin = col_units * split / splits, u_end = col_units * (split + 1) / splits;
  const uint8_t* tile = w + rt * col_units * kUnitBytes;
  const int g = lane / 4, t = lane % 4;
  const bool aligned = (k_cols % 2) == 0;

  using Words = UnitWords<kSegs>;
  auto load_unit = [&](int64_t u, Words& out) { load_unit_words<plan>(tile + u * kUnitBytes, lane, out); };

  float c[kNTiles][4] = {};
  Words cur, next;
  if (u_begin < u_end) load_unit(u_begin, cur);
  for (int64_t u = u_begin; u < u_end; ++u) {
    if (u + 1 < u_end) load_unit(u + 1, next);
#pragma unroll
    for (int f = 0; f < fpx::kUnitFragments; ++f) {
      uint32_t a[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        uint32_t h = 0;
#pragma unroll
        for (int s = 0; s < kSegs; ++s) {
          const fpx::Segment& seg = plan.segments[s];
          const int fpw = seg.fragments_per_word();
          const uint32_t word = cur.w[s][f / fpw];
          h |= __funnelshift_l(word, word, seg.rotation((f % fpw) * 4 + i)) & seg.half2_mask();
        }
        if constexpr (kBf16) {
          // raw * 2^-offset: exact, and keeps the tensor-core inputs normal.
          const __nv_bfloat162 m = __float2bfloat162_rn(kRawToValue);
          const __nv_bfloat162 v = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&h), m);
          h = *reinterpret_cast<const uint32_t*>(&v);
        }
        a[i] = h;
      }
      const int64_t k = u * fpx::kUnitCols + 16 * f + 2 * t;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        const int64_t n = nt * 8 + g;
        const uint32_t b0 = load_x_pair(x, n_rows, k_cols, n, k, aligned);
        const uint32_t b1 = load_x_pair(x, n_rows, k_cols, n, k + 8, aligned);
        mma<kBf16>(c[nt], a, b0, b1);
      }
    }
    if (u + 1 < u_end) cur = next;
  }
  // C fragment: c0, c1 = row g, columns (tokens) 2t, 2t+1; c2, c3 = row g+8.
  const int64_t row0 = rt * fpx::kUnitRows + g;
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) {
    const int64_t n0 = nt * 8 + 2 * t;
    if (n0 < n_rows) {
      atomicAdd(acc + n0 * ld_acc + row0, c[nt][0]);
      atomicAdd(acc + n0 * ld_acc + row0 + 8, c[nt][2]);
    }
    if (n0 + 1 < n_rows) {
      atomicAdd(acc + (n0 + 1) * ld_acc + row0, c[nt][1]);
      atomicAdd(acc + (n0 + 1) * ld_acc + row0 + 8, c[nt][3]);
    }
  }
}

// y[n, r] = acc[n, r] * scale[r] (+ bias[r]) in the activation dtype.
template <typename T>
__global__ void finish_kernel(const float* acc, int64_t ld_acc, const float* scales, const float* bias, int64_t rows,
                              int64_t n, T* y) {
  const int64_t total = n * rows;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / rows, r = i % rows;
    float v = acc[t * ld_acc + r] * scales[r];
    if (bias) v += bias[r];
    if constexpr (std::is_same_v<T, __half>) y[i] = __float2half_rn(v);
    else y[i] = __float2bfloat16_rn(v);
  }
}

// Dequantize row tiles [rt0, rt1) to 16 bits, scaled: out[(r - rt0*16), c] for c < cols.
template <int kE, int kM, bool kBf16>
__global__ void dequant_kernel(const uint8_t* __restrict__ w, const float* __restrict__ scales, int64_t cols,
                               int64_t col_units, int64_t rt0, uint16_t* __restrict__ out) {
  constexpr fpx::PackPlan plan = fpx::make_pack_plan(fpx::Format{kE, kM}, kBf16 ? DType::kBF16 : DType::kF16);
  constexpr int kSegs = plan.num_segments;
  const int lane = threadIdx.x % 32;
  const int64_t unit = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t rt = rt0 + unit / col_units, u = unit % col_units;
  const uint8_t* base = w + (rt * col_units + u) * plan.unit_bytes();
  constexpr float kRawToValue = raw_to_value(plan);
#pragma unroll
  for (int f = 0; f < fpx::kUnitFragments; ++f)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      uint32_t h = 0;
#pragma unroll
      for (int s = 0; s < kSegs; ++s) {
        const fpx::Segment& seg = plan.segments[s];
        const int fpw = seg.fragments_per_word();
        const uint32_t word = *reinterpret_cast<const uint32_t*>(base + plan.word_offset(s, lane, f / fpw));
        h |= __funnelshift_l(word, word, seg.rotation((f % fpw) * 4 + i)) & seg.half2_mask();
      }
      const int row = fpx::unit_row(lane, i);
      const float scale = scales[rt * fpx::kUnitRows + row];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t col = u * fpx::kUnitCols + fpx::unit_col(lane, i, half, f);
        if (col >= cols) continue;
        const uint16_t bits = static_cast<uint16_t>(h >> (16 * half));
        float v;
        if constexpr (kBf16) v = __bfloat162float(__ushort_as_bfloat16(bits)) * kRawToValue;
        else v = __half2float(__ushort_as_half(bits));  // F16 scales already hold 2^-offset
        v *= scale;
        const int64_t o = ((rt - rt0) * fpx::kUnitRows + row) * cols + col;
        out[o] = kBf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v)) : __half_as_ushort(__float2half_rn(v));
      }
    }
}

template <int kE, int kM, bool kBf16>
void launch_fused(const FpxLaunch& l) {
  const int64_t warps = l.row_tiles * l.splits;
  const auto blocks = static_cast<unsigned>((warps + kWarps - 1) / kWarps);
  auto* x = static_cast<const uint16_t*>(l.x);
  if (l.n <= 8)
    fpx_gemm_kernel<kE, kM, kBf16, 1><<<blocks, kWarps * 32, 0, l.stream>>>(l.w, x, l.n, l.cols, l.col_units, l.row_tiles, l.splits, l.acc, l.ld_acc);
  else if (l.n <= 16)
    fpx_gemm_kernel<kE, kM, kBf16, 2><<<blocks, kWarps * 32, 0, l.stream>>>(l.w, x, l.n, l.cols, l.col_units, l.row_tiles, l.splits, l.acc, l.ld_acc);
  else if (l.n <= 32)
    fpx_gemm_kernel<kE, kM, kBf16, 4><<<blocks, kWarps * 32, 0, l.stream>>>(l.w, x, l.n, l.cols, l.col_units, l.row_tiles, l.splits, l.acc, l.ld_acc);
  else
    fpx_gemm_kernel<kE, kM, kBf16, 8><<<blocks, kWarps * 32, 0, l.stream>>>(l.w, x, l.n, l.cols, l.col_units, l.row_tiles, l.splits, l.acc, l.ld_acc);
  FP6_CUDA_CHECK_LAUNCH();
}

template <int kE, int kM, bool kBf16>
void launch_dequant(const FpxLaunch& l, int64_t rt0, int64_t rt1, uint16_t* out) {
  const int64_t units = (rt1 - rt0) * l.col_units;
  dequant_kernel<kE, kM, kBf16><<<static_cast<unsigned>((units + kWarps - 1) / kWarps), kWarps * 32, 0, l.stream>>>(
      l.w, l.scales, l.cols, l.col_units, rt0, out);
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

void launch_fpx_finish(const FpxLaunch& l, const float* bias, void* y) {
  const int64_t total = l.n * l.rows;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 4096));
  if (l.plan.target == DType::kBF16)
    finish_kernel<__nv_bfloat16><<<blocks, 256, 0, l.stream>>>(l.acc, l.ld_acc, l.scales, bias, l.rows, l.n,
                                                               static_cast<__nv_bfloat16*>(y));
  else
    finish_kernel<__half><<<blocks, 256, 0, l.stream>>>(l.acc, l.ld_acc, l.scales, bias, l.rows, l.n,
                                                        static_cast<__half*>(y));
  FP6_CUDA_CHECK_LAUNCH();
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
