// The continuous-batching engine on the CPU backend in FP32 (exact and deterministic).
#include "engine/engine.h"

#include <gtest/gtest.h>

#include <limits>
#include <map>
#include <random>

#include "fp6serve/error.h"
#include "tests/support/fixture.h"

namespace fp6serve {
namespace {

struct Result {
  std::vector<int32_t> tokens;
  std::string text;
  FinishReason finish = FinishReason::kNone;
  int64_t chunks = 0;
  int64_t first_chunk_step = -1;
};

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = Model::load(testing::fixture_dir("tiny-llama"), testing::options("fp32")).release();
    tokenizer_ = new Tokenizer(Tokenizer::load(testing::fixture_dir("tiny-llama")));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
  }

  std::unique_ptr<Engine> make(int64_t num_blocks = 256, int64_t budget = 768) {
    Options o = testing::options("fp32");
    o.kv_cache_blocks = num_blocks;
    o.kv_block_size = 16;
    o.max_batch_tokens = budget;
    return std::make_unique<Engine>(*model_, *tokenizer_, o);
  }

  static GenerateOptions greedy(int64_t n) {
    GenerateOptions p;
    p.max_new_tokens = n;
    p.ignore_eos = true;
    return p;
  }

  static std::vector<int32_t> prompt(int seed, int len) {
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::uniform_int_distribution<int32_t> tok(3, 1000);
    std::vector<int32_t> p(static_cast<size_t>(len));
    for (auto& t : p) t = tok(rng);
    return p;
  }

  // Submits, then steps until done; step counts let tests see interleaving.
  std::map<uint64_t, Result> run(Engine& e, const std::vector<std::pair<std::vector<int32_t>, GenerateOptions>>& reqs,
                                 std::vector<uint64_t>* ids = nullptr) {
    std::map<uint64_t, Result> out;
    int64_t step = 0;
    for (const auto& [p, g] : reqs) {
      const uint64_t id = e.submit(p, g, [&out, &step](const StreamChunk& c) {
        Result& r = out[c.request_id];
        r.tokens.insert(r.tokens.end(), c.token_ids.begin(), c.token_ids.end());
        r.text += c.text;
        ++r.chunks;
        if (r.first_chunk_step < 0) r.first_chunk_step = step;
        if (c.finish != FinishReason::kNone) r.finish = c.finish;
      });
      if (ids) ids->push_back(id);
    }
    while (!e.idle()) {
      e.step();
      ++step;
    }
    return out;
  }

  static Model* model_;
  static Tokenizer* tokenizer_;
};

Model* EngineTest::model_ = nullptr;
Tokenizer* EngineTest::tokenizer_ = nullptr;

TEST_F(EngineTest, BatchingDoesNotChangeGreedyResults) {
  auto e = make();
  const auto target = prompt(1, 37);
  const auto alone = run(*e, {{target, greedy(24)}});
  std::vector<std::pair<std::vector<int32_t>, GenerateOptions>> reqs;
  for (int i = 0; i < 31; ++i) reqs.push_back({prompt(100 + i, 5 + 7 * i % 90), greedy(10 + i % 20)});
  reqs.insert(reqs.begin() + 13, {target, greedy(24)});
  std::vector<uint64_t> ids;
  const auto among = run(*e, reqs, &ids);
  EXPECT_EQ(alone.begin()->second.tokens.size(), 24u);
  EXPECT_EQ(among.at(ids[13]).tokens, alone.begin()->second.tokens);
  EXPECT_EQ(among.at(ids[13]).text, alone.begin()->second.text);
  EXPECT_EQ(e->stats().kv_blocks_used, 0);
}

TEST_F(EngineTest, LongPromptsDoNotStallDecodes) {
  // Budget 16 tokens per step: a 200-token prompt takes 13+ steps to prefill, while a short
  // request keeps getting a decode token every step.
  auto e = make(256, 16);
  std::map<uint64_t, Result> out;
  int64_t step = 0;
  std::map<uint64_t, std::vector<int64_t>> token_steps;
  auto cb = [&](const StreamChunk& c) {
    for (size_t i = 0; i < c.token_ids.size(); ++i) token_steps[c.request_id].push_back(step);
  };
  const uint64_t short_id = e->submit(prompt(1, 4), greedy(12), cb);
  e->step();  // the short prompt is prefilled and decoding
  ++step;
  const uint64_t long_id = e->submit(prompt(2, 200), greedy(4), cb);
  while (!e->idle()) {
    e->step();
    ++step;
  }
  // The short request produced one token per step, all of them before the long prompt's first.
  const auto& s = token_steps[short_id];
  ASSERT_EQ(s.size(), 12u);
  for (size_t i = 1; i < s.size(); ++i) EXPECT_EQ(s[i], s[i - 1] + 1);
  EXPECT_LT(s.back(), token_steps[long_id].front());
}

TEST_F(EngineTest, PreemptionUnderBlockPressureGivesTheSameTokens) {
  std::vector<std::pair<std::vector<int32_t>, GenerateOptions>> reqs;
  for (int i = 0; i < 6; ++i) reqs.push_back({prompt(200 + i, 30 + 5 * i), greedy(40)});
  auto roomy = make(256);
  std::vector<uint64_t> a_ids, b_ids;
  const auto a = run(*roomy, reqs, &a_ids);
  auto tight = make(12);  // 192 tokens of cache for six sequences of up to 95 tokens
  const auto b = run(*tight, reqs, &b_ids);
  EXPECT_GT(tight->stats().preemptions, 0);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(b.at(b_ids[i]).tokens, a.at(a_ids[i]).tokens) << i;
    EXPECT_EQ(b.at(b_ids[i]).finish, FinishReason::kLength);
  }
  EXPECT_EQ(tight->stats().kv_blocks_used, 0);
}

