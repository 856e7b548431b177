// The Hopper FPx GEMM for many tokens (included by fpx_gemm.cu): the fused kernel's work
// (Y = X . (scale (.) dequant(W))^T + bias, split-K in one launch) with wgmma instead of
// mma.sync, so that a CTA covers up to 256 tokens and reads and dequantizes each weight once
// per CTA token tile instead of once per 64 tokens. sm_90a only (fpx_wgmma_supported says
// where).
//
// Warp specialization. A CTA is kConsumers consumer warpgroups of 64 output rows each and one
// producer warpgroup after them. One producer thread fills two rings of shared memory, each
// slot with a "full" mbarrier that completes when its bytes have landed and an "empty" one on
// which every consumer warp arrives when done with it: X in half tiles (64 columns x kN
// tokens, by TMA with the 128-byte swizzle, zeros past n and past K), and the weights in unit
// slots (per K unit of 128 columns, each row tile's packed unit by a bulk copy: the units of
// a row tile are contiguous, the same bytes the small-n kernel reads, no second weight
// layout). A weight slot is released as soon as its words are in registers, an X slot when
// the wgmmas reading it are done, so the weights run ahead of X. Consumers of different
// warpgroups are not synchronized with each other, and each dequantizes its next unit while
// its wgmmas run (two register sets of A fragments), so the tensor cores wait for neither.
// The producer warpgroup gives its registers to the consumers (setmaxnreg; ptxas allocates
// the consumers' code to the larger count, given the entry count that
// __launch_bounds__(threads, 1) fixes).
//
// Operands. The weights are wgmma's A operand from registers: warp w of a warpgroup holds the
// 16 rows of its row tile as m16n8k16 A fragments, which is exactly what the packed unit
// (fpx/pack_plan.h) gives a warp. X is B, K-major, from shared memory through a descriptor
// of the 128-byte swizzle layout TMA wrote. The scale and bias are applied in FP32 in the
// epilogue, as in the small-n kernel; split-K partials are reduced by the last CTA
// (finish_split), the consumers synchronizing on a named barrier.
#pragma once

#include <cuda.h>  // CUtensorMap (a header-only use: the encoder comes from the runtime)
#include <cudaTypedefs.h>

#include "backend/cuda/fpx_gemm_kernel.cuh"
#include "backend/cuda/ptx.cuh"
#include "backend/cuda/wgmma_ops.cuh"

namespace fp6serve::cuda {

namespace {

// kN tokens per CTA (a wgmma width: 64, 128, 192 or 256), kConsumers warpgroups of 64 rows;
// two rings: kXStages X slots of kXHalves half tiles each (a half tile: 64 columns x kN
// tokens, 128 kN bytes; 2 halves make a K unit) and kWStages weight slots (one unit per row
// tile); plus the producer warpgroup.
template <int kN_, int kConsumers_, int kXHalves_, int kXStages_, int kWStages_>
struct WgTile {
  static constexpr int kN = kN_, kConsumers = kConsumers_, kXHalves = kXHalves_, kXStages = kXStages_,
                       kWStages = kWStages_;
  static_assert(kXHalves == 1 || kXHalves == 2, "an X slot holds half a K unit or a whole one");
  static constexpr int kThreads = 128 * (kConsumers + 1);
  static constexpr int kRows = 64 * kConsumers;
  static constexpr int kXHalfBytes = kN * fpx::kUnitCols;  // 64 columns of 16-bit X, 128-byte rows
  static constexpr int kXSlotBytes = kXHalves * kXHalfBytes;
  static constexpr int w_slot_bytes(int unit_bytes) { return 4 * kConsumers * unit_bytes; }
  // The rings, their mbarriers, and slack to align the X tiles to 1024 bytes (the swizzle atom).
  template <int kUnitBytes>
  static constexpr int smem_bytes() {
    return 1024 + kXStages * kXSlotBytes + kWStages * w_slot_bytes(kUnitBytes) + 2 * (kXStages + kWStages) * 8;
  }
};

// Registers of a producer thread, and of a consumer thread after the producer gave its
// others up: the CTA's (65536 / kThreads each at entry, in multiples of 8) shared out.
constexpr int kProducerRegs = 24;
constexpr int consumer_regs(int consumers) {
  const int entry = 65536 / (128 * (consumers + 1)) / 8 * 8;
  const int regs = (entry * (consumers + 1) - kProducerRegs) / consumers / 8 * 8;
  return regs > 240 ? 240 : regs;
}

template <int kE, int kM, bool kBf16, class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    fpx_wgmma_kernel(const GemmArgs a, const __grid_constant__ CUtensorMap x_map) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kN = Cfg::kN, kC = Cfg::kConsumers, kXHalves = Cfg::kXHalves, kXStages = Cfg::kXStages,
                kWStages = Cfg::kWStages;
  constexpr int kXSlotsPerUnit = 2 / kXHalves;
  constexpr int kRowTiles = 4 * kC;
  constexpr fpx::PackPlan plan = fpx::make_pack_plan(fpx::Format{kE, kM}, kBf16 ? DType::kBF16 : DType::kF16);
  constexpr int kUnitBytes = plan.unit_bytes();
  static_assert(kUnitBytes % 16 == 0, "units must be whole 16-byte chunks");
  constexpr int kXHalfBytes = Cfg::kXHalfBytes;
  constexpr int kWSlotBytes = Cfg::w_slot_bytes(kUnitBytes);
  static_assert(kXHalfBytes % 1024 == 0, "X tiles must stay 1024-byte aligned");
  static_assert(kC >= 2 && kC <= 3, "two or three consumer warpgroups (setmaxnreg counts)");
  constexpr int kAcc = kN / 2;
  constexpr float kFold = kBf16 ? 1.0f : raw_to_value(plan);
  extern __shared__ uint8_t smem_raw[];
  uint8_t* xs = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  uint8_t* ws = xs + kXStages * Cfg::kXSlotBytes;
  uint64_t* x_full = reinterpret_cast<uint64_t*>(ws + kWStages * kWSlotBytes);
  uint64_t* x_empty = x_full + kXStages;
  uint64_t* w_full = x_empty + kXStages;
  uint64_t* w_empty = w_full + kWStages;

