// Mixture-of-experts checkpoints made from a dense fixture (tests/data), in the published
// layouts (Mixtral's block_sparse_moe.experts.N.w1/w2/w3, the Qwens' mlp.experts.N.*_proj,
// qwen2_moe's shared expert and gate, qwen3_moe's q/k norms): the attention weights are the
// fixture's, every expert is the fixture's MLP (scaled, see MoeSynth), the router random.
// With equal experts a renormalized top-k sums them with weights adding up to 1, so such a
// model computes exactly what the dense fixture computes, whose logits transformers gave.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "loader/safetensors.h"
#include "tests/support/fixture.h"

namespace fp6serve::testing {

struct MoeSynth {
  std::string model_type = "mixtral";  // mixtral, qwen2_moe, qwen3_moe
  int64_t experts = 4, top_k = 2;
  bool norm_topk_prob = true;         // the Qwens' flag (Mixtral always renormalizes)
  bool shared = false;                // qwen2_moe: a shared expert (the MLP), gate weights 0: x 0.5
  std::vector<int64_t> dense_layers;  // the Qwens' mlp_only_layers
  // Expert e's down_proj times 1 + e / 4 (and the shared gate random): routing matters, no dense equivalent.
  bool distinct = false;
  uint64_t seed = 7;
};

// Writes the MoE checkpoint made from fixture `dense` into `out` (created).
inline void write_moe_checkpoint(const std::string& dense, const std::filesystem::path& out, const MoeSynth& s) {
  namespace fs = std::filesystem;
  const fs::path src = fixture_dir(dense);
  fs::create_directories(out);
  nlohmann::json cfg;
  std::ifstream(src / "config.json") >> cfg;
  const int64_t hidden = cfg["hidden_size"], inter = cfg["intermediate_size"], layers = cfg["num_hidden_layers"];
  const int64_t heads = cfg["num_attention_heads"];
  const int64_t head_dim =
      cfg.contains("head_dim") && !cfg["head_dim"].is_null() ? cfg["head_dim"].get<int64_t>() : hidden / heads;
  const bool mixtral = s.model_type == "mixtral", qwen3 = s.model_type == "qwen3_moe";
  cfg["model_type"] = s.model_type;
  cfg["num_experts_per_tok"] = s.top_k;
  if (mixtral) {
    cfg["num_local_experts"] = s.experts;
  } else {
    cfg["num_experts"] = s.experts;
    cfg["moe_intermediate_size"] = inter;
    cfg["norm_topk_prob"] = s.norm_topk_prob;
    cfg["decoder_sparse_step"] = 1;
    cfg["mlp_only_layers"] = s.dense_layers;
    if (s.model_type == "qwen2_moe") cfg["shared_expert_intermediate_size"] = inter;
    if (qwen3) cfg["head_dim"] = head_dim;
  }
  std::ofstream(out / "config.json") << cfg.dump(2);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"})
    if (fs::exists(src / f)) fs::copy_file(src / f, out / f, fs::copy_options::overwrite_existing);

  loader::SafetensorsFile file(src / "model.safetensors");
  std::map<std::string, std::vector<uint8_t>> data;  // kept alive until written
  loader::SafetensorsWriter w;
  auto add = [&](const std::string& name, loader::StDType dtype, std::vector<int64_t> shape,
                 std::vector<uint8_t> bytes) {
    auto& kept = data[name] = std::move(bytes);
    w.add(name, dtype, std::move(shape), kept.data(), kept.size());
  };
  auto f16 = [](const std::vector<float>& v) {
    std::vector<uint8_t> b(v.size() * 2);
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t h = f32_to_f16_bits(v[i]);
      std::memcpy(b.data() + 2 * i, &h, 2);
    }
    return b;
  };
  auto bytes_of = [&](const std::string& name) {
    const loader::TensorInfo& t = file.tensors().at(name);
    return std::vector<uint8_t>(t.data, t.data + t.bytes);
  };
  auto scaled = [&](const std::string& name, float factor) {  // an F16 tensor times factor
    std::vector<uint8_t> b = bytes_of(name);
    for (size_t i = 0; i + 1 < b.size(); i += 2) {
      uint16_t h;
      std::memcpy(&h, b.data() + i, 2);
      h = f32_to_f16_bits(f16_bits_to_f32(h) * factor);
      std::memcpy(b.data() + i, &h, 2);
    }
    return b;
  };
  std::mt19937_64 rng(s.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f / std::sqrt(static_cast<float>(hidden)));
  std::uniform_real_distribution<float> near_one(0.8f, 1.2f);
  auto draw = [&](int64_t n, auto& dist) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = dist(rng);
    return v;
  };
  for (const auto& [name, t] : file.tensors()) {
    const bool mlp = name.find(".mlp.") != std::string::npos;
    int64_t layer = -1;
    if (mlp) layer = std::stoll(name.substr(std::string("model.layers.").size()));
    const bool dense_layer = std::find(s.dense_layers.begin(), s.dense_layers.end(), layer) != s.dense_layers.end();
    if (!mlp || (!mixtral && dense_layer)) add(name, t.dtype, t.shape, bytes_of(name));
  }
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    if (qwen3) {
      add(p + "self_attn.q_norm.weight", loader::StDType::kF16, {head_dim}, f16(draw(head_dim, near_one)));
      add(p + "self_attn.k_norm.weight", loader::StDType::kF16, {head_dim}, f16(draw(head_dim, near_one)));
    }
    if (!mixtral && std::find(s.dense_layers.begin(), s.dense_layers.end(), l) != s.dense_layers.end()) continue;
    const std::string moe = mixtral ? p + "block_sparse_moe." : p + "mlp.";
    add(moe + "gate.weight", loader::StDType::kF16, {s.experts, hidden}, f16(draw(s.experts * hidden, normal)));
    for (int64_t e = 0; e < s.experts; ++e) {
      const std::string ep = moe + "experts." + std::to_string(e) + ".";
      const float down = (s.distinct ? 1.0f + 0.25f * static_cast<float>(e) : 1.0f) * (s.shared ? 0.5f : 1.0f);
      add(ep + (mixtral ? "w1.weight" : "gate_proj.weight"), loader::StDType::kF16, {inter, hidden},
          bytes_of(p + "mlp.gate_proj.weight"));
      add(ep + (mixtral ? "w3.weight" : "up_proj.weight"), loader::StDType::kF16, {inter, hidden},
          bytes_of(p + "mlp.up_proj.weight"));
      add(ep + (mixtral ? "w2.weight" : "down_proj.weight"), loader::StDType::kF16, {hidden, inter},
          scaled(p + "mlp.down_proj.weight", down));
    }
    if (s.shared) {
      add(moe + "shared_expert.gate_proj.weight", loader::StDType::kF16, {inter, hidden},
          bytes_of(p + "mlp.gate_proj.weight"));
      add(moe + "shared_expert.up_proj.weight", loader::StDType::kF16, {inter, hidden},
          bytes_of(p + "mlp.up_proj.weight"));
      add(moe + "shared_expert.down_proj.weight", loader::StDType::kF16, {hidden, inter},
          bytes_of(p + "mlp.down_proj.weight"));
      add(moe + "shared_expert_gate.weight", loader::StDType::kF16, {1, hidden},
          f16(s.distinct ? draw(hidden, normal) : std::vector<float>(static_cast<size_t>(hidden), 0.0f)));
    }
  }
  w.write(out / "model.safetensors");
}

// The MoE fixtures tools/make_moe_fixtures.py makes with transformers (on a machine with torch;
// tests/data/README.md), and why a test of one skips while it is absent.
inline const char* kMoeFixtures[] = {"tiny-mixtral", "tiny-qwen2-moe", "tiny-qwen3-moe"};
inline std::string moe_fixture_missing(const std::string& name) {
  if (std::filesystem::exists(std::filesystem::path(fixture_dir(name)) / "reference.safetensors")) return "";
  return "tests/data/" + name +
         " is absent: make the MoE fixtures with `python3 tools/make_moe_fixtures.py` (torch and transformers 5)";
}

// A fresh directory under the system's temporary directory, removed with the object.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag)
      : path(std::filesystem::temp_directory_path() /
             ("fp6serve-" + tag + "-" + std::to_string(::getpid()) + "-" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    std::filesystem::remove_all(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace fp6serve::testing
