#include "backend/cuda/linear.h"

#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "backend/cuda/device.h"
#include "backend/cuda/fpx_gemm.h"
#include "backend/cuda/fpx_quantize.h"
#include "core/check.h"
#include "fpx/pack.h"

namespace fp6serve::cuda {

namespace {

// The large-n path dequantizes row blocks of at most this many 16-bit bytes, each followed by
// one cuBLAS GEMM: big enough that the GEMM fills the GPU (2048-row blocks left most SMs idle
// at n = 128), small enough to bound the workspace (a 7B layer is one block, 70B's gate+up four).
constexpr size_t kDequantBlockBytes = size_t{256} << 20;
int64_t dequant_block_rows(const DeviceFpxWeight& w) {
  const int64_t tiles = static_cast<int64_t>(kDequantBlockBytes / (w.cols * 2 * fpx::kUnitRows));
  return std::clamp<int64_t>(tiles, 1, w.row_tiles()) * fpx::kUnitRows;
}

cublasHandle_t cublas() {
  thread_local struct Handle {
    cublasHandle_t h = nullptr;
    Handle() { FP6_CUBLAS_CHECK(cublasCreate(&h)); }
    ~Handle() { cublasDestroy(h); }
  } handle;
  return handle.h;
}

cudaDataType cuda_type(DType d) {
  FP6_CHECK(d == DType::kF16 || d == DType::kBF16, kInvalidArgument, "GPU linear layers take f16 or bf16, not {}",
            dtype_name(d));
  return d == DType::kF16 ? CUDA_R_16F : CUDA_R_16BF;
}

// Y[:, r0 : r0 + m] (row-major [n, ld_y]) = X[n, k] . A[m, k]^T with A row-major.
void gemm_rows(const void* a, const void* x, void* y, int64_t m, int64_t n, int64_t k, int64_t ld_y, DType dtype,
               cudaStream_t stream) {
  const float one = 1.0f, zero = 0.0f;
  const cudaDataType t = cuda_type(dtype);
  FP6_CUBLAS_CHECK(cublasSetStream(cublas(), stream));
  FP6_CUBLAS_CHECK(cublasGemmEx(cublas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(m), static_cast<int>(n),
                                static_cast<int>(k), &one, a, t, static_cast<int>(k), x, t, static_cast<int>(k), &zero,
                                y, t, static_cast<int>(ld_y), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace

FpxLaunch fpx_launch_for(const DeviceFpxWeight& w, const void* x, int64_t n, const float* bias, void* y,
                         void* workspace, cudaStream_t stream) {
  FpxLaunch l{};
  l.plan = w.plan;
  l.w = w.data.as<uint8_t>();
  l.scales = w.scales.as<float>();
  l.bias = bias;
  l.rows = w.rows;
  l.cols = w.cols;
  l.row_tiles = w.row_tiles();
  l.col_units = w.col_units();
  l.x = x;
  l.y = y;
  l.n = n;
  l.splits = 1;
  l.workspace = workspace;
  l.stream = stream;
  return l;
}

namespace {

size_t partial_bytes(const DeviceFpxWeight& w, int64_t n, int splits) {
  return splits > 1 ? static_cast<size_t>(splits * n * w.row_tiles() * fpx::kUnitRows) * sizeof(float) : 0;
}

void check_call(const DeviceFpxWeight& w, DType act, int64_t n) {
  FP6_CHECK(act == w.plan.target, kInvalidArgument,
            "this weight is packed for {} activations, not {} (pack it for the model's dtype)",
            dtype_name(w.plan.target), dtype_name(act));
  FP6_CHECK(n >= 0, kInvalidArgument, "fpx_linear: negative token count {}", n);
}

}  // namespace

DeviceFpxWeight upload(const fpx::PackedWeight& host, cudaStream_t stream) {
  FP6_CHECK(fpx_gpu_format_supported(host.format()), kUnsupported,
            "the GPU kernels are built for e3m2, e2m3, e2m2 and e2m1 (FP6, FP6, FP5, FP4), not {}",
            host.format().name());
  DeviceFpxWeight w;
  w.plan = host.plan;
  w.rows = host.rows;
  w.cols = host.cols;
  w.data = DeviceBuffer(host.bytes());
  w.scales = DeviceBuffer(host.scales.size() * sizeof(float));
  FP6_CUDA_CHECK(cudaMemcpyAsync(w.data.data(), host.data.data(), host.bytes(), cudaMemcpyHostToDevice, stream));
  FP6_CUDA_CHECK(cudaMemcpyAsync(w.scales.data(), host.scales.data(), w.scales.size(), cudaMemcpyHostToDevice, stream));
  FP6_CUDA_CHECK(cudaStreamSynchronize(stream));  // the host weight may go away after this
  return w;
}

DeviceFpxWeight quantize_on_device(const void* src, DType src_dtype, int64_t rows, int64_t cols, fpx::Format format,
                                   DType target, const std::string& name, cudaStream_t stream, fpx::ScaleRule rule) {
  FP6_CHECK(fpx_gpu_format_supported(format), kUnsupported,
            "the GPU kernels are built for e3m2, e2m3, e2m2 and e2m1 (FP6, FP6, FP5, FP4), not {}", format.name());
  DeviceFpxWeight w;
  w.plan = fpx::pack_plan(format, target);
  w.rows = rows;
  w.cols = cols;
  w.data = DeviceBuffer(w.plan.packed_bytes(rows, cols));
  w.scales = DeviceBuffer(static_cast<size_t>(w.row_tiles() * fpx::kUnitRows) * sizeof(float));
  const int64_t bad = quantize_pack(src, src_dtype, rows, cols, w.plan, fpx::Codec(format).params(),
                                    w.data.as<uint8_t>(), w.scales.as<float>(), stream, rule);
  FP6_CHECK(bad < 0, kBadInput, "{}: NaN or Inf at row {}, column {}", name, bad / std::max<int64_t>(cols, 1),
            bad % std::max<int64_t>(cols, 1));
  return w;
}

DeviceDenseWeight upload_dense(const void* host, DType dtype, int64_t rows, int64_t cols) {
  cuda_type(dtype);
  DeviceDenseWeight w;
  w.dtype = dtype;
  w.rows = rows;
  w.cols = cols;
  w.data = DeviceBuffer(static_cast<size_t>(rows * cols) * dtype_size(dtype));
  w.data.upload(host, w.data.size());
  return w;
}

FpxPath fpx_path(const DeviceFpxWeight& w, int64_t n, int64_t crossover) {
  // Where the Hopper kernel serves the weight it beats dequantize + cuBLAS at every n measured.
  if (crossover <= 0 && fpx_wgmma_supported(w.plan, w.cols)) return FpxPath::kFused;
  return n <= (crossover > 0 ? crossover : kFpxCrossoverTokens) ? FpxPath::kFused : FpxPath::kDequantGemm;
}

// The split fpx_gemm_plan chooses for the kernel and tile it picks, lowered until the partial
// sums fit in kMaxPartialBytes; none where the arrival counters would not fit.
int fpx_splits(const DeviceFpxWeight& w, int64_t n) {
  constexpr size_t kMaxPartialBytes = size_t{64} << 20;
  const FpxGemmPlan p = fpx_gemm_plan(w.plan, w.row_tiles(), w.col_units(), w.cols, n, sm_count());
  const int64_t blocks = (w.row_tiles() * fpx::kUnitRows + p.rows_per_cta - 1) / p.rows_per_cta *
                         ((n + p.tokens_per_cta - 1) / p.tokens_per_cta);
  if (static_cast<size_t>(blocks) * sizeof(int) > kFpxCounterBytes) return 1;
  int s = p.splits;
  while (s > 1 && partial_bytes(w, n, s) > kMaxPartialBytes) --s;
  return s;
}

size_t fpx_fused_workspace_bytes(const DeviceFpxWeight& w, int64_t n, int splits) {
  return kFpxCounterBytes + partial_bytes(w, n, splits);
}

size_t fpx_dequant_workspace_bytes(const DeviceFpxWeight& w) {
  return kFpxCounterBytes + static_cast<size_t>(dequant_block_rows(w) * w.cols) * 2;
}

size_t fpx_linear_workspace_bytes(const DeviceFpxWeight& w, int64_t n, int64_t crossover) {
  if (fpx_path(w, n, crossover) == FpxPath::kFused) return fpx_fused_workspace_bytes(w, n, fpx_splits(w, n));
  return fpx_dequant_workspace_bytes(w);
}

void fpx_linear_fused(const void* x, DType act, int64_t n, const DeviceFpxWeight& w, const float* bias, void* y,
                      void* workspace, size_t workspace_bytes, int splits, cudaStream_t stream) {
  check_call(w, act, n);
  if (n == 0) return;
  FpxLaunch l = fpx_launch_for(w, x, n, bias, y, workspace, stream);
  l.splits = splits > 0 ? std::min<int>(splits, static_cast<int>(w.col_units())) : fpx_splits(w, n);
  FP6_CHECK(workspace_bytes >= fpx_fused_workspace_bytes(w, n, l.splits), kInvalidArgument,
            "fpx_linear: workspace of {} bytes, needs {}", workspace_bytes, fpx_fused_workspace_bytes(w, n, l.splits));
  launch_fpx_gemm(l);
}

void fpx_linear(const void* x, DType act, int64_t n, const DeviceFpxWeight& w, const float* bias, void* y,
                void* workspace, size_t workspace_bytes, cudaStream_t stream, int64_t crossover) {
  if (fpx_path(w, n, crossover) == FpxPath::kFused)
    return fpx_linear_fused(x, act, n, w, bias, y, workspace, workspace_bytes, 0, stream);
  fpx_linear_dequant_gemm(x, act, n, w, bias, y, workspace, workspace_bytes, stream);
}

void fpx_linear_dequant_gemm(const void* x, DType act, int64_t n, const DeviceFpxWeight& w, const float* bias, void* y,
                             void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  check_call(w, act, n);
  if (n == 0) return;
  // Row blocks as large as recommended, or as the workspace given allows (one row tile at least).
  const size_t tile_bytes = static_cast<size_t>(w.cols) * 2 * fpx::kUnitRows;
  FP6_CHECK(workspace_bytes >= kFpxCounterBytes + tile_bytes, kInvalidArgument,
            "fpx_linear: workspace of {} bytes, needs {} at least ({} recommended)", workspace_bytes,
            kFpxCounterBytes + tile_bytes, fpx_dequant_workspace_bytes(w));
  const FpxLaunch l = fpx_launch_for(w, x, n, bias, y, workspace, stream);
  void* dequantized = static_cast<uint8_t*>(workspace) + kFpxCounterBytes;  // the counters stay untouched
  const int64_t tiles_per_block = std::min<int64_t>(
      dequant_block_rows(w) / fpx::kUnitRows, static_cast<int64_t>((workspace_bytes - kFpxCounterBytes) / tile_bytes));
  for (int64_t rt0 = 0; rt0 < l.row_tiles; rt0 += tiles_per_block) {
    const int64_t rt1 = std::min(l.row_tiles, rt0 + tiles_per_block);
    launch_fpx_dequant(l, rt0, rt1, dequantized);
    const int64_t r0 = rt0 * fpx::kUnitRows, r1 = std::min(w.rows, rt1 * fpx::kUnitRows);
    gemm_rows(dequantized, x, static_cast<uint16_t*>(y) + r0, r1 - r0, n, w.cols, w.rows, act, stream);
  }
  if (bias) launch_add_bias(y, act, bias, w.rows, n, stream);
}

size_t dense_linear_workspace_bytes(const DeviceDenseWeight&, int64_t) {
  return 0;
}

void dense_linear(const void* x, DType act, int64_t n, const DeviceDenseWeight& w, const float* bias, void* y, void*,
                  size_t, cudaStream_t stream) {
  FP6_CHECK(act == w.dtype, kInvalidArgument, "dense weight in {} with {} activations", dtype_name(w.dtype),
            dtype_name(act));
  if (n == 0) return;
  gemm_rows(w.data.data(), x, y, w.rows, n, w.cols, w.rows, act, stream);
  if (bias) launch_add_bias(y, act, bias, w.rows, n, stream);
}

}  // namespace fp6serve::cuda
