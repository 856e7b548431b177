// Mixture-of-experts models on the CPU, from checkpoints made out of the dense fixtures
// (tests/support/moe_checkpoint.h): loading in Mixtral's and the Qwens' layouts, the forward
// against transformers' logits of the dense fixture they are equivalent to, the FPx experts
// against the FP32 model of their dequantized weights, batches mixing prompt chunks and decode
// tokens, the prequantized round trip, clear errors for bad checkpoints, random weights.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>

#include "fp6serve/error.h"
#include "loader/prequantized.h"
#include "tests/support/delegating_backend.h"
#include "tests/support/fixture.h"
#include "tests/support/moe_checkpoint.h"
#include "transformer/device.h"
#include "transformer/model.h"

namespace fp6serve {
namespace {

namespace fs = std::filesystem;
using testing::fixture_dir;
using testing::for_each_reference_row;
using testing::MoeSynth;
using testing::options;
using testing::prompt_logits;
using testing::Reference;
using testing::TempDir;

// max |a - b| over max |b|.
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d = std::max(d, static_cast<double>(std::fabs(a[i] - b[i])));
    m = std::max(m, static_cast<double>(std::fabs(b[i])));
  }
  return d / m;
}

// The MoE model of equal experts computes the dense fixture's function: its FP32 logits match
// transformers' logits of the dense model (as the dense model's own do), and ours of it.
void expect_equals_dense(const std::string& dense, const MoeSynth& synth) {
  TempDir dir(synth.model_type);
  testing::write_moe_checkpoint(dense, dir.path, synth);
  auto moe = Model::load(dir.path, options("fp32"));
  ASSERT_TRUE(moe->config().is_moe());
  auto ref_model = Model::load(fixture_dir(dense), options("fp32"));
  Reference ref(dense);
  const int64_t vocab = moe->config().vocab_size;
  float max_diff = 0, max_ref = 0;
  for_each_reference_row(*moe, ref, [&](int, const float* got, const float* want) {
    for (int64_t v = 0; v < vocab; ++v) {
      max_ref = std::max(max_ref, std::fabs(want[v]));
      max_diff = std::max(max_diff, std::fabs(got[v] - want[v]));
    }
  });
  EXPECT_LE(max_diff, 1e-3f * max_ref) << synth.model_type << " from " << dense;
  const auto ids = ref.ids("input_ids_3");
  EXPECT_LE(rel_diff(prompt_logits(*moe, ids), prompt_logits(*ref_model, ids)), 1e-5) << synth.model_type;
  std::printf("%s of %lld experts from %s: max|dlogit| vs transformers %.3g (max|logit| %.3g)\n",
              synth.model_type.c_str(), static_cast<long long>(synth.experts), dense.c_str(), max_diff, max_ref);
}

TEST(MoeModel, MixtralOfEqualExpertsComputesTheDenseModel) {
  expect_equals_dense("tiny-llama", {.model_type = "mixtral", .experts = 4, .top_k = 2});
}

TEST(MoeModel, Qwen2MoeWithSharedExpertAndADenseLayerComputesTheDenseModel) {
  // Experts at half the MLP (renormalized top-k), the shared expert at sigmoid(0) = 0.5 of it,
  // layer 1 a dense MLP (mlp_only_layers): the sum is the MLP again.
  expect_equals_dense("tiny-qwen2", {.model_type = "qwen2_moe",
                                     .experts = 6,
                                     .top_k = 3,
                                     .norm_topk_prob = true,
                                     .shared = true,
                                     .dense_layers = {1}});
}

