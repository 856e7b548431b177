// config.json in both transformers layouts, model shapes by name (random-weight benchmarks),
// and quantization modes.
#include "model/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fp6serve/error.h"
#include "model/quantization.h"
#include "tests/support/fixture.h"

namespace fp6serve::model {
namespace {

namespace fs = std::filesystem;

TEST(ModelShape, PresetsHaveTheRealModelsShapes) {
  const ModelConfig l7 = ModelConfig::shape("llama2-7b");
  EXPECT_EQ(l7.hidden_size, 4096);
  EXPECT_EQ(l7.intermediate_size, 11008);
  EXPECT_EQ(l7.num_layers, 32);
  EXPECT_EQ(l7.num_kv_heads, 32);
  EXPECT_EQ(l7.head_dim, 128);
  const ModelConfig l70 = ModelConfig::shape("llama2-70b");
  EXPECT_EQ(l70.num_layers, 80);
  EXPECT_EQ(l70.num_heads, 64);
  EXPECT_EQ(l70.num_kv_heads, 8);
  EXPECT_EQ(l70.intermediate_size, 28672);
  const ModelConfig l3 = ModelConfig::shape("llama3-8b");
  EXPECT_EQ(l3.vocab_size, 128256);
  EXPECT_EQ(l3.num_kv_heads, 8);
  EXPECT_EQ(ModelConfig::shape("llama2-13b").hidden_size, 5120);
  for (const char* name : {"llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b"})
    EXPECT_EQ(ModelConfig::shape(name).dtype, DType::kF16) << name;
}

// The MoE presets: the published configs' shapes (Mixtral-8x7B-v0.1, Qwen1.5-MoE-A2.7B,
// Qwen3-30B-A3B).
TEST(ModelShape, MoePresetsHaveTheRealModelsShapes) {
  const ModelConfig mx = ModelConfig::shape("mixtral-8x7b");
  EXPECT_EQ(mx.family, Family::kMixtral);
  EXPECT_EQ(mx.moe.num_experts, 8);
  EXPECT_EQ(mx.moe.top_k, 2);
  EXPECT_EQ(mx.moe.intermediate_size, 14336);
  EXPECT_TRUE(mx.moe.renormalize);
  EXPECT_EQ(mx.num_kv_heads, 8);
  EXPECT_EQ(mx.rope.theta, 1e6);
  const ModelConfig q15 = ModelConfig::shape("qwen1.5-moe-a2.7b");
  EXPECT_EQ(q15.family, Family::kQwen2Moe);
  EXPECT_EQ(q15.moe.num_experts, 60);
  EXPECT_EQ(q15.moe.top_k, 4);
  EXPECT_EQ(q15.moe.intermediate_size, 1408);
  EXPECT_EQ(q15.moe.shared_intermediate_size, 5632);
  EXPECT_FALSE(q15.moe.renormalize);
  EXPECT_TRUE(q15.qkv_bias);
  EXPECT_TRUE(q15.moe_layer(0) && q15.moe_layer(23) && !q15.has_dense_mlp());
  const ModelConfig q3 = ModelConfig::shape("qwen3-30b-a3b");
  EXPECT_EQ(q3.family, Family::kQwen3Moe);
  EXPECT_EQ(q3.moe.num_experts, 128);
  EXPECT_EQ(q3.moe.top_k, 8);
  EXPECT_EQ(q3.moe.intermediate_size, 768);
  EXPECT_TRUE(q3.moe.renormalize && q3.qk_norm && !q3.qkv_bias);
  EXPECT_EQ(q3.q_size(), 4096);  // head_dim 128 x 32 heads, not hidden_size
  for (const std::string& name : ModelConfig::shape_names()) EXPECT_EQ(ModelConfig::shape(name).dtype, DType::kF16);
}

// transformers' defaults where a MoE config leaves a field out, both names of the expert count,
// and the sparse layers of decoder_sparse_step / mlp_only_layers.
TEST(Config, MoeFieldsAndTheirDefaults) {
  const std::string base = R"("vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
      "num_hidden_layers": 6, "num_attention_heads": 4)";
  const ModelConfig mx = ModelConfig::parse(R"({"model_type": "mixtral", )" + base + "}", "config.json");
  EXPECT_EQ(mx.moe.num_experts, 8);
  EXPECT_EQ(mx.moe.top_k, 2);
  EXPECT_EQ(mx.moe.intermediate_size, 128);
  EXPECT_EQ(mx.rope.theta, 1e6);
  EXPECT_EQ(mx.max_position_embeddings, 131072);
  const ModelConfig q3 = ModelConfig::parse(
      R"({"model_type": "qwen3_moe", "num_local_experts": 16, "moe_intermediate_size": 32,
          "decoder_sparse_step": 2, "mlp_only_layers": [3], "attention_bias": true, )" +
          base + "}",
      "config.json");
  EXPECT_EQ(q3.moe.num_experts, 16);
  EXPECT_EQ(q3.moe.top_k, 8);
  EXPECT_FALSE(q3.moe.renormalize);  // norm_topk_prob defaults to false
  EXPECT_TRUE(q3.qkv_bias && q3.o_bias && q3.qk_norm);
  // (l + 1) % 2 == 0 and not listed: layers 1 and 5 sparse; 0, 2, 4 by the step, 3 listed.
  EXPECT_EQ(q3.moe.dense_layers, (std::vector<int64_t>{0, 2, 3, 4}));
  EXPECT_TRUE(q3.moe_layer(1) && q3.moe_layer(5) && !q3.moe_layer(3) && q3.has_dense_mlp());
  const ModelConfig dense = ModelConfig::parse(R"({"model_type": "llama", )" + base + "}", "config.json");
  EXPECT_FALSE(dense.is_moe() || dense.moe_layer(0));
  EXPECT_TRUE(dense.has_dense_mlp());
}

