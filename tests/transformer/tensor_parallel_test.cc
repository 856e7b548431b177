// Tensor parallelism on the CPU (docs/tensor_parallel.md): the shards hold exactly the unsplit
// weights, the host communicator sums across threads, and a model split over 2 or 4 ranks
// (threads over host memory, the stand-in for GPUs) computes the unsplit model's logits and
// greedy tokens, on the fixtures and on a random checkpoint that splits 4 ways.
#include "transformer/tensor_parallel.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "backend/communicator.h"
#include "core/half.h"
#include "engine/engine.h"
#include "fpx/pack.h"
#include "loader/prequantized.h"
#include "loader/safetensors.h"
#include "tests/support/errors.h"
#include "tests/support/fixture.h"
#include "tests/support/moe_checkpoint.h"
#include "tests/support/random.h"
#include "transformer/device.h"
#include "transformer/model.h"

namespace fp6serve {
namespace {

using model::HostLinear;
using model::WeightKind;
using testing::fixture_dir;
using testing::TempDir;

using ::testing::HasSubstr;

// Expects fn to throw an Error of `kind` whose message holds `text`.
void expect_error(const std::function<void()>& fn, ErrorKind kind, const std::string& text) {
  EXPECT_THAT(testing::error_of(fn, kind), HasSubstr(text));
}

Options split(const std::string& mode, int ranks) {
  Options o = testing::options(mode);
  o.tensor_parallel_size = ranks;
  return o;
}

// A Llama checkpoint of random F16 weights with 8 query heads over 4 KV heads and biases on
// every projection (attention_bias, mlp_bias): unlike the fixtures (2 KV heads), it splits
// over 4 ranks, and it has biases on both kinds of split.
void write_random_llama(const std::filesystem::path& out, uint64_t seed) {
  std::filesystem::create_directories(out);
  nlohmann::json cfg;
  std::ifstream(fixture_dir("tiny-llama") + "/config.json") >> cfg;
  const int64_t hidden = 128, heads = 8, kv_heads = 4, head_dim = 16, inter = 256, layers = 2, vocab = 1024;
  cfg["hidden_size"] = hidden;
  cfg["num_attention_heads"] = heads;
  cfg["num_key_value_heads"] = kv_heads;
  cfg["head_dim"] = head_dim;
  cfg["intermediate_size"] = inter;
  cfg["num_hidden_layers"] = layers;
  cfg["attention_bias"] = true;
  cfg["mlp_bias"] = true;
  std::ofstream(out / "config.json") << cfg.dump(2);

  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::map<std::string, std::vector<uint8_t>> data;  // kept alive until written
  loader::SafetensorsWriter w;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float mean, float std) {
    std::vector<uint8_t>& b = data[name];
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    b.resize(static_cast<size_t>(n) * 2);
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t h = f32_to_f16_bits(mean + std * normal(rng));
      std::memcpy(b.data() + 2 * i, &h, 2);
    }
    w.add(name, loader::StDType::kF16, std::move(shape), b.data(), b.size());
  };
  const float s = 1.0f / std::sqrt(static_cast<float>(hidden));
  add("model.embed_tokens.weight", {vocab, hidden}, 0, 1);
  add("model.norm.weight", {hidden}, 1, 0.1f);
  add("lm_head.weight", {vocab, hidden}, 0, s);
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = model::layer_prefix(l);
    add(p + "input_layernorm.weight", {hidden}, 1, 0.1f);
    add(p + "post_attention_layernorm.weight", {hidden}, 1, 0.1f);
    for (const char* t : {"q", "k", "v"}) {
      const int64_t rows = t[0] == 'q' ? heads * head_dim : kv_heads * head_dim;
      add(p + "self_attn." + t + "_proj.weight", {rows, hidden}, 0, s);
      add(p + "self_attn." + t + "_proj.bias", {rows}, 0, 0.1f);
    }
    add(p + "self_attn.o_proj.weight", {hidden, heads * head_dim}, 0, s);
    add(p + "self_attn.o_proj.bias", {hidden}, 0, 0.1f);
    for (const char* t : {"gate", "up"}) {
      add(p + "mlp." + t + "_proj.weight", {inter, hidden}, 0, s);
      add(p + "mlp." + t + "_proj.bias", {inter}, 0, 0.1f);
    }
    add(p + "mlp.down_proj.weight", {hidden, inter}, 0, 1.0f / std::sqrt(static_cast<float>(inter)));
    add(p + "mlp.down_proj.bias", {hidden}, 0, 0.1f);
  }
  w.write(out / "model.safetensors");
}

