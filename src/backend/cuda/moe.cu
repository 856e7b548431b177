// The mixture-of-experts kernels (moe.h; the CUDA twins of cpu/moe.cc).
//
// The grouped GEMM is the small-n kernel of fpx_gemv_kernel.cuh in its grouped form
// (GemvItems): blockIdx.z is an item of the work list moe_group wrote (an expert and up to kN
// consecutive rows of the grouped order), not a token block, and the CTA reads that expert's
// packed units and scales. Items past the list's length return at once, so the grid depends
// only on the token count: the launch is the same for every routing, and CUDA graphs can
// replay it.
// Targets: sm_80 and sm_90 (mma.sync, cp.async, __match_any_sync).
#include <algorithm>
#include <cmath>

#include "backend/cuda/device.h"
#include "backend/cuda/dtype.cuh"
#include "backend/cuda/fpx_gemv_kernel.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/moe.h"
#include "backend/cuda/ptx.cuh"

namespace fp6serve::cuda {

int64_t DeviceExperts::expert_bytes() const {
  if (plan) return static_cast<int64_t>(plan->packed_bytes(rows, cols));
  return rows * cols * static_cast<int64_t>(dtype_size(dense_dtype));
}

namespace {

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---------------------------------------------------------------------------------------------
// The router: a block per token. The block computes the router's rows' f32 dot products of
// the 16-bit x (below), then warp 0 does what cpu::moe_route does in the same order: the max, the
// exponentials, their sum in expert order, the division; k rounds of a warp argmax (ties to
// the lower expert), the chosen probabilities summed in choice order.

constexpr int kRouteThreads = 512;

template <typename T>
__global__ void __launch_bounds__(kRouteThreads)
    moe_route_kernel(const T* __restrict__ x, int64_t hidden, const float* __restrict__ router, int experts, int top_k,
                     bool renormalize, int32_t* __restrict__ ids, float* __restrict__ weights,
                     float* __restrict__ shared_scale) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  extern __shared__ float p[];  // experts (+1: the shared expert's gate logit)
  const int64_t t = blockIdx.x;
  const T* xt = x + t * hidden;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rows = experts + (shared_scale ? 1 : 0);
  // Each thread takes 8-column groups of x (16-byte loads, in registers) and dots them with
  // every router row; the threads' sums meet per row in shared memory, added in warp order.
  // At one token this kernel is latency: a warp per row walking the row took 18 us per
  // Mixtral layer on the H100 (Nsight Compute), 11.6 us with 16-byte loads; here every load
  // is independent of the others, and the rows' loop is unrolled so that they overlap.
  constexpr int kWarps = kRouteThreads / 32;
  float* part = p + rows;  // [rows][kWarps]
  const bool vec =
      hidden % 8 == 0 && reinterpret_cast<uintptr_t>(xt) % 16 == 0 && reinterpret_cast<uintptr_t>(router) % 16 == 0;
  constexpr int kGroups = 2;  // in registers: hidden <= 8 kGroups kRouteThreads (8192) takes one pass
  for (int64_t base = 0; base < hidden; base += 8 * kGroups * kRouteThreads) {
    float xv[kGroups][8];
#pragma unroll
    for (int k = 0; k < kGroups; ++k) {
      const int64_t j = base + 8 * (threadIdx.x + int64_t{k} * kRouteThreads);
      if (vec && j < hidden) {
        alignas(16) T v[8];
        *reinterpret_cast<uint4*>(v) = *reinterpret_cast<const uint4*>(xt + j);
#pragma unroll
        for (int i = 0; i < 8; ++i) xv[k][i] = to_float(v[i]);
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) xv[k][i] = j + i < hidden ? to_float(xt[j + i]) : 0.0f;
      }
    }
#pragma unroll 8  // several rows' loads in flight before their sums meet
    for (int e = 0; e < rows; ++e) {
      const float* w = router + static_cast<int64_t>(e) * hidden;
      float acc = 0.0f;
#pragma unroll
      for (int k = 0; k < kGroups; ++k) {
        const int64_t j = base + 8 * (threadIdx.x + int64_t{k} * kRouteThreads);
        if (j >= hidden) continue;
        if (vec) {
          const float4 w0 = *reinterpret_cast<const float4*>(w + j), w1 = *reinterpret_cast<const float4*>(w + j + 4);
          acc += xv[k][0] * w0.x + xv[k][1] * w0.y + xv[k][2] * w0.z + xv[k][3] * w0.w + xv[k][4] * w1.x +
                 xv[k][5] * w1.y + xv[k][6] * w1.z + xv[k][7] * w1.w;
        } else {
          for (int i = 0; i < 8 && j + i < hidden; ++i) acc += xv[k][i] * w[j + i];
        }
      }
      acc = warp_sum(acc);
      if (lane == 0) part[e * kWarps + warp] = (base == 0 ? 0.0f : part[e * kWarps + warp]) + acc;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < rows; e += kRouteThreads) {
    float sum = 0.0f;
    for (int w = 0; w < kWarps; ++w) sum += part[e * kWarps + w];
    p[e] = sum;
  }
  __syncthreads();
  if (warp != 0) return;
  float mx = -INFINITY;
  for (int e = lane; e < experts; e += 32) mx = fmaxf(mx, p[e]);
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  for (int e = lane; e < experts; e += 32) p[e] = expf(p[e] - mx);
  __syncwarp();
  float sum = 0.0f;
  if (lane == 0)
    for (int e = 0; e < experts; ++e) sum += p[e];
  sum = __shfl_sync(0xffffffffu, sum, 0);
  for (int e = lane; e < experts; e += 32) p[e] = p[e] / sum;
  __syncwarp();
  int32_t* id = ids + t * top_k;
  float* wt = weights + t * top_k;
  for (int s = 0; s < top_k; ++s) {
    float best = -1.0f;  // probabilities are >= 0; chosen experts are marked -1
    int best_e = experts;
    for (int e = lane; e < experts; e += 32) {
      const float v = p[e] == p[e] ? p[e] : -0.5f;  // NaN (from NaN activations): chosen last, weight NaN
      if (v > best) best = v, best_e = e;           // e increases: the lowest of equals stays
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oe = __shfl_xor_sync(0xffffffffu, best_e, o);
      if (ob > best || (ob == best && oe < best_e)) best = ob, best_e = oe;
    }
    if (lane == 0) {
      id[s] = best_e;
      wt[s] = best < 0.0f ? NAN : best;
      p[best_e] = -1.0f;
    }
    __syncwarp();
  }
  if (lane == 0) {
    if (renormalize) {
      float chosen = 0.0f;
      for (int s = 0; s < top_k; ++s) chosen += wt[s];
      for (int s = 0; s < top_k; ++s) wt[s] = wt[s] / chosen;
    }
    if (shared_scale) shared_scale[t] = 1.0f / (1.0f + expf(-p[experts]));
  }
}

// ---------------------------------------------------------------------------------------------
// The grouping: one warp. Counts per expert (shared-memory atomics), the offsets and the work
// list (lane 0, experts in order), then the assignments placed 32 at a time in increasing
// order: lanes with the same expert (__match_any_sync) take consecutive rows by lane.

__global__ void moe_group_kernel(const int32_t* __restrict__ ids, int assignments, int experts, int block_tokens,
                                 int32_t* __restrict__ offsets, int32_t* __restrict__ order,
                                 int32_t* __restrict__ row_of, int32_t* __restrict__ work,
                                 int32_t* __restrict__ num_work) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  extern __shared__ int32_t cursor[];  // experts
  const int lane = threadIdx.x;
  for (int e = lane; e < experts; e += 32) cursor[e] = 0;
  __syncwarp();
  for (int a = lane; a < assignments; a += 32) atomicAdd(&cursor[ids[a]], 1);
  __syncwarp();
  if (lane == 0) {
    int run = 0, items = 0;
    for (int e = 0; e < experts; ++e) {
      const int count = cursor[e];
      offsets[e] = run;
      for (int j = 0; j < count; j += block_tokens, ++items) {
        work[3 * items] = e;
        work[3 * items + 1] = run + j;
        work[3 * items + 2] = min(block_tokens, count - j);
      }
      cursor[e] = run;
      run += count;
    }
    offsets[experts] = run;
    num_work[0] = items;
  }
  __syncwarp();
  for (int base = 0; base < assignments; base += 32) {
    const int a = base + lane;
    const bool valid = a < assignments;
    const int e = valid ? ids[a] : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    if (valid) {
      const int r = cursor[e] + rank;
      order[r] = a;
      row_of[a] = r;
    }
    __syncwarp();
    if (valid && lane == __ffs(peers) - 1) cursor[e] += __popc(peers);
    __syncwarp();
  }
}