TEST(ModelShape, AConfigFileOrDirectoryAndAClearErrorOtherwise) {
  const std::string dir = testing::fixture_dir("tiny-llama");
  EXPECT_EQ(ModelConfig::shape(dir).hidden_size, 128);
  EXPECT_EQ(ModelConfig::shape(dir + "/config.json").num_layers, 4);
  try {
    ModelConfig::shape("llama2-8b");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("llama2-70b"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("mixtral-8x7b"), std::string::npos) << e.what();
  }
}

// wf6af16 is FP6 with the format chosen per layer (e2m3 first, then e3m2; docs/quality.md);
// naming a format takes it in every layer.
TEST(QuantizationMode, Wf6af16ChoosesAnFp6FormatPerLayerAndAFormatNameFixesIt) {
  const QuantizationMode fp6 = QuantizationMode::parse("wf6af16");
  EXPECT_TRUE(fp6.quantized && fp6.per_layer_fp6);
  ASSERT_EQ(fp6.formats().size(), 2u);
  EXPECT_EQ(fp6.formats()[0], fpx::kE2M3);
  EXPECT_EQ(fp6.formats()[1], fpx::kE3M2);
  EXPECT_EQ(fp6.format, fpx::kE2M3);
  EXPECT_EQ(std::string(QuantizationMode::kDefault), "wf6af16");
  for (const auto& [name, f] : {std::pair{"e3m2", fpx::kE3M2}, std::pair{"e2m3", fpx::kE2M3},
                                std::pair{"wf5af16", fpx::kE2M2}, std::pair{"wf4af16", fpx::kE2M1}}) {
    const QuantizationMode m = QuantizationMode::parse(name);
    EXPECT_FALSE(m.per_layer_fp6) << name;
    ASSERT_EQ(m.formats().size(), 1u) << name;
    EXPECT_EQ(m.formats()[0], f) << name;
  }
  EXPECT_TRUE(QuantizationMode::parse("fp16").formats().size() == 1);  // unused when not quantized
}

TEST(QuantizationMode, AnUnknownModeIsAnErrorListingTheChoices) {
  try {
    QuantizationMode::parse("int3");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    for (const char* part : {"int3", "wf6af16", "eXmY"})
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

// A transformers 4.x config (torch_dtype, rope_theta, rope_scaling llama3) parses the same.
TEST(Config, Transformers4LayoutAndLlama3Rope) {
  const std::string text =
      R"({"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "max_position_embeddings": 131072, "rope_theta": 500000.0, "torch_dtype": "bfloat16",
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "tie_word_embeddings": false})";
  const ModelConfig c = ModelConfig::parse(text, "config.json");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.dtype, DType::kBF16);
  EXPECT_EQ(c.rope.type, "llama3");
  EXPECT_EQ(c.rope.theta, 500000.0);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{128001, 128008, 128009}));
  const auto inv = c.rope_inv_freq();
  ASSERT_EQ(inv.size(), 64u);
  // Values computed with transformers' _compute_llama3_parameters formula (in double):
  // pair 0 keeps 1.0 (high frequency), pairs 40 and 63 (wavelength > 8192) are divided by
  // the factor 8, pair 32 (wavelength between 2048 and 8192) is smoothed between the two.
  EXPECT_FLOAT_EQ(inv[0], 1.0f);
  EXPECT_NEAR(inv[63], std::pow(500000.0, -126.0 / 128.0) / 8.0, 1e-6 * inv[63]);
  EXPECT_NEAR(inv[40], std::pow(500000.0, -80.0 / 128.0) / 8.0, 1e-6 * inv[40]);
  const double f32 = std::pow(500000.0, -64.0 / 128.0), wavelen = 2 * M_PI / f32;
  ASSERT_GT(wavelen, 2048.0);
  ASSERT_LT(wavelen, 8192.0);
  const double smooth = (8192.0 / wavelen - 1.0) / 3.0;
  EXPECT_NEAR(inv[32], (1 - smooth) * f32 / 8 + smooth * f32, 1e-6 * f32);
}