  const int split = static_cast<int>(blockIdx.y);
  const int64_t n0 = static_cast<int64_t>(blockIdx.z) * kN;
  const int n_here = static_cast<int>(min(static_cast<int64_t>(kN), a.n - n0));
  const int u_begin = static_cast<int>(a.col_units * split / a.splits);
  const int units = static_cast<int>(a.col_units * (split + 1) / a.splits) - u_begin;
  const int64_t tile_bytes = a.col_units * kUnitBytes;
  const int64_t rt0 = static_cast<int64_t>(blockIdx.x) * kRowTiles;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kXStages; ++s) {
      mbar_init(&x_full[s], 1);
      mbar_init(&x_empty[s], 4 * kC);  // one arrival per consumer warp
    }
    for (int s = 0; s < kWStages; ++s) {
      mbar_init(&w_full[s], 1);
      mbar_init(&w_empty[s], 4 * kC);
    }
    fence_mbar_init();
  }
  __syncthreads();

  if (threadIdx.x >= 128 * kC) {  // the producer warpgroup; one thread issues every copy
    setmaxnreg_dec<kProducerRegs>();
    if (threadIdx.x != 128 * kC) return;
    const int valid_tiles = static_cast<int>(min(static_cast<int64_t>(kRowTiles), a.row_tiles - rt0));
    // Unit i's weights into weight slot i % kWStages (after its last use was released).
    auto load_weights = [&](int i) {
      if (i >= kWStages) mbar_wait(&w_empty[i % kWStages], (i / kWStages - 1) & 1);
      mbar_arrive_expect_tx(&w_full[i % kWStages], static_cast<uint32_t>(valid_tiles * kUnitBytes));
      uint8_t* dst = ws + (i % kWStages) * kWSlotBytes;
      const uint8_t* src = a.w + rt0 * tile_bytes + static_cast<int64_t>(u_begin + i) * kUnitBytes;
      for (int r = 0; r < valid_tiles; ++r)
        bulk_copy_g2s(dst + r * kUnitBytes, src + r * tile_bytes, kUnitBytes, &w_full[i % kWStages]);
    };
    // X slot j (half tiles kXHalves j ...: 64 columns of this split's range each) into ring
    // slot j % kXStages.
    auto load_x = [&](int j) {
      if (j >= kXStages) mbar_wait(&x_empty[j % kXStages], (j / kXStages - 1) & 1);
      mbar_arrive_expect_tx(&x_full[j % kXStages], Cfg::kXSlotBytes);
      for (int h = 0; h < kXHalves; ++h)
        tma_load_2d(xs + (j % kXStages) * Cfg::kXSlotBytes + h * kXHalfBytes, &x_map,
                    u_begin * fpx::kUnitCols + (kXHalves * j + h) * (fpx::kUnitCols / 2), static_cast<int>(n0),
                    &x_full[j % kXStages]);
    };
    // The first weights before griddepcontrol.wait (they do not depend on the previous
    // kernel), X after it. Then, per unit, its X halves and the weights kWStages units ahead:
    // each wait is on a slot whose consumers need only what was issued before it.
    for (int i = 0; i < min(units, kWStages); ++i) load_weights(i);
    allow_dependents_to_launch();
    wait_for_previous_grid();
    for (int i = 0; i < units; ++i) {
      for (int k = 0; k < kXSlotsPerUnit; ++k) load_x(kXSlotsPerUnit * i + k);
      if (i + kWStages < units) load_weights(i + kWStages);
    }
    return;
  }

  setmaxnreg_inc<consumer_regs(kC)>();
  allow_dependents_to_launch();
  wait_for_previous_grid();  // Y and the workspace may still be in use by the previous kernel
  const int tid = static_cast<int>(threadIdx.x);
  const int cw = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t rt = rt0 + cw;  // this warp's row tile
  const bool rt_valid = rt < a.row_tiles;

  float d[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) d[i] = 0.0f;
  // Unit i: wait for its weights, read this warp's words, release the slot (the words are in
  // registers) and dequantize them into af.
  auto dequantize = [&](int i, uint32_t(&af)[fpx::kUnitFragments][4]) {
    mbar_wait(&w_full[i % kWStages], (i / kWStages) & 1);
    UnitWords<plan.num_segments> words;
    if (rt_valid) {
      read_unit_words<plan>(ws + (i % kWStages) * kWSlotBytes + cw * kUnitBytes, lane, words);
    } else {
#pragma unroll
      for (int s = 0; s < plan.num_segments; ++s)
#pragma unroll
        for (int j = 0; j < 8; ++j) words.w[s][j] = 0;  // a row tile past the end: zeros, never stored
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&w_empty[i % kWStages]);
#pragma unroll
    for (int f = 0; f < fpx::kUnitFragments; ++f)
#pragma unroll
      for (int r = 0; r < 4; ++r) af[f][r] = dequant_reg<plan, kBf16>(words, f, r);
  };
  // Unit i's wgmmas, once its X is in (asynchronous: they run while the next unit is
  // dequantized). Fragment f reads half tile 2 i + f / 4.
  auto multiply = [&](int i, const uint32_t(&af)[fpx::kUnitFragments][4]) {
#pragma unroll
    for (int k = 0; k < kXSlotsPerUnit; ++k) {
      const int j = kXSlotsPerUnit * i + k;
      mbar_wait(&x_full[j % kXStages], (j / kXStages) & 1);
    }
    wgmma_fence();
#pragma unroll
    for (int f = 0; f < fpx::kUnitFragments; ++f) {
      const int half = 2 * i + f / 4, j = half / kXHalves;
      const uint8_t* b = xs + (j % kXStages) * Cfg::kXSlotBytes + (half % kXHalves) * kXHalfBytes + (f % 4) * 32;
      Wgmma<kN, kBf16>::mma(d, af[f], smem_descriptor_sw128(b));
    }
    wgmma_commit();
  };
  // After unit i's wgmmas completed: its X slots may be refilled.
  auto release = [&](int i) {
    __syncwarp();
    if (lane == 0)
#pragma unroll
      for (int k = 0; k < kXSlotsPerUnit; ++k) mbar_arrive(&x_empty[(kXSlotsPerUnit * i + k) % kXStages]);
  };

  // Two register sets of A fragments, alternating (the loop is unrolled by two so that each
  // is named statically): unit i + 1 is dequantized into one while unit i's wgmmas read the
  // other. Nothing touches the accumulators between a wgmma and its wait.
  uint32_t af0[fpx::kUnitFragments][4], af1[fpx::kUnitFragments][4];
  if (units > 0) dequantize(0, af0);
  for (int i = 0; i < units; i += 2) {
    multiply(i, af0);
    if (i + 1 < units) dequantize(i + 1, af1);
    wgmma_wait_all();
    release(i);
    if (i + 1 == units) break;
    multiply(i + 1, af1);
    if (i + 2 < units) dequantize(i + 2, af0);
    wgmma_wait_all();
    release(i + 1);
  }