TEST_F(EngineTest, CancelFreesTheBlocks) {
  auto e = make();
  Result r;
  const uint64_t id = e->submit(prompt(3, 50), greedy(100), [&](const StreamChunk& c) {
    r.tokens.insert(r.tokens.end(), c.token_ids.begin(), c.token_ids.end());
    if (c.finish != FinishReason::kNone) r.finish = c.finish;
  });
  for (int i = 0; i < 5; ++i) e->step();
  EXPECT_GT(e->stats().kv_blocks_used, 0);
  e->cancel(id);
  e->step();
  EXPECT_EQ(r.finish, FinishReason::kCancelled);
  EXPECT_LT(r.tokens.size(), 100u);
  EXPECT_EQ(e->stats().kv_blocks_used, 0);
  EXPECT_TRUE(e->idle());
}

TEST_F(EngineTest, StopStringsAcrossTokenBoundariesAreNotEmitted) {
  auto e = make();
  const auto p = prompt(4, 12);
  const auto full = run(*e, {{p, greedy(40)}}).begin()->second;
  // A stop string that spans the boundary between two generated tokens.
  std::string so_far;
  std::string stop;
  size_t boundary = 0;
  for (size_t i = 0; i + 1 < full.tokens.size() && stop.empty(); ++i) {
    const std::string a = tokenizer_->decode(std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + i + 1));
    const std::string b = tokenizer_->decode(std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + i + 2));
    if (i >= 3 && a.size() >= 2 && b.size() >= a.size() + 2 && b.compare(0, a.size(), a) == 0) {
      stop = b.substr(a.size() - 2, 4);  // 2 bytes of token i, 2 of token i+1
      boundary = a.size() - 2;
    }
  }
  ASSERT_FALSE(stop.empty()) << "no suitable boundary in: " << full.text;
  if (full.text.find(stop) < boundary) boundary = full.text.find(stop);
  GenerateOptions g = greedy(40);
  g.stop = {stop};
  const auto stopped = run(*e, {{p, g}}).begin()->second;
  EXPECT_EQ(stopped.finish, FinishReason::kStop);
  EXPECT_EQ(stopped.text, full.text.substr(0, boundary));
  EXPECT_EQ(stopped.text.find(stop), std::string::npos);
}

TEST_F(EngineTest, EosAndLengthFinishReasons) {
  auto e = make();
  const auto p = prompt(5, 9);
  const auto full = run(*e, {{p, greedy(20)}}).begin()->second;
  EXPECT_EQ(full.finish, FinishReason::kLength);
  EXPECT_EQ(full.tokens.size(), 20u);
  // Treat the 6th generated token as an end-of-sequence id: generation stops there.
  GenerateOptions g = greedy(20);
  g.stop_token_ids = {full.tokens[5]};
  const auto stopped = run(*e, {{p, g}}).begin()->second;
  EXPECT_EQ(stopped.finish, FinishReason::kStop);
  const auto first = std::find(full.tokens.begin(), full.tokens.end(), full.tokens[5]) - full.tokens.begin();
  EXPECT_EQ(static_cast<int64_t>(stopped.tokens.size()), first + 1);
}

TEST_F(EngineTest, SeededSamplingIsReproducible) {
  auto e = make();
  GenerateOptions g = greedy(16);
  g.temperature = 0.9;
  g.top_p = 0.95;
  g.top_k = 50;
  g.seed = 1234;
  const auto p = prompt(6, 10);
  const auto a = run(*e, {{p, g}}).begin()->second;
  const auto b = run(*e, {{p, g}}).begin()->second;
  EXPECT_EQ(a.tokens, b.tokens);
  g.seed = 99;
  const auto c = run(*e, {{p, g}}).begin()->second;
  EXPECT_NE(a.tokens, c.tokens);
}

TEST_F(EngineTest, BadRequestsAreRejectedAndLeaveTheEngineUntouched) {
  auto e = make();
  auto expect_invalid = [&](std::vector<int32_t> p, GenerateOptions g, const char* what) {
    try {
      e->submit(std::move(p), g, {});
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& err) {
      EXPECT_EQ(err.kind(), ErrorKind::kInvalidArgument) << err.what();
      EXPECT_NE(std::string(err.what()).find(what), std::string::npos) << err.what();
    }
  };
  expect_invalid({}, greedy(4), "empty");
  expect_invalid(prompt(7, 2100), greedy(4), "maximum context length");
  expect_invalid(prompt(7, 2000), greedy(100), "maximum context length");
  // max_new_tokens near int64's largest once overflowed prompt + max_new_tokens past the check
  // and generated to the end of the context ("generate --max-new-tokens 99999999999999999999").
  for (int64_t big : {std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::max() - 1})
    expect_invalid(prompt(7, 5), greedy(big), "you requested 922337203685477581");
  expect_invalid({5, 2000}, greedy(4), "outside the vocabulary");
  GenerateOptions g = greedy(4);
  g.top_p = 1.5;
  expect_invalid(prompt(7, 5), g, "top_p");
  g = greedy(4);
  g.temperature = -1;
  expect_invalid(prompt(7, 5), g, "temperature");
  g = greedy(0);
  expect_invalid(prompt(7, 5), g, "max_new_tokens");
  EXPECT_TRUE(e->idle());
}

}  // namespace
}  // namespace fp6serve