// max |a - b| over max |b|.
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0, m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    d = std::max(d, static_cast<double>(std::fabs(a[i] - b[i])));
    m = std::max(m, static_cast<double>(std::fabs(b[i])));
  }
  return d / m;
}

std::vector<int32_t> some_prompt(int64_t vocab, size_t len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> p(len);
  for (auto& t : p) t = tok(rng);
  return p;
}

// The logits of a split model equal the unsplit model's within float rounding (the row-parallel
// sums are added in another order), and greedy decoding through the paged KV cache gives the
// same tokens until the unsplit model meets a near tie.
void expect_split_equals_unsplit(const std::string& dir, const std::string& mode, int ranks) {
  SCOPED_TRACE(dir + " " + mode + " over " + std::to_string(ranks) + " ranks");
  auto one = Model::load(dir, testing::options(mode));
  auto many = Model::load(dir, split(mode, ranks));
  ASSERT_EQ(many->tensor_parallel_size(), ranks);
  const int64_t vocab = one->config().vocab_size;
  const auto prompt = some_prompt(vocab, 23, 5);
  const double d = rel_diff(testing::prompt_logits(*many, prompt), testing::prompt_logits(*one, prompt));
  std::printf("%s %s TP=%d: max |dlogit| / max |logit| = %.2e\n", std::filesystem::path(dir).filename().c_str(),
              mode.c_str(), ranks, d);
  EXPECT_LE(d, 2e-5);

  std::vector<float> l1, ln;
  const auto g1 = testing::greedy_decode(*one, {prompt.begin(), prompt.begin() + 7}, 16, &l1);
  const auto gn = testing::greedy_decode(*many, {prompt.begin(), prompt.begin() + 7}, 16, &ln);
  EXPECT_LE(rel_diff(ln, l1), 2e-5);
  for (size_t s = 0; s < g1.size(); ++s) {
    std::vector<float> row(l1.begin() + static_cast<int64_t>(s) * vocab,
                           l1.begin() + static_cast<int64_t>(s + 1) * vocab);
    std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<>());
    if (row[0] - row[1] < 1e-3f) break;  // a near tie: either token is right
    ASSERT_EQ(gn[s], g1[s]) << "step " << s;
  }
}

TEST(TensorParallel, RankConfigDividesHeadsAndIntermediateSizes) {
  const auto c = model::ModelConfig::load(fixture_dir("tiny-llama"));
  const auto r = rank_config(c, 2);
  EXPECT_EQ(r.num_heads, 2);
  EXPECT_EQ(r.num_kv_heads, 1);
  EXPECT_EQ(r.intermediate_size, 176);
  EXPECT_EQ(r.hidden_size, c.hidden_size);
  EXPECT_EQ(r.vocab_size, c.vocab_size);
  EXPECT_EQ(r.head_dim, c.head_dim);
  const auto moe = rank_config(model::ModelConfig::load(fixture_dir("tiny-qwen2-moe")), 2);
  EXPECT_EQ(moe.moe.intermediate_size, 24);
  EXPECT_EQ(moe.moe.shared_intermediate_size, 48);
  EXPECT_EQ(moe.moe.num_experts, 8);
}

