// The mixture-of-experts MLP on the GPU (the CUDA twins of cpu/moe.cc), in seven launches per
// layer whatever the number of experts: the router (logits, softmax, top-k, renormalization,
// the shared expert's gate), the grouping of the assignments by expert (and the work list of
// the grouped GEMM), the gather of each expert's rows, the experts' gate_up FPx GEMMs (one
// launch for all experts, expert_gemm), silu_mul, their down GEMMs (one launch), and the
// weighted combine. Token t's s-th choice is assignment t * top_k + s; the grouped order holds
// expert 0's assignments first, each expert's in increasing order (cpu/ops.h). Every launch is
// asynchronous on the given stream, allocates nothing and is graph-capturable: grids depend
// on the token count only, never on the routing (blocks without work return at once).
// tests/backend/cuda/moe_test.cc compares each with its CPU twin.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <optional>

#include "backend/cuda/device_buffer.h"
#include "core/dtype.h"
#include "fpx/pack_plan.h"

namespace fp6serve::cuda {

// The experts of one kind of one layer, all [rows, cols]: FPx (plan set; every expert's packed
// units back to back in `data`, their scales, rows padded to 16, back to back in `scales`) or
// dense 16-bit (data: experts x rows x cols).
struct DeviceExperts {
  int64_t num_experts = 0, rows = 0, cols = 0;
  std::optional<fpx::PackPlan> plan;
  DType dense_dtype = DType::kF16;
  DeviceBuffer data, scales;
  int64_t row_tiles() const { return (rows + fpx::kUnitRows - 1) / fpx::kUnitRows; }
  int64_t col_units() const { return (cols + fpx::kUnitCols - 1) / fpx::kUnitCols; }
  // Bytes of one expert's packed units (FPx) or 16-bit matrix (dense).
  int64_t expert_bytes() const;
};

// --- the router (twin: cpu::moe_route). x [n, hidden] in dtype; router [rows, hidden] f32
// with rows = experts (+1 when shared_scale is given: its last row is the shared expert's gate).
void moe_route(const void* x, DType dtype, int64_t n, int64_t hidden, const float* router, int64_t experts,
               int64_t top_k, bool renormalize, int32_t* ids, float* weights, float* shared_scale, cudaStream_t stream);

// --- the grouping (twin: cpu::moe_group), and the work list of expert_gemm: one item (expert,
// first row, rows <= block_tokens) per block of block_tokens rows of each expert, experts in
// order; num_work[0] = the number of items (at most moe_max_work_items).
int64_t moe_max_work_items(int64_t assignments, int64_t experts, int block_tokens);
void moe_group(const int32_t* ids, int64_t assignments, int64_t experts, int block_tokens, int32_t* offsets,
               int32_t* order, int32_t* row_of, int32_t* work, int32_t* num_work, cudaStream_t stream);

// --- the gather (twin: cpu::moe_gather): xs[r, :] = x[order[r] / top_k, :], r < rows.
void moe_gather(const void* x, int64_t hidden, const int32_t* order, int64_t rows, int64_t top_k, void* xs, DType dtype,
                cudaStream_t stream);

// --- the combine (twin: cpu::moe_combine), in f32, rounded once to dtype.
void moe_combine(const void* ys, const int32_t* row_of, const float* weights, int64_t n, int64_t top_k, int64_t hidden,
                 const float* shared_scale, const void* shared, void* out, DType dtype, cudaStream_t stream);

// --- the grouped FPx GEMM: for every item of the work list, y[r, :] = x[r, :] .
// (scale (.) dequant(W_expert))^T for its rows r, all items in one launch of the small-n
// kernel (fpx_gemv_kernel.cuh) in its grouped form, the expert picked per CTA. The plan
// depends on the token count only (not on the routing): the token tile (block_tokens, which
// moe_group must be given) from the expected largest expert count, the K split from the
// expected active experts.
struct ExpertGemmPlan {
  int block_tokens = 8;
  int splits = 1;
  int64_t max_items = 0;  // blockIdx.z extent
};
// For `tokens` tokens of top_k choices among the weight's experts.
ExpertGemmPlan plan_expert_gemm(const DeviceExperts& w, int64_t tokens, int64_t top_k);
// The token tile plan_expert_gemm picks (independent of the weight's shape).
int expert_gemm_block_tokens(int64_t tokens, int64_t top_k, int64_t experts);
// Workspace bytes (counters, then split-K partials), zero-filled when allocated like
// fpx_linear's; every launch leaves the counters zero.
size_t expert_gemm_workspace_bytes(const DeviceExperts& w, int64_t assignments, const ExpertGemmPlan& plan);
// x [assignments, cols], y [assignments, rows] in the act dtype the weight is packed for.
void expert_gemm(const void* x, DType act, const DeviceExperts& w, const int32_t* work, const int32_t* num_work,
                 int64_t assignments, const ExpertGemmPlan& plan, void* y, void* workspace, size_t workspace_bytes,
                 cudaStream_t stream);

}  // namespace fp6serve::cuda
