// Sampling on the GPU (sampling.h): one CTA of 512 threads per row. The row's logits are
// copied to an f32 scratch row and penalized; block reductions give the argmax (greedy), the
// log-sum-exp and the top log-probabilities (n rounds of argmax, each after the previous in
// (value desc, id asc) order). Top-k and top-p thresholds are radix selects over
// order-preserving 32-bit keys, 8 bits per pass, with 64-bit histograms in shared memory
// (counts for top-k, fixed-point mass for top-p: integer sums, so the result does not depend
// on the order of the atomics). The draw: each thread sums the mass of a contiguous slice of
// the vocabulary, a block scan places the slices, and the thread whose slice holds the draw
// point walks it. Targets sm_80 and sm_90; nothing architecture-specific.
#include <algorithm>
#include <climits>
#include <cstring>
#include <string>

#include "backend/cuda/dtype.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ptx.cuh"
#include "backend/cuda/sampling.h"

namespace fp6serve::cuda {

namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

struct RowArgs {  // a SampleRow flattened for the device
  float inv_temperature;
  int32_t top_k;
  float min_p;
  int32_t top_logprobs;
  double top_p;
  double repetition_penalty;
  double u;
  int32_t pen_begin, pen_end;
};

struct RowResult {
  int32_t token;
  float logprob;
  int32_t top_tokens[sampling::kMaxTopLogprobs];
  float top_logprobs[sampling::kMaxTopLogprobs];
};

struct ArgMax {
  float v;
  int32_t i;
};

// a before b in (value desc, id asc) order.
__device__ __forceinline__ bool before(const ArgMax& a, const ArgMax& b) {
  return a.v > b.v || (a.v == b.v && a.i < b.i);
}

template <typename T>
__device__ __forceinline__ T shfl_xor(T v, int o) {
  return __shfl_xor_sync(0xffffffffu, v, o);
}
template <>
__device__ __forceinline__ ArgMax shfl_xor(ArgMax v, int o) {
  return {__shfl_xor_sync(0xffffffffu, v.v, o), __shfl_xor_sync(0xffffffffu, v.i, o)};
}

// Every thread gets op over the block's values, combined in a fixed order.
template <typename T, typename Op>
__device__ T block_all_reduce(T v, Op op) {
  __shared__ T part[kWarps];
  for (int o = 16; o > 0; o >>= 1) v = op(v, shfl_xor(v, o));
  __syncthreads();  // part may still be read by the previous call
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  T r = part[0];
  for (int w = 1; w < kWarps; ++w) r = op(r, part[w]);
  return r;
}

// The exclusive prefix sum of v over the block's threads.
__device__ uint64_t block_exclusive_scan(uint64_t v) {
  __shared__ uint64_t warp_sums[kWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  uint64_t inc = v;
  for (int o = 1; o < 32; o <<= 1) {
    const uint64_t up = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += up;
  }
  __syncthreads();
  if (lane == 31) warp_sums[warp] = inc;
  __syncthreads();
  uint64_t before_warp = 0;
  for (int w = 0; w < warp; ++w) before_warp += warp_sums[w];
  return before_warp + inc - v;
}

// The largest key K with sum of weight over {i : key_i >= K} >= target (key_i, weight_i =
// kw(i)), and that sum. Needs the total weight >= target.
template <typename KW>
__device__ void radix_select(int64_t vocab, KW kw, uint64_t target, uint32_t& key, uint64_t& sum) {
  __shared__ unsigned long long hist[256];
  __shared__ uint32_t s_prefix;
  __shared__ unsigned long long s_above, s_sum;
  uint32_t prefix = 0;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    for (int b = threadIdx.x; b < 256; b += kThreads) hist[b] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      const auto [k, m] = kw(i);
      if (m != 0 && (pass == 0 || (k >> (shift + 8)) == prefix)) atomicAdd(&hist[(k >> shift) & 255u], m);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long acc = pass == 0 ? 0 : s_above;
      int b = 255;
      for (; b > 0 && acc + hist[b] < target; --b) acc += hist[b];
      s_prefix = (prefix << 8) | static_cast<uint32_t>(b);
      s_above = acc;
      s_sum = acc + hist[b];
    }
    __syncthreads();
    prefix = s_prefix;
  }
  key = prefix;
  sum = s_sum;
  __syncthreads();
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    sample_kernel(const T* __restrict__ logits, int64_t vocab, const RowArgs* __restrict__ rows,
                  const PenaltyEntry* __restrict__ penalties, float* __restrict__ scratch,
                  RowResult* __restrict__ results) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  __shared__ int32_t s_token;
  const int64_t r = blockIdx.x;
  const RowArgs a = rows[r];
  const T* raw = logits + r * vocab;
  float* w = scratch + r * vocab;
  const int tid = static_cast<int>(threadIdx.x);
  for (int64_t i = tid; i < vocab; i += kThreads) w[i] = to_float(raw[i]);
  __syncthreads();
  for (int e = a.pen_begin + tid; e < a.pen_end; e += kThreads) {
    const PenaltyEntry p = penalties[e];
    if (p.token >= 0 && p.token < vocab) w[p.token] = sampling::penalize(w[p.token], p, a.repetition_penalty);
  }
  __syncthreads();
  auto pick = [](ArgMax x, ArgMax y) { return before(y, x) ? y : x; };
  ArgMax best{-INFINITY, INT_MAX};
  for (int64_t i = tid; i < vocab; i += kThreads) best = pick(best, {w[i], static_cast<int32_t>(i)});
  best = block_all_reduce(best, pick);