// Every fixture has 2 KV heads: 4 ranks do not divide them, and the error says what would.
TEST(TensorParallel, IndivisibleShapesAreClearErrors) {
  for (const char* name : {"tiny-llama", "tiny-qwen2", "tiny-mixtral", "tiny-qwen2-moe", "tiny-trained"})
    expect_error(
        [&] { Model::load(fixture_dir(name), split("wf6af16", 4)); }, ErrorKind::kInvalidArgument,
        "tensor_parallel_size 4: the model's num_key_value_heads (2) is not a multiple of 4 (each rank takes an "
        "equal share of the heads and of the MLP's intermediate size); this model splits over 1, 2 ranks");
  // tiny-llama2-sp: 6 heads, 6 KV heads, intermediate 256.
  expect_error([&] { Model::load(fixture_dir("tiny-llama2-sp"), split("fp32", 3)); }, ErrorKind::kInvalidArgument,
               "intermediate_size (256) is not a multiple of 3");
  expect_error([&] { Model::load(fixture_dir("tiny-llama"), split("fp32", 0)); }, ErrorKind::kInvalidArgument,
               "tensor_parallel_size must be in [1, 64], got 0");
  // A given backend is one rank.
  const auto c = model::ModelConfig::load(fixture_dir("tiny-llama"));
  const auto fp32 = model::QuantizationMode::parse("fp32");
  expect_error(
      [&] {
        Model::load(fixture_dir("tiny-llama"), split("fp32", 2), make_backend(c, fp32, testing::options("fp32")));
      },
      ErrorKind::kInvalidArgument, "tensor_parallel_size must be 1, got 2");
}

// A quantized row-parallel shard (o, down) keeps the codes and each whole row's scale of the
// unsplit weight, a column-parallel one (qkv, gate_up) its whole rows: bit for bit what one
// rank holds, for shapes that split inside pack units (rows not a multiple of 16 per rank,
// columns not of 128) too.
TEST(TensorParallel, QuantizedShardsAreTheUnsplitWeightsBitForBit) {
  std::mt19937_64 rng(testing::test_seed());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  model::ModelConfig c = model::ModelConfig::load(fixture_dir("tiny-llama"));
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.head_dim = 6;  // q 48, kv 24: 12 and 6 rows per rank of 4
  c.intermediate_size = 200;
  for (const fpx::Format format : {fpx::kE3M2, fpx::kE2M2}) {
    for (const WeightKind kind : {WeightKind::kQkv, WeightKind::kGateUp, WeightKind::kO, WeightKind::kDown}) {
      const bool column = kind == WeightKind::kQkv || kind == WeightKind::kGateUp;
      const int64_t rows = kind == WeightKind::kQkv ? 96 : kind == WeightKind::kGateUp ? 400 : 72;
      const int64_t cols = column ? 72 : (kind == WeightKind::kO ? 48 : 200);
      std::vector<float> values(static_cast<size_t>(rows * cols));
      for (float& v : values) v = normal(rng) * (1 + (&v - values.data()) % 7);  // rows of unlike ranges
      HostLinear full;
      full.id = {kind, 0};
      full.rows = rows;
      full.cols = cols;
      full.packed = std::make_unique<fpx::PackedWeight>(fpx::quantize_pack(
          fpx::MatrixView{values.data(), DType::kF32, rows, cols, "w"}, format, fpx::default_target(format)));
      for (int64_t b = 0; b < rows; ++b) full.bias.push_back(static_cast<float>(b));
      const fpx::QuantizedMatrix whole = fpx::unpack(*full.packed);
      for (const int ranks : {2, 4}) {
        SCOPED_TRACE(std::string(format.name()) + " " + model::weight_name(full.id) + " over " + std::to_string(ranks));
        const std::vector<HostLinear> shards = shard_linear(full, c, ranks);
        ASSERT_EQ(shards.size(), static_cast<size_t>(ranks));
        // The unsplit weight's (row, column) of each shard element, in the shard's order.
        const std::vector<int64_t> parts =
            kind == WeightKind::kQkv ? std::vector<int64_t>{48, 24, 24} : std::vector<int64_t>{200, 200};
        for (int r = 0; r < ranks; ++r) {
          const HostLinear& s = shards[static_cast<size_t>(r)];
          ASSERT_TRUE(s.packed);
          EXPECT_EQ(s.packed->plan.target, full.packed->plan.target);
          const fpx::QuantizedMatrix got = fpx::unpack(*s.packed);
          std::vector<int64_t> src_rows;
          if (column) {
            int64_t offset = 0;
            for (int64_t p : parts) {
              for (int64_t i = 0; i < p / ranks; ++i) src_rows.push_back(offset + r * (p / ranks) + i);
              offset += p;
            }
          } else {
            for (int64_t i = 0; i < rows; ++i) src_rows.push_back(i);
          }
          const int64_t k = column ? cols : cols / ranks, col0 = column ? 0 : r * k;
          ASSERT_EQ(got.rows, static_cast<int64_t>(src_rows.size()));
          ASSERT_EQ(got.cols, k);
          for (int64_t i = 0; i < got.rows; ++i) {
            const int64_t src = src_rows[static_cast<size_t>(i)];
            ASSERT_EQ(std::memcmp(&got.scales[i], &whole.scales[src], sizeof(float)), 0) << "row " << i;
            ASSERT_EQ(std::memcmp(&got.codes[i * k], &whole.codes[src * cols + col0], static_cast<size_t>(k)), 0)
                << "row " << i;
            if (column) EXPECT_EQ(s.bias.at(i), static_cast<float>(src));
          }
          if (!column) {
            EXPECT_EQ(s.bias.size(), r == 0 ? static_cast<size_t>(rows) : 0u);  // added once, by rank 0
          }
        }
      }
    }
  }
}

