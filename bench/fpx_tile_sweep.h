// The fused FPx kernel with other CTA shapes than fpx_linear's, for the tile sweep of
// gemm_bench.cc: how the tiles of fpx_gemm.cu were chosen, and how to re-choose them on
// another GPU. FP6 (e3m2) weights with FP16 activations only.
#pragma once

#include <cstddef>
#include <vector>

#include "backend/cuda/fpx_gemm.h"

namespace fp6serve::bench {

struct TileVariant {
  int n, warps, row_tiles_per_warp, stages;
  int rows() const { return warps * row_tiles_per_warp * 16; }
};

const std::vector<TileVariant>& fpx_tile_variants();
// One launch of the fused kernel with tile variant i (l.splits > 1 needs l.workspace).
void launch_fpx_tile_variant(const cuda::FpxLaunch& l, size_t i);

// The small-n (streaming) kernel's candidate tiles (fpx_gemv_kernel.cuh): tokens per CTA,
// warps, units in flight per warp, CTAs per SM its registers are allocated for.
struct GemvVariant {
  int n, warps, depth, min_blocks;
  int rows() const { return warps * 16; }
};
const std::vector<GemvVariant>& fpx_gemv_variants();
void launch_fpx_gemv_variant(const cuda::FpxLaunch& l, size_t i);

}  // namespace fp6serve::bench