  RowResult& out = results[r];
  float lse = 0.0f;
  if (a.top_logprobs >= 0) {
    float mx = -INFINITY;
    for (int64_t i = tid; i < vocab; i += kThreads) mx = fmaxf(mx, to_float(raw[i]));
    mx = block_all_reduce(mx, [](float x, float y) { return fmaxf(x, y); });
    double z = 0;
    for (int64_t i = tid; i < vocab; i += kThreads) z += exp(static_cast<double>(to_float(raw[i]) - mx));
    z = block_all_reduce(z, [](double x, double y) { return x + y; });
    lse = static_cast<float>(mx + log(z));
    ArgMax prev{INFINITY, -1};
    const int n = static_cast<int>(min(static_cast<int64_t>(a.top_logprobs), vocab));
    for (int k = 0; k < n; ++k) {
      ArgMax b{-INFINITY, INT_MAX};
      for (int64_t i = tid; i < vocab; i += kThreads) {
        const ArgMax c{to_float(raw[i]), static_cast<int32_t>(i)};
        if (before(prev, c)) b = pick(b, c);
      }
      prev = block_all_reduce(b, pick);
      if (tid == 0) out.top_tokens[k] = prev.i, out.top_logprobs[k] = prev.v - lse;
    }
  }

  if (a.inv_temperature == 0.0f) {
    if (tid == 0) s_token = best.i;
  } else {
    const float mx = best.v;
    for (int64_t i = tid; i < vocab; i += kThreads) w[i] = (w[i] - mx) * a.inv_temperature;  // z <= 0
    uint32_t k_floor = 0;
    uint64_t unused = 0;
    if (a.top_k > 0 && a.top_k < vocab)
      radix_select(
          vocab,
          [&](int64_t i) {
            return std::pair<uint32_t, uint64_t>{sampling::order_key(w[i]), 1};
          },
          static_cast<uint64_t>(a.top_k), k_floor, unused);
    uint64_t total = 0;
    for (int64_t i = tid; i < vocab; i += kThreads) {
      const float z = w[i];
      float v = sampling::order_key(z) >= k_floor ? sampling::exp_nonpositive(z) : 0.0f;
      v = v < a.min_p ? 0.0f : v;
      w[i] = v;
      total += sampling::mass(v);
    }
    total = block_all_reduce(total, [](uint64_t x, uint64_t y) { return x + y; });
    uint32_t p_floor = 0;
    if (a.top_p < 1.0)
      radix_select(
          vocab,
          [&](int64_t i) {
            return std::pair<uint32_t, uint64_t>{sampling::order_key(w[i]), sampling::mass(w[i])};
          },
          sampling::top_p_target(a.top_p, total), p_floor, total);
    __syncthreads();  // the slices below cross the strided ownership of the loops above
    const uint64_t point = sampling::draw_point(a.u, total);
    const int64_t slice = (vocab + kThreads - 1) / kThreads;
    const int64_t begin = min(vocab, tid * slice), end = min(vocab, begin + slice);
    auto kept_mass = [&](int64_t i) { return sampling::order_key(w[i]) >= p_floor ? sampling::mass(w[i]) : 0; };
    uint64_t mine = 0;
    for (int64_t i = begin; i < end; ++i) mine += kept_mass(i);
    uint64_t cum = block_exclusive_scan(mine);
    if (tid == 0) s_token = best.i;  // unreachable fallback: the draw point is below the total
    __syncthreads();
    if (cum <= point && point < cum + mine)
      for (int64_t i = begin; i < end; ++i) {
        cum += kept_mass(i);
        if (cum > point) {
          s_token = static_cast<int32_t>(i);
          break;
        }
      }
  }
  __syncthreads();
  if (tid == 0) {
    out.token = s_token;
    out.logprob = a.top_logprobs >= 0 ? to_float(raw[s_token]) - lse : 0.0f;
  }
}

