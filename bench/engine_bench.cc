// The engine's own CPU cost per scheduler step (issue #6): batching, KV block bookkeeping,
// sampling from the logits and incremental detokenization, with the model forward replaced
// by a backend that does nothing (so only the engine is timed). 256 sequences decode at once.
//
//   build/bench/fp6serve_bench_engine
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "backend/communicator.h"
#include "backend/cpu/sampling.h"
#include "engine/engine.h"
#include "tokenizer/tokenizer.h"
#include "transformer/tensor_parallel.h"

namespace fp6serve {
namespace {

// A backend whose ops do nothing; logits are random and fixed, so sampling has real work.
class NullBackend : public Backend {
 public:
  explicit NullBackend(int64_t vocab) : vocab_(vocab) {}
  Device device() const override { return Device::kCpu; }
  DType act_dtype() const override { return DType::kF32; }
  DType pack_target(fpx::Format) const override { return DType::kF16; }
  std::string describe() const override { return "null"; }
  Memory memory() const override { return {}; }
  std::unique_ptr<model::LinearWeight> adopt_linear(model::HostLinear&&) override {
    return std::make_unique<model::LinearWeight>();
  }
  Tensor adopt_tensor(Tensor t) override { return t; }
  void upload(const Tensor&, Tensor&) override {}
  KvCache make_kv_cache(int64_t blocks, int64_t block_size) override { return {blocks, block_size, {}, {}}; }
  size_t kv_block_bytes(int64_t) const override { return 1; }
  Tensor activations(int64_t rows, int64_t cols) override {
    return Tensor::wrap(nullptr, {rows, cols}, DType::kF32, Device::kCpu);
  }
  void begin_forward(const Batch&, const KvCache&) override {}
  void embed(const Tensor&, Tensor&) override {}
  void rms_norm(const Tensor&, const Tensor&, double, Tensor&) override {}
  void add_rms_norm(Tensor&, const Tensor&, const Tensor&, double, Tensor&) override {}
  void linear(const Tensor&, const model::LinearWeight&, Tensor&) override {}
  void rope_write_kv(Tensor&, KvCache&, int64_t) override {}
  void attention(const Tensor&, const KvCache&, int64_t, Tensor&) override {}
  void silu_mul(const Tensor&, Tensor&) override {}
  void add(Tensor&, const Tensor&) override {}
  void gather_logit_rows(const Tensor&, Tensor&) override {}
  Tensor to_host_f32(const Tensor& x) override { return fixed_logits(x.dim(0)); }
  // The CPU backend's sampling (the engine's host cost when the model runs on the CPU).
  std::vector<Sample> sample(const Tensor& x, const std::vector<SampleRow>& rows) override {
    return cpu::sample_rows(fixed_logits(x.dim(0)).data_as<float>(), vocab_, rows);
  }

 private:
  Tensor fixed_logits(int64_t rows) {
    if (logits_.numel() < rows * vocab_) {
      logits_ = Tensor::empty({rows, vocab_}, DType::kF32);
      std::mt19937 rng(1);
      std::normal_distribution<float> normal(0.0f, 3.0f);
      for (int64_t i = 0; i < logits_.numel(); ++i) logits_.data_as<float>()[i] = normal(rng);
    }
    return logits_.slice_rows(0, rows);
  }
  int64_t vocab_;
  Tensor logits_;
};

}  // namespace
}  // namespace fp6serve

int main() {
  using namespace fp6serve;
  const Tokenizer tok = Tokenizer::load(std::string(FP6SERVE_SOURCE_DIR) + "/tests/data/tiny-llama");
  // Llama-2-7B's shape; only vocab and context matter to the engine.
  const std::string config = R"({"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "max_position_embeddings": 4096})";
  model::ModelConfig c = model::ModelConfig::parse(config, "llama-2-7b shape");
  c.vocab_size = tok.vocab_size();  // the detokenizer's vocabulary
  model::ModelWeights w;
  w.layers.resize(static_cast<size_t>(c.num_layers));
  std::vector<Model::Rank> ranks(1);
  ranks[0].backend = std::make_unique<NullBackend>(c.vocab_size);
  ranks[0].weights = std::move(w);
  ranks[0].comm = solo_communicator();
  Model m(c, model::QuantizationMode::parse("fp16"), std::make_unique<RankThreads>(1), std::move(ranks));
  fmt::print("{:<28} {:>10} {:>12} {:>12}\n", "case (256 sequences)", "steps", "µs/step", "µs/token");
  for (const char* mode : {"greedy", "top-p 0.9, T 0.8"}) {
    Options o;
    o.kv_cache_blocks = 256 * 32;
    o.max_batch_tokens = 2048;
    Engine engine(m, tok, o);
    GenerateOptions g;
    g.max_new_tokens = 200;
    g.ignore_eos = true;
    g.stop = {"never appears"};
    if (std::string(mode) != "greedy") g.temperature = 0.8, g.top_p = 0.9, g.seed = 1;
    std::mt19937 rng(2);
    for (int i = 0; i < 256; ++i) {
      std::vector<int32_t> prompt(128);
      for (auto& t : prompt) t = static_cast<int32_t>(rng() % 1000);
      engine.submit(prompt, g, [](const StreamChunk&) {});
    }
    // Prefill (128 x 256 tokens at 2048 per step), then time steady decode steps.
    while (engine.stats().running < 256) engine.step();
    const int steps = 100;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) engine.step();
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / steps;
    fmt::print("{:<28} {:>10} {:>12.0f} {:>12.2f}\n", mode, steps, us, us / 256);
  }
  return 0;
}
