// FPx linear on the GPU against cuBLAS FP16 (issue #3), in one run on one device:
//   build-device/bench/fp6serve_bench_gemm [--quick | --profile | --no-tiles | --hopper | --gemv | --moe]
// --hopper: the Hopper kernel's tile and split sweep alone (hopper_sweep below); --gemv: the
// small-n kernel's (gemv_sweep); --moe: the grouped expert GEMM of moe.cu on MoE shapes
// against one fpx_linear per expert (moe_sweep).
// --profile: three launches per case on two shapes, nothing timed (for ncu). The tile sweep
// (skipped by --quick and --no-tiles) times every CTA shape of fpx_tile_sweep.cu at its best
// split for N = 1, 16, 32, 64: how fpx_gemm.cu's tiles were chosen. Built with
// -DFP6SERVE_FP6_LLM_DIR=<usyd-fsalab/fp6_llm>/fp6_llm/csrc, it also times FP6-LLM's kernel on
// the same shapes (its best Split-K of a sweep, for N <= 256; its own kernel needs M % 256 == 0
// and K % 64 == 0, which these shapes meet).
// Per shape (out x in) and token count N: cuBLAS FP16 µs, ours µs (the dispatcher's choice),
// the fused kernel and dequantize+cuBLAS separately where both apply (the crossover), speedup,
// our GB/s over the FPx bytes and % of the read bandwidth measured in the same run. Weights
// rotate over more than 3x the L2 (FP16 copies for cuBLAS too), random non-zero data, CUDA
// events around batches of calls, warm-up, medians of batches.
#include <cuda_runtime.h>
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/fpx_gemm.h"
#include "backend/cuda/linear.h"
#include "backend/cuda/moe.h"
#include "bench/fpx_tile_sweep.h"
#include "core/half.h"
#include "fpx/pack.h"

#ifdef FP6SERVE_HAVE_FP6_LLM
#include <cuda_fp16.h>
// FP6-LLM's C++ entry point (fp6_llm/csrc/fp6_linear.cuh), linked from its own source.
cudaError_t fp6_linear_kernel(cudaStream_t stream, const uint4* Weight, const half* Scales, const half* B, half* C,
                              size_t M_Global, size_t N_Global, size_t K_Global, float* Reduction_Workspace,
                              int Split_K);
#endif

using namespace fp6serve;

namespace {

struct Shape {
  const char* name;
  int64_t rows, cols;
};
const Shape kShapes[] = {{"7B qkv", 12288, 4096},      {"7B o", 4096, 4096},     {"7B gate+up", 22016, 4096},
                         {"7B down", 4096, 11008},     {"70B qkv", 10240, 8192}, {"70B o", 8192, 8192},
                         {"70B gate+up", 57344, 8192}, {"70B down", 8192, 28672}};

// Median per-call time in µs of `call(i)` over batches of calls.
double time_us(const std::function<void(int)>& call, int per_batch = 20, int batches = 9) {
  cudaEvent_t a, b;
  FP6_CUDA_CHECK(cudaEventCreate(&a));
  FP6_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < per_batch; ++i) call(i);  // warm-up
  std::vector<float> ms;
  int k = 0;
  for (int r = 0; r < batches; ++r) {
    FP6_CUDA_CHECK(cudaEventRecord(a));
    for (int i = 0; i < per_batch; ++i) call(k++);
    FP6_CUDA_CHECK(cudaEventRecord(b));
    FP6_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    FP6_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t / per_batch);
  }
  std::sort(ms.begin(), ms.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms[ms.size() / 2] * 1000.0;
}

// Random FP16 weights of shape s quantized to FP6 e3m2 on the GPU: `copies` of them, so that
// a rotation over them reads more than the L2 holds.
std::vector<cuda::DeviceFpxWeight> random_fp6(const Shape& s, int copies) {
  std::vector<cuda::DeviceFpxWeight> out;
  for (int i = 0; i < copies; ++i) {
    cuda::DeviceBuffer w(static_cast<size_t>(s.rows * s.cols) * 2);
    cuda::fill_normal(w.data(), s.rows * s.cols, 17 + i, 0.02f, false);
    out.push_back(cuda::quantize_on_device(w.data(), DType::kF16, s.rows, s.cols, fpx::kE3M2, DType::kF16, s.name));
  }
  return out;
}

// Largest |a - b| over the largest |b| of two FP16 outputs on the device.
double relative_error(const cuda::DeviceBuffer& a, const cuda::DeviceBuffer& b, size_t count) {
  std::vector<uint16_t> ha(count), hb(count);
  FP6_CUDA_CHECK(cudaMemcpy(ha.data(), a.data(), count * 2, cudaMemcpyDeviceToHost));
  FP6_CUDA_CHECK(cudaMemcpy(hb.data(), b.data(), count * 2, cudaMemcpyDeviceToHost));
  double err = 0, scale = 0;
  for (size_t i = 0; i < count; ++i) {
    const double x = f16_bits_to_f32(ha[i]), y = f16_bits_to_f32(hb[i]);
    err = std::isfinite(x) ? std::max(err, std::abs(x - y)) : INFINITY;
    scale = std::max(scale, std::abs(y));
  }
  return err / std::max(scale, 1e-30);
}

// One shape's operands for a sweep: FP6 (e3m2) and FP16 copies of random weights, enough of
// each to rotate over more than 3x the L2; X of max_n tokens; an output and a reference.
struct SweepOperands {
  size_t packed_bytes;
  std::vector<cuda::DeviceFpxWeight> fp6;
  std::vector<cuda::DeviceDenseWeight> dense;
  cuda::DeviceBuffer x, y, ref;

  SweepOperands(const Shape& s, int64_t max_n, size_t l2)
      : packed_bytes(fpx::pack_plan(fpx::kE3M2, DType::kF16).packed_bytes(s.rows, s.cols)),
        x(static_cast<size_t>(max_n * s.cols) * 2),
        y(static_cast<size_t>(max_n * s.rows) * 2),
        ref(static_cast<size_t>(max_n * s.rows) * 2) {
    const size_t fp16_bytes = static_cast<size_t>(s.rows * s.cols) * 2;
    fp6 = random_fp6(s, static_cast<int>(std::max<size_t>(2, 3 * l2 / packed_bytes + 1)));
    dense.resize(std::max<size_t>(2, 3 * l2 / fp16_bytes + 1));
    for (size_t i = 0; i < dense.size(); ++i) {
      cuda::DeviceDenseWeight& d = dense[i];
      d.dtype = DType::kF16, d.rows = s.rows, d.cols = s.cols, d.data = cuda::DeviceBuffer(fp16_bytes);
      cuda::fill_normal(d.data.data(), s.rows * s.cols, 17 + static_cast<int>(i), 0.02f, false);
    }
    cuda::fill_normal(x.data(), max_n * s.cols, 5, 1.0f, false);
  }