#pragma unroll
  for (int j = 0; j < kAcc; ++j) fence_operand(d[j]);

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
  finish_split<kBf16, Cfg::kRows, 128 * kC, /*named barrier*/ 1>(a, n0, n_here, kFold, tid);
#endif
}

// The tensor map of X [n, cols] (16-bit, rows 16-byte aligned) in boxes of 64 columns x
// box_tokens tokens with the 128-byte swizzle, zeros outside. The encoder is the driver's,
// found through the runtime (no link to libcuda).
inline CUtensorMap x_tensor_map(const void* x, int64_t n, int64_t cols, int box_tokens) {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    FP6_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found));
    FP6_CUDA_REQUIRE(found == cudaDriverEntryPointSuccess && fn, kInternal,
                     "fpx gemm: the CUDA driver has no cuTensorMapEncodeTiled");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  CUtensorMap map{};
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(n)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(cols) * 2};
  const cuuint32_t box[2] = {fpx::kUnitCols / 2, static_cast<cuuint32_t>(box_tokens)};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, const_cast<void*>(x), dims, strides, box,
                            element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  FP6_CUDA_REQUIRE(r == CUDA_SUCCESS, kInternal,
                   "fpx gemm: cuTensorMapEncodeTiled failed (" + std::to_string(static_cast<int>(r)) + ")");
  return map;
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
  launch_gemm<Cfg>(kernel, kSmem, l, true, x_tensor_map(l.x, l.n, l.cols, Cfg::kN));
}

}  // namespace

}  // namespace fp6serve::cuda
