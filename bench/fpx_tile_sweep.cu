#include "backend/cuda/fpx_gemm_kernel.cuh"
#include "bench/fpx_tile_sweep.h"

namespace fp6serve::bench {

namespace {

template <class... T>
struct Variants {
  static const std::vector<TileVariant>& list() {
    static const std::vector<TileVariant> v{{T::kN, T::kWarps, T::kRowTilesPerWarp, T::kStages}...};
    return v;
  }
  static void launch(const cuda::FpxLaunch& l, size_t i) {
    size_t k = 0;
    ((k++ == i ? cuda::launch_fused_tile<3, 2, false, T>(l) : void()), ...);
  }
};

template <int kN, int kWarps, int kRT, int kStages>
using T = cuda::Tile<kN, kWarps, kRT, kStages>;
using All = Variants<T<8, 4, 2, 4>, T<8, 8, 1, 4>, T<8, 8, 2, 4>, T<8, 16, 1, 4>,      //
                     T<16, 8, 1, 4>, T<16, 8, 1, 6>, T<16, 16, 1, 3>, T<16, 4, 2, 4>,  //
                     T<32, 8, 1, 4>, T<32, 8, 1, 3>, T<32, 16, 1, 3>, T<32, 8, 2, 3>,  //
                     T<64, 8, 1, 3>, T<64, 8, 1, 2>, T<64, 16, 1, 2>, T<64, 4, 1, 3>>;

}  // namespace

const std::vector<TileVariant>& fpx_tile_variants() {
  return All::list();
}

void launch_fpx_tile_variant(const cuda::FpxLaunch& l, size_t i) {
  All::launch(l, i);
}

}  // namespace fp6serve::bench