size_t align256(size_t bytes) {
  return (bytes + 255) / 256 * 256;
}

}  // namespace

std::vector<Sample> sample_rows(const void* logits, DType dtype, int64_t vocab, const std::vector<SampleRow>& rows,
                                DeviceBuffer& scratch, cudaStream_t stream) {
  if (rows.empty()) return {};
  FP6_CUDA_REQUIRE(dtype == DType::kF16 || dtype == DType::kBF16, kInternal, "GPU sampling takes 16-bit logits");
  std::vector<RowArgs> args;
  std::vector<PenaltyEntry> pens;
  for (const SampleRow& row : rows) {
    FP6_CUDA_REQUIRE(row.top_logprobs <= sampling::kMaxTopLogprobs, kInvalidArgument,
                     "at most " + std::to_string(sampling::kMaxTopLogprobs) + " top log-probabilities");
    const auto begin = static_cast<int32_t>(pens.size());
    pens.insert(pens.end(), row.penalties.begin(), row.penalties.end());
    args.push_back({row.inv_temperature, row.top_k, row.min_p, row.top_logprobs, row.top_p, row.repetition_penalty,
                    row.u, begin, static_cast<int32_t>(pens.size())});
  }
  const size_t n = rows.size();
  const size_t args_bytes = align256(n * sizeof(RowArgs)), pen_bytes = align256(pens.size() * sizeof(PenaltyEntry)),
               result_bytes = align256(n * sizeof(RowResult));
  const size_t need = args_bytes + pen_bytes + result_bytes + n * static_cast<size_t>(vocab) * sizeof(float);
  if (scratch.size() < need) {
    FP6_CUDA_CHECK(cudaStreamSynchronize(stream));  // the old buffer may still be in use
    scratch = DeviceBuffer(need + need / 4);
  }
  std::vector<uint8_t> blob(args_bytes + pen_bytes);
  std::memcpy(blob.data(), args.data(), n * sizeof(RowArgs));
  if (!pens.empty()) std::memcpy(blob.data() + args_bytes, pens.data(), pens.size() * sizeof(PenaltyEntry));
  auto* base = scratch.as<uint8_t>();
  FP6_CUDA_CHECK(cudaMemcpyAsync(base, blob.data(), blob.size(), cudaMemcpyHostToDevice, stream));
  auto* results = reinterpret_cast<RowResult*>(base + args_bytes + pen_bytes);
  auto* work = reinterpret_cast<float*>(base + args_bytes + pen_bytes + result_bytes);
  dispatch(dtype, [&]<typename T>() {
    if constexpr (!std::is_same_v<T, float>)
      launch_kernel(sample_kernel<T>, static_cast<unsigned>(n), kThreads, 0, stream, static_cast<const T*>(logits),
                    vocab, reinterpret_cast<const RowArgs*>(base),
                    reinterpret_cast<const PenaltyEntry*>(base + args_bytes), work, results);
  });
  FP6_CUDA_CHECK_LAUNCH();
  std::vector<RowResult> host(n);
  FP6_CUDA_CHECK(cudaMemcpyAsync(host.data(), results, n * sizeof(RowResult), cudaMemcpyDeviceToHost, stream));
  FP6_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<Sample> out(n);
  for (size_t r = 0; r < n; ++r) {
    out[r].token = host[r].token;
    if (rows[r].top_logprobs < 0) continue;
    out[r].logprob = host[r].logprob;
    const int k = static_cast<int>(std::min<int64_t>(rows[r].top_logprobs, vocab));
    for (int i = 0; i < k; ++i) out[r].top.push_back({host[r].top_tokens[i], host[r].top_logprobs[i]});
  }
  return out;
}

}  // namespace fp6serve::cuda
