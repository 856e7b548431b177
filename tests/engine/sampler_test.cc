#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "backend/cpu/sampling.h"
#include "fp6serve/error.h"

namespace fp6serve {
namespace {

std::vector<float> logits() {
  return {1.0f, 3.0f, 2.0f, 0.5f, 2.9f, -1.0f};
}

// A request's next token as the CPU backend samples it: the sampler's row, the reference.
Sample sample(Sampler& s, const std::vector<float>& l, std::span<const int32_t> prompt) {
  cpu::SampleScratch work;
  return cpu::sample_row(l.data(), static_cast<int64_t>(l.size()), s.next_row(prompt, {}), work);
}

std::set<int32_t> drawn(GenerateOptions p, int n = 2000) {
  Sampler s(p);
  const auto l = logits();
  std::set<int32_t> seen;
  for (int i = 0; i < n; ++i) seen.insert(sample(s, l, {}).token);
  return seen;
}

TEST(Sampling, GreedyTakesTheArgmax) {
  Sampler s(GenerateOptions{});
  EXPECT_EQ(sample(s, logits(), {}).token, 1);
}

TEST(Sampling, TopKTopPAndMinPRestrictTheCandidates) {
  GenerateOptions p;
  p.temperature = 1.0;
  p.seed = 1;
  EXPECT_EQ(drawn(p).size(), 6u);
  p.top_k = 2;
  EXPECT_EQ(drawn(p), (std::set<int32_t>{1, 4}));
  p.top_k.reset();
  p.top_p = 0.5;  // p(1) = 0.38, p(4) = 0.35: the first two reach 0.5
  EXPECT_EQ(drawn(p), (std::set<int32_t>{1, 4}));
  p.top_p = 1.0;
  p.min_p = 0.5;  // keeps tokens with p >= 0.5 * p_max: logits within ln 2 of the max
  EXPECT_EQ(drawn(p), (std::set<int32_t>{1, 4}));
  p.min_p = 0.3;  // e^-1 = 0.37: token 2 (logit 2) comes back
  EXPECT_EQ(drawn(p), (std::set<int32_t>{1, 2, 4}));
}

TEST(Sampling, RepetitionPenaltyDemotesSeenTokens) {
  GenerateOptions p;
  p.repetition_penalty = 2.0;  // logit 3 -> 1.5 for token 1, so 4 (2.9) wins
  Sampler s(p);
  const std::vector<int32_t> prompt = {1};
  EXPECT_EQ(sample(s, logits(), prompt).token, 4);
}

TEST(Sampling, LogprobsAreTheModelsLogSoftmax) {
  GenerateOptions p;
  p.top_logprobs = 2;
  Sampler s(p);
  const auto l = logits();
  const Sample r = sample(s, l, {});
  double z = 0;
  for (float v : l) z += std::exp(v);
  EXPECT_NEAR(r.logprob, 3.0 - std::log(z), 1e-5);
  ASSERT_EQ(r.top.size(), 2u);
  EXPECT_EQ(r.top[0].token, 1);
  EXPECT_EQ(r.top[1].token, 4);
  EXPECT_NEAR(r.top[1].logprob, 2.9 - std::log(z), 1e-5);
}

TEST(Sampling, UnsetOptionsTakeTheModelsDefaultsOnlyWhenItSamples) {
  model::GenerationDefaults d;
  d.temperature = 0.7;
  d.top_k = 1;
  Sampler greedy_model(GenerateOptions{}, d);  // without do_sample its temperature does not apply
  EXPECT_EQ(greedy_model.next_row({}, {}).inv_temperature, 0.0f);
  d.do_sample = true;
  Sampler sampling_model(GenerateOptions{}, d);
  const SampleRow row = sampling_model.next_row({}, {});
  EXPECT_FLOAT_EQ(row.inv_temperature, static_cast<float>(1 / 0.7));
  EXPECT_EQ(row.top_k, 1);
  GenerateOptions set;
  set.temperature = 0.0;  // what the request sets wins
  EXPECT_EQ(Sampler(set, d).next_row({}, {}).inv_temperature, 0.0f);
}

TEST(Sampling, BadParametersNameThemselves) {
  auto expect_bad = [](GenerateOptions p, const char* name) {
    try {
      p.validate();
      ADD_FAILURE() << name;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  };
  GenerateOptions p;
  p.temperature = NAN;
  expect_bad(p, "temperature");
  p = {};
  p.top_p = 0;
  expect_bad(p, "top_p");
  p = {};
  p.top_k = -3;
  expect_bad(p, "top_k");
  p = {};
  p.min_p = 1;
  expect_bad(p, "min_p");
  p = {};
  p.repetition_penalty = 0;
  expect_bad(p, "repetition_penalty");
  p = {};
  p.presence_penalty = 3;
  expect_bad(p, "presence_penalty");
  p = {};
  p.top_logprobs = 21;
  expect_bad(p, "logprobs");
}

}  // namespace
}  // namespace fp6serve