TEST(Config, RopeInverseFrequenciesMatchTransformers) {
  for (const char* name : testing::kFixtures) {
    testing::Reference ref(name);
    const ModelConfig c = ModelConfig::load(testing::fixture_dir(name));
    const auto want = ref.floats("rope_inv_freq");
    const auto got = c.rope_inv_freq();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << name << " " << i;
  }
}

// The tiny-llama config with `field` set to the JSON `value` (removed when value is empty).
std::string tiny_config_with(const std::string& field, const std::string& value) {
  std::ifstream in(testing::fixture_dir("tiny-llama") + "/config.json");
  nlohmann::json j = nlohmann::json::parse(in);
  if (value.empty())
    j.erase(field);
  else
    j[field] = nlohmann::json::parse(value);
  return j.dump();
}

// The Error parsing `text` gives; fails the test when it parses.
Error config_error(const std::string& text) {
  try {
    ModelConfig::parse(text, "dir/config.json");
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "parsed: " << text;
  return Error(ErrorKind::kInternal, "");
}

// num_hidden_layers 1e7 allocated 11 GB of layer slots before anything looked at it: every
// size field is bounded, far above real models, before anything is sized by it.
TEST(Config, AbsurdSizesAreRejectedNamingTheField) {
  const std::pair<const char*, const char*> cases[] = {
      {"num_hidden_layers", "10000000"},
      {"num_hidden_layers", "4097"},
      {"hidden_size", "1000000000"},
      {"intermediate_size", "9223372036854775807"},
      {"vocab_size", "200000000"},
      {"num_attention_heads", "1000000"},
      {"num_key_value_heads", "1000000"},
      {"head_dim", "1048576"},
      {"max_position_embeddings", "1e30"},
      {"max_position_embeddings", "4294967296000"},
      {"num_hidden_layers", "-3"},
      {"vocab_size", "18446744073709551615"},
      {"hidden_size", "\"128\""},
      {"sliding_window", "9223372036854775807"},
      {"eos_token_id", "[1020, 2147483648]"},
      {"bos_token_id", "1024"},
      {"eos_token_id", "-1"},
      {"tie_word_embeddings", "\"yes\""},
      {"rms_norm_eps", "0"},
      {"rope_parameters", "[]"},
      {"dtype", "16"},
  };
  for (const auto& [field, value] : cases) {
    const auto start = std::chrono::steady_clock::now();
    const Error e = config_error(tiny_config_with(field, value));
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput) << e.what();
    for (const char* part : {"dir/config.json", field})
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << field << "=" << value << ": " << e.what();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(100)) << field << "=" << value;
  }
  // hidden_size / num_attention_heads as head_dim is bounded too.
  auto updated = [](const std::string& text, const nlohmann::json& fields) {
    nlohmann::json j = nlohmann::json::parse(text);
    j.update(fields);
    return j.dump();
  };
  const std::string wide =
      updated(tiny_config_with("head_dim", ""), {{"hidden_size", 65536}, {"num_attention_heads", 8}});
  EXPECT_NE(std::string(config_error(wide).what()).find("head_dim"), std::string::npos);
  // The largest real shapes still parse.
  const std::string text = updated(tiny_config_with("vocab_size", "1048576"), {{"num_hidden_layers", 1024},
                                                                               {"hidden_size", 32768},
                                                                               {"intermediate_size", 131072},
                                                                               {"num_attention_heads", 256},
                                                                               {"num_key_value_heads", 16},
                                                                               {"head_dim", 128},
                                                                               {"max_position_embeddings", 10485760}});
  const ModelConfig big = ModelConfig::parse(text, "config.json");
  EXPECT_EQ(big.num_layers, 1024);
  EXPECT_EQ(big.vocab_size, 1048576);
}