// ---------------------------------------------------------------------------------------------
// The gather and the combine: a block per row.

template <typename T>
__global__ void moe_gather_kernel(const T* __restrict__ x, int64_t hidden, const int32_t* __restrict__ order, int top_k,
                                  T* __restrict__ xs) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  const int64_t r = blockIdx.x;
  const T* src = x + static_cast<int64_t>(order[r] / top_k) * hidden;
  T* dst = xs + r * hidden;
  constexpr int kPerChunk = 16 / sizeof(T);
  if (hidden % kPerChunk == 0) {  // 16-byte chunks (rows of activations are 256-byte aligned)
    for (int64_t j = threadIdx.x; j < hidden / kPerChunk; j += blockDim.x)
      reinterpret_cast<uint4*>(dst)[j] = reinterpret_cast<const uint4*>(src)[j];
  } else {
    for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) dst[j] = src[j];
  }
}

template <typename T>
__global__ void moe_combine_kernel(const T* __restrict__ ys, const int32_t* __restrict__ row_of,
                                   const float* __restrict__ weights, int top_k, int64_t hidden,
                                   const float* __restrict__ shared_scale, const T* __restrict__ shared,
                                   T* __restrict__ out) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  // Token blockIdx.x, 8 columns per thread: one 16-byte load per expert (a column per thread
  // and a block per token made this a chain of dependent loads, 17.5 us per Mixtral layer
  // at one token on the H100). The same sums in the same order as before, as cpu::moe_combine.
  const int64_t t = blockIdx.x, j0 = 8 * (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x);
  if (j0 >= hidden) return;
  const bool vec = hidden % 8 == 0 && reinterpret_cast<uintptr_t>(ys) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
                   (!shared_scale || reinterpret_cast<uintptr_t>(shared) % 16 == 0);
  float acc[8] = {};
  alignas(16) T v[8];
  const int cols = static_cast<int>(min(int64_t{8}, hidden - j0));
  auto load = [&](const T* src) {
    if (vec) {
      *reinterpret_cast<uint4*>(v) = *reinterpret_cast<const uint4*>(src);
    } else {
      for (int i = 0; i < 8; ++i) v[i] = i < cols ? src[i] : from_float<T>(0.0f);
    }
  };
  for (int s = 0; s < top_k; ++s) {
    const int64_t a = t * top_k + s;
    const float w = weights[a];
    load(ys + static_cast<int64_t>(row_of[a]) * hidden + j0);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] += w * to_float(v[i]);
  }
  if (shared_scale) {
    const float w = shared_scale[t];
    load(shared + t * hidden + j0);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] += w * to_float(v[i]);
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = from_float<T>(acc[i]);
  T* dst = out + t * hidden + j0;
  if (vec) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(v);
  } else {
    for (int i = 0; i < cols; ++i) dst[i] = v[i];
  }
}