TEST(MoeModel, TheConfigSaysWhichLayersAreSparse) {
  TempDir dir("qwen2-layers");
  testing::write_moe_checkpoint("tiny-qwen2", dir.path,
                                {.model_type = "qwen2_moe", .shared = true, .dense_layers = {1}});
  const auto c = model::ModelConfig::load(dir.path);
  EXPECT_EQ(c.family, model::Family::kQwen2Moe);
  EXPECT_TRUE(c.moe_layer(0));
  EXPECT_FALSE(c.moe_layer(1));
  EXPECT_EQ(c.moe.shared_intermediate_size, c.intermediate_size);
  EXPECT_TRUE(c.qkv_bias);
  auto m = Model::load(dir.path, options("wf6af16"));
  EXPECT_TRUE(m->weights().layers[0].moe && !m->weights().layers[0].gate_up);
  EXPECT_TRUE(!m->weights().layers[1].moe && m->weights().layers[1].gate_up);
  // Every expert's linears and the shared expert quantized, the router kept in f32.
  const model::MoeWeights& moe = *m->weights().layers[0].moe;
  EXPECT_TRUE(moe.gate_up->quantized && moe.down->quantized && moe.shared_gate_up->quantized &&
              moe.shared_down->quantized);
  EXPECT_EQ(moe.router.dtype(), DType::kF32);
  EXPECT_EQ(moe.router.dim(0), 4 + 1);  // the experts' rows, then the shared expert's gate
}

// The FPx path of every expert computes exactly the model of its dequantized weights.
TEST(MoeModel, QuantizedExpertsEqualTheFp32ModelOfTheirDequantizedWeights) {
  const std::pair<const char*, MoeSynth> cases[] = {
      {"tiny-llama", {.model_type = "mixtral", .experts = 8, .top_k = 2, .distinct = true}},
      {"tiny-llama", {.model_type = "qwen3_moe", .experts = 8, .top_k = 3, .norm_topk_prob = false, .distinct = true}},
      {"tiny-qwen2", {.model_type = "qwen2_moe", .experts = 5, .top_k = 2, .shared = true, .distinct = true}}};
  for (const auto& [dense, synth] : cases) {
    TempDir dir(synth.model_type);
    testing::write_moe_checkpoint(dense, dir.path, synth);
    const auto config = model::ModelConfig::load(dir.path);
    auto fpx = Model::load(dir.path, options("wf6af16"));
    auto deq =
        Model::load(dir.path, options("wf6af16"),
                    std::make_unique<testing::DequantizingBackend>(config, [](model::WeightId) { return true; }));
    const auto ids = Reference(dense).ids("input_ids_3");
    EXPECT_LE(rel_diff(prompt_logits(*fpx, ids), prompt_logits(*deq, ids)), 1e-4) << synth.model_type;
  }
}

// A batch of prompt chunks and decode tokens of several sequences gives each sequence the
// logits it gets alone (experts see rows, whatever sequence they come from).
TEST(MoeModel, MixedBatchesOfPromptChunksAndDecodeTokensEqualSeparatePasses) {
  TempDir dir("mixtral-mixed");
  testing::write_moe_checkpoint("tiny-llama", dir.path,
                                {.model_type = "mixtral", .experts = 8, .top_k = 2, .distinct = true});
  auto m = Model::load(dir.path, options("wf6af16"));
  const int64_t vocab = m->config().vocab_size;
  Reference ref("tiny-llama");
  const auto a = ref.ids("input_ids_2"), b = ref.ids("input_ids_3");  // 33 and 130 tokens
  // Alone: a's prompt then a decode token; b's first 40 tokens then its next 24.
  const auto alone_a = prompt_logits(*m, {a.begin(), a.end()});
  const auto alone_b = prompt_logits(*m, {b.begin(), b.begin() + 64});
  // Together: pass 1 holds a's prompt without its last token and b's first 40; pass 2 a's
  // last token (decode-like) and b's next 24 tokens.
  KvCache cache = m->make_kv_cache(16, 16);
  const std::vector<int32_t> ta = {0, 1, 2}, tb = {3, 4, 5, 6};
  Batch p1, p2;
  p1.add(a.data(), 32, 0, ta, true, true);
  p1.add(b.data(), 40, 0, tb, true, true);
  const Tensor l1 = m->forward(p1, cache);
  p2.add(a.data() + 32, 1, 32, ta, true, true);
  p2.add(b.data() + 40, 24, 40, tb, true, true);
  const Tensor l2 = m->forward(p2, cache);
  auto rows = [&](const Tensor& t, int64_t r0, int64_t count) {
    return std::vector<float>(t.data_as<float>() + r0 * vocab, t.data_as<float>() + (r0 + count) * vocab);
  };
  auto part = [&](const std::vector<float>& v, int64_t r0, int64_t count) {
    return std::vector<float>(v.begin() + r0 * vocab, v.begin() + (r0 + count) * vocab);
  };
  EXPECT_LE(rel_diff(rows(l1, 0, 32), part(alone_a, 0, 32)), 1e-5);
  EXPECT_LE(rel_diff(rows(l1, 32, 40), part(alone_b, 0, 40)), 1e-5);
  EXPECT_LE(rel_diff(rows(l2, 0, 1), part(alone_a, 32, 1)), 1e-5);
  EXPECT_LE(rel_diff(rows(l2, 1, 24), part(alone_b, 40, 24)), 1e-5);
}

