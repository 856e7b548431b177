// The model on the GPU (CUDA backend) against transformers' outputs and the CPU backend, on
// the fixtures of tests/data.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <numeric>

#include "tests/support/fixture.h"
#include "transformer/device.h"
#include "transformer/model.h"

namespace fp6serve {
namespace {

using testing::fixture_dir;
using testing::for_each_reference_row;
using testing::kl_divergence;
using testing::options;
using testing::prompt_logits;
using testing::Reference;

std::unique_ptr<Model> load_gpu(const std::string& name, const std::string& mode, bool cuda_graphs = true) {
  Options o = options(mode);
  o.device = "cuda";
  o.cuda_graphs = cuda_graphs;
  return Model::load(fixture_dir(name), o);
}

// transformers' own FP16 error per reference prompt: max |logits_fp16 - logits (fp32)|.
std::vector<double> fp16_noise(const Reference& ref) {
  std::vector<double> out;
  for (const auto& v : ref.json["low_precision"]["fp16"]["vs_fp32"]) out.push_back(v["max_abs"].get<double>());
  return out;
}

int64_t argmax(const float* x, int64_t n) {
  return std::max_element(x, x + n) - x;
}

class GpuFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  }
};

// FP16 mode: within a few times transformers' own FP16 noise of the FP32 reference.
TEST_P(GpuFixture, Fp16LogitsAreWithinFp16NoiseOfTransformers) {
  Reference ref(GetParam());
  auto m = load_gpu(GetParam(), "fp16");
  const int64_t vocab = m->config().vocab_size;
  const auto noise = fp16_noise(ref);
  std::map<int, double> max_diff;
  int64_t agree = 0, total = 0;
  for_each_reference_row(*m, ref, [&](int i, const float* got, const float* want) {
    for (int64_t v = 0; v < vocab; ++v) max_diff[i] = std::max(max_diff[i], std::fabs(double{got[v]} - want[v]));
    agree += argmax(got, vocab) == argmax(want, vocab);
    ++total;
  });
  for (const auto& [i, d] : max_diff) {
    std::printf("%s prompt %d: GPU fp16 max|dlogit| %.4f, transformers fp16 %.4f\n", GetParam().c_str(), i, d,
                noise.at(static_cast<size_t>(i)));
    EXPECT_LE(d, 4 * noise.at(static_cast<size_t>(i))) << GetParam() << " prompt " << i;
  }
  std::printf("%s: GPU fp16 top-1 agreement with fp32 reference %lld/%lld\n", GetParam().c_str(),
              static_cast<long long>(agree), static_cast<long long>(total));
}

// FP6 mode: the GPU runs the same quantized model as the CPU backend (f32 there), so they
// differ by FP16 arithmetic only; top-1 agreement and KL against the reference are reported.
TEST_P(GpuFixture, Fp6LogitsMatchTheCpuFp6ModelAndReportAgreement) {
  Reference ref(GetParam());
  auto gpu = load_gpu(GetParam(), "wf6af16");
  auto cpu = Model::load(fixture_dir(GetParam()), options("wf6af16"));
  const int64_t vocab = gpu->config().vocab_size;
  const auto noise = fp16_noise(ref);
  int64_t agree = 0, total = 0;
  double kl = 0;
  for (const auto& p : ref.json["prompts"]) {
    const int i = p["index"];
    const auto ids = ref.ids("input_ids_" + std::to_string(i));
    const auto g = prompt_logits(*gpu, ids), c = prompt_logits(*cpu, ids);
    double d = 0;
    for (size_t k = 0; k < g.size(); ++k) d = std::max(d, std::fabs(double{g[k]} - c[k]));
    EXPECT_LE(d, 4 * noise.at(static_cast<size_t>(i))) << GetParam() << " prompt " << i;
  }
  for_each_reference_row(*gpu, ref, [&](int, const float* q, const float* pr) {
    agree += argmax(q, vocab) == argmax(pr, vocab);
    kl += kl_divergence(pr, q, vocab);
    ++total;
  });
  std::printf("%s: GPU wf6af16 top-1 agreement %.1f%% over %lld positions, mean KL %.5f nats\n", GetParam().c_str(),
              100.0 * agree / total, static_cast<long long>(total), kl / total);
  EXPECT_GE(static_cast<double>(agree) / total, 0.65);  // the CPU FP6 model's level (docs/quality.md)
}