// ---------------------------------------------------------------------------------------------
// The grouped FPx GEMM.

// The experts' items run the small-n kernel (fpx_gemv_kernel.cuh) in its grouped form, with
// its tile for the token block (dispatch_gemv_tile: 8, 16, 32 or 64 tokens).

template <typename F>
void dispatch_expert_format(const fpx::PackPlan& plan, F&& f) {
  const bool bf16 = plan.target == DType::kBF16;
  auto pick = [&]<int kE, int kM>() {
    if (bf16)
      f.template operator()<kE, kM, true>();
    else
      f.template operator()<kE, kM, false>();
  };
  if (plan.format == fpx::kE3M2) return pick.template operator()<3, 2>();
  if (plan.format == fpx::kE2M2) return pick.template operator()<2, 2>();
  if (plan.format == fpx::kE2M1) return pick.template operator()<2, 1>();
  if (plan.format == fpx::kE2M3) return pick.template operator()<2, 3>();
  FP6_CUDA_REQUIRE(
      false, kUnsupported,
      "the GPU kernels are built for e3m2, e2m3, e2m2 and e2m1 (FP6, FP6, FP5, FP4), not " + plan.format.name());
}

template <int kE, int kM, bool kBf16, class Cfg>
void launch_expert_tile(const GemmArgs& a, const DeviceExperts& w, const int32_t* work, const int32_t* num_work,
                        int64_t max_items, cudaStream_t stream) {
  constexpr int kSmem = Cfg::smem_bytes(Cfg::kN);
  auto* kernel = fpx_gemv_kernel<kE, kM, kBf16, Cfg>;
  static const bool once = [&] {
    FP6_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    return true;
  }();
  (void)once;
  constexpr int kRowTiles = Cfg::kRows / fpx::kUnitRows;
  const dim3 grid(static_cast<unsigned>((w.row_tiles() + kRowTiles - 1) / kRowTiles), static_cast<unsigned>(a.splits),
                  static_cast<unsigned>(max_items));
  FP6_CUDA_REQUIRE(max_items <= 65535, kInvalidArgument, "expert gemm: more work items than a grid's z extent");
  FP6_CUDA_REQUIRE(a.splits == 1 || static_cast<size_t>(grid.x) * grid.z * sizeof(int) <= kFpxCounterBytes, kInternal,
                   "expert gemm: too many row blocks and work items for the split-K counters");
  launch_kernel(kernel, grid, Cfg::kThreads, kSmem, stream, a,
                GemvItems{work, num_work, w.expert_bytes(), w.row_tiles() * fpx::kUnitRows});
  FP6_CUDA_CHECK_LAUNCH();
}

