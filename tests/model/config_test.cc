// config.json in both transformers layouts, model shapes by name (random-weight benchmarks),
// and quantization modes.
#include "model/config.h"

#include <gtest/gtest.h>

#include <cmath>

#include "fp6serve/error.h"
#include "model/quantization.h"
#include "tests/support/fixture.h"

namespace fp6serve::model {
namespace {

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
  }
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

}  // namespace
}  // namespace fp6serve::model
