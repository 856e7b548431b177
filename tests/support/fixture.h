// Access to the golden fixtures in tests/data (made by Hugging Face transformers): the model
// directories and the arrays of reference.safetensors.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "core/half.h"
#include "loader/safetensors.h"
#include "transformer/model.h"

namespace fp6serve::testing {

inline const char* kFixtures[] = {"tiny-llama", "tiny-llama2-sp", "tiny-qwen2"};

inline std::string fixture_dir(const std::string& name) {
  return std::string(FP6SERVE_TEST_DATA) + "/" + name;
}

class Reference {
 public:
  explicit Reference(const std::string& name) : file_(fixture_dir(name) + "/reference.safetensors") {
    std::ifstream in(fixture_dir(name) + "/reference.json");
    json = nlohmann::json::parse(in);
  }
  bool has(const std::string& key) const { return file_.find(key) != nullptr; }
  std::vector<int64_t> shape(const std::string& key) const { return info(key).shape; }
  std::vector<int32_t> ids(const std::string& key) const {
    const auto& t = info(key);
    std::vector<int32_t> out(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < out.size(); ++i) {
      int64_t v;
      std::memcpy(&v, t.data + 8 * i, 8);
      out[i] = static_cast<int32_t>(v);
    }
    return out;
  }
  std::vector<float> floats(const std::string& key) const {
    const auto& t = info(key);
    std::vector<float> out(static_cast<size_t>(t.numel()));
    if (t.dtype == loader::StDType::kF32) {
      std::memcpy(out.data(), t.data, t.bytes);
    } else {
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = t.dtype == loader::StDType::kF16 ? f16_bits_to_f32(h) : bf16_bits_to_f32(h);
      }
    }
    return out;
  }
  nlohmann::json json;

 private:
  const loader::TensorInfo& info(const std::string& key) const {
    const auto* t = file_.find(key);
    if (!t) throw std::runtime_error("reference has no array " + key);
    return *t;
  }
  loader::SafetensorsFile file_;
};

// Options of the tests: a quantization mode on the CPU, no progress bar.
inline Options options(const std::string& mode) {
  Options o;
  o.quantization_mode = mode;
  o.device = "cpu";
  o.progress = false;
  return o;
}

// KL(P_ref || P_q) in nats between the softmaxes of two logit rows.
inline double kl_divergence(const float* ref, const float* q, int64_t vocab) {
  const double mp = *std::max_element(ref, ref + vocab), mq = *std::max_element(q, q + vocab);
  double zp = 0, zq = 0;
  for (int64_t v = 0; v < vocab; ++v) zp += std::exp(ref[v] - mp), zq += std::exp(q[v] - mq);
  double kl = 0;
  for (int64_t v = 0; v < vocab; ++v) {
    const double lp = ref[v] - mp - std::log(zp), lq = q[v] - mq - std::log(zq);
    kl += std::exp(lp) * (lp - lq);
  }
  return kl;
}

// Runs one prompt (all logits) through a fresh cache; returns [len, vocab].
inline std::vector<float> prompt_logits(Model& m, const std::vector<int32_t>& ids) {
  const int64_t block = 16;
  KvCache cache = m.make_kv_cache((static_cast<int64_t>(ids.size()) + block - 1) / block, block);
  std::vector<int32_t> table(static_cast<size_t>(cache.num_blocks));
  std::iota(table.begin(), table.end(), 0);
  Batch b;
  b.add(ids.data(), static_cast<int64_t>(ids.size()), 0, table, true, true);
  const Tensor logits = m.forward(b, cache);
  return {logits.data_as<float>(), logits.data_as<float>() + logits.numel()};
}

// Greedy decoding through a paged KV cache: the prompt in one pass, then one token per pass,
// `steps` tokens in all. Returns them, and the logits of each step in `logits` if given.
inline std::vector<int32_t> greedy_decode(Model& m, const std::vector<int32_t>& prompt, size_t steps,
                                          std::vector<float>* logits = nullptr) {
  const int64_t vocab = m.config().vocab_size, block = 16;
  const int64_t blocks = (static_cast<int64_t>(prompt.size() + steps) + block - 1) / block;
  KvCache cache = m.make_kv_cache(blocks, block);
  std::vector<int32_t> table(static_cast<size_t>(blocks)), got, feed = prompt;
  std::iota(table.begin(), table.end(), 0);
  int64_t pos = 0;
  for (size_t step = 0; step < steps; ++step) {
    Batch b;
    b.add(feed.data(), static_cast<int64_t>(feed.size()), pos, table, true);
    const Tensor out = m.forward(b, cache);
    pos += static_cast<int64_t>(feed.size());
    const float* l = out.data_as<float>();
    if (logits) logits->insert(logits->end(), l, l + vocab);
    got.push_back(static_cast<int32_t>(std::max_element(l, l + vocab) - l));
    feed = {got.back()};
  }
  return got;
}

// Calls fn(prompt index, got, want) for every stored logits row of every reference prompt,
// with got computed by `m` over the whole prompt.
inline void for_each_reference_row(Model& m, const Reference& ref,
                                   const std::function<void(int, const float*, const float*)>& fn) {
  const int64_t vocab = m.config().vocab_size;
  for (const auto& p : ref.json["prompts"]) {
    const int i = p["index"];
    const auto positions = ref.ids("positions_" + std::to_string(i));
    const auto want = ref.floats("logits_" + std::to_string(i));
    const auto got = prompt_logits(m, ref.ids("input_ids_" + std::to_string(i)));
    for (size_t r = 0; r < positions.size(); ++r) fn(i, got.data() + positions[r] * vocab, want.data() + r * vocab);
  }
}

}  // namespace fp6serve::testing
