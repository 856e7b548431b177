// GPU quantize + prepack (see fpx_quantize.h). Two kernels (three with the min-error rule): one
// block per row finds the row's absolute maximum (and any NaN/Inf); for min-error, one warp
// per row tries the candidate scales, one per lane, each summing its row's squared error in
// column order as fpx::quantize_rows does; then one warp per 16x128 unit writes each lane's
// segment words exactly as fpx::pack does on the host, from the same plan. Load-time code:
// simple and exact rather than fast. sm_80 and sm_90.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/fpx_quantize.h"

namespace fp6serve::cuda {

namespace {

__device__ __forceinline__ float load(const void* p, int64_t i, DType d) {
  switch (d) {
    case DType::kF16:
      return __half2float(static_cast<const __half*>(p)[i]);
    case DType::kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

__global__ void row_scale_kernel(const void* src, DType dtype, int64_t cols, float max_value, float* scales,
                                 unsigned long long* bad) {
  const int64_t row = blockIdx.x;
  float amax = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = load(src, row * cols + c, dtype);
    if (!isfinite(v)) atomicMin(bad, static_cast<unsigned long long>(row * cols + c));
    amax = fmaxf(amax, fabsf(v));
  }
  __shared__ float partial[32];
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = amax;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int i = 1; i < static_cast<int>(blockDim.x / 32); ++i) amax = fmaxf(amax, partial[i]);
    const float scale = __fdiv_rn(amax, max_value);
    scales[row] = scale == 0.0f ? 1.0f : scale;  // as fpx::quantize_rows: zero rows get scale 1
  }
}

struct DecodeTable {
  float value[256];
};

// ScaleRule::kMinError (fpx/quantize.h): lane k tries scale * (1 - 0.01 k), k <= 25, summing
// (v - s * decode(encode(v / s)))^2 in double over the row in column order; lane 0 keeps the
// first least. Explicit _rn operations so nothing is fused (the host code is not either).
__global__ void min_error_kernel(const void* src, DType dtype, int64_t cols, fpx::EncodeParams enc, DecodeTable table,
                                 float* scales) {
  static_assert(fpx::kMinErrorSteps < 32, "one lane per candidate");
  const int64_t row = blockIdx.x;
  const int lane = threadIdx.x;
  const float s0 = scales[row];
  float amax = 0.0f;
  for (int64_t c = 0; c < cols; ++c) amax = fmaxf(amax, fabsf(load(src, row * cols + c, dtype)));
  if (amax == 0.0f) return;  // a zero row keeps scale 1
  const float s = __fmul_rn(s0, __fsub_rn(1.0f, __fmul_rn(fpx::kMinErrorStep, static_cast<float>(lane))));
  double error = INFINITY;
  bool tried = lane <= fpx::kMinErrorSteps && s != 0.0f;
  if (tried) {
    error = 0.0;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = load(src, row * cols + c, dtype);
      const float q = __fmul_rn(s, table.value[fpx::encode(enc, __fdiv_rn(v, s))]);
      const double d = __dsub_rn(static_cast<double>(v), static_cast<double>(q));
      error = __dadd_rn(error, __dmul_rn(d, d));
    }
  }
  __shared__ double errors[32];
  __shared__ bool valid[32];
  errors[lane] = error;
  valid[lane] = tried;
  __syncwarp();
  if (lane != 0) return;
  float best = s0;
  double best_error = INFINITY;
  for (int k = 0; k <= fpx::kMinErrorSteps && valid[k]; ++k) {  // the host stops at the first zero scale
    if (errors[k] < best_error) {
      best_error = errors[k];
      best = __fmul_rn(s0, __fsub_rn(1.0f, __fmul_rn(fpx::kMinErrorStep, static_cast<float>(k))));
    }
  }
  scales[row] = best;
}