int64_t row_blocks_of(const DeviceExperts& w, int block_tokens) {
  int rows = 0;
  dispatch_gemv_tile(block_tokens, [&]<class Cfg>() { rows = Cfg::kRows; });
  const int64_t tiles = rows / fpx::kUnitRows;
  return (w.row_tiles() + tiles - 1) / tiles;
}

size_t partial_bytes(const DeviceExperts& w, int64_t assignments, int splits) {
  return splits > 1 ? static_cast<size_t>(splits) * assignments * w.row_tiles() * fpx::kUnitRows * sizeof(float) : 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

void moe_route(const void* x, DType dtype, int64_t n, int64_t hidden, const float* router, int64_t experts,
               int64_t top_k, bool renormalize, int32_t* ids, float* weights, float* shared_scale,
               cudaStream_t stream) {
  FP6_CUDA_REQUIRE(top_k >= 1 && top_k <= experts, kInvalidArgument, "moe_route: top_k outside [1, experts]");
  if (n == 0) return;
  const size_t smem = static_cast<size_t>(experts + 1) * (1 + kRouteThreads / 32) * sizeof(float);
  dispatch(dtype, [&]<typename T>() {
    launch_kernel(moe_route_kernel<T>, static_cast<unsigned>(n), kRouteThreads, smem, stream, static_cast<const T*>(x),
                  hidden, router, static_cast<int>(experts), static_cast<int>(top_k), renormalize, ids, weights,
                  shared_scale);
  });
  FP6_CUDA_CHECK_LAUNCH();
}

int64_t moe_max_work_items(int64_t assignments, int64_t experts, int block_tokens) {
  // sum over experts of ceil(count / block) <= assignments / block + (experts with any count)
  return assignments / block_tokens + std::min(experts, assignments);
}

void moe_group(const int32_t* ids, int64_t assignments, int64_t experts, int block_tokens, int32_t* offsets,
               int32_t* order, int32_t* row_of, int32_t* work, int32_t* num_work, cudaStream_t stream) {
  FP6_CUDA_REQUIRE(assignments < (int64_t{1} << 31) && block_tokens > 0, kInvalidArgument,
                   "moe_group: too many assignments");
  launch_kernel(moe_group_kernel, 1, 32, static_cast<size_t>(experts) * sizeof(int32_t), stream, ids,
                static_cast<int>(assignments), static_cast<int>(experts), block_tokens, offsets, order, row_of, work,
                num_work);
  FP6_CUDA_CHECK_LAUNCH();
}

void moe_gather(const void* x, int64_t hidden, const int32_t* order, int64_t rows, int64_t top_k, void* xs, DType dtype,
                cudaStream_t stream) {
  if (rows == 0) return;
  dispatch(dtype, [&]<typename T>() {
    launch_kernel(moe_gather_kernel<T>, static_cast<unsigned>(rows), 128, 0, stream, static_cast<const T*>(x), hidden,
                  order, static_cast<int>(top_k), static_cast<T*>(xs));
  });
  FP6_CUDA_CHECK_LAUNCH();
}

void moe_combine(const void* ys, const int32_t* row_of, const float* weights, int64_t n, int64_t top_k, int64_t hidden,
                 const float* shared_scale, const void* shared, void* out, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(dtype, [&]<typename T>() {
    const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>((hidden + 8 * 128 - 1) / (8 * 128)));
    launch_kernel(moe_combine_kernel<T>, grid, 128, 0, stream, static_cast<const T*>(ys), row_of, weights,
                  static_cast<int>(top_k), hidden, shared_scale, static_cast<const T*>(shared), static_cast<T*>(out));
  });
  FP6_CUDA_CHECK_LAUNCH();
}

