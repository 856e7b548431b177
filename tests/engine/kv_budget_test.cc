// The KV cache's size (engine/kv_budget.h): vLLM's --gpu-memory-utilization and the defaults,
// as pure functions, and the engine sizing its cache by them on a backend that reports a GPU's
// memory (the CPU backend underneath, so this runs anywhere).
#include "engine/kv_budget.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "engine/engine.h"
#include "fp6serve/error.h"
#include "tests/support/delegating_backend.h"
#include "tests/support/fixture.h"

namespace fp6serve {
namespace {

using ::testing::HasSubstr;

constexpr size_t kGiB = size_t{1} << 30;

// The kind and message of the Error fn throws (kInternal and "" when it throws none).
template <typename Fn>
Error error_of(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  }
  return Error(ErrorKind::kInternal, "");
}

TEST(GpuKvCacheBytes, TheFractionOfTheGpuLessWeightsAndActivations) {
  // vLLM's meaning: 0.5 of an 80 GiB GPU is 40 GiB for everything of this process.
  const GpuKvBytes g = gpu_kv_cache_bytes(0.5, 80 * kGiB, 60 * kGiB, 10 * kGiB);
  EXPECT_EQ(g.budget, 40 * kGiB);
  EXPECT_EQ(g.bytes, 40 * kGiB - 10 * kGiB - kGpuActivationReserve);
  EXPECT_FALSE(g.limited_by_free);
  // The whole GPU: what the weights and the reserve leave, which is what is free less the reserve.
  const GpuKvBytes all = gpu_kv_cache_bytes(1.0, 80 * kGiB, 70 * kGiB, 10 * kGiB);
  EXPECT_EQ(all.bytes, 70 * kGiB - kGpuActivationReserve);
  EXPECT_FALSE(all.limited_by_free);
  // Larger fractions give more.
  EXPECT_LT(gpu_kv_cache_bytes(0.6, 80 * kGiB, 70 * kGiB, 10 * kGiB).bytes,
            gpu_kv_cache_bytes(0.7, 80 * kGiB, 70 * kGiB, 10 * kGiB).bytes);
}

TEST(GpuKvCacheBytes, NeverMoreThanIsFree) {
  // Another process holds 50 GiB: 0.9 would give 60 GiB, 18 GiB are there.
  const GpuKvBytes g = gpu_kv_cache_bytes(0.9, 80 * kGiB, 20 * kGiB, 10 * kGiB);
  EXPECT_EQ(g.bytes, 20 * kGiB - kGpuActivationReserve);
  EXPECT_TRUE(g.limited_by_free);
  // Not even the reserve free: out of memory, saying how much others hold.
  const Error e = error_of([] { gpu_kv_cache_bytes(0.9, 80 * kGiB, kGiB, 10 * kGiB); });
  EXPECT_EQ(e.kind(), ErrorKind::kOutOfMemory);
  EXPECT_THAT(e.what(), HasSubstr("other processes hold 69.00 GiB"));
}

TEST(GpuKvCacheBytes, AFractionTooSmallForTheWeightsSaysSo) {
  const Error e = error_of([] { gpu_kv_cache_bytes(0.1, 80 * kGiB, 70 * kGiB, 10 * kGiB); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
  EXPECT_THAT(e.what(), HasSubstr("gpu_memory_utilization 0.1 lets this process use 8.00 GiB of the GPU's 80.00 GiB"));
  EXPECT_THAT(e.what(), HasSubstr("the weights take 10.00 GiB"));
  EXPECT_THAT(e.what(), HasSubstr("raise it"));
  // Weights + reserve exactly the budget: nothing left either.
  EXPECT_EQ(error_of([] { gpu_kv_cache_bytes(0.5, 24 * kGiB, 20 * kGiB, 10 * kGiB); }).kind(),
            ErrorKind::kInvalidArgument);
  // At 1 there is nothing to raise: the model does not fit.
  EXPECT_THAT(error_of([] { gpu_kv_cache_bytes(1.0, 12 * kGiB, 2 * kGiB, 11 * kGiB); }).what(),
              HasSubstr("does not fit this GPU"));
}

TEST(GpuKvCacheBytes, OnlyFractionsInZeroToOne) {
  for (double u : {0.0, -0.5, 1.0000001, 2.0, 90.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    const Error e = error_of([u] { gpu_kv_cache_bytes(u, 80 * kGiB, 70 * kGiB, kGiB); });
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument) << u;
    EXPECT_THAT(e.what(), HasSubstr("must be in (0, 1]")) << u;
  }
  EXPECT_NO_THROW(gpu_kv_cache_bytes(1e-9 + 0.5, 80 * kGiB, 70 * kGiB, kGiB));
}

KvDeviceFacts gpu(size_t total, size_t free, size_t weights, size_t block = 1 << 20) {
  return {.device = Device::kCuda, .total = total, .free = free, .weight_bytes = weights, .block_bytes = block};
}

TEST(KvCacheBudget, GpuMemoryUtilizationOnTheGpu) {
  Options o;
  o.gpu_memory_utilization = 0.5;
  const KvBudget b = kv_cache_budget(o, gpu(80 * kGiB, 60 * kGiB, 10 * kGiB), 16, 4096);
  EXPECT_EQ(b.blocks, static_cast<int64_t>((28 * kGiB) >> 20));
  EXPECT_THAT(b.how, HasSubstr("gpu_memory_utilization 0.5: 40.00 of 80.00 GiB, less 10.00 GiB of weights"));
  EXPECT_FALSE(b.limited_by_free);
  const KvBudget cut = kv_cache_budget(o, gpu(80 * kGiB, 12 * kGiB, 10 * kGiB), 16, 4096);
  EXPECT_EQ(cut.blocks, static_cast<int64_t>((10 * kGiB) >> 20));
  EXPECT_TRUE(cut.limited_by_free);
  EXPECT_THAT(cut.how, HasSubstr("cut to the 12.00 GiB free"));
  // A budget that holds less than one block is an error, not a cache of one block.
  const Error e = error_of([] {
    Options t;
    t.gpu_memory_utilization = 0.5;
    kv_cache_budget(t, gpu(8 * kGiB, 7 * kGiB, 2 * kGiB - 100, 1 << 20), 16, 4096);
  });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
  EXPECT_THAT(e.what(), HasSubstr("not one block of 16 tokens"));
}

TEST(KvCacheBudget, GpuMemoryUtilizationOnTheCpuIsAnError) {
  Options o;
  o.gpu_memory_utilization = 0.9;
  KvDeviceFacts cpu = gpu(64 * kGiB, 60 * kGiB, kGiB);
  cpu.device = Device::kCpu;
  const Error e = error_of([&] { kv_cache_budget(o, cpu, 16, 4096); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
  EXPECT_THAT(e.what(), HasSubstr("applies to the GPU"));
  EXPECT_THAT(e.what(), HasSubstr("--kv-cache-gib"));
}

TEST(KvCacheBudget, TheOtherRulesAndTheirOrder) {
  const KvDeviceFacts g = gpu(80 * kGiB, 60 * kGiB, 10 * kGiB);
  Options o;
  // The GPU's default: 90% of the free memory less the reserve.
  EXPECT_EQ(kv_cache_budget(o, g, 16, 4096).blocks,
            static_cast<int64_t>(static_cast<size_t>(0.9 * static_cast<double>(60 * kGiB) - 2.0 * kGiB) >> 20));
  // The CPU's: 4 full-context sequences, at most 1 GiB.
  KvDeviceFacts cpu = g;
  cpu.device = Device::kCpu;
  cpu.block_bytes = 1000;
  EXPECT_EQ(kv_cache_budget(o, cpu, 16, 4096).blocks, 4 * 4096 / 16);
  cpu.block_bytes = 1 << 20;
  EXPECT_EQ(kv_cache_budget(o, cpu, 16, 4096).blocks, 1024);  // 1 GiB of 1 MiB blocks
  // Bytes, then blocks, take precedence.
  o.kv_cache_bytes = 5 * kGiB;
  EXPECT_EQ(kv_cache_budget(o, g, 16, 4096).blocks, 5 * 1024);
  EXPECT_EQ(kv_cache_budget(o, g, 16, 4096).how, "as asked");
  o.kv_cache_blocks = 7;
  EXPECT_EQ(kv_cache_budget(o, g, 16, 4096).blocks, 7);
  // Bytes that do not fit, or hold no block.
  o.kv_cache_blocks = 0;
  o.kv_cache_bytes = 61 * kGiB;
  EXPECT_EQ(error_of([&] { kv_cache_budget(o, g, 16, 4096); }).kind(), ErrorKind::kOutOfMemory);
  o.kv_cache_bytes = 1000;
  EXPECT_EQ(error_of([&] { kv_cache_budget(o, g, 16, 4096); }).kind(), ErrorKind::kInvalidArgument);
}

TEST(KvCacheBudget, OptionsRefuseBadUtilizations) {
  auto refused = [](double u, size_t kv_bytes, const char* device) {
    Options o;
    o.gpu_memory_utilization = u;
    o.kv_cache_bytes = kv_bytes;
    o.device = device;
    return error_of([&] { o.validate(); });
  };
  EXPECT_THAT(refused(1.5, 0, "auto").what(),
              HasSubstr("gpu_memory_utilization must be in (0, 1] (a fraction of the GPU's memory), got 1.5"));
  EXPECT_THAT(refused(-0.2, 0, "cuda").what(), HasSubstr("must be in (0, 1]"));
  EXPECT_THAT(refused(std::nan(""), 0, "cuda").what(), HasSubstr("must be in (0, 1]"));
  EXPECT_THAT(refused(0.5, kGiB, "cuda").what(), HasSubstr("not both"));
  EXPECT_THAT(refused(0.5, 0, "cpu").what(), HasSubstr("applies to the GPU"));
  for (double u : {0.0, 0.01, 0.9, 1.0}) EXPECT_EQ(refused(u, 0, "cuda").kind(), ErrorKind::kInternal) << u;
}

// The CPU backend, reporting a GPU's device and memory.
class PretendGpu : public testing::DelegatingBackend {
 public:
  PretendGpu(std::unique_ptr<Backend> inner, Memory memory) : DelegatingBackend(std::move(inner)), memory_(memory) {}
  Device device() const override { return Device::kCuda; }
  Memory memory() const override { return memory_; }

 private:
  Memory memory_;
};

TEST(KvCacheBudget, TheEngineSizesItsCacheByIt) {
  const std::string dir = testing::fixture_dir("tiny-llama");
  Options o = testing::options("fp32");
  const auto config = model::ModelConfig::load(dir);
  const Backend::Memory memory{.free = 6 * kGiB, .total = 8 * kGiB};
  auto model = Model::load(dir, o, std::make_unique<PretendGpu>(cpu::make_cpu_backend(config, o), memory));
  const Tokenizer tokenizer = Tokenizer::load(dir);
  const size_t block = model->backend().kv_block_bytes(o.kv_block_size);
  // 0.26 of 8 GiB, less the weights and the reserve: about 80 MiB of KV cache (host memory here).
  o.device = "cuda";
  o.gpu_memory_utilization = 0.26;
  const Engine engine(*model, tokenizer, o);
  const size_t want =
      static_cast<size_t>(0.26 * static_cast<double>(8 * kGiB)) - model->weights().bytes() - kGpuActivationReserve;
  EXPECT_EQ(engine.kv_blocks(), static_cast<int64_t>(want / block));
  EXPECT_THAT(engine.kv_sizing(), HasSubstr("gpu_memory_utilization 0.26"));
  // Too small a fraction for the weights and activations: the engine does not start.
  o.gpu_memory_utilization = 0.2;
  EXPECT_THAT(error_of([&] { Engine e(*model, tokenizer, o); }).what(), HasSubstr("nothing is left for the KV cache"));
}

TEST(KvCacheBudget, TheEngineOnTheCpuRefusesIt) {
  const std::string dir = testing::fixture_dir("tiny-llama");
  auto model = Model::load(dir, testing::options("fp32"));
  const Tokenizer tokenizer = Tokenizer::load(dir);
  Options o = testing::options("fp32");
  o.device = "auto";  // which found no GPU: the CPU backend
  o.gpu_memory_utilization = 0.9;
  const Error e = error_of([&] { Engine engine(*model, tokenizer, o); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
  EXPECT_THAT(e.what(), HasSubstr("applies to the GPU, and this model runs on the cpu"));
}

}  // namespace
}  // namespace fp6serve