TEST(Config, BadMoeFieldsAreRejectedNamingTheField) {
  const std::pair<const char*, const char*> cases[] = {
      {"num_local_experts", "0"},     {"num_local_experts", "1000000"},
      {"num_experts_per_tok", "9"},                                   // more than the 8 experts
      {"num_experts_per_tok", "-1"},  {"num_experts", "7"},           // disagrees with num_local_experts
      {"moe_intermediate_size", "0"}, {"mlp_only_layers", "[0, 4]"},  // 4 layers: index 4 is outside
      {"mlp_only_layers", "3"},       {"decoder_sparse_step", "0"},
      {"norm_topk_prob", "1"},
  };
  for (const auto& [field, value] : cases) {
    nlohmann::json j = nlohmann::json::parse(tiny_config_with(field, value));
    const bool qwen = std::string(field) != "num_local_experts" && std::string(field) != "num_experts";
    j["model_type"] = qwen ? "qwen3_moe" : "mixtral";
    if (!j.contains("num_local_experts") && !qwen) j["num_local_experts"] = 8;
    if (std::string(field) == "num_experts") j["num_local_experts"] = 8;
    if (qwen && std::string(field) != "num_experts_per_tok") j["num_experts_per_tok"] = 2;
    if (qwen) j["num_experts"] = 8;
    const Error e = config_error(j.dump());
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput) << field << "=" << value << ": " << e.what();
    for (const char* part : {"dir/config.json", field})
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << field << "=" << value << ": " << e.what();
  }
  // A feature fp6serve lacks is kUnsupported, saying which.
  nlohmann::json j = nlohmann::json::parse(tiny_config_with("use_sliding_window", "true"));
  j["model_type"] = "qwen2_moe";
  EXPECT_EQ(config_error(j.dump()).kind(), ErrorKind::kUnsupported);
  j["use_sliding_window"] = false;
  j["layer_types"] = {"full_attention", "sliding_attention"};
  EXPECT_EQ(config_error(j.dump()).kind(), ErrorKind::kUnsupported);
}

TEST(Config, Llama3OriginalMaxPositionIsBoundedBeforeItsConversion) {
  // 1e300 converted to int64 is undefined behaviour.
  std::string text =
      tiny_config_with("rope_parameters",
                       R"({"rope_type": "llama3", "rope_theta": 500000.0, "original_max_position_embeddings": 1e300})");
  const Error e = config_error(text);
  EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
  EXPECT_NE(std::string(e.what()).find("original_max_position_embeddings"), std::string::npos) << e.what();
}

TEST(Config, TheJsonItselfIsBoundedAndNamed) {
  for (const std::string text : {std::string(100000, '['), std::string("[1, 2]"), std::string("{\"a\": tru")}) {
    const Error e = config_error(text);
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput) << e.what();
    EXPECT_NE(std::string(e.what()).find("dir/config.json"), std::string::npos) << e.what();
  }
}

TEST(GenerationConfig, BadFieldsNameTheFileAndTheField) {
  const ModelConfig config = ModelConfig::load(testing::fixture_dir("tiny-llama"));
  const fs::path dir = fs::temp_directory_path() / ("fp6serve-gen-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::pair<const char*, const char*> cases[] = {
      {"eos_token_id", "[1, \"x\"]"}, {"eos_token_id", "4294967296"}, {"do_sample", "1"}, {"temperature", "-1"},
      {"temperature", "\"hot\""},     {"top_p", "\"high\""},          {"top_k", "-5"},    {"repetition_penalty", "{}"},
  };
  for (const auto& [field, value] : cases) {
    std::ofstream(dir / "generation_config.json") << "{\"" << field << "\": " << value << "}";
    try {
      GenerationDefaults::load(dir, config);
      ADD_FAILURE() << field << "=" << value << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kBadInput) << e.what();
      for (const char* part : {"generation_config.json", field})
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  }
  std::ofstream(dir / "generation_config.json") << "[]";
  EXPECT_THROW(GenerationDefaults::load(dir, config), Error);
  std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": 7, "top_k": 20, "temperature": 0.6})";
  const GenerationDefaults g = GenerationDefaults::load(dir, config);
  EXPECT_EQ(g.top_k, 20);
  EXPECT_EQ(g.eos_token_ids.front(), 7);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fp6serve::model