int expert_gemm_block_tokens(int64_t tokens, int64_t top_k, int64_t experts) {
  // An expert's tokens beyond the tile cost another pass over its weights: the tile is sized
  // for the expected largest count, mean + 3 standard deviations of a uniform router (the
  // count is at most `tokens`: each token picks an expert once). A heuristic, not a sweep.
  const double mean = static_cast<double>(tokens) * static_cast<double>(top_k) / static_cast<double>(experts);
  const double expected_max = std::min(static_cast<double>(tokens), mean + 3.0 * std::sqrt(mean) + 1.0);
  int block = 0;
  dispatch_gemv_tile(static_cast<int>(std::min(expected_max, 64.0)), [&]<class Cfg>() { block = Cfg::kN; });
  return block;
}

ExpertGemmPlan plan_expert_gemm(const DeviceExperts& w, int64_t tokens, int64_t top_k) {
  ExpertGemmPlan p;
  const int64_t assignments = tokens * top_k;
  p.block_tokens = expert_gemm_block_tokens(tokens, top_k, w.num_experts);
  p.max_items = moe_max_work_items(assignments, w.num_experts, p.block_tokens);
  // Split-K as fpx_gemm_plan's rule for the small-n kernel: the most splits that keep the CTAs
  // of the items expected to have work (every expert with a token) in one wave of the CTAs the
  // tile's registers allow per SM, at least 4 K units per split, at most 64 MiB of partial
  // sums and as many counters as the workspace has.
  const int64_t active = std::min(w.num_experts, assignments);
  const int64_t ctas = row_blocks_of(w, p.block_tokens) * std::max<int64_t>(active, 1);
  const int64_t max_splits = std::max<int64_t>(1, w.col_units() / 4);
  int64_t resident = 0;
  dispatch_gemv_tile(p.block_tokens, [&]<class Cfg>() { resident = int64_t{Cfg::kMinBlocks} * sm_count(); });
  int64_t s = std::clamp<int64_t>(resident / ctas, 1, max_splits);
  while (s > 1 && partial_bytes(w, assignments, static_cast<int>(s)) > (size_t{64} << 20)) --s;
  if (static_cast<size_t>(row_blocks_of(w, p.block_tokens) * p.max_items) * sizeof(int) > kFpxCounterBytes) s = 1;
  p.splits = static_cast<int>(s);
  return p;
}

size_t expert_gemm_workspace_bytes(const DeviceExperts& w, int64_t assignments, const ExpertGemmPlan& plan) {
  return kFpxCounterBytes + partial_bytes(w, assignments, plan.splits);
}

void expert_gemm(const void* x, DType act, const DeviceExperts& w, const int32_t* work, const int32_t* num_work,
                 int64_t assignments, const ExpertGemmPlan& plan, void* y, void* workspace, size_t workspace_bytes,
                 cudaStream_t stream) {
  FP6_CUDA_REQUIRE(w.plan.has_value(), kInternal, "expert_gemm: the experts are not FPx");
  FP6_CUDA_REQUIRE(act == w.plan->target, kInvalidArgument,
                   std::string("expert_gemm: the experts are packed for ") + dtype_name(w.plan->target) +
                       " activations, not " + dtype_name(act));
  FP6_CUDA_REQUIRE(workspace_bytes >= expert_gemm_workspace_bytes(w, assignments, plan), kInvalidArgument,
                   "expert_gemm: workspace too small");
  if (assignments == 0) return;
  GemmArgs a{};
  a.w = w.data.as<uint8_t>();
  a.x = static_cast<const uint16_t*>(x);
  a.scales = w.scales.as<float>();
  a.bias = nullptr;
  a.y = static_cast<uint16_t*>(y);
  a.counters = static_cast<int*>(workspace);
  a.partials = reinterpret_cast<float*>(static_cast<uint8_t*>(workspace) + kFpxCounterBytes);
  a.n = assignments;
  a.rows = w.rows;
  a.cols = w.cols;
  a.col_units = w.col_units();
  a.row_tiles = w.row_tiles();
  a.ld = w.row_tiles() * fpx::kUnitRows;
  a.splits = std::min<int>(plan.splits, static_cast<int>(w.col_units()));
  a.x_vec = w.cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  dispatch_expert_format(*w.plan, [&]<int kE, int kM, bool kBf16>() {
    dispatch_gemv_tile(plan.block_tokens, [&]<class Cfg>() {
      FP6_CUDA_REQUIRE(Cfg::kN == plan.block_tokens, kInternal, "expert_gemm: the plan's token block is no tile");
      launch_expert_tile<kE, kM, kBf16, Cfg>(a, w, work, num_work, plan.max_items, stream);
    });
  });
}

}  // namespace fp6serve::cuda
