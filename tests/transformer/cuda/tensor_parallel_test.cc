// Tensor parallelism on the GPU (docs/tensor_parallel.md). On one GPU: a model of one rank runs
// through the rank machinery (its thread, its device, the solo communicator) and equals the
// CPU model split over 2 ranks within FP16 noise; NCCL links and all-reduces over a group of
// one; asking for more ranks than GPUs is a clear error. With 2 or more GPUs (skipped on
// fewer): NCCL sums across GPUs, and a model split over 2 (and 4) GPUs equals the same model
// on one GPU within FP16 noise, greedy tokens included, with and without CUDA graphs.
#include "transformer/tensor_parallel.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/nccl_communicator.h"
#include "core/half.h"
#include "tests/support/errors.h"
#include "tests/support/fixture.h"
#include "transformer/device.h"
#include "transformer/model.h"

namespace fp6serve {
namespace {

using testing::fixture_dir;
using testing::prompt_logits;
using testing::Reference;

Options gpu(const std::string& mode, int ranks, bool cuda_graphs = true) {
  Options o = testing::options(mode);
  o.device = "cuda";
  o.tensor_parallel_size = ranks;
  o.cuda_graphs = cuda_graphs;
  return o;
}

// transformers' own FP16 error of a fixture's prompt i: max |logits_fp16 - logits (fp32)|.
double fp16_noise(const Reference& ref, int i) {
  return ref.json["low_precision"]["fp16"]["vs_fp32"][static_cast<size_t>(i)]["max_abs"].get<double>();
}

// The reference prompts of a fixture through both models: every logits row within 4x
// transformers' FP16 noise; for a mixture of experts most rows (a router decision within 16-bit
// noise of a tie may go either way in FP16, as tests/transformer/cuda/moe_forward_test.cc says).
void expect_within_fp16_noise(Model& a, Model& b, const std::string& name) {
  Reference ref(name);
  const int64_t vocab = a.config().vocab_size;
  int64_t rows = 0, within = 0;
  double worst = 0;
  for (const auto& p : ref.json["prompts"]) {
    const int i = p["index"];
    const auto ids = ref.ids("input_ids_" + std::to_string(i));
    const auto la = prompt_logits(a, ids), lb = prompt_logits(b, ids);
    ASSERT_EQ(la.size(), lb.size());
    for (size_t r = 0; r * vocab < la.size(); ++r, ++rows) {
      double d = 0;
      for (int64_t v = 0; v < vocab; ++v) d = std::max(d, std::fabs(double{la[r * vocab + v]} - lb[r * vocab + v]));
      within += d <= 4 * fp16_noise(ref, i);
      worst = std::max(worst, d / fp16_noise(ref, i));
    }
  }
  std::printf("%s: %lld of %lld logits rows within 4x transformers' fp16 noise (worst %.2fx)\n", name.c_str(),
              static_cast<long long>(within), static_cast<long long>(rows), worst);
  if (a.config().is_moe())
    EXPECT_GE(static_cast<double>(within), 0.9 * static_cast<double>(rows)) << name;
  else
    EXPECT_EQ(within, rows) << name;
}

class GpuTensorParallel : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  }
};

// One GPU, one rank: the model the engine always runs now, through the rank path; it equals the
// CPU's FP6 model split over 2 ranks (the same codes and scales) within FP16 noise.
TEST_P(GpuTensorParallel, OneGpuEqualsTheCpuSplitOverTwoRanks) {
  auto one_gpu = Model::load(fixture_dir(GetParam()), gpu("wf6af16", 1));
  EXPECT_EQ(one_gpu->tensor_parallel_size(), 1);
  Options cpu = testing::options("wf6af16");
  cpu.tensor_parallel_size = 2;
  auto two_cpu = Model::load(fixture_dir(GetParam()), cpu);
  expect_within_fp16_noise(*one_gpu, *two_cpu, GetParam());
}

// Split over 2 GPUs (and 4 where there are 4 and the shape divides), FP6 and FP16, with and
// without CUDA graphs (NCCL's all-reduce recorded in the graph): the logits equal one GPU's
// within FP16 noise, and greedy decoding (dense models) gives the same tokens up to a near tie.
TEST_P(GpuTensorParallel, SplitOverGpusEqualsOneGpu) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs 2 GPUs, this machine has " << cuda_device_count();
  const auto config = model::ModelConfig::load(fixture_dir(GetParam()));
  for (const int ranks : {2, 4}) {
    if (ranks > cuda_device_count() || config.num_kv_heads % ranks != 0) continue;
    for (const char* mode : {"wf6af16", "fp16"})
      for (const bool graphs : {true, false}) {
        SCOPED_TRACE(GetParam() + " " + mode + " over " + std::to_string(ranks) + " GPUs, CUDA graphs " +
                     (graphs ? "on" : "off"));
        auto one = Model::load(fixture_dir(GetParam()), gpu(mode, 1, graphs));
        auto split = Model::load(fixture_dir(GetParam()), gpu(mode, ranks, graphs));
        expect_within_fp16_noise(*split, *one, GetParam());
        if (config.is_moe()) continue;  // a routing tie within FP16 noise may change a token
        Reference ref(GetParam());
        for (const auto& g : ref.json["greedy"]) {
          const auto prompt = ref.ids("greedy_prompt_" + std::to_string(g["index"].get<int>()));
          const int64_t vocab = one->config().vocab_size;
          std::vector<float> l1;
          const auto t1 = testing::greedy_decode(*one, prompt, 16, &l1);
          const auto tn = testing::greedy_decode(*split, prompt, 16);
          for (size_t s = 0; s < t1.size(); ++s) {
            std::vector<float> row(l1.begin() + static_cast<int64_t>(s) * vocab,
                                   l1.begin() + static_cast<int64_t>(s + 1) * vocab);
            std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<>());
            if (row[0] - row[1] < 0.05f) break;  // within FP16 noise of a tie
            ASSERT_EQ(tn[s], t1[s]) << "greedy step " << s;
          }
        }
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuTensorParallel,
                         ::testing::Values("tiny-llama", "tiny-llama2-sp", "tiny-qwen2", "tiny-mixtral",
                                           "tiny-qwen2-moe"));