// Dense (16-bit) weights split the same way.
TEST(TensorParallel, DenseShardsAreSlicesOfTheWeight) {
  model::ModelConfig c = model::ModelConfig::load(fixture_dir("tiny-llama"));
  HostLinear full;
  full.id = {WeightKind::kDown, 1};
  full.rows = 5;
  full.cols = c.intermediate_size;
  full.dense = Tensor::empty({full.rows, full.cols}, DType::kF16);
  auto* d = full.dense.data_as<uint16_t>();
  for (int64_t i = 0; i < full.dense.numel(); ++i) d[i] = static_cast<uint16_t>(i);
  const auto shards = shard_linear(full, c, 2);
  for (int r = 0; r < 2; ++r) {
    const Tensor& t = shards[static_cast<size_t>(r)].dense;
    ASSERT_EQ(t.shape(), (std::vector<int64_t>{5, 176}));
    for (int64_t i = 0; i < 5; ++i)
      for (int64_t j = 0; j < 176; ++j)
        ASSERT_EQ(t.data_as<uint16_t>()[i * 176 + j], static_cast<uint16_t>(i * 352 + r * 176 + j));
  }
  full.id = {WeightKind::kLmHead};
  EXPECT_THROW(shard_linear(full, c, 2), Error);
}

// The stand-in sums every rank's tensor in rank order: all ranks get the same bits.
TEST(TensorParallel, HostCommunicatorSumsAcrossThreads) {
  for (const int ranks : {1, 2, 3, 4}) {
    auto comms = host_communicators(ranks);
    std::vector<std::vector<float>> got(static_cast<size_t>(ranks));
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r)
      threads.emplace_back([&, r] {
        for (int round = 0; round < 50; ++round) {  // reused, back to back
          Tensor x = Tensor::empty({3, 37}, DType::kF32);
          for (int64_t i = 0; i < x.numel(); ++i) x.data_as<float>()[i] = 0.1f * static_cast<float>(i + round) + r;
          comms[static_cast<size_t>(r)]->all_reduce_sum(x);
          got[static_cast<size_t>(r)].assign(x.data_as<float>(), x.data_as<float>() + x.numel());
        }
      });
    for (auto& t : threads) t.join();
    for (int r = 0; r < ranks; ++r) {
      EXPECT_EQ(comms[static_cast<size_t>(r)]->rank(), r);
      EXPECT_EQ(comms[static_cast<size_t>(r)]->size(), ranks);
      EXPECT_EQ(got[static_cast<size_t>(r)], got[0]);
    }
    float want = 0;
    for (int r = 0; r < ranks; ++r) want += 0.1f * 49 + static_cast<float>(r);
    EXPECT_FLOAT_EQ(got[0][0], want);
  }
  auto solo = solo_communicator();
  Tensor x = Tensor::empty({2}, DType::kF32);
  x.data_as<float>()[0] = 3;
  solo->all_reduce_sum(x);
  EXPECT_EQ(x.data_as<float>()[0], 3);
  EXPECT_EQ(solo->size(), 1);
}