  // Call i's copy of the weights (the copies rotate over more than 3x the L2).
  const cuda::DeviceFpxWeight& fp6_at(int i) const { return fp6[static_cast<size_t>(i) % fp6.size()]; }
  const cuda::DeviceDenseWeight& dense_at(int i) const { return dense[static_cast<size_t>(i) % dense.size()]; }
  // One zeroed workspace for every path at each of ns, the fused kernels with up to max_split.
  std::pair<cuda::DeviceBuffer, size_t> workspace(const std::vector<int64_t>& ns, int max_split) const {
    size_t bytes = cuda::fpx_dequant_workspace_bytes(fp6[0]);
    for (int64_t n : ns)
      bytes = std::max(
          {bytes, cuda::fpx_linear_workspace_bytes(fp6[0], n), cuda::fpx_fused_workspace_bytes(fp6[0], n, max_split)});
    cuda::DeviceBuffer ws(bytes);
    FP6_CUDA_CHECK(cudaMemset(ws.data(), 0, bytes));
    return {std::move(ws), bytes};
  }
};

// --hopper: every tile of the Hopper kernel (fpx_tile_sweep.cu) at splits 1, 2, 4 (1 from 1024
// tokens), per shape and token count, against cuBLAS FP16 and dequantize + cuBLAS in the same
// run; each variant's output is checked against dequantize + cuBLAS (max error relative to
// the largest output). Prints the per-(shape, N) winners and the geomean of the best.
int hopper_sweep() {
  cudaDeviceProp prop{};
  FP6_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const size_t l2 = static_cast<size_t>(prop.l2CacheSize);
  const std::vector<int64_t> ns = {16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
  const std::vector<cuda::FpxHopperTile>& variants = cuda::fpx_hopper_tiles();
  std::string table =
      "| shape | N | cuBLAS FP16 µs | dequant+cuBLAS µs | small-n kernel µs | fpx_linear µs (its path, tile, split) | "
      "speedup over cuBLAS | best Hopper tile (tokens, consumers, X stages; split) | µs | all tiles µs (split) "
      "|\n|---|---|---|---|---|---|---|---|---|---|\n";
  std::vector<std::vector<double>> best_speedup(ns.size()), ours_speedup(ns.size());
  double worst_err = 0;
  for (const Shape& s : kShapes) {
    SweepOperands o(s, ns.back(), l2);
    auto& [packed_bytes, fp6, dense, x, y, ref] = o;
    auto [ws, ws_bytes] = o.workspace(ns, 8);
    for (size_t ni = 0; ni < ns.size(); ++ni) {
      const int64_t n = ns[ni];
      const int reps = n >= 1024 ? 4 : 10, batches = 5;
      const double t16 = time_us(
          [&](int i) {
            cuda::dense_linear(x.data(), DType::kF16, n, o.dense_at(i), nullptr, y.data(), nullptr, 0, nullptr);
          },
          reps, batches);
      const double tdq = time_us(
          [&](int i) {
            cuda::fpx_linear_dequant_gemm(x.data(), DType::kF16, n, o.fp6_at(i), nullptr, y.data(), ws.data(), ws_bytes,
                                          nullptr);
          },
          reps, batches);
      cuda::fpx_linear_dequant_gemm(x.data(), DType::kF16, n, fp6[0], nullptr, ref.data(), ws.data(), ws_bytes,
                                    nullptr);
      // The small-n (mma.sync) kernel with fpx_gemm.cu's tile for n, at its best split.
      std::string small = "-";
      const std::vector<bench::TileVariant>& small_tiles = bench::fpx_tile_variants();
      for (size_t v = 0; n <= cuda::kFpxGemmMaxTokens && v < small_tiles.size(); ++v) {
        const bench::TileVariant& tv = small_tiles[v];
        const int want = n <= 16 ? 16 : n <= 32 ? 32 : 64;
        if (tv.n != want || tv.warps != 8 || tv.row_tiles_per_warp != 1 || tv.stages != (want == 64 ? 3 : 4)) continue;
        double t_small = 1e30;
        int s_small = 1;
        for (int sp : {1, 2, 4, 8}) {
          const double t = time_us(
              [&](int i) {
                cuda::FpxLaunch l =
                    cuda::fpx_launch_for(o.fp6_at(i), x.data(), n, nullptr, y.data(), ws.data(), nullptr);
                l.splits = sp;
                bench::launch_fpx_tile_variant(l, v);
              },
              reps, batches);
          if (t < t_small) t_small = t, s_small = sp;
        }
        small = fmt::format("{:.1f} ({})", t_small, s_small);
      }
      double best = 1e30;
      std::string best_name, cells;
      for (size_t v = 0; v < variants.size(); ++v) {
        const cuda::FpxHopperTile& tv = variants[v];
        if (tv.tokens > 2 * n && tv.tokens > 64) continue;  // mostly padding
        double vbest = 1e30;
        int vsplit = 1;
        for (int sp : n >= 1024 ? std::vector<int>{1} : std::vector<int>{1, 2, 4}) {
          if (sp > fp6[0].col_units() || cuda::fpx_fused_workspace_bytes(fp6[0], n, sp) > ws_bytes) break;
          auto launch = [&](int i, void* out) {
            cuda::FpxLaunch l = cuda::fpx_launch_for(o.fp6_at(i), x.data(), n, nullptr, out, ws.data(), nullptr);
            l.splits = sp;
            cuda::launch_fpx_gemm_hopper_tile(l, static_cast<int>(v));
          };
          FP6_CUDA_CHECK(cudaMemset(y.data(), 0xff, static_cast<size_t>(n * s.rows) * 2));  // NaN
          launch(0, y.data());
          FP6_CUDA_CHECK(cudaDeviceSynchronize());
          const double err = relative_error(y, ref, static_cast<size_t>(n * s.rows));
          worst_err = std::max(worst_err, err);
          if (!(err < 2e-2)) {
            fmt::print("WRONG: {} n={} tile ({}, {}, {}) split {}: relative error {:.3g}\n", s.name, n, tv.tokens,
                       tv.consumers, tv.x_stages, sp, err);
            continue;
          }
          const double t = time_us([&](int i) { launch(i, y.data()); }, reps, batches);
          if (t < vbest) vbest = t, vsplit = sp;
        }
        if (vbest >= 1e30) continue;
        cells += fmt::format("({},{},{}) {:.1f} ({}); ", tv.tokens, tv.consumers, tv.x_stages, vbest, vsplit);
        if (vbest < best)
          best = vbest, best_name = fmt::format("({}, {}, {}; {})", tv.tokens, tv.consumers, tv.x_stages, vsplit);
      }
      // What fpx_linear does by itself: its path, and on the fused path its plan.
      const double tours = time_us(
          [&](int i) {
            cuda::fpx_linear(x.data(), DType::kF16, n, o.fp6_at(i), nullptr, y.data(), ws.data(), ws_bytes, nullptr);
          },
          reps, batches);
      const cuda::FpxGemmPlan plan =
          cuda::fpx_gemm_plan(fp6[0].plan, fp6[0].row_tiles(), fp6[0].col_units(), fp6[0].cols, n, cuda::sm_count());
      const std::string how =
          cuda::fpx_path(fp6[0], n) == cuda::FpxPath::kDequantGemm ? "dequant+cuBLAS"
          : plan.hopper ? fmt::format("Hopper ({}, {}, {}; {})", variants[static_cast<size_t>(plan.tile)].tokens,
                                      variants[static_cast<size_t>(plan.tile)].consumers,
                                      variants[static_cast<size_t>(plan.tile)].x_stages, cuda::fpx_splits(fp6[0], n))
                        : fmt::format("small-n (split {})", cuda::fpx_splits(fp6[0], n));
      ours_speedup[ni].push_back(t16 / tours);
      best_speedup[ni].push_back(t16 / best);
      table += fmt::format("| {} {}x{} | {} | {:.1f} | {:.1f} | {} | {:.1f} ({}) | {:.2f}x | {} | {:.1f} | {}|\n",
                           s.name, s.rows, s.cols, n, t16, tdq, small, tours, how, t16 / tours, best_name, best, cells);
    }
    fmt::print("{} done\n", s.name);
  }
  std::string summary =
      "| N | fpx_linear over cuBLAS FP16 (geomean) | worst shape | best Hopper tile over cuBLAS FP16 (geomean) "
      "|\n|---|---|---|---|\n";
  auto geomean = [](const std::vector<double>& v) {
    double log_sum = 0;
    for (double x : v) log_sum += std::log(x);
    return std::exp(log_sum / static_cast<double>(v.size()));
  };
  for (size_t ni = 0; ni < ns.size(); ++ni)
    summary +=
        fmt::format("| {} | {:.2f}x | {:.2f}x | {:.2f}x |\n", ns[ni], geomean(ours_speedup[ni]),
                    *std::min_element(ours_speedup[ni].begin(), ours_speedup[ni].end()), geomean(best_speedup[ni]));
  fmt::print("=== table ===\ndevice: {}\nworst relative error of any tile: {:.3g}\n\n{}\n{}=== end ===\n",
             cuda::device_summary(), worst_err, table, summary);
  return 0;
}

// --gemv: the small-n kernel's candidate tiles (fpx_tile_sweep.cu) at splits 1 to 24, per
// shape and N = 1 ... 64, against cuBLAS FP16, fpx_linear (above 16 tokens the Hopper kernel
// on sm_90) and the pipelined mma.sync kernel's tiles (the small-n path before it) in the
// same run; every variant's output is checked against
// dequantize + cuBLAS. GB/s count the packed weight bytes, % is of the read bandwidth measured
// at the start of the run. Prints per (shape, N) the winners, per tile its geomean at its best
// split, and per N the geomeans.
int gemv_sweep() {
  cudaDeviceProp prop{};
  FP6_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const size_t l2 = static_cast<size_t>(prop.l2CacheSize);
  const double read_gbs = cuda::read_bandwidth_gbs();
  const std::vector<int64_t> ns = {1, 4, 8, 16, 32, 64};
  const std::vector<int> splits = {1, 2, 3, 4, 6, 8, 12, 16, 24};
  auto token_tile = [](int64_t n) { return n <= 8 ? 8 : n <= 16 ? 16 : n <= 32 ? 32 : 64; };
  const std::vector<bench::GemvVariant>& variants = bench::fpx_gemv_variants();
  const std::vector<bench::TileVariant>& old_tiles = bench::fpx_tile_variants();
  std::string table =
      "| shape | N | cuBLAS FP16 µs | pipelined kernel µs (tile; split) | fpx_linear µs (split) | % of read BW | "
      "speedup over cuBLAS | best tile (tokens, warps, depth, CTAs/SM; split) | µs | % of read BW | all tiles µs "
      "(split) |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
  std::vector<std::vector<double>> ours(ns.size()), best_tile(ns.size()), old_best(ns.size()), ours_bw(ns.size());
  std::vector<std::vector<std::vector<double>>> per_tile(ns.size(), std::vector<std::vector<double>>(variants.size()));
  double worst_err = 0;
  for (const Shape& s : kShapes) {
    SweepOperands o(s, ns.back(), l2);
    auto& [packed_bytes, fp6, dense, x, y, ref] = o;
    auto [ws, ws_bytes] = o.workspace(ns, splits.back());
    auto usable = [&](int sp, int64_t rows_per_cta) {
      return sp <= fp6[0].col_units() &&
             static_cast<size_t>((s.rows + rows_per_cta - 1) / rows_per_cta) * sizeof(int) <= cuda::kFpxCounterBytes;
    };
    for (size_t ni = 0; ni < ns.size(); ++ni) {
      const int64_t n = ns[ni];
      const int reps = 10, batches = 5;
      const double t16 = time_us(
          [&](int i) {
            cuda::dense_linear(x.data(), DType::kF16, n, o.dense_at(i), nullptr, y.data(), nullptr, 0, nullptr);
          },
          reps, batches);
      cuda::fpx_linear_dequant_gemm(x.data(), DType::kF16, n, fp6[0], nullptr, ref.data(), ws.data(), ws_bytes,
                                    nullptr);
      // A variant's best time over the splits, its output checked first.
      auto sweep = [&](const std::string& name, int64_t rows_per_cta, const std::function<void(cuda::FpxLaunch&)>& run,
                       int& best_split) {
        double best = 1e30;
        for (int sp : splits) {
          if (!usable(sp, rows_per_cta)) break;
          auto launch = [&](int i, void* out) {
            cuda::FpxLaunch l = cuda::fpx_launch_for(o.fp6_at(i), x.data(), n, nullptr, out, ws.data(), nullptr);
            l.splits = sp;
            run(l);
          };
          FP6_CUDA_CHECK(cudaMemset(y.data(), 0xff, static_cast<size_t>(n * s.rows) * 2));  // NaN
          launch(0, y.data());
          FP6_CUDA_CHECK(cudaDeviceSynchronize());
          const double err = relative_error(y, ref, static_cast<size_t>(n * s.rows));
          worst_err = std::max(worst_err, err);
          if (!(err < 2e-2)) {
            fmt::print("WRONG: {} n={} {} split {}: relative error {:.3g}\n", s.name, n, name, sp, err);
            continue;
          }
          const double t = time_us([&](int i) { launch(i, y.data()); }, reps, batches);
          if (t < best) best = t, best_split = sp;
        }
        return best;
      };
      double old_t = 1e30;
      std::string old_name;
      for (size_t v = 0; v < old_tiles.size(); ++v) {
        const bench::TileVariant& tv = old_tiles[v];
        if (tv.n != token_tile(n)) continue;
        int sp = 1;
        const std::string name = fmt::format("({}, {}, {}, {})", tv.n, tv.warps, tv.row_tiles_per_warp, tv.stages);
        const double t = sweep(
            name, tv.rows(), [&](cuda::FpxLaunch& l) { bench::launch_fpx_tile_variant(l, v); }, sp);
        if (t < old_t) old_t = t, old_name = fmt::format("{}; {}", name, sp);
      }
      double best = 1e30;
      std::string best_name, cells;
      for (size_t v = 0; v < variants.size(); ++v) {
        const bench::GemvVariant& gv = variants[v];
        if (gv.n != token_tile(n)) continue;
        int sp = 1;
        const std::string name = fmt::format("({}, {}, {}, {})", gv.n, gv.warps, gv.depth, gv.min_blocks);
        const double t = sweep(
            name, gv.rows(), [&](cuda::FpxLaunch& l) { bench::launch_fpx_gemv_variant(l, v); }, sp);
        if (t >= 1e30) continue;
        per_tile[ni][v].push_back(t16 / t);
        cells += fmt::format("{} {:.1f} ({}); ", name, t, sp);
        if (t < best) best = t, best_name = fmt::format("{}; {}", name, sp);
      }
      const double tours = time_us(
          [&](int i) {
            cuda::fpx_linear(x.data(), DType::kF16, n, o.fp6_at(i), nullptr, y.data(), ws.data(), ws_bytes, nullptr);
          },
          reps, batches);
      auto pct = [&](double us) { return 100.0 * static_cast<double>(packed_bytes) / us / 1e3 / read_gbs; };
      ours[ni].push_back(t16 / tours);
      ours_bw[ni].push_back(pct(tours));
      best_tile[ni].push_back(t16 / best);
      old_best[ni].push_back(t16 / old_t);
      table += fmt::format(
          "| {} {}x{} | {} | {:.1f} | {:.1f} ({}) | {:.1f} ({}) | {:.0f}% | {:.2f}x | {} | {:.1f} | "
          "{:.0f}% | {}|\n",
          s.name, s.rows, s.cols, n, t16, old_t, old_name, tours, cuda::fpx_splits(fp6[0], n), pct(tours), t16 / tours,
          best_name, best, pct(best), cells);
    }
    fmt::print("{} done\n", s.name);
  }
  auto geomean = [](const std::vector<double>& v) {
    if (v.empty()) return 0.0;
    double log_sum = 0;
    for (double x : v) log_sum += std::log(x);
    return std::exp(log_sum / static_cast<double>(v.size()));
  };
  auto mean = [](const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return v.empty() ? 0.0 : sum / static_cast<double>(v.size());
  };
  std::string summary =
      "| N | fpx_linear over cuBLAS FP16 (geomean) | worst shape | fpx_linear mean % of read BW | best tile over "
      "cuBLAS (geomean) | pipelined kernel over cuBLAS (geomean) |\n|---|---|---|---|---|---|\n";
  for (size_t ni = 0; ni < ns.size(); ++ni)
    summary += fmt::format("| {} | {:.2f}x | {:.2f}x | {:.0f}% | {:.2f}x | {:.2f}x |\n", ns[ni], geomean(ours[ni]),
                           *std::min_element(ours[ni].begin(), ours[ni].end()), mean(ours_bw[ni]),
                           geomean(best_tile[ni]), geomean(old_best[ni]));
  std::string tiles =
      "| N | tile (tokens, warps, depth, CTAs/SM) | geomean over cuBLAS at its best split |\n|---|---|---|\n";
  for (size_t ni = 0; ni < ns.size(); ++ni)
    for (size_t v = 0; v < variants.size(); ++v)
      if (!per_tile[ni][v].empty())
        tiles += fmt::format("| {} | ({}, {}, {}, {}) | {:.2f}x |\n", ns[ni], variants[v].n, variants[v].warps,
                             variants[v].depth, variants[v].min_blocks, geomean(per_tile[ni][v]));
  fmt::print(
      "=== table ===\ndevice: {}\nread bandwidth {:.0f} GB/s; worst relative error of any variant: "
      "{:.3g}\n\n{}\n{}\n{}=== end ===\n",
      cuda::device_summary(), read_gbs, worst_err, table, summary, tiles);
  return 0;
}

// --moe: the grouped expert GEMM of moe.cu (issue #17: >= 80% of the read bandwidth at 1-8
// tokens per expert), FP6 e3m2, on Mixtral-8x7B's experts (8 of hidden 4096, intermediate
// 14336, top-2) and Qwen3-30B-A3B's (128 of hidden 2048, intermediate 768, top-8), laid out as
// the CUDA backend lays them out (gate_up [2 x intermediate, hidden], down [hidden,
// intermediate]). Per batch of tokens routed top-k, randomly (k distinct experts per token,
// uniform, seeded) or balanced (every expert the same count), the plan, moe_group's work list
// and the expert_gemm launches exactly as CudaBackend::moe makes them (gate_up, down, and the
// two back to back), against the same experts one fpx_linear call per active expert. Bytes
// are the active experts' packed weights and scales (each read once); % is of the read
// bandwidth measured at the start of the run. Each grouped output is checked against the
// per-expert fpx_linear outputs of the same run (max error over the largest output; the K
// splits differ, so FP16 rounding apart). Expert sets rotate over copies that hold more than
// 3x the L2 at the fewest active experts (one token: top-k of them).
struct MoeModel {
  const char* name;
  int64_t hidden, inter, experts, top_k;
};
const MoeModel kMoeModels[] = {{"Mixtral-8x7B", 4096, 14336, 8, 2}, {"Qwen3-30B-A3B", 2048, 768, 128, 8}};

// One kind of one model's experts: `copies` of them both grouped (one buffer, as moe.h's
// DeviceExperts) and as one fpx_linear weight per expert, the same packed bytes.
struct MoeExperts {
  std::string name;
  std::vector<cuda::DeviceExperts> grouped;
  std::vector<std::vector<cuda::DeviceFpxWeight>> single;
  int64_t bytes_per_expert = 0;  // packed units + scales

  MoeExperts(const std::string& n, int64_t experts, int64_t rows, int64_t cols, int64_t min_active, size_t l2)
      : name(n) {
    std::vector<cuda::DeviceFpxWeight> first;
    cuda::DeviceBuffer values(static_cast<size_t>(rows * cols) * 2);
    for (int64_t e = 0; e < experts; ++e) {
      cuda::fill_normal(values.data(), rows * cols, 17 + static_cast<uint64_t>(e), 0.02f, false);
      first.push_back(cuda::quantize_on_device(values.data(), DType::kF16, rows, cols, fpx::kE3M2, DType::kF16,
                                               fmt::format("{} expert {}", n, e)));
    }
    const size_t data_bytes = first[0].data.size(), scale_bytes = first[0].scales.size();
    bytes_per_expert = static_cast<int64_t>(data_bytes + scale_bytes);
    const int copies =
        static_cast<int>(std::max<size_t>(2, 3 * l2 / static_cast<size_t>(min_active * bytes_per_expert) + 1));
    auto d2d = [](void* dst, const void* src, size_t bytes) {
      FP6_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
    };
    for (int c = 0; c < copies; ++c) {
      cuda::DeviceExperts& g = grouped.emplace_back();
      g.num_experts = experts, g.rows = rows, g.cols = cols, g.plan = first[0].plan;
      FP6_CUDA_REQUIRE(static_cast<size_t>(g.expert_bytes()) == data_bytes &&
                           scale_bytes == static_cast<size_t>(g.row_tiles() * fpx::kUnitRows) * sizeof(float),
                       kInternal, "--moe: the grouped layout differs from fpx_linear's weight");
      g.data = cuda::DeviceBuffer(data_bytes * static_cast<size_t>(experts));
      g.scales = cuda::DeviceBuffer(scale_bytes * static_cast<size_t>(experts));
      std::vector<cuda::DeviceFpxWeight>& s = single.emplace_back();
      for (int64_t e = 0; e < experts; ++e) {
        const cuda::DeviceFpxWeight& src = first[static_cast<size_t>(e)];
        d2d(g.data.as<uint8_t>() + e * data_bytes, src.data.data(), data_bytes);
        d2d(g.scales.as<uint8_t>() + e * scale_bytes, src.scales.data(), scale_bytes);
        if (c == 0) continue;
        cuda::DeviceFpxWeight& w = s.emplace_back();
        w.plan = src.plan, w.rows = rows, w.cols = cols;
        w.data = cuda::DeviceBuffer(data_bytes);
        w.scales = cuda::DeviceBuffer(scale_bytes);
        d2d(w.data.data(), src.data.data(), data_bytes);
        d2d(w.scales.data(), src.scales.data(), scale_bytes);
      }
    }
    single[0] = std::move(first);
  }
};

// Token t's choices ids[t * top_k + s]: k distinct experts uniformly at random (seeded), or
// balanced, (t * top_k + s) mod experts (every expert tokens * top_k / experts of them).
std::vector<int32_t> moe_routing(int64_t tokens, int64_t experts, int64_t top_k, bool balanced, uint64_t seed) {
  std::vector<int32_t> ids(static_cast<size_t>(tokens * top_k));
  std::mt19937_64 rng(seed);
  std::vector<int32_t> perm(static_cast<size_t>(experts));
  for (int64_t t = 0; t < tokens; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    for (int64_t s = 0; s < top_k; ++s) {
      int64_t pick = (t * top_k + s) % experts;
      if (!balanced) {
        std::swap(perm[static_cast<size_t>(s)],
                  perm[static_cast<size_t>(s + static_cast<int64_t>(rng() % static_cast<uint64_t>(experts - s)))]);
        pick = perm[static_cast<size_t>(s)];
      }
      ids[static_cast<size_t>(t * top_k + s)] = static_cast<int32_t>(pick);
    }
  }
  return ids;
}

int moe_sweep() {
  cudaDeviceProp prop{};
  FP6_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const size_t l2 = static_cast<size_t>(prop.l2CacheSize);
  const double read_gbs = cuda::read_bandwidth_gbs();
  const std::vector<int64_t> per_expert = {1, 2, 4, 8};  // tokens per expert, over all experts
  std::string table =
      "| model | routing | tokens | tokens per expert | active experts | tokens per active expert (mean, max) | "
      "linear (rows x cols) | tile; split; items | grouped µs | MB read | GB/s | % of read BW | per-expert "
      "fpx_linear µs (launches) | grouped speedup | max error |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
      "---|---|\n";
  double worst_err = 0;
  int target_rows = 0, target_met = 0;
  double worst_target = 1e30;
  bool wrong = false;
  std::string models;
  for (const MoeModel& m : kMoeModels) {
    models += fmt::format("{}{} {} of hidden {}, intermediate {}, top-{}", models.empty() ? "" : "; ", m.name,
                          m.experts, m.hidden, m.inter, m.top_k);
    const int64_t e_count = m.experts, k = m.top_k;
    // (tokens, balanced): one token (decode at batch 1), then 1, 2, 4, 8 tokens per expert.
    std::vector<std::pair<int64_t, bool>> cases = {{1, false}};
    for (int64_t t : per_expert)
      for (bool balanced : {false, true}) cases.push_back({t * e_count / k, balanced});
    int64_t max_tokens = 0;
    for (const auto& c : cases) max_tokens = std::max(max_tokens, c.first);
    const int64_t max_rows = max_tokens * k;
    std::vector<MoeExperts> kinds;
    kinds.emplace_back("gate_up", e_count, 2 * m.inter, m.hidden, k, l2);
    kinds.emplace_back("down", e_count, m.hidden, m.inter, k, l2);
    const int64_t max_in = std::max(m.hidden, m.inter), max_out = std::max(2 * m.inter, m.hidden);
    cuda::DeviceBuffer x(static_cast<size_t>(max_rows * max_in) * 2), y(static_cast<size_t>(max_rows * max_out) * 2),
        ref(static_cast<size_t>(max_rows * max_out) * 2);
    cuda::fill_normal(x.data(), max_rows * max_in, 5, 1.0f, false);
    size_t ws_bytes = 0;
    for (const auto& c : cases)
      for (const MoeExperts& kind : kinds)
        ws_bytes = std::max({ws_bytes,
                             cuda::expert_gemm_workspace_bytes(kind.grouped[0], c.first * k,
                                                               cuda::plan_expert_gemm(kind.grouped[0], c.first, k)),
                             cuda::fpx_linear_workspace_bytes(kind.single[0][0], c.first)});
    cuda::DeviceBuffer ws(ws_bytes);
    FP6_CUDA_CHECK(cudaMemset(ws.data(), 0, ws_bytes));  // the workspace contract
    cuda::DeviceBuffer ids_d(static_cast<size_t>(max_rows) * 4), offsets_d(static_cast<size_t>(e_count + 1) * 4),
        order_d(static_cast<size_t>(max_rows) * 4), row_of_d(static_cast<size_t>(max_rows) * 4), num_work_d(4);
    for (const auto& [tokens, balanced] : cases) {
      const int64_t rows = tokens * k;
      const std::vector<int32_t> ids = moe_routing(tokens, e_count, k, balanced, 1000 + static_cast<uint64_t>(tokens));
      ids_d.upload(ids.data(), ids.size() * 4);
      // The grouping and work list as CudaBackend::moe makes them.
      const int block = cuda::expert_gemm_block_tokens(tokens, k, e_count);
      const int64_t max_items = cuda::moe_max_work_items(rows, e_count, block);
      cuda::DeviceBuffer work_d(static_cast<size_t>(3 * max_items) * 4);
      cuda::moe_group(ids_d.as<int32_t>(), rows, e_count, block, offsets_d.as<int32_t>(), order_d.as<int32_t>(),
                      row_of_d.as<int32_t>(), work_d.as<int32_t>(), num_work_d.as<int32_t>(), nullptr);
      std::vector<int32_t> offsets(static_cast<size_t>(e_count + 1));
      int32_t items = 0;
      offsets_d.download(offsets.data(), offsets.size() * 4);
      num_work_d.download(&items, 4);
      int64_t active = 0, most = 0;
      for (int64_t e = 0; e < e_count; ++e) {
        const int64_t count = offsets[static_cast<size_t>(e + 1)] - offsets[static_cast<size_t>(e)];
        active += count > 0;
        most = std::max(most, count);
      }
      // Grouped: one expert_gemm per kind, its plan from the token count, as the model calls it.
      auto grouped = [&](const MoeExperts& kind, int i, void* out) {
        const cuda::DeviceExperts& w = kind.grouped[static_cast<size_t>(i) % kind.grouped.size()];
        cuda::expert_gemm(x.data(), DType::kF16, w, work_d.as<int32_t>(), num_work_d.as<int32_t>(), rows,
                          cuda::plan_expert_gemm(w, tokens, k), out, ws.data(), ws_bytes, nullptr);
      };
      // The baseline: one fpx_linear per expert with tokens, on its rows of the grouped order.
      auto each = [&](const MoeExperts& kind, int i, void* out) {
        const std::vector<cuda::DeviceFpxWeight>& w = kind.single[static_cast<size_t>(i) % kind.single.size()];
        const int64_t in = w[0].cols, out_cols = w[0].rows;
        for (int64_t e = 0; e < e_count; ++e) {
          const int64_t r0 = offsets[static_cast<size_t>(e)], count = offsets[static_cast<size_t>(e + 1)] - r0;
          if (count > 0)
            cuda::fpx_linear(x.as<uint8_t>() + r0 * in * 2, DType::kF16, count, w[static_cast<size_t>(e)], nullptr,
                             static_cast<uint8_t*>(out) + r0 * out_cols * 2, ws.data(), ws_bytes, nullptr);
        }
      };
      const bool in_target = rows % e_count == 0 && rows / e_count <= 8;  // 1-8 tokens per expert
      double bytes_sum = 0;
      // A row; one_launch: a grouped GEMM alone (counted for the target).
      auto add_row = [&](const std::string& linear, const std::string& plan, double tg, double te, int64_t launches,
                         double bytes, const std::string& err, bool one_launch) {
        const double gbs = bytes / tg / 1e3, pct = 100.0 * gbs / read_gbs;
        table += fmt::format(
            "| {} | {} | {} | {:.3g} | {} | {:.2f}, {} | {} | {} | {:.1f} | {:.1f} | {:.0f} | {:.0f}% | {:.1f} ({}) | "
            "{:.2f}x | {} |\n",
            m.name, balanced ? "balanced" : "random", tokens, static_cast<double>(rows) / static_cast<double>(e_count),
            active, static_cast<double>(rows) / static_cast<double>(active), most, linear, plan, tg, bytes / 1e6, gbs,
            pct, te, launches, te / tg, err);
        if (in_target && one_launch) {
          ++target_rows, target_met += pct >= 80.0;
          worst_target = std::min(worst_target, pct);
        }
      };
      for (const MoeExperts& kind : kinds) {
        const cuda::DeviceExperts& w0 = kind.grouped[0];
        const cuda::ExpertGemmPlan plan = cuda::plan_expert_gemm(w0, tokens, k);
        FP6_CUDA_REQUIRE(plan.block_tokens == block && plan.max_items == max_items, kInternal,
                         "--moe: the plan's token tile differs from the work list's");
        const size_t count = static_cast<size_t>(rows * w0.rows);
        FP6_CUDA_CHECK(cudaMemset(y.data(), 0xff, count * 2));  // NaN
        FP6_CUDA_CHECK(cudaMemset(ref.data(), 0xff, count * 2));
        grouped(kind, 0, y.data());
        each(kind, 0, ref.data());
        FP6_CUDA_CHECK(cudaDeviceSynchronize());
        const double err = relative_error(y, ref, count);
        worst_err = std::max(worst_err, err);
        if (!(err < 2e-3)) {
          fmt::print("WRONG: {} {} {} tokens ({}): grouped vs per-expert relative error {:.3g}\n", m.name, kind.name,
                     tokens, balanced ? "balanced" : "random", err);
          wrong = true;
        }
        const double tg = time_us([&](int i) { grouped(kind, i, y.data()); });
        const double te = time_us([&](int i) { each(kind, i, ref.data()); });
        const double bytes = static_cast<double>(active * kind.bytes_per_expert);
        bytes_sum += bytes;
        add_row(fmt::format("{} {}x{}", kind.name, w0.rows, w0.cols),
                fmt::format("{}; {}; {} of {}", plan.block_tokens, plan.splits, items, max_items), tg, te, active,
                bytes, fmt::format("{:.2g}", err), true);
      }
      // The two back to back (without the silu between them), as one layer's grouped GEMMs.
      const double tg = time_us([&](int i) {
        grouped(kinds[0], i, y.data());
        grouped(kinds[1], i, y.data());
      });
      const double te = time_us([&](int i) {
        each(kinds[0], i, ref.data());
        each(kinds[1], i, ref.data());
      });
      add_row("gate_up + down", "-", tg, te, 2 * active, bytes_sum, "-", false);
      fmt::print("{} {} tokens ({}) done\n", m.name, tokens, balanced ? "balanced" : "random");
    }
  }
  fmt::print(
      "=== table ===\ndevice: {}\nFP6 e3m2 experts: {}\nread bandwidth {:.0f} GB/s; worst grouped vs per-expert "
      "relative error: {:.3g}\n"
      "target (a grouped GEMM >= 80% of the read bandwidth at 1-8 tokens per expert): {} of {} launches, the "
      "worst {:.0f}%\n\n{}=== end ===\n",
      cuda::device_summary(), models, read_gbs, worst_err, target_met, target_rows, worst_target, table);
  return wrong ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  cuda::require_device();
  if (mode == "--hopper") return hopper_sweep();
  if (mode == "--gemv") return gemv_sweep();
  if (mode == "--moe") return moe_sweep();
  const bool quick = mode == "--quick", profile = mode == "--profile",
             tiles = !quick && !profile && mode != "--no-tiles";
  cudaDeviceProp prop{};
  FP6_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const size_t l2 = static_cast<size_t>(prop.l2CacheSize);
  fmt::print("device: {}\n", cuda::device_summary());

  // Bandwidth ceilings of this device, now.
  const size_t big = size_t{2} << 30;
  cuda::DeviceBuffer src(big), dst(big);
  FP6_CUDA_CHECK(cudaMemset(src.data(), 1, big));
  const double copy_us = time_us(
      [&](int) { FP6_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), big, cudaMemcpyDeviceToDevice)); }, 3, 5);
  const double copy_gbs = 2.0 * big / copy_us / 1e3, read_gbs = cuda::read_bandwidth_gbs();
  fmt::print("D2D copy {:.0f} GB/s (read+write), read {:.0f} GB/s\n", copy_gbs, read_gbs);
  src = cuda::DeviceBuffer();
  dst = cuda::DeviceBuffer();

  std::vector<int64_t> ns = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
  constexpr int64_t kMaxFusedN = 4096;
  const std::vector<int> kSweep = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32};
  std::string sweep =
      "| shape | N | heuristic split | µs | best split | µs | best/heuristic |\n|---|---|---|---|---|---|---|\n";
  if (quick) ns = {1, 16, 64, 256};
  if (profile) ns = {16, 64, 128, 256, 1024};
  const std::vector<bench::TileVariant>& variants = bench::fpx_tile_variants();
  // Tile sweep: per variant, cuBLAS time / the variant's best time, per shape.
  std::vector<std::vector<double>> tile_speedups(variants.size());
  std::string tile_table =
      "| N | tile (tokens, warps, row tiles per warp, stages) | rows per CTA | per shape: best µs (split) | geomean "
      "speedup over cuBLAS FP16 |\n|---|---|---|---|---|\n";
  std::vector<std::string> tile_cells(variants.size());
  std::string dequant_table =
      "| shape | rows dequantized | µs | % of copy roofline (packed read + 16-bit write) |\n|---|---|---|---|\n";
  std::vector<double> ref_speedups[12];  // FP6-LLM over cuBLAS, per N index
  std::string table =
      "| shape | N | cuBLAS FP16 µs | FP6 µs | path | speedup | FP6 GB/s | % of read BW | fused µs (split) | "
      "dequant+cuBLAS µs | FP6-LLM µs (split) |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n";
  std::vector<std::vector<double>> speedups(ns.size());
  for (const Shape& s : kShapes) {
    if (profile && std::string(s.name) != "7B o" && std::string(s.name) != "70B gate+up") continue;
    // Random FP16 weights, quantized to FP6 on the GPU; copies rotate over > 3x L2.
    const size_t fp16_bytes = static_cast<size_t>(s.rows * s.cols) * 2;
    const size_t packed_bytes = fpx::pack_plan(fpx::kE3M2, DType::kF16).packed_bytes(s.rows, s.cols);
    const int copies16 = static_cast<int>(std::max<size_t>(2, 3 * l2 / fp16_bytes + 1));
    const int copies6 = static_cast<int>(std::max<size_t>(2, 3 * l2 / packed_bytes + 1));
    std::vector<cuda::DeviceDenseWeight> dense(static_cast<size_t>(copies16));
    std::vector<cuda::DeviceFpxWeight> fp6(static_cast<size_t>(copies6));
    for (int i = 0; i < std::max(copies16, copies6); ++i) {
      cuda::DeviceBuffer w(fp16_bytes);
      cuda::fill_normal(w.data(), s.rows * s.cols, 17 + i, 0.02f, false);
      if (i < copies6)
        fp6[static_cast<size_t>(i)] =
            cuda::quantize_on_device(w.data(), DType::kF16, s.rows, s.cols, fpx::kE3M2, DType::kF16, s.name);
      if (i < copies16) {
        cuda::DeviceDenseWeight& d = dense[static_cast<size_t>(i)];
        d.dtype = DType::kF16;
        d.rows = s.rows;
        d.cols = s.cols;
        d.data = std::move(w);
      }
    }
    const int64_t max_n = ns.back();
    cuda::DeviceBuffer x(static_cast<size_t>(max_n * s.cols) * 2), y(static_cast<size_t>(max_n * s.rows) * 2);
    cuda::fill_normal(x.data(), max_n * s.cols, 5, 1.0f, false);
    size_t ws_bytes = cuda::fpx_dequant_workspace_bytes(fp6[0]);
    for (int64_t n : ns)
      ws_bytes = std::max({ws_bytes, cuda::fpx_linear_workspace_bytes(fp6[0], n),
                           cuda::fpx_fused_workspace_bytes(fp6[0], n, kSweep.back())});
    cuda::DeviceBuffer ws(ws_bytes);
    FP6_CUDA_CHECK(cudaMemset(ws.data(), 0, ws_bytes));  // the workspace contract
    auto fp6_at = [&](int i) -> const cuda::DeviceFpxWeight& { return fp6[static_cast<size_t>(i % copies6)]; };
#ifdef FP6SERVE_HAVE_FP6_LLM
    // FP6-LLM's operands: random 6-bit codes (any pattern is a finite value), FP16 scales.
    std::vector<cuda::DeviceBuffer> ref_w;
    for (int i = 0; i < copies6; ++i) {
      ref_w.emplace_back(static_cast<size_t>(s.rows * s.cols) * 6 / 8);
      cuda::fill_normal(ref_w.back().data(), static_cast<int64_t>(ref_w.back().size() / 2), 99 + i, 1.0f, false);
    }
    cuda::DeviceBuffer ref_scales(static_cast<size_t>(s.rows) * 2);
    cuda::fill_normal(ref_scales.data(), s.rows, 7, 0.02f, false);
    cuda::DeviceBuffer ref_ws(static_cast<size_t>(16 * s.rows * 256) * 4);
#endif
    for (size_t ni = 0; ni < ns.size(); ++ni) {
      const int64_t n = ns[ni];
      const int reps = n >= 1024 ? 5 : 20;
      if (profile) {
        for (int i = 0; i < 3; ++i)  // the fused kernels (mma.sync; the Hopper kernel above 64 tokens)
          cuda::fpx_linear_fused(x.data(), DType::kF16, n, fp6_at(i), nullptr, y.data(), ws.data(), ws_bytes, 0,
                                 nullptr);
        FP6_CUDA_CHECK(cudaDeviceSynchronize());
        continue;
      }
      std::string ref_cell = "n/a";
      double ref_us = 0;  // FP6-LLM's best time, when built with it
#ifdef FP6SERVE_HAVE_FP6_LLM
      {
        double best = 1e30;
        int best_s = 1;
        for (int sp : n <= 256 ? std::vector<int>{1, 2, 3, 4, 6, 8, 12, 16} : std::vector<int>{1}) {
          const double t = time_us(
              [&](int i) {
                FP6_CUDA_CHECK(fp6_linear_kernel(nullptr, ref_w[static_cast<size_t>(i % copies6)].as<uint4>(),
                                                 ref_scales.as<half>(), x.as<half>(), y.as<half>(), s.rows, n, s.cols,
                                                 ref_ws.as<float>(), sp));
              },
              reps);
          if (t < best) best = t, best_s = sp;
        }
        ref_cell = fmt::format("{:.1f} (s={})", best, best_s);
        ref_us = best;
      }
#endif
      const double t16 = time_us(
          [&](int i) {
            cuda::dense_linear(x.data(), DType::kF16, n, dense[static_cast<size_t>(i % copies16)], nullptr, y.data(),
                               nullptr, 0, nullptr);
          },
          reps);
      const double t6 = time_us(
          [&](int i) {
            cuda::fpx_linear(x.data(), DType::kF16, n, fp6_at(i), nullptr, y.data(), ws.data(), ws_bytes, nullptr);
          },
          reps);
      std::string fused, dq;
      if (n <= kMaxFusedN)
        fused = fmt::format("{:.1f}", time_us(
                                          [&](int i) {
                                            cuda::fpx_linear_fused(x.data(), DType::kF16, n, fp6_at(i), nullptr,
                                                                   y.data(), ws.data(), ws_bytes, 0, nullptr);
                                          },
                                          reps));
      if (n == ns.front()) {  // the dequantization of the large-n path alone, once per shape
        const int64_t tiles = std::min<int64_t>(
            fp6[0].row_tiles(),
            static_cast<int64_t>((cuda::fpx_dequant_workspace_bytes(fp6[0]) - cuda::kFpxCounterBytes) /
                                 (s.cols * 2 * 16)));
        const double tdq = time_us(
            [&](int i) {
              const cuda::FpxLaunch l =
                  cuda::fpx_launch_for(fp6_at(i), x.data(), n, nullptr, y.data(), ws.data(), nullptr);
              cuda::launch_fpx_dequant(l, 0, tiles, ws.as<uint8_t>() + cuda::kFpxCounterBytes);
            },
            reps);
        const double bytes = tiles * 16 * s.cols * (2.0 + static_cast<double>(packed_bytes) / (s.rows * s.cols));
        dequant_table += fmt::format("| {} | {} | {:.1f} | {:.0f}% |\n", s.name, tiles * 16, tdq,
                                     100.0 * bytes / tdq / 1e3 / copy_gbs);
      }
      if (n >= 16)  // the large-n path too, to locate the crossover
        dq = fmt::format("{:.1f}", time_us(
                                       [&](int i) {
                                         cuda::fpx_linear_dequant_gemm(x.data(), DType::kF16, n, fp6_at(i), nullptr,
                                                                       y.data(), ws.data(), ws_bytes, nullptr);
                                       },
                                       reps));
      const double gbs = packed_bytes / t6 / 1e3;
      speedups[ni].push_back(t16 / t6);
      if (ref_us > 0) ref_speedups[ni].push_back(t16 / ref_us);
      table += fmt::format(
          "| {} {}x{} | {} | {:.1f} | {:.1f} | {} | {:.2f}x | {:.0f} | {:.0f}% | {} (s={}) | {} | {} |\n", s.name,
          s.rows, s.cols, n, t16, t6, cuda::fpx_path(fp6[0], n) == cuda::FpxPath::kFused ? "fused" : "dequant+cuBLAS",
          t16 / t6, gbs, 100.0 * gbs / read_gbs, fused, cuda::fpx_splits(fp6[0], n), dq, ref_cell);
      // Split-K sweep of the fused kernel: the heuristic against the best split found here.
      if (n == 1 || n == 16 || n == 64) {
        double best = 1e30;
        int best_s = 1;
        for (int sp : kSweep) {
          if (sp > fp6[0].col_units()) break;
          const double t = time_us(
              [&](int i) {
                cuda::fpx_linear_fused(x.data(), DType::kF16, n, fp6_at(i), nullptr, y.data(), ws.data(), ws_bytes, sp,
                                       nullptr);
              },
              reps);
          if (t < best) best = t, best_s = sp;
        }
        const double heur = time_us(
            [&](int i) {
              cuda::fpx_linear_fused(x.data(), DType::kF16, n, fp6_at(i), nullptr, y.data(), ws.data(), ws_bytes, 0,
                                     nullptr);
            },
            reps);
        sweep += fmt::format("| {} | {} | {} | {:.1f} | {} | {:.1f} | {:.0f}% |\n", s.name, n,
                             cuda::fpx_splits(fp6[0], n), heur, best_s, best, 100.0 * best / heur);
      }
    }
    // Tile sweep: each CTA shape at its best split, for N equal to its token tile (1 for 8).
    for (size_t v = 0; tiles && v < variants.size(); ++v) {
      const bench::TileVariant& tv = variants[v];
      const int64_t n = tv.n == 8 ? 1 : tv.n;
      const double t16 = time_us(
          [&](int i) {
            cuda::dense_linear(x.data(), DType::kF16, n, dense[static_cast<size_t>(i % copies16)], nullptr, y.data(),
                               nullptr, 0, nullptr);
          },
          10, 5);
      double best = 1e30;
      int best_s = 1;
      for (int sp : kSweep) {
        if (sp > fp6[0].col_units() || cuda::fpx_fused_workspace_bytes(fp6[0], n, sp) > ws_bytes ||
            static_cast<size_t>((s.rows + tv.rows() - 1) / tv.rows()) * sizeof(int) > cuda::kFpxCounterBytes)
          break;
        const double t = time_us(
            [&](int i) {
              cuda::FpxLaunch l = cuda::fpx_launch_for(fp6_at(i), x.data(), n, nullptr, y.data(), ws.data(), nullptr);
              l.splits = sp;
              bench::launch_fpx_tile_variant(l, v);
            },
            10, 5);
        if (t < best) best = t, best_s = sp;
      }
      tile_speedups[v].push_back(t16 / best);
      tile_cells[v] += fmt::format("{} {:.1f} ({}); ", s.name, best, best_s);
    }
    fmt::print("{} done\n", s.name);
  }
  if (profile) return 0;
  auto geomean = [](const std::vector<double>& v) {
    if (v.empty()) return std::string("n/a");
    double log_sum = 0;
    for (double x : v) log_sum += std::log(x);
    return fmt::format("{:.2f}x", std::exp(log_sum / v.size()));
  };
  std::string summary = "| N | geomean speedup over cuBLAS FP16 | worst shape | FP6-LLM geomean |\n|---|---|---|---|\n";
  for (size_t ni = 0; ni < ns.size(); ++ni)
    summary += fmt::format("| {} | {} | {:.2f}x | {} |\n", ns[ni], geomean(speedups[ni]),
                           *std::min_element(speedups[ni].begin(), speedups[ni].end()), geomean(ref_speedups[ni]));
  for (size_t v = 0; tiles && v < variants.size(); ++v) {
    const bench::TileVariant& tv = variants[v];
    tile_table += fmt::format("| {} | ({}, {}, {}, {}) | {} | {}| {} |\n", tv.n == 8 ? 1 : tv.n, tv.n, tv.warps,
                              tv.row_tiles_per_warp, tv.stages, tv.rows(), tile_cells[v], geomean(tile_speedups[v]));
  }
  fmt::print("=== table ===\ndevice: {}; D2D copy {:.0f} GB/s, read {:.0f} GB/s\n\n{}\n{}=== end ===\n",
             cuda::device_summary(), copy_gbs, read_gbs, table,
             summary + "\n" + sweep + "\n" + dequant_table + (tiles ? "\n" + tile_table : std::string()));
  return 0;
}