// One warp per unit; lane l writes its words of every segment.
__global__ void pack_kernel(const void* src, DType dtype, int64_t rows, int64_t cols, fpx::PackPlan plan,
                            fpx::EncodeParams enc, const float* scales, uint8_t* packed, int64_t col_units) {
  const int64_t unit = blockIdx.x;
  const int64_t rt = unit / col_units, cu = unit % col_units;
  const int lane = threadIdx.x;
  uint8_t* out = packed + unit * plan.unit_bytes();
  for (int s = 0; s < plan.num_segments; ++s) {
    const fpx::Segment& seg = plan.segments[s];
    for (int word = 0; word < seg.words_per_lane(); ++word) {
      uint32_t w = 0;
      for (int h = 0; h < seg.slots(); ++h) {
        const int fragment = word * seg.fragments_per_word() + h / 4;
        const int reg = h % 4;
        const int64_t row = rt * fpx::kUnitRows + fpx::unit_row(lane, reg);
        for (int half = 0; half < 2; ++half) {
          const int64_t col = cu * fpx::kUnitCols + fpx::unit_col(lane, reg, half, fragment);
          uint32_t code = 0;  // padding is +0
          if (row < rows && col < cols)
            code = fpx::encode(enc, __fdiv_rn(load(src, row * cols + col, dtype), scales[row]));
          for (int k = 0; k < seg.width; ++k)
            w |= ((code >> seg.code_bits[k]) & 1u) << ((seg.targets[k] + seg.translates[h] + 16 * half) % 32);
        }
      }
      *reinterpret_cast<uint32_t*>(out + plan.word_offset(s, lane, word)) = w;
    }
  }
}

}  // namespace

int64_t quantize_pack(const void* src, DType src_dtype, int64_t rows, int64_t cols, const fpx::PackPlan& plan,
                      const fpx::EncodeParams& encode, uint8_t* packed, float* scales, cudaStream_t stream,
                      fpx::ScaleRule rule) {
  FP6_CUDA_REQUIRE(rows > 0 && cols > 0 && plan.num_segments > 0, kInvalidArgument,
                   "quantize_pack: empty matrix or plan");
  FP6_CUDA_REQUIRE(src_dtype == DType::kF16 || src_dtype == DType::kBF16 || src_dtype == DType::kF32, kInvalidArgument,
                   "quantize_pack: the source must be f16, bf16 or f32");
  const int64_t rows_padded = (rows + fpx::kUnitRows - 1) / fpx::kUnitRows * fpx::kUnitRows;
  const int64_t col_units = (cols + fpx::kUnitCols - 1) / fpx::kUnitCols;
  unsigned long long* bad = nullptr;
  FP6_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&bad), sizeof(*bad), stream));
  FP6_CUDA_CHECK(cudaMemsetAsync(bad, 0xFF, sizeof(*bad), stream));
  FP6_CUDA_CHECK(cudaMemsetAsync(scales, 0, static_cast<size_t>(rows_padded) * sizeof(float), stream));
  row_scale_kernel<<<static_cast<unsigned>(rows), 256, 0, stream>>>(src, src_dtype, cols, encode.max_value, scales,
                                                                    bad);
  FP6_CUDA_CHECK_LAUNCH();
  if (rule == fpx::ScaleRule::kMinError) {
    DecodeTable table{};
    const fpx::Codec codec(plan.format);
    for (int i = 0; i < plan.format.num_codes(); ++i) table.value[i] = codec.decode(static_cast<uint8_t>(i));
    min_error_kernel<<<static_cast<unsigned>(rows), 32, 0, stream>>>(src, src_dtype, cols, encode, table, scales);
    FP6_CUDA_CHECK_LAUNCH();
  }
  pack_kernel<<<static_cast<unsigned>(rows_padded / fpx::kUnitRows * col_units), 32, 0, stream>>>(
      src, src_dtype, rows, cols, plan, encode, scales, packed, col_units);
  FP6_CUDA_CHECK_LAUNCH();
  unsigned long long first_bad = 0;
  FP6_CUDA_CHECK(cudaMemcpyAsync(&first_bad, bad, sizeof(first_bad), cudaMemcpyDeviceToHost, stream));
  FP6_CUDA_CHECK(cudaFreeAsync(bad, stream));
  FP6_CUDA_CHECK(cudaStreamSynchronize(stream));
  return first_bad == ~0ull ? -1 : static_cast<int64_t>(first_bad);
}

}  // namespace fp6serve::cuda
