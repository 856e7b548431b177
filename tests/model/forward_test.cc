// The CPU forward pass against Hugging Face transformers' own outputs (tests/data fixtures).
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <cmath>
#include <numeric>

#include "model/model.h"
#include "tests/model/fixture.h"

namespace fp6serve::model {
namespace {

using testing::fixture_dir;
using testing::kFixtures;
using testing::Reference;
using testing::for_each_reference_row;
using testing::prompt_logits;
using testing::options;
using testing::kl_divergence;

bool same_argmax(const float* a, const float* b, int64_t n) {
  return std::max_element(a, a + n) - a == std::max_element(b, b + n) - b;
}

class Fixture : public ::testing::TestWithParam<std::string> {};

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
    if (std::string(mode) == "wf6af16") EXPECT_GE(top1, 0.65) << GetParam();
  }
}

INSTANTIATE_TEST_SUITE_P(Hf, Fixture, ::testing::Values("tiny-llama", "tiny-llama2-sp", "tiny-qwen2"));

}  // namespace
}  // namespace fp6serve::model

namespace fp6serve::model {
namespace {

// The CPU backend, except that FPx weights are unpacked and dequantized to dense f32 as
// they arrive (optionally only those whose name matches `keep_quantized`... see below).
class DequantizingBackend : public Backend {
 public:
  DequantizingBackend(const ModelConfig& c, std::function<bool(const std::string&)> dequantize)
      : inner_(make_cpu_backend(c)), dequantize_(std::move(dequantize)) {}
  Device device() const override { return inner_->device(); }
  DType act_dtype() const override { return inner_->act_dtype(); }
  DType pack_target(fpx::Format f) const override { return inner_->pack_target(f); }
  std::string describe() const override { return "dequantizing " + inner_->describe(); }
  std::unique_ptr<LinearWeight> adopt_linear(HostLinear&& h) override {
    if (h.packed && dequantize_(h.name)) {
      const fpx::QuantizedMatrix q = fpx::unpack(*h.packed);
      const fpx::Codec codec(q.format);
      h.dense = Tensor::empty({h.rows, h.cols}, DType::kF32);
      for (int64_t r = 0; r < h.rows; ++r)
        for (int64_t c = 0; c < h.cols; ++c) h.dense.data_as<float>()[r * h.cols + c] = fpx::dequantize(q, codec, r, c);
      h.packed.reset();
    }
    return inner_->adopt_linear(std::move(h));
  }
  Tensor adopt_tensor(Tensor t) override { return inner_->adopt_tensor(std::move(t)); }
  KvCache make_kv_cache(int64_t n, int64_t b) override { return inner_->make_kv_cache(n, b); }
  size_t kv_block_bytes(int64_t b) const override { return inner_->kv_block_bytes(b); }
  Tensor activations(int64_t r, int64_t c) override { return inner_->activations(r, c); }
  void embed(const Tensor& t, const Batch& b, Tensor& o) override { inner_->embed(t, b, o); }
  void rms_norm(const Tensor& x, const Tensor& w, double e, Tensor& o) override { inner_->rms_norm(x, w, e, o); }
  void add_rms_norm(Tensor& r, const Tensor& x, const Tensor& w, double e, Tensor& o) override {
    inner_->add_rms_norm(r, x, w, e, o);
  }
  void linear(const Tensor& x, const LinearWeight& w, Tensor& y) override { inner_->linear(x, w, y); }
  void rope_write_kv(Tensor& q, const Batch& b, KvCache& c, int64_t l) override { inner_->rope_write_kv(q, b, c, l); }
  void attention(const Tensor& q, const Batch& b, const KvCache& c, int64_t l, Tensor& o) override {
    inner_->attention(q, b, c, l, o);
  }
  void silu_mul(const Tensor& g, Tensor& o) override { inner_->silu_mul(g, o); }
  void add(Tensor& a, const Tensor& x) override { inner_->add(a, x); }
  void gather_logit_rows(const Tensor& x, const Batch& b, Tensor& o) override { inner_->gather_logit_rows(x, b, o); }
  Tensor to_host_f32(const Tensor& x) override { return inner_->to_host_f32(x); }
  std::vector<Sample> sample(const Tensor& l, const std::vector<SampleRow>& r) override { return inner_->sample(l, r); }

 private:
  std::unique_ptr<Backend> inner_;
  std::function<bool(const std::string&)> dequantize_;
};

// The FPx path computes exactly the model whose weights are the dequantized FPx values: the
// remaining distance to the FP32 reference is quantization error, not a kernel error.
TEST(QuantizedModel, EqualsTheFp32ModelOfItsDequantizedWeights) {
  for (const char* name : {"tiny-llama", "tiny-qwen2"}) {
    Reference ref(name);
    const ModelConfig config = ModelConfig::load(fixture_dir(name));
    auto fpx_model = Model::load(fixture_dir(name), options("wf6af16"));
    auto deq_model = Model::load(fixture_dir(name), options("wf6af16"),
                                 std::make_unique<DequantizingBackend>(config, [](const std::string&) { return true; }));
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

// Diagnostic (run with --gtest_also_run_disabled_tests): quantize one kind of linear layer at a
// time, starting from the exact fp32 weights, to see where the top-1 disagreement comes from.
TEST(QuantizedModel, DISABLED_WhichLinearHurtsMost) {
  // The CPU backend, quantizing the dense fp32 weights whose name contains `only` to FP6.
  class QuantizingBackend : public DequantizingBackend {
   public:
    QuantizingBackend(const ModelConfig& c, std::string only)
        : DequantizingBackend(c, [](const std::string&) { return false; }), only_(std::move(only)) {}
    std::unique_ptr<LinearWeight> adopt_linear(HostLinear&& h) override {
      if (h.name.find(only_) != std::string::npos) {
        const fpx::MatrixView view{h.dense.data(), h.dense.dtype(), h.rows, h.cols, h.name};
        h.packed = std::make_unique<fpx::PackedWeight>(fpx::quantize_pack(view, fpx::kE3M2, DType::kF16));
        h.dense = Tensor();
      }
      return DequantizingBackend::adopt_linear(std::move(h));
    }

   private:
    std::string only_;
  };
  for (const char* name : {"tiny-llama", "tiny-qwen2"}) {
    Reference ref(name);
    const ModelConfig config = ModelConfig::load(fixture_dir(name));
    for (const char* only : {"qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"}) {
      auto m = Model::load(fixture_dir(name), options("fp32"), std::make_unique<QuantizingBackend>(config, only));
      int agree = 0, total = 0;
      for_each_reference_row(*m, ref, [&](int, const float* q, const float* p) {
        agree += same_argmax(q, p, config.vocab_size);
        ++total;
      });
      std::printf("%s only %s quantized: top-1 %.1f%%\n", name, only, 100.0 * agree / total);
    }
  }
}

}  // namespace
}  // namespace fp6serve::model
