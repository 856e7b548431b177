// CPU benchmarks of issue #2: FP6 GEMV bandwidth against a memory copy measured in the same
// run, and prepacking speed. Weights rotate over more bytes than the last-level cache so the
// GEMV reads DRAM, as a decode step does. Prints a summary table last.
//
//   build/bench/fp6serve_bench_cpu [--benchmark_filter=...]
#include <benchmark/benchmark.h>
#include <fmt/core.h>

#include <cstring>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backend/cpu/linear.h"
#include "core/half.h"
#include "core/host_buffer.h"
#include "core/thread_pool.h"
#include "fpx/pack.h"
#include "model/quantization.h"

namespace fp6serve {
namespace {

constexpr size_t kRotateBytes = size_t{192} << 20;  // several times any L3 of a 2-32 core machine
// glibc's memcpy switches to non-temporal stores only for large copies: with 1 GiB the
// baseline is the machine's best copy bandwidth, not a cache-polluting one.
constexpr size_t kCopyBytes = size_t{1} << 30;

std::vector<uint16_t> random_bf16(int64_t n, uint32_t seed) {
  std::vector<uint16_t> w(static_cast<size_t>(n));
  ThreadPool::global()->parallel_for(n, [&](int64_t b, int64_t e) {
    std::mt19937 rng(seed + static_cast<uint32_t>(b));
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (int64_t i = b; i < e; ++i) w[i] = f32_to_bf16_bits(normal(rng));
  });
  return w;
}

void BM_MemoryCopy(benchmark::State& state) {
  const size_t bytes = kCopyBytes;
  HostBuffer a(bytes), b(bytes);
  std::memset(a.data(), 1, bytes);
  std::memset(b.data(), 2, bytes);
  const int threads = ThreadPool::global()->size();
  const size_t chunk = bytes / threads;
  for (auto _ : state) {
    ThreadPool::global()->parallel_for(threads, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) std::memcpy(b.data() + t * chunk, a.data() + t * chunk, chunk);
    });
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 2 * static_cast<int64_t>(bytes));
  state.SetLabel("read+write");
}

// Reading alone (what a GEMV does), as a second roofline.
void BM_MemoryRead(benchmark::State& state) {
  const size_t bytes = kCopyBytes;
  HostBuffer a(bytes);
  std::memset(a.data(), 1, bytes);
  const int threads = ThreadPool::global()->size();
  const size_t words = bytes / 8 / threads;
  std::vector<uint64_t> sums(threads);
  for (auto _ : state) {
    ThreadPool::global()->parallel_for(threads, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const uint64_t* p = a.as<uint64_t>() + t * words;
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (size_t i = 0; i < words; i += 4) s0 += p[i], s1 += p[i + 1], s2 += p[i + 2], s3 += p[i + 3];
        sums[t] = s0 + s1 + s2 + s3;
      }
    });
    benchmark::DoNotOptimize(sums.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(bytes));
  state.SetLabel("read");
}

void BM_FpxGemv(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1), n = state.range(2);
  const auto src = random_bf16(rows * cols, 1);
  const fpx::PackedWeight first =
      fpx::quantize_pack({src.data(), DType::kBF16, rows, cols, "w"}, fpx::kE3M2, DType::kF16);
  // Copies of the packed weight, enough to overflow the caches.
  const size_t copies = std::max<size_t>(2, kRotateBytes / first.bytes() + 1);
  std::vector<fpx::PackedWeight> weights;
  for (size_t i = 0; i < copies; ++i) {
    fpx::PackedWeight w;
    w.plan = first.plan;
    w.rows = rows;
    w.cols = cols;
    w.scales = first.scales;
    w.data = HostBuffer(first.bytes());
    std::memcpy(w.data.data(), first.data.data(), first.bytes());
    weights.push_back(std::move(w));
  }
  std::vector<float> x(static_cast<size_t>(n * cols), 0.5f), y(static_cast<size_t>(n * rows));
  size_t i = 0;
  for (auto _ : state) {
    cpu::fpx_linear(x.data(), DType::kF32, n, weights[i++ % copies], nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * first.bytes()));
  state.SetLabel(fmt::format("FP6 bytes, {}", cpu::isa_name(cpu::best_isa())));
}