// More ranks than GPUs: an error naming both numbers, before anything is loaded.
TEST(GpuTensorParallelErrors, MoreRanksThanGpusIsAClearError) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const int n = cuda_device_count();
  if (n != 1) GTEST_SKIP() << "written for one GPU (tiny-llama splits over 2 ranks at most), this machine has " << n;
  const std::string msg = testing::error_of([&] { Model::load(fixture_dir("tiny-llama"), gpu("wf6af16", n + 1)); },
                                            ErrorKind::kUnsupported);
  EXPECT_THAT(msg, ::testing::HasSubstr("tensor_parallel_size " + std::to_string(n + 1) + " needs " +
                                        std::to_string(n + 1) + " GPUs, but this machine has " + std::to_string(n)));
}

// NCCL over a group of one GPU: built, linked, and its all-reduce (on the backend's stream)
// leaves the tensor as it is, in each activation dtype.
TEST(GpuTensorParallelNccl, AGroupOfOneLeavesTheTensorAsItIs) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  ASSERT_TRUE(cuda::nccl_built()) << "the CUDA build found no NCCL";
  for (const DType act : {DType::kF16, DType::kBF16}) {
    auto config = model::ModelConfig::load(fixture_dir("tiny-llama"));
    config.dtype = act;  // the CUDA backend's activations: FP16, or BF16 for a BF16 checkpoint
    const auto qmode = model::QuantizationMode::parse("wf6af16");
    auto be = make_backend(config, qmode, gpu("wf6af16", 1));
    ASSERT_EQ(be->act_dtype(), act);
    auto comms = cuda::nccl_communicators({be.get()});
    ASSERT_EQ(comms.size(), 1u);
    Batch batch;
    const int32_t token = 1;
    batch.add(&token, 1, 0, {0}, true);
    KvCache cache = be->make_kv_cache(1, 16);
    be->begin_forward(batch, cache);
    Tensor x = be->activations(3, 100);
    Tensor host = Tensor::empty({3, 100}, DType::kF32);
    for (int64_t i = 0; i < host.numel(); ++i) host.data_as<float>()[i] = static_cast<float>(i % 17) - 8.5f;
    be->upload(host, x);
    comms[0]->all_reduce_sum(x);
    const Tensor back = be->to_host_f32(x);
    for (int64_t i = 0; i < host.numel(); ++i)
      ASSERT_EQ(back.data_as<float>()[i], host.data_as<float>()[i]) << dtype_name(act);
  }
}

// NCCL across GPUs: each rank's thread all-reduces its own tensor; every GPU gets the sum.
TEST(GpuTensorParallelNccl, AllReduceSumsAcrossGpus) {
  const int n = cuda_device_count();
  if (n < 2) GTEST_SKIP() << "needs 2 GPUs, this machine has " << n;
  const auto config = model::ModelConfig::load(fixture_dir("tiny-llama"));
  const auto qmode = model::QuantizationMode::parse("wf6af16");
  Options o = gpu("wf6af16", n);
  RankThreads threads(n);
  std::vector<std::unique_ptr<Backend>> backends(static_cast<size_t>(n));
  threads.run([&](int r) { backends[static_cast<size_t>(r)] = make_backend(config, qmode, o, r); });
  std::vector<Backend*> raw;
  for (auto& b : backends) raw.push_back(b.get());
  auto comms = make_communicators(raw);
  std::vector<std::vector<float>> got(static_cast<size_t>(n));
  threads.run([&](int r) {
    Backend& be = *backends[static_cast<size_t>(r)];
    Batch batch;
    const int32_t token = 1;
    batch.add(&token, 1, 0, {0}, true);
    KvCache cache = be.make_kv_cache(1, 16);
    be.begin_forward(batch, cache);
    Tensor x = be.activations(4, 333);
    Tensor host = Tensor::empty({4, 333}, DType::kF32);
    for (int64_t i = 0; i < host.numel(); ++i) host.data_as<float>()[i] = static_cast<float>((i + r) % 7);
    be.upload(host, x);
    comms[static_cast<size_t>(r)]->all_reduce_sum(x);
    const Tensor back = be.to_host_f32(x);
    got[static_cast<size_t>(r)].assign(back.data_as<float>(), back.data_as<float>() + back.numel());
  });
  for (int r = 0; r < n; ++r)
    for (size_t i = 0; i < got[0].size(); ++i) {
      float want = 0;
      for (int q = 0; q < n; ++q) want += static_cast<float>((static_cast<int64_t>(i) + q) % 7);
      ASSERT_EQ(got[static_cast<size_t>(r)][i], want) << "rank " << r << " element " << i;
    }
  threads.run([&](int r) {
    comms[static_cast<size_t>(r)].reset();
    backends[static_cast<size_t>(r)].reset();
  });
}

}  // namespace
}  // namespace fp6serve