TEST(MoeModel, PrequantizedRoundTripGivesIdenticalLogits) {
  const std::pair<const char*, MoeSynth> cases[] = {
      {"tiny-qwen2", {.model_type = "qwen2_moe", .experts = 4, .shared = true, .dense_layers = {0}, .distinct = true}},
      {"tiny-llama", {.model_type = "qwen3_moe", .experts = 4, .distinct = true}}};
  for (const auto& [dense, synth] : cases) {
    TempDir dir(synth.model_type), out(synth.model_type + "-q");
    testing::write_moe_checkpoint(dense, dir.path, synth);
    loader::write_prequantized(dir.path, out.path,
                               {model::QuantizationMode::parse("wf6af16"), false, DType::kF16, false});
    auto direct = Model::load(dir.path, options("wf6af16"));
    auto loaded = Model::load(out.path, options("wf6af16"));
    const auto ids = Reference(dense).ids("input_ids_2");
    EXPECT_EQ(prompt_logits(*direct, ids), prompt_logits(*loaded, ids)) << synth.model_type;
  }
}

TEST(MoeModel, RandomWeightsOfAMoeShapeRun) {
  for (const char* type : {"mixtral", "qwen2_moe", "qwen3_moe"}) {
    nlohmann::json j = {{"model_type", type},          {"vocab_size", 300},
                        {"hidden_size", 64},           {"intermediate_size", 96},
                        {"num_hidden_layers", 2},      {"num_attention_heads", 4},
                        {"num_key_value_heads", 2},    {"num_experts", 6},
                        {"num_local_experts", 6},      {"num_experts_per_tok", 2},
                        {"moe_intermediate_size", 32}, {"shared_expert_intermediate_size", 48}};
    const auto config = model::ModelConfig::parse(j.dump(), type);
    const auto mode = model::QuantizationMode::parse("wf6af16");
    auto m = Model::random(config, mode, options("wf6af16"));
    const std::vector<int32_t> ids = {1, 2, 3, 4, 5};
    const auto l = prompt_logits(*m, ids);
    EXPECT_TRUE(std::all_of(l.begin(), l.end(), [](float v) { return std::isfinite(v); })) << type;
    // The roofline's bytes: one token reads 2 of the 6 experts of each MoE layer (a uniform
    // router's expectation), many tokens all of them.
    const model::ModelWeights& w = m->weights();
    size_t experts = 0;
    for (const auto& layer : w.layers)
      if (layer.moe) experts += layer.moe->gate_up->weight_bytes + layer.moe->down->weight_bytes;
    EXPECT_NEAR(static_cast<double>(w.bytes_read(1, 2)), static_cast<double>(w.bytes() - experts * 4 / 6), 2.0) << type;
    EXPECT_NEAR(static_cast<double>(w.bytes_read(10000, 2)), static_cast<double>(w.bytes()), 2.0) << type;
  }
}

// --- bad checkpoints: an error naming what and where --------------------------------------

