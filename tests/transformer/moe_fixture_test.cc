// What is particular to the tiny MoE fixtures (tests/data/tiny-mixtral, tiny-qwen2-moe,
// tiny-qwen3-moe, made by tools/make_moe_fixtures.py with transformers 5 from seeded random
// weights): the family, and the router's edge cases as torch computed them. Their logits,
// hidden states, batches, greedy continuations and quantized agreement are checked by
// tests/transformer/forward_test.cc, as the dense fixtures'. Every test skips, saying how to
// make it, while its fixture is absent.
#include <gtest/gtest.h>

#include <algorithm>

#include "backend/cpu/ops.h"
#include "tests/support/fixture.h"
#include "tests/support/moe_checkpoint.h"
#include "transformer/model.h"

namespace fp6serve {
namespace {

using testing::fixture_dir;
using testing::Reference;

class MoeFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (const std::string why = testing::moe_fixture_missing(GetParam()); !why.empty()) GTEST_SKIP() << why;
  }
};

TEST_P(MoeFixture, TheCheckpointIsTheFamilyItClaims) {
  const auto c = model::ModelConfig::load(fixture_dir(GetParam()));
  EXPECT_TRUE(c.is_moe());
  EXPECT_EQ(c.model_type, Reference(GetParam()).json["config_effective"]["model_type"].get<std::string>());
}

// The router edge cases the fixture script ran through torch (softmax, topk, the family's
// renormalization): cpu::moe_route must give torch's weights, and its experts with their
// weights wherever the chosen set is not decided by a tie (torch.topk does not specify the
// order of ties; fp6serve takes the lowest expert first, and the weights chosen are the same
// values either way).
TEST_P(MoeFixture, RouterEdgeCasesAgreeWithTorch) {
  Reference ref(GetParam());
  ASSERT_TRUE(ref.json.contains("router_edge_cases"));
  int checked = 0;
  for (const auto& c : ref.json["router_edge_cases"]) {
    const auto logits = c["logits"].get<std::vector<std::vector<float>>>();
    const int64_t k = c["top_k"], experts = static_cast<int64_t>(logits[0].size());
    const bool renormalize = c["renormalize"];
    // Tokens x = e_e-th unit vectors against a router holding the logits as columns: x . router[e] = logits[t][e].
    const int64_t n = static_cast<int64_t>(logits.size()), hidden = n;
    std::vector<float> x(n * hidden, 0.0f), router(experts * hidden, 0.0f);
    for (int64_t t = 0; t < n; ++t) {
      x[t * hidden + t] = 1.0f;
      for (int64_t e = 0; e < experts; ++e) router[e * hidden + t] = logits[t][e];
    }
    std::vector<int32_t> ids(n * k);
    std::vector<float> w(n * k);
    cpu::moe_route(x.data(), n, hidden, router.data(), experts, k, renormalize, ids.data(), w.data(), nullptr);
    const auto torch_ids = c["torch_ids"].get<std::vector<std::vector<int32_t>>>();
    const auto torch_w = c["torch_weights"].get<std::vector<std::vector<float>>>();
    for (int64_t t = 0; t < n; ++t) {
      std::vector<float> ours(w.begin() + t * k, w.begin() + (t + 1) * k), theirs = torch_w[t];
      std::sort(ours.begin(), ours.end());
      std::sort(theirs.begin(), theirs.end());
      for (int64_t s = 0; s < k; ++s) EXPECT_NEAR(ours[s], theirs[s], 1e-6) << c["name"] << " token " << t;
      // The chosen experts as a set (ordered by id) with their weights: experts tied inside
      // the chosen set (ties_at_the_top at top-3) come in either order.
      auto by_id = [](std::vector<int32_t> e, std::vector<float> v) {
        std::vector<std::pair<int32_t, float>> p;
        for (size_t i = 0; i < e.size(); ++i) p.emplace_back(e[i], v[i]);
        std::sort(p.begin(), p.end());
        return p;
      };
      if (!c["ties"].get<bool>()) {
        const auto a =
            by_id({ids.begin() + t * k, ids.begin() + (t + 1) * k}, {w.begin() + t * k, w.begin() + (t + 1) * k});
        const auto b = by_id(torch_ids[t], torch_w[t]);
        ASSERT_EQ(a.size(), b.size());
        for (size_t s = 0; s < a.size(); ++s) {
          EXPECT_EQ(a[s].first, b[s].first) << c["name"] << " token " << t;
          EXPECT_NEAR(a[s].second, b[s].second, 1e-6) << c["name"] << " token " << t << " expert " << a[s].first;
        }
      } else
        std::printf("%s, token %lld: fp6serve picks %d..., torch %d...\n", c["name"].get<std::string>().c_str(),
                    static_cast<long long>(t), ids[t * k], torch_ids[t][0]);
    }
    ++checked;
  }
  EXPECT_GE(checked, 3);
}

INSTANTIATE_TEST_SUITE_P(Hf, MoeFixture, ::testing::Values("tiny-mixtral", "tiny-qwen2-moe", "tiny-qwen3-moe"));

}  // namespace
}  // namespace fp6serve
