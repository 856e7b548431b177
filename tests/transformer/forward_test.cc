// The CPU forward pass against Hugging Face transformers' own outputs (tests/data fixtures,
// dense and mixture-of-experts).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>

#include "tests/support/delegating_backend.h"
#include "tests/support/fixture.h"
#include "tests/support/moe_checkpoint.h"
#include "transformer/model.h"

namespace fp6serve {
namespace {

using testing::fixture_dir;
using testing::for_each_reference_row;
using testing::kFixtures;
using testing::kl_divergence;
using testing::options;
using testing::prompt_logits;
using testing::Reference;

bool same_argmax(const float* a, const float* b, int64_t n) {
  return std::max_element(a, a + n) - a == std::max_element(b, b + n) - b;
}

// Dense and mixture-of-experts fixtures alike; the MoE ones are made by
// tools/make_moe_fixtures.py and skip, saying how to make them, while absent.
class Fixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (const std::string why = testing::moe_fixture_missing(GetParam()); !why.empty()) GTEST_SKIP() << why;
  }
};

TEST_P(Fixture, Fp32LogitsMatchTransformers) {
  Reference ref(GetParam());
  auto m = Model::load(fixture_dir(GetParam()), options("fp32"));
  const int64_t vocab = m->config().vocab_size;
  std::map<int, std::pair<float, float>> per_prompt;  // max |diff|, max |logit|
  for_each_reference_row(*m, ref, [&](int i, const float* got, const float* want) {
    auto& [max_diff, max_ref] = per_prompt[i];
    for (int64_t v = 0; v < vocab; ++v) {
      max_ref = std::max(max_ref, std::fabs(want[v]));
      max_diff = std::max(max_diff, std::fabs(got[v] - want[v]));
    }
  });
  ASSERT_FALSE(per_prompt.empty());
  for (const auto& [i, d] : per_prompt) {
    EXPECT_LE(d.first, 1e-3f * d.second) << GetParam() << " prompt " << i;
    std::printf("%s prompt %d: max|dlogit| = %.3g (max|logit| %.3g)\n", GetParam().c_str(), i, d.first, d.second);
  }
}

TEST_P(Fixture, HiddenStatesMatchTransformersLayerByLayer) {
  Reference ref(GetParam());
  auto m = Model::load(fixture_dir(GetParam()), options("fp32"));
  const auto ids = ref.ids("input_ids_1");
  const auto want = ref.floats("hidden_states_1");
  const int64_t n = static_cast<int64_t>(ids.size()), h = m->config().hidden_size;
  KvCache cache = m->make_kv_cache(4, 16);
  Batch b;
  b.add(ids.data(), n, 0, {0, 1, 2, 3}, true);
  int64_t seen = 0;
  m->forward(b, cache, [&](int64_t index, const Tensor& hidden) {
    const float* got = hidden.data_as<float>();
    float max_diff = 0, max_ref = 0;
    for (int64_t k = 0; k < n * h; ++k) {
      max_ref = std::max(max_ref, std::fabs(want[index * n * h + k]));
      max_diff = std::max(max_diff, std::fabs(got[k] - want[index * n * h + k]));
    }
    EXPECT_LE(max_diff, 1e-4f * std::max(1.0f, max_ref)) << GetParam() << " hidden state " << index;
    ++seen;
  });
  EXPECT_EQ(seen, m->config().num_layers + 1);
}

TEST_P(Fixture, BatchOfDifferentLengthsMatchesTheLeftPaddedReference) {
  Reference ref(GetParam());
  auto m = Model::load(fixture_dir(GetParam()), options("fp32"));
  const int64_t vocab = m->config().vocab_size;
  const auto want = ref.floats("batch_last_logits");
  KvCache cache = m->make_kv_cache(64, 16);
  Batch b;
  int32_t next_block = 0;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) prompts.push_back(ref.ids("input_ids_" + std::to_string(i)));
  for (const auto& ids : prompts) {
    std::vector<int32_t> table;
    for (size_t t = 0; t < ids.size(); t += 16) table.push_back(next_block++);
    b.add(ids.data(), static_cast<int64_t>(ids.size()), 0, table, true);
  }
  const Tensor logits = m->forward(b, cache);
  ASSERT_EQ(logits.dim(0), 4);
  float max_ref = 0, max_diff = 0;
  for (int64_t k = 0; k < 4 * vocab; ++k) {
    max_ref = std::max(max_ref, std::fabs(want[k]));
    max_diff = std::max(max_diff, std::fabs(logits.data_as<float>()[k] - want[k]));
  }
  EXPECT_LE(max_diff, 1e-3f * max_ref);
}