// Dynamic SplitFuse on the GPU: a prompt fed as chunks and then token by token, batched with
// another sequence at other positions, gives the logits of the whole prompt at once.
TEST_P(GpuFixture, ChunksAndDecodeStepsInMixedBatchesEqualTheWholePrompt) {
  Reference ref(GetParam());
  auto m = load_gpu(GetParam(), "wf6af16");
  const int64_t vocab = m->config().vocab_size;
  const auto a = ref.ids("input_ids_3"), b = ref.ids("input_ids_2");
  const auto whole_a = prompt_logits(*m, a), whole_b = prompt_logits(*m, b);
  KvCache cache = m->make_kv_cache(32, 16);
  std::vector<int32_t> ta(16), tb(16);
  std::iota(ta.begin(), ta.end(), 0);
  std::iota(tb.begin(), tb.end(), 16);
  std::reverse(tb.begin(), tb.end());  // blocks out of order
  const int64_t na = static_cast<int64_t>(a.size()), nb = static_cast<int64_t>(b.size());
  int64_t pa = 0, pb = 0;
  double max_diff = 0, max_ref = 0;
  while (pa < na || pb < nb) {
    Batch batch;
    const int64_t ca = std::min<int64_t>(na - pa, pa < 50 ? 50 : pa < 80 ? 30 : 1);
    const int64_t cb = std::min<int64_t>(nb - pb, pb < 5 ? 5 : 1);
    if (ca > 0) batch.add(a.data() + pa, ca, pa, ta, true, true);
    if (cb > 0) batch.add(b.data() + pb, cb, pb, tb, true, true);
    const Tensor logits = m->forward(batch, cache);
    const float* l = logits.data_as<float>();
    for (int64_t r = 0; r < ca; ++r, l += vocab)
      for (int64_t v = 0; v < vocab; ++v) {
        max_diff = std::max(max_diff, std::fabs(double{l[v]} - whole_a[(pa + r) * vocab + v]));
        max_ref = std::max(max_ref, std::fabs(double{whole_a[(pa + r) * vocab + v]}));
      }
    for (int64_t r = 0; r < cb; ++r, l += vocab)
      for (int64_t v = 0; v < vocab; ++v)
        max_diff = std::max(max_diff, std::fabs(double{l[v]} - whole_b[(pb + r) * vocab + v]));
    pa += ca;
    pb += cb;
  }
  std::printf("%s: chunked vs whole max|dlogit| %.4f (max|logit| %.2f)\n", GetParam().c_str(), max_diff, max_ref);
  EXPECT_LE(max_diff, 5e-3 * max_ref);
}

// Decode steps replayed from a recorded CUDA graph give exactly the logits of direct launches.
TEST_P(GpuFixture, GraphReplaysEqualDirectLaunches) {
  Reference ref(GetParam());
  auto decode_logits = [&](bool graphs) {
    auto m = load_gpu(GetParam(), "wf6af16", graphs);
    std::vector<float> all;  // the prompt, then 11 decode steps of one shape
    testing::greedy_decode(*m, ref.ids("input_ids_2"), 12, &all);
    // The first run must really replay recordings, or both runs would be direct launches.
    const std::string how = m->backend().describe();
    EXPECT_EQ(how.find("CUDA graphs on") != std::string::npos && how.find(" 0 recorded") == std::string::npos, graphs)
        << how;
    return all;
  };
  EXPECT_EQ(decode_logits(true), decode_logits(false));
}

INSTANTIATE_TEST_SUITE_P(Cuda, GpuFixture, ::testing::Values("tiny-llama", "tiny-llama2-sp", "tiny-qwen2"));

}  // namespace
}  // namespace fp6serve
