// The CPU MoE steps (cpu/ops.h, moe.cc) on router cases whose answers are known: ties, every
// token to one expert, experts without tokens, the two renormalization rules, the shared
// expert's gate; the grouping's order; and the whole Backend::moe against the steps done by
// hand on a batch that mixes a prompt chunk with decode tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/ops.h"
#include "tests/support/random.h"

namespace fp6serve::cpu {
namespace {

// A router whose row e is c[e] * u for a unit vector u, and tokens x = u: logits are c.
struct Logits {
  std::vector<float> x, router;
  Logits(const std::vector<float>& c, int64_t hidden, int64_t tokens = 1) {
    std::vector<float> u(static_cast<size_t>(hidden), 0.0f);
    u[1] = 1.0f;  // a unit vector
    for (int64_t t = 0; t < tokens; ++t) x.insert(x.end(), u.begin(), u.end());
    for (float ce : c)
      for (float ui : u) router.push_back(ce * ui);
  }
};

TEST(MoeRoute, TiesTakeTheLowestExpertFirst) {
  // Experts 1, 2 and 4 tie for the top: top-2 is 1 then 2 (torch.topk leaves the order of
  // ties unspecified; fp6serve picks the lower expert, on every backend).
  const Logits l({1.0f, 3.0f, 3.0f, 0.5f, 3.0f}, 8);
  int32_t ids[2];
  float w[2];
  moe_route(l.x.data(), 1, 8, l.router.data(), 5, 2, true, ids, w, nullptr);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 2);
  EXPECT_FLOAT_EQ(w[0], 0.5f);
  EXPECT_FLOAT_EQ(w[1], 0.5f);
  // All equal (x = 0): experts 0, 1, 2 of 6, each with probability 1/6.
  const std::vector<float> zero(8, 0.0f), router(6 * 8, 0.25f);
  int32_t ids3[3];
  float w3[3];
  moe_route(zero.data(), 1, 8, router.data(), 6, 3, false, ids3, w3, nullptr);
  EXPECT_EQ(std::vector<int32_t>(ids3, ids3 + 3), (std::vector<int32_t>{0, 1, 2}));
  for (float v : w3) EXPECT_FLOAT_EQ(v, 1.0f / 6.0f);
}

TEST(MoeRoute, SoftmaxOverAllExpertsThenTheFamilysRenormalization) {
  const std::vector<float> c = {0.5f, -1.0f, 2.0f, 1.5f};
  const Logits l(c, 4);
  double z = 0;
  for (float v : c) z += std::exp(v);
  const double p2 = std::exp(2.0) / z, p3 = std::exp(1.5) / z;
  int32_t ids[2];
  float w[2];
  // Qwen's norm_topk_prob false: the softmax probabilities themselves.
  moe_route(l.x.data(), 1, 4, l.router.data(), 4, 2, false, ids, w, nullptr);
  EXPECT_EQ(ids[0], 2);
  EXPECT_EQ(ids[1], 3);
  EXPECT_NEAR(w[0], p2, 1e-6);
  EXPECT_NEAR(w[1], p3, 1e-6);
  // Mixtral (and norm_topk_prob): renormalized over the chosen, i.e. a softmax of their logits.
  moe_route(l.x.data(), 1, 4, l.router.data(), 4, 2, true, ids, w, nullptr);
  EXPECT_NEAR(w[0], p2 / (p2 + p3), 1e-6);
  EXPECT_NEAR(w[1], p3 / (p2 + p3), 1e-6);
  EXPECT_NEAR(w[0], 1.0 / (1.0 + std::exp(-0.5)), 1e-6);
}

TEST(MoeRoute, TheSharedExpertsGateIsTheSigmoidOfTheLastRow) {
  const Logits l({0.0f, 1.0f, -0.75f}, 4);  // 2 experts, then the shared expert's gate logit -0.75
  int32_t id;
  float w, scale = NAN;
  moe_route(l.x.data(), 1, 4, l.router.data(), 2, 1, false, &id, &w, &scale);
  EXPECT_EQ(id, 1);
  EXPECT_NEAR(w, std::exp(1.0) / (1.0 + std::exp(1.0)), 1e-6);  // the gate's row is not an expert
  EXPECT_NEAR(scale, 1.0 / (1.0 + std::exp(0.75)), 1e-6);
}

TEST(MoeGroup, AssignmentsByExpertInOrderWithEmptyExperts) {
  // 4 tokens, top-2 of 5 experts; expert 0 and 3 get no token, expert 4 every token.
  const std::vector<int32_t> ids = {4, 1, 2, 4, 4, 1, 4, 2};
  std::vector<int32_t> offsets(6), order(8), row_of(8);
  moe_group(ids.data(), 8, 5, offsets.data(), order.data(), row_of.data());
  EXPECT_EQ(offsets, (std::vector<int32_t>{0, 0, 2, 4, 4, 8}));
  EXPECT_EQ(order, (std::vector<int32_t>{1, 5, 2, 7, 0, 3, 4, 6}));
  for (int32_t r = 0; r < 8; ++r) EXPECT_EQ(row_of[order[r]], r);
  // Every token to one expert.
  const std::vector<int32_t> one(6, 2);
  moe_group(one.data(), 6, 3, offsets.data(), order.data(), row_of.data());
  EXPECT_EQ(std::vector<int32_t>(offsets.begin(), offsets.begin() + 4), (std::vector<int32_t>{0, 0, 0, 6}));
  std::vector<int32_t> iota(6);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(std::vector<int32_t>(order.begin(), order.begin() + 6), iota);
}

TEST(MoeGroup, AnExpertOutsideTheLayerIsAnError) {
  const std::vector<int32_t> ids = {0, 3};
  std::vector<int32_t> offsets(4), order(2), row_of(2);
  EXPECT_THROW(moe_group(ids.data(), 2, 3, offsets.data(), order.data(), row_of.data()), Error);
}

TEST(MoeCombine, WeightedSumInChoiceOrderPlusTheGatedSharedExpert) {
  // 2 tokens, top-2, hidden 3; ys rows in grouped order.
  const std::vector<float> ys = {1, 2, 3, 10, 20, 30, 100, 200, 300, -1, -2, -3};
  const std::vector<int32_t> row_of = {2, 0, 3, 1};
  const std::vector<float> w = {0.25f, 0.75f, 0.5f, 0.5f}, scale = {0.5f, 0.0f}, shared = {4, 4, 4, 9, 9, 9};
  std::vector<float> out(6);
  moe_combine(ys.data(), row_of.data(), w.data(), 2, 2, 3, scale.data(), shared.data(), out.data());
  EXPECT_EQ(out, (std::vector<float>{25.75f + 2, 51.5f + 2, 77.25f + 2, 4.5f, 9, 13.5f}));
}

// The CPU backend's moe equals the steps composed by hand (route, then each token through its
// experts with the plain f32 linears), for a batch mixing a 9-token prompt chunk with three
// decode tokens: MoE layers see only rows, so each token is routed on its own.
TEST(MoeBackend, EqualsTheStepsByHandOnAMixedBatch) {
  const int64_t hidden = 32, inter = 24, experts = 6, k = 2, n = 12;
  model::ModelConfig c;
  c.model_type = "mixtral";
  c.vocab_size = 100;
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.num_layers = 1;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 16;
  c.max_position_embeddings = 256;
  c.moe = {experts, k, inter, 0, true, {}};
  const auto be = make_cpu_backend(c, Options{});
  std::mt19937 rng(static_cast<uint32_t>(testing::test_seed()));
  std::normal_distribution<float> normal;
  auto randn = [&](int64_t count, float scale) {
    std::vector<float> v(static_cast<size_t>(count));
    for (float& x : v) x = scale * normal(rng);
    return v;
  };
  const auto x = randn(n * hidden, 1.0f), router = randn(experts * hidden, 0.2f);
  std::vector<std::vector<float>> gu, dn;
  std::vector<HostLinear> hgu, hdn;
  for (int64_t e = 0; e < experts; ++e) {
    gu.push_back(randn(2 * inter * hidden, 0.1f));
    dn.push_back(randn(hidden * inter, 0.1f));
    for (auto [v, rows, cols, list] :
         {std::tuple{&gu.back(), 2 * inter, hidden, &hgu}, std::tuple{&dn.back(), hidden, inter, &hdn}}) {
      HostLinear h;
      h.id = {model::WeightKind::kExpertGateUp, 0, e};
      h.rows = rows;
      h.cols = cols;
      h.dense = Tensor::empty({rows, cols}, DType::kF32);
      std::copy(v->begin(), v->end(), h.dense.data_as<float>());
      list->push_back(std::move(h));
    }
  }
  MoeWeights w;
  w.router = Tensor::empty({experts, hidden}, DType::kF32);
  std::copy(router.begin(), router.end(), w.router.data_as<float>());
  w.gate_up = be->adopt_experts(std::move(hgu));
  w.down = be->adopt_experts(std::move(hdn));
  Batch batch;
  std::vector<int32_t> tokens(static_cast<size_t>(n), 1);
  batch.add(tokens.data(), 9, 0, {0}, true);
  for (int i = 0; i < 3; ++i) batch.add(tokens.data(), 1, 20 + i, {1 + i, 5 + i}, true);
  KvCache cache = be->make_kv_cache(8, 16);
  be->begin_forward(batch, cache);
  Tensor xt = be->activations(n, hidden), out = be->activations(n, hidden);
  std::copy(x.begin(), x.end(), xt.data_as<float>());
  be->moe(xt, w, out);

  std::vector<int32_t> ids(n * k);
  std::vector<float> weights(n * k);
  moe_route(x.data(), n, hidden, router.data(), experts, k, true, ids.data(), weights.data(), nullptr);
  std::vector<int> used(experts, 0);
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> want(hidden, 0.0f);
    for (int64_t s = 0; s < k; ++s) {
      const int32_t e = ids[t * k + s];
      ++used[e];
      std::vector<float> act(inter);
      for (int64_t i = 0; i < inter; ++i) {
        float g = 0, u = 0;
        for (int64_t j = 0; j < hidden; ++j) {
          g += x[t * hidden + j] * gu[e][i * hidden + j];
          u += x[t * hidden + j] * gu[e][(inter + i) * hidden + j];
        }
        act[i] = g / (1.0f + std::exp(-g)) * u;
      }
      for (int64_t r = 0; r < hidden; ++r) {
        float y = 0;
        for (int64_t i = 0; i < inter; ++i) y += act[i] * dn[e][r * inter + i];
        want[r] += weights[t * k + s] * y;
      }
    }
    for (int64_t r = 0; r < hidden; ++r) EXPECT_NEAR(out.data_as<float>()[t * hidden + r], want[r], 1e-4) << t;
  }
  // The case is one with experts of several tokens (the grouping matters).
  EXPECT_GT(*std::max_element(used.begin(), used.end()), 1);
}

}  // namespace
}  // namespace fp6serve::cpu