// Greedy decoding with the KV cache, token by token, equals transformers' greedy ids up to
// the first step whose top-1/top-2 margin is within numerical noise.
TEST_P(Fixture, GreedyContinuationsAreIdentical) {
  Reference ref(GetParam());
  auto m = Model::load(fixture_dir(GetParam()), options("fp32"));
  const int64_t vocab = m->config().vocab_size;
  for (const auto& g : ref.json["greedy"]) {
    const int gi = g["index"];
    const auto prompt = ref.ids("greedy_prompt_" + std::to_string(gi));
    const auto want = ref.ids("greedy_ids_" + std::to_string(gi));
    const auto margins = g["top1_minus_top2"].get<std::vector<double>>();
    const auto got = testing::greedy_decode(*m, prompt, want.size());
    size_t compared = 0;
    for (size_t s = 0; s < want.size(); ++s) {
      if (margins[s] < 1e-3) break;  // a near tie: either token is right
      ASSERT_EQ(got[s], want[s]) << GetParam() << " greedy " << gi << " step " << s;
      ++compared;
    }
    std::printf("%s greedy %d: %zu of %zu tokens identical before any near tie\n", GetParam().c_str(), gi, compared,
                want.size());
    EXPECT_GE(compared, 8u);
  }
}

// FP6 (and FP5, FP4) against the FP32 reference logits: top-1 agreement and KL divergence.
TEST_P(Fixture, QuantizedTopOneAgreementAndKl) {
  Reference ref(GetParam());
  const int64_t vocab = ref.json["config_effective"]["vocab_size"];
  for (const char* mode : {"wf6af16", "wf5af16", "wf4af16"}) {
    auto m = Model::load(fixture_dir(GetParam()), options(mode));
    int64_t agree = 0, total = 0;
    double kl_sum = 0;
    for_each_reference_row(*m, ref, [&](int, const float* q, const float* pr) {
      agree += same_argmax(q, pr, vocab);
      kl_sum += kl_divergence(pr, q, vocab);
      ++total;
    });
    const double top1 = static_cast<double>(agree) / static_cast<double>(total);
    std::printf("%s %s: top-1 agreement %.1f%% over %lld positions, mean KL %.5f nats\n", GetParam().c_str(), mode,
                100 * top1, static_cast<long long>(total), kl_sum / static_cast<double>(total));
    // Measured (2026-11-23): wf6af16 83.5% / 84.8% / 70.9% on tiny-llama / tiny-llama2-sp /
    // tiny-qwen2. These random-weight models are far more fragile than trained ones: even
    // 8-bit e4m3 reaches only 78-90% (docs/quality.md). The bound guards against a broken
    // quantized path (which lands near 0%); exactness is EqualsTheFp32ModelOfItsDequantizedWeights.
    // A random-weight MoE also flips router choices under quantization: its guard is 0.5.
    const double bound = model::ModelConfig::load(fixture_dir(GetParam())).is_moe() ? 0.5 : 0.65;
    if (std::string(mode) == "wf6af16") EXPECT_GE(top1, bound) << GetParam();
  }
}

INSTANTIATE_TEST_SUITE_P(Hf, Fixture, ::testing::Values("tiny-llama", "tiny-llama2-sp", "tiny-qwen2"));
INSTANTIATE_TEST_SUITE_P(HfMoe, Fixture, ::testing::Values("tiny-mixtral", "tiny-qwen2-moe", "tiny-qwen3-moe"));

}  // namespace
}  // namespace fp6serve

namespace fp6serve {
namespace {

// The FPx path computes exactly the model whose weights are the dequantized FPx values: the
// remaining distance to the FP32 reference is quantization error, not a kernel error.
TEST(QuantizedModel, EqualsTheFp32ModelOfItsDequantizedWeights) {
  for (const char* name : {"tiny-llama", "tiny-qwen2"}) {
    Reference ref(name);
    const ModelConfig config = ModelConfig::load(fixture_dir(name));
    auto fpx_model = Model::load(fixture_dir(name), options("wf6af16"));
    auto deq_model =
        Model::load(fixture_dir(name), options("wf6af16"),
                    std::make_unique<testing::DequantizingBackend>(config, [](model::WeightId) { return true; }));
    const auto ids = ref.ids("input_ids_3");
    const auto a = prompt_logits(*fpx_model, ids), b = prompt_logits(*deq_model, ids);
    float max_diff = 0, max_ref = 0;
    for (size_t k = 0; k < a.size(); ++k) {
      max_diff = std::max(max_diff, std::fabs(a[k] - b[k]));
      max_ref = std::max(max_ref, std::fabs(b[k]));
    }
    EXPECT_LE(max_diff, 1e-4f * max_ref) << name;
  }
}

// Random-weight models (bench, serve --random-weights) quantize lm_head only when asked, as
// loading a checkpoint does: about 6/16 of its 16-bit bytes in FP6.
TEST(RandomModel, QuantizesTheLmHeadOnlyWhenAsked) {
  const ModelConfig config = ModelConfig::load(fixture_dir("tiny-llama"));
  const auto mode = model::QuantizationMode::parse("wf6af16");
  Options o = options("wf6af16");
  const size_t dense = Model::random(config, mode, o)->weights().lm_head->weight_bytes;
  o.quantize_lm_head = true;
  auto m = Model::random(config, mode, o);
  const size_t packed = m->weights().lm_head->weight_bytes;
  EXPECT_LT(packed, dense / 2);
  EXPECT_GT(packed, dense / 4);
  const auto l = prompt_logits(*m, {1, 2, 3});
  EXPECT_TRUE(std::all_of(l.begin(), l.end(), [](float v) { return std::isfinite(v); }));
}

}  // namespace
}  // namespace fp6serve