// A rank that fails aborts the group: a rank waiting in a collective throws instead of hanging.
TEST(TensorParallel, AnAbortWakesTheRanksWaitingInACollective) {
  auto comms = host_communicators(2);
  std::atomic<bool> threw{false};
  std::thread waiter([&] {
    Tensor x = Tensor::zeros({4}, DType::kF32);
    try {
      comms[1]->all_reduce_sum(x);
    } catch (const Error&) {
      threw = true;
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  comms[0]->abort();
  waiter.join();
  EXPECT_TRUE(threw);
  Tensor x = Tensor::zeros({4}, DType::kF32);
  EXPECT_THROW(comms[0]->all_reduce_sum(x), Error);
}

TEST(TensorParallel, RankThreadsRunEachRankOnItsOwnThread) {
  RankThreads threads(3);
  EXPECT_EQ(threads.size(), 3);
  for (int round = 0; round < 3; ++round) {
    std::vector<std::thread::id> ids(3);
    threads.run([&](int r) { ids[static_cast<size_t>(r)] = std::this_thread::get_id(); });
    EXPECT_EQ(ids[0], std::this_thread::get_id());
    EXPECT_EQ(std::set<std::thread::id>(ids.begin(), ids.end()).size(), 3u);
  }
  try {
    threads.run([](int r) {
      if (r >= 1) throw Error(ErrorKind::kInternal, "rank " + std::to_string(r));
    });
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "rank 1");  // the lowest rank's
  }
  RankThreads one(1);
  std::thread::id id;
  one.run([&](int) { id = std::this_thread::get_id(); });
  EXPECT_EQ(id, std::this_thread::get_id());
}

// Every dense fixture over 2 ranks, in FP32 and FP6: the ranks' shards hold the same FP6 codes
// and scales, so the split model's logits differ from the unsplit one's by the order of the
// row-parallel sums only.
TEST(TensorParallel, TwoRanksEqualOneOnTheFixtures) {
  for (const char* name : testing::kFixtures)
    for (const char* mode : {"fp32", "wf6af16"}) expect_split_equals_unsplit(fixture_dir(name), mode, 2);
}

// The mixture-of-experts fixtures: each expert split like the dense MLP, the router whole.
TEST(TensorParallel, TwoRanksEqualOneOnTheMoeFixtures) {
  for (const char* name : {"tiny-mixtral", "tiny-qwen2-moe"})
    for (const char* mode : {"fp32", "wf6af16"}) expect_split_equals_unsplit(fixture_dir(name), mode, 2);
}

// 4 KV heads and biases everywhere: 2 and 4 ranks, FP32, FP6 and FP16 weights (dense shards).
TEST(TensorParallel, TwoAndFourRanksEqualOneWithBiases) {
  TempDir dir("tp-random-llama");
  write_random_llama(dir.path, 11);
  for (const int ranks : {2, 4})
    for (const char* mode : {"fp32", "wf6af16", "fp16"}) expect_split_equals_unsplit(dir.path, mode, ranks);
}

// A prequantized checkpoint (fp6serve quantize) splits like a quantized-on-load one.
TEST(TensorParallel, PrequantizedCheckpointsSplitToo) {
  TempDir dir("tp-prequantized");
  write_random_llama(dir.path / "original", 12);
  loader::LinearSpec spec{model::QuantizationMode::parse("wf6af16")};
  spec.progress = false;
  loader::write_prequantized(dir.path / "original", dir.path / "fp6", spec);
  expect_split_equals_unsplit(dir.path / "fp6", "", 4);
}

// Hidden states (rank 0's residual stream, whole after each all-reduce) equal the unsplit ones.
TEST(TensorParallel, HiddenStatesEqualTheUnsplitModel) {
  auto one = Model::load(fixture_dir("tiny-llama"), testing::options("fp32"));
  auto two = Model::load(fixture_dir("tiny-llama"), split("fp32", 2));
  const auto prompt = some_prompt(one->config().vocab_size, 9, 3);
  auto hidden = [&](Model& m) {
    KvCache cache = m.make_kv_cache(1, 16);
    Batch b;
    b.add(prompt.data(), static_cast<int64_t>(prompt.size()), 0, {0}, true);
    std::vector<std::vector<float>> out;
    m.forward(b, cache,
              [&](int64_t, const Tensor& h) { out.emplace_back(h.data_as<float>(), h.data_as<float>() + h.numel()); });
    return out;
  };
  const auto a = hidden(*one), b = hidden(*two);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_LE(rel_diff(b[i], a[i]), 1e-5) << "hidden state " << i;
}

// The engine runs a split model unchanged: batched greedy requests give the unsplit model's
// tokens, and the KV cache holds each rank's share of the heads.
TEST(TensorParallel, TheEngineRunsASplitModel) {
  const std::string dir = fixture_dir("tiny-llama");
  const Tokenizer tokenizer = Tokenizer::load(dir);
  auto generate = [&](Model& m) {
    Options o = testing::options("fp32");
    o.kv_cache_blocks = 64;
    Engine e(m, tokenizer, o);
    GenerateOptions g;
    g.max_new_tokens = 12;
    g.ignore_eos = true;
    std::map<uint64_t, std::vector<int32_t>> out;
    for (int i = 0; i < 5; ++i)
      e.submit(some_prompt(1000, 5 + 9 * static_cast<size_t>(i), 40 + static_cast<uint64_t>(i)), g,
               [&](const StreamChunk& c) {
                 out[c.request_id].insert(out[c.request_id].end(), c.token_ids.begin(), c.token_ids.end());
               });
    while (!e.idle()) e.step();
    return out;
  };
  auto one = Model::load(dir, testing::options("fp32"));
  auto two = Model::load(dir, split("fp32", 2));
  const auto want = generate(*one);
  ASSERT_EQ(want.size(), 5u);
  for (const auto& [id, tokens] : want) EXPECT_EQ(tokens.size(), 12u);
  EXPECT_EQ(generate(*two), want);
  const KvCache cache = two->make_kv_cache(3, 16);
  ASSERT_EQ(cache.ranks.size(), 1u);
  EXPECT_EQ(cache.k[0].shape(), (std::vector<int64_t>{3, 16, 1, 32}));  // 1 of the 2 KV heads
  EXPECT_EQ(cache.ranks[0].v[3].shape(), (std::vector<int64_t>{3, 16, 1, 32}));
  EXPECT_EQ(two->backend().kv_block_bytes(16) * 2, one->backend().kv_block_bytes(16));
}

// Random weights of a real shape split over ranks run (each rank draws its own shards; the
// embeddings, drawn alike on every rank, keep the residual streams identical).
TEST(TensorParallel, RandomWeightModelsSplit) {
  model::ModelConfig c = model::ModelConfig::load(fixture_dir("tiny-qwen2-moe"));
  auto m = Model::random(c, model::QuantizationMode::parse("wf6af16"), split("wf6af16", 2));
  EXPECT_EQ(m->tensor_parallel_size(), 2);
  EXPECT_FALSE(m->weights().lm_head == nullptr);
  const auto logits = testing::prompt_logits(*m, some_prompt(c.vocab_size, 6, 1));
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace fp6serve