class MoeLoadErrors : public ::testing::Test {
 protected:
  void SetUp() override { testing::write_moe_checkpoint("tiny-llama", dir_.path, {.model_type = "mixtral"}); }
  Error load_error() {
    try {
      Model::load(dir_.path, options(""));
    } catch (const Error& e) {
      return e;
    }
    ADD_FAILURE() << "loading succeeded";
    return Error(ErrorKind::kInternal, "");
  }
  void edit_config(const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j;
    std::ifstream(dir_.path / "config.json") >> j;
    edit(j);
    std::ofstream(dir_.path / "config.json") << j.dump();
  }
  // Rewrites model.safetensors; `edit` may rename a tensor, change its shape, or drop it.
  void edit_tensors(const std::function<bool(std::string&, std::vector<int64_t>&)>& edit) {
    std::vector<std::tuple<std::string, loader::StDType, std::vector<int64_t>, std::vector<uint8_t>>> kept;
    {
      loader::SafetensorsFile f(dir_.path / "model.safetensors");
      for (const auto& [name, t] : f.tensors()) {
        std::string n = name;
        std::vector<int64_t> shape = t.shape;
        std::vector<uint8_t> data(t.data, t.data + t.bytes);
        if (edit(n, shape)) {
          if (shape != t.shape) data.resize(static_cast<size_t>(shape_numel(shape)) * 2);
          kept.emplace_back(n, t.dtype, shape, std::move(data));
        }
      }
    }
    loader::SafetensorsWriter w;
    for (auto& [n, d, s, data] : kept) w.add(n, d, s, data.data(), data.size());
    w.write(dir_.path / "model.safetensors");
  }
  TempDir dir_{"moe-errors"};
};

void expect_mentions(const Error& e, ErrorKind kind, std::initializer_list<const char*> parts) {
  EXPECT_EQ(e.kind(), kind) << e.what();
  for (const char* p : parts)
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "'" << p << "' not in: " << e.what();
}

TEST_F(MoeLoadErrors, TheUntouchedCheckpointLoads) {
  EXPECT_NO_THROW(Model::load(dir_.path, options("")));
}

TEST_F(MoeLoadErrors, AMissingExpertIsNamed) {
  edit_tensors(
      [](std::string& n, std::vector<int64_t>&) { return n != "model.layers.2.block_sparse_moe.experts.3.w2.weight"; });
  expect_mentions(load_error(), ErrorKind::kNotFound,
                  {"model.layers.2.block_sparse_moe.experts.3.w2.weight", "mixtral"});
}

TEST_F(MoeLoadErrors, ARouterOfTheWrongShapeIsNamed) {
  edit_tensors([](std::string& n, std::vector<int64_t>& shape) {
    if (n == "model.layers.0.block_sparse_moe.gate.weight") shape[0] = 3;
    return true;
  });
  expect_mentions(load_error(), ErrorKind::kBadInput, {"model.layers.0.block_sparse_moe.gate.weight", "[3, 128]"});
}

TEST_F(MoeLoadErrors, FusedExpertTensorsAreRefusedSayingWhy) {
  edit_tensors([](std::string& n, std::vector<int64_t>&) {
    if (n == "model.layers.0.block_sparse_moe.experts.0.w1.weight") n = "model.layers.0.mlp.experts.gate_up_proj";
    return true;
  });
  expect_mentions(load_error(), ErrorKind::kUnsupported,
                  {"model.layers.0.mlp.experts.gate_up_proj", "one tensor per expert"});
}

TEST_F(MoeLoadErrors, MoreChoicesThanExpertsIsAConfigError) {
  edit_config([](nlohmann::json& j) { j["num_experts_per_tok"] = 5; });
  expect_mentions(load_error(), ErrorKind::kBadInput, {"config.json", "num_experts_per_tok", "num_local_experts"});
}

TEST_F(MoeLoadErrors, ConflictingExpertCountsAreAConfigError) {
  edit_config([](nlohmann::json& j) { j["num_experts"] = 8; });
  expect_mentions(load_error(), ErrorKind::kBadInput, {"config.json", "num_local_experts", "disagree"});
}

TEST_F(MoeLoadErrors, QwenFieldsAreCheckedToo) {
  edit_config([](nlohmann::json& j) {
    j["model_type"] = "qwen2_moe";
    j["mlp_only_layers"] = {0, 9};
  });
  expect_mentions(load_error(), ErrorKind::kBadInput, {"config.json", "mlp_only_layers", "[0, 4)", "9"});
  edit_config([](nlohmann::json& j) {
    j["mlp_only_layers"] = nlohmann::json::array();
    j["use_sliding_window"] = true;
  });
  expect_mentions(load_error(), ErrorKind::kUnsupported, {"config.json", "use_sliding_window", "qwen2_moe"});
}

}  // namespace
}  // namespace fp6serve