void BM_Prepack(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const bool quantize = state.range(2) != 0;
  const auto src = random_bf16(rows * cols, 2);
  const fpx::MatrixView view{src.data(), DType::kBF16, rows, cols, "w"};
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  if (!quantize) {
    const auto q = fpx::quantize(view, fpx::kE3M2);
    codes = q.codes;
    scales = q.scales;
  }
  for (auto _ : state) {
    fpx::PackedWeight p = quantize ? fpx::quantize_pack(view, fpx::kE3M2, DType::kF16)
                                   : fpx::pack(codes.data(), scales.data(), rows, cols, fpx::kE3M2, DType::kF16);
    benchmark::DoNotOptimize(p.data.data());
  }
  state.SetItemsProcessed(state.iterations() * rows * cols);
  state.SetLabel(quantize ? "quantize+pack from bf16" : "pack from codes");
}

// Quantize-on-load of one 16-bit layer as the loader does it (quantize_pack from bf16, all
// threads), per scale rule: 0 absmax e3m2 (the default before 1db0e0c), 1 min-error e3m2
// (before a8ed60a), 2 the default now (wf6af16: min-error, the better of e2m3 and e3m2).
void BM_QuantizeOnLoad(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const int rule = static_cast<int>(state.range(2));
  const auto src = random_bf16(rows * cols, 3);
  const fpx::MatrixView view{src.data(), DType::kBF16, rows, cols, "w"};
  const fpx::ScaleRule scale = rule == 0 ? fpx::ScaleRule::kAbsmax : fpx::ScaleRule::kMinError;
  for (auto _ : state) {
    const fpx::Format f = rule == 2 ? fpx::best_format({&view, 1}, model::QuantizationMode::kFp6Formats, scale)
                                    : fpx::kE3M2;  // the loader's choice
    fpx::PackedWeight p = fpx::quantize_pack(view, f, DType::kF16, scale);
    benchmark::DoNotOptimize(p.data.data());
  }
  state.SetItemsProcessed(state.iterations() * rows * cols);
  state.SetLabel(fmt::format("{}, {} threads",
                             rule == 0   ? "absmax e3m2"
                             : rule == 1 ? "min-error e3m2"
                                         : "default",
                             ThreadPool::global()->size()));
}

BENCHMARK(BM_MemoryCopy)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_MemoryRead)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_FpxGemv)
    ->Args({4096, 4096, 1})
    ->Args({8192, 8192, 1})
    ->Args({4096, 4096, 8})
    ->Args({8192, 8192, 8})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->MinTime(1.0);
BENCHMARK(BM_Prepack)
    ->Args({57344, 8192, 0})
    ->Args({57344, 8192, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(3);
BENCHMARK(BM_QuantizeOnLoad)
    ->Args({4096, 11008, 0})
    ->Args({4096, 11008, 1})
    ->Args({4096, 11008, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(2);

// Remembers each run's bytes/s and time, then prints the summary table.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
      const auto it = r.counters.find("bytes_per_second");
      rows_.push_back({r.benchmark_name(), it == r.counters.end() ? 0.0 : double(it->second), r.GetAdjustedRealTime(),
                       r.time_unit});
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    double copy = 0, read = 0;
    for (const auto& r : rows_) {
      if (r.name.rfind("BM_MemoryCopy", 0) == 0) copy = r.bytes_per_second;
      if (r.name.rfind("BM_MemoryRead", 0) == 0) read = r.bytes_per_second;
    }
    fmt::print("\n{} threads, CPU path {}\n", ThreadPool::global()->size(), cpu::isa_name(cpu::best_isa()));
    fmt::print(
        "| benchmark | time | GB/s | % of copy ({:.1f} GB/s) | % of read ({:.1f} GB/s) |\n|---|---|---|---|---|\n",
        copy / 1e9, read / 1e9);
    for (const auto& r : rows_) {
      const std::string unit = benchmark::GetTimeUnitString(r.unit);
      if (r.bytes_per_second > 0)
        fmt::print("| {} | {:.1f} {} | {:.1f} | {:.0f}% | {:.0f}% |\n", r.name, r.time, unit, r.bytes_per_second / 1e9,
                   100.0 * r.bytes_per_second / copy, 100.0 * r.bytes_per_second / read);
      else
        fmt::print("| {} | {:.1f} {} | | | |\n", r.name, r.time, unit);
    }
  }

 private:
  struct Row {
    std::string name;
    double bytes_per_second;
    double time;
    benchmark::TimeUnit unit;
  };
  std::vector<Row> rows_;
};

}  // namespace
}  // namespace fp6serve

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  fp6serve::SummaryReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
