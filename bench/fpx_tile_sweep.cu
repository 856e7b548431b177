#include "backend/cuda/fpx_gemm_kernel.cuh"
#include "backend/cuda/fpx_gemv_kernel.cuh"
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

template <class... T>
struct GemvVariants {
  static const std::vector<GemvVariant>& list() {
    static const std::vector<GemvVariant> v{{T::kN, T::kWarps, T::kDepth, T::kMinBlocks}...};
    return v;
  }
  static void launch(const cuda::FpxLaunch& l, size_t i) {
    size_t k = 0;
    ((k++ == i ? cuda::launch_gemv_tile<3, 2, false, T>(l) : void()), ...);
  }
};
template <int kN, int kWarps, int kDepth, int kMinBlocks>
using G = cuda::GemvTile<kN, kWarps, kDepth, kMinBlocks>;
using AllGemv = GemvVariants<G<8, 4, 2, 8>, G<8, 8, 2, 4>, G<8, 8, 3, 3>, G<8, 16, 2, 2>, G<16, 8, 2, 3>,
                             G<16, 8, 4, 2>, G<32, 8, 2, 2>, G<32, 4, 2, 3>, G<64, 8, 2, 2>, G<64, 4, 2, 3>>;

}  // namespace

const std::vector<GemvVariant>& fpx_gemv_variants() {
  return AllGemv::list();
}

void launch_fpx_gemv_variant(const cuda::FpxLaunch& l, size_t i) {
  AllGemv::launch(l, i);
}

const std::vector<TileVariant>& fpx_tile_variants() {
  return All::list();
}

void launch_fpx_tile_variant(const cuda::FpxLaunch& l, size_t i) {
  All::launch(l, i);
}

}  // namespace fp6serve::bench
